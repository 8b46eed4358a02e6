//! The log: partitions made of segments, each partition owned by exactly one shard.
//!
//! Record batches are stored byte-for-byte as produced (magic v2) with the broker's base offset
//! written in; files are written with O_DIRECT in block-aligned group commits and read through
//! the page cache (splice to sockets). Recovery validates every batch after the last index
//! entry of the newest segment and cuts a torn tail; older segments open lazily.

pub mod disk;
pub mod partition;
pub mod producers;
pub mod segment;

pub use disk::Faults;
pub use partition::{Chunk, LogConfig, Partition, ReadResult, TailCache};
pub use segment::Segment;
