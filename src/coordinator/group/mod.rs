//! Consumer group coordinator (Kafka's classic group protocol).
//!
//! The coordinator of group `g` runs on the shard that owns partition `hash(g) % P` of the
//! internal `__consumer_offsets` topic; every other shard forwards group requests there over the
//! mesh. Committed offsets are records in that partition (Kafka's key v1 / value v3 layout), so
//! they survive restarts and kill -9 like any data; the shard replays them when it opens the
//! partition. Group membership itself is kept in memory: after a broker restart members rejoin
//! (their heartbeats get UNKNOWN_MEMBER_ID), as after a Kafka coordinator move.
//!
//! Kafka keeps the two apart (GroupCoordinator, GroupMetadataManager), and so does this:
//! - `membership`   the group state machine (Empty, PreparingRebalance, CompletingRebalance,
//!   Stable, Dead): join, sync, heartbeat, leave, static members, the deadlines of `tick`.
//! - `offset_store` committed offsets: the cache, transactional offsets waiting for their
//!   marker, and every write to `__consumer_offsets`.
//! - `offsets`      the record format; `types` the requests and answers.
//!
//! The `Coordinator` here only routes a request to them and joins the two where a request
//! needs both (a commit is checked by membership, then stored). Invariant: membership never
//! writes to the log, the offset store never decides who is a member. Every time they read
//! comes from the clock the coordinator is given.

pub mod offsets;

mod membership;
mod offset_store;
mod types;

#[cfg(test)]
mod tests;

pub use crate::metadata::OFFSETS_TOPIC;
pub use membership::GroupState;
pub use types::{
    CommitRequest, DescribeOut, FetchOffsetsRequest, JoinOut, JoinRequest, LeaveOut,
    MemberDescription, MemberRef, OffsetCommitEntry, OffsetRow, SyncOut, SyncRequest,
};

use crate::config::Config;
use crate::metadata::MetadataImage;
use crate::partition_manager::PartitionManager;
use crate::protocol::errors::ErrorCode;
use crate::shard::{local, Shard};
use crate::util::Clock;
use membership::Membership;
use offset_store::OffsetStore;
use offsets::GroupRecord;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Group deadlines (sessions, rebalances) are checked this often.
const GROUP_TICK_MS: u64 = 100;
/// Committed offsets of empty groups are checked for expiry every this many ticks (a minute).
const EXPIRE_EVERY_TICKS: u64 = 600;

/// The coordinator of the groups whose offsets partition this shard owns.
pub struct Coordinator {
    shard: Rc<Shard>,
    image: Rc<MetadataImage>,
    members: Membership,
    offsets: OffsetStore,
    /// `__consumer_offsets` partitions whose state is being loaded: their groups answer
    /// COORDINATOR_LOAD_IN_PROGRESS meanwhile.
    loading: std::cell::RefCell<std::collections::BTreeSet<i32>>,
}

impl Coordinator {
    pub fn new(
        shard: Rc<Shard>,
        config: Rc<Config>,
        image: Rc<MetadataImage>,
        partitions: Rc<PartitionManager>,
        clock: Rc<dyn Clock>,
    ) -> Rc<Self> {
        Rc::new(Coordinator {
            shard,
            members: Membership::new(config.clone(), clock.clone()),
            offsets: OffsetStore::new(config, image.clone(), partitions, clock),
            image,
            loading: Default::default(),
        })
    }

    /// Start-up on this shard, after `load_owned`: from now on commit markers in
    /// `__consumer_offsets` complete the transactional offsets they cover, and the group
    /// timer runs.
    pub fn start(self: &Rc<Self>, stop: Arc<AtomicBool>) {
        let me = Rc::downgrade(self);
        self.offsets.partitions().on_marker(
            OFFSETS_TOPIC,
            Box::new(move |pid, commit| {
                if let Some(c) = me.upgrade() {
                    c.complete_txn(pid, commit);
                }
            }),
        );
        let c = self.clone();
        glommio::spawn_local(async move {
            let mut ticks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(Duration::from_millis(GROUP_TICK_MS)).await;
                c.tick();
                // Groups emptied by expired sessions: stored off the timer's path.
                let changed = c.members.take_changed();
                if !changed.is_empty() {
                    let s = c.clone();
                    glommio::spawn_local(async move { s.store(changed).await }).detach();
                }
                ticks += 1;
                if ticks.is_multiple_of(EXPIRE_EVERY_TICKS) {
                    c.expire_offsets().await;
                }
            }
        })
        .detach();
    }

    /// The shard coordinating `group` (see `MetadataImage::key_owner`).
    pub fn coordinator_shard(&self, group: &str) -> Result<usize, ErrorCode> {
        self.image.key_owner(OFFSETS_TOPIC, group)
    }

    /// Runs `f` on the coordinator of `group` (this shard's or another's), with that
    /// coordinator; COORDINATOR_NOT_AVAILABLE when it cannot be reached.
    async fn on_group<T, F, Fut>(&self, group: &str, f: F) -> Result<T, ErrorCode>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Coordinator>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let g = group.to_string();
        super::on_owner(
            &self.shard,
            self.coordinator_shard(group),
            move |c: Rc<Coordinator>| async move {
                if c.is_loading(&g) {
                    return Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS);
                }
                Ok(f(c).await)
            },
        )
        .await
        .and_then(|r| r)
    }

    fn is_loading(&self, group: &str) -> bool {
        let loading = self.loading.borrow();
        !loading.is_empty()
            && self
                .image
                .partition_count(OFFSETS_TOPIC)
                .is_some_and(|n| loading.contains(&crate::metadata::key_partition(group, n)))
    }

    /// JoinGroup: answers once the rebalance it joined completes (or at once with an error).
    pub async fn join(&self, req: JoinRequest) -> Result<JoinOut, ErrorCode> {
        let group = req.group.clone();
        self.on_group(&group, move |c| async move {
            let gid = req.group.clone();
            let out = c.members.join(req).await;
            c.store_changed(&gid).await;
            out
        })
        .await
    }

    /// SyncGroup: the member's assignment once the leader sent them.
    pub async fn sync(&self, req: SyncRequest) -> Result<SyncOut, ErrorCode> {
        let group = req.member.group.clone();
        self.on_group(&group, move |c| async move {
            let m = &req.member;
            let out = c
                .members
                .sync(
                    &m.group,
                    m.generation,
                    &m.member_id,
                    &m.instance_id,
                    req.assignments,
                )
                .await;
            // The completed rebalance is stored before its answer (as Kafka does).
            c.store_changed(&m.group).await;
            out
        })
        .await
    }

    /// Heartbeat: the member's error code (REBALANCE_IN_PROGRESS tells it to rejoin).
    pub async fn heartbeat(&self, m: MemberRef) -> Result<ErrorCode, ErrorCode> {
        let group = m.group.clone();
        self.on_group(&group, move |c| async move {
            c.members
                .heartbeat(&m.group, m.generation, &m.member_id, &m.instance_id)
        })
        .await
    }

    /// LeaveGroup for `members` (member id, instance id).
    pub async fn leave(
        &self,
        group: String,
        members: Vec<(String, Option<String>)>,
    ) -> Result<LeaveOut, ErrorCode> {
        let g = group.clone();
        self.on_group(&g, move |c| async move {
            let out = c.members.leave(&group, members);
            c.store_changed(&group).await;
            out
        })
        .await
    }

    /// OffsetCommit, and TxnOffsetCommit when `req.producer` is set: one code per partition.
    pub async fn commit(&self, req: CommitRequest) -> Result<Vec<ErrorCode>, ErrorCode> {
        let group = req.member.group.clone();
        self.on_group(&group, move |c| async move {
            let m = &req.member;
            let checked = if m.group.is_empty() {
                Err(ErrorCode::INVALID_GROUP_ID)
            } else {
                c.members
                    .check_commit(&m.group, m.generation, &m.member_id, &m.instance_id)
            };
            match checked {
                Err(e) => vec![e; req.offsets.len()],
                Ok(()) => c.offsets.commit(&m.group, req.offsets, req.producer).await,
            }
        })
        .await
    }

    /// OffsetFetch for one group.
    pub async fn fetch_offsets(
        &self,
        req: FetchOffsetsRequest,
    ) -> Result<Vec<OffsetRow>, ErrorCode> {
        let group = req.group.clone();
        self.on_group(&group, move |c| async move {
            c.offsets
                .fetch(&req.group, req.partitions, req.require_stable)
        })
        .await
    }

    /// DescribeGroups for one group.
    pub async fn describe_group(&self, group: String) -> Result<DescribeOut, ErrorCode> {
        let g = group.clone();
        self.on_group(&g, move |c| async move { c.describe(&group) })
            .await
    }

    /// DeleteGroups for one group: only without members; its offsets are tombstoned first.
    pub async fn delete(&self, group: String) -> Result<ErrorCode, ErrorCode> {
        let g = group.clone();
        self.on_group(&g, move |c| async move { c.delete_group(&group).await })
            .await
    }

    /// OffsetDelete: (group error, one code per partition).
    pub async fn delete_offsets(
        &self,
        group: String,
        partitions: Vec<(String, i32)>,
    ) -> Result<(ErrorCode, Vec<ErrorCode>), ErrorCode> {
        let g = group.clone();
        self.on_group(&g, move |c| async move {
            if !c.members.contains(&group) && !c.offsets.contains(&group) {
                return (ErrorCode::GROUP_ID_NOT_FOUND, Vec::new());
            }
            let subscribed = c.members.subscribed_topics(&group);
            c.offsets
                .delete_offsets(&group, partitions, &subscribed)
                .await
        })
        .await
    }

    /// Every shard's groups: (group, protocol type, state).
    pub async fn list_all(&self) -> Vec<(String, String, &'static str)> {
        let mut out = Vec::new();
        for owner in 0..self.shard.nr_shards {
            let r = self
                .shard
                .invoke_on(owner, || async { local::<Coordinator>().list() })
                .await;
            if let Ok(l) = r {
                out.extend(l);
            }
        }
        out
    }

    /// Loads the committed offsets of every `__consumer_offsets` partition this shard owns.
    pub async fn load_owned(&self) -> Result<usize, String> {
        let loaded = self.offsets.load_owned().await?;
        for (gid, rec) in loaded.groups {
            self.members.restore(&gid, rec);
        }
        Ok(loaded.commits)
    }

    /// This broker started (or stopped) leading `__consumer_offsets` partition `p`: the
    /// groups it holds are forgotten and, when it leads, loaded again from the log (which
    /// another coordinator wrote meanwhile, replicated here).
    /// Requests for its groups answer COORDINATOR_LOAD_IN_PROGRESS until it is loaded.
    pub fn leadership_changed(self: &Rc<Self>, p: i32, leads: bool) {
        let Some(n) = self.image.partition_count(OFFSETS_TOPIC) else {
            return;
        };
        let mine = move |g: &str| crate::metadata::key_partition(g, n) == p;
        self.members.drop_groups(&mine);
        self.offsets.drop_groups(&mine);
        if !leads {
            return;
        }
        self.loading.borrow_mut().insert(p);
        let c = self.clone();
        glommio::spawn_local(async move {
            match c.offsets.load(p).await {
                Ok(l) => {
                    let groups = l.groups.len();
                    for (gid, rec) in l.groups {
                        c.members.restore(&gid, rec);
                    }
                    tracing::info!(
                        partition = p,
                        records = l.commits,
                        groups,
                        "group coordinator loaded"
                    )
                }
                Err(e) => tracing::error!(partition = p, "loading committed offsets: {e}"),
            }
            c.loading.borrow_mut().remove(&p);
        })
        .detach();
    }

    /// The commit or abort marker of producer `pid`'s transaction is in the offsets log.
    pub fn complete_txn(&self, pid: i64, commit: bool) {
        self.offsets.complete_txn(pid, commit);
    }

    /// Drives deadlines: session expiry, pending member ids, rebalance completion. Called by
    /// the shard's group timer.
    pub fn tick(&self) {
        self.members.tick();
    }

    /// Forgets committed offsets of empty groups older than the retention (Kafka's
    /// offsets.retention.minutes), writing tombstones.
    pub async fn expire_offsets(&self) {
        self.offsets.expire(|g| self.members.has_members(g)).await;
        for gid in self.members.forget_empty(|g| self.offsets.contains(g)) {
            let _ = self.offsets.write_group(&gid, None).await;
        }
    }

    /// This shard's groups: those with members, and those with committed offsets only (Empty).
    fn list(&self) -> Vec<(String, String, &'static str)> {
        let mut out = self.members.list();
        for id in self.offsets.groups() {
            if !self.members.contains(&id) {
                out.push((id, String::new(), GroupState::Empty.name()));
            }
        }
        out.sort();
        out
    }

    pub fn describe(&self, gid: &str) -> DescribeOut {
        self.members.describe(gid).unwrap_or_else(|| DescribeOut {
            group: gid.to_string(),
            state: if self.offsets.contains(gid) {
                GroupState::Empty.name()
            } else {
                GroupState::Dead.name()
            },
            protocol_type: String::new(),
            protocol: String::new(),
            members: Vec::new(),
        })
    }

    /// DeleteGroups for one group: only without members; its offsets are tombstoned first.
    async fn delete_group(&self, gid: &str) -> ErrorCode {
        if !self.members.contains(gid) && !self.offsets.contains(gid) {
            return ErrorCode::GROUP_ID_NOT_FOUND;
        }
        if self.members.has_members(gid) {
            return ErrorCode::NON_EMPTY_GROUP;
        }
        let e = self.offsets.delete_group(gid).await;
        if !e.is_ok() {
            return e;
        }
        if self.members.contains(gid) {
            let e = self.offsets.write_group(gid, None).await;
            if !e.is_ok() {
                return e;
            }
        }
        self.members.remove(gid);
        ErrorCode::NONE
    }

    /// Writes the records of the groups that changed (a rebalance completed, a group became
    /// empty): a coordinator that takes them over resumes from there.
    /// Writes `gid`'s record if it changed (a join, sync or leave touches only its group).
    async fn store_changed(&self, gid: &str) {
        if let Some(rec) = self.members.take_changed_group(gid) {
            self.store(vec![(gid.to_string(), rec)]).await
        }
    }

    async fn store(&self, changed: Vec<(String, GroupRecord)>) {
        for (gid, rec) in changed {
            let e = self.offsets.write_group(&gid, Some(&rec)).await;
            if !e.is_ok() {
                // Its next coordinator restores the generation stored before, and its members
                // rejoin from there (ILLEGAL_GENERATION), as before groups were stored.
                tracing::warn!(group = %gid, generation = rec.generation, error = ?e,
                    "the group's new state is not stored");
            }
        }
    }

    /// The committed offsets of a group: (topic, partition, offset).
    pub fn committed(&self, gid: &str) -> Vec<(String, i32, i64)> {
        self.offsets.committed(gid)
    }
}
