//! A partition: its segments, the append path with group commit, reads for fetch, offset
//! lookups, retention and recovery. Owned and changed only by its shard.
//!
//! Append path: `append` validates nothing (the handler did), assigns offsets and copies each
//! batch once, into an aligned DMA buffer, patching the base offset (not covered by the CRC).
//! One flusher task per partition writes whatever accumulated while the previous write was in
//! flight as one O_DIRECT write (group commit), then advances the high watermark and wakes the
//! producers waiting on it. A partial last block is kept in memory and rewritten by the next
//! write, so every write is block-aligned and the file never has holes.
//!
//! Invariants: offsets are contiguous from `log_start_offset` to `next_offset`; `durable_offset`
//! (the high watermark) never passes data that is not on the device (and, with
//! `FlushPolicy::EveryWrite`, fdatasync'ed); a failed write takes the partition offline and no
//! later append is acknowledged.

use super::disk::{Faults, LogFile};
use super::producers::{self, AbortedTxn, BatchSeq, ProducerTable, Verdict};
use super::segment::{self, Segment};
use crate::config::{FlushPolicy, TimestampType};
use crate::protocol::batch::{self, BatchInfo, BatchPrefix};
use crate::protocol::errors::{ErrorCode, KafkaError};
use crate::util::{align_down, align_up, now_ms, Notify};
use bytes::Bytes;
use glommio::io::{DmaBuffer, OpenOptions};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};

/// Block size all O_DIRECT writes are aligned to.
pub const BLOCK_BYTES: u64 = 4096;
/// Disk space reserved ahead of the write position of the active segment.
const PREALLOC_STEP_BYTES: u64 = 16 << 20;
/// Smallest write buffer allocated; larger ones come from big batches or write_buffer_bytes.
const MIN_WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Per-partition settings (the broker's, overridden by topic configs).
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub index_interval_bytes: u64,
    pub flush: FlushPolicy,
    pub timestamp_type: TimestampType,
    pub write_buffer_bytes: usize,
    /// A producer id idle this long, with no open transaction, is forgotten (Kafka:
    /// producer.id.expiration.ms), so the state does not grow with every producer ever seen.
    pub producer_id_expiration_ms: i64,
    /// The simulated disk of the tests: faults injected into the segment writes. None in
    /// the broker.
    pub faults: Option<std::sync::Arc<Faults>>,
}

/// Bytes a fetch returns: from the tail cache, or a range of a segment file.
#[derive(Clone)]
pub enum Chunk {
    Mem(Bytes),
    File {
        seg: Rc<Segment>,
        pos: u64,
        len: usize,
    },
}

impl Chunk {
    pub fn len(&self) -> usize {
        match self {
            Chunk::Mem(b) => b.len(),
            Chunk::File { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct ReadResult {
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub chunks: Vec<Chunk>,
    pub bytes: usize,
    /// read_committed: (producer id, first offset) of the aborted transactions in the range.
    pub aborted: Vec<(i64, i64)>,
    /// Offset after the last batch returned (the fetch offset when nothing is).
    pub next_offset: i64,
}

/// Shard-wide budget for cached tail batches, evicted oldest first across partitions.
pub struct TailCache {
    budget_bytes: usize,
    used_bytes: Cell<usize>,
    fifo: RefCell<VecDeque<(Weak<Partition>, i64, usize)>>,
}

impl TailCache {
    pub fn new(budget_bytes: usize) -> Rc<TailCache> {
        Rc::new(TailCache {
            budget_bytes,
            used_bytes: Cell::new(0),
            fifo: RefCell::new(VecDeque::new()),
        })
    }

    pub fn used_bytes(&self) -> usize {
        self.used_bytes.get()
    }

    fn insert(&self, p: &Rc<Partition>, base_offset: i64, bytes: Bytes) {
        if bytes.len() > self.budget_bytes {
            return;
        }
        let len = bytes.len();
        p.cache.borrow_mut().push_back(CacheEntry {
            base_offset,
            next_offset: base_offset
                + batch::be_i32(&bytes, batch::OFF_LAST_OFFSET_DELTA) as i64
                + 1,
            bytes,
        });
        self.fifo
            .borrow_mut()
            .push_back((Rc::downgrade(p), base_offset, len));
        self.used_bytes.set(self.used_bytes.get() + len);
        while self.used_bytes.get() > self.budget_bytes {
            let Some((w, base, l)) = self.fifo.borrow_mut().pop_front() else {
                break;
            };
            if let Some(owner) = w.upgrade() {
                let mut c = owner.cache.borrow_mut();
                if c.front().is_some_and(|e| e.base_offset == base) {
                    c.pop_front();
                }
            }
            self.used_bytes.set(self.used_bytes.get() - l);
        }
    }
}

struct CacheEntry {
    base_offset: i64,
    next_offset: i64,
    bytes: Bytes,
}

struct WriteBuf {
    seg: Rc<Segment>,
    file: Rc<LogFile>,
    /// Aligned file position of buf[0].
    file_pos: u64,
    buf: DmaBuffer,
    /// Valid bytes in buf (carried partial block + new batches).
    len: usize,
    /// Next offset after the last batch in this buffer.
    end_offset: i64,
}

enum Job {
    Write(WriteBuf),
    /// The segment is full: make it durable, cut the preallocated tail, close its writer.
    Seal {
        seg: Rc<Segment>,
        file: Rc<LogFile>,
        /// Producer state as of the sealed segment's end, written as `<end>.snapshot`.
        snapshot: (i64, Vec<u8>),
        /// The segment's aborted transactions (`<base>.txnindex`), when it has any.
        txn_index: Option<Vec<u8>>,
    },
}

struct State {
    segments: BTreeMap<i64, Rc<Segment>>,
    writer: Option<Rc<LogFile>>,
    log_start_offset: i64,
    next_offset: i64,
    /// Logical size of the active segment including bytes not yet written.
    appended_bytes: u64,
    durable_offset: i64,
    open_buf: Option<WriteBuf>,
    queue: VecDeque<Job>,
    /// Aligned position and content of the active segment's last partial block, as it will be
    /// once everything queued is written.
    tail_pos: u64,
    tail: Vec<u8>,
    /// Capacity of the next write buffer: doubles when a buffer fills before the flusher takes
    /// it (load: let one write carry more), resets when a write goes out half empty.
    buf_capacity: usize,
    failed: Option<String>,
    unsynced_writes: bool,
}

pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub dir: PathBuf,
    pub cfg: LogConfig,
    me: Weak<Partition>,
    st: RefCell<State>,
    cache: RefCell<VecDeque<CacheEntry>>,
    tail_cache: Rc<TailCache>,
    /// Idempotent producers seen in this partition.
    producers: RefCell<ProducerTable>,
    /// Aborted transactions of the live segments, in marker order: what read_committed
    /// consumers are told to drop. Each segment's entries are written to `<base>.txnindex`
    /// when it is sealed; the active segment's come back from the log at recovery.
    aborted: RefCell<Vec<AbortedTxn>>,
    /// Set when an aborted-transaction index could not be written: no snapshot may be taken
    /// any more this run (recovery must replay the whole log).
    snapshots_disabled: Cell<bool>,
    /// Appends in the order they were called (FIFO, unlike glommio's Semaphore).
    append_lock: crate::util::FifoLock,
    flush_work: Notify,
    /// Durable offset advanced, or the partition failed.
    pub progress: Notify,
    flusher_idle: Notify,
    /// Traffic counters for the metrics.
    pub stats: crate::metrics::PartitionStats,
}

fn io_err(e: impl std::fmt::Display) -> KafkaError {
    KafkaError::new(ErrorCode::KAFKA_STORAGE_ERROR, e.to_string())
}

impl Partition {
    pub fn dir_name(topic: &str, index: i32) -> String {
        format!("{topic}-{index}")
    }

    /// Opens (creating if needed) the partition under `data_dir`, recovering the newest segment:
    /// every batch after the last index entry is validated and a torn or corrupt tail is cut.
    /// Older segments are only listed; their indexes load on first use.
    pub async fn open(
        data_dir: &Path,
        topic: &str,
        index: i32,
        cfg: LogConfig,
        tail_cache: Rc<TailCache>,
    ) -> Result<Rc<Partition>, KafkaError> {
        let dir = data_dir.join(Self::dir_name(topic, index));
        let listing = {
            let dir = dir.clone();
            glommio::executor()
                .spawn_blocking(move || list_segments(&dir))
                .await
                .map_err(io_err)?
        };
        let mut segments = BTreeMap::new();
        for (base, size, mtime_ms) in &listing {
            let s = Segment::new(&dir, *base, *mtime_ms);
            s.written_bytes.set(*size);
            segments.insert(*base, Rc::new(s));
        }
        let p = Rc::new_cyclic(|me| Partition {
            topic: topic.to_string(),
            index,
            dir: dir.clone(),
            cfg,
            me: me.clone(),
            st: RefCell::new(State {
                segments,
                writer: None,
                log_start_offset: 0,
                next_offset: 0,
                appended_bytes: 0,
                durable_offset: 0,
                open_buf: None,
                queue: VecDeque::new(),
                tail_pos: 0,
                tail: Vec::new(),
                buf_capacity: MIN_WRITE_BUFFER_BYTES,
                failed: None,
                unsynced_writes: false,
            }),
            cache: RefCell::new(VecDeque::new()),
            tail_cache,
            producers: RefCell::new(ProducerTable::default()),
            aborted: RefCell::new(Vec::new()),
            snapshots_disabled: Cell::new(false),
            append_lock: Default::default(),
            flush_work: Notify::default(),
            progress: Notify::default(),
            flusher_idle: Notify::default(),
            stats: Default::default(),
        });
        p.recover().await?;
        p.rebuild_producers().await?;
        let flusher = p.clone();
        glommio::spawn_local(async move { flusher.flusher().await }).detach();
        Ok(p)
    }

    async fn recover(&self) -> Result<(), KafkaError> {
        let newest = self.st.borrow().segments.values().next_back().cloned();
        let seg = match newest {
            Some(seg) => {
                seg.recover(self.cfg.index_interval_bytes).await?;
                tracing::debug!(topic = %self.topic, partition = self.index,
                    end = seg.written_bytes.get(), next = seg.written_next_offset.get(), "recovered");
                seg
            }
            None => {
                glommio::executor()
                    .spawn_blocking({
                        let d = self.dir.clone();
                        move || std::fs::create_dir_all(d)
                    })
                    .await
                    .map_err(io_err)?;
                let seg = Rc::new(Segment::new(&self.dir, 0, now_ms()));
                seg.indexes_loaded.set(true);
                self.st.borrow_mut().segments.insert(0, seg.clone());
                seg
            }
        };
        let writer = self.open_writer(&seg).await?;
        let end = seg.written_bytes.get();
        let tail_pos = align_down(end, BLOCK_BYTES);
        let tail = if end > tail_pos {
            let r = seg.reader().await?;
            segment::read_at(&r, tail_pos, (end - tail_pos) as usize).await?
        } else {
            Vec::new()
        };
        let mut st = self.st.borrow_mut();
        st.log_start_offset = st.segments.keys().next().copied().unwrap_or(0);
        st.next_offset = seg.written_next_offset.get();
        st.durable_offset = st.next_offset;
        st.appended_bytes = end;
        st.tail_pos = tail_pos;
        st.tail = tail;
        st.writer = Some(writer);
        Ok(())
    }

    async fn open_writer(&self, seg: &Segment) -> Result<Rc<LogFile>, KafkaError> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(seg.log_path())
            .await
            .map_err(io_err)?;
        let f = LogFile::new(f, self.cfg.faults.clone());
        seg.allocated_bytes
            .set(f.file_size().await.map_err(io_err)?);
        Ok(Rc::new(f))
    }

    fn snapshot_path(&self, offset: i64) -> PathBuf {
        self.dir
            .join(format!("{}.snapshot", segment::file_stem(offset)))
    }

    /// Writes the producer snapshot for `offset` (temp file, fsync, rename) and keeps only the
    /// two newest.
    async fn write_snapshot(&self, offset: i64, bytes: Vec<u8>) -> Result<(), KafkaError> {
        write_durably(self.snapshot_path(offset), bytes).await?;
        let dir = self.dir.clone();
        glommio::executor()
            .spawn_blocking(move || -> std::io::Result<()> {
                let mut snaps = list_snapshots(&dir)?;
                snaps.sort();
                let keep = snaps.len().saturating_sub(2);
                for (_, old) in &snaps[..keep] {
                    let _ = std::fs::remove_file(old);
                }
                Ok(())
            })
            .await
            .map_err(io_err)
    }

    /// Producer state at start-up: the newest valid snapshot at or below the log end, then the
    /// headers of every batch after it.
    async fn rebuild_producers(&self) -> Result<(), KafkaError> {
        let end = self.st.borrow().next_offset;
        let start = self.st.borrow().log_start_offset;
        let dir = self.dir.clone();
        let snaps = glommio::executor()
            .spawn_blocking(move || list_snapshots(&dir))
            .await
            .map_err(io_err)?;
        let mut table = ProducerTable::default();
        let mut from = start;
        let mut by_offset = snaps;
        by_offset.sort();
        for (off, path) in by_offset.iter().rev() {
            if *off > end {
                // Written for data that did not survive (a torn tail was cut): stale.
                segment::remove_quietly(path).await;
                continue;
            }
            let data = glommio::executor()
                .spawn_blocking({
                    let path = path.clone();
                    move || std::fs::read(path)
                })
                .await
                .ok()
                .and_then(|b| ProducerTable::decode(&b));
            if let Some(t) = data {
                table = t;
                from = (*off).max(start);
                break;
            }
        }
        // Aborted transactions below the snapshot come from the sealed segments' indexes; the
        // ones after it are found again by the replay.
        let mut aborted: Vec<AbortedTxn> = Vec::new();
        let sealed: Vec<Rc<Segment>> = self
            .st
            .borrow()
            .segments
            .range(..from)
            .map(|(_, s)| s.clone())
            .collect();
        // (The active segment is included: a clean shutdown indexes it, see `close`.)
        for seg in sealed {
            let path = seg.txn_index_path();
            let data = glommio::executor()
                .spawn_blocking(move || match std::fs::read(&path) {
                    Ok(b) => Ok(Some(b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                })
                .await
                .map_err(io_err)?;
            if let Some(b) = data {
                let list = AbortedTxn::decode_all(&b).ok_or_else(|| {
                    io_err(format!("{} is corrupt", seg.txn_index_path().display()))
                })?;
                aborted.extend(list.into_iter().filter(|a| a.last_offset < from));
            }
        }
        // Replay producer batches and markers after the snapshot.
        for seg in self.segments_from(from) {
            seg.load_indexes(self.cfg.index_interval_bytes).await?;
            let written = seg.written_bytes.get();
            let reader = seg.reader().await?;
            let mut pos = seg.lookup(from);
            let mut window: Vec<u8> = Vec::new();
            let mut wpos = 0u64;
            while pos + batch::HEADER_BYTES as u64 <= written {
                if pos < wpos || pos + batch::HEADER_BYTES as u64 > wpos + window.len() as u64 {
                    window =
                        segment::read_at(&reader, pos, (written - pos).min(64 * 1024) as usize)
                            .await?;
                    wpos = pos;
                }
                let mut h = &window[(pos - wpos) as usize..];
                let Some(prefix) = BatchPrefix::parse(h) else {
                    break;
                };
                let attrs = if h.len() >= batch::HEADER_BYTES {
                    batch::be_i16(h, batch::OFF_ATTRIBUTES)
                } else {
                    0
                };
                // Control batches are read whole (their record says commit or abort).
                let need = if attrs & batch::ATTR_CONTROL != 0 {
                    prefix.len
                } else {
                    batch::HEADER_BYTES
                };
                if h.len() < need && pos + need as u64 <= written {
                    window = segment::read_at(
                        &reader,
                        pos,
                        need.max(64 * 1024).min((written - pos) as usize),
                    )
                    .await?;
                    wpos = pos;
                    h = &window[..];
                }
                if h.len() < need {
                    break;
                }
                let pid = batch::be_i64(h, batch::OFF_PRODUCER_ID);
                let epoch = batch::be_i16(h, batch::OFF_PRODUCER_EPOCH);
                if prefix.base_offset >= from && pid >= 0 {
                    if attrs & batch::ATTR_CONTROL != 0 {
                        if let Some(commit) = batch::control_marker(&h[..prefix.len]) {
                            let first = table.end_txn(pid, epoch);
                            table.touch(pid, batch::be_i64(h, batch::OFF_MAX_TIMESTAMP));
                            if let (false, Some(first_offset)) = (commit, first) {
                                aborted.push(AbortedTxn {
                                    producer_id: pid,
                                    first_offset,
                                    last_offset: prefix.base_offset,
                                });
                            }
                        }
                    } else {
                        let first = batch::be_i32(h, batch::OFF_BASE_SEQUENCE);
                        table.touch(pid, batch::be_i64(h, batch::OFF_MAX_TIMESTAMP));
                        table.record(
                            pid,
                            epoch,
                            BatchSeq {
                                first_seq: first,
                                last_seq: if first >= 0 {
                                    producers::last_seq(first, prefix.last_offset_delta)
                                } else {
                                    -1
                                },
                                base_offset: prefix.base_offset,
                                last_offset: prefix.next_offset() - 1,
                            },
                            attrs & batch::ATTR_TRANSACTIONAL != 0,
                        );
                    }
                }
                pos += prefix.len as u64;
            }
        }
        *self.producers.borrow_mut() = table;
        *self.aborted.borrow_mut() = aborted;
        Ok(())
    }

    /// The segment holding `offset` and every later one.
    fn segments_from(&self, offset: i64) -> Vec<Rc<Segment>> {
        let st = self.st.borrow();
        let first = st
            .segments
            .range(..=offset)
            .next_back()
            .map(|(k, _)| *k)
            .unwrap_or(0);
        st.segments.range(first..).map(|(_, s)| s.clone()).collect()
    }

    pub fn high_watermark(&self) -> i64 {
        self.st.borrow().durable_offset
    }

    pub fn log_start_offset(&self) -> i64 {
        self.st.borrow().log_start_offset
    }

    pub fn failure(&self) -> Option<KafkaError> {
        self.st
            .borrow()
            .failed
            .as_ref()
            .map(|m| KafkaError::new(ErrorCode::KAFKA_STORAGE_ERROR, m.clone()))
    }

    /// Assigns offsets to the validated batches of `records` and queues them for writing.
    /// Returns (base offset, log append time or -1, next offset to wait for).
    pub async fn append(
        &self,
        records: &Bytes,
        infos: &[BatchInfo],
    ) -> Result<(i64, i64, i64), KafkaError> {
        let _turn = self.append_lock.lock().await;
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let idempotent = infos
            .iter()
            .any(|i| i.producer_id >= 0 && i.base_sequence >= 0);
        if idempotent {
            // Kafka's rule from produce v3 on, and what makes one sequence check per request
            // enough.
            if infos.len() != 1 {
                return Err(KafkaError::new(
                    ErrorCode::INVALID_RECORD,
                    "an idempotent produce carries exactly one batch per partition",
                ));
            }
            let i = &infos[0];
            let last = producers::last_seq(i.base_sequence, i.last_offset_delta);
            match self.producers.borrow().check(
                i.producer_id,
                i.producer_epoch,
                i.base_sequence,
                last,
            )? {
                Verdict::Append => {}
                Verdict::Duplicate(b) => return Ok((b.base_offset, -1, b.last_offset + 1)),
            }
        }
        self.append_locked(records, infos).await
    }

    /// Writes a transaction marker for producer `pid` (the coordinator decided the outcome)
    /// and closes its transaction here. Returns the offset to wait for.
    pub async fn append_marker(
        &self,
        pid: i64,
        epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<i64, KafkaError> {
        let _turn = self.append_lock.lock().await;
        if let Some(e) = self.failure() {
            return Err(e);
        }
        self.producers.borrow().check_marker(pid, epoch)?;
        let now = now_ms();
        let b = Bytes::from(batch::control_batch(
            pid,
            epoch,
            commit,
            coordinator_epoch,
            now,
        ));
        let info = BatchInfo {
            start: 0,
            len: b.len(),
            last_offset_delta: 0,
            base_timestamp: now,
            max_timestamp: now,
            records_count: 1,
            producer_id: -1, // not a batch of the producer's sequence
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
        };
        let (offset, _, target) = self.append_locked(&b, &[info]).await?;
        let first = self.producers.borrow_mut().end_txn(pid, epoch);
        self.producers.borrow_mut().touch(pid, now);
        if let (false, Some(first_offset)) = (commit, first) {
            self.aborted.borrow_mut().push(AbortedTxn {
                producer_id: pid,
                first_offset,
                last_offset: offset,
            });
        }
        Ok(target)
    }

    /// The append proper; the caller holds the append lock and has checked the producer.
    async fn append_locked(
        &self,
        records: &Bytes,
        infos: &[BatchInfo],
    ) -> Result<(i64, i64, i64), KafkaError> {
        let total: u64 = infos.iter().map(|i| i.len as u64).sum();
        let now = now_ms();
        let roll = {
            let st = self.st.borrow();
            let active = st
                .segments
                .values()
                .next_back()
                .expect("a partition has a segment");
            st.appended_bytes > 0
                && (st.appended_bytes + total > self.cfg.segment_bytes
                    || now - active.created_ms >= self.cfg.segment_ms)
        };
        if roll {
            self.roll().await?;
        }
        // Disk space first: a full disk refuses this append (retriable) before it has an
        // offset, and the partition stays healthy for reads and for later appends.
        self.reserve(total).await?;
        let me = self.me.upgrade().expect("partition alive while appending");
        let log_append_time = match self.cfg.timestamp_type {
            TimestampType::LogAppendTime => now,
            TimestampType::CreateTime => -1,
        };
        let mut st = self.st.borrow_mut();
        let base_offset = st.next_offset;
        for info in infos {
            let src = &records[info.start..info.start + info.len];
            let offset = st.next_offset;
            let position = st.appended_bytes;
            self.ensure_room(&mut st, info.len);
            let wb = st.open_buf.as_mut().expect("ensure_room opened a buffer");
            let dst = &mut wb.buf.as_bytes_mut()[wb.len..wb.len + info.len];
            dst.copy_from_slice(src);
            dst[batch::OFF_BASE_OFFSET..batch::OFF_BASE_OFFSET + 8]
                .copy_from_slice(&offset.to_be_bytes());
            dst[batch::OFF_LEADER_EPOCH..batch::OFF_LEADER_EPOCH + 4]
                .copy_from_slice(&0i32.to_be_bytes());
            let mut max_ts = info.max_timestamp;
            if log_append_time >= 0 {
                let attrs = i16::from_be_bytes([
                    dst[batch::OFF_ATTRIBUTES],
                    dst[batch::OFF_ATTRIBUTES + 1],
                ]) | batch::ATTR_LOG_APPEND_TIME;
                dst[batch::OFF_ATTRIBUTES..batch::OFF_ATTRIBUTES + 2]
                    .copy_from_slice(&attrs.to_be_bytes());
                dst[batch::OFF_MAX_TIMESTAMP..batch::OFF_MAX_TIMESTAMP + 8]
                    .copy_from_slice(&log_append_time.to_be_bytes());
                batch::restamp_crc(dst);
                max_ts = log_append_time;
            }
            // Paired with the check when the batch is read back by recovery.
            debug_assert!(batch::crc_ok(dst));
            let cached = Bytes::copy_from_slice(dst);
            wb.len += info.len;
            let next = offset + info.last_offset_delta as i64 + 1;
            wb.end_offset = next;
            st.next_offset = next;
            st.appended_bytes += info.len as u64;
            let seg = st
                .segments
                .values()
                .next_back()
                .expect("active segment")
                .clone();
            seg.index_batch(
                position,
                offset,
                max_ts,
                info.len as u64,
                self.cfg.index_interval_bytes,
            );
            self.tail_cache.insert(&me, offset, cached);
            if info.producer_id >= 0 {
                self.producers
                    .borrow_mut()
                    .touch(info.producer_id, now_ms());
                self.producers.borrow_mut().record(
                    info.producer_id,
                    info.producer_epoch,
                    BatchSeq {
                        first_seq: info.base_sequence,
                        last_seq: producers::last_seq(info.base_sequence, info.last_offset_delta),
                        base_offset: offset,
                        last_offset: next - 1,
                    },
                    info.transactional,
                );
            }
        }
        let target = st.next_offset;
        drop(st);
        crate::metrics::bump(&self.stats.bytes_in, total);
        crate::metrics::bump(&self.stats.records_in, (target - base_offset) as u64);
        self.flush_work.notify_all();
        Ok((base_offset, log_append_time, target))
    }

    /// Makes sure the open write buffer can take `len` more bytes, sealing a full one.
    fn ensure_room(&self, st: &mut State, len: usize) {
        if let Some(wb) = &st.open_buf {
            if wb.len + len <= wb.buf.len() {
                return;
            }
            st.buf_capacity =
                (st.buf_capacity * 2).min(self.cfg.write_buffer_bytes.max(MIN_WRITE_BUFFER_BYTES));
            Self::seal_open(st);
        }
        let file = st.writer.clone().expect("active writer");
        let seg = st
            .segments
            .values()
            .next_back()
            .expect("active segment")
            .clone();
        let need = st.tail.len() + len;
        let cap = align_up(need.max(st.buf_capacity) as u64, BLOCK_BYTES) as usize;
        let mut buf = file.alloc_dma_buffer(cap);
        buf.as_bytes_mut()[..st.tail.len()].copy_from_slice(&st.tail);
        st.open_buf = Some(WriteBuf {
            seg,
            file,
            file_pos: st.tail_pos,
            buf,
            len: st.tail.len(),
            end_offset: st.next_offset,
        });
    }

    /// Moves the open buffer to the write queue; its last partial block becomes the tail that
    /// the next buffer starts with.
    fn seal_open(st: &mut State) {
        if let Some(wb) = st.open_buf.take() {
            let full = align_down(wb.len as u64, BLOCK_BYTES) as usize;
            st.tail_pos = wb.file_pos + full as u64;
            st.tail = wb.buf.as_bytes()[full..wb.len].to_vec();
            st.queue.push_back(Job::Write(wb));
        }
    }

    /// Makes sure the active segment has disk space allocated for `total` more bytes,
    /// ahead in PREALLOC_STEP_BYTES steps, or exactly what is needed when a step does not fit.
    async fn reserve(&self, total: u64) -> Result<(), KafkaError> {
        let (file, seg, need) = {
            let st = self.st.borrow();
            let seg = st.segments.values().next_back().expect("active").clone();
            let file = st.writer.clone().expect("active writer");
            (file, seg, align_up(st.appended_bytes + total, BLOCK_BYTES))
        };
        if need <= seg.allocated_bytes.get() {
            return Ok(());
        }
        let step = align_up(need, PREALLOC_STEP_BYTES).min(self.cfg.segment_bytes.max(need));
        if file.pre_allocate(step).await.is_ok() {
            seg.allocated_bytes.set(step);
            return Ok(());
        }
        match file.pre_allocate(need).await {
            Ok(()) => {
                seg.allocated_bytes.set(need);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(topic = %self.topic, partition = self.index,
                    "refusing an append of {total} bytes: {e}");
                Err(KafkaError::new(
                    ErrorCode::KAFKA_STORAGE_ERROR,
                    format!("no disk space for {total} more bytes: {e}"),
                ))
            }
        }
    }

    async fn roll(&self) -> Result<(), KafkaError> {
        // The new segment's file and first space come first: if the disk is full the roll is
        // refused and the current segment stays active.
        let base = self.st.borrow().next_offset;
        let seg = Rc::new(Segment::new(&self.dir, base, now_ms()));
        seg.indexes_loaded.set(true);
        let writer = self.open_writer(&seg).await?;
        let first = PREALLOC_STEP_BYTES.min(self.cfg.segment_bytes);
        if let Err(e) = writer.pre_allocate(first).await {
            if let Ok(w) = Rc::try_unwrap(writer) {
                let _ = w.close().await;
            }
            segment::remove_quietly(&seg.log_path()).await;
            return Err(KafkaError::new(
                ErrorCode::KAFKA_STORAGE_ERROR,
                format!("no disk space for a new segment: {e}"),
            ));
        }
        seg.allocated_bytes.set(first);
        let (old_seg, old_file) = {
            let mut st = self.st.borrow_mut();
            Self::seal_open(&mut st);
            let seg = st.segments.values().next_back().expect("active").clone();
            let file = st.writer.take().expect("active writer");
            (seg, file)
        };
        let snapshot = (base, self.producers.borrow().encode());
        let txn_index = self.txn_index_bytes(old_seg.base_offset);
        self.st.borrow_mut().queue.push_back(Job::Seal {
            seg: old_seg,
            file: old_file,
            snapshot,
            txn_index,
        });
        self.flush_work.notify_all();
        let mut st = self.st.borrow_mut();
        st.segments.insert(base, seg);
        st.writer = Some(writer);
        st.appended_bytes = 0;
        st.tail_pos = 0;
        st.tail.clear();
        tracing::debug!(topic = %self.topic, partition = self.index, base, "rolled segment");
        Ok(())
    }

    /// `.txnindex` content for the segment starting at `base` (the last one or the one being
    /// sealed): the aborted transactions whose marker is at or after `base`; None if none.
    fn txn_index_bytes(&self, base: i64) -> Option<Vec<u8>> {
        let aborted = self.aborted.borrow();
        let mine: Vec<AbortedTxn> = aborted
            .iter()
            .filter(|a| a.last_offset >= base)
            .copied()
            .collect();
        (!mine.is_empty()).then(|| AbortedTxn::encode_all(&mine))
    }

    fn fail(&self, msg: &str) {
        tracing::error!(topic = %self.topic, partition = self.index, "partition offline: {msg}");
        self.st
            .borrow_mut()
            .failed
            .get_or_insert_with(|| msg.to_string());
        self.progress.notify_all();
    }

    /// Validates a batch the broker built itself (coordinator records), appends it and waits
    /// until it is durable. A batch that fails validation is a bug: UNKNOWN_SERVER_ERROR.
    pub async fn append_durable(&self, batch: &Bytes) -> Result<(), KafkaError> {
        let infos = batch::validate_produce(batch, usize::MAX).map_err(|e| {
            tracing::error!(topic = %self.topic, partition = self.index,
                "built an invalid batch: {e}");
            KafkaError::new(ErrorCode::UNKNOWN_SERVER_ERROR, e.message)
        })?;
        let (_, _, target) = self.append(batch, &infos).await?;
        self.wait_durable(target).await
    }

    /// Waits until everything below `target` is durable under the flush policy.
    pub async fn wait_durable(&self, target: i64) -> Result<(), KafkaError> {
        loop {
            let wait = self.progress.wait();
            {
                let st = self.st.borrow();
                if st.durable_offset >= target {
                    return Ok(());
                }
                if let Some(m) = &st.failed {
                    return Err(KafkaError::new(ErrorCode::KAFKA_STORAGE_ERROR, m.clone()));
                }
            }
            wait.await;
        }
    }

    async fn flusher(self: Rc<Self>) {
        loop {
            let work = self.flush_work.wait();
            let job = {
                let mut st = self.st.borrow_mut();
                if st.queue.is_empty() {
                    if let Some(wb) = &st.open_buf {
                        if wb.len * 2 < wb.buf.len() {
                            st.buf_capacity = MIN_WRITE_BUFFER_BYTES;
                        }
                    }
                    Self::seal_open(&mut st);
                }
                st.queue.pop_front()
            };
            let Some(job) = job else {
                self.flusher_idle.notify_all();
                // Closed or failed with nothing left to write: no write can come any more.
                if self.st.borrow().failed.is_some() || Rc::strong_count(&self) == 1 {
                    break;
                }
                work.await;
                continue;
            };
            if self.st.borrow().failed.is_some() {
                continue; // drop queued data: nothing after a failed write may be acknowledged
            }
            if let Err(e) = self.run_job(job).await {
                self.fail(&e.message);
            }
        }
        self.flusher_idle.notify_all();
    }

    async fn run_job(&self, job: Job) -> Result<(), KafkaError> {
        match job {
            Job::Write(mut wb) => {
                let write_len = align_up(wb.len as u64, BLOCK_BYTES) as usize;
                let end = wb.file_pos + write_len as u64;
                if end > wb.seg.allocated_bytes.get() {
                    // Allocate ahead in steps so most writes land in allocated space (no
                    // metadata for fdatasync) without reserving a whole segment per partition.
                    let target =
                        align_up(end, PREALLOC_STEP_BYTES).min(self.cfg.segment_bytes.max(end));
                    wb.file.pre_allocate(target).await.map_err(io_err)?;
                    wb.seg.allocated_bytes.set(target);
                }
                wb.buf.as_bytes_mut()[wb.len..write_len].fill(0);
                wb.buf.trim_to_size(write_len);
                let n = wb
                    .file
                    .write_at(wb.buf, wb.file_pos)
                    .await
                    .map_err(io_err)?;
                if n != write_len {
                    return Err(io_err(format!("short write: {n} of {write_len} bytes")));
                }
                if self.cfg.flush == FlushPolicy::EveryWrite {
                    wb.file.fdatasync().await.map_err(io_err)?;
                } else {
                    self.st.borrow_mut().unsynced_writes = true;
                }
                wb.seg.written_bytes.set(wb.file_pos + wb.len as u64);
                wb.seg.written_next_offset.set(wb.end_offset);
                {
                    let mut st = self.st.borrow_mut();
                    st.durable_offset = st.durable_offset.max(wb.end_offset);
                }
                self.progress.notify_all();
                // The indexes are rebuilt from the log when missing or torn: failing to write
                // them (a full disk) is no reason to take the partition offline.
                if let Err(e) = wb.seg.persist_indexes(false).await {
                    tracing::warn!(topic = %self.topic, partition = self.index,
                        "persisting indexes: {e}");
                }
                Ok(())
            }
            Job::Seal {
                seg,
                file,
                snapshot,
                txn_index,
            } => {
                // The index before the snapshot: recovery trusts the index of every segment
                // below the snapshot it starts from, and rebuilds the rest from the log.
                // Both are optional for correctness (recovery replays from an older snapshot),
                // so a full disk here is a warning, not an offline partition.
                let indexed = match txn_index {
                    Some(bytes) => write_durably(seg.txn_index_path(), bytes).await,
                    None => Ok(()),
                };
                if let Err(e) = &indexed {
                    // A later snapshot would make recovery trust this missing index: from now
                    // on recovery starts from the log's beginning instead.
                    tracing::warn!(topic = %self.topic, partition = self.index,
                        "writing the aborted-transaction index: {e}; dropping producer snapshots");
                    self.snapshots_disabled.set(true);
                    let dir = self.dir.clone();
                    let _ = glommio::executor()
                        .spawn_blocking(move || -> std::io::Result<()> {
                            for (_, path) in list_snapshots(&dir)? {
                                std::fs::remove_file(path)?;
                            }
                            Ok(())
                        })
                        .await;
                }
                let snap = if self.snapshots_disabled.get() {
                    Ok(())
                } else {
                    self.write_snapshot(snapshot.0, snapshot.1).await
                };
                if let Err(e) = snap {
                    tracing::warn!(topic = %self.topic, partition = self.index,
                        "writing the producer snapshot at {}: {e}", snapshot.0);
                }
                file.fdatasync().await.map_err(io_err)?;
                file.truncate(seg.written_bytes.get())
                    .await
                    .map_err(io_err)?;
                if let Err(e) = seg.persist_indexes(true).await {
                    tracing::warn!(topic = %self.topic, partition = self.index,
                        "persisting indexes of a sealed segment: {e}");
                }
                let file = Rc::try_unwrap(file).ok();
                if let Some(f) = file {
                    f.close().await.map_err(io_err)?;
                }
                Ok(())
            }
        }
    }

    /// fdatasync of the active segment if anything was written since the last one (the
    /// background half of `FlushPolicy::IntervalMs`).
    pub async fn sync_if_dirty(&self) {
        let file = {
            let mut st = self.st.borrow_mut();
            if !st.unsynced_writes || st.failed.is_some() {
                return;
            }
            st.unsynced_writes = false;
            st.writer.clone()
        };
        if let Some(f) = file {
            if let Err(e) = f.fdatasync().await {
                self.fail(&format!("fdatasync: {e}"));
            }
        }
    }

    /// Flushes everything queued, syncs, and cuts the active file to its data. Called on clean
    /// shutdown and before a partition is deleted.
    pub async fn close(&self) -> Result<(), KafkaError> {
        let _turn = self.append_lock.lock().await;
        loop {
            let idle = self.flusher_idle.wait();
            let busy = {
                let st = self.st.borrow();
                !st.queue.is_empty() || st.open_buf.is_some()
            };
            if !busy || self.st.borrow().failed.is_some() {
                break;
            }
            self.flush_work.notify_all();
            idle.await;
        }
        if let Some(e) = self.failure() {
            // An offline partition's files stay as the failure left them: no fdatasync,
            // truncate or snapshot that could make bytes never acknowledged look durable.
            // Recovery at the next start decides what is a valid log.
            let file = self.st.borrow_mut().writer.take();
            if let Some(f) = file.and_then(|f| Rc::try_unwrap(f).ok()) {
                let _ = f.close().await;
            }
            return Err(e);
        }
        // The last job may still be running: wait until its write completed.
        let target = self.st.borrow().next_offset;
        self.wait_durable(target).await?;
        let (file, seg) = {
            let mut st = self.st.borrow_mut();
            (st.writer.take(), st.segments.values().next_back().cloned())
        };
        if let (Some(f), Some(seg)) = (file, seg) {
            f.fdatasync().await.map_err(io_err)?;
            f.truncate(seg.written_bytes.get()).await.map_err(io_err)?;
            if let Err(e) = seg.persist_indexes(true).await {
                tracing::warn!(topic = %self.topic, partition = self.index,
                    "persisting indexes at shutdown: {e}");
            }
            // The snapshot at the log end means recovery replays nothing: the active
            // segment's aborted transactions must be in its index too. Without them (a full
            // disk) no snapshot: recovery replays instead.
            let indexed = match self.txn_index_bytes(seg.base_offset) {
                Some(bytes) => write_durably(seg.txn_index_path(), bytes).await.is_ok(),
                None => true,
            };
            if indexed && !self.snapshots_disabled.get() {
                let snap = self.producers.borrow().encode();
                if let Err(e) = self.write_snapshot(target, snap).await {
                    tracing::warn!(topic = %self.topic, partition = self.index,
                        "writing the producer snapshot at shutdown: {e}");
                }
            }
            if let Ok(f) = Rc::try_unwrap(f) {
                f.close().await.map_err(io_err)?;
            }
        }
        self.st
            .borrow_mut()
            .failed
            .get_or_insert_with(|| "partition closed".into());
        self.flush_work.notify_all();
        Ok(())
    }

    /// Reads whole batches starting with the one that contains `offset`, up to `max_bytes`
    /// (at least one batch, as Kafka does, so a large batch never blocks a consumer).
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, KafkaError> {
        self.read_isolated(offset, max_bytes, false).await
    }

    fn count_read(&self, r: &ReadResult, from: i64, cached: bool) {
        use crate::metrics::bump;
        let s = &self.stats;
        bump(&s.bytes_out, r.bytes as u64);
        bump(&s.records_out, (r.next_offset - from).max(0) as u64);
        bump(
            if cached {
                &s.cache_hits
            } else {
                &s.cache_misses
            },
            1,
        );
    }

    /// The offset below which no transaction is open: where read_committed consumers stop.
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.st.borrow().durable_offset;
        self.producers
            .borrow()
            .first_unstable()
            .map_or(hw, |f| f.min(hw))
    }

    /// `read`, and with `committed` (read_committed) only below the last stable offset, with
    /// the aborted transactions the consumer must drop.
    pub async fn read_isolated(
        &self,
        offset: i64,
        max_bytes: usize,
        committed: bool,
    ) -> Result<ReadResult, KafkaError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let (hw, start) = {
            let st = self.st.borrow();
            (st.durable_offset, st.log_start_offset)
        };
        let lso = self.last_stable_offset();
        let mut out = ReadResult {
            high_watermark: hw,
            last_stable_offset: lso,
            log_start_offset: start,
            chunks: Vec::new(),
            bytes: 0,
            aborted: Vec::new(),
            next_offset: offset,
        };
        if offset < start || offset > hw {
            return Err(KafkaError::new(
                ErrorCode::OFFSET_OUT_OF_RANGE,
                format!("offset {offset} outside [{start}, {hw}]"),
            ));
        }
        let hw = if committed { lso } else { hw };
        if offset >= hw {
            return Ok(out);
        }
        if committed {
            out.aborted = self
                .aborted
                .borrow()
                .iter()
                .filter(|a| a.last_offset >= offset && a.first_offset < hw)
                .map(|a| (a.producer_id, a.first_offset))
                .collect();
        }
        // Tail cache first.
        {
            let cache = self.cache.borrow();
            if cache.front().is_some_and(|e| e.base_offset <= offset) {
                let i = cache.partition_point(|e| e.next_offset <= offset);
                for e in cache.iter().skip(i) {
                    if e.next_offset > hw
                        || (out.bytes > 0 && out.bytes + e.bytes.len() > max_bytes)
                    {
                        break;
                    }
                    out.bytes += e.bytes.len();
                    out.next_offset = e.next_offset;
                    out.chunks.push(Chunk::Mem(e.bytes.clone()));
                }
                if !out.chunks.is_empty() {
                    self.count_read(&out, offset, true);
                    return Ok(out);
                }
            }
        }
        // Then the segment files.
        for seg in self.segments_from(offset) {
            seg.load_indexes(self.cfg.index_interval_bytes).await?;
            let written = seg.written_bytes.get();
            let mut pos = seg.lookup(offset);
            let reader = seg.reader().await?;
            let mut headers = HeaderWindow::default();
            let mut range_start: Option<u64> = None;
            while pos < written {
                let Some(prefix) = headers.prefix(&reader, pos, written).await? else {
                    break;
                };
                if prefix.next_offset() > hw {
                    break;
                }
                if range_start.is_none() {
                    if prefix.next_offset() <= offset {
                        pos += prefix.len as u64;
                        continue;
                    }
                    range_start = Some(pos);
                } else if out.bytes + prefix.len > max_bytes {
                    break;
                }
                out.bytes += prefix.len;
                out.next_offset = prefix.next_offset();
                pos += prefix.len as u64;
                if out.bytes >= max_bytes {
                    break;
                }
            }
            if let Some(s) = range_start {
                out.chunks.push(Chunk::File {
                    seg: seg.clone(),
                    pos: s,
                    len: (pos - s) as usize,
                });
                self.count_read(&out, offset, false);
                return Ok(out);
            }
        }
        Ok(out)
    }

    /// Calls `f` with every whole batch from the log start to the high watermark, in order:
    /// how the coordinators load their internal topics.
    pub async fn scan(&self, mut f: impl FnMut(&[u8])) -> Result<(), KafkaError> {
        let mut offset = self.log_start_offset();
        loop {
            let r = self.read(offset, 1 << 20).await?;
            if r.chunks.is_empty() {
                return Ok(());
            }
            let mut bytes = Vec::with_capacity(r.bytes);
            for c in r.chunks {
                match c {
                    Chunk::Mem(b) => bytes.extend_from_slice(&b),
                    Chunk::File { seg, pos, len } => {
                        let reader = seg.reader().await?;
                        bytes.extend_from_slice(&segment::read_at(&reader, pos, len).await?);
                    }
                }
            }
            let mut at = 0;
            let before = offset;
            while let Some(pre) = BatchPrefix::parse(&bytes[at..]) {
                if at + pre.len > bytes.len() {
                    break;
                }
                f(&bytes[at..at + pre.len]);
                offset = pre.next_offset();
                at += pre.len;
            }
            if offset == before {
                return Err(io_err(format!(
                    "{}-{}: no whole batch at offset {offset}",
                    self.topic, self.index
                )));
            }
        }
    }

    /// The first offset whose record timestamp is >= `ts`, with that timestamp; None when every
    /// record is older.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, KafkaError> {
        let (segs, hw) = {
            let st = self.st.borrow();
            (
                st.segments.values().cloned().collect::<Vec<_>>(),
                st.durable_offset,
            )
        };
        for seg in segs {
            seg.load_indexes(self.cfg.index_interval_bytes).await?;
            if seg.max_timestamp.get() < ts {
                continue;
            }
            let from = seg.lookup_time(ts);
            let mut pos = seg.lookup(from);
            let written = seg.written_bytes.get();
            let reader = seg.reader().await?;
            let mut headers = HeaderWindow::default();
            while pos < written {
                let Some(prefix) = headers.prefix(&reader, pos, written).await? else {
                    break;
                };
                if prefix.base_offset >= hw {
                    break;
                }
                let whole = segment::read_at(&reader, pos, prefix.len).await?;
                if whole.len() == prefix.len
                    && batch::be_i64(&whole, batch::OFF_MAX_TIMESTAMP) >= ts
                {
                    if let Some(found) = first_record_at_or_after(&whole, ts)? {
                        return Ok(Some(found));
                    }
                }
                pos += prefix.len as u64;
            }
        }
        Ok(None)
    }

    /// Deletes whole old segments past retention (time or size); never the active one.
    pub async fn enforce_retention(&self) -> Result<(), KafkaError> {
        let now = now_ms();
        let expired = self
            .producers
            .borrow_mut()
            .expire(now, self.cfg.producer_id_expiration_ms);
        if expired > 0 {
            tracing::debug!(topic = %self.topic, partition = self.index, expired,
                "forgot idle producer ids");
        }
        loop {
            let (oldest, count, total) = {
                let st = self.st.borrow();
                let total: u64 = st
                    .segments
                    .values()
                    .map(|s| s.written_bytes.get())
                    .sum::<u64>()
                    .max(st.appended_bytes);
                (
                    st.segments.values().next().cloned(),
                    st.segments.len(),
                    total,
                )
            };
            let Some(oldest) = oldest else { return Ok(()) };
            if count <= 1 {
                return Ok(());
            }
            oldest.load_indexes(self.cfg.index_interval_bytes).await?;
            let newest_ts = if oldest.max_timestamp.get() >= 0 {
                oldest.max_timestamp.get()
            } else {
                oldest.created_ms
            };
            let by_time = self.cfg.retention_ms >= 0 && now - newest_ts > self.cfg.retention_ms;
            let by_size = self.cfg.retention_bytes >= 0
                && total.saturating_sub(oldest.written_bytes.get())
                    >= self.cfg.retention_bytes as u64;
            if !(by_time || by_size) {
                return Ok(());
            }
            let next_base = {
                let mut st = self.st.borrow_mut();
                st.segments.remove(&oldest.base_offset);
                let nb = st.segments.keys().next().copied().expect("active remains");
                st.log_start_offset = st.log_start_offset.max(nb);
                nb
            };
            tracing::info!(topic = %self.topic, partition = self.index, base = oldest.base_offset,
                next_base, by_time, by_size, "retention deleted segment");
            self.aborted
                .borrow_mut()
                .retain(|a| a.last_offset >= next_base);
            for path in [
                oldest.log_path(),
                oldest.index_path(),
                oldest.time_index_path(),
                oldest.txn_index_path(),
            ] {
                segment::remove_quietly(&path).await;
            }
        }
    }

    /// Removes the partition's files; the partition must be closed.
    pub async fn remove_files(&self) -> Result<(), KafkaError> {
        let dir = self.dir.clone();
        glommio::executor()
            .spawn_blocking(move || std::fs::remove_dir_all(dir))
            .await
            .map_err(io_err)
    }

    pub fn segment_count(&self) -> usize {
        self.st.borrow().segments.len()
    }
}

/// Reads batch headers through a window so walking small batches is not a read per batch.
#[derive(Default)]
struct HeaderWindow {
    pos: u64,
    bytes: Vec<u8>,
}

impl HeaderWindow {
    async fn prefix(
        &mut self,
        reader: &glommio::io::BufferedFile,
        pos: u64,
        limit: u64,
    ) -> Result<Option<BatchPrefix>, KafkaError> {
        let need = batch::PREFIX_BYTES as u64;
        if pos + need > limit {
            return Ok(None);
        }
        if pos < self.pos || pos + need > self.pos + self.bytes.len() as u64 {
            let want = (limit - pos).min(64 * 1024) as usize;
            self.bytes = segment::read_at(reader, pos, want).await?;
            self.pos = pos;
        }
        let at = (pos - self.pos) as usize;
        Ok(BatchPrefix::parse(&self.bytes[at..]).filter(|p| pos + p.len as u64 <= limit))
    }
}

/// Decodes one batch (decompressing if needed) to find its first record with timestamp >= ts.
fn first_record_at_or_after(whole: &[u8], ts: i64) -> Result<Option<(i64, i64)>, KafkaError> {
    let attrs = i16::from_be_bytes([
        whole[batch::OFF_ATTRIBUTES],
        whole[batch::OFF_ATTRIBUTES + 1],
    ]);
    let base = batch::be_i64(whole, batch::OFF_BASE_OFFSET);
    if attrs & batch::ATTR_LOG_APPEND_TIME != 0 {
        let t = batch::be_i64(whole, batch::OFF_MAX_TIMESTAMP);
        return Ok((t >= ts).then_some((base, t)));
    }
    let mut buf = Bytes::copy_from_slice(whole);
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf)
        .map_err(|e| KafkaError::new(ErrorCode::CORRUPT_MESSAGE, format!("stored batch: {e}")))?;
    Ok(set
        .records
        .iter()
        .find(|r| r.timestamp >= ts)
        .map(|r| (r.offset, r.timestamp)))
}

/// (number, entry) of the files named `<number><suffix>` in a partition directory; none when
/// the directory does not exist yet.
fn numbered_files(dir: &Path, suffix: &str) -> std::io::Result<Vec<(i64, std::fs::DirEntry)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name();
        let number = name
            .to_string_lossy()
            .strip_suffix(suffix)
            .and_then(|stem| stem.parse::<i64>().ok());
        if let Some(n) = number {
            out.push((n, entry));
        }
    }
    Ok(out)
}

/// (base offset, size, mtime ms) of each `.log` file in a partition directory, by base offset.
fn list_segments(dir: &Path) -> std::io::Result<Vec<(i64, u64, i64)>> {
    let mut out = Vec::new();
    for (base, entry) in numbered_files(dir, ".log")? {
        let md = entry.metadata()?;
        let mtime = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or_else(now_ms);
        out.push((base, md.len(), mtime));
    }
    out.sort();
    Ok(out)
}

/// (offset, path) of the `.snapshot` files of a partition directory.
fn list_snapshots(dir: &Path) -> std::io::Result<Vec<(i64, PathBuf)>> {
    Ok(numbered_files(dir, ".snapshot")?
        .into_iter()
        .map(|(off, entry)| (off, entry.path()))
        .collect())
}

/// Writes a small file whole and durably (temp file, fsync, rename).
async fn write_durably(path: PathBuf, bytes: Vec<u8>) -> Result<(), KafkaError> {
    glommio::executor()
        .spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut tmp = path.clone().into_os_string();
            tmp.push(".tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .map_err(io_err)
}
