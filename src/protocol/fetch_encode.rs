//! Fetch response encoder for versions 4..=12, written by hand because the record bytes of a
//! partition may be a file range sent to the socket (sendfile or copy): the response is a list
//! of pieces, some in memory and some on disk, and only their lengths are needed to frame it.

use crate::protocol::Piece;
use bytes::{BufMut, Bytes, BytesMut};

pub struct PartitionData {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// (producer id, first offset) of aborted transactions (read_committed).
    pub aborted: Vec<(i64, i64)>,
    /// Whole record batches, in offset order.
    pub records: Vec<Piece>,
}

pub struct TopicData {
    pub name: String,
    pub partitions: Vec<PartitionData>,
}

fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_array_len(buf: &mut BytesMut, flexible: bool, n: usize) {
    if flexible {
        put_uvarint(buf, n as u32 + 1);
    } else {
        buf.put_i32(n as i32);
    }
}

fn put_string(buf: &mut BytesMut, flexible: bool, s: &str) {
    if flexible {
        put_uvarint(buf, s.len() as u32 + 1);
    } else {
        buf.put_i16(s.len() as i16);
    }
    buf.put_slice(s.as_bytes());
}

/// Encodes a Fetch response of `version` as pieces; the first piece starts with the frame size.
pub fn encode(
    version: i16,
    correlation_id: i32,
    throttle_ms: i32,
    error_code: i16,
    session_id: i32,
    topics: Vec<TopicData>,
) -> Vec<Piece> {
    assert!(
        (4..=12).contains(&version),
        "fetch version {version} not encodable"
    );
    let flexible = version >= 12;
    let mut pieces: Vec<Piece> = Vec::new();
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0); // frame size, patched below
    buf.put_i32(correlation_id);
    if flexible {
        buf.put_u8(0); // response header v1: no tagged fields
    }
    buf.put_i32(throttle_ms);
    if version >= 7 {
        buf.put_i16(error_code);
        buf.put_i32(session_id);
    }
    put_array_len(&mut buf, flexible, topics.len());
    for topic in topics {
        put_string(&mut buf, flexible, &topic.name);
        put_array_len(&mut buf, flexible, topic.partitions.len());
        for p in topic.partitions {
            buf.put_i32(p.partition);
            buf.put_i16(p.error_code);
            buf.put_i64(p.high_watermark);
            buf.put_i64(p.last_stable_offset);
            if version >= 5 {
                buf.put_i64(p.log_start_offset);
            }
            put_array_len(&mut buf, flexible, p.aborted.len());
            for (pid, first) in &p.aborted {
                buf.put_i64(*pid);
                buf.put_i64(*first);
                if flexible {
                    buf.put_u8(0); // tagged fields
                }
            }
            if version >= 11 {
                buf.put_i32(-1); // preferred_read_replica
            }
            let records_len: usize = p.records.iter().map(Piece::len).sum();
            if flexible {
                put_uvarint(&mut buf, records_len as u32 + 1);
            } else {
                buf.put_i32(records_len as i32);
            }
            if records_len > 0 {
                pieces.push(Piece::Bytes(buf.split().freeze()));
                pieces.extend(p.records);
            }
            if flexible {
                buf.put_u8(0); // partition tagged fields
            }
        }
        if flexible {
            buf.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        buf.put_u8(0); // response tagged fields
    }
    pieces.push(Piece::Bytes(buf.freeze()));
    let total: usize = pieces.iter().map(Piece::len).sum();
    let frame_len = (total - 4) as i32;
    // The first piece always starts with the size prefix.
    if let Some(Piece::Bytes(first)) = pieces.first_mut() {
        let mut head = BytesMut::from(&first[..]);
        head[..4].copy_from_slice(&frame_len.to_be_bytes());
        *first = head.freeze();
    }
    pieces
}

/// An error response with every requested partition carrying `error_code` at the top level.
pub fn encode_empty(version: i16, correlation_id: i32, throttle_ms: i32, error_code: i16) -> Bytes {
    let pieces = encode(
        version,
        correlation_id,
        throttle_ms,
        error_code,
        0,
        Vec::new(),
    );
    let mut out = BytesMut::new();
    for p in pieces {
        match p {
            Piece::Bytes(b) => out.put_slice(&b),
            Piece::File { .. } => unreachable!("empty response has no file pieces"),
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Decodable;

    fn flatten(pieces: Vec<Piece>) -> Bytes {
        let mut out = BytesMut::new();
        for p in pieces {
            match p {
                Piece::Bytes(b) => out.put_slice(&b),
                Piece::File { .. } => panic!("no files here"),
            }
        }
        out.freeze()
    }

    /// The hand-written encoder must agree with the generated decoder at every version.
    #[test]
    fn decodes_with_generated_codec_at_every_version() {
        for version in 4..=12i16 {
            let topics = vec![TopicData {
                name: "events".into(),
                partitions: vec![
                    PartitionData {
                        partition: 3,
                        error_code: 0,
                        high_watermark: 42,
                        last_stable_offset: 42,
                        aborted: vec![(7, 40)],
                        log_start_offset: 7,
                        records: vec![
                            Piece::Bytes(Bytes::from_static(b"abc")),
                            Piece::Bytes(Bytes::from_static(b"defg")),
                        ],
                    },
                    PartitionData {
                        partition: 4,
                        error_code: 1,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        aborted: Vec::new(),
                        log_start_offset: -1,
                        records: vec![],
                    },
                ],
            }];
            let mut frame = flatten(encode(version, 99, 0, 0, 0, topics));
            let size = i32::from_be_bytes(frame[..4].try_into().unwrap());
            assert_eq!(size as usize, frame.len() - 4);
            let _ = frame.split_to(4);
            let corr = i32::from_be_bytes(frame[..4].try_into().unwrap());
            assert_eq!(corr, 99);
            let _ = frame.split_to(if version >= 12 { 5 } else { 4 });
            let resp = FetchResponse::decode(&mut frame, version).unwrap();
            assert_eq!(frame.len(), 0, "v{version}: trailing bytes");
            let t = &resp.responses[0];
            assert_eq!(t.topic.0.as_str(), "events");
            assert_eq!(t.partitions[0].partition_index, 3);
            let ab = t.partitions[0].aborted_transactions.as_ref().unwrap();
            assert_eq!((ab[0].producer_id.0, ab[0].first_offset), (7, 40));
            assert_eq!(t.partitions[0].high_watermark, 42);
            assert_eq!(t.partitions[0].records.as_deref(), Some(&b"abcdefg"[..]));
            if version >= 5 {
                assert_eq!(t.partitions[0].log_start_offset, 7);
            }
            assert_eq!(t.partitions[1].error_code, 1);
            assert_eq!(t.partitions[1].records.as_deref(), Some(&b""[..]));
        }
    }
}
