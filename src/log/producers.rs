//! Idempotent producer state of one partition: per producer id, its epoch and the sequence
//! ranges and offsets of its last five batches (Kafka keeps five, the most a producer may have
//! in flight), so a retried batch is answered with its original offset instead of written
//! twice, a gap is refused, and an old epoch is fenced.
//!
//! The table is snapshotted to `<offset, 20 digits>.snapshot` when a segment is sealed and on
//! clean shutdown; recovery loads the newest snapshot at or below the log end and rebuilds the
//! rest from the batch headers after it, so it never rescans the whole log.

use crate::protocol::errors::{ErrorCode, KafkaError};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Batches remembered per producer (Kafka's max.in.flight limit for idempotence).
pub const REMEMBERED_BATCHES: usize = 5;

/// Snapshot format: 2 added each producer's open transaction, 3 its last write time.
const SNAPSHOT_VERSION: u16 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSeq {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchSeq>,
    /// First offset of the producer's open transaction in this partition.
    pub txn_first: Option<i64>,
    /// When it last wrote here (ms): idle entries expire.
    pub last_ms: i64,
}

/// What an idempotent batch is, checked against the table.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Append it.
    Append,
    /// Already in the log: answer with these offsets.
    Duplicate(BatchSeq),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerTable {
    pub producers: BTreeMap<i64, ProducerEntry>,
    /// Open transactions as (first offset, producer id): the first is the last stable offset.
    ongoing: BTreeSet<(i64, i64)>,
}

impl ProducerTable {
    /// Checks a batch of producer `pid`/`epoch` with sequences first..=last.
    pub fn check(
        &self,
        pid: i64,
        epoch: i16,
        first: i32,
        last: i32,
    ) -> Result<Verdict, KafkaError> {
        let Some(e) = self.producers.get(&pid) else {
            if first != 0 {
                return Err(KafkaError::new(
                    ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER,
                    format!("producer {pid} is new here but starts at sequence {first}"),
                ));
            }
            return Ok(Verdict::Append);
        };
        if epoch < e.epoch {
            return Err(KafkaError::new(
                ErrorCode::INVALID_PRODUCER_EPOCH,
                format!("producer {pid} epoch {epoch} is older than {}", e.epoch),
            ));
        }
        if epoch > e.epoch {
            if first != 0 {
                return Err(KafkaError::new(
                    ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER,
                    format!("producer {pid} new epoch {epoch} starts at sequence {first}"),
                ));
            }
            return Ok(Verdict::Append);
        }
        if let Some(b) = e
            .batches
            .iter()
            .find(|b| b.first_seq == first && b.last_seq == last)
        {
            return Ok(Verdict::Duplicate(*b));
        }
        let expected = e.batches.back().map_or(0, |b| next_seq(b.last_seq));
        if first != expected {
            return Err(KafkaError::new(
                ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER,
                format!("producer {pid} sent sequence {first}, expected {expected}"),
            ));
        }
        Ok(Verdict::Append)
    }

    /// Records an appended batch (also used when rebuilding from the log). A batch without a
    /// sequence (offsets a transaction commits) only opens the transaction.
    pub fn record(&mut self, pid: i64, epoch: i16, b: BatchSeq, transactional: bool) {
        let e = self.producers.entry(pid).or_default();
        // Only a sequenced batch was checked against the epoch; offsets a transaction commits
        // carry none and never move it back.
        if epoch > e.epoch || (b.first_seq >= 0 && epoch != e.epoch) {
            e.epoch = epoch;
            e.batches.clear();
        }
        if b.first_seq >= 0 {
            e.batches.push_back(b);
            while e.batches.len() > REMEMBERED_BATCHES {
                e.batches.pop_front();
            }
        }
        if transactional && e.txn_first.is_none() {
            e.txn_first = Some(b.base_offset);
            self.ongoing.insert((b.base_offset, pid));
        }
    }

    /// May a marker of `pid` at `epoch` be written? (A coordinator never goes back in epochs.)
    pub fn check_marker(&self, pid: i64, epoch: i16) -> Result<(), KafkaError> {
        match self.producers.get(&pid) {
            Some(e) if epoch < e.epoch => Err(KafkaError::new(
                ErrorCode::INVALID_PRODUCER_EPOCH,
                format!(
                    "marker epoch {epoch} of producer {pid} is older than {}",
                    e.epoch
                ),
            )),
            _ => Ok(()),
        }
    }

    /// A marker was written: the producer's transaction here is over. Returns its first
    /// offset (None when it wrote nothing here). A marker with a newer epoch fences the old.
    pub fn end_txn(&mut self, pid: i64, epoch: i16) -> Option<i64> {
        let e = self.producers.entry(pid).or_default();
        if epoch > e.epoch {
            e.epoch = epoch;
            e.batches.clear();
        }
        let first = e.txn_first.take()?;
        self.ongoing.remove(&(first, pid));
        Some(first)
    }

    /// The producer wrote at `ts` (ms); time only moves forward.
    pub fn touch(&mut self, pid: i64, ts: i64) {
        let e = self.producers.entry(pid).or_default();
        e.last_ms = e.last_ms.max(ts);
    }

    /// Forgets producers idle for more than `idle_ms` with no open transaction; returns how
    /// many. A forgotten producer that comes back must start again at sequence 0.
    pub fn expire(&mut self, now: i64, idle_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| e.txn_first.is_some() || now - e.last_ms <= idle_ms);
        before - self.producers.len()
    }

    /// First offset of the oldest open transaction.
    pub fn first_unstable(&self) -> Option<i64> {
        self.ongoing.first().map(|(o, _)| *o)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (pid, e) in &self.producers {
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.txn_first.unwrap_or(-1).to_be_bytes());
            out.extend_from_slice(&e.last_ms.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// None when the snapshot is torn or corrupt (recovery then rebuilds from further back).
    pub fn decode(b: &[u8]) -> Option<ProducerTable> {
        if b.len() < 10 {
            return None;
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut at = 0usize;
        let take = |at: &mut usize, n: usize| -> Option<&[u8]> {
            let s = body.get(*at..*at + n)?;
            *at += n;
            Some(s)
        };
        if u16::from_be_bytes(take(&mut at, 2)?.try_into().ok()?) != SNAPSHOT_VERSION {
            return None;
        }
        let n = u32::from_be_bytes(take(&mut at, 4)?.try_into().ok()?);
        let mut t = ProducerTable::default();
        for _ in 0..n {
            let pid = i64::from_be_bytes(take(&mut at, 8)?.try_into().ok()?);
            let epoch = i16::from_be_bytes(take(&mut at, 2)?.try_into().ok()?);
            let txn_first = i64::from_be_bytes(take(&mut at, 8)?.try_into().ok()?);
            let last_ms = i64::from_be_bytes(take(&mut at, 8)?.try_into().ok()?);
            let k = take(&mut at, 1)?[0];
            let mut e = ProducerEntry {
                epoch,
                batches: VecDeque::new(),
                txn_first: (txn_first >= 0).then_some(txn_first),
                last_ms,
            };
            if txn_first >= 0 {
                t.ongoing.insert((txn_first, pid));
            }
            for _ in 0..k {
                e.batches.push_back(BatchSeq {
                    first_seq: i32::from_be_bytes(take(&mut at, 4)?.try_into().ok()?),
                    last_seq: i32::from_be_bytes(take(&mut at, 4)?.try_into().ok()?),
                    base_offset: i64::from_be_bytes(take(&mut at, 8)?.try_into().ok()?),
                    last_offset: i64::from_be_bytes(take(&mut at, 8)?.try_into().ok()?),
                });
            }
            t.producers.insert(pid, e);
        }
        (at == body.len()).then_some(t)
    }
}

/// An aborted transaction of one partition: read_committed consumers drop this producer's
/// batches from `first_offset` up to the abort marker at `last_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

impl AbortedTxn {
    const BYTES: usize = 24;

    /// `.txnindex` content: the entries, then a CRC32C of them.
    pub fn encode_all(list: &[AbortedTxn]) -> Vec<u8> {
        let mut out = Vec::with_capacity(list.len() * Self::BYTES + 4);
        for a in list {
            out.extend_from_slice(&a.producer_id.to_be_bytes());
            out.extend_from_slice(&a.first_offset.to_be_bytes());
            out.extend_from_slice(&a.last_offset.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    pub fn decode_all(b: &[u8]) -> Option<Vec<AbortedTxn>> {
        if b.len() < 4 || !(b.len() - 4).is_multiple_of(Self::BYTES) {
            return None;
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let i64_at = |c: &[u8], at: usize| i64::from_be_bytes(c[at..at + 8].try_into().unwrap());
        Some(
            body.chunks_exact(Self::BYTES)
                .map(|c| AbortedTxn {
                    producer_id: i64_at(c, 0),
                    first_offset: i64_at(c, 8),
                    last_offset: i64_at(c, 16),
                })
                .collect(),
        )
    }
}

/// Sequences wrap to 0 after i32::MAX, as Kafka's do.
pub fn next_seq(s: i32) -> i32 {
    if s == i32::MAX {
        0
    } else {
        s + 1
    }
}

/// Last sequence of a batch starting at `first` holding `count` records.
pub fn last_seq(first: i32, last_offset_delta: i32) -> i32 {
    ((first as i64 + last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(first: i32, last: i32, base: i64) -> BatchSeq {
        BatchSeq {
            first_seq: first,
            last_seq: last,
            base_offset: base,
            last_offset: base + (last - first) as i64,
        }
    }

    #[test]
    fn duplicates_gaps_and_fencing() {
        let mut t = ProducerTable::default();
        assert_eq!(t.check(7, 0, 0, 4).unwrap(), Verdict::Append);
        assert_eq!(
            t.check(7, 0, 3, 4).unwrap_err().code,
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        t.record(7, 0, b(0, 4, 100), false);
        assert_eq!(t.check(7, 0, 5, 9).unwrap(), Verdict::Append);
        t.record(7, 0, b(5, 9, 105), false);
        assert_eq!(
            t.check(7, 0, 0, 4).unwrap(),
            Verdict::Duplicate(b(0, 4, 100))
        );
        assert_eq!(
            t.check(7, 0, 12, 13).unwrap_err().code,
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        // A new epoch starts over at 0; the old one is fenced afterwards.
        assert_eq!(t.check(7, 1, 0, 0).unwrap(), Verdict::Append);
        t.record(7, 1, b(0, 0, 110), false);
        assert_eq!(
            t.check(7, 0, 10, 10).unwrap_err().code,
            ErrorCode::INVALID_PRODUCER_EPOCH
        );
        // Only the last five batches are remembered.
        for i in 1..=6 {
            t.record(7, 1, b(i, i, 110 + i as i64), false);
        }
        assert_eq!(t.producers[&7].batches.len(), REMEMBERED_BATCHES);
        // batches 2..=6 are kept; 0 and 1 are forgotten and cannot be told from a gap
        assert_eq!(
            t.check(7, 1, 1, 1).unwrap_err().code,
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        assert_eq!(
            t.check(7, 1, 2, 2).unwrap(),
            Verdict::Duplicate(b(2, 2, 112))
        );
        assert_eq!(
            t.check(7, 1, 6, 6).unwrap(),
            Verdict::Duplicate(b(6, 6, 116))
        );
    }

    #[test]
    fn snapshot_round_trip_and_corruption() {
        let mut t = ProducerTable::default();
        t.record(1, 3, b(0, 9, 0), false);
        t.record(2, 0, b(5, 5, 10), true);
        assert_eq!(t.first_unstable(), Some(10));
        let bytes = t.encode();
        assert_eq!(ProducerTable::decode(&bytes), Some(t));
        let mut bad = bytes.clone();
        bad[8] ^= 1;
        assert_eq!(ProducerTable::decode(&bad), None);
        assert_eq!(ProducerTable::decode(&bytes[..bytes.len() - 3]), None);
        assert_eq!(last_seq(i32::MAX, 1), 0);
    }

    #[test]
    fn txn_index_round_trip_and_corruption() {
        let list = vec![
            AbortedTxn {
                producer_id: 5,
                first_offset: 10,
                last_offset: 20,
            },
            AbortedTxn {
                producer_id: 6,
                first_offset: 11,
                last_offset: 30,
            },
        ];
        let b = AbortedTxn::encode_all(&list);
        assert_eq!(AbortedTxn::decode_all(&b), Some(list));
        let mut bad = b.clone();
        bad[3] ^= 1;
        assert_eq!(AbortedTxn::decode_all(&bad), None);
        assert_eq!(AbortedTxn::decode_all(&b[..b.len() - 1]), None);
    }

    #[test]
    fn transactions_open_and_close_and_set_the_stable_offset() {
        let mut t = ProducerTable::default();
        t.record(1, 0, b(0, 1, 10), true);
        t.record(2, 0, b(0, 0, 12), true);
        t.record(1, 0, b(2, 2, 13), true);
        assert_eq!(t.first_unstable(), Some(10));
        assert_eq!(t.end_txn(1, 0), Some(10));
        assert_eq!(t.first_unstable(), Some(12));
        // a marker with a newer epoch fences the producer's older epoch
        assert_eq!(t.end_txn(2, 1), Some(12));
        assert_eq!(t.first_unstable(), None);
        assert_eq!(
            t.check(2, 0, 1, 1).unwrap_err().code,
            ErrorCode::INVALID_PRODUCER_EPOCH
        );
        assert_eq!(
            t.check_marker(2, 0).unwrap_err().code,
            ErrorCode::INVALID_PRODUCER_EPOCH
        );
        assert_eq!(t.end_txn(1, 0), None, "nothing open any more");
        // offsets committed by a transaction carry no sequence but open it
        t.record(3, 0, b(-1, -1, 20), true);
        assert_eq!(t.first_unstable(), Some(20));
        assert!(t.producers[&3].batches.is_empty());
    }

    #[test]
    fn idle_producers_expire_but_not_inside_a_transaction() {
        let mut t = ProducerTable::default();
        t.record(1, 0, b(0, 0, 0), false);
        t.touch(1, 1_000);
        t.record(2, 0, b(0, 0, 1), true);
        t.touch(2, 1_000);
        t.touch(3, 9_000);
        assert_eq!(t.expire(10_000, 5_000), 1);
        assert!(!t.producers.contains_key(&1), "idle and done: forgotten");
        assert!(t.producers.contains_key(&2), "an open transaction is kept");
        assert!(t.producers.contains_key(&3), "recent: kept");
        assert_eq!(
            t.check(1, 0, 1, 1).unwrap_err().code,
            ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER,
            "a forgotten producer starts again at 0"
        );
    }
}
