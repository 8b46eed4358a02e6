//! Sockets and framing: each shard accepts on its own SO_REUSEPORT listener, reads
//! size-prefixed request frames under the configured limits, runs each request as a task and
//! writes responses in request order (clients pipeline and match by order).

pub mod connection;

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
}
