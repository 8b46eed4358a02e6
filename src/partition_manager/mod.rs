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

pub mod types;

pub use types::*;

use crate::config::Config;
use crate::log::{Chunk, Partition, TailCache};
use crate::metadata::topic_config::log_config;
use crate::metadata::MetadataImage;
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
use std::time::Duration;

/// Open file handles a shard keeps for serving other shards' segment ranges.
const FILE_HANDLE_CACHE: usize = 512;

/// Environment switch for tests of the crash-on-bug rule (README, "Crash on bugs"): a produce
/// to the topic it names panics the owning shard as a bug would. Unset (the default), it
/// costs one comparison with None per produce request.
pub const DEBUG_PANIC_TOPIC_ENV: &str = "FLUMEN_DEBUG_PANIC_TOPIC";

/// A partition as its owning shard keeps it: the log, and what leadership adds to it.
pub struct Replica {
    pub log: Rc<Partition>,
}

impl Replica {
    /// What consumers may read up to: the offset every in-sync replica has. With one replica
    /// (today) that is everything durable under the flush policy; replication makes it the
    /// smallest log end offset over the ISR, and nothing else here changes.
    pub fn high_watermark(&self) -> i64 {
        self.log.durable_offset()
    }

    /// The leader epoch of this partition's current leadership (the log stamps its batches
    /// with it).
    pub fn leader_epoch(&self) -> i32 {
        self.log.leader_epoch()
    }
}

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

pub struct PartitionManager {
    shard: Rc<Shard>,
    config: Rc<Config>,
    image: Rc<MetadataImage>,
    replicas: RefCell<HashMap<(String, i32), Rc<Replica>>>,
    tail_cache: Rc<TailCache>,
    files: RefCell<HashMap<PathBuf, Rc<BufferedFile>>>,
    marker_listeners: RefCell<Vec<(String, MarkerListener)>>,
    /// `FLUMEN_DEBUG_PANIC_TOPIC`, read once at start-up.
    debug_panic_topic: Option<String>,
}

impl PartitionManager {
    pub fn new(shard: Rc<Shard>, config: Rc<Config>, image: Rc<MetadataImage>) -> Rc<Self> {
        let tail_cache = TailCache::new(config.tail_cache_bytes);
        Rc::new(PartitionManager {
            shard,
            config,
            image,
            replicas: RefCell::new(HashMap::new()),
            tail_cache,
            files: RefCell::new(HashMap::new()),
            marker_listeners: RefCell::new(Vec::new()),
            debug_panic_topic: std::env::var(DEBUG_PANIC_TOPIC_ENV)
                .ok()
                .filter(|t| !t.is_empty()),
        })
    }

    fn replica(&self, topic: &str, index: i32) -> Option<Rc<Replica>> {
        self.replicas
            .borrow()
            .get(&(topic.to_string(), index))
            .cloned()
    }

    /// Partitions of `topic` this shard owns (the coordinators load theirs at start-up).
    pub fn local_partitions_of(&self, topic: &str) -> Vec<i32> {
        let mut v: Vec<i32> = self
            .replicas
            .borrow()
            .keys()
            .filter(|(t, _)| t == topic)
            .map(|(_, i)| *i)
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
                        Ok((
                            e,
                            if end < 0 {
                                end
                            } else {
                                end.min(r.high_watermark())
                            },
                        ))
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
        r.log.append_durable(batch).await
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

    /// After a new image: each local partition takes its leader epoch from it (a leadership
    /// change bumps the epoch that new batches are stamped with).
    pub fn follow_image(&self) {
        let meta = self.image.get();
        for ((topic, p), r) in self.replicas.borrow().iter() {
            if let Some(t) = meta.topics.get(topic) {
                let epoch = t.leader_epoch(*p);
                if epoch > r.log.leader_epoch() {
                    r.log.set_leader_epoch(epoch);
                }
            }
        }
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
        let cfg = log_config(&self.config, &spec.configs);
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
        self.replicas
            .borrow_mut()
            .insert((spec.topic, spec.partition), Rc::new(Replica { log }));
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
            let Some(r) = self.replica(&part.topic, part.partition) else {
                out.push(ProduceOut::failed(
                    ErrorCode::NOT_LEADER_OR_FOLLOWER,
                    "partition is not on this shard".into(),
                ));
                continue;
            };
            let p = &r.log;
            match p.append(&part.records, &part.infos).await {
                Ok(a) => {
                    waits.push((out.len(), p.clone(), a.durable_target));
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
            for (i, p, target) in waits {
                let waited = with_timeout(
                    Duration::from_millis(req.timeout_ms.max(1)),
                    p.wait_durable(target),
                )
                .await;
                let err = match waited {
                    Some(Ok(())) => None,
                    Some(Err(e)) => Some(e),
                    None => Some(KafkaError::new(
                        ErrorCode::REQUEST_TIMED_OUT,
                        "write did not complete within the request timeout",
                    )),
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
            let Some(r) = self.replica(&part.topic, part.partition) else {
                out.push(FetchOut::error(ErrorCode::NOT_LEADER_OR_FOLLOWER, -1, -1));
                continue;
            };
            let p = &r.log;
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
                    part.committed,
                    r.high_watermark(),
                )
                .await
            };
            match result {
                Ok(rr) => {
                    budget = budget.saturating_sub(rr.bytes);
                    out.push(FetchOut {
                        error: ErrorCode::NONE,
                        high_watermark: rr.high_watermark,
                        last_stable_offset: rr.last_stable_offset,
                        aborted: rr.aborted,
                        log_start_offset: rr.log_start_offset,
                        chunks: rr
                            .chunks
                            .into_iter()
                            .map(|c| match c {
                                Chunk::Mem(b) => SendChunk::Mem(b),
                                Chunk::File { seg, pos, len } => SendChunk::File {
                                    path: seg.log_path(),
                                    pos,
                                    len,
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
        let list: Vec<(Rc<Replica>, i64)> = parts
            .iter()
            .filter_map(|p| self.replica(&p.topic, p.partition).map(|r| (r, p.offset)))
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_millis(max_wait_ms);
        loop {
            if list
                .iter()
                .any(|(r, o)| r.high_watermark() > *o || r.log.failure().is_some())
            {
                return;
            }
            let now = std::time::Instant::now();
            if now >= deadline || list.is_empty() {
                if list.is_empty() {
                    glommio::timer::sleep(deadline.saturating_duration_since(now)).await;
                }
                return;
            }
            let wakers: Vec<_> = list.iter().map(|(r, _)| r.log.progress.wait()).collect();
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
            -1 if committed => found(p.last_stable_offset(), -1),
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
                Ok((r, target)) => match r.log.wait_durable(target).await {
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

    /// A page-cache handle for a segment file named by another shard (kept open: segments
    /// are immutable once written, and an unlinked file stays readable).
    pub async fn file_handle(&self, path: &PathBuf) -> std::io::Result<Rc<BufferedFile>> {
        if let Some(f) = self.files.borrow().get(path) {
            return Ok(f.clone());
        }
        let f = Rc::new(
            glommio::io::OpenOptions::new()
                .read(true)
                .buffered_open(path)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        );
        let mut files = self.files.borrow_mut();
        if files.len() >= FILE_HANDLE_CACHE {
            files.clear();
        }
        files.insert(path.clone(), f.clone());
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
        if let crate::config::FlushPolicy::IntervalMs(ms) = self.config.flush_policy() {
            let pm = self.clone();
            glommio::spawn_local(async move {
                while !stop.load(Ordering::Relaxed) {
                    glommio::timer::sleep(Duration::from_millis(ms)).await;
                    for r in pm.all() {
                        r.log.sync_if_dirty().await;
                    }
                }
            })
            .detach();
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
