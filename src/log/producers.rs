//! Idempotent producer state of one partition: per producer id, its epoch and the sequence
//! ranges and offsets of its last five batches (Kafka keeps five, the most a producer may have
//! in flight), so a retried batch is answered with its original offset instead of written
//! twice, a gap is refused, and an old epoch is fenced.
//!
//! The table is snapshotted to `<offset, 20 digits>.snapshot` when a segment is sealed and on
//! clean shutdown; recovery loads the newest snapshot at or below the log end and rebuilds the
//! rest from the batch headers after it, so it never rescans the whole log.

use crate::protocol::errors::{ErrorCode, KafkaError};
use std::collections::{BTreeMap, VecDeque};

/// Batches remembered per producer (Kafka's max.in.flight limit for idempotence).
pub const REMEMBERED_BATCHES: usize = 5;

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

    /// Records an appended batch (also used when rebuilding from the log).
    pub fn record(&mut self, pid: i64, epoch: i16, b: BatchSeq) {
        let e = self.producers.entry(pid).or_default();
        if epoch != e.epoch {
            e.epoch = epoch;
            e.batches.clear();
        }
        e.batches.push_back(b);
        while e.batches.len() > REMEMBERED_BATCHES {
            e.batches.pop_front();
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&1u16.to_be_bytes()); // format version
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (pid, e) in &self.producers {
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
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
        if u16::from_be_bytes(take(&mut at, 2)?.try_into().ok()?) != 1 {
            return None;
        }
        let n = u32::from_be_bytes(take(&mut at, 4)?.try_into().ok()?);
        let mut t = ProducerTable::default();
        for _ in 0..n {
            let pid = i64::from_be_bytes(take(&mut at, 8)?.try_into().ok()?);
            let epoch = i16::from_be_bytes(take(&mut at, 2)?.try_into().ok()?);
            let k = take(&mut at, 1)?[0];
            let mut e = ProducerEntry {
                epoch,
                batches: VecDeque::new(),
            };
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
        t.record(7, 0, b(0, 4, 100));
        assert_eq!(t.check(7, 0, 5, 9).unwrap(), Verdict::Append);
        t.record(7, 0, b(5, 9, 105));
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
        t.record(7, 1, b(0, 0, 110));
        assert_eq!(
            t.check(7, 0, 10, 10).unwrap_err().code,
            ErrorCode::INVALID_PRODUCER_EPOCH
        );
        // Only the last five batches are remembered.
        for i in 1..=6 {
            t.record(7, 1, b(i, i, 110 + i as i64));
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
        t.record(1, 3, b(0, 9, 0));
        t.record(2, 0, b(5, 5, 10));
        let bytes = t.encode();
        assert_eq!(ProducerTable::decode(&bytes), Some(t));
        let mut bad = bytes.clone();
        bad[8] ^= 1;
        assert_eq!(ProducerTable::decode(&bad), None);
        assert_eq!(ProducerTable::decode(&bytes[..bytes.len() - 3]), None);
        assert_eq!(last_seq(i32::MAX, 1), 0);
    }
}
