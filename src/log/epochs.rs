//! The leader-epoch cache of a partition (Kafka's `leader-epoch-checkpoint`): for each leader
//! epoch whose batches are in the log, the offset of its first batch. A follower asks its
//! leader where each of its epochs ends (OffsetForLeaderEpoch) and truncates what diverges.
//!
//! Built from the partitionLeaderEpoch of every batch appended, normal or replicated. The file
//! is Kafka's text format (a version line `0`, a count line, then `epoch start_offset` lines),
//! written whole and durably (temp file, fsync, rename) each time an entry is added or cut,
//! *before* the batch that adds it is written: so the file may run ahead of the log (entries at
//! or past the log end after a crash, cut at recovery) but never behind it. Recovery rebuilds
//! it from the batch headers when it is missing, corrupt, or disagrees with the last batch.
//!
//! Invariants (asserted in `assign`): epochs and start offsets strictly increase.

use super::partition::{io_err, Partition};
use super::recovery::write_durably;
use super::walker::{LogWalk, WalkFrom};
use crate::protocol::batch;
use crate::protocol::errors::KafkaError;
use std::path::PathBuf;

/// The file's name in the partition directory (Kafka's).
pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// First line of the file: the format version (Kafka's is 0, and so is ours).
const CHECKPOINT_VERSION: u32 = 0;
/// Most entries a checkpoint file may claim: one per leadership term that wrote data; more is
/// a damaged file, not a partition (Kafka clients cap epochs at i32 anyway).
const MAX_CHECKPOINT_ENTRIES: usize = 1 << 20;
/// OffsetForLeaderEpoch's answer when there is none (Kafka's UNDEFINED_EPOCH and
/// UNDEFINED_EPOCH_OFFSET).
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;

/// One leadership term in the log: its epoch and the offset of its first batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// The epochs of one partition's log, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest epoch, if any batch with an epoch is in the log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Whether a batch of `epoch` at `offset` would add an entry: epochs only grow along the
    /// log, so only a newer epoch does. A negative epoch (a batch stamped by no leader) or an
    /// older one (which the leader's log cannot hold after a newer) adds nothing, as Kafka's
    /// follower does.
    pub fn needs(&self, epoch: i32) -> bool {
        epoch >= 0 && self.latest_epoch().is_none_or(|l| epoch > l)
    }

    /// Notes that a batch of `epoch` starts at `offset`; true when that added an entry.
    pub fn assign(&mut self, epoch: i32, offset: i64) -> bool {
        if !self.needs(epoch) {
            return false;
        }
        if let Some(last) = self.entries.last() {
            assert!(
                offset > last.start_offset,
                "epoch {epoch} starting at {offset}, not after epoch {} at {}",
                last.epoch,
                last.start_offset
            );
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset: offset,
        });
        true
    }

    /// Forgets the epochs starting at or after `offset` (the log was cut there); true when
    /// anything changed.
    pub fn truncate_from_end(&mut self, offset: i64) -> bool {
        let keep = self.entries.partition_point(|e| e.start_offset < offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log now starts at `offset`: epochs that ended before it are forgotten, and the one
    /// holding it starts there. True when anything changed.
    pub fn truncate_from_start(&mut self, offset: i64) -> bool {
        let below = self.entries.partition_point(|e| e.start_offset < offset);
        if below == 0 {
            return false;
        }
        // The last epoch starting below `offset` still covers it unless the next starts there.
        let holder = below - 1;
        let next_starts_there = self
            .entries
            .get(below)
            .is_some_and(|e| e.start_offset == offset);
        if next_starts_there {
            self.entries.drain(..below);
        } else {
            self.entries.drain(..holder);
            self.entries[0].start_offset = offset;
        }
        true
    }

    /// OffsetForLeaderEpoch for `epoch` in a log ending at `log_end_offset`: the largest epoch
    /// at or below `epoch` with the start offset of the next newer epoch, or the log end for
    /// the newest. For an epoch older than every epoch here, Kafka's answer: (`epoch`, the
    /// earliest epoch's start offset). (-1, -1) for -1 or an empty cache.
    ///
    /// One difference from Kafka: an epoch newer than the latest here answers (latest, log
    /// end), not (-1, -1), because a partition records an epoch at its first append in it, not
    /// when its leadership starts; a leader asked about its current epoch before appending in
    /// it answers where its log ends, which is what Kafka's leader answers then too.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> (i32, i64) {
        if epoch < 0 || self.entries.is_empty() {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        }
        let after = self.entries.partition_point(|e| e.epoch <= epoch);
        if after == 0 {
            return (epoch, self.entries[0].start_offset);
        }
        let floor = self.entries[after - 1].epoch;
        let end = self
            .entries
            .get(after)
            .map_or(log_end_offset, |e| e.start_offset);
        (floor, end)
    }

    /// The checkpoint file's text.
    pub fn encode(&self) -> String {
        let mut out = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        out
    }

    /// None when the text is not a whole checkpoint of this version with strictly increasing
    /// epochs and offsets (a torn or foreign file: recovery rebuilds from the log).
    pub fn decode(text: &str) -> Option<LeaderEpochCache> {
        let mut lines = text.lines();
        if lines.next()?.trim().parse::<u32>().ok()? != CHECKPOINT_VERSION {
            return None;
        }
        let n: usize = lines.next()?.trim().parse().ok()?;
        if n > MAX_CHECKPOINT_ENTRIES {
            return None;
        }
        let mut c = LeaderEpochCache::default();
        for _ in 0..n {
            let mut f = lines.next()?.split_whitespace();
            let epoch: i32 = f.next()?.parse().ok()?;
            let start_offset: i64 = f.next()?.parse().ok()?;
            if f.next().is_some() || epoch < 0 || start_offset < 0 {
                return None;
            }
            if let Some(l) = c.entries.last() {
                if epoch <= l.epoch || start_offset <= l.start_offset {
                    return None;
                }
            }
            c.entries.push(EpochEntry {
                epoch,
                start_offset,
            });
        }
        if lines.any(|l| !l.trim().is_empty()) {
            return None;
        }
        Some(c)
    }
}

impl Partition {
    fn epoch_checkpoint_path(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_FILE)
    }

    /// OffsetForLeaderEpoch: (the largest epoch <= `epoch` in this log, where it ends). See
    /// `LeaderEpochCache::end_offset_for`. The end is the log end offset for the newest epoch,
    /// which may include data not yet durable; the caller bounds it as it needs.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let leo = self.log_end_offset();
        self.epochs.borrow().end_offset_for(epoch, leo)
    }

    /// The leader-epoch cache's entries (epoch, start offset), oldest first.
    pub fn leader_epoch_entries(&self) -> Vec<(i32, i64)> {
        self.epochs
            .borrow()
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    /// Writes the cache as it is now, whole and durably. Callers hold the append lock, so two
    /// writes of the file never race.
    pub(super) async fn persist_epochs(&self) -> Result<(), KafkaError> {
        let text = self.epochs.borrow().encode();
        write_durably(self.epoch_checkpoint_path(), text.into_bytes()).await
    }

    /// Before a batch of `epoch` is placed at `offset`: adds its entry and makes it durable,
    /// so the checkpoint never lags the log. A failed write (a full disk) refuses the append
    /// and leaves the cache as it was.
    pub(super) async fn note_epoch(&self, epoch: i32, offset: i64) -> Result<(), KafkaError> {
        if !self.epochs.borrow().needs(epoch) {
            return Ok(());
        }
        self.epochs.borrow_mut().assign(epoch, offset);
        if let Err(e) = self.persist_epochs().await {
            self.epochs.borrow_mut().truncate_from_end(offset);
            tracing::warn!(topic = %self.topic, partition = self.index,
                "writing the leader-epoch checkpoint: {e}");
            return Err(e);
        }
        Ok(())
    }

    /// At start-up, after the log is recovered: loads the checkpoint, cuts what runs past the
    /// log's end or before its start, and checks it against the last batch; a missing,
    /// corrupt or disagreeing checkpoint is rebuilt from every batch header.
    pub(super) async fn recover_epochs(&self) -> Result<(), KafkaError> {
        let (start, end) = {
            let st = self.st.borrow();
            (st.log_start_offset, st.next_offset)
        };
        let path = self.epoch_checkpoint_path();
        let text = glommio::executor()
            .spawn_blocking(move || match std::fs::read_to_string(&path) {
                Ok(t) => Ok(Some(t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Ok(None),
                Err(e) => Err(e),
            })
            .await
            .map_err(io_err)?;
        let loaded = text.as_deref().and_then(LeaderEpochCache::decode);
        let mut changed = loaded.is_none();
        let mut cache = match loaded {
            Some(mut c) => {
                changed |= c.truncate_from_end(end);
                changed |= c.truncate_from_start(start);
                // The newest batch's epoch must be the newest entry's: the checkpoint is
                // written before a new epoch's first batch, so anything else is damage.
                let last = self.last_batch_epoch(end).await?;
                let agrees = match last {
                    None => c.entries().is_empty(),
                    Some(e) if e < 0 => true,
                    Some(e) => c.latest_epoch() == Some(e),
                };
                if agrees {
                    Some(c)
                } else {
                    tracing::warn!(topic = %self.topic, partition = self.index,
                        "leader-epoch checkpoint disagrees with the log; rebuilding");
                    changed = true;
                    None
                }
            }
            None => {
                if text.is_some() {
                    tracing::warn!(topic = %self.topic, partition = self.index,
                        "leader-epoch checkpoint is corrupt; rebuilding");
                }
                None
            }
        };
        if cache.is_none() {
            cache = Some(self.epochs_from_log(start).await?);
        }
        let cache = cache.expect("set above");
        // A new partition (no file, no epochs) needs no file yet: the first append writes it.
        let nothing_to_say = text.is_none() && end == start;
        *self.epochs.borrow_mut() = cache;
        if changed && !nothing_to_say {
            self.persist_epochs().await?;
        }
        Ok(())
    }

    /// The partitionLeaderEpoch of the batch just below `end`; None for an empty log.
    async fn last_batch_epoch(&self, end: i64) -> Result<Option<i32>, KafkaError> {
        if end <= self.log_start_offset() {
            return Ok(None);
        }
        let mut last = None;
        let mut walk = LogWalk::new(
            self.segments_from(end - 1),
            WalkFrom::Offset(end - 1),
            self.cfg().index_interval_bytes,
        );
        while let Some((_, mut batches)) = walk.next_segment().await? {
            while let Some(b) = batches.next().await? {
                let h = batches.header(&b);
                if h.len() >= batch::HEADER_BYTES && b.prefix.base_offset < end {
                    last = Some(batch::be_i32(h, batch::OFF_LEADER_EPOCH));
                }
            }
        }
        Ok(last)
    }

    /// The cache rebuilt from the header of every batch from `start` on (one walk of the log:
    /// only when the checkpoint cannot be trusted).
    async fn epochs_from_log(&self, start: i64) -> Result<LeaderEpochCache, KafkaError> {
        let mut c = LeaderEpochCache::default();
        let mut walk = LogWalk::new(
            self.segments_from(start),
            WalkFrom::Offset(start),
            self.cfg().index_interval_bytes,
        );
        while let Some((_, mut batches)) = walk.next_segment().await? {
            while let Some(b) = batches.next().await? {
                let h = batches.header(&b);
                if h.len() < batch::HEADER_BYTES {
                    break;
                }
                if b.prefix.next_offset() > start {
                    c.assign(
                        batch::be_i32(h, batch::OFF_LEADER_EPOCH),
                        b.prefix.base_offset.max(start),
                    );
                }
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::default();
        for &(e, o) in entries {
            assert!(c.assign(e, o));
        }
        c
    }

    #[test]
    fn end_offsets_follow_the_epochs() {
        let c = cache(&[(1, 0), (3, 100), (4, 250)]);
        assert_eq!(
            c.end_offset_for(0, 300),
            (0, 0),
            "older than the earliest: Kafka's (epoch, earliest start)"
        );
        assert_eq!(c.end_offset_for(-1, 300), (-1, -1));
        assert_eq!(c.end_offset_for(1, 300), (1, 100));
        assert_eq!(c.end_offset_for(2, 300), (1, 100), "a gap: the epoch below");
        assert_eq!(c.end_offset_for(3, 300), (3, 250));
        assert_eq!(
            c.end_offset_for(4, 300),
            (4, 300),
            "the latest ends at the log end"
        );
        assert_eq!(c.end_offset_for(9, 300), (4, 300));
        assert_eq!(
            LeaderEpochCache::default().end_offset_for(0, 0),
            (-1, -1),
            "empty"
        );
    }

    #[test]
    fn assign_only_moves_forward() {
        let mut c = cache(&[(2, 10)]);
        assert!(!c.assign(2, 20), "same epoch");
        assert!(!c.assign(1, 30), "older epoch");
        assert!(!c.assign(-1, 30), "no epoch");
        assert!(c.assign(5, 30));
        assert_eq!(c.latest_epoch(), Some(5));
    }

    #[test]
    fn truncation_at_both_ends() {
        let mut c = cache(&[(1, 0), (3, 100), (4, 250)]);
        assert!(!c.truncate_from_end(251));
        assert!(c.truncate_from_end(250));
        assert_eq!(c, cache(&[(1, 0), (3, 100)]));
        assert!(c.truncate_from_end(50));
        assert_eq!(c, cache(&[(1, 0)]));

        let mut c = cache(&[(1, 0), (3, 100), (4, 250)]);
        assert!(!c.truncate_from_start(0));
        assert!(c.truncate_from_start(120));
        assert_eq!(c, cache(&[(3, 120), (4, 250)]));
        assert!(c.truncate_from_start(250));
        assert_eq!(c, cache(&[(4, 250)]));
        assert!(c.truncate_from_start(400));
        assert_eq!(c, cache(&[(4, 400)]));
    }

    #[test]
    fn checkpoint_round_trip_and_damage() {
        let c = cache(&[(0, 0), (3, 150), (7, 900)]);
        let text = c.encode();
        assert_eq!(text, "0\n3\n0 0\n3 150\n7 900\n");
        assert_eq!(LeaderEpochCache::decode(&text), Some(c));
        assert_eq!(
            LeaderEpochCache::decode("0\n0\n"),
            Some(LeaderEpochCache::default())
        );
        for bad in [
            "",
            "1\n0\n",
            "0\n2\n0 0\n",        // torn: fewer entries than counted
            "0\n1\n0 0\n5 9\n",   // more than counted
            "0\n2\n3 10\n2 20\n", // epochs going back
            "0\n2\n1 10\n2 10\n", // offsets not increasing
            "0\n1\n1 x\n",
            "0\n99999999999\n",
        ] {
            assert_eq!(LeaderEpochCache::decode(bad), None, "{bad:?}");
        }
    }
}
