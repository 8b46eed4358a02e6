//! The cluster: several brokers under a Raft metadata quorum (openraft 0.10 on a glommio
//! runtime adapter). The quorum's log holds every change to the cluster metadata
//! (`state::Command`); each node applies it to its `state::ClusterState` and serves from an
//! immutable image of it (`metadata::ClusterMeta`), replaced on every shard when the log moves.
//!
//! Layout: `rt` (the runtime adapter: openraft's `single-threaded` feature, so nothing it
//! spawns has to be `Send`), `log_store` (the Raft log and vote on disk), `state` (the
//! metadata and its pure apply), `state_machine` (snapshots, recovery), `network` (RPCs over
//! TCP), `node` (one node: the Raft member, membership, the active controller's duties). A
//! node's Raft state belongs to shard 0; other shards see only images.
//!
//! Invariants: a vote is durable before `save_vote` returns, and an appended entry is durable
//! before openraft is told it is flushed, which is what makes a vote or an acknowledgement
//! mean anything after a crash. Apply is deterministic: placement is decided inside it.

pub mod broker_client;
pub mod log_store;
pub mod network;
pub mod node;
pub mod rt;
pub mod state;
pub mod state_machine;

pub use log_store::LogStore;
pub use rt::GlommioRuntime;

openraft::declare_raft_types!(
    /// Flumen's Raft types: metadata commands in, replies out, u64 node ids.
    pub TypeConfig:
        D = state::Command,
        R = state::Reply,
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = rt::GlommioRuntime,
);

pub type SnapshotData = std::io::Cursor<Vec<u8>>;
pub type Raft = openraft::Raft<TypeConfig, std::rc::Rc<state_machine::StateMachineStore>>;
pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;

/// Runs `fut` with a deadline; TimedOut when it passes.
pub async fn deadline<T>(
    d: std::time::Duration,
    fut: impl std::future::Future<Output = T>,
) -> std::io::Result<T> {
    use openraft::AsyncRuntime;
    GlommioRuntime::timeout(d, fut)
        .await
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::TimedOut, e.to_string()))
}
