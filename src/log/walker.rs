//! The one walk over stored record batches: recovery's validation scan, the producer-state
//! rebuild, fetch reads and timestamp lookups all iterate batch headers through it.
//!
//! `BatchWalk` walks one segment file from a batch boundary up to a byte limit (`written_bytes`
//! for reads, the file size for recovery). `LogWalk` chains the walks of a run of segments,
//! loading each segment's indexes and starting each walk where the index says the wanted offset
//! or timestamp is. `batches_in` is the same rule over bytes already in memory.
//!
//! Invariants: a batch is yielded only when its prefix parses (`BatchPrefix::parse`: magic 2,
//! a length that holds a whole header) and it ends at or below the limit; the walk of a segment
//! stops at the first position that holds no such batch (preallocated zeros, a torn tail,
//! garbage). Yielded batches are back to back: each starts where the previous one ended.
//! Anything beyond framing (CRC, contiguous offsets) is the caller's to check.

use super::segment::{self, Segment};
use crate::protocol::batch::{self, BatchPrefix};
use crate::protocol::errors::KafkaError;
use glommio::io::BufferedFile;
use std::rc::Rc;

/// How much of a segment is read at once while walking headers, so walking small batches is
/// not a read per batch.
const WINDOW_BYTES: usize = 64 * 1024;

/// One batch found by a walk: where it starts in its segment file and its header prefix.
#[derive(Debug, Clone, Copy)]
pub struct WalkedBatch {
    /// File position of the batch's first byte.
    pub pos: u64,
    /// The parsed start of its header (offsets, length).
    pub prefix: BatchPrefix,
}

impl WalkedBatch {
    /// File position just past the batch.
    pub fn end(&self) -> u64 {
        self.pos + self.prefix.len as u64
    }
}

/// The batches of one segment file, from a batch boundary up to a byte limit.
pub struct BatchWalk {
    reader: Rc<BufferedFile>,
    /// Position of the next batch.
    pos: u64,
    limit: u64,
    /// Bytes of the file from `window_pos` on.
    window: Vec<u8>,
    window_pos: u64,
}

impl BatchWalk {
    /// A walk of the file behind `reader` from `pos` (a batch start) to `limit`.
    pub fn new(reader: Rc<BufferedFile>, pos: u64, limit: u64) -> BatchWalk {
        BatchWalk {
            reader,
            pos,
            limit,
            window: Vec::new(),
            window_pos: pos,
        }
    }

    /// The next whole batch below the limit, or None where the walk ends. The walk moves past
    /// the batch returned; its header (`header`) and bytes (`whole`) stay readable until the
    /// next call.
    pub async fn next(&mut self) -> Result<Option<WalkedBatch>, KafkaError> {
        let pos = self.pos;
        let header = batch::HEADER_BYTES as u64;
        if pos + header > self.limit {
            return Ok(None);
        }
        if pos < self.window_pos || pos + header > self.window_pos + self.window.len() as u64 {
            self.fill(pos, WINDOW_BYTES).await?;
        }
        let at = (pos - self.window_pos) as usize;
        let Some(prefix) = BatchPrefix::parse(&self.window[at..]) else {
            return Ok(None);
        };
        let found = WalkedBatch { pos, prefix };
        if found.end() > self.limit {
            return Ok(None);
        }
        self.pos = found.end();
        Ok(Some(found))
    }

    /// The first `batch::HEADER_BYTES` of `b`, the batch `next` just returned (or fewer when
    /// the file was shorter than its index promised).
    pub fn header(&self, b: &WalkedBatch) -> &[u8] {
        let at = (b.pos - self.window_pos) as usize;
        let end = (at + batch::HEADER_BYTES).min(self.window.len());
        &self.window[at.min(end)..end]
    }

    /// All bytes of `b`, the batch `next` just returned; shorter than the batch only when the
    /// file is shorter than its limit said (a caller's check).
    pub async fn whole(&mut self, b: &WalkedBatch) -> Result<&[u8], KafkaError> {
        let len = b.prefix.len;
        if b.pos < self.window_pos || b.end() > self.window_pos + self.window.len() as u64 {
            self.fill(b.pos, len.max(WINDOW_BYTES)).await?;
        }
        let at = (b.pos - self.window_pos) as usize;
        let end = (at + len).min(self.window.len());
        Ok(&self.window[at.min(end)..end])
    }

    /// Reads up to `want` bytes at `pos`, never past the limit.
    async fn fill(&mut self, pos: u64, want: usize) -> Result<(), KafkaError> {
        let want = (self.limit - pos).min(want as u64) as usize;
        self.window = segment::read_at(&self.reader, pos, want).await?;
        self.window_pos = pos;
        Ok(())
    }
}

/// Where each segment's walk in a `LogWalk` starts.
#[derive(Debug, Clone, Copy)]
pub enum WalkFrom {
    /// At the last index entry at or below this offset (the segment's start for later ones).
    Offset(i64),
    /// At the batch the time index gives for this timestamp; segments whose batches are all
    /// older are skipped.
    Timestamp(i64),
}

/// The batches of a run of segments, one segment at a time, each up to its `written_bytes`.
pub struct LogWalk {
    segments: std::vec::IntoIter<Rc<Segment>>,
    from: WalkFrom,
    index_interval_bytes: u64,
}

impl LogWalk {
    /// A walk of `segments` (in offset order) from `from`; `index_interval_bytes` is used to
    /// rebuild an old segment's missing index.
    pub fn new(segments: Vec<Rc<Segment>>, from: WalkFrom, index_interval_bytes: u64) -> LogWalk {
        LogWalk {
            segments: segments.into_iter(),
            from,
            index_interval_bytes,
        }
    }

    /// The next segment, its indexes loaded, with the walk of its batches.
    pub async fn next_segment(&mut self) -> Result<Option<(Rc<Segment>, BatchWalk)>, KafkaError> {
        for seg in self.segments.by_ref() {
            seg.load_indexes(self.index_interval_bytes).await?;
            let pos = match self.from {
                WalkFrom::Offset(offset) => seg.lookup(offset),
                WalkFrom::Timestamp(ts) => {
                    if seg.max_timestamp.get() < ts {
                        continue;
                    }
                    seg.lookup(seg.lookup_time(ts))
                }
            };
            // After load_indexes: rebuilding an index may cut the segment's end.
            let written = seg.written_bytes.get();
            let reader = seg.reader().await?;
            return Ok(Some((seg, BatchWalk::new(reader, pos, written))));
        }
        Ok(None)
    }
}

/// The whole batches at the start of `bytes` with their prefixes, back to back, up to the first
/// position that does not hold one: `BatchWalk`'s rule over bytes already in memory.
pub fn batches_in(bytes: &[u8]) -> impl Iterator<Item = (BatchPrefix, &[u8])> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let rest = &bytes[at..];
        let prefix = BatchPrefix::parse(rest)?;
        let whole = rest.get(..prefix.len)?;
        at += prefix.len;
        Some((prefix, whole))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::tests::make_batch;

    fn two_batches_then(tail: &[u8]) -> Vec<u8> {
        let mut bytes = make_batch(3, b"abc");
        bytes.extend(make_batch(1, b"z"));
        bytes.extend_from_slice(tail);
        bytes
    }

    #[test]
    fn in_memory_walk_stops_at_zeros_and_at_a_cut_batch() {
        let first_len = make_batch(3, b"abc").len();
        for tail in [&[0u8; 100][..], &make_batch(2, b"cut")[..40]] {
            let bytes = two_batches_then(tail);
            let found: Vec<(usize, usize)> = batches_in(&bytes)
                .map(|(p, whole)| (p.last_offset_delta as usize, whole.len()))
                .collect();
            assert_eq!(found, vec![(2, first_len), (0, first_len - 2)]);
        }
    }

    #[test]
    fn file_walk_yields_what_the_in_memory_walk_does_up_to_the_limit() {
        let bytes = two_batches_then(&make_batch(2, b"cut")[..40]);
        let expect: Vec<Vec<u8>> = batches_in(&bytes).map(|(_, w)| w.to_vec()).collect();
        let dir = std::env::temp_dir().join(format!("flumen-walker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("walk.log");
        std::fs::write(&path, &bytes).unwrap();
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            let reader = Rc::new(BufferedFile::open(&path).await.unwrap());
            // The whole file, then a limit that cuts the second batch.
            for (limit, n) in [(bytes.len() as u64, 2), (expect[0].len() as u64 + 40, 1)] {
                let mut walk = BatchWalk::new(reader.clone(), 0, limit);
                let mut got = Vec::new();
                while let Some(b) = walk.next().await.unwrap() {
                    assert_eq!(walk.header(&b), &expect[got.len()][..batch::HEADER_BYTES]);
                    got.push(walk.whole(&b).await.unwrap().to_vec());
                }
                assert_eq!(got, expect[..n]);
            }
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
