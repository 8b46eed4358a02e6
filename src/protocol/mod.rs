//! Kafka wire-protocol glue: the versions Flumen implements, error codes, record-batch validation
//! and the hand-written Fetch response encoder (the one response whose record bytes may come
//! from a file and so cannot be built in memory).
//!
//! Requests are decoded with the `kafka-protocol` crate from the frame's `Bytes`, so produced
//! record batches stay zero-copy slices of the received frame.

pub mod batch;
pub mod client;
pub mod errors;
pub mod fetch_encode;
pub mod legacy;
pub mod records;
pub mod response;

pub use response::{Piece, Response};

/// A request frame at least this large is read into a buffer of exactly its size
/// (net::connection), and a produced batch at least this large is kept by the tail cache as
/// a slice of that buffer instead of a copy (log::appender): such a batch came in such a frame,
/// so a cached slice holds only its own request's bytes. Smaller batches are copied.
pub const OWN_BUFFER_MIN_BYTES: usize = 64 * 1024;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Why a request frame's header is not served.
#[derive(Debug)]
pub enum HeaderError {
    /// ApiVersions at a version Flumen does not know: answered in v0 form (Kafka's rule).
    UnsupportedApiVersions(i32),
    /// Anything else: the connection is closed with this reason.
    Refused(String),
}

/// Reads the request header off a frame (without its size prefix), leaving the body:
/// (API, version, correlation id, header). Unknown APIs and versions outside SUPPORTED_APIS
/// are refused before anything else is decoded.
pub fn parse_request_header(
    frame: &mut Bytes,
) -> Result<(ApiKey, i16, i32, RequestHeader), HeaderError> {
    if frame.len() < 8 {
        return Err(HeaderError::Refused(format!(
            "request frame of {} bytes has no header",
            frame.len()
        )));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api_key) = ApiKey::try_from(key) else {
        return Err(HeaderError::Refused(format!("unknown API key {key}")));
    };
    let Some((lo, hi)) = supported_range(api_key) else {
        return Err(HeaderError::Refused(format!(
            "API {api_key:?} (key {key}) is not implemented"
        )));
    };
    if version < lo || version > hi {
        if api_key == ApiKey::ApiVersions {
            return Err(HeaderError::UnsupportedApiVersions(correlation_id));
        }
        return Err(HeaderError::Refused(format!(
            "{api_key:?} v{version} is outside the supported range {lo}..={hi}"
        )));
    }
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(frame, header_version)
        .map_err(|e| HeaderError::Refused(format!("malformed request header: {e}")))?;
    Ok((api_key, version, correlation_id, header))
}

/// (API, lowest version, highest version) that Flumen implements. ApiVersions advertises exactly
/// this table, and the dispatcher refuses anything outside it.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 9), // v0-v2 answered UNSUPPORTED_VERSION, see handler::produce
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::OffsetForLeaderEpoch, 0, 4),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 0, 8), // v0-v1: protocol::legacy
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeConfigs, 0, 4), // v0: protocol::legacy
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
    // SaslHandshake v0 (raw SASL frames without Kafka headers after it) is refused by the
    // handler; it is listed because librdkafka before 2.2 looks for v0 before it uses
    // SaslHandshake v1 with SaslAuthenticate.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    // Between the brokers of a cluster (a single node closes the connection), as Kafka lists it.
    (ApiKey::WriteTxnMarkers, 0, 1),
];

pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, lo, hi)| (*lo, *hi))
}

/// Encodes a whole response frame: 4-byte size, response header, body.
pub fn encode_response<M: Encodable>(
    correlation_id: i32,
    header_version: i16,
    body: &M,
    version: i16,
) -> anyhow::Result<Bytes> {
    let body_len = body.compute_size(version)?;
    let header_len = if header_version >= 1 { 5 } else { 4 };
    let mut buf = BytesMut::with_capacity(4 + header_len + body_len);
    buf.put_i32((header_len + body_len) as i32);
    buf.put_i32(correlation_id);
    if header_version >= 1 {
        buf.put_u8(0); // no tagged fields in the header
    }
    body.encode(&mut buf, version)?;
    debug_assert_eq!(buf.len(), 4 + header_len + body_len);
    Ok(buf.freeze())
}
