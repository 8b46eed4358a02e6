//! The log: partitions made of segments, each partition owned by exactly one shard.
//!
//! Record batches are stored byte-for-byte as produced (magic v2) with the broker's base offset
//! written in; files are written with O_DIRECT in block-aligned group commits and read through
//! the page cache (sendfile to sockets). Recovery validates every batch after the last index
//! entry of the newest segment and cuts a torn tail; older segments open lazily.
//!
//! Rooms: `partition` (the struct, open/close, the facade), `appender` (append path, group
//! commit), `reader` (fetch reads, tail cache, offset lookups), `recovery` (start-up, producer
//! snapshots), `retention`, `cleaner` (log compaction and its crash-safe segment swap), `walker` (the one walk over stored batches), `segment` (one
//! `.log` with its indexes), `disk` (the system calls, and the simulated disk of the tests),
//! `producers` (idempotence and transaction state), `epochs` (the leader-epoch cache), `replica`
//! (a follower's replicated appends and truncation).

mod appender;
mod cleaner;
pub mod disk;
pub mod epochs;
pub mod partition;
pub mod producers;
mod reader;
mod recovery;
mod replica;
mod retention;
pub mod segment;
mod walker;

pub use appender::Appended;
pub use cleaner::{CleanStats, Throttle};
pub use disk::Faults;
pub use partition::{Chunk, LogConfig, Partition, ReadResult, TailCache};
pub use replica::{AppendedReplica, MAX_REPLICA_BATCH_BYTES};
pub use segment::Segment;
