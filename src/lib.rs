//! Flumen: a Kafka-compatible message broker, thread-per-core and shared-nothing on io_uring.
//!
//! # Layout
//! Drawn from the imports, the layers read top-down with no circle:
//! net → handler → coordinator / replication → controller → cluster → partition_manager →
//! metadata → shard → log → protocol.
//! - `server`    process start-up and shutdown: one pinned glommio executor per shard; a
//!   panic anywhere stops the whole process (a bug is never a partial outage).
//! - `broker`    one shard's services, wired at start-up: what connections and handlers see.
//! - `net`       sockets and framing: per-shard SO_REUSEPORT listeners, ordered responses.
//! - `handler`   one module per Kafka API family; splits requests by owning shard and merges.
//! - `coordinator` the group coordinator (`group`: membership and committed offsets in
//!   `__consumer_offsets`) and the transaction coordinator (`txn`, `__transaction_state`), side
//!   by side; one instance per shard for the keys whose internal partition it owns.
//! - `replication` per shard, one fetcher per remote leader for the partitions it follows
//!   (Fetch with a replica id, OffsetForLeaderEpoch truncation), and the leaders' ISR changes
//!   committed through the controller.
//! - `controller` the one writer of the metadata (shard 0): topics, placement, producer ids;
//!   in a cluster it commits through the quorum and installs each new image on every shard.
//! - `cluster`   the metadata quorum (shard 0): openraft on glommio (`rt`), the Raft log and
//!   vote on disk (`log_store`), the metadata and its deterministic apply (`state`),
//!   snapshots (`state_machine`), RPCs (`network`), membership and fencing (`node`).
//! - `partition_manager` the only way to a partition: typed calls that run on the owning shard
//!   (locally or over the mesh); owns each replica's role, the high watermark over the ISR,
//!   acks=all and min.insync.replicas, and the leader epoch.
//! - `metadata`  the immutable metadata image every shard holds, internal topic names, topic
//!   configs.
//! - `security`  listeners and their security protocols, a connection's session (SASL PLAIN
//!   and SCRAM, its principal), the SCRAM credentials the metadata keeps.
//! - `shard`     the executor and the mesh only: `invoke_on(shard, closure)` and the per-shard
//!   service registry (`register`/`local`), knowing none of the services.
//! - `log`       partitions and segments: O_DIRECT group-commit appends, indexes, reads,
//!   retention, recovery. A partition belongs to exactly one shard.
//! - `protocol`  Kafka wire glue: versions, error codes, batch validation, Fetch encoding, the
//!   `Response` a handler gives a connection.
//! - `admin`     `flumen groups`, `topics` and `users` commands: a small blocking Kafka client
//!   (CLI only).
//! - `bench`, `tune`, `metrics`, `config`, `util`, `alloc`: the load generator, host tuning,
//!   Prometheus metrics, the TOML config and its limits, small single-threaded helpers and the
//!   clock seam (`util::clock`: the coordinators' time, a manual clock in their tests), the
//!   allocator.

pub mod admin;
pub mod alloc;
pub mod bench;
pub mod broker;
pub mod cluster;
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
pub mod replication;
pub mod security;
pub mod server;
pub mod shard;
pub mod tune;
pub mod util;
