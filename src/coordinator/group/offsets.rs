//! Committed offsets and group membership as records of `__consumer_offsets`, in Kafka's
//! layout:
//! - a commit: key v1 = `i16 1, string group, string topic, i32 partition`; value v3 =
//!   `i16 3, i64 offset, i32 leader_epoch, string metadata, i64 commit_timestamp`;
//! - a group: key v2 = `i16 2, string group`; value v3 = `i16 3, string protocol_type,
//!   i32 generation, nullable string protocol, nullable string leader, i64 state_timestamp,
//!   [member_id, nullable group_instance_id, client_id, client_host, i32 rebalance_timeout,
//!   i32 session_timeout, bytes subscription, bytes assignment]`.
//!
//! A null value deletes the commit or the group.

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

/// A group as its coordinator last stored it: what a coordinator that takes the group over
/// (the offsets partition's next leader, or this broker after a restart) resumes from, so the
/// members go on in their generation instead of rebalancing (as in Kafka).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupRecord {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberRecord>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemberRecord {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// One record of `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    Offset(OffsetKey, Option<Committed>),
    Group(String, Option<GroupRecord>),
}

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

fn put_nullable_str(b: &mut BytesMut, s: &Option<String>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}

fn get_nullable_str(b: &mut Bytes) -> Option<Option<String>> {
    if b.remaining() >= 2 && b.chunk()[..2] == [0xff, 0xff] {
        b.advance(2);
        return Some(None);
    }
    get_str(b).map(Some)
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

fn get_bytes(b: &mut Bytes) -> Option<Bytes> {
    if b.remaining() < 4 {
        return None;
    }
    let n = b.get_i32();
    if n < 0 {
        return Some(Bytes::new());
    }
    (b.remaining() >= n as usize).then(|| b.split_to(n as usize))
}

pub fn encode_group_key(group: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(2);
    put_str(&mut b, group);
    b.freeze()
}

pub fn encode_group_value(g: &GroupRecord) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    put_str(&mut b, &g.protocol_type);
    b.put_i32(g.generation);
    put_nullable_str(&mut b, &g.protocol);
    put_nullable_str(&mut b, &g.leader);
    b.put_i64(g.state_timestamp);
    b.put_i32(g.members.len() as i32);
    for m in &g.members {
        put_str(&mut b, &m.member_id);
        put_nullable_str(&mut b, &m.instance_id);
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

/// A group value of version 0 to 3 (Kafka's older ones lack some fields).
pub fn decode_group_value(mut b: Bytes) -> Option<GroupRecord> {
    if b.remaining() < 2 {
        return None;
    }
    let version = b.get_i16();
    let protocol_type = get_str(&mut b)?;
    if b.remaining() < 4 {
        return None;
    }
    let generation = b.get_i32();
    let protocol = get_nullable_str(&mut b)?;
    let leader = get_nullable_str(&mut b)?;
    let state_timestamp = if version >= 2 {
        (b.remaining() >= 8).then(|| b.get_i64())?
    } else {
        -1
    };
    if b.remaining() < 4 {
        return None;
    }
    let n = b.get_i32().max(0) as usize;
    let mut members = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let member_id = get_str(&mut b)?;
        let instance_id = if version >= 3 {
            get_nullable_str(&mut b)?
        } else {
            None
        };
        let client_id = get_str(&mut b)?;
        let client_host = get_str(&mut b)?;
        let rebalance_timeout_ms = if version >= 1 {
            (b.remaining() >= 4).then(|| b.get_i32())?
        } else {
            -1
        };
        let session_timeout_ms = (b.remaining() >= 4).then(|| b.get_i32())?;
        let rebalance_timeout_ms = if rebalance_timeout_ms < 0 {
            session_timeout_ms
        } else {
            rebalance_timeout_ms
        };
        members.push(MemberRecord {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription: get_bytes(&mut b)?,
            assignment: get_bytes(&mut b)?,
        });
    }
    Some(GroupRecord {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp,
        members,
    })
}

/// A record batch (magic 2, uncompressed) storing one group (`None`: deleting it).
pub fn build_group_batch(group: &str, g: Option<&GroupRecord>, now_ms: i64) -> Bytes {
    let kvs = vec![(Some(encode_group_key(group)), g.map(encode_group_value))];
    crate::protocol::batch::encode_records(&kvs, now_ms, None)
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

/// The commits and groups in stored batches, in order; records of other kinds (or that do
/// not decode) are left out.
pub fn parse_stored(batch: &[u8]) -> Vec<Stored> {
    let mut b = Bytes::copy_from_slice(batch);
    let Ok(sets) = RecordBatchDecoder::decode_all(&mut b) else {
        return Vec::new();
    };
    sets.into_iter()
        .flat_map(|s| s.records)
        .filter(|r| !r.control)
        .filter_map(|r| {
            let mut key = r.key?;
            if key.len() >= 2 && key[..2] == [0, 2] {
                key.advance(2);
                let g = get_str(&mut key)?;
                let v = match r.value {
                    None => None,
                    Some(v) => Some(decode_group_value(v)?),
                };
                return Some(Stored::Group(g, v));
            }
            let k = decode_key(key)?;
            let v = match r.value {
                None => None,
                Some(v) => Some(decode_value(v)?),
            };
            Some(Stored::Offset(k, v))
        })
        .collect()
}

/// The commits in stored batches, in order.
#[cfg(test)]
pub fn parse_batch(batch: &[u8]) -> Vec<(OffsetKey, Option<Committed>)> {
    parse_stored(batch)
        .into_iter()
        .filter_map(|s| match s {
            Stored::Offset(k, v) => Some((k, v)),
            Stored::Group(..) => None,
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

    #[test]
    fn group_records_round_trip_beside_commits() {
        let g = GroupRecord {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            state_timestamp: 1234,
            members: vec![
                MemberRecord {
                    member_id: "m-1".into(),
                    instance_id: Some("i-1".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 45_000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::from_static(b"assigned"),
                },
                MemberRecord {
                    member_id: "m-2".into(),
                    instance_id: None,
                    client_id: "".into(),
                    client_host: "/::1".into(),
                    rebalance_timeout_ms: 10,
                    session_timeout_ms: 6000,
                    subscription: Bytes::new(),
                    assignment: Bytes::new(),
                },
            ],
        };
        let b = build_group_batch("grp", Some(&g), 1000);
        assert!(!validate_produce(&b, 1 << 20).unwrap().is_empty());
        assert_eq!(parse_stored(&b), vec![Stored::Group("grp".into(), Some(g))]);
        let t = build_group_batch("grp", None, 1000);
        assert_eq!(parse_stored(&t), vec![Stored::Group("grp".into(), None)]);
        // Commits parse as before, and a group record is not taken for one.
        assert!(parse_batch(&b).is_empty());
        // A truncated value is left out, not misread.
        let v = encode_group_value(&GroupRecord {
            protocol_type: "consumer".into(),
            generation: 1,
            protocol: None,
            leader: None,
            state_timestamp: 0,
            members: Vec::new(),
        });
        assert!(decode_group_value(v.slice(..v.len() - 2)).is_none());
    }
}
