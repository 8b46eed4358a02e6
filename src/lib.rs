//! Flumen: a Kafka-compatible message broker, thread-per-core and shared-nothing on io_uring.
//!
//! # Layout
//! - `admin`    `flumen groups` commands: a small blocking Kafka client (CLI only).
//! - `server`   process start-up and shutdown: one pinned glommio executor per shard.
//! - `config`   the TOML config and its limits.
//! - `net`      sockets and framing: per-shard SO_REUSEPORT listeners, ordered responses.
//! - `protocol` Kafka wire glue: supported versions, error codes, batch validation, Fetch encoding.
//! - `handler`  one module per Kafka API family; splits requests by owning shard and merges.
//! - `shard`    the shard (owner of partitions, sockets, tail cache), the cross-shard mesh and
//!   the metadata (topics, placement) that shard 0 alone writes.
//! - `group`    consumer group coordinator and committed offsets (in `__consumer_offsets`),
//!   one per shard for the groups whose offsets partition it owns.
//! - `log`      partitions and segments: O_DIRECT group-commit appends, indexes, reads,
//!   retention, recovery. A partition belongs to exactly one shard.
//! - `util`     small single-threaded async helpers.

pub mod admin;
pub mod alloc;
pub mod bench;
pub mod broker;
pub mod config;
pub mod controller;
pub mod coordinator;
pub mod handler;
pub mod log;
pub mod metadata;
pub mod metrics;
pub mod net;
pub mod partition_manager;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod tune;
pub mod util;
