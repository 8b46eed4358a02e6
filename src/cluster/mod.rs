//! The metadata quorum: Raft (openraft 0.10) over the brokers that hold the cluster metadata.
//!
//! This is the foundation only: `rt` runs openraft on glommio (openraft's `single-threaded`
//! feature, so nothing it spawns has to be `Send`), and `log_store` keeps the Raft log and vote
//! on disk. A node's Raft state belongs to one shard (shard 0, next to the controller); other
//! shards never touch it.
//!
//! Invariants: a vote is durable before `save_vote` returns, and an appended entry is durable
//! before openraft is told it is flushed. Both are what make a Raft vote or an acknowledgement
//! mean anything after a crash.

pub mod log_store;
pub mod rt;

pub use log_store::LogStore;
pub use rt::GlommioRuntime;
