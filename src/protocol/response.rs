//! What a handler gives a connection: a response frame as pieces (memory, or file ranges the
//! connection sends by sendfile or copy), nothing (acks=0), or a protocol error that closes the
//! connection. Lives in `protocol` so net and handler both point down to it.

use bytes::Bytes;
use glommio::io::BufferedFile;
use std::rc::Rc;

/// A piece of a response frame: bytes in memory, or a file range sent by sendfile (zero-copy,
/// from the page cache) or read-and-write (copy path); see `net::file_send`.
pub enum Piece {
    Bytes(Bytes),
    File {
        file: Rc<BufferedFile>,
        pos: u64,
        len: usize,
        /// Bytes of the file written when it was read: how far a read-ahead may go.
        written: u64,
    },
}

/// Writes `ms` as the throttle_time_ms of a Fetch or Produce response frame (quotas learn
/// the request's cost only after its handler built the answer). Other responses are left.
pub fn set_throttle(
    r: &mut Response,
    api_key: kafka_protocol::messages::ApiKey,
    version: i16,
    ms: i32,
) {
    let Response::Frame(pieces) = r else { return };
    let in_first = api_key == kafka_protocol::messages::ApiKey::Fetch || pieces.len() == 1;
    let Some(Piece::Bytes(first)) = pieces.first_mut() else {
        return;
    };
    let Some(at) = throttle_offset(api_key, version, first.len())
        .filter(|at| in_first && at + 4 <= first.len())
    else {
        return;
    };
    let mut b = bytes::BytesMut::from(&first[..]);
    b[at..at + 4].copy_from_slice(&ms.to_be_bytes());
    *first = b.freeze();
}

impl Piece {
    pub fn len(&self) -> usize {
        match self {
            Piece::Bytes(b) => b.len(),
            Piece::File { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where throttle_time_ms sits in a whole response frame of `api_key` at `version` (size
/// prefix included) `frame_len` bytes long, for the responses quotas report in: Fetch (after
/// the header) and Produce (at the end, before v9's tagged fields).
pub fn throttle_offset(
    api_key: kafka_protocol::messages::ApiKey,
    version: i16,
    frame_len: usize,
) -> Option<usize> {
    use kafka_protocol::messages::ApiKey;
    match api_key {
        ApiKey::Fetch => Some(if version >= 12 { 9 } else { 8 }),
        ApiKey::Produce if version >= 1 => frame_len.checked_sub(if version >= 9 { 5 } else { 4 }),
        _ => None,
    }
}

/// What a handler gives the connection's writer.
pub enum Response {
    /// A whole response frame as pieces (the first starts with the size prefix).
    Frame(Vec<Piece>),
    /// Nothing goes back (produce with acks=0).
    Nothing,
    /// The request was invalid at the protocol level: close the connection after the responses
    /// before it, as Kafka does.
    Close(String),
    /// This response, then close the connection (a failed SASL authentication: the client
    /// hears why before the connection goes).
    Last(Vec<Piece>, String),
}
