//! The client side of the wire, shared by the CLI's blocking client (`admin`) and the brokers'
//! own calls to each other (`cluster::broker_client`): a request framed with its header, and a
//! response checked against the correlation id it answers.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// Largest response a client of ours accepts.
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// `req` as a whole frame (length prefix, header, body).
pub fn encode_request<R: Request>(
    req: &R,
    version: i16,
    correlation: i32,
    client_id: &str,
) -> anyhow::Result<BytesMut> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut body = BytesMut::new();
    header.encode(&mut body, R::header_version(version))?;
    req.encode(&mut body, version)?;
    let mut frame = BytesMut::with_capacity(body.len() + 4);
    frame.put_i32(body.len() as i32);
    frame.put_slice(&body);
    Ok(frame)
}

/// The length in a response's 4-byte prefix, refused when implausible.
pub fn response_len(prefix: [u8; 4]) -> anyhow::Result<usize> {
    let len = i32::from_be_bytes(prefix);
    if len < 4 || len as usize > MAX_RESPONSE_BYTES {
        anyhow::bail!("broker sent a response of {len} bytes");
    }
    Ok(len as usize)
}

/// Decodes a response body (after the length prefix), which must answer `correlation`.
pub fn decode_response<R: Request>(
    mut buf: Bytes,
    version: i16,
    correlation: i32,
) -> anyhow::Result<R::Response> {
    let hv = <R::Response as HeaderVersion>::header_version(version);
    let rh = ResponseHeader::decode(&mut buf, hv)?;
    if rh.correlation_id != correlation {
        anyhow::bail!("correlation id {} != {}", rh.correlation_id, correlation);
    }
    <R::Response as Decodable>::decode(&mut buf, version)
}
