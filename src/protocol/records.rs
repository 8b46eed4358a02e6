//! The records inside a stored magic-2 batch: the body decompressed, each record's offset,
//! timestamp and key found without copying it, and a batch rebuilt from some of its records
//! (what the log cleaner and the check of keys on compacted topics need; the rest of the broker
//! never looks inside a batch).
//!
//! A rebuilt batch keeps the original header's base offset, last offset delta, base timestamp,
//! producer fields, leader epoch and codec, so the records kept are copied byte for byte (their
//! offset and timestamp deltas stay right) and the batch still spans the offsets it spanned:
//! Kafka keeps the last offset of a cleaned batch for the same reason (the producer's sequence).
//!
//! Invariants: `parse` accepts exactly `records_count` well-formed records that fill the body;
//! `rebuild` output passes `crc_ok` and `BatchPrefix::parse` with the original's offsets.

use super::batch::{self, get_zigzag};
use bytes::BytesMut;
use kafka_protocol::compression::{self as cmpr, Compressor};

/// Codec numbers of the batch attributes.
const NONE: i16 = 0;
const GZIP: i16 = 1;
const SNAPPY: i16 = 2;
const LZ4: i16 = 3;
const ZSTD: i16 = 4;

/// One record of a batch, borrowed from the decompressed body.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// Offset minus the batch's base offset.
    pub offset_delta: i64,
    /// Timestamp minus the batch's base timestamp.
    pub timestamp_delta: i64,
    /// None for a null key.
    pub key: Option<&'a [u8]>,
    /// A null value: a tombstone on a compacted topic.
    pub value_is_null: bool,
    /// The whole record as stored (its length varint and body).
    pub bytes: &'a [u8],
}

fn codec(whole: &[u8]) -> i16 {
    batch::be_i16(whole, batch::OFF_ATTRIBUTES) & batch::ATTR_COMPRESSION_MASK
}

/// Most bytes a batch's records may decompress to: 64 MiB, or 64 times the batch when that is
/// more. Past it the batch is refused as a compression bomb, before it is inflated further.
fn decompressed_limit(batch_len: usize) -> usize {
    (64usize << 20).max(batch_len.saturating_mul(64))
}

/// The records section of a whole batch, decompressed (within `decompressed_limit`).
pub fn body(whole: &[u8]) -> Result<Vec<u8>, String> {
    if whole.len() < batch::HEADER_BYTES {
        return Err(format!("a batch of {} bytes has no header", whole.len()));
    }
    let raw = &whole[batch::HEADER_BYTES..];
    let limit = decompressed_limit(whole.len());
    let bounded = |r: &mut dyn std::io::Read| -> Result<Vec<u8>, String> {
        use std::io::Read;
        let mut out = Vec::new();
        r.take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("decompressing a batch: {e}"))?;
        if out.len() > limit {
            return Err(format!("records decompress to more than {limit} bytes"));
        }
        Ok(out)
    };
    match codec(whole) {
        NONE => Ok(raw.to_vec()),
        GZIP => bounded(&mut flate2::read::GzDecoder::new(raw)),
        SNAPPY => snappy(raw, limit),
        LZ4 => {
            bounded(&mut lz4::Decoder::new(raw).map_err(|e| format!("decompressing a batch: {e}"))?)
        }
        ZSTD => bounded(
            &mut zstd::stream::read::Decoder::new(raw)
                .map_err(|e| format!("decompressing a batch: {e}"))?,
        ),
        c => Err(format!("unknown compression codec {c}")),
    }
}

/// Kafka's snappy: xerial-framed blocks (a 16-byte magic header, then length-prefixed
/// blocks), or one raw snappy block without the header (what the Java client reads too).
fn snappy(raw: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    const XERIAL: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
    let bad = |e: snap::Error| format!("decompressing a snappy batch: {e}");
    let blocks: Vec<&[u8]> = match raw.strip_prefix(&XERIAL[..]) {
        None => vec![raw],
        Some(mut rest) => {
            let mut v = Vec::new();
            while !rest.is_empty() {
                let n = rest
                    .get(..4)
                    .map(|b| u32::from_be_bytes(b.try_into().expect("4")) as usize)
                    .ok_or("a snappy block length is cut")?;
                let block = rest.get(4..4 + n).ok_or("a snappy block is cut")?;
                v.push(block);
                rest = &rest[4 + n..];
            }
            v
        }
    };
    let mut out = Vec::new();
    for block in blocks {
        let n = snap::raw::decompress_len(block).map_err(bad)?;
        if out.len() + n > limit {
            return Err(format!("records decompress to more than {limit} bytes"));
        }
        let at = out.len();
        out.resize(at + n, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[at..])
            .map_err(bad)?;
    }
    Ok(out)
}

/// Compresses a records section with the codec of `whole`'s attributes.
fn compress_like(whole: &[u8], raw: &[u8]) -> Result<Vec<u8>, String> {
    compress(codec(whole), raw)
}

/// The codec number of a topic's `compression.type`; None for `producer` (stored as sent).
pub fn codec_named(name: &str) -> Option<i16> {
    match name {
        "uncompressed" => Some(NONE),
        "gzip" => Some(GZIP),
        "snappy" => Some(SNAPPY),
        "lz4" => Some(LZ4),
        "zstd" => Some(ZSTD),
        _ => None,
    }
}

/// `whole` with its records compressed with `target` instead (Kafka recompresses a batch
/// whose codec is not the topic's `compression.type`); unchanged when it already is.
pub fn recompress(whole: &[u8], target: i16) -> Result<Vec<u8>, String> {
    if codec(whole) == target {
        return Ok(whole.to_vec());
    }
    let raw = body(whole)?;
    let records = compress(target, &raw)?;
    let mut b = Vec::with_capacity(batch::HEADER_BYTES + records.len());
    b.extend_from_slice(&whole[..batch::HEADER_BYTES]);
    let length = (batch::HEADER_BYTES - batch::LOG_OVERHEAD + records.len()) as i32;
    b[batch::OFF_LENGTH..batch::OFF_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    let attrs =
        (batch::be_i16(whole, batch::OFF_ATTRIBUTES) & !batch::ATTR_COMPRESSION_MASK) | target;
    b[batch::OFF_ATTRIBUTES..batch::OFF_ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
    b.extend_from_slice(&records);
    batch::restamp_crc(&mut b);
    Ok(b)
}

/// Compresses a records section with codec `c`.
fn compress(c: i16, raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut dst = BytesMut::new();
    let fill = |b: &mut BytesMut| -> anyhow::Result<()> {
        b.extend_from_slice(raw);
        Ok(())
    };
    let r = match c {
        NONE => return Ok(raw.to_vec()),
        GZIP => cmpr::Gzip::compress(&mut dst, fill),
        SNAPPY => cmpr::Snappy::compress(&mut dst, fill),
        LZ4 => cmpr::Lz4::compress(&mut dst, fill),
        ZSTD => cmpr::Zstd::compress(&mut dst, fill),
        c => return Err(format!("unknown compression codec {c}")),
    };
    r.map_err(|e| format!("compressing a batch: {e:#}"))?;
    Ok(dst.to_vec())
}

/// The `count` records of a decompressed body, in order. Their offset deltas must increase
/// and stay within the batch's `last_offset_delta`.
pub fn parse(
    body: &[u8],
    count: i32,
    last_offset_delta: i32,
) -> Result<Vec<RawRecord<'_>>, String> {
    // The count comes from the batch's header (a client's bytes): a record takes at least
    // seven bytes, so the body bounds what is worth reserving.
    let mut out = Vec::with_capacity((count.max(0) as usize).min(body.len() / 7));
    let mut at = 0usize;
    let bad = |what: &str, i: usize| format!("record {i} of the batch: {what}");
    for i in 0..count.max(0) as usize {
        let start = at;
        let len = get_zigzag(body, &mut at).ok_or_else(|| bad("no length", i))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|&e| e <= body.len())
            .ok_or_else(|| bad(&format!("length {len} runs past the batch"), i))?;
        let rec = &body[..end];
        at += 1; // attributes
        let timestamp_delta = get_zigzag(rec, &mut at).ok_or_else(|| bad("timestamp", i))?;
        let offset_delta = get_zigzag(rec, &mut at).ok_or_else(|| bad("offset delta", i))?;
        let after_previous = out
            .last()
            .is_none_or(|p: &RawRecord<'_>| offset_delta > p.offset_delta);
        if offset_delta < 0 || offset_delta > last_offset_delta as i64 || !after_previous {
            return Err(bad(
                &format!("offset delta {offset_delta} out of order or past {last_offset_delta}"),
                i,
            ));
        }
        let key_len = get_zigzag(rec, &mut at).ok_or_else(|| bad("key length", i))?;
        let key = if key_len < 0 {
            None
        } else {
            let k = rec
                .get(at..at + key_len as usize)
                .ok_or_else(|| bad("key runs past the record", i))?;
            at += key_len as usize;
            Some(k)
        };
        let value_len = get_zigzag(rec, &mut at).ok_or_else(|| bad("value length", i))?;
        if value_len > 0 && at + value_len as usize > end {
            return Err(bad("value runs past the record", i));
        }
        out.push(RawRecord {
            offset_delta,
            timestamp_delta,
            key,
            value_is_null: value_len < 0,
            bytes: &body[start..end],
        });
        at = end;
    }
    if at != body.len() {
        return Err(format!(
            "{} bytes after the batch's {count} records",
            body.len() - at
        ));
    }
    Ok(out)
}

/// `whole` with only `kept` of its records (a subset of `parse`'s, in order), recompressed
/// with its codec; its header otherwise unchanged (offsets, timestamps, producer, epoch).
pub fn rebuild(whole: &[u8], kept: &[RawRecord<'_>]) -> Result<Vec<u8>, String> {
    let raw: Vec<u8> = kept.iter().flat_map(|r| r.bytes.iter().copied()).collect();
    let records = compress_like(whole, &raw)?;
    let mut b = Vec::with_capacity(batch::HEADER_BYTES + records.len());
    b.extend_from_slice(&whole[..batch::HEADER_BYTES]);
    let length = (batch::HEADER_BYTES - batch::LOG_OVERHEAD + records.len()) as i32;
    b[batch::OFF_LENGTH..batch::OFF_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    b[batch::OFF_RECORDS_COUNT..batch::OFF_RECORDS_COUNT + 4]
        .copy_from_slice(&(kept.len() as i32).to_be_bytes());
    b.extend_from_slice(&records);
    batch::restamp_crc(&mut b);
    Ok(b)
}

/// Per-record check of a produced record set for a compacted topic: every record needs a key
/// (KIP-467). Answers (index of the record in its batch, message) for each keyless record,
/// and (0, why) for a batch whose records cannot be read at all.
pub fn keyless_records(set: &[u8], infos: &[batch::BatchInfo]) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for info in infos {
        let whole = &set[info.start..info.start + info.len];
        let parsed = body(whole).and_then(|b| {
            parse(&b, info.records_count, info.last_offset_delta).map(|rs| {
                rs.iter()
                    .enumerate()
                    .filter(|(_, r)| r.key.is_none())
                    .map(|(i, _)| i as i32)
                    .collect::<Vec<_>>()
            })
        });
        match parsed {
            Ok(bad) => out.extend(bad.into_iter().map(|i| {
                (
                    i,
                    "Compacted topic cannot accept message without key".to_string(),
                )
            })),
            Err(e) => out.push((0, e)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::records::{Compression, Record, TimestampType};

    fn batch_of(kvs: &[(Option<&str>, Option<&str>)], compression: Compression) -> Vec<u8> {
        let records: Vec<Record> = kvs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 3,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: 1000 + i as i64,
                key: k.map(|s| Bytes::copy_from_slice(s.as_bytes())),
                value: v.map(|s| Bytes::copy_from_slice(s.as_bytes())),
                headers: Default::default(),
            })
            .collect();
        batch::encode_batch(&records, compression).unwrap().to_vec()
    }

    #[test]
    fn rebuilt_batches_keep_offsets_and_decode_with_every_codec() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let whole = batch_of(
                &[
                    (Some("a"), Some("1")),
                    (Some("b"), None),
                    (None, Some("3")),
                    (Some("a"), Some("4")),
                ],
                c,
            );
            let b = body(&whole).unwrap();
            let recs = parse(&b, 4, 3).unwrap();
            assert_eq!(recs.len(), 4);
            assert_eq!(recs[1].key, Some(&b"b"[..]));
            assert!(recs[1].value_is_null && !recs[0].value_is_null);
            assert_eq!(recs[2].key, None);
            assert_eq!(recs[3].offset_delta, 3);
            let kept = [recs[1], recs[3]];
            let out = rebuild(&whole, &kept).unwrap();
            assert!(batch::crc_ok(&out));
            let p = batch::BatchPrefix::parse(&out).unwrap();
            assert_eq!((p.len, p.last_offset_delta), (out.len(), 3));
            // Decoded by an independent reader: the two records at their own offsets.
            let mut bytes = Bytes::from(out);
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).unwrap();
            let got: Vec<(i64, i64, Option<Bytes>)> = set
                .records
                .iter()
                .map(|r| (r.offset, r.timestamp, r.value.clone()))
                .collect();
            assert_eq!(
                got,
                vec![(1, 1001, None), (3, 1003, Some(Bytes::from_static(b"4")))],
                "{c:?}"
            );
        }
    }

    #[test]
    fn bad_bodies_are_refused() {
        let whole = batch_of(&[(Some("k"), Some("v"))], Compression::None);
        let b = body(&whole).unwrap();
        assert!(parse(&b, 2, 1).is_err(), "fewer records than counted");
        assert!(parse(&b[..b.len() - 1], 1, 0).is_err(), "a cut record");
        let mut long = b.clone();
        long.push(0);
        assert!(parse(&long, 1, 0).is_err(), "bytes after the records");
        let two = batch_of(
            &[(Some("a"), Some("1")), (Some("b"), Some("2"))],
            Compression::None,
        );
        let b2 = body(&two).unwrap();
        assert!(parse(&b2, 2, 0).is_err(), "an offset delta past the last");
        // A header's count is a client's number: a huge one is an error, not an allocation.
        assert!(parse(&b2, i32::MAX, i32::MAX).is_err());
        // A compression bomb: 200 MB of zeros in a few hundred KB of zstd.
        let zeros = vec![0u8; 200 << 20];
        let z = zstd::bulk::compress(&zeros, 19).unwrap();
        let mut bomb = two[..batch::HEADER_BYTES].to_vec();
        bomb[batch::OFF_ATTRIBUTES + 1] = ZSTD as u8;
        bomb.extend_from_slice(&z);
        let e = body(&bomb).unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }

    #[test]
    fn recompressed_batches_hold_the_same_records() {
        let whole = batch_of(
            &[(Some("a"), Some("1")), (None, Some("2"))],
            Compression::Gzip,
        );
        for target in [NONE, SNAPPY, LZ4, ZSTD, GZIP] {
            let out = recompress(&whole, target).unwrap();
            assert!(batch::crc_ok(&out));
            assert_eq!(codec(&out), target);
            let mut bytes = Bytes::from(out);
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).unwrap();
            let got: Vec<_> = set
                .records
                .iter()
                .map(|r| (r.offset, r.value.clone()))
                .collect();
            assert_eq!(
                got,
                vec![(0, Some(Bytes::from("1"))), (1, Some(Bytes::from("2")))]
            );
        }
        assert_eq!(codec_named("producer"), None);
    }

    #[test]
    fn keyless_records_are_found_per_batch() {
        let good = batch_of(&[(Some("k"), Some("v"))], Compression::None);
        let bad = batch_of(
            &[(Some("k"), Some("v")), (None, Some("v"))],
            Compression::Lz4,
        );
        let mut set = good.clone();
        set.extend_from_slice(&bad);
        let infos = batch::validate_produce(&set, usize::MAX).unwrap();
        let errs = keyless_records(&set, &infos);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, 1);
    }
}
