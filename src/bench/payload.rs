//! What the bench writes into each record, and how a consumer checks it.
//!
//! A value is `FLB1` | run id (u64) | record number in the run (u64) | send time (µs since the
//! epoch, u64) | filler | CRC32C of everything before it (u32), all big-endian. The run id
//! tells runs apart in a shared topic, the record number finds gaps and duplicates, the send
//! time gives end-to-end latency, the checksum finds corruption anywhere in the value.
//!
//! Uncompressed batches are built from a template made once per thread: each request patches
//! the keys and values in place and re-stamps the batch CRC, so building costs about what
//! checksumming the bytes costs. Compressed batches go through kafka-protocol's encoder (the
//! compression dominates there, as in any client).

use crate::protocol::batch::{self, BatchPrefix};
use anyhow::{bail, Context};
use bytes::Bytes;
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, TimestampType};

pub const MAGIC: &[u8; 4] = b"FLB1";
/// Smallest value that carries the verification fields.
pub const MIN_VALUE_BYTES: usize = 32;
const KEY_BYTES: usize = 16;
const FILLER: &[u8] = b"flumen bench payload; ";

/// Which keys the records carry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Keys {
    None,
    /// Record n has key n mod N.
    Seq(u64),
    /// Uniformly random among N keys.
    Random(u64),
}

impl std::str::FromStr for Keys {
    type Err = String;
    fn from_str(s: &str) -> Result<Keys, String> {
        let n = |v: &str| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(format!("{v}: a key count above 0"))
        };
        match s.split_once(':') {
            None if s == "none" => Ok(Keys::None),
            Some(("seq", v)) => Ok(Keys::Seq(n(v)?)),
            Some(("random", v)) => Ok(Keys::Random(n(v)?)),
            _ => Err(format!("{s}: none, seq:N or random:N")),
        }
    }
}

pub fn parse_compression(s: &str) -> Result<Compression, String> {
    Ok(match s {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        _ => return Err(format!("{s}: none, gzip, snappy, lz4 or zstd")),
    })
}

use batch::{get_zigzag as get_varint, put_zigzag as put_varint};

/// Writes the verification fields and checksum into `value` (its filler already in place).
fn stamp_value(value: &mut [u8], run: u64, seq: u64, sent_us: u64) {
    value[..4].copy_from_slice(MAGIC);
    value[4..12].copy_from_slice(&run.to_be_bytes());
    value[12..20].copy_from_slice(&seq.to_be_bytes());
    value[20..28].copy_from_slice(&sent_us.to_be_bytes());
    let n = value.len();
    let crc = crc32c::crc32c(&value[..n - 4]);
    value[n - 4..].copy_from_slice(&crc.to_be_bytes());
}

fn key_bytes(keys: Keys, seq: u64, rng: &mut u64) -> Option<[u8; KEY_BYTES]> {
    let k = match keys {
        Keys::None => return None,
        Keys::Seq(n) => seq % n,
        Keys::Random(n) => {
            // xorshift64: cheap, and good enough to spread keys.
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            *rng % n
        }
    };
    let mut out = [0u8; KEY_BYTES];
    out.copy_from_slice(format!("k{k:015}").as_bytes());
    Some(out)
}

/// Builds request batches of `records` records of `value_bytes`.
pub struct BatchBuilder {
    run: u64,
    keys: Keys,
    compression: Compression,
    rng: u64,
    template: Vec<u8>,
    /// (key position or 0, value position) of each record in `template`.
    slots: Vec<(usize, usize)>,
    /// A value before its fields and checksum are stamped (its length is the value size).
    filler: Vec<u8>,
}

impl BatchBuilder {
    pub fn new(
        run: u64,
        records: usize,
        value_bytes: usize,
        keys: Keys,
        compression: Compression,
        seed: u64,
    ) -> anyhow::Result<BatchBuilder> {
        if value_bytes < MIN_VALUE_BYTES {
            bail!("records must have at least {MIN_VALUE_BYTES} bytes to carry the verification fields");
        }
        let mut t = vec![0u8; batch::HEADER_BYTES];
        let mut slots = Vec::with_capacity(records);
        let filler: Vec<u8> = FILLER.iter().copied().cycle().take(value_bytes).collect();
        for i in 0..records {
            let mut r = vec![0u8]; // attributes
            put_varint(&mut r, 0); // timestamp delta
            put_varint(&mut r, i as i64); // offset delta
            let key_at = if keys == Keys::None {
                put_varint(&mut r, -1);
                None
            } else {
                put_varint(&mut r, KEY_BYTES as i64);
                let at = r.len();
                r.extend_from_slice(&[b'k'; KEY_BYTES]);
                Some(at)
            };
            put_varint(&mut r, value_bytes as i64);
            let value_at = r.len();
            r.extend_from_slice(&filler);
            put_varint(&mut r, 0); // headers
            put_varint(&mut t, r.len() as i64);
            let base = t.len();
            slots.push((key_at.map_or(0, |k| base + k), base + value_at));
            t.extend_from_slice(&r);
        }
        let len = (t.len() - batch::LOG_OVERHEAD) as i32;
        t[batch::OFF_LENGTH..batch::OFF_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
        t[batch::OFF_MAGIC] = 2;
        let last_delta = records as i32 - 1;
        t[batch::OFF_LAST_OFFSET_DELTA..batch::OFF_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&last_delta.to_be_bytes());
        t[batch::OFF_PRODUCER_ID..batch::OFF_PRODUCER_ID + 8]
            .copy_from_slice(&(-1i64).to_be_bytes());
        t[batch::OFF_PRODUCER_EPOCH..batch::OFF_PRODUCER_EPOCH + 2]
            .copy_from_slice(&(-1i16).to_be_bytes());
        t[batch::OFF_BASE_SEQUENCE..batch::OFF_BASE_SEQUENCE + 4]
            .copy_from_slice(&(-1i32).to_be_bytes());
        t[batch::OFF_RECORDS_COUNT..batch::OFF_RECORDS_COUNT + 4]
            .copy_from_slice(&(records as i32).to_be_bytes());
        Ok(BatchBuilder {
            run,
            keys,
            compression,
            rng: seed | 1,
            template: t,
            slots,
            filler,
        })
    }

    /// The batch of records `first..first + records`, stamped with send time `now_us`.
    pub fn build(&mut self, first: u64, now_us: u64) -> Bytes {
        let now_ms = (now_us / 1000) as i64;
        if self.compression != Compression::None {
            return self.build_compressed(first, now_us, now_ms);
        }
        let t = &mut self.template;
        for (i, &(key_at, value_at)) in self.slots.iter().enumerate() {
            let seq = first + i as u64;
            if let Some(k) = key_bytes(self.keys, seq, &mut self.rng) {
                t[key_at..key_at + KEY_BYTES].copy_from_slice(&k);
            }
            stamp_value(
                &mut t[value_at..value_at + self.filler.len()],
                self.run,
                seq,
                now_us,
            );
        }
        t[batch::OFF_BASE_TIMESTAMP..batch::OFF_BASE_TIMESTAMP + 8]
            .copy_from_slice(&now_ms.to_be_bytes());
        t[batch::OFF_MAX_TIMESTAMP..batch::OFF_MAX_TIMESTAMP + 8]
            .copy_from_slice(&now_ms.to_be_bytes());
        batch::restamp_crc(t);
        Bytes::copy_from_slice(t)
    }

    fn build_compressed(&mut self, first: u64, now_us: u64, now_ms: i64) -> Bytes {
        let records: Vec<Record> = (0..self.slots.len())
            .map(|i| {
                let seq = first + i as u64;
                let mut v = self.filler.clone();
                stamp_value(&mut v, self.run, seq, now_us);
                Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: 0,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: i as i64,
                    sequence: -1,
                    timestamp: now_ms,
                    key: key_bytes(self.keys, seq, &mut self.rng)
                        .map(|k| Bytes::copy_from_slice(&k)),
                    value: Some(Bytes::from(v)),
                    headers: Default::default(),
                }
            })
            .collect();
        batch::encode_batch(&records, self.compression).expect("compressing in-memory records")
    }
}

/// One checked record.
pub struct Seen {
    pub run: u64,
    pub seq: u64,
    pub sent_us: u64,
}

/// What a consumer found in a fetched record set.
#[derive(Default)]
pub struct Checked {
    pub records: Vec<(i64, Seen)>,
    /// Records whose value is not the bench's (another writer's data).
    pub foreign: u64,
    /// Batches with a bad CRC, or bench values with a bad checksum.
    pub corrupt: u64,
    /// Bytes of whole batches.
    pub bytes: u64,
}

fn check_value(v: &[u8]) -> Result<Option<Seen>, ()> {
    if v.len() < MIN_VALUE_BYTES || &v[..4] != MAGIC {
        return Ok(None);
    }
    let n = v.len();
    let crc = u32::from_be_bytes(v[n - 4..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&v[..n - 4]) != crc {
        return Err(());
    }
    let u = |at: usize| u64::from_be_bytes(v[at..at + 8].try_into().expect("8 bytes"));
    Ok(Some(Seen {
        run: u(4),
        seq: u(12),
        sent_us: u(20),
    }))
}

/// Checks every record at or after `from` in a fetched record set (whole batches; a partial
/// last batch, which fetch may return, is left for the next fetch). Returns the offset after
/// the last whole batch.
pub fn check_records(set: &[u8], from: i64, out: &mut Checked) -> anyhow::Result<i64> {
    let mut at = 0;
    let mut next = from;
    while let Some(pre) = BatchPrefix::parse(&set[at..]) {
        if at + pre.len > set.len() {
            break;
        }
        let whole = &set[at..at + pre.len];
        at += pre.len;
        next = next.max(pre.next_offset());
        out.bytes += pre.len as u64;
        if whole[batch::OFF_MAGIC] != 2 || !batch::crc_ok(whole) {
            out.corrupt += 1;
            continue;
        }
        let attrs = batch::be_i16(whole, batch::OFF_ATTRIBUTES);
        if attrs & batch::ATTR_CONTROL != 0 {
            continue;
        }
        let mut visit = |offset: i64, value: Option<&[u8]>| {
            if offset < from {
                return;
            }
            match value.map(check_value) {
                Some(Ok(Some(seen))) => out.records.push((offset, seen)),
                Some(Err(())) => out.corrupt += 1,
                _ => out.foreign += 1,
            }
        };
        if attrs & batch::ATTR_COMPRESSION_MASK == 0 {
            walk_uncompressed(whole, &mut visit).context("a batch with a good CRC")?;
        } else {
            let mut b = Bytes::copy_from_slice(whole);
            let set = RecordBatchDecoder::decode(&mut b).context("decompressing a batch")?;
            for r in set.records {
                visit(r.offset, r.value.as_deref());
            }
        }
    }
    Ok(next)
}

/// Calls `visit(offset, value)` for each record of an uncompressed batch.
fn walk_uncompressed(
    whole: &[u8],
    visit: &mut impl FnMut(i64, Option<&[u8]>),
) -> anyhow::Result<()> {
    let base = batch::be_i64(whole, batch::OFF_BASE_OFFSET);
    let count = batch::be_i32(whole, batch::OFF_RECORDS_COUNT);
    let mut at = batch::HEADER_BYTES;
    let bad = || anyhow::anyhow!("malformed record in batch at offset {base}");
    for _ in 0..count {
        let len = get_varint(whole, &mut at).ok_or_else(bad)? as usize;
        let end = at + len;
        if end > whole.len() {
            bail!(bad());
        }
        at += 1; // attributes
        get_varint(whole, &mut at).ok_or_else(bad)?; // timestamp delta
        let delta = get_varint(whole, &mut at).ok_or_else(bad)?;
        let klen = get_varint(whole, &mut at).ok_or_else(bad)?;
        at += klen.max(0) as usize;
        let vlen = get_varint(whole, &mut at).ok_or_else(bad)?;
        let value = if vlen < 0 {
            None
        } else {
            let v = whole.get(at..at + vlen as usize).ok_or_else(bad)?;
            Some(v)
        };
        visit(base + delta, value);
        at = end;
    }
    Ok(())
}

/// Which record numbers of one run were seen, to count gaps and duplicates.
#[derive(Default)]
pub struct SeqSet {
    bits: Vec<u64>,
    pub distinct: u64,
    pub duplicates: u64,
    pub max: Option<u64>,
}

impl SeqSet {
    pub fn insert(&mut self, seq: u64) {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if w >= self.bits.len() {
            self.bits.resize((w + 1).next_power_of_two(), 0);
        }
        if self.bits[w] & (1 << b) != 0 {
            self.duplicates += 1;
        } else {
            self.bits[w] |= 1 << b;
            self.distinct += 1;
        }
        self.max = Some(self.max.map_or(seq, |m| m.max(seq)));
    }

    /// Record numbers below `expected` (or below the highest seen) that never arrived.
    pub fn missing(&self, expected: Option<u64>) -> u64 {
        let want = expected.unwrap_or(self.max.map_or(0, |m| m + 1));
        want.saturating_sub(self.distinct)
    }

    pub fn merge(&mut self, other: &SeqSet) {
        if other.bits.len() > self.bits.len() {
            self.bits.resize(other.bits.len(), 0);
        }
        for (w, &o) in other.bits.iter().enumerate() {
            let both = self.bits[w] & o;
            self.duplicates += both.count_ones() as u64;
            self.distinct += (o & !both).count_ones() as u64;
            self.bits[w] |= o;
        }
        self.duplicates += other.duplicates;
        self.max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_batches_verify_and_tampering_is_found() {
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            for keys in [Keys::None, Keys::Seq(3), Keys::Random(1000)] {
                let mut b = BatchBuilder::new(7, 50, 100, keys, compression, 1).unwrap();
                let mut set = b.build(1000, 5).to_vec();
                let pre = BatchPrefix::parse(&set).unwrap();
                assert_eq!(pre.len, set.len(), "one batch");
                assert_eq!(pre.next_offset(), 50);
                let mut c = Checked::default();
                assert!(crate::protocol::batch::validate_produce(
                    &Bytes::copy_from_slice(&set),
                    1 << 20
                )
                .is_ok());
                assert_eq!(check_records(&set, 0, &mut c).unwrap(), 50);
                assert_eq!(c.records.len(), 50);
                assert_eq!((c.corrupt, c.foreign), (0, 0));
                let seqs: Vec<u64> = c.records.iter().map(|r| r.1.seq).collect();
                assert_eq!(seqs, (1000..1050).collect::<Vec<_>>());
                assert!(c.records.iter().all(|r| r.1.run == 7 && r.1.sent_us == 5));
                // Records before the fetch position are skipped.
                let mut c = Checked::default();
                check_records(&set, 10, &mut c).unwrap();
                assert_eq!(c.records.len(), 40);
                // A flipped byte is caught by the batch CRC.
                let last = set.len() - 3;
                set[last] ^= 1;
                let mut c = Checked::default();
                check_records(&set, 0, &mut c).unwrap();
                assert_eq!(
                    (c.corrupt, c.records.len()),
                    (1, 0),
                    "{compression:?} {keys:?}"
                );
            }
        }
    }

    #[test]
    fn a_value_changed_under_a_good_batch_crc_is_caught() {
        let mut b = BatchBuilder::new(1, 3, 64, Keys::None, Compression::None, 1).unwrap();
        let mut set = b.build(0, 0).to_vec();
        let value_at = b.slots[1].1;
        set[value_at + 40] ^= 0xff;
        batch::restamp_crc(&mut set);
        let mut c = Checked::default();
        check_records(&set, 0, &mut c).unwrap();
        assert_eq!((c.corrupt, c.records.len()), (1, 2));
    }

    #[test]
    fn seq_sets_count_gaps_and_duplicates_across_merges() {
        let mut a = SeqSet::default();
        let mut b = SeqSet::default();
        for s in [0, 1, 2, 5] {
            a.insert(s);
        }
        for s in [2, 3, 200] {
            b.insert(s);
        }
        b.insert(3);
        a.merge(&b);
        assert_eq!(a.distinct, 6);
        assert_eq!(a.duplicates, 2);
        assert_eq!(a.missing(None), 201 - 6);
        assert_eq!(a.missing(Some(6)), 0);
    }
}
