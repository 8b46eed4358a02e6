//! The partition manager (Kafka's ReplicaManager, Redpanda's partition_manager): one per shard,
//! the only way handlers, coordinators and the controller reach a `log::Partition`.
//!
//! Every method is typed and says where it runs: the `*_on(owner, …)` calls run on the owning
//! shard (directly when it is this one, over the mesh otherwise) and turn a failed crossing
//! into the Kafka error of each partition, so no caller matches a message variant; the
//! `local_*` calls serve partitions this shard owns (the coordinators run where their internal
//! partitions are).
//!
//! Invariants: a partition is opened, appended to, read and removed only by the shard the
//! placement names. The log reports its end offset and its durable offset; the manager owns
//! the **high watermark** (what consumers may read: today the durable offset, with replicas
//! what every in-sync replica has) and each partition's **leader epoch** (from the metadata
//! image).

mod replica;
pub mod types;

pub use replica::{IsrChange, Replica, Role};
pub use types::*;

use crate::config::Config;
use crate::log::{Chunk, Partition, TailCache};
use crate::metadata::topic_config::{cleaner_settings, layered, log_config, min_insync_replicas};
use crate::metadata::{ClusterMeta, MetadataImage};
use crate::protocol::errors::{ErrorCode, KafkaError};
use crate::shard::{local, Shard};
use crate::util::{with_timeout, AnyOf};
use bytes::Bytes;
use glommio::io::BufferedFile;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Open file handles a shard keeps for serving other shards' segment ranges.
const FILE_HANDLE_CACHE: usize = 512;
/// Bounds of the interval-flush timer's tick (a quarter of the shortest flush interval).
const MIN_FLUSH_TICK_MS: u64 = 5;
const MAX_FLUSH_TICK_MS: u64 = 250;

/// Environment switch for tests of the crash-on-bug rule (README, "Crash on bugs"): a produce
/// to the topic it names panics the owning shard as a bug would. Unset (the default), it
/// costs one comparison with None per produce request.
pub const DEBUG_PANIC_TOPIC_ENV: &str = "FLUMEN_DEBUG_PANIC_TOPIC";

/// The file in a partition directory naming the topic id it belongs to (Kafka's name).
pub const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// The topic id a partition directory says it belongs to; None when it says nothing readable
/// (absent, or torn: then it is adopted, never wiped on a guess).
fn partition_dir_topic_id(dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(PARTITION_METADATA_FILE)).ok()?;
    let mut lines = text.lines();
    (lines.next()? == "version: 0").then_some(())?;
    let id = lines.next()?.strip_prefix("topic_id: ")?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
}

/// Before opening: a directory left by a deleted topic of the same name (another id) goes,
/// so the new topic starts empty instead of serving the old one's records.
fn claim_partition_dir(dir: &std::path::Path, topic_id: &str) -> std::io::Result<()> {
    match partition_dir_topic_id(dir) {
        Some(old) if old != topic_id && !topic_id.is_empty() => {
            tracing::warn!(
                dir = %dir.display(),
                "removing the data of a deleted topic (id {old}) before reusing its name"
            );
            std::fs::remove_dir_all(dir)
        }
        _ => Ok(()),
    }
}

/// After opening: the directory names its topic id (written once, atomically).
fn mark_partition_dir(dir: &std::path::Path, topic_id: &str) -> std::io::Result<()> {
    use std::io::Write;
    if topic_id.is_empty() || partition_dir_topic_id(dir).as_deref() == Some(topic_id) {
        return Ok(());
    }
    let tmp = dir.join(format!("{PARTITION_METADATA_FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format!("version: 0\ntopic_id: {topic_id}\n").as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(PARTITION_METADATA_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Called on the owning shard once a transaction marker is durable in a partition of the
/// topic it was registered for: (producer id, commit).
pub type MarkerListener = Box<dyn Fn(i64, bool)>;

/// Called on the owning shard when this broker starts (true) or stops (false) leading a
/// partition of the topic it was registered for: (partition, leads).
pub type LeadershipListener = Box<dyn Fn(i32, bool)>;

/// Called on the owning shard with an ISR change a leader wants committed.
pub type IsrListener = Box<dyn Fn(IsrChange)>;

/// Longest an internal write (coordinator records, transaction markers) waits for the ISR.
const INTERNAL_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// This broker's role in a partition as `meta` gives it (on a single node: leader, alone).
pub fn role_in(meta: &ClusterMeta, topic: &str, p: i32) -> Role {
    let me = meta.node_id;
    match meta.topics.get(topic) {
        Some(t) => Role {
            me,
            leader: t.leader(p, me),
            leader_epoch: t.leader_epoch(p),
            partition_epoch: t.partition_epoch(p),
            isr: t.isr_of(p, me),
            replicas: t.replicas_of(p, me),
        },
        // Not in this image yet (a cluster opens a new partition before publishing the
        // image that names it): nobody leads it until the image says so.
        None if meta.is_cluster() => Role {
            me,
            leader: -1,
            leader_epoch: 0,
            partition_epoch: 0,
            isr: Vec::new(),
            replicas: Vec::new(),
        },
        None => Role {
            me,
            leader: me,
            leader_epoch: 0,
            partition_epoch: 0,
            isr: vec![me],
            replicas: vec![me],
        },
    }
}

/// A partition this shard follows: whom to fetch from, at which leader epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Followed {
    pub topic: String,
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
}

/// A follower's view of its log, for the fetcher: (log end, log start, newest leader epoch).
#[derive(Debug, Clone, Copy)]
pub struct FollowerLog {
    pub log_end_offset: i64,
    pub log_start_offset: i64,
    pub latest_epoch: Option<i32>,
}

pub struct PartitionManager {
    shard: Rc<Shard>,
    config: Rc<Config>,
    image: Rc<MetadataImage>,
    replicas: RefCell<HashMap<(String, i32), Rc<Replica>>>,
    tail_cache: Rc<TailCache>,
    files: RefCell<HashMap<(PathBuf, u64), Rc<BufferedFile>>>,
    marker_listeners: RefCell<Vec<(String, MarkerListener)>>,
    leadership_listeners: RefCell<Vec<(String, LeadershipListener)>>,
    isr_listener: RefCell<Option<IsrListener>>,
    /// Roles changed (a new image): the fetchers look again.
    pub roles_changed: crate::util::Notify,
    /// `FLUMEN_DEBUG_PANIC_TOPIC`, read once at start-up.
    debug_panic_topic: Option<String>,
    cleaner_stats: crate::metrics::CleanerStats,
    /// The dynamic broker defaults of topic configs the open replicas' settings were made
    /// from: when an image brings others, every replica takes its settings again.
    applied_dynamic: RefCell<BTreeMap<String, String>>,
}

impl PartitionManager {
    pub fn new(shard: Rc<Shard>, config: Rc<Config>, image: Rc<MetadataImage>) -> Rc<Self> {
        let tail_cache = TailCache::new(config.tail_cache_budget());
        Rc::new(PartitionManager {
            shard,
            config,
            image,
            replicas: RefCell::new(HashMap::new()),
            tail_cache,
            files: RefCell::new(HashMap::new()),
            marker_listeners: RefCell::new(Vec::new()),
            leadership_listeners: RefCell::new(Vec::new()),
            isr_listener: RefCell::new(None),
            roles_changed: Default::default(),
            debug_panic_topic: std::env::var(DEBUG_PANIC_TOPIC_ENV)
                .ok()
                .filter(|t| !t.is_empty()),
            cleaner_stats: Default::default(),
            applied_dynamic: RefCell::new(BTreeMap::new()),
        })
    }

    fn replica(&self, topic: &str, index: i32) -> Option<Rc<Replica>> {
        self.replicas
            .borrow()
            .get(&(topic.to_string(), index))
            .cloned()
    }

    /// Partitions of `topic` this shard owns and this broker leads (the coordinators load
    /// theirs at start-up; a followed one is loaded when its leadership arrives).
    pub fn local_partitions_of(&self, topic: &str) -> Vec<i32> {
        let mut v: Vec<i32> = self
            .replicas
            .borrow()
            .iter()
            .filter(|((t, _), r)| t == topic && r.leads())
            .map(|((_, i), _)| *i)
            .collect();
        v.sort_unstable();
        v
    }

    /// Partitions this shard owns.
    pub fn local_count(&self) -> usize {
        self.replicas.borrow().len()
    }

    /// `listener` hears of every commit or abort marker made durable in `topic` on this shard.
    pub fn on_marker(&self, topic: &str, listener: MarkerListener) {
        self.marker_listeners
            .borrow_mut()
            .push((topic.to_string(), listener));
    }

    /// `listener` hears when this broker starts or stops leading a partition of `topic` on
    /// this shard (the coordinators load and drop their state with it).
    pub fn on_leadership(&self, topic: &str, listener: LeadershipListener) {
        self.leadership_listeners
            .borrow_mut()
            .push((topic.to_string(), listener));
    }

    /// `listener` hears of the ISR changes this shard's leaders want (the replication
    /// service commits them through the controller).
    pub fn on_isr_change(&self, listener: IsrListener) {
        *self.isr_listener.borrow_mut() = Some(listener);
    }

    fn ask_isr_change(&self, change: Option<IsrChange>) {
        if let (Some(c), Some(l)) = (change, self.isr_listener.borrow().as_ref()) {
            tracing::info!(topic = %c.topic, partition = c.partition, isr = ?c.isr, "asking for an ISR change");
            l(c);
        }
    }

    /// An ISR change was refused or could not be committed: it may be asked again.
    pub fn local_isr_change_failed(&self, topic: &str, partition: i32) {
        if let Some(r) = self.replica(topic, partition) {
            r.isr_change_failed();
        }
    }

    /// Leaders of this shard drop followers that have not caught up for `lag` from their ISR
    /// (through the listener).
    pub fn local_shrink_isrs(&self, lag: Duration) {
        for r in self.all() {
            let change = r.lagging(lag);
            self.ask_isr_change(change);
        }
    }

    /// The partitions this shard follows (it holds a replica, another live broker leads).
    pub fn local_followed(&self) -> Vec<Followed> {
        let mut out: Vec<Followed> = self
            .replicas
            .borrow()
            .iter()
            .filter_map(|((t, p), r)| {
                let role = r.role();
                (role.leader >= 0 && !role.leads()).then(|| Followed {
                    topic: t.clone(),
                    partition: *p,
                    leader: role.leader,
                    leader_epoch: role.leader_epoch,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        out
    }

    /// A followed partition's log as the fetcher needs it; None when it is not followed at
    /// `leader_epoch` any more.
    pub fn local_follower_log(
        &self,
        topic: &str,
        p: i32,
        leader_epoch: i32,
    ) -> Option<FollowerLog> {
        let r = self.following(topic, p, leader_epoch)?;
        Some(FollowerLog {
            log_end_offset: r.log.log_end_offset(),
            log_start_offset: r.log.log_start_offset(),
            latest_epoch: r.log.leader_epoch_entries().last().map(|e| e.0),
        })
    }

    fn following(&self, topic: &str, p: i32, leader_epoch: i32) -> Option<Rc<Replica>> {
        let r = self.replica(topic, p)?;
        let role = r.role();
        (!role.leads() && role.leader >= 0 && role.leader_epoch == leader_epoch).then_some(r)
    }

    /// A followed partition whose log ends below its leader's log start restarts, empty, at
    /// it (Kafka's follower does the same); true when it did.
    pub async fn local_reset_follower(
        &self,
        topic: &str,
        p: i32,
        leader_epoch: i32,
        leader_log_start: i64,
    ) -> Result<bool, KafkaError> {
        let r = self
            .following(topic, p, leader_epoch)
            .ok_or_else(|| not_here(topic, p))?;
        if leader_log_start < 0 || r.log.log_end_offset() >= leader_log_start {
            return Ok(false);
        }
        r.log.reset_to(leader_log_start).await?;
        r.set_follower_hw(leader_log_start);
        Ok(true)
    }

    /// (largest epoch <= `epoch` in the local log, where it ends): the follower's side of
    /// the truncation rule.
    pub fn local_end_offset_for_epoch(
        &self,
        topic: &str,
        p: i32,
        epoch: i32,
    ) -> Option<(i32, i64)> {
        self.replica(topic, p)
            .map(|r| r.log.end_offset_for_epoch(epoch))
    }

    /// Cuts a followed partition's divergent tail at `offset`.
    pub async fn local_truncate(
        &self,
        topic: &str,
        p: i32,
        leader_epoch: i32,
        offset: i64,
    ) -> Result<(), KafkaError> {
        let r = self
            .following(topic, p, leader_epoch)
            .ok_or_else(|| not_here(topic, p))?;
        r.log.truncate_to(offset).await?;
        r.clamp_hw();
        Ok(())
    }

    /// Appends what the leader sent to a followed partition, and learns its high watermark.
    /// Returns the new log end offset.
    pub async fn local_append_replicated(
        &self,
        topic: &str,
        p: i32,
        leader_epoch: i32,
        records: Bytes,
        leader_hw: i64,
        leader_log_start: i64,
    ) -> Result<i64, KafkaError> {
        let r = self
            .following(topic, p, leader_epoch)
            .ok_or_else(|| not_here(topic, p))?;
        // Restarted at a log start inside the leader's first batch: the batch comes whole.
        if records.len() >= crate::protocol::batch::LOG_OVERHEAD {
            let base = crate::protocol::batch::be_i64(&records, 0);
            let (start, end) = (r.log.log_start_offset(), r.log.log_end_offset());
            if start == end && base < end {
                r.log.rebase_empty(base).await?;
            }
        }
        let end = if records.is_empty() {
            r.log.log_end_offset()
        } else {
            r.log.append_replicated(records).await?.log_end_offset
        };
        r.set_follower_hw(leader_hw);
        // The leader's DeleteRecords (or retention, which only ever moves it to a segment
        // base the follower's own retention reaches too): follow it, within what is here.
        if leader_log_start > r.log.log_start_offset() {
            r.log
                .delete_records_before(leader_log_start.min(r.log.durable_offset()))
                .await?;
        }
        Ok(end)
    }

    /// Waits until everything below `target` is in every in-sync replica (the high
    /// watermark), while this broker leads; then checks the ISR still meets the topic's
    /// `min.insync.replicas` (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    async fn wait_replicated(
        &self,
        r: &Replica,
        target: i64,
        deadline: Instant,
    ) -> Result<(), KafkaError> {
        loop {
            let wait = r.log.progress.wait();
            if let Some(e) = r.log.failure() {
                return Err(e);
            }
            if !r.leads() {
                return Err(KafkaError::new(
                    ErrorCode::NOT_LEADER_OR_FOLLOWER,
                    "leadership moved before the write reached the in-sync replicas",
                ));
            }
            if r.high_watermark() >= target {
                let isr = r.role().isr.len();
                if isr < r.min_isr() {
                    return Err(KafkaError::new(
                        ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                        format!(
                            "written, but the ISR shrank to {isr}, below min.insync.replicas {}",
                            r.min_isr()
                        ),
                    ));
                }
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(KafkaError::new(
                    ErrorCode::REQUEST_TIMED_OUT,
                    "the in-sync replicas did not all have the write within the request timeout",
                ));
            }
            with_timeout(deadline - now, wait).await;
        }
    }

    /// Fewer in-sync replicas than the topic's `min.insync.replicas`: acks=all writes are
    /// refused before anything is appended (Kafka's NOT_ENOUGH_REPLICAS).
    fn check_min_isr(r: &Replica) -> Result<(), KafkaError> {
        let isr = r.role().isr.len();
        if isr < r.min_isr() {
            return Err(KafkaError::new(
                ErrorCode::NOT_ENOUGH_REPLICAS,
                format!(
                    "{} in-sync replicas, min.insync.replicas is {}",
                    isr,
                    r.min_isr()
                ),
            ));
        }
        Ok(())
    }

    // ---- calls routed to the owning shard ----

    /// Appends `parts` on shard `owner`; with acks != 0 each answer waits until its write is
    /// durable (or `timeout_ms` passes). One answer per part, in order.
    pub async fn produce_on(&self, owner: usize, req: ProduceRequest) -> Vec<ProduceOut> {
        let n = req.parts.len();
        let r = self
            .shard
            .invoke_on(owner, move || async move {
                local::<PartitionManager>().local_produce(req).await
            })
            .await;
        r.unwrap_or_else(|e| {
            (0..n)
                .map(|_| ProduceOut::failed(ErrorCode::NOT_LEADER_OR_FOLLOWER, e.to_string()))
                .collect()
        })
    }

    /// Every partition shard `owner` holds a replica of: (its data directory, topic,
    /// partition, bytes), for DescribeLogDirs.
    pub async fn log_dir_usage_on(&self, owner: usize) -> Vec<(PathBuf, String, i32, u64)> {
        self.shard
            .invoke_on(owner, move || async move {
                let pm = local::<PartitionManager>();
                let usage = pm
                    .replicas
                    .borrow()
                    .iter()
                    .map(|((t, p), r)| {
                        let base = r.log.dir.parent().map(PathBuf::from).unwrap_or_default();
                        (base, t.clone(), *p, r.log.size_bytes())
                    })
                    .collect::<Vec<_>>();
                usage
            })
            .await
            .unwrap_or_default()
    }

    /// DescribeProducers on shard `owner`: per (topic, partition), the producers its log
    /// remembers (see `Partition::active_producers`), on its leader only.
    pub async fn producers_on(
        &self,
        owner: usize,
        parts: Vec<(String, i32)>,
    ) -> Vec<Result<Vec<(i64, i16, i32, i64, i64)>, ErrorCode>> {
        let n = parts.len();
        let r = self
            .shard
            .invoke_on(owner, move || async move {
                let pm = local::<PartitionManager>();
                parts
                    .iter()
                    .map(|(t, p)| match pm.replica(t, *p).filter(|r| r.leads()) {
                        Some(r) => Ok(r.log.active_producers()),
                        None => Err(ErrorCode::NOT_LEADER_OR_FOLLOWER),
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        r.unwrap_or_else(|_| vec![Err(ErrorCode::NOT_LEADER_OR_FOLLOWER); n])
    }

    /// DeleteRecords on shard `owner`: per (topic, partition, offset; -1 for the high
    /// watermark), the new log start, or the error.
    pub async fn delete_records_on(
        &self,
        owner: usize,
        parts: Vec<(String, i32, i64)>,
        timeout: Duration,
    ) -> Vec<Result<i64, KafkaError>> {
        let n = parts.len();
        let r = self
            .shard
            .invoke_on(owner, move || async move {
                // Each partition waits for its followers: all at once.
                let tasks: Vec<_> = parts
                    .into_iter()
                    .map(|(topic, p, offset)| {
                        glommio::spawn_local(async move {
                            let pm = local::<PartitionManager>();
                            pm.local_delete_records(&topic, p, offset, timeout).await
                        })
                    })
                    .collect();
                let mut out = Vec::with_capacity(tasks.len());
                for t in tasks {
                    out.push(t.await);
                }
                out
            })
            .await;
        r.unwrap_or_else(|e| {
            (0..n)
                .map(|_| {
                    Err(KafkaError::new(
                        ErrorCode::NOT_LEADER_OR_FOLLOWER,
                        e.to_string(),
                    ))
                })
                .collect()
        })
    }

    /// Moves a led partition's log start to `offset` (at most the high watermark: what a
    /// consumer could have read). Followers follow it from the leader's fetch answers.
    async fn local_delete_records(
        &self,
        topic: &str,
        p: i32,
        offset: i64,
        timeout: Duration,
    ) -> Result<i64, KafkaError> {
        let r = self
            .replica(topic, p)
            .filter(|r| r.leads())
            .ok_or_else(|| not_here(topic, p))?;
        let hw = r.high_watermark();
        let offset = if offset == -1 { hw } else { offset };
        if offset < 0 || offset > hw {
            return Err(KafkaError::new(
                ErrorCode::OFFSET_OUT_OF_RANGE,
                format!("offset {offset} is not within [0, the high watermark {hw}]"),
            ));
        }
        let low = r.log.delete_records_before(offset).await?;
        // As Kafka does: answered once every in-sync replica has moved its log start too
        // (followers learn it from their next fetch), so no election brings the records back.
        let deadline = Instant::now() + timeout;
        loop {
            let wait = r.log.progress.wait();
            if !r.leads() {
                return Err(not_here(topic, p));
            }
            if r.low_watermark() >= low {
                return Ok(low);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(KafkaError::new(
                    ErrorCode::REQUEST_TIMED_OUT,
                    format!(
                        "the log start moved to {low} here; the in-sync replicas had not all \
                         followed within the request timeout"
                    ),
                ));
            }
            with_timeout(deadline - now, wait).await;
        }
    }

    /// Reads `parts` on shard `owner` under a shared byte budget.
    pub async fn fetch_on(
        &self,
        owner: usize,
        parts: Vec<FetchPart>,
        max_bytes: usize,
    ) -> Vec<FetchOut> {
        let n = parts.len();
        let r = self
            .shard
            .invoke_on(owner, move || async move {
                local::<PartitionManager>()
                    .local_fetch(parts, max_bytes)
                    .await
            })
            .await;
        r.unwrap_or_else(|_| {
            (0..n)
                .map(|_| FetchOut::error(ErrorCode::NOT_LEADER_OR_FOLLOWER, -1, -1))
                .collect()
        })
    }

    /// Returns once any of `parts` on shard `owner` has data past its offset (or failed), or
    /// after `max_wait_ms`.
    pub async fn watch_on(&self, owner: usize, parts: Vec<PartitionOffset>, max_wait_ms: u64) {
        let _ = self
            .shard
            .invoke_on(owner, move || async move {
                local::<PartitionManager>()
                    .local_watch(parts, max_wait_ms)
                    .await
            })
            .await;
    }

    /// Earliest (-2), latest (-1) or by-timestamp offsets of `parts` on shard `owner`.
    pub async fn list_offsets_on(
        &self,
        owner: usize,
        parts: Vec<PartitionOffset>,
        committed: bool,
    ) -> Vec<ListedOffset> {
        let n = parts.len();
        let r = self
            .shard
            .invoke_on(owner, move || async move {
                let pm = local::<PartitionManager>();
                let mut out = Vec::with_capacity(parts.len());
                for p in parts {
                    out.push(
                        pm.local_list_offset(&p.topic, p.partition, p.offset, committed)
                            .await,
                    );
                }
                out
            })
            .await;
        r.unwrap_or_else(|_| {
            (0..n)
                .map(|_| ListedOffset::error(ErrorCode::NOT_LEADER_OR_FOLLOWER))
                .collect()
        })
    }

    /// OffsetForLeaderEpoch on shard `owner`: for each (topic, partition, epoch), the largest
    /// epoch at or below it in the log and where that epoch ends (the high watermark bounds
    /// the newest, so a client is never told of records it could not read).
    pub async fn epoch_end_offsets_on(
        &self,
        owner: usize,
        parts: Vec<(String, i32, i32)>,
        follower: bool,
    ) -> Vec<Result<(i32, i64), ErrorCode>> {
        let n = parts.len();
        let r = self
            .shard
            .invoke_on(owner, move || async move {
                let pm = local::<PartitionManager>();
                parts
                    .into_iter()
                    .map(|(t, p, epoch)| {
                        let r = pm.replica(&t, p).ok_or(ErrorCode::NOT_LEADER_OR_FOLLOWER)?;
                        if let Some(e) = r.log.failure() {
                            return Err(e.code);
                        }
                        let (e, end) = r.log.end_offset_for_epoch(epoch);
                        // A follower truncating to it keeps only what is durable here. A
                        // client gets the epoch's end as Kafka answers it (the log end for
                        // the current epoch), not the high watermark: a new leader's high
                        // watermark can trail the old leader's for a moment, and a consumer
                        // whose position is past it would take that for a truncated log
                        // and reset its offset (librdkafka's offset validation, KIP-320).
                        let bound = if follower {
                            r.log.durable_offset()
                        } else {
                            r.log.log_end_offset()
                        };
                        Ok((e, if end < 0 { end } else { end.min(bound) }))
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        r.unwrap_or_else(|_| vec![Err(ErrorCode::NOT_LEADER_OR_FOLLOWER); n])
    }

    /// Opens partitions on shard `owner` (after the controller placed them there).
    pub async fn open_on(&self, owner: usize, list: Vec<PartitionSpec>) -> Result<(), String> {
        self.shard
            .invoke_on(owner, move || async move {
                local::<PartitionManager>()
                    .local_open(list)
                    .await
                    .map_err(|e| e.message)
            })
            .await
            .map_err(|e| e.to_string())?
    }

    /// Closes and deletes partitions on shard `owner` (their topic was deleted).
    pub async fn remove_on(&self, owner: usize, list: Vec<(String, i32)>) {
        let r = self
            .shard
            .invoke_on(owner, move || async move {
                local::<PartitionManager>().local_remove(list).await
            })
            .await;
        if let Err(e) = r {
            tracing::error!("removing partitions on shard {owner}: {e}");
        }
    }

    /// Writes a transaction marker to each partition through its owning shard; Ok when all
    /// are durable. A partition deleted since has nothing left to mark.
    pub async fn write_markers(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        partitions: &BTreeSet<(String, i32)>,
    ) -> Result<(), String> {
        let meta = self.image.get();
        let mut by_owner: BTreeMap<usize, Vec<(String, i32)>> = BTreeMap::new();
        for (t, p) in partitions {
            if let Some(owner) = meta.owner(t, *p) {
                by_owner.entry(owner).or_default().push((t.clone(), *p));
            }
        }
        let calls: Vec<_> = by_owner
            .into_iter()
            .map(|(owner, parts)| {
                let shard = self.shard.clone();
                glommio::spawn_local(async move {
                    shard
                        .invoke_on(owner, move || async move {
                            local::<PartitionManager>()
                                .local_write_markers(producer_id, epoch, commit, parts)
                                .await
                        })
                        .await
                })
            })
            .collect();
        let mut failures = Vec::new();
        for c in calls {
            match c.await {
                Ok(results) => failures.extend(results.into_iter().filter_map(|r| r.err())),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    // ---- this shard's partitions ----

    /// Appends the coordinators' own batch (no producer id, or a transactional one of the
    /// coordinator's) to a partition of this shard and waits until it is durable.
    pub async fn local_append_durable(
        &self,
        topic: &str,
        partition: i32,
        batch: &Bytes,
    ) -> Result<(), KafkaError> {
        let r = self
            .replica(topic, partition)
            .ok_or_else(|| not_here(topic, partition))?;
        if !r.leads() {
            return Err(not_here(topic, partition));
        }
        Self::check_min_isr(&r)?;
        let target = r.log.append_durable(batch).await?;
        // Coordinator state is written as acks=all writes are: a record the coordinator acts
        // on survives the loss of its leader.
        self.wait_replicated(&r, target, Instant::now() + INTERNAL_WRITE_TIMEOUT)
            .await
    }

    /// Calls `f` with every record batch of a partition of this shard, oldest first.
    pub async fn local_scan(
        &self,
        topic: &str,
        partition: i32,
        f: impl FnMut(&[u8]),
    ) -> Result<(), KafkaError> {
        let r = self
            .replica(topic, partition)
            .ok_or_else(|| not_here(topic, partition))?;
        r.log.scan(f).await
    }

    /// After a new image: each local partition takes its role (leader, epochs, ISR) and its
    /// leader epoch from it (a leadership change bumps the epoch that new batches are
    /// stamped with); the leadership listeners hear of every partition this broker started
    /// or stopped leading, and the fetchers look again.
    pub fn follow_image(&self) {
        let meta = self.image.get();
        let mut changed = Vec::new();
        let dynamic = meta.dynamic_topic_defaults();
        let all_again = *self.applied_dynamic.borrow() != dynamic;
        for ((topic, p), r) in self.replicas.borrow().iter() {
            let Some(t) = meta.topics.get(topic) else {
                continue;
            };
            // A topic config or a dynamic broker config altered at run time (AlterConfigs):
            // in force from this image on.
            if all_again || !r.configs_are(&t.configs) {
                let layered = layered(&dynamic, &t.configs);
                r.set_configs(
                    t.configs.clone(),
                    log_config(&self.config, topic, &layered),
                    min_insync_replicas(&self.config, &layered),
                );
            }
            let role = role_in(&meta, topic, *p);
            let epoch = role.leader_epoch;
            let led = r.leads();
            if epoch > r.log.leader_epoch() {
                r.log.set_leader_epoch(epoch);
            }
            if r.set_role(role) || led != r.leads() {
                changed.push((topic.clone(), *p, r.leads()));
            }
        }
        *self.applied_dynamic.borrow_mut() = dynamic;
        for (topic, p, leads) in changed {
            for (t, listener) in self.leadership_listeners.borrow().iter() {
                if *t == topic {
                    listener(p, leads);
                }
            }
        }
        self.roles_changed.notify_all();
    }

    /// Opens the partitions the current metadata places on this shard (of those this broker
    /// holds a replica of).
    pub async fn open_owned(&self) -> Result<(), KafkaError> {
        let meta = self.image.get();
        let mut list = Vec::new();
        for (name, t) in &meta.topics {
            for (p, &owner) in t.placement.iter().enumerate() {
                if owner == self.shard.id && meta.hosts(name, p as i32) {
                    list.push(PartitionSpec {
                        topic: name.clone(),
                        topic_id: t.id.clone(),
                        partition: p as i32,
                        configs: t.configs.clone(),
                    });
                }
            }
        }
        self.local_open(list).await
    }

    /// The data directory of a partition: where it already is, else (a new partition) the
    /// one with the fewest of this shard's partitions, ties broken by shard so that shards
    /// start on different disks.
    async fn log_dir_for(&self, topic: &str, index: i32) -> PathBuf {
        let dirs = self.config.log_dirs();
        let name = Partition::dir_name(topic, index);
        if dirs.len() == 1 {
            return dirs[0].clone();
        }
        // A stat per data dir: off the shard thread, which never blocks in a system call.
        let (candidates, n) = (dirs.clone(), name.clone());
        let existing = glommio::executor()
            .spawn_blocking(move || candidates.into_iter().find(|d| d.join(&n).is_dir()))
            .await;
        if let Some(d) = existing {
            return d;
        }
        let replicas = self.replicas.borrow();
        let n = dirs.len();
        let id = self.shard.id;
        (0..n)
            .min_by_key(|&i| {
                let held = replicas
                    .values()
                    .filter(|r| r.log.dir.starts_with(&dirs[i]))
                    .count();
                (held, (i + n - id % n) % n)
            })
            .map(|i| dirs[i].clone())
            .expect("at least one data dir")
    }

    /// Opens each partition of `list` not open yet; one that fails does not keep the others
    /// closed (the first failure is answered, after all were tried).
    async fn local_open(&self, list: Vec<PartitionSpec>) -> Result<(), KafkaError> {
        let mut first_err = None;
        for spec in list {
            let name = format!("{}-{}", spec.topic, spec.partition);
            if let Err(e) = self.open_one(spec).await {
                tracing::error!("opening {name}: {e}");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn open_one(&self, spec: PartitionSpec) -> Result<(), KafkaError> {
        if self.replica(&spec.topic, spec.partition).is_some() {
            return Ok(());
        }
        let meta = self.image.get();
        let layered = layered(&meta.dynamic_topic_defaults(), &spec.configs);
        let cfg = log_config(&self.config, &spec.topic, &layered);
        let base = self.log_dir_for(&spec.topic, spec.partition).await;
        let dir = base.join(Partition::dir_name(&spec.topic, spec.partition));
        let on_dir = |f: fn(&std::path::Path, &str) -> std::io::Result<()>| {
            let (dir, id) = (dir.clone(), spec.topic_id.clone());
            let shown = dir.display().to_string();
            async move {
                glommio::executor()
                    .spawn_blocking(move || f(&dir, &id))
                    .await
                    .map_err(|e| {
                        KafkaError::new(
                            ErrorCode::KAFKA_STORAGE_ERROR,
                            format!("partition directory {shown}: {e}"),
                        )
                    })
            }
        };
        on_dir(claim_partition_dir).await?;
        let log = Partition::open(
            &base,
            &spec.topic,
            spec.partition,
            cfg,
            self.tail_cache.clone(),
        )
        .await?;
        on_dir(mark_partition_dir).await?;
        let epoch = meta
            .topics
            .get(&spec.topic)
            .map_or(0, |t| t.leader_epoch(spec.partition));
        // From the metadata file: a negative (damaged) value is no epoch at all.
        log.set_leader_epoch(epoch.max(0));
        let role = role_in(&meta, &spec.topic, spec.partition);
        let min_isr = min_insync_replicas(&self.config, &layered);
        let r = Rc::new(Replica::new(log, role, min_isr, spec.configs));
        self.replicas
            .borrow_mut()
            .insert((spec.topic, spec.partition), r);
        self.roles_changed.notify_all();
        Ok(())
    }

    async fn local_remove(&self, list: Vec<(String, i32)>) {
        for key in list {
            let r = self.replicas.borrow_mut().remove(&key);
            if let Some(r) = r {
                let _ = r.log.close().await;
                if let Err(e) = r.log.remove_files().await {
                    tracing::error!("removing {}: {e}", r.log.dir.display());
                }
            }
        }
        self.files.borrow_mut().clear();
    }

    async fn local_produce(&self, req: ProduceRequest) -> Vec<ProduceOut> {
        let mut out = Vec::with_capacity(req.parts.len());
        let mut waits = Vec::new();
        for part in req.parts {
            if self.debug_panic_topic.as_deref() == Some(part.topic.as_str()) {
                panic!("{DEBUG_PANIC_TOPIC_ENV}: produce to {}", part.topic);
            }
            let Some(r) = self
                .replica(&part.topic, part.partition)
                .filter(|r| r.leads())
            else {
                out.push(ProduceOut::failed(
                    ErrorCode::NOT_LEADER_OR_FOLLOWER,
                    "this broker does not lead the partition (or it is not on this shard)".into(),
                ));
                continue;
            };
            if req.acks == -1 {
                if let Err(e) = Self::check_min_isr(&r) {
                    out.push(ProduceOut {
                        error: Some(e),
                        ..ProduceOut::failed(ErrorCode::NONE, String::new())
                    });
                    continue;
                }
            }
            let p = &r.log;
            match p.append(&part.records, &part.infos).await {
                Ok(a) => {
                    waits.push((out.len(), r.clone(), a.durable_target));
                    out.push(ProduceOut {
                        error: None,
                        base_offset: a.base_offset,
                        log_append_time: a.log_append_time,
                        log_start_offset: p.log_start_offset(),
                    });
                }
                Err(e) => out.push(ProduceOut {
                    error: Some(e),
                    ..ProduceOut::failed(ErrorCode::NONE, String::new())
                }),
            }
        }
        if req.acks != 0 {
            // All appends are queued; their group commits complete together.
            let timeout = Duration::from_millis(req.timeout_ms.max(1));
            let deadline = Instant::now() + timeout;
            for (i, r, target) in waits {
                let err = if req.acks == -1 {
                    // acks=all: every in-sync replica has it.
                    self.wait_replicated(&r, target, deadline).await.err()
                } else {
                    match with_timeout(timeout, r.log.wait_durable(target)).await {
                        Some(Ok(())) => None,
                        Some(Err(e)) => Some(e),
                        None => Some(KafkaError::new(
                            ErrorCode::REQUEST_TIMED_OUT,
                            "write did not complete within the request timeout",
                        )),
                    }
                };
                if err.is_some() {
                    out[i].error = err;
                    out[i].base_offset = -1;
                }
            }
        }
        out
    }

    async fn local_fetch(&self, parts: Vec<FetchPart>, max_bytes: usize) -> Vec<FetchOut> {
        let mut out = Vec::with_capacity(parts.len());
        let mut budget = max_bytes;
        for part in parts {
            let Some(r) = self
                .replica(&part.topic, part.partition)
                .filter(|r| r.leads())
            else {
                out.push(FetchOut::error(ErrorCode::NOT_LEADER_OR_FOLLOWER, -1, -1));
                continue;
            };
            let p = &r.log;
            // Kafka's fencing of a stale or a future leader epoch (KIP-320).
            let epoch = r.role().leader_epoch;
            if part.current_leader_epoch >= 0 && part.current_leader_epoch != epoch {
                let code = if part.current_leader_epoch < epoch {
                    ErrorCode::FENCED_LEADER_EPOCH
                } else {
                    ErrorCode::UNKNOWN_LEADER_EPOCH
                };
                out.push(FetchOut::error(code, -1, -1));
                continue;
            }
            let follower = part.replica_id >= 0;
            if follower {
                if part.offset > p.log_end_offset() {
                    out.push(FetchOut::error(
                        ErrorCode::OFFSET_OUT_OF_RANGE,
                        r.high_watermark(),
                        p.log_start_offset(),
                    ));
                    continue;
                }
                let change = r.follower_fetched(part.replica_id, part.offset, part.log_start);
                self.ask_isr_change(change);
            }
            // A follower reads everything durable here; a consumer only below the high
            // watermark.
            let visible = if follower {
                i64::MAX
            } else {
                r.high_watermark()
            };
            // The first partition with data may exceed the budget (Kafka's rule), later ones not.
            let limit = if budget == 0 {
                0
            } else {
                part.max_bytes.min(budget)
            };
            let result = if limit == 0 && budget == 0 {
                Ok(crate::log::ReadResult {
                    high_watermark: r.high_watermark(),
                    last_stable_offset: p.last_stable_offset(),
                    log_start_offset: p.log_start_offset(),
                    chunks: Vec::new(),
                    bytes: 0,
                    aborted: Vec::new(),
                    next_offset: part.offset,
                })
            } else {
                p.read_bounded(
                    part.offset,
                    limit.max(1),
                    part.committed && !follower,
                    visible,
                )
                .await
            };
            match result {
                Ok(rr) => {
                    budget = budget.saturating_sub(rr.bytes);
                    let hw = r.high_watermark();
                    out.push(FetchOut {
                        error: ErrorCode::NONE,
                        high_watermark: hw,
                        last_stable_offset: rr.last_stable_offset.min(hw),
                        aborted: rr.aborted,
                        log_start_offset: rr.log_start_offset,
                        chunks: rr
                            .chunks
                            .into_iter()
                            .map(|c| match c {
                                Chunk::Mem(b) => SendChunk::Mem(b),
                                Chunk::File { seg, pos, len } => SendChunk::File {
                                    path: seg.log_path(),
                                    inode: seg.inode(),
                                    pos,
                                    len,
                                    written: seg.written_bytes.get(),
                                },
                            })
                            .collect(),
                        bytes: rr.bytes,
                    });
                }
                Err(e) => out.push(FetchOut::error(
                    e.code,
                    r.high_watermark(),
                    p.log_start_offset(),
                )),
            }
        }
        out
    }

    async fn local_watch(&self, parts: Vec<PartitionOffset>, max_wait_ms: u64) {
        // A follower (offset flagged by `follower`) waits for data past its offset that is
        // durable here; a consumer for the high watermark to pass it.
        let list: Vec<(Rc<Replica>, i64, bool)> = parts
            .iter()
            .filter_map(|p| {
                self.replica(&p.topic, p.partition)
                    .map(|r| (r, p.offset, p.follower))
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_millis(max_wait_ms);
        loop {
            if list.iter().any(|(r, o, follower)| {
                let end = if *follower {
                    r.log.durable_offset()
                } else {
                    r.high_watermark()
                };
                end > *o || r.log.failure().is_some() || !r.leads()
            }) {
                return;
            }
            let now = std::time::Instant::now();
            if now >= deadline || list.is_empty() {
                if list.is_empty() {
                    glommio::timer::sleep(deadline.saturating_duration_since(now)).await;
                }
                return;
            }
            let wakers: Vec<_> = list.iter().map(|(r, _, _)| r.log.progress.wait()).collect();
            let any = AnyOf(wakers.into_iter().map(|f| Box::pin(f) as _).collect());
            with_timeout(deadline - now, any).await;
        }
    }

    async fn local_list_offset(
        &self,
        topic: &str,
        index: i32,
        ts: i64,
        committed: bool,
    ) -> ListedOffset {
        let Some(r) = self.replica(topic, index) else {
            return ListedOffset::error(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        };
        let p = &r.log;
        if let Some(e) = p.failure() {
            return ListedOffset::error(e.code);
        }
        let found = |offset: i64, timestamp: i64| ListedOffset {
            error: ErrorCode::NONE,
            timestamp,
            offset,
            leader_epoch: r.leader_epoch(),
        };
        match ts {
            -2 => found(p.log_start_offset(), -1),
            -1 if committed => found(p.last_stable_offset().min(r.high_watermark()), -1),
            -1 => found(r.high_watermark(), -1),
            t if t < 0 => ListedOffset::error(ErrorCode::INVALID_REQUEST),
            t => match p.offset_for_timestamp(t).await {
                Ok(Some((offset, ts))) => found(offset, ts),
                Ok(None) => ListedOffset {
                    leader_epoch: -1,
                    ..found(-1, -1)
                },
                Err(e) => ListedOffset::error(e.code),
            },
        }
    }

    /// Writes transaction markers on local partitions: all appended first, then waited for,
    /// so their writes share group commits.
    async fn local_write_markers(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        parts: Vec<(String, i32)>,
    ) -> Vec<Result<(), String>> {
        let mut pending = Vec::with_capacity(parts.len());
        for (t, i) in &parts {
            let r = match self.replica(t, *i) {
                None => Err(None), // deleted meanwhile: nothing to mark
                Some(r) if !r.leads() => Err(Some(format!(
                    "{t}-{i}: this broker does not lead it any more"
                ))),
                Some(r) => match r.log.append_marker(producer_id, epoch, commit, 0).await {
                    Ok(target) => Ok((r, target)),
                    Err(e) => Err(Some(format!("{t}-{i}: {e}"))),
                },
            };
            pending.push(r);
        }
        let mut out = Vec::with_capacity(parts.len());
        for ((t, _), r) in parts.iter().zip(pending) {
            out.push(match r {
                Err(None) => Ok(()),
                Err(Some(m)) => Err(m),
                Ok((r, target)) => match self
                    .wait_replicated(&r, target, Instant::now() + INTERNAL_WRITE_TIMEOUT)
                    .await
                {
                    Ok(()) => {
                        for (topic, listener) in self.marker_listeners.borrow().iter() {
                            if topic == t {
                                listener(producer_id, commit);
                            }
                        }
                        Ok(())
                    }
                    Err(e) => Err(format!("{}-{}: {e}", r.log.topic, r.log.index)),
                },
            });
        }
        out
    }

    /// A page-cache handle for a segment file named by another shard (kept open: a file is
    /// immutable once sealed, and an unlinked file stays readable). Keyed by path and inode:
    /// the cleaner swaps a new file in under the same name, and a handle that finds another
    /// file than the owner read is refused (the fetch answers a retriable storage error).
    pub async fn file_handle(
        &self,
        path: &PathBuf,
        inode: u64,
    ) -> std::io::Result<Rc<BufferedFile>> {
        let key = (path.clone(), inode);
        if let Some(f) = self.files.borrow().get(&key) {
            return Ok(f.clone());
        }
        let f = Rc::new(
            glommio::io::OpenOptions::new()
                .read(true)
                .buffered_open(path)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        );
        if crate::log::segment::inode_of(&*f) != inode {
            return Err(std::io::Error::other(
                "the segment was replaced by the log cleaner since it was read; retry",
            ));
        }
        let mut files = self.files.borrow_mut();
        if files.len() >= FILE_HANDLE_CACHE {
            files.clear();
        }
        files.insert(key, f.clone());
        Ok(f)
    }

    /// Background work: retention checks and, with an interval flush policy, fdatasync.
    pub fn spawn_background(self: &Rc<Self>, stop: Arc<AtomicBool>) {
        let pm = self.clone();
        let stop2 = stop.clone();
        glommio::spawn_local(async move {
            let every = Duration::from_millis(pm.config.retention_check_interval_ms.max(10));
            while !stop2.load(Ordering::Relaxed) {
                glommio::timer::sleep(every).await;
                // Let go of handles to segments retention may have deleted, so their space is freed.
                pm.files.borrow_mut().clear();
                for r in pm.all() {
                    if let Err(e) = r.log.enforce_retention().await {
                        tracing::warn!(topic = %r.log.topic, partition = r.log.index, "retention: {e}");
                    }
                }
            }
        })
        .detach();
        if self.config.log_cleaner_enable {
            self.spawn_cleaner(stop.clone());
        }
        // The interval flush policy (the broker's, or a topic's flush.ms): each round works
        // out the tick (a quarter of the shortest interval in force, within
        // [MIN, MAX]_FLUSH_TICK_MS) first, then fdatasyncs every partition whose oldest
        // unsynced write would pass its interval before the next round, so no write waits
        // longer. A partition whose topic turned to every-write with writes unsynced is
        // synced at once.
        let pm = self.clone();
        glommio::spawn_local(async move {
            while !stop.load(Ordering::Relaxed) {
                let all = pm.all();
                let broker = match pm.config.flush_policy() {
                    crate::config::FlushPolicy::IntervalMs(ms) => ms,
                    crate::config::FlushPolicy::EveryWrite => MAX_FLUSH_TICK_MS * 4,
                };
                let shortest = all
                    .iter()
                    .filter_map(|r| match r.log.cfg().flush {
                        crate::config::FlushPolicy::IntervalMs(ms) => Some(ms),
                        crate::config::FlushPolicy::EveryWrite => None,
                    })
                    .fold(broker, u64::min);
                let tick = (shortest / 4).clamp(MIN_FLUSH_TICK_MS, MAX_FLUSH_TICK_MS);
                for r in all {
                    let Some(waited) = r.log.unsynced_for() else {
                        continue;
                    };
                    let due = match r.log.cfg().flush {
                        crate::config::FlushPolicy::IntervalMs(ms) => {
                            waited.as_millis() as u64 + tick >= ms
                        }
                        crate::config::FlushPolicy::EveryWrite => true,
                    };
                    if due {
                        r.log.sync_if_dirty().await;
                    }
                }
                glommio::timer::sleep(Duration::from_millis(tick)).await;
            }
        })
        .detach();
    }

    /// The shard's log cleaner: in a task queue of its own with a tenth of the default
    /// queue's shares (the CPU goes to requests first) and within the shard's I/O budget
    /// (`log_cleaner_io_max_bytes_per_second`). Each round cleans every compacted partition
    /// that is due, dirtiest first; with none due it sleeps `log_cleaner_backoff_ms`.
    fn spawn_cleaner(self: &Rc<Self>, stop: Arc<AtomicBool>) {
        let pm = self.clone();
        let queue = glommio::executor().create_task_queue(
            glommio::Shares::Static(100),
            glommio::Latency::NotImportant,
            "log-cleaner",
        );
        let spawned = glommio::spawn_local_into(
            async move {
                let throttle =
                    crate::log::Throttle::new(pm.config.log_cleaner_io_max_bytes_per_second);
                while !stop.load(Ordering::Relaxed) {
                    // Dynamic broker configs may change them between rounds.
                    let meta = pm.image.get();
                    let (rate, backoff_ms, budget) =
                        cleaner_settings(&pm.config, &meta.broker_configs, meta.node_id);
                    drop(meta);
                    throttle.set_rate(rate);
                    let backoff = Duration::from_millis(backoff_ms);
                    let now = crate::util::now_ms();
                    let mut due: Vec<(f64, Rc<Replica>)> = pm
                        .all()
                        .into_iter()
                        .filter_map(|r| r.log.cleaning_due(now).map(|d| (d, r)))
                        .collect();
                    due.sort_by(|a, b| b.0.total_cmp(&a.0));
                    let mut cleaned = false;
                    for (ratio, r) in due {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match r
                            .log
                            .clean(now, r.high_watermark(), &throttle, budget)
                            .await
                        {
                            Ok(Some(s)) => {
                                cleaned = true;
                                crate::metrics::bump(&pm.cleaner_stats.bytes_read, s.bytes_read);
                                crate::metrics::bump(&pm.cleaner_stats.bytes_written, s.size_after);
                                crate::metrics::bump(&pm.cleaner_stats.passes, 1);
                                tracing::info!(topic = %r.log.topic, partition = r.log.index,
                                    dirty_ratio = ratio, before = s.size_before,
                                    after = s.size_after, segments_before = s.segments_before,
                                    segments_after = s.segments_after, kept = s.records_kept,
                                    dropped = s.records_dropped, cleaned_to = s.cleaned_to,
                                    "log cleaned");
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(topic = %r.log.topic, partition = r.log.index,
                                    "log cleaner: {e}");
                            }
                        }
                    }
                    if !cleaned {
                        glommio::timer::sleep(backoff).await;
                    }
                }
            },
            queue,
        );
        match spawned {
            Ok(task) => {
                task.detach();
            }
            Err(e) => tracing::error!("starting the log cleaner: {e}"),
        }
    }

    fn all(&self) -> Vec<Rc<Replica>> {
        self.replicas.borrow().values().cloned().collect()
    }

    /// The partitions' and the tail cache's metric samples.
    pub fn metric_samples(&self, shard_label: &str, out: &mut Vec<crate::metrics::Sample>) {
        let sl = shard_label;
        let cache = self.tail_cache.used_bytes() as f64;
        out.push(("flumen_tail_cache_used_bytes", sl.to_string(), cache));
        let replicas = self.replicas.borrow();
        out.push((
            "flumen_shard_partitions",
            sl.to_string(),
            replicas.len() as f64,
        ));
        let (mut hits, mut misses) = (0, 0);
        for ((topic, index), r) in replicas.iter() {
            let p = &r.log;
            let l = format!("{sl},topic=\"{topic}\",partition=\"{index}\"");
            let s = &p.stats;
            hits += s.cache_hits.get();
            misses += s.cache_misses.get();
            for (name, v) in [
                ("flumen_partition_bytes_in_total", s.bytes_in.get() as f64),
                (
                    "flumen_partition_records_in_total",
                    s.records_in.get() as f64,
                ),
                ("flumen_partition_bytes_out_total", s.bytes_out.get() as f64),
                (
                    "flumen_partition_records_out_total",
                    s.records_out.get() as f64,
                ),
                ("flumen_partition_high_watermark", r.high_watermark() as f64),
                (
                    "flumen_partition_log_start_offset",
                    p.log_start_offset() as f64,
                ),
                ("flumen_partition_segments", p.segment_count() as f64),
                (
                    "flumen_partition_offline",
                    f64::from(u8::from(p.failure().is_some())),
                ),
            ] {
                out.push((name, l.clone(), v));
            }
        }
        out.push(("flumen_tail_cache_hits_total", sl.to_string(), hits as f64));
        let c = &self.cleaner_stats;
        for (name, v) in [
            ("flumen_log_cleaner_passes_total", c.passes.get()),
            ("flumen_log_cleaner_read_bytes_total", c.bytes_read.get()),
            (
                "flumen_log_cleaner_written_bytes_total",
                c.bytes_written.get(),
            ),
        ] {
            out.push((name, sl.to_string(), v as f64));
        }
        out.push((
            "flumen_tail_cache_misses_total",
            sl.to_string(),
            misses as f64,
        ));
    }

    /// Clean shutdown: every partition flushes what it accepted and cuts its preallocation.
    pub async fn close_all(&self) {
        let all: Vec<_> = self.replicas.borrow_mut().drain().map(|(_, r)| r).collect();
        for r in all {
            if let Err(e) = r.log.close().await {
                tracing::error!(topic = %r.log.topic, partition = r.log.index, "close: {e}");
            }
        }
    }
}

fn not_here(topic: &str, partition: i32) -> KafkaError {
    KafkaError::new(
        ErrorCode::NOT_LEADER_OR_FOLLOWER,
        format!("{topic}-{partition} is not on this shard"),
    )
}
