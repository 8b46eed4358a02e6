//! Committed offsets as records of `__consumer_offsets`, in Kafka's layout:
//! key v1 = `i16 1, string group, string topic, i32 partition`;
//! value v3 = `i16 3, i64 offset, i32 leader_epoch, string metadata, i64 commit_timestamp`;
//! a null value deletes the commit.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::RecordBatchDecoder;

#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

pub type OffsetKey = (String, String, i32);

pub(crate) fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

pub(crate) fn get_str(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let n = b.get_i16();
    if n < 0 || b.remaining() < n as usize {
        return None;
    }
    String::from_utf8(b.split_to(n as usize).to_vec()).ok()
}

pub fn encode_key(k: &OffsetKey) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(1);
    put_str(&mut b, &k.0);
    put_str(&mut b, &k.1);
    b.put_i32(k.2);
    b.freeze()
}

pub fn encode_value(c: &Committed) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    b.put_i64(c.offset);
    b.put_i32(c.leader_epoch);
    put_str(&mut b, &c.metadata);
    b.put_i64(c.commit_timestamp);
    b.freeze()
}

pub fn decode_key(mut b: Bytes) -> Option<OffsetKey> {
    if b.remaining() < 2 {
        return None;
    }
    let version = b.get_i16();
    if version > 1 {
        return None; // group metadata records (v2) and newer kinds are not offset commits
    }
    let g = get_str(&mut b)?;
    let t = get_str(&mut b)?;
    if b.remaining() < 4 {
        return None;
    }
    Some((g, t, b.get_i32()))
}

pub fn decode_value(mut b: Bytes) -> Option<Committed> {
    if b.remaining() < 10 {
        return None;
    }
    let version = b.get_i16();
    let offset = b.get_i64();
    let leader_epoch = if version >= 3 && b.remaining() >= 4 {
        b.get_i32()
    } else {
        -1
    };
    let metadata = get_str(&mut b)?;
    let commit_timestamp = if b.remaining() >= 8 { b.get_i64() } else { -1 };
    Some(Committed {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
    })
}

/// A record batch (magic 2, uncompressed) of commits; `None` values are deletions. With a
/// producer, the batch belongs to that producer's transaction (TxnOffsetCommit).
pub fn build_batch(
    entries: &[(OffsetKey, Option<Committed>)],
    now_ms: i64,
    producer: Option<(i64, i16)>,
) -> Bytes {
    let kvs = entries
        .iter()
        .map(|(k, v)| (Some(encode_key(k)), v.as_ref().map(encode_value)))
        .collect::<Vec<_>>();
    crate::protocol::batch::encode_records(&kvs, now_ms, producer)
}

/// The commits in stored batches, in order.
pub fn parse_batch(batch: &[u8]) -> Vec<(OffsetKey, Option<Committed>)> {
    let mut b = Bytes::copy_from_slice(batch);
    let Ok(sets) = RecordBatchDecoder::decode_all(&mut b) else {
        return Vec::new();
    };
    sets.into_iter()
        .flat_map(|s| s.records)
        .filter(|r| !r.control)
        .filter_map(|r| {
            let k = decode_key(r.key?)?;
            let v = match r.value {
                None => None,
                Some(v) => Some(decode_value(v)?),
            };
            Some((k, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::validate_produce;

    #[test]
    fn batch_round_trip_and_is_a_valid_produce_batch() {
        let c = Committed {
            offset: 42,
            leader_epoch: 0,
            metadata: "meta".into(),
            commit_timestamp: 7,
        };
        let entries = vec![
            (("g".to_string(), "t".to_string(), 3), Some(c.clone())),
            (("g".to_string(), "u".to_string(), 0), None),
        ];
        let b = build_batch(&entries, 1000, None);
        // The encoder may split the set in several batches; each must pass produce validation.
        assert!(!validate_produce(&b, 1 << 20).unwrap().is_empty());
        assert_eq!(parse_batch(&b), entries);
    }
}
