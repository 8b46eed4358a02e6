//! A partition: its segments and its state, owned and changed only by its shard. This file
//! holds the `Partition` struct, `open`, `close` and the accessors; the work is in the rooms
//! beside it: `appender` (append path, group commit, flusher), `reader` (fetch reads, the tail
//! cache, offset lookups), `recovery` (start-up, producer snapshots), `retention`, and
//! `walker` (the one walk over stored batches they share).
//!
//! Two offsets: `log_end_offset` (the next offset to assign; data below it may still be in
//! write buffers) and `durable_offset` (everything below it is on the device, and with
//! `FlushPolicy::EveryWrite` fdatasync'ed). `high_watermark` is the durable offset until the
//! high watermark moves to the partition manager. A follower's `truncate_to` moves both back.
//!
//! Invariants: batch offsets increase from `log_start_offset` to `next_offset`, back to back
//! unless the log was compacted (the cleaner leaves gaps where whole batches went, and a
//! follower copies them); `durable_offset <= next_offset` and the durable offset only grows (asserted in the
//! appender) except when `truncate_to` cuts the log; `log_start_offset` may pass the durable
//! offset when retention deletes up to a segment rolled but not yet written; a failed write
//! takes the partition offline and no later append is acknowledged.

use super::appender::{Job, WriteBuf};
use super::disk::{Faults, LogFile};
use super::epochs::LeaderEpochCache;
use super::producers::{AbortedTxn, ProducerTable};
use super::reader::CacheEntry;
use super::recovery::{list_segments, write_durably};
use super::segment::Segment;
use crate::config::{FlushPolicy, TimestampType};
use crate::protocol::errors::{ErrorCode, KafkaError};
use crate::util::Notify;
use glommio::io::OpenOptions;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};

pub use super::disk::BLOCK_BYTES;
pub use super::reader::{Chunk, ReadResult, TailCache};

/// Disk space reserved ahead of the write position of the active segment: at most this much.
const PREALLOC_STEP_BYTES: u64 = 16 << 20;
/// The first reservation of a segment; each next one doubles the file, up to the step.
const PREALLOC_FIRST_BYTES: u64 = 1 << 20;

/// Bytes of disk to reserve for a segment that must hold `end` bytes: `end` rounded up to a
/// power of two from 1 MiB to 16 MiB, then to 16 MiB steps, never past the segment size (but
/// always `end`). Most writes then land in reserved space (an fdatasync with no metadata),
/// while a partition that holds little reserves little: 10,000 partitions would otherwise
/// reserve 160 GB before they hold anything.
pub(super) fn prealloc_target(end: u64, segment_bytes: u64) -> u64 {
    let step = end
        .next_power_of_two()
        .clamp(PREALLOC_FIRST_BYTES, PREALLOC_STEP_BYTES);
    crate::util::align_up(end.max(1), step).min(segment_bytes.max(end))
}
/// Smallest write buffer allocated; larger ones come from big batches or write_buffer_bytes.
pub(super) const MIN_WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Per-partition settings (the broker's, overridden by topic configs).
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A segment rolls when the next append would take it past this size.
    pub segment_bytes: u64,
    /// A segment rolls at the first append this long after it was created.
    pub segment_ms: i64,
    /// Old segments whose newest record is older than this are deleted (-1: never).
    pub retention_ms: i64,
    /// Old segments are deleted while the rest still holds this much (-1: no size limit).
    pub retention_bytes: i64,
    /// Log bytes between two entries of the sparse offset and time indexes.
    pub index_interval_bytes: u64,
    /// When an append counts as durable: written to the device, or fdatasync'ed too.
    pub flush: FlushPolicy,
    /// Whether batches keep the producer's timestamps or get the broker's append time.
    pub timestamp_type: TimestampType,
    /// Largest write buffer group commit grows to under load.
    pub write_buffer_bytes: usize,
    /// A producer id idle this long, with no open transaction, is forgotten (Kafka:
    /// producer.id.expiration.ms), so the state does not grow with every producer ever seen.
    pub producer_id_expiration_ms: i64,
    /// The simulated disk of the tests: faults injected into the segment writes. None in
    /// the broker.
    pub faults: Option<std::sync::Arc<Faults>>,
    /// Each segment rolls up to this much before `segment_ms` (a spread derived from its
    /// base offset), so partitions created together do not roll together.
    pub segment_jitter_ms: i64,
    /// With an interval flush policy: fdatasync before acknowledging once this many records
    /// are written and not synced (Kafka's flush.messages). None: the interval only.
    pub flush_messages: Option<u64>,
    /// With CreateTime: a batch whose first or largest timestamp is more than this before
    /// (after) the broker's clock is refused with INVALID_TIMESTAMP.
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    /// Largest batch a producer may append (MESSAGE_TOO_LARGE past it).
    pub max_message_bytes: usize,
    /// cleanup.policy has `delete`: retention deletes whole old segments by time and size.
    pub delete_old_segments: bool,
    /// cleanup.policy has `compact`: the cleaner keeps the latest record of each key, and
    /// produced records need a key.
    pub compact: bool,
    /// Cleaned when the dirty share of the cleanable log reaches this.
    pub min_cleanable_dirty_ratio: f64,
    /// Records younger than this are not cleaned (their segment is not cleanable yet).
    pub min_compaction_lag_ms: i64,
    /// A dirty record older than this gets its log cleaned whatever the dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// A tombstone (null value) older than this goes at the next cleaning, and so does an
    /// empty transaction marker.
    pub delete_retention_ms: i64,
}

impl LogConfig {
    /// The limits that are off unless a topic sets them: no jitter, no flush by count, any
    /// timestamp, any batch size. For struct update syntax in tests and benches.
    pub fn unlimited() -> LogConfig {
        LogConfig {
            segment_bytes: u32::MAX as u64,
            segment_ms: i64::MAX / 2,
            retention_ms: -1,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            flush: FlushPolicy::EveryWrite,
            timestamp_type: TimestampType::CreateTime,
            write_buffer_bytes: 1 << 20,
            producer_id_expiration_ms: 86_400_000,
            faults: None,
            segment_jitter_ms: 0,
            flush_messages: None,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
            max_message_bytes: usize::MAX,
            delete_old_segments: true,
            compact: false,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 86_400_000,
        }
    }
}

pub(super) struct State {
    pub(super) segments: BTreeMap<i64, Rc<Segment>>,
    pub(super) writer: Option<Rc<LogFile>>,
    pub(super) log_start_offset: i64,
    pub(super) next_offset: i64,
    /// Logical size of the active segment including bytes not yet written.
    pub(super) appended_bytes: u64,
    pub(super) durable_offset: i64,
    pub(super) open_buf: Option<WriteBuf>,
    pub(super) queue: VecDeque<Job>,
    /// Aligned position and content of the active segment's last partial block, as it will be
    /// once everything queued is written.
    pub(super) tail_pos: u64,
    pub(super) tail: Vec<u8>,
    /// Capacity of the next write buffer: doubles when a buffer fills before the flusher takes
    /// it (load: let one write carry more), resets when a write goes out half empty.
    pub(super) buf_capacity: usize,
    pub(super) failed: Option<String>,
    pub(super) unsynced_writes: bool,
    /// Since when a written batch has waited for fdatasync (with `unsynced_writes`).
    pub(super) dirty_since: Option<std::time::Instant>,
    /// Everything below this has been fdatasync'ed (flush.messages counts from it).
    pub(super) synced_offset: i64,
    /// The flusher is running a job it took off the queue (a write or a seal).
    pub(super) job_running: bool,
}

impl State {
    /// The active segment: the newest, the one appends go to. A partition always has one.
    pub(super) fn active_segment(&self) -> &Rc<Segment> {
        self.segments
            .values()
            .next_back()
            .expect("a partition has an active segment")
    }
}

/// A partition of a topic: its segments, its offsets and its producers' state.
pub struct Partition {
    /// The topic's name.
    pub topic: String,
    /// The partition's number within the topic.
    pub index: i32,
    /// `<data>/<topic>-<index>`.
    pub dir: PathBuf,
    /// Settings: the topic's configs over the broker's; a topic config altered at run time
    /// replaces them (`set_config`), and each use reads the current ones.
    cfg: RefCell<Rc<LogConfig>>,
    pub(super) me: Weak<Partition>,
    pub(super) st: RefCell<State>,
    pub(super) cache: RefCell<VecDeque<CacheEntry>>,
    pub(super) tail_cache: Rc<TailCache>,
    /// Idempotent producers seen in this partition.
    pub(super) producers: RefCell<ProducerTable>,
    /// Aborted transactions of the live segments, in marker order: what read_committed
    /// consumers are told to drop. Each segment's entries are written to `<base>.txnindex`
    /// when it is sealed; the active segment's come back from the log at recovery.
    pub(super) aborted: RefCell<Vec<AbortedTxn>>,
    /// Set when an aborted-transaction index could not be written: no snapshot may be taken
    /// any more this run (recovery must replay the whole log).
    pub(super) snapshots_disabled: Cell<bool>,
    /// Appends in the order they were called (FIFO, unlike glommio's Semaphore).
    pub(super) append_lock: crate::util::FifoLock,
    /// Held while segments are removed or cut (retention, `truncate_to`), so the two never
    /// pull segments from under each other. Taken after `append_lock` when both are.
    pub(super) layout_lock: crate::util::FifoLock,
    /// Log compaction: everything below this offset is clean (`cleaner-offset-checkpoint`).
    pub(super) first_dirty: Cell<i64>,
    /// Bumped by every change of the segments other than an append (retention, DeleteRecords,
    /// truncation, a restart of the log): a cleaning pass that sees it move gives up.
    pub(super) layout_gen: Cell<u64>,
    /// When a tombstone or transaction marker the last cleaning pass kept may go: a pass
    /// runs then even with nothing dirty.
    pub(super) tombstones_due: Cell<Option<i64>>,
    /// The leader epochs of the log and where each starts (`leader-epoch-checkpoint`).
    pub(super) epochs: RefCell<LeaderEpochCache>,
    /// The leader epoch stamped into every batch appended from now on (each batch's
    /// partitionLeaderEpoch, as Kafka writes it); set by the partition manager from the
    /// metadata image.
    leader_epoch: Cell<i32>,
    pub(super) flush_work: Notify,
    /// Durable offset advanced, or the partition failed.
    pub progress: Notify,
    pub(super) flusher_idle: Notify,
    /// Traffic counters for the metrics.
    pub stats: crate::metrics::PartitionStats,
}

pub(super) fn io_err(e: impl std::fmt::Display) -> KafkaError {
    KafkaError::new(ErrorCode::KAFKA_STORAGE_ERROR, e.to_string())
}

impl Partition {
    /// The settings in force now.
    pub fn cfg(&self) -> Rc<LogConfig> {
        self.cfg.borrow().clone()
    }

    /// Takes new settings (a topic config altered at run time): the next append, roll,
    /// retention pass and read use them. What the broker and not the topic decides (the
    /// simulated disk's faults) is kept.
    pub fn set_config(&self, mut cfg: LogConfig) {
        let old = self.cfg();
        cfg.faults = old.faults.clone();
        if cfg.compact {
            for s in self.st.borrow().segments.values() {
                s.gaps_allowed.set(true);
            }
        }
        *self.cfg.borrow_mut() = Rc::new(cfg);
    }

    /// A new, empty segment at `base` for this partition's log.
    pub(super) fn new_segment(&self, base: i64) -> Rc<Segment> {
        let seg = Segment::new(&self.dir, base, crate::util::now_ms());
        seg.indexes_loaded.set(true);
        seg.gaps_allowed.set(self.cfg().compact);
        Rc::new(seg)
    }

    /// The partition's directory name under the data directory: `<topic>-<index>`.
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
                .spawn_blocking(move || {
                    super::cleaner::finish_swaps(&dir)?;
                    list_segments(&dir)
                })
                .await
                .map_err(io_err)?
        };
        let mut segments = BTreeMap::new();
        for (base, size, mtime_ms) in &listing {
            let s = Segment::new(&dir, *base, *mtime_ms);
            s.written_bytes.set(*size);
            s.gaps_allowed.set(cfg.compact);
            // All but the newest are sealed; the newest becomes the active one.
            s.sealed.set(Some(base) != listing.last().map(|l| &l.0));
            segments.insert(*base, Rc::new(s));
        }
        let p = Rc::new_cyclic(|me| Partition {
            topic: topic.to_string(),
            index,
            dir: dir.clone(),
            cfg: RefCell::new(Rc::new(cfg)),
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
                dirty_since: None,
                synced_offset: 0,
                job_running: false,
            }),
            cache: RefCell::new(VecDeque::new()),
            tail_cache,
            producers: RefCell::new(ProducerTable::default()),
            aborted: RefCell::new(Vec::new()),
            snapshots_disabled: Cell::new(false),
            append_lock: Default::default(),
            layout_lock: Default::default(),
            epochs: RefCell::new(LeaderEpochCache::default()),
            first_dirty: Cell::new(0),
            layout_gen: Cell::new(0),
            tombstones_due: Cell::new(None),
            leader_epoch: Cell::new(0),
            flush_work: Notify::default(),
            progress: Notify::default(),
            flusher_idle: Notify::default(),
            stats: Default::default(),
        });
        let validated_from = p.recover().await?;
        p.rebuild_producers(validated_from).await?;
        p.recover_epochs().await?;
        p.load_first_dirty().await;
        for seg in p.st.borrow().segments.values() {
            seg.drop_reader();
        }
        let flusher = p.clone();
        glommio::spawn_local(async move { flusher.flusher().await }).detach();
        Ok(p)
    }

    pub(super) async fn open_writer(&self, seg: &Segment) -> Result<Rc<LogFile>, KafkaError> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(seg.log_path())
            .await
            .map_err(io_err)?;
        let f = LogFile::new(f, self.cfg().faults.clone());
        seg.allocated_bytes
            .set(f.file_size().await.map_err(io_err)?);
        Ok(Rc::new(f))
    }

    /// The segment holding `offset` and every later one.
    pub(super) fn segments_from(&self, offset: i64) -> Vec<Rc<Segment>> {
        let st = self.st.borrow();
        let first = st
            .segments
            .range(..=offset)
            .next_back()
            .map(|(k, _)| *k)
            .unwrap_or(0);
        st.segments.range(first..).map(|(_, s)| s.clone()).collect()
    }

    /// The leader epoch new batches are stamped with.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.get()
    }

    /// Stamps batches appended from now on with `epoch` (a new leadership term).
    pub fn set_leader_epoch(&self, epoch: i32) {
        assert!(
            epoch >= self.leader_epoch.get(),
            "{}-{}: leader epoch going back from {} to {epoch}",
            self.topic,
            self.index,
            self.leader_epoch.get()
        );
        self.leader_epoch.set(epoch);
    }

    /// The next offset to be assigned; data below it may still be in write buffers.
    pub fn log_end_offset(&self) -> i64 {
        self.st.borrow().next_offset
    }

    /// Everything below this offset is on the device (and fdatasync'ed with
    /// `FlushPolicy::EveryWrite`); it only grows.
    pub fn durable_offset(&self) -> i64 {
        self.st.borrow().durable_offset
    }

    /// The first offset still in the log (retention moves it to a segment's base offset).
    pub fn log_start_offset(&self) -> i64 {
        self.st.borrow().log_start_offset
    }

    /// Why the partition is offline (a failed write, or closed), as the error its requests get.
    pub fn failure(&self) -> Option<KafkaError> {
        self.st
            .borrow()
            .failed
            .as_ref()
            .map(|m| KafkaError::new(ErrorCode::KAFKA_STORAGE_ERROR, m.clone()))
    }

    /// `.txnindex` content for the segment starting at `base` (the last one or the one being
    /// sealed): the aborted transactions whose marker is at or after `base`; None if none.
    pub(super) fn txn_index_bytes(&self, base: i64) -> Option<Vec<u8>> {
        let aborted = self.aborted.borrow();
        let mine: Vec<AbortedTxn> = aborted
            .iter()
            .filter(|a| a.last_offset >= base)
            .copied()
            .collect();
        (!mine.is_empty()).then(|| AbortedTxn::encode_all(&mine))
    }

    pub(super) fn fail(&self, msg: &str) {
        tracing::error!(topic = %self.topic, partition = self.index, "partition offline: {msg}");
        self.st
            .borrow_mut()
            .failed
            .get_or_insert_with(|| msg.to_string());
        self.progress.notify_all();
    }

    /// Waits until the flusher has written everything queued and finished the job it runs
    /// (a seal writes snapshots and indexes after the data is durable), so the files are
    /// still until the next append. The caller holds the append lock, so nothing is queued
    /// meanwhile. Then everything appended is durable, or the partition failed (the error).
    pub(super) async fn drain(&self) -> Result<(), KafkaError> {
        loop {
            let idle = self.flusher_idle.wait();
            let busy = {
                let st = self.st.borrow();
                !st.queue.is_empty() || st.open_buf.is_some() || st.job_running
            };
            if !busy || self.st.borrow().failed.is_some() {
                break;
            }
            self.flush_work.notify_all();
            idle.await;
        }
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let st = self.st.borrow();
        assert_eq!(
            st.durable_offset, st.next_offset,
            "{}-{}: drained with appends not durable",
            self.topic, self.index
        );
        Ok(())
    }

    /// Flushes everything queued, syncs, and cuts the active file to its data. Called on clean
    /// shutdown and before a partition is deleted.
    pub async fn close(&self) -> Result<(), KafkaError> {
        let _turn = self.append_lock.lock().await;
        // Not while the cleaner swaps segments (it gives up once it sees the partition closed).
        let _layout = self.layout_lock.lock().await;
        let _ = self.drain().await;
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
        let target = self.st.borrow().next_offset;
        let (file, seg) = {
            let mut st = self.st.borrow_mut();
            // Closed from here on, whatever the steps below do: an append waiting behind this
            // close (a deleted topic's producer) must find the partition closed, not a
            // missing writer (which is a bug, and a bug stops the broker).
            st.failed.get_or_insert_with(|| "partition closed".into());
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

    /// Removes the partition's files; the partition must be closed.
    pub async fn remove_files(&self) -> Result<(), KafkaError> {
        let dir = self.dir.clone();
        glommio::executor()
            .spawn_blocking(move || std::fs::remove_dir_all(dir))
            .await
            .map_err(io_err)
    }

    /// The producers this partition remembers (DescribeProducers): (producer id, epoch, last
    /// sequence or -1, last write time in ms, first offset of its open transaction or -1).
    pub fn active_producers(&self) -> Vec<(i64, i16, i32, i64, i64)> {
        self.producers
            .borrow()
            .producers
            .iter()
            .map(|(pid, e)| {
                let last_seq = e.batches.back().map_or(-1, |b| b.last_seq);
                (
                    *pid,
                    e.epoch,
                    last_seq,
                    e.last_ms,
                    e.txn_first.unwrap_or(-1),
                )
            })
            .collect()
    }

    /// Bytes of the partition's segments (the active one as far as appended).
    pub fn size_bytes(&self) -> u64 {
        let st = self.st.borrow();
        let n = st.segments.len();
        let sealed: u64 = st
            .segments
            .values()
            .take(n.saturating_sub(1))
            .map(|s| s.written_bytes.get())
            .sum();
        sealed + st.appended_bytes
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.st.borrow().segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::prealloc_target;

    #[test]
    fn preallocation_doubles_then_steps_and_stays_in_the_segment() {
        const M: u64 = 1 << 20;
        let seg = 1 << 30;
        assert_eq!(prealloc_target(0, seg), M);
        assert_eq!(prealloc_target(4096, seg), M);
        assert_eq!(prealloc_target(M, seg), M);
        assert_eq!(prealloc_target(M + 1, seg), 2 * M);
        assert_eq!(prealloc_target(3 * M, seg), 4 * M);
        assert_eq!(prealloc_target(9 * M, seg), 16 * M);
        assert_eq!(prealloc_target(17 * M, seg), 32 * M);
        assert_eq!(prealloc_target(seg - 1, seg), seg);
        // A small segment is reserved whole; what must fit always does.
        assert_eq!(prealloc_target(0, 64 * 1024), 64 * 1024);
        assert_eq!(prealloc_target(100_000, 64 * 1024), 100_000);
    }
}
