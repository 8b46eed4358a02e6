//! What a handler gives a connection: a response frame as pieces (memory, or file ranges the
//! connection sends by splice or copy), nothing (acks=0), or a protocol error that closes the
//! connection. Lives in `protocol` so net and handler both point down to it.

use bytes::Bytes;
use glommio::io::BufferedFile;
use std::rc::Rc;

/// A piece of a response frame: bytes in memory, or a file range sent by splice (zero-copy)
/// or read-and-write (copy path).
pub enum Piece {
    Bytes(Bytes),
    File {
        file: Rc<BufferedFile>,
        pos: u64,
        len: usize,
    },
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
