//! Record batch (magic v2) framing and validation.
//!
//! Layout of the fixed batch header (all big-endian):
//! `base_offset i64 | batch_length i32 | partition_leader_epoch i32 | magic i8 | crc u32 |
//!  attributes i16 | last_offset_delta i32 | base_timestamp i64 | max_timestamp i64 |
//!  producer_id i64 | producer_epoch i16 | base_sequence i32 | records_count i32`.
//! The CRC32C covers everything from `attributes` to the end, so the broker can write the base
//! offset and leader epoch without checksumming again.

use super::errors::{ErrorCode, KafkaError};

pub const HEADER_BYTES: usize = 61;
/// Bytes before `batch_length`'s coverage starts: base_offset + batch_length.
pub const LOG_OVERHEAD: usize = 12;
pub const OFF_BASE_OFFSET: usize = 0;
pub const OFF_LENGTH: usize = 8;
pub const OFF_LEADER_EPOCH: usize = 12;
pub const OFF_MAGIC: usize = 16;
pub const OFF_CRC: usize = 17;
pub const OFF_ATTRIBUTES: usize = 21;
pub const OFF_LAST_OFFSET_DELTA: usize = 23;
pub const OFF_BASE_TIMESTAMP: usize = 27;
pub const OFF_MAX_TIMESTAMP: usize = 35;
pub const OFF_PRODUCER_ID: usize = 43;
pub const OFF_PRODUCER_EPOCH: usize = 51;
pub const OFF_BASE_SEQUENCE: usize = 53;
pub const OFF_RECORDS_COUNT: usize = 57;
/// Enough of the header to know where a batch ends and which offsets it holds.
pub const PREFIX_BYTES: usize = OFF_LAST_OFFSET_DELTA + 4;

pub const ATTR_COMPRESSION_MASK: i16 = 0x07;
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
pub const ATTR_CONTROL: i16 = 0x20;

/// What the broker needs to know of one validated batch inside a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Byte offset of the batch inside the request's record set.
    pub start: usize,
    /// Whole batch size in bytes (LOG_OVERHEAD + batch_length).
    pub len: usize,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub records_count: i32,
    /// -1 unless the producer is idempotent.
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// Part of a transaction (attribute bit 4).
    pub transactional: bool,
}

pub fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
pub fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
pub fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The header fields found at the start of a stored batch: enough to walk a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPrefix {
    pub base_offset: i64,
    /// Whole batch size in bytes.
    pub len: usize,
    pub magic: i8,
    pub last_offset_delta: i32,
}

impl BatchPrefix {
    /// Parses the first PREFIX_BYTES of a batch; None when they cannot start a valid batch
    /// (zeroed preallocated space, a torn write, garbage).
    pub fn parse(b: &[u8]) -> Option<BatchPrefix> {
        if b.len() < PREFIX_BYTES {
            return None;
        }
        let batch_length = be_i32(b, OFF_LENGTH);
        let magic = b[OFF_MAGIC] as i8;
        let last_offset_delta = be_i32(b, OFF_LAST_OFFSET_DELTA);
        if batch_length < (HEADER_BYTES - LOG_OVERHEAD) as i32
            || magic != 2
            || last_offset_delta < 0
        {
            return None;
        }
        Some(BatchPrefix {
            base_offset: be_i64(b, OFF_BASE_OFFSET),
            len: LOG_OVERHEAD + batch_length as usize,
            magic,
            last_offset_delta,
        })
    }

    pub fn next_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64 + 1
    }
}

/// Checks the CRC32C of a whole batch.
pub fn crc_ok(batch: &[u8]) -> bool {
    let stored = u32::from_be_bytes(batch[OFF_CRC..OFF_CRC + 4].try_into().expect("4 bytes"));
    crc32c::crc32c(&batch[OFF_ATTRIBUTES..]) == stored
}

/// Rewrites the CRC after the broker changed covered fields (LogAppendTime).
pub fn restamp_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[OFF_ATTRIBUTES..]);
    batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Validates every batch of a produce request's record set: framing, magic, CRC, offsets.
/// Nothing is decompressed: v2 batches carry all the broker needs in the header.
pub fn validate_produce(
    records: &[u8],
    max_batch_bytes: usize,
) -> Result<Vec<BatchInfo>, KafkaError> {
    let corrupt = |m: String| KafkaError::new(ErrorCode::CORRUPT_MESSAGE, m);
    let mut out = Vec::with_capacity(1);
    let mut at = 0usize;
    if records.is_empty() {
        return Err(KafkaError::new(
            ErrorCode::INVALID_RECORD,
            "empty record set",
        ));
    }
    while at < records.len() {
        let rest = &records[at..];
        if rest.len() < HEADER_BYTES {
            return Err(corrupt(format!(
                "record set ends with {} bytes, less than a batch header",
                rest.len()
            )));
        }
        let batch_length = be_i32(rest, OFF_LENGTH);
        if batch_length < (HEADER_BYTES - LOG_OVERHEAD) as i32 {
            return Err(corrupt(format!("batch length {batch_length} is too small")));
        }
        let len = LOG_OVERHEAD + batch_length as usize;
        if len > rest.len() {
            return Err(corrupt(format!(
                "batch length {len} exceeds the {} bytes left in the request",
                rest.len()
            )));
        }
        if len > max_batch_bytes {
            return Err(KafkaError::new(
                ErrorCode::MESSAGE_TOO_LARGE,
                format!("batch of {len} bytes exceeds max_batch_bytes {max_batch_bytes}"),
            ));
        }
        let b = &rest[..len];
        let magic = b[OFF_MAGIC] as i8;
        if magic != 2 {
            return Err(KafkaError::new(
                ErrorCode::UNSUPPORTED_FOR_MESSAGE_FORMAT,
                format!("record batch magic {magic}: only magic 2 is accepted"),
            ));
        }
        if !crc_ok(b) {
            return Err(corrupt("record batch CRC32C mismatch".into()));
        }
        let attributes = be_i16(b, OFF_ATTRIBUTES);
        if attributes & ATTR_CONTROL != 0 {
            return Err(KafkaError::new(
                ErrorCode::INVALID_RECORD,
                "clients may not produce control batches",
            ));
        }
        let last_offset_delta = be_i32(b, OFF_LAST_OFFSET_DELTA);
        let records_count = be_i32(b, OFF_RECORDS_COUNT);
        if last_offset_delta < 0 || records_count <= 0 || records_count != last_offset_delta + 1 {
            return Err(KafkaError::new(
                ErrorCode::INVALID_RECORD,
                format!(
                    "records_count {records_count} does not match last_offset_delta {last_offset_delta}"
                ),
            ));
        }
        out.push(BatchInfo {
            start: at,
            len,
            last_offset_delta,
            base_timestamp: be_i64(b, OFF_BASE_TIMESTAMP),
            max_timestamp: be_i64(b, OFF_MAX_TIMESTAMP),
            records_count,
            producer_id: be_i64(b, OFF_PRODUCER_ID),
            producer_epoch: be_i16(b, OFF_PRODUCER_EPOCH),
            base_sequence: be_i32(b, OFF_BASE_SEQUENCE),
            transactional: attributes & ATTR_TRANSACTIONAL != 0,
        });
        at += len;
    }
    Ok(out)
}

/// One uncompressed magic-2 batch of key/value records at time `now_ms`, offsets from 0 (the
/// partition assigns real ones). With a producer (id, epoch) it is transactional and has no
/// sequence: written by a coordinator (TxnOffsetCommit), not by the producer.
pub fn encode_records(
    kvs: &[(Option<bytes::Bytes>, Option<bytes::Bytes>)],
    now_ms: i64,
    producer: Option<(i64, i16)>,
) -> bytes::Bytes {
    use kafka_protocol::records::{Compression, Record, TimestampType};
    let (pid, epoch) = producer.unwrap_or((-1, -1));
    let records: Vec<Record> = kvs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: now_ms,
            key: k.clone(),
            value: v.clone(),
            headers: Default::default(),
        })
        .collect();
    encode_batch(&records, Compression::None)
        .expect("encoding an uncompressed batch of in-memory records cannot fail")
}

/// `records` (offsets from 0) as one magic-2 batch without a producer sequence.
///
/// kafka-protocol's encoder starts a new batch whenever offset minus sequence changes, so
/// records with sequence -1 would each get a batch of their own: they are encoded with
/// sequence = offset, then the base sequence is set back to -1 (no sequence) and the CRC
/// re-stamped.
pub fn encode_batch(
    records: &[kafka_protocol::records::Record],
    compression: kafka_protocol::records::Compression,
) -> anyhow::Result<bytes::Bytes> {
    use kafka_protocol::records::{RecordBatchEncoder, RecordEncodeOptions};
    let records: Vec<_> = records
        .iter()
        .map(|r| kafka_protocol::records::Record {
            sequence: r.offset as i32,
            ..r.clone()
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )?;
    anyhow::ensure!(
        BatchPrefix::parse(&buf).is_some_and(|p| p.len == buf.len()),
        "the records did not fit one batch"
    );
    buf[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4].copy_from_slice(&(-1i32).to_be_bytes());
    restamp_crc(&mut buf);
    Ok(buf.freeze())
}

/// Control record types (the key's second field).
pub const CONTROL_ABORT: i16 = 0;
pub const CONTROL_COMMIT: i16 = 1;

/// Appends `v` as a zigzag varint (record fields of magic-2 batches).
pub fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Reads a zigzag varint at `at`, advancing it; None when it runs past the end.
pub fn get_zigzag(b: &[u8], at: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        z |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

/// A transaction marker: a control batch of one record whose key is `(version 0, type)` and
/// whose value is `(version 0, coordinator epoch)`, as Kafka writes them. Base offset 0: the
/// partition assigns the real one.
pub fn control_batch(
    pid: i64,
    epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    ts: i64,
) -> Vec<u8> {
    let mut rec = vec![0u8]; // record attributes
    put_zigzag(&mut rec, 0); // timestamp delta
    put_zigzag(&mut rec, 0); // offset delta
    put_zigzag(&mut rec, 4);
    rec.extend_from_slice(&0i16.to_be_bytes());
    let kind = if commit {
        CONTROL_COMMIT
    } else {
        CONTROL_ABORT
    };
    rec.extend_from_slice(&kind.to_be_bytes());
    put_zigzag(&mut rec, 6);
    rec.extend_from_slice(&0i16.to_be_bytes());
    rec.extend_from_slice(&coordinator_epoch.to_be_bytes());
    put_zigzag(&mut rec, 0); // headers
    let mut records = Vec::with_capacity(rec.len() + 2);
    put_zigzag(&mut records, rec.len() as i64);
    records.extend_from_slice(&rec);

    let mut b = Vec::with_capacity(HEADER_BYTES + records.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_BYTES - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    b.extend_from_slice(&(ATTR_TRANSACTIONAL | ATTR_CONTROL).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&pid.to_be_bytes());
    b.extend_from_slice(&epoch.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&1i32.to_be_bytes()); // records count
    b.extend_from_slice(&records);
    restamp_crc(&mut b);
    b
}

/// For a control batch, whether its marker commits (`Some(true)`) or aborts; None for data
/// batches and control records of other kinds.
pub fn control_marker(batch: &[u8]) -> Option<bool> {
    if batch.len() < HEADER_BYTES || be_i16(batch, OFF_ATTRIBUTES) & ATTR_CONTROL == 0 {
        return None;
    }
    let mut at = HEADER_BYTES;
    get_zigzag(batch, &mut at)?; // record length
    at += 1; // attributes
    get_zigzag(batch, &mut at)?; // timestamp delta
    get_zigzag(batch, &mut at)?; // offset delta
    if get_zigzag(batch, &mut at)? < 4 {
        return None;
    }
    let key = batch.get(at..at + 4)?;
    match be_i16(key, 2) {
        CONTROL_ABORT => Some(false),
        CONTROL_COMMIT => Some(true),
        _ => None,
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A minimal valid batch with `n` empty-valued records (the records body is opaque to the
    /// broker, so any bytes do; the CRC is what matters).
    pub fn make_batch(n: i32, body: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_BYTES];
        b.extend_from_slice(body);
        let len = (b.len() - LOG_OVERHEAD) as i32;
        b[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
        b[OFF_MAGIC] = 2;
        b[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4].copy_from_slice(&(n - 1).to_be_bytes());
        b[OFF_BASE_TIMESTAMP..OFF_BASE_TIMESTAMP + 8].copy_from_slice(&1000i64.to_be_bytes());
        b[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&1005i64.to_be_bytes());
        b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        b[OFF_RECORDS_COUNT..OFF_RECORDS_COUNT + 4].copy_from_slice(&n.to_be_bytes());
        restamp_crc(&mut b);
        b
    }

    #[test]
    fn accepts_valid_batches_back_to_back() {
        let mut set = make_batch(3, b"abc");
        set.extend(make_batch(1, b"z"));
        let infos = validate_produce(&set, 1 << 20).unwrap();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].start, 0);
        assert_eq!(infos[0].len, HEADER_BYTES + 3);
        assert_eq!(infos[0].last_offset_delta, 2);
        assert_eq!(infos[1].start, HEADER_BYTES + 3);
        assert_eq!(infos[1].max_timestamp, 1005);
    }

    #[test]
    fn rejects_wrong_crc() {
        let mut b = make_batch(1, b"payload");
        let last = b.len() - 1;
        b[last] ^= 0xff;
        let e = validate_produce(&b, 1 << 20).unwrap_err();
        assert_eq!(e.code, ErrorCode::CORRUPT_MESSAGE);
    }

    #[test]
    fn rejects_wrong_magic() {
        let mut b = make_batch(1, b"x");
        b[OFF_MAGIC] = 1;
        let e = validate_produce(&b, 1 << 20).unwrap_err();
        assert_eq!(e.code, ErrorCode::UNSUPPORTED_FOR_MESSAGE_FORMAT);
    }

    #[test]
    fn rejects_truncated_and_oversized_lengths() {
        let b = make_batch(2, b"hello");
        for cut in [1, 10, HEADER_BYTES - 1, b.len() - 1] {
            assert!(
                validate_produce(&b[..cut], 1 << 20).is_err(),
                "cut at {cut}"
            );
        }
        let mut huge = b.clone();
        huge[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(
            validate_produce(&huge, 1 << 20).unwrap_err().code,
            ErrorCode::CORRUPT_MESSAGE
        );
        let mut neg = b.clone();
        neg[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(validate_produce(&neg, 1 << 20).is_err());
        assert_eq!(
            validate_produce(&b, 10).unwrap_err().code,
            ErrorCode::MESSAGE_TOO_LARGE
        );
    }

    #[test]
    fn rejects_count_mismatch() {
        let mut b = make_batch(2, b"x");
        b[OFF_RECORDS_COUNT..OFF_RECORDS_COUNT + 4].copy_from_slice(&5i32.to_be_bytes());
        restamp_crc(&mut b);
        assert_eq!(
            validate_produce(&b, 1 << 20).unwrap_err().code,
            ErrorCode::INVALID_RECORD
        );
    }

    #[test]
    fn prefix_parses_written_batch_and_rejects_zeroes() {
        let mut b = make_batch(4, b"data");
        b[..8].copy_from_slice(&100i64.to_be_bytes());
        let p = BatchPrefix::parse(&b).unwrap();
        assert_eq!(p.base_offset, 100);
        assert_eq!(p.next_offset(), 104);
        assert_eq!(p.len, b.len());
        assert!(BatchPrefix::parse(&[0u8; 64]).is_none());
    }

    #[test]
    fn control_batches_round_trip_and_decode_with_a_generic_decoder() {
        for commit in [true, false] {
            let b = control_batch(42, 7, commit, 3, 1_700_000_000_000);
            assert!(crc_ok(&b));
            assert_eq!(control_marker(&b), Some(commit));
            let p = BatchPrefix::parse(&b).unwrap();
            assert_eq!((p.len, p.next_offset()), (b.len(), 1));
            let mut bytes = bytes::Bytes::from(b.clone());
            let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes).unwrap();
            let r = &sets[0].records[0];
            assert!(r.control && r.transactional);
            assert_eq!((r.producer_id, r.producer_epoch), (42, 7));
            let key = r.key.clone().unwrap();
            assert_eq!(&key[..], &[0, 0, 0, commit as u8]);
        }
        assert_eq!(control_marker(&make_batch(1, b"x")), None);
    }
}
