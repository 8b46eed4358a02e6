//! What a follower does to its log: appends the leader's batches as they are
//! (`append_replicated`) and cuts a divergent tail (`truncate_to`), Kafka's model (KIP-101,
//! KIP-279). Fetchers built on these keep a replica byte-for-byte equal to its leader.
//!
//! A replicated batch keeps everything the leader wrote: base offset, partitionLeaderEpoch,
//! timestamps, producer fields, CRC. It goes through the leader's write path (`place`:
//! group commit, indexes, roll, tail cache, producer state) without the stamping, so a
//! follower that becomes leader has the leader's producer state, aborted transactions and
//! leader epochs.
//!
//! Invariants: a replicated append starts at the log end and its batches are back to back
//! (checked before anything is written; asserted again in `place`); after `truncate_to(o)` the
//! log, its indexes, the producer state, the aborted transactions, the leader-epoch cache and
//! the tail cache all end at `o`, on the device as in memory, and the log end and durable
//! offsets are `o` (the one place the durable offset goes back).

use super::appender::Stamp;
use super::partition::{io_err, Partition};
use super::producers::AbortedTxn;
use super::recovery::{list_snapshots, write_durably};
use super::segment::Segment;
use super::walker::{LogWalk, WalkFrom};
use crate::protocol::batch::{self, BatchInfo, BatchPrefix};
use crate::protocol::errors::{ErrorCode, KafkaError};
use crate::util::{now_ms, FifoGuard};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Longest replicated batch accepted. The leader took it under its `max_batch_bytes`, which is
/// capped by `max_request_bytes`, and no request of the broker comes near 1 GiB (see
/// `alloc.rs`); a longer length field is damage, not a batch.
pub const MAX_REPLICA_BATCH_BYTES: usize = 1 << 30;

/// What a replicated append did, once durable under the flush policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedReplica {
    /// Offset of the first record appended (the log end offset before the append).
    pub base_offset: i64,
    /// The new log end offset; everything below it is durable.
    pub log_end_offset: i64,
    /// Largest max_timestamp of the batches appended, -1 when none was.
    pub max_timestamp: i64,
}

/// One checked batch of a replicated record set.
struct ReplicaBatch {
    /// What `place` needs; `producer_id` is -1 for control batches (they carry no sequence).
    info: BatchInfo,
    base_offset: i64,
    leader_epoch: i32,
    /// A transaction marker: (producer id, producer epoch, commits).
    marker: Option<(i64, i16, bool)>,
}

fn corrupt(m: String) -> KafkaError {
    KafkaError::new(ErrorCode::CORRUPT_MESSAGE, m)
}

/// Checks a replicated record set that must continue a log ending at `log_end`: whole
/// magic-2 batches with a good CRC32C, back to back from `log_end`. `validate_produce` does not
/// fit: a leader's log holds control batches and (once compaction runs) batches with fewer
/// records than offsets, which a producer may not send; the framing rules are the same ones
/// (`BatchPrefix::parse`, `crc_ok`).
fn validate_replicated(
    records: &[u8],
    log_end: i64,
    gaps: bool,
) -> Result<Vec<ReplicaBatch>, KafkaError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut expected = log_end;
    while at < records.len() {
        let rest = &records[at..];
        if rest.len() < batch::HEADER_BYTES {
            return Err(corrupt(format!(
                "replicated set ends with {} bytes, less than a batch header",
                rest.len()
            )));
        }
        let Some(prefix) = BatchPrefix::parse(rest) else {
            return Err(corrupt(format!(
                "no magic-2 batch at byte {at} of the replicated set (length {}, magic {})",
                batch::be_i32(rest, batch::OFF_LENGTH),
                rest[batch::OFF_MAGIC] as i8
            )));
        };
        if prefix.len > MAX_REPLICA_BATCH_BYTES {
            return Err(corrupt(format!(
                "replicated batch of {} bytes exceeds {MAX_REPLICA_BATCH_BYTES}",
                prefix.len
            )));
        }
        let Some(b) = rest.get(..prefix.len) else {
            return Err(corrupt(format!(
                "replicated batch of {} bytes is cut at {}",
                prefix.len,
                rest.len()
            )));
        };
        if !batch::crc_ok(b) {
            return Err(corrupt(format!(
                "replicated batch at offset {} fails its CRC32C",
                prefix.base_offset
            )));
        }
        let in_sequence = if gaps {
            prefix.base_offset >= expected
        } else {
            prefix.base_offset == expected
        };
        if !in_sequence {
            // In a compacted topic a batch may start past the log end (the gap held records
            // the leader's cleaner removed), never before it. The first batch: the
            // follower and the leader disagree on where this log is (the fetcher's position
            // is stale). A later one: the set itself overlaps.
            let (code, what) = if out.is_empty() {
                (ErrorCode::OFFSET_OUT_OF_RANGE, "the log end offset")
            } else {
                (ErrorCode::CORRUPT_MESSAGE, "the end of the batch before it")
            };
            return Err(KafkaError::new(
                code,
                format!(
                    "replicated batch starts at offset {}, not at {what} {expected}",
                    prefix.base_offset
                ),
            ));
        }
        let records_count = batch::be_i32(b, batch::OFF_RECORDS_COUNT);
        if records_count < 0 || records_count as i64 > prefix.last_offset_delta as i64 + 1 {
            return Err(corrupt(format!(
                "replicated batch at offset {} holds {records_count} records for {} offsets",
                prefix.base_offset,
                prefix.last_offset_delta as i64 + 1
            )));
        }
        let Some(next) = prefix
            .base_offset
            .checked_add(prefix.last_offset_delta as i64 + 1)
        else {
            return Err(corrupt("replicated batch overflows the offsets".into()));
        };
        let attributes = batch::be_i16(b, batch::OFF_ATTRIBUTES);
        let producer_id = batch::be_i64(b, batch::OFF_PRODUCER_ID);
        let producer_epoch = batch::be_i16(b, batch::OFF_PRODUCER_EPOCH);
        let control = attributes & batch::ATTR_CONTROL != 0;
        let marker = if control && producer_id >= 0 {
            batch::control_marker(b).map(|commit| (producer_id, producer_epoch, commit))
        } else {
            None
        };
        out.push(ReplicaBatch {
            info: BatchInfo {
                start: at,
                len: prefix.len,
                last_offset_delta: prefix.last_offset_delta,
                base_timestamp: batch::be_i64(b, batch::OFF_BASE_TIMESTAMP),
                max_timestamp: batch::be_i64(b, batch::OFF_MAX_TIMESTAMP),
                records_count,
                // As on the leader (`append_marker`): a marker is not a batch of the
                // producer's sequence; it closes the transaction instead.
                producer_id: if control { -1 } else { producer_id },
                producer_epoch,
                base_sequence: batch::be_i32(b, batch::OFF_BASE_SEQUENCE),
                transactional: attributes & batch::ATTR_TRANSACTIONAL != 0,
            },
            base_offset: prefix.base_offset,
            leader_epoch: batch::be_i32(b, batch::OFF_LEADER_EPOCH),
            marker,
        });
        expected = next;
        at += prefix.len;
    }
    Ok(out)
}

/// Removes a file for good: gone already is fine, any other failure is an error (a file
/// left behind would bring back data the caller cut).
async fn remove_file(path: PathBuf) -> Result<(), KafkaError> {
    glommio::executor()
        .spawn_blocking(move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
        .map_err(io_err)
}

/// fsync of a directory: the removals and renames in it survive a crash.
pub(super) async fn sync_dir(dir: &Path) -> Result<(), KafkaError> {
    let dir = dir.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(io_err)
}

impl Partition {
    /// Appends record batches exactly as the leader wrote them (a follower's fetch result):
    /// base offsets, leader epochs, producer fields and timestamps kept byte for byte. The
    /// first batch must start at the log end offset (OFFSET_OUT_OF_RANGE otherwise) and the
    /// rest follow back to back (CORRUPT_MESSAGE otherwise, as for a bad size, magic or CRC);
    /// a set that fails these checks writes nothing. The batches go through the leader's write
    /// path (group commit, indexes, segment roll, tail cache), update the producer state and
    /// aborted transactions as on the leader, and the leader-epoch cache. Returns once
    /// everything appended is durable under the flush policy.
    ///
    /// A failure after the checks (a full disk at a segment roll, a failed write) may leave a
    /// prefix of the set appended: whole batches, contiguous, and `log_end_offset` says where
    /// the log ends; the fetcher continues from there.
    pub async fn append_replicated(&self, batches: Bytes) -> Result<AppendedReplica, KafkaError> {
        let turn = self.append_lock.lock().await;
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let base_offset = self.log_end_offset();
        let checked = validate_replicated(&batches, base_offset, self.cfg().compact)?;
        let mut max_timestamp = -1;
        let mut appended_bytes = 0u64;
        for b in &checked {
            // One batch at a time: segments roll at batch boundaries as the leader's did,
            // and a new epoch's checkpoint entry is durable before its first batch.
            let last = b.base_offset + b.info.last_offset_delta as i64;
            self.make_room(b.info.len as u64, last, now_ms()).await?;
            self.note_epoch(b.leader_epoch, b.base_offset).await?;
            {
                let mut st = self.st.borrow_mut();
                let src = batches.slice(b.info.start..b.info.start + b.info.len);
                self.place(&mut st, &src, &b.info, Stamp::Replica);
            }
            if let Some((pid, epoch, commit)) = b.marker {
                // What `append_marker` does on the leader.
                let mut producers = self.producers.borrow_mut();
                let first = producers.end_txn(pid, epoch);
                producers.touch(pid, now_ms());
                if let (false, Some(first_offset)) = (commit, first) {
                    self.aborted.borrow_mut().push(AbortedTxn {
                        producer_id: pid,
                        first_offset,
                        last_offset: b.base_offset,
                    });
                }
            }
            max_timestamp = max_timestamp.max(b.info.max_timestamp);
            appended_bytes += b.info.len as u64;
            self.flush_work.notify_all();
        }
        let log_end_offset = self.log_end_offset();
        crate::metrics::bump(&self.stats.bytes_in, appended_bytes);
        crate::metrics::bump(
            &self.stats.records_in,
            (log_end_offset - base_offset) as u64,
        );
        // The next append may queue behind this one while it becomes durable (group commit).
        drop(turn);
        self.wait_durable(log_end_offset).await?;
        Ok(AppendedReplica {
            base_offset,
            log_end_offset,
            max_timestamp,
        })
    }

    /// Removes every record at or after `offset` (a follower's divergent tail): later
    /// segments deleted, the segment holding `offset` cut there with its indexes, the producer
    /// state and aborted transactions rebuilt as of `offset`, the leader-epoch cache cut, the
    /// tail cache emptied past it. Durable before it returns; the log end and durable offsets
    /// are then `offset`. Nothing to do when `offset` is at or past the log end.
    ///
    /// Refused, with nothing changed: an offset below the log start (OFFSET_OUT_OF_RANGE) or
    /// inside a batch (INVALID_REQUEST). A failure while cutting takes the partition offline
    /// (the restart's recovery decides what the log is).
    pub async fn truncate_to(&self, offset: i64) -> Result<(), KafkaError> {
        let _held = self.quiesce().await?;
        let (start, end) = {
            let st = self.st.borrow();
            (st.log_start_offset, st.next_offset)
        };
        if offset < start {
            return Err(KafkaError::new(
                ErrorCode::OFFSET_OUT_OF_RANGE,
                format!("cannot truncate to {offset}, below the log start {start}"),
            ));
        }
        if offset >= end {
            return Ok(());
        }
        let seg = self
            .st
            .borrow()
            .segments
            .range(..=offset)
            .next_back()
            .map(|(_, s)| s.clone())
            .expect("a segment holds every offset from the log start");
        let position = self.batch_start(&seg, offset).await?;
        if let Err(e) = self.cut(&seg, offset, position).await {
            self.fail(&format!("truncating to {offset}: {}", e.message));
            return Err(e);
        }
        tracing::info!(topic = %self.topic, partition = self.index, from = end, to = offset,
            "truncated");
        Ok(())
    }

    /// Holds appends and layout changes, with nothing queued or being written: what a change
    /// of the log's layout (truncation, a restart) needs. Err when the partition is offline.
    async fn quiesce(&self) -> Result<(FifoGuard<'_>, FifoGuard<'_>), KafkaError> {
        let turn = self.append_lock.lock().await;
        let layout = self.layout_lock.lock().await;
        if let Some(e) = self.failure() {
            return Err(e);
        }
        // What follows changes the layout: a cleaning pass in progress gives up.
        self.layout_gen.set(self.layout_gen.get() + 1);
        self.drain().await?;
        Ok((turn, layout))
    }

    /// A follower whose whole log ends below its leader's log start (retention or
    /// DeleteRecords ran there while it was away) starts over, empty, at `offset`, as Kafka's
    /// followers do: every segment, snapshot and epoch entry goes, and the new start is kept
    /// (`log-start-offset`) before the new empty segment is made. Refused (nothing changed)
    /// when the log reaches `offset`: then it has nothing to drop.
    pub async fn reset_to(&self, offset: i64) -> Result<(), KafkaError> {
        let _held = self.quiesce().await?;
        let end = self.log_end_offset();
        if end >= offset {
            return Err(KafkaError::new(
                ErrorCode::INVALID_REQUEST,
                format!("cannot restart the log at {offset}: it reaches {end}"),
            ));
        }
        if let Err(e) = self.start_over(offset, offset).await {
            self.fail(&format!("restarting the log at {offset}: {}", e.message));
            return Err(e);
        }
        tracing::warn!(topic = %self.topic, partition = self.index, from = end, to = offset,
            "the log ended below the leader's log start: restarted empty there");
        Ok(())
    }

    /// An empty log whose start is inside the leader's first batch (DeleteRecords may put a
    /// log start inside a batch, and a fetch from it answers the whole batch): the empty
    /// segment moves back to that batch's `base`, the log start stays, so the batch appends
    /// at its own offsets (Kafka's followers do the same).
    pub async fn rebase_empty(&self, base: i64) -> Result<(), KafkaError> {
        let _held = self.quiesce().await?;
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if end != start || base >= end {
            return Err(KafkaError::new(
                ErrorCode::INVALID_REQUEST,
                format!("cannot move the log back to {base}: it holds [{start}, {end})"),
            ));
        }
        if let Err(e) = self.start_over(base, start).await {
            self.fail(&format!(
                "moving the empty log back to {base}: {}",
                e.message
            ));
            return Err(e);
        }
        Ok(())
    }

    /// Every segment, snapshot and epoch entry goes; the log is one empty segment based at
    /// `base`, starting (for readers) at `start` >= `base`.
    async fn start_over(&self, base: i64, start: i64) -> Result<(), KafkaError> {
        let offset = base;
        write_durably(
            self.dir.join(super::retention::LOG_START_FILE),
            start.to_string().into_bytes(),
        )
        .await?;
        let old_writer = self.st.borrow_mut().writer.take();
        if let Some(f) = old_writer.and_then(|f| Rc::try_unwrap(f).ok()) {
            f.close().await.map_err(io_err)?;
        }
        let old: Vec<Rc<Segment>> = std::mem::take(&mut self.st.borrow_mut().segments)
            .into_values()
            .collect();
        for s in &old {
            for path in s.file_paths() {
                remove_file(path).await?;
            }
        }
        let dir = self.dir.clone();
        let snapshots = glommio::executor()
            .spawn_blocking(move || list_snapshots(&dir))
            .await
            .map_err(io_err)?;
        for (_, path) in snapshots {
            remove_file(path).await?;
        }
        if self.epochs.borrow_mut().truncate_from_end(i64::MIN) {
            self.persist_epochs().await?;
        }
        self.lower_first_dirty(base).await?;
        sync_dir(&self.dir).await?;
        let seg = self.new_segment(offset);
        self.st.borrow_mut().segments.insert(offset, seg.clone());
        let writer = self.open_writer(&seg).await?;
        self.activate(&seg, writer).await?;
        {
            let mut cache = self.cache.borrow_mut();
            cache.clear();
        }
        let mut st = self.st.borrow_mut();
        st.log_start_offset = start;
        st.unsynced_writes = false;
        st.dirty_since = None;
        drop(st);
        *self.producers.borrow_mut() = Default::default();
        self.aborted.borrow_mut().clear();
        Ok(())
    }

    /// File position in `seg` of the batch starting at `offset`; INVALID_REQUEST when
    /// `offset` is inside a batch.
    async fn batch_start(&self, seg: &Rc<Segment>, offset: i64) -> Result<u64, KafkaError> {
        let mut walk = LogWalk::new(
            vec![seg.clone()],
            WalkFrom::Offset(offset),
            self.cfg().index_interval_bytes,
        );
        if let Some((_, mut batches)) = walk.next_segment().await? {
            let mut after_last = None;
            while let Some(b) = batches.next().await? {
                after_last = Some((b.end(), b.prefix.next_offset()));
                if b.prefix.base_offset == offset {
                    return Ok(b.pos);
                }
                if b.prefix.base_offset < offset && offset < b.prefix.next_offset() {
                    return Err(KafkaError::new(
                        ErrorCode::INVALID_REQUEST,
                        format!(
                            "cannot truncate to {offset}: inside the batch of offsets {}..{}",
                            b.prefix.base_offset,
                            b.prefix.next_offset()
                        ),
                    ));
                }
                if b.prefix.base_offset > offset {
                    // `offset` is in a gap of a cleaned log: the cut goes before this batch.
                    return Ok(b.pos);
                }
            }
            if let (true, Some((end, next))) = (seg.gaps_allowed.get(), after_last) {
                if next <= offset {
                    // In the gap after the segment's last batch.
                    return Ok(end);
                }
            }
        }
        Err(io_err(format!(
            "{}-{}: no batch boundary at offset {offset} in segment {}",
            self.topic, self.index, seg.base_offset
        )))
    }

    /// The cut proper, in an order that a crash at any step leaves a log recovery makes
    /// consistent: the epoch checkpoint, the producer snapshots past the cut, the later
    /// segments newest first (never a hole), the directory synced, then the cut segment.
    async fn cut(&self, seg: &Rc<Segment>, offset: i64, position: u64) -> Result<(), KafkaError> {
        if self.epochs.borrow_mut().truncate_from_end(offset) {
            self.persist_epochs().await?;
        }
        // Records appended again from `offset` on are dirty: the cleaner must see them.
        self.lower_first_dirty(offset).await?;
        // A snapshot past `offset` describes data being cut; once the log grows past it
        // again, recovery would trust it. One at `offset` is the state as of it, still true.
        let dir = self.dir.clone();
        let snapshots = glommio::executor()
            .spawn_blocking(move || list_snapshots(&dir))
            .await
            .map_err(io_err)?;
        for (at, path) in snapshots {
            if at > offset {
                remove_file(path).await?;
            }
        }
        let later: Vec<Rc<Segment>> = {
            let st = self.st.borrow();
            st.segments
                .range(offset + 1..)
                .map(|(_, s)| s.clone())
                .collect()
        };
        // Nothing is queued or running (drained): the writer is idle, and it is closed
        // whichever segment it writes; the cut segment gets a fresh one.
        let old_writer = self.st.borrow_mut().writer.take();
        if let Some(f) = old_writer.and_then(|f| Rc::try_unwrap(f).ok()) {
            f.close().await.map_err(io_err)?;
        }
        for s in later.iter().rev() {
            self.st.borrow_mut().segments.remove(&s.base_offset);
            for path in s.file_paths() {
                remove_file(path).await?;
            }
        }
        // The removals are durable before the cut: a later segment coming back after a
        // crash behind a shorter cut segment would leave a hole in the offsets.
        sync_dir(&self.dir).await?;
        let writer = self.open_writer(seg).await?;
        writer.truncate(position).await.map_err(io_err)?;
        writer.fdatasync().await.map_err(io_err)?;
        seg.allocated_bytes.set(position);
        let validated_from = seg
            .truncate_to(position, offset, self.cfg().index_interval_bytes)
            .await?;
        {
            // The shard's budget keeps counting the dropped entries until their turn to be
            // evicted comes (then it pops nothing of this partition's): the cache runs a little
            // under budget for a while, it never serves a cut batch.
            let mut cache = self.cache.borrow_mut();
            while cache.back().is_some_and(|e| e.base_offset >= offset) {
                cache.pop_back();
            }
        }
        seg.sealed.set(false);
        self.activate(seg, writer).await?;
        {
            let mut st = self.st.borrow_mut();
            st.unsynced_writes = false;
            st.dirty_since = None;
            st.synced_offset = st.synced_offset.min(offset);
        }
        assert_eq!(
            (self.log_end_offset(), self.durable_offset()),
            (offset, offset),
            "{}-{}: truncated log does not end at {offset}",
            self.topic,
            self.index
        );
        // Producer state as of `offset`: the newest snapshot at or below it, then the batches
        // up to it, as at start-up. The cut segment's aborted-transaction index may list
        // markers past the cut; it is rewritten from the rebuilt list (recovery reads it only
        // for markers below its snapshot, which are all below `offset`, so a crash before
        // the rewrite is harmless).
        self.rebuild_producers(validated_from).await?;
        match self.txn_index_bytes(seg.base_offset) {
            Some(bytes) => write_durably(seg.txn_index_path(), bytes).await?,
            None => remove_file(seg.txn_index_path()).await?,
        }
        self.progress.notify_all();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::tests::make_batch;

    fn at(mut b: Vec<u8>, base: i64) -> Vec<u8> {
        b[..8].copy_from_slice(&base.to_be_bytes());
        b
    }

    #[test]
    fn replicated_sets_must_continue_the_log() {
        let mut set = at(make_batch(3, b"abc"), 10);
        set.extend(at(make_batch(2, b"de"), 13));
        let ok = validate_replicated(&set, 10, false).unwrap();
        assert_eq!(
            ok.iter().map(|b| b.base_offset).collect::<Vec<_>>(),
            [10, 13]
        );
        let code = |r: Result<Vec<ReplicaBatch>, KafkaError>| r.err().map(|e| e.code);
        assert_eq!(
            code(validate_replicated(&set, 11, false)),
            Some(ErrorCode::OFFSET_OUT_OF_RANGE)
        );
        // A gap is refused, unless the topic is compacted: then it is the leader's cleaner's.
        let mut gap = at(make_batch(3, b"abc"), 11);
        gap.extend(at(make_batch(2, b"de"), 16));
        assert_eq!(
            code(validate_replicated(&gap, 10, false)),
            Some(ErrorCode::OFFSET_OUT_OF_RANGE)
        );
        let ok = validate_replicated(&gap, 10, true).unwrap();
        assert_eq!(
            ok.iter().map(|b| b.base_offset).collect::<Vec<_>>(),
            [11, 16]
        );
        let mut overlap = at(make_batch(3, b"abc"), 10);
        overlap.extend(at(make_batch(2, b"de"), 12));
        assert_eq!(
            code(validate_replicated(&overlap, 10, false)),
            Some(ErrorCode::CORRUPT_MESSAGE)
        );
        assert_eq!(
            code(validate_replicated(&set[..set.len() - 1], 10, false)),
            Some(ErrorCode::CORRUPT_MESSAGE),
            "a cut last batch"
        );
        let mut bad_crc = set.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 1;
        assert_eq!(
            code(validate_replicated(&bad_crc, 10, false)),
            Some(ErrorCode::CORRUPT_MESSAGE)
        );
        let mut bad_magic = set.clone();
        bad_magic[batch::OFF_MAGIC] = 1;
        assert_eq!(
            code(validate_replicated(&bad_magic, 10, false)),
            Some(ErrorCode::CORRUPT_MESSAGE)
        );
        assert!(validate_replicated(&[], 10, false).unwrap().is_empty());
    }

    #[test]
    fn markers_are_recognised_and_carry_no_sequence() {
        let m = at(batch::control_batch(7, 2, false, 0, 1000), 5);
        let b = validate_replicated(&m, 5, false).unwrap();
        assert_eq!(b[0].marker, Some((7, 2, false)));
        assert_eq!(b[0].info.producer_id, -1);
    }
}
