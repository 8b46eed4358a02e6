//! Helpers shared by the log's integration tests.

use flumen::log::Chunk;

/// The bytes a read returned, whether from the tail cache or a segment file, in order.
pub async fn chunk_bytes(chunks: Vec<Chunk>) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        match c {
            Chunk::Mem(b) => out.extend_from_slice(&b),
            Chunk::File { seg, pos, len } => {
                let f = seg.reader().await.unwrap();
                out.extend_from_slice(&f.read_at(pos, len).await.unwrap());
            }
        }
    }
    out
}
