//! The committed-offset store (Kafka's GroupMetadataManager, offsets side): the cache of every
//! committed offset of the groups this shard coordinates, and the only writer of their records
//! in `__consumer_offsets`.
//!
//! Invariants: a commit or tombstone is durable in the log before the cache shows it, and the
//! cache is what replaying the log gives (`load`). Offsets committed inside a transaction wait
//! in `pending_txn` under their producer id until the transaction's marker is in the log: a
//! commit marker applies them, an abort drops them. Membership checks (who may commit) are the
//! caller's: the store only stores.

use super::offsets::{self, Committed, GroupRecord, OffsetKey, Stored};
use super::types::{OffsetCommitEntry, OffsetRow};
use super::OFFSETS_TOPIC;
use crate::config::Config;
use crate::metadata::MetadataImage;
use crate::partition_manager::PartitionManager;
use crate::protocol::errors::ErrorCode;
use crate::util::Clock;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// Longest metadata string kept with a committed offset (Kafka: offset.metadata.max.bytes).
const MAX_OFFSET_METADATA_BYTES: usize = 4096;

/// A commit (or, None, a deletion) of one group's partition.
type OffsetEntry = (OffsetKey, Option<Committed>);

/// A group's committed offsets by (topic, partition).
type GroupOffsets = BTreeMap<(String, i32), Committed>;

/// What replaying offsets partitions gave: the commits applied, and the last record of each
/// group stored there (None: deleted), for the membership to restore.
#[derive(Default)]
pub(super) struct Loaded {
    pub(super) commits: usize,
    pub(super) groups: BTreeMap<String, Option<GroupRecord>>,
}

/// The committed offsets of the groups whose offsets partition this shard owns.
pub(super) struct OffsetStore {
    config: Rc<Config>,
    image: Rc<MetadataImage>,
    partitions: Rc<PartitionManager>,
    clock: Rc<dyn Clock>,
    offsets: RefCell<HashMap<String, GroupOffsets>>,
    /// Offsets written by open transactions, by producer id: applied by a commit marker,
    /// dropped by an abort marker.
    pending_txn: RefCell<HashMap<i64, Vec<OffsetEntry>>>,
}

impl OffsetStore {
    pub(super) fn new(
        config: Rc<Config>,
        image: Rc<MetadataImage>,
        partitions: Rc<PartitionManager>,
        clock: Rc<dyn Clock>,
    ) -> OffsetStore {
        OffsetStore {
            config,
            image,
            partitions,
            clock,
            offsets: RefCell::new(HashMap::new()),
            pending_txn: RefCell::new(HashMap::new()),
        }
    }

    pub(super) fn partitions(&self) -> &Rc<PartitionManager> {
        &self.partitions
    }

    /// Loads the committed offsets of every `__consumer_offsets` partition this shard leads.
    pub(super) async fn load_owned(&self) -> Result<Loaded, String> {
        let mut all = Loaded::default();
        for p in self.partitions.local_partitions_of(OFFSETS_TOPIC) {
            let l = self.load(p).await?;
            all.commits += l.commits;
            all.groups.extend(l.groups);
        }
        Ok(all)
    }

    /// Forgets the committed and pending offsets of every group `mine` names.
    pub(super) fn drop_groups(&self, mine: &dyn Fn(&str) -> bool) {
        self.offsets.borrow_mut().retain(|g, _| !mine(g));
        for entries in self.pending_txn.borrow_mut().values_mut() {
            entries.retain(|(k, _)| !mine(&k.0));
        }
    }

    /// Replays the records stored in one `__consumer_offsets` partition this shard owns:
    /// plain commits apply at once, transactional ones when their commit marker comes; the
    /// last record of each group is returned.
    pub(super) async fn load(&self, partition: i32) -> Result<Loaded, String> {
        let mut out = Loaded::default();
        self.partitions
            .local_scan(OFFSETS_TOPIC, partition, |b| {
                use crate::protocol::batch;
                let attrs = batch::be_i16(b, batch::OFF_ATTRIBUTES);
                let pid = batch::be_i64(b, batch::OFF_PRODUCER_ID);
                if let Some(commit) = batch::control_marker(b) {
                    self.complete_txn(pid, commit);
                    return;
                }
                let mut commits = Vec::new();
                for s in offsets::parse_stored(b) {
                    match s {
                        Stored::Offset(k, v) => commits.push((k, v)),
                        Stored::Group(g, v) => {
                            out.groups.insert(g, v);
                        }
                    }
                }
                out.commits += commits.len();
                if attrs & batch::ATTR_TRANSACTIONAL != 0 {
                    self.pending_txn
                        .borrow_mut()
                        .entry(pid)
                        .or_default()
                        .extend(commits);
                } else {
                    self.apply(commits);
                }
            })
            .await
            .map_err(|e| e.message)?;
        Ok(out)
    }

    /// The commit or abort marker of producer `pid`'s transaction is in the offsets log.
    pub(super) fn complete_txn(&self, pid: i64, commit: bool) {
        let pending = self.pending_txn.borrow_mut().remove(&pid);
        if let (true, Some(entries)) = (commit, pending) {
            self.apply(entries);
        }
    }

    fn apply(&self, entries: Vec<OffsetEntry>) {
        let mut all = self.offsets.borrow_mut();
        for ((g, t, part), v) in entries {
            match v {
                Some(c) => {
                    all.entry(g).or_default().insert((t, part), c);
                }
                None => {
                    if let Some(m) = all.get_mut(&g) {
                        m.remove(&(t, part));
                        if m.is_empty() {
                            all.remove(&g);
                        }
                    }
                }
            }
        }
    }

    /// Writes commits (or tombstones) of one group durably, then applies them to the cache
    /// (or, for a transaction's, keeps them until its marker).
    async fn write(
        &self,
        gid: &str,
        entries: Vec<OffsetEntry>,
        producer: Option<(i64, i16)>,
    ) -> ErrorCode {
        let Some(n) = self.image.partition_count(OFFSETS_TOPIC) else {
            return ErrorCode::COORDINATOR_NOT_AVAILABLE;
        };
        let partition = crate::metadata::key_partition(gid, n);
        let batch = offsets::build_batch(&entries, self.clock.now_ms(), producer);
        if let Err(e) = self
            .partitions
            .local_append_durable(OFFSETS_TOPIC, partition, &batch)
            .await
        {
            if e.code == ErrorCode::NOT_LEADER_OR_FOLLOWER {
                return ErrorCode::NOT_COORDINATOR;
            }
            if e.code == ErrorCode::UNKNOWN_SERVER_ERROR {
                return e.code;
            }
            tracing::warn!(group = %gid, "writing offsets: {e}");
            return if e.code == ErrorCode::INVALID_PRODUCER_EPOCH {
                e.code
            } else {
                ErrorCode::COORDINATOR_NOT_AVAILABLE
            };
        }
        match producer {
            Some((pid, _)) => self
                .pending_txn
                .borrow_mut()
                .entry(pid)
                .or_default()
                .extend(entries),
            None => self.apply(entries),
        }
        ErrorCode::NONE
    }

    /// Stores a group's record (None: deletes it) in its offsets partition, durably.
    pub(super) async fn write_group(&self, gid: &str, g: Option<&GroupRecord>) -> ErrorCode {
        let Some(n) = self.image.partition_count(OFFSETS_TOPIC) else {
            return ErrorCode::COORDINATOR_NOT_AVAILABLE;
        };
        let partition = crate::metadata::key_partition(gid, n);
        let batch = offsets::build_group_batch(gid, g, self.clock.now_ms());
        match self
            .partitions
            .local_append_durable(OFFSETS_TOPIC, partition, &batch)
            .await
        {
            Ok(_) => ErrorCode::NONE,
            Err(e) if e.code == ErrorCode::NOT_LEADER_OR_FOLLOWER => ErrorCode::NOT_COORDINATOR,
            Err(e) => {
                tracing::warn!(group = %gid, "writing the group: {e}");
                ErrorCode::COORDINATOR_NOT_AVAILABLE
            }
        }
    }

    /// The storage side of OffsetCommit, and of TxnOffsetCommit when `producer` is set: one
    /// code per partition, in order.
    pub(super) async fn commit(
        &self,
        gid: &str,
        list: Vec<OffsetCommitEntry>,
        producer: Option<(i64, i16)>,
    ) -> Vec<ErrorCode> {
        let now = self.clock.now_ms();
        let mut codes = Vec::with_capacity(list.len());
        let mut entries = Vec::new();
        for e in list {
            let meta = e.metadata.unwrap_or_default();
            if !e.topic_exists {
                codes.push(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
            } else if meta.len() > MAX_OFFSET_METADATA_BYTES {
                codes.push(ErrorCode::OFFSET_METADATA_TOO_LARGE);
            } else {
                codes.push(ErrorCode::NONE);
                entries.push((
                    (gid.to_string(), e.topic, e.partition),
                    Some(Committed {
                        offset: e.offset,
                        leader_epoch: e.leader_epoch,
                        metadata: meta,
                        commit_timestamp: now,
                    }),
                ));
            }
        }
        if entries.is_empty() {
            return codes;
        }
        let e = self.write(gid, entries, producer).await;
        if !e.is_ok() {
            for c in codes.iter_mut().filter(|c| c.is_ok()) {
                *c = e;
            }
        }
        codes
    }

    /// OffsetFetch: `partitions`, or None for every partition the group committed.
    pub(super) fn fetch(
        &self,
        gid: &str,
        partitions: Option<Vec<(String, i32)>>,
        require_stable: bool,
    ) -> Vec<OffsetRow> {
        let all = self.offsets.borrow();
        let committed = all.get(gid);
        let unstable: std::collections::HashSet<(String, i32)> = if require_stable {
            self.pending_txn
                .borrow()
                .values()
                .flatten()
                .filter(|((g, _, _), _)| g == gid)
                .map(|((_, t, p), _)| (t.clone(), *p))
                .collect()
        } else {
            Default::default()
        };
        let row = |topic: String, partition: i32| {
            let none = |error| OffsetRow {
                topic: topic.clone(),
                partition,
                offset: -1,
                leader_epoch: -1,
                metadata: String::new(),
                error,
            };
            if unstable.contains(&(topic.clone(), partition)) {
                return none(ErrorCode::UNSTABLE_OFFSET_COMMIT);
            }
            match committed.and_then(|m| m.get(&(topic.clone(), partition))) {
                Some(c) => OffsetRow {
                    offset: c.offset,
                    leader_epoch: c.leader_epoch,
                    metadata: c.metadata.clone(),
                    ..none(ErrorCode::NONE)
                },
                None => none(ErrorCode::NONE),
            }
        };
        match partitions {
            Some(list) => list.into_iter().map(|(t, p)| row(t, p)).collect(),
            None => committed
                .map(|m| m.keys().map(|(t, p)| row(t.clone(), *p)).collect())
                .unwrap_or_default(),
        }
    }

    /// Forgets committed offsets older than the retention (Kafka's offsets.retention.minutes)
    /// of groups without members (`has_members` says which have), writing tombstones.
    pub(super) async fn expire(&self, has_members: impl Fn(&str) -> bool) {
        let cutoff =
            self.clock.now_ms() - self.config.offsets_retention_minutes.saturating_mul(60_000);
        let mut doomed: Vec<(String, String, i32)> = Vec::new();
        for (g, offs) in self.offsets.borrow().iter() {
            if has_members(g) {
                continue;
            }
            for ((t, p), c) in offs {
                if c.commit_timestamp < cutoff {
                    doomed.push((g.clone(), t.clone(), *p));
                }
            }
        }
        for (g, t, p) in doomed {
            let _ = self.write(&g, vec![((g.clone(), t, p), None)], None).await;
        }
    }

    /// Tombstones every committed offset of the group (DeleteGroups).
    pub(super) async fn delete_group(&self, gid: &str) -> ErrorCode {
        let entries: Vec<OffsetEntry> = self
            .offsets
            .borrow()
            .get(gid)
            .map(|m| {
                m.keys()
                    .map(|(t, p)| ((gid.to_string(), t.clone(), *p), None))
                    .collect()
            })
            .unwrap_or_default();
        if entries.is_empty() {
            return ErrorCode::NONE;
        }
        self.write(gid, entries, None).await
    }

    /// OffsetDelete: tombstones the partitions, except those of topics in `subscribed`
    /// (GROUP_SUBSCRIBED_TO_TOPIC). The group error, and one code per partition.
    pub(super) async fn delete_offsets(
        &self,
        gid: &str,
        partitions: Vec<(String, i32)>,
        subscribed: &[String],
    ) -> (ErrorCode, Vec<ErrorCode>) {
        let mut codes = Vec::with_capacity(partitions.len());
        let mut entries = Vec::new();
        for (t, p) in partitions {
            if subscribed.contains(&t) {
                codes.push(ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC);
            } else {
                codes.push(ErrorCode::NONE);
                entries.push(((gid.to_string(), t, p), None));
            }
        }
        if !entries.is_empty() {
            let e = self.write(gid, entries, None).await;
            if !e.is_ok() {
                return (e, codes);
            }
        }
        (ErrorCode::NONE, codes)
    }

    /// The group has committed offsets.
    pub(super) fn contains(&self, gid: &str) -> bool {
        self.offsets.borrow().contains_key(gid)
    }

    /// Groups with committed offsets.
    pub(super) fn groups(&self) -> Vec<String> {
        self.offsets.borrow().keys().cloned().collect()
    }

    pub(super) fn committed(&self, gid: &str) -> Vec<(String, i32, i64)> {
        self.offsets
            .borrow()
            .get(gid)
            .map(|m| {
                m.iter()
                    .map(|((t, p), c)| (t.clone(), *p, c.offset))
                    .collect()
            })
            .unwrap_or_default()
    }
}
