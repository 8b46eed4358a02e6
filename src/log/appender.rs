//! The append path: offsets assigned under the append lock, each batch copied once into an
//! aligned DMA buffer with its base offset patched in (not covered by the CRC), and group commit.
//! One flusher task per partition writes whatever accumulated while the previous write was in
//! flight as one O_DIRECT write, then advances the durable offset and wakes the producers
//! waiting on it. A partial last block is kept in memory and rewritten by the next write.
//!
//! Invariants (asserted): every O_DIRECT write starts and ends on a `BLOCK_BYTES` boundary, so
//! the file never has holes; writes complete in queue order, so the durable offset only grows
//! and never passes `next_offset`; nothing after a failed write is written or acknowledged.

use super::disk::LogFile;
use super::partition::{
    io_err, prealloc_target, Partition, State, BLOCK_BYTES, MIN_WRITE_BUFFER_BYTES,
};
use super::producers::{self, AbortedTxn, BatchSeq, Verdict};
use super::recovery::{list_snapshots, write_durably};
use super::segment::{self, Segment};
use crate::config::{FlushPolicy, TimestampType};
use crate::protocol::batch::{self, BatchInfo};
use crate::protocol::errors::{ErrorCode, KafkaError};
use crate::protocol::OWN_BUFFER_MIN_BYTES;
use crate::util::{align_down, align_up, now_ms};
use bytes::Bytes;
use glommio::io::DmaBuffer;
use std::rc::Rc;

pub(super) struct WriteBuf {
    pub(super) seg: Rc<Segment>,
    pub(super) file: Rc<LogFile>,
    /// Aligned file position of buf[0].
    pub(super) file_pos: u64,
    pub(super) buf: DmaBuffer,
    /// Valid bytes in buf (carried partial block + new batches).
    pub(super) len: usize,
    /// Next offset after the last batch in this buffer.
    pub(super) end_offset: i64,
}

pub(super) enum Job {
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

/// How `place` writes a batch's broker-owned fields.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stamp {
    /// This broker leads: it writes the base offset, its leader epoch, and with
    /// LogAppendTime the append time (and the CRC again).
    Leader {
        leader_epoch: i32,
        /// -1 with CreateTime.
        log_append_time: i64,
    },
    /// A follower: the leader's bytes go in unchanged.
    Replica,
}

/// Where an append went: what the producer is told, and what to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record.
    pub base_offset: i64,
    /// The broker's timestamp with LogAppendTime, else -1.
    pub log_append_time: i64,
    /// The append is durable once the durable offset reaches this (`wait_durable`).
    pub durable_target: i64,
}

impl Partition {
    /// Assigns offsets to the validated batches of `records` and queues them for writing.
    pub async fn append(
        &self,
        records: &Bytes,
        infos: &[BatchInfo],
    ) -> Result<Appended, KafkaError> {
        let _turn = self.append_lock.lock().await;
        if let Some(e) = self.failure() {
            return Err(e);
        }
        self.check_topic_limits(infos, now_ms())?;
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
                Verdict::Duplicate(b) => {
                    return Ok(Appended {
                        base_offset: b.base_offset,
                        log_append_time: -1,
                        durable_target: b.last_offset + 1,
                    })
                }
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
        let Appended {
            base_offset: offset,
            durable_target: target,
            ..
        } = self.append_locked(&b, &[info]).await?;
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

    /// The topic's limits on what a producer writes: max.message.bytes, and with CreateTime
    /// the message.timestamp.before/after.max.ms bounds (on each batch's first and largest
    /// timestamps, which its header carries; Kafka also looks at every record's).
    fn check_topic_limits(&self, infos: &[BatchInfo], now: i64) -> Result<(), KafkaError> {
        let cfg = self.cfg();
        for i in infos {
            if i.len > cfg.max_message_bytes {
                return Err(KafkaError::new(
                    ErrorCode::MESSAGE_TOO_LARGE,
                    format!(
                        "batch of {} bytes exceeds the topic's max.message.bytes {}",
                        i.len, cfg.max_message_bytes
                    ),
                ));
            }
            if cfg.timestamp_type != TimestampType::CreateTime {
                continue;
            }
            // -1: no timestamp (Kafka exempts it from the bounds).
            for ts in [i.base_timestamp, i.max_timestamp]
                .into_iter()
                .filter(|t| *t != -1)
            {
                let (before, after) = (now.saturating_sub(ts), ts.saturating_sub(now));
                if before > cfg.timestamp_before_max_ms || after > cfg.timestamp_after_max_ms {
                    return Err(KafkaError::new(
                        ErrorCode::INVALID_TIMESTAMP,
                        format!(
                            "timestamp {ts} is {} ms {} the broker's clock, past the topic's \
                             message.timestamp.{}.max.ms {}",
                            before.max(after),
                            if before > 0 { "before" } else { "after" },
                            if before > 0 { "before" } else { "after" },
                            if before > 0 {
                                cfg.timestamp_before_max_ms
                            } else {
                                cfg.timestamp_after_max_ms
                            }
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The append proper; the caller holds the append lock and has checked the producer.
    async fn append_locked(
        &self,
        records: &Bytes,
        infos: &[BatchInfo],
    ) -> Result<Appended, KafkaError> {
        let total: u64 = infos.iter().map(|i| i.len as u64).sum();
        let offsets: i64 = infos.iter().map(|i| i.last_offset_delta as i64 + 1).sum();
        let now = now_ms();
        let last = self.log_end_offset() + offsets - 1;
        self.make_room(total, last, now).await?;
        let log_append_time = match self.cfg().timestamp_type {
            TimestampType::LogAppendTime => now,
            TimestampType::CreateTime => -1,
        };
        let leader_epoch = self.leader_epoch();
        let base_offset = self.st.borrow().next_offset;
        self.note_epoch(leader_epoch, base_offset).await?;
        let mut st = self.st.borrow_mut();
        for info in infos {
            self.place(
                &mut st,
                &records.slice(info.start..info.start + info.len),
                info,
                Stamp::Leader {
                    leader_epoch,
                    log_append_time,
                },
            );
        }
        let target = st.next_offset;
        drop(st);
        crate::metrics::bump(&self.stats.bytes_in, total);
        crate::metrics::bump(&self.stats.records_in, (target - base_offset) as u64);
        self.flush_work.notify_all();
        Ok(Appended {
            base_offset,
            log_append_time,
            durable_target: target,
        })
    }

    /// Rolls the active segment when `total` more bytes would overflow it (or it is too old,
    /// or `last_offset`, the last offset appended, would not fit the indexes' 32-bit relative
    /// offsets: a follower copying a compacted log can span many offsets in few bytes)
    /// and reserves disk space for them: a full disk refuses the append (retriable) before it
    /// has an offset, and the partition stays healthy for reads and for later appends.
    pub(super) async fn make_room(
        &self,
        total: u64,
        last_offset: i64,
        now: i64,
    ) -> Result<(), KafkaError> {
        let roll = {
            let cfg = self.cfg();
            let st = self.st.borrow();
            let active = st.active_segment();
            let jitter = segment_jitter(
                &self.topic,
                self.index,
                active.base_offset,
                cfg.segment_jitter_ms.min(cfg.segment_ms),
            );
            let max_age = cfg.segment_ms - jitter;
            st.appended_bytes > 0
                && (st.appended_bytes + total > cfg.segment_bytes
                    || now - active.created_ms >= max_age
                    || last_offset - active.base_offset >= i32::MAX as i64)
        };
        if roll {
            self.roll().await?;
        }
        self.reserve(total).await
    }

    /// Copies one batch (`src`, described by `info`) into the open write buffer at the log
    /// end, stamped as `stamp` says, and updates everything an append changes: offsets, the
    /// indexes, the tail cache, the producer state. Nothing here can fail: the caller made
    /// room and checked the batch.
    ///
    /// The tail cache keeps `src` itself (a slice of the request: no copy) behind a copy of
    /// the few header bytes the broker stamped. A batch under `OWN_BUFFER_MIN_BYTES` is
    /// copied whole instead: it may share its read buffer with other requests, which a slice
    /// would keep alive.
    pub(super) fn place(&self, st: &mut State, src: &Bytes, info: &BatchInfo, stamp: Stamp) {
        let me = self.me.upgrade().expect("partition alive while appending");
        // A replicated batch keeps its offset, which may be past the log end (a gap in a
        // compacted leader's log); the caller checked it is not before it.
        let offset = match stamp {
            Stamp::Replica => batch::be_i64(src, batch::OFF_BASE_OFFSET),
            Stamp::Leader { .. } => st.next_offset,
        };
        assert!(
            offset >= st.next_offset,
            "{}-{}: batch at offset {offset} before the log end {}",
            self.topic,
            self.index,
            st.next_offset
        );
        let position = st.appended_bytes;
        self.ensure_room(st, info.len);
        let wb = st.open_buf.as_mut().expect("ensure_room opened a buffer");
        let dst = &mut wb.buf.as_bytes_mut()[wb.len..wb.len + info.len];
        dst.copy_from_slice(src);
        let mut max_ts = info.max_timestamp;
        match stamp {
            Stamp::Leader {
                leader_epoch,
                log_append_time,
            } => {
                dst[batch::OFF_BASE_OFFSET..batch::OFF_BASE_OFFSET + 8]
                    .copy_from_slice(&offset.to_be_bytes());
                dst[batch::OFF_LEADER_EPOCH..batch::OFF_LEADER_EPOCH + 4]
                    .copy_from_slice(&leader_epoch.to_be_bytes());
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
            }
            Stamp::Replica => {
                // The leader's bytes as they are.
            }
        }
        // Paired with the check when the batch is read back by recovery.
        debug_assert!(batch::crc_ok(dst));
        let stamped = match stamp {
            _ if info.len < OWN_BUFFER_MIN_BYTES => info.len,
            Stamp::Replica => 0,
            Stamp::Leader {
                log_append_time, ..
            } if log_append_time >= 0 => batch::HEADER_BYTES,
            Stamp::Leader { .. } => batch::OFF_LEADER_EPOCH + 4,
        };
        let head = Bytes::copy_from_slice(&dst[..stamped]);
        let body = src.slice(stamped..);
        debug_assert!(head.iter().chain(body.iter()).eq(dst.iter()));
        wb.len += info.len;
        let next = offset + info.last_offset_delta as i64 + 1;
        wb.end_offset = next;
        st.next_offset = next;
        st.appended_bytes += info.len as u64;
        let seg = st.active_segment().clone();
        seg.index_batch(
            position,
            offset,
            max_ts,
            info.len as u64,
            self.cfg().index_interval_bytes,
        );
        self.tail_cache.insert(&me, offset, next, head, body);
        if info.producer_id >= 0 {
            let mut producers = self.producers.borrow_mut();
            producers.touch(info.producer_id, now_ms());
            producers.record(
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

    /// Makes sure the open write buffer can take `len` more bytes, sealing a full one.
    fn ensure_room(&self, st: &mut State, len: usize) {
        if let Some(wb) = &st.open_buf {
            if wb.len + len <= wb.buf.len() {
                return;
            }
            st.buf_capacity = (st.buf_capacity * 2)
                .min(self.cfg().write_buffer_bytes.max(MIN_WRITE_BUFFER_BYTES));
            Self::seal_open(st);
        }
        let file = st.writer.clone().expect("active writer");
        let seg = st.active_segment().clone();
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
    /// ahead as `prealloc_target` says, or exactly what is needed when that does not fit.
    pub(super) async fn reserve(&self, total: u64) -> Result<(), KafkaError> {
        let (file, seg, need) = {
            let st = self.st.borrow();
            let seg = st.active_segment().clone();
            let file = st.writer.clone().expect("active writer");
            (file, seg, align_up(st.appended_bytes + total, BLOCK_BYTES))
        };
        if need <= seg.allocated_bytes.get() {
            return Ok(());
        }
        let step = prealloc_target(need, self.cfg().segment_bytes);
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

    pub(super) async fn roll(&self) -> Result<(), KafkaError> {
        // The new segment's file and first space come first: if the disk is full the roll is
        // refused and the current segment stays active.
        let base = self.st.borrow().next_offset;
        let seg = self.new_segment(base);
        let writer = self.open_writer(&seg).await?;
        let first = prealloc_target(0, self.cfg().segment_bytes);
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
            let seg = st.active_segment().clone();
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

    /// Validates a batch the broker built itself (coordinator records), appends it and waits
    /// until it is durable; returns the offset after it. A batch that fails validation is a
    /// bug: UNKNOWN_SERVER_ERROR.
    pub async fn append_durable(&self, batch: &Bytes) -> Result<i64, KafkaError> {
        let infos = batch::validate_produce(batch, usize::MAX).map_err(|e| {
            tracing::error!(topic = %self.topic, partition = self.index,
                "built an invalid batch: {e}");
            KafkaError::new(ErrorCode::UNKNOWN_SERVER_ERROR, e.message)
        })?;
        let target = self.append(batch, &infos).await?.durable_target;
        self.wait_durable(target).await?;
        Ok(target)
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

    pub(super) async fn flusher(self: Rc<Self>) {
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
            self.st.borrow_mut().job_running = true;
            let done = self.run_job(job).await;
            self.st.borrow_mut().job_running = false;
            if let Err(e) = done {
                self.fail(&e.message);
            }
        }
        self.flusher_idle.notify_all();
    }

    async fn run_job(&self, job: Job) -> Result<(), KafkaError> {
        match job {
            Job::Write(mut wb) => {
                let write_len = align_up(wb.len as u64, BLOCK_BYTES) as usize;
                // O_DIRECT: the buffer starts at the carried partial block's aligned position.
                assert!(
                    wb.file_pos.is_multiple_of(BLOCK_BYTES) && write_len <= wb.buf.len(),
                    "{}-{}: write of {} bytes at {} is not block-aligned or overruns its {} \
                     byte buffer",
                    self.topic,
                    self.index,
                    write_len,
                    wb.file_pos,
                    wb.buf.len()
                );
                let end = wb.file_pos + write_len as u64;
                if end > wb.seg.allocated_bytes.get() {
                    // Allocate ahead in steps so most writes land in allocated space (no
                    // metadata for fdatasync) without reserving a whole segment per partition.
                    let target = prealloc_target(end, self.cfg().segment_bytes);
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
                let cfg = self.cfg();
                let synced = self.st.borrow().synced_offset;
                let by_count = cfg
                    .flush_messages
                    .is_some_and(|n| (wb.end_offset - synced).max(0) as u64 >= n);
                if cfg.flush == FlushPolicy::EveryWrite || by_count {
                    wb.file.fdatasync().await.map_err(io_err)?;
                    let mut st = self.st.borrow_mut();
                    st.synced_offset = st.synced_offset.max(wb.end_offset);
                } else {
                    let mut st = self.st.borrow_mut();
                    if !st.unsynced_writes {
                        st.unsynced_writes = true;
                        st.dirty_since = Some(std::time::Instant::now());
                    }
                }
                wb.seg.written_bytes.set(wb.file_pos + wb.len as u64);
                wb.seg.written_next_offset.set(wb.end_offset);
                {
                    let mut st = self.st.borrow_mut();
                    // Writes complete in queue order, so this only grows, and it never passes
                    // an offset not yet assigned.
                    assert!(
                        st.durable_offset <= wb.end_offset && wb.end_offset <= st.next_offset,
                        "{}-{}: durable offset {} would move to {} (log end {})",
                        self.topic,
                        self.index,
                        st.durable_offset,
                        wb.end_offset,
                        st.next_offset
                    );
                    st.durable_offset = wb.end_offset;
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
                seg.sealed.set(true);
                Ok(())
            }
        }
    }

    /// fdatasync of the active segment if anything was written since the last one (the
    /// background half of `FlushPolicy::IntervalMs`).
    /// How long the oldest write not yet fdatasync'ed has waited (None: nothing to sync).
    pub fn unsynced_for(&self) -> Option<std::time::Duration> {
        self.st.borrow().dirty_since.map(|t| t.elapsed())
    }

    pub async fn sync_if_dirty(&self) {
        let file = {
            let mut st = self.st.borrow_mut();
            if !st.unsynced_writes || st.failed.is_some() {
                return;
            }
            st.unsynced_writes = false;
            st.dirty_since = None;
            st.synced_offset = st.durable_offset;
            st.writer.clone()
        };
        if let Some(f) = file {
            if let Err(e) = f.fdatasync().await {
                self.fail(&format!("fdatasync: {e}"));
            }
        }
    }
}

/// How much earlier than segment.ms the segment based at `base` of `topic`-`index` rolls: a
/// spread in [0, jitter_ms) (the caller keeps it below segment.ms) derived from the three, so
/// it is stable across restarts and differs between partitions created together.
fn segment_jitter(topic: &str, index: i32, base: i64, jitter_ms: i64) -> i64 {
    if jitter_ms <= 0 {
        return 0;
    }
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in topic
        .bytes()
        .chain(index.to_le_bytes())
        .chain(base.to_le_bytes())
    {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    (h % jitter_ms as u64) as i64
}
