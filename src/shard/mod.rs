//! Shards: one pinned glommio executor per core, each owning its partitions, sockets and memory.
//!
//! Invariants: a partition is opened, appended to, read and deleted only by the shard the
//! placement table names; every other shard asks it over the mesh (one message per remote
//! shard per request). Shard 0 alone changes the metadata and broadcasts each version.

pub mod mesh;
pub mod meta;

use crate::config::Config;
use crate::log::{Chunk, LogConfig, Partition, TailCache};
use crate::protocol::batch::BatchInfo;
use crate::protocol::errors::{ErrorCode, KafkaError};
use crate::util::{with_timeout, AnyOf};
use bytes::Bytes;
use glommio::io::BufferedFile;
use meta::{ClusterMeta, TopicMeta};
use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Open file handles a shard keeps for serving other shards' segment ranges.
const FILE_HANDLE_CACHE: usize = 512;

/// A produce sub-request for one partition.
pub struct ProducePart {
    pub topic: String,
    pub partition: i32,
    pub records: Bytes,
    pub infos: Vec<BatchInfo>,
}

pub struct ProduceOut {
    pub error: Option<KafkaError>,
    pub base_offset: i64,
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

pub struct FetchPart {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: usize,
    /// read_committed: stop at the last stable offset.
    pub committed: bool,
}

/// Record bytes that can cross shards: memory, or a file range the receiver opens itself.
pub enum SendChunk {
    Mem(Bytes),
    File { path: PathBuf, pos: u64, len: usize },
}

pub struct FetchOut {
    pub error: ErrorCode,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub chunks: Vec<SendChunk>,
    pub bytes: usize,
    /// (producer id, first offset) of aborted transactions, for read_committed.
    pub aborted: Vec<(i64, i64)>,
}

impl FetchOut {
    /// An answer with no data.
    pub fn error(error: ErrorCode, high_watermark: i64, log_start_offset: i64) -> FetchOut {
        FetchOut {
            error,
            high_watermark,
            last_stable_offset: high_watermark,
            log_start_offset,
            chunks: Vec::new(),
            bytes: 0,
            aborted: Vec::new(),
        }
    }
}

pub struct CreateSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    pub validate_only: bool,
}

/// (topic, partition, offset or timestamp) of a partition named in a request.
pub type PartAt = (String, i32, i64);
/// A partition to open on its owner: (topic, partition, topic config overrides).
pub type PartOpen = (String, i32, BTreeMap<String, String>);

pub enum Req {
    Produce {
        acks: i16,
        timeout_ms: u64,
        parts: Vec<ProducePart>,
    },
    Fetch {
        parts: Vec<FetchPart>,
        max_bytes: usize,
    },
    /// Reply once any partition has data past its offset, or after max_wait_ms.
    Watch {
        parts: Vec<PartAt>,
        max_wait_ms: u64,
    },
    ListOffsets {
        parts: Vec<PartAt>,
        /// read_committed: "latest" is the last stable offset.
        committed: bool,
    },
    CreateTopics(Vec<CreateSpec>),
    DeleteTopics(Vec<String>),
    OpenPartitions(Vec<PartOpen>),
    RemovePartitions(Vec<(String, i32)>),
    SetMeta(ClusterMeta),
    Group(crate::group::GroupReq),
    /// Allocate a producer id (shard 0).
    AllocProducerId,
    Txn(crate::txn::TxnReq),
    /// Transaction markers for a producer on partitions this shard owns.
    WriteMarkers {
        producer_id: i64,
        epoch: i16,
        commit: bool,
        parts: Vec<(String, i32)>,
    },
}

pub enum Resp {
    Produce(Vec<ProduceOut>),
    Fetch(Vec<FetchOut>),
    Watch,
    /// (error, timestamp, offset) per partition.
    ListOffsets(Vec<(ErrorCode, i64, i64)>),
    /// Per topic: error code and message.
    Topics(Vec<(ErrorCode, Option<String>)>),
    Done,
    Failed(String),
    Group(crate::group::GroupResp),
    ProducerId(i64),
    Txn(crate::txn::TxnResp),
    /// Per partition of a WriteMarkers, in order.
    Markers(Vec<Result<(), String>>),
}

pub struct Shard {
    pub id: usize,
    pub nr_shards: usize,
    pub config: Rc<Config>,
    pub meta: RefCell<Rc<ClusterMeta>>,
    pub partitions: RefCell<HashMap<(String, i32), Rc<Partition>>>,
    pub tail_cache: Rc<TailCache>,
    /// `request_memory_bytes`: permits are bytes of request frames read or being handled.
    pub request_memory: Rc<glommio::sync::Semaphore>,
    pub mesh: OnceCell<mesh::Mesh>,
    /// Groups whose `__consumer_offsets` partition this shard owns.
    pub groups: crate::group::Coordinator,
    /// Transactional ids whose `__transaction_state` partition this shard owns.
    pub txns: crate::txn::Coordinator,
    control_lock: glommio::sync::Semaphore,
    /// Next producer id to hand out (shard 0).
    next_producer_id: std::cell::Cell<i64>,
    files: RefCell<HashMap<PathBuf, Rc<BufferedFile>>>,
    pub metrics: crate::metrics::ShardMetrics,
}

/// Maps a topic's config overrides onto the broker defaults.
pub fn log_config(cfg: &Config, overrides: &BTreeMap<String, String>) -> LogConfig {
    let num = |k: &str, d: i64| {
        overrides
            .get(k)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(d)
    };
    LogConfig {
        segment_bytes: num("segment.bytes", cfg.segment_bytes as i64).max(64 * 1024) as u64,
        segment_ms: num("segment.ms", cfg.segment_ms),
        retention_ms: num("retention.ms", cfg.retention_ms),
        retention_bytes: num("retention.bytes", cfg.retention_bytes),
        index_interval_bytes: num("index.interval.bytes", cfg.index_interval_bytes as i64).max(1)
            as u64,
        flush: cfg.flush_policy(),
        timestamp_type: match overrides.get("message.timestamp.type").map(String::as_str) {
            Some("LogAppendTime") => crate::config::TimestampType::LogAppendTime,
            Some("CreateTime") => crate::config::TimestampType::CreateTime,
            _ => cfg.message_timestamp_type,
        },
        write_buffer_bytes: cfg.write_buffer_bytes,
        producer_id_expiration_ms: cfg.producer_id_expiration_ms,
        faults: None,
    }
}

/// Checks a topic config override: known key and a value Flumen honours.
pub fn check_topic_config(key: &str, value: &str) -> Result<(), String> {
    let int = |min: i64| match value.parse::<i64>() {
        Ok(v) if v >= min => Ok(()),
        _ => Err(format!("{key} must be an integer >= {min}, got {value:?}")),
    };
    match key {
        "retention.ms" | "retention.bytes" => int(-1),
        "segment.bytes" => int(64 * 1024).and_then(|_| {
            if value.parse::<u64>().unwrap_or(u64::MAX) > u32::MAX as u64 {
                Err("segment.bytes must be below 4 GiB".into())
            } else {
                Ok(())
            }
        }),
        "segment.ms" => int(1),
        "index.interval.bytes" => int(1),
        "min.insync.replicas" => match value {
            "1" => Ok(()),
            _ => Err("min.insync.replicas must be 1 on a single broker".into()),
        },
        "message.timestamp.type" => match value {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err(format!(
                "message.timestamp.type {value:?} is not CreateTime or LogAppendTime"
            )),
        },
        "cleanup.policy" => match value {
            "delete" => Ok(()),
            _ => Err(format!(
                "cleanup.policy={value} is not supported yet (only delete)"
            )),
        },
        "compression.type" => match value {
            "producer" => Ok(()),
            _ => Err("compression.type: batches are stored as produced (only 'producer')".into()),
        },
        _ => Err(format!("unknown or unsupported topic config {key}")),
    }
}

impl Shard {
    pub fn new(id: usize, nr_shards: usize, config: Rc<Config>, meta: ClusterMeta) -> Shard {
        let tail_cache = TailCache::new(config.tail_cache_bytes);
        let request_memory = Rc::new(glommio::sync::Semaphore::new(
            config.request_memory_bytes as u64,
        ));
        Shard {
            id,
            nr_shards,
            config,
            meta: RefCell::new(Rc::new(meta)),
            partitions: RefCell::new(HashMap::new()),
            tail_cache,
            request_memory,
            mesh: OnceCell::new(),
            groups: crate::group::Coordinator::default(),
            txns: crate::txn::Coordinator::default(),
            control_lock: glommio::sync::Semaphore::new(1),
            next_producer_id: std::cell::Cell::new(-1),
            files: RefCell::new(HashMap::new()),
            metrics: Default::default(),
        }
    }

    pub fn meta(&self) -> Rc<ClusterMeta> {
        self.meta.borrow().clone()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(&(topic.to_string(), index))
            .cloned()
    }

    /// Serves `body` on shard `to`: directly when local, over the mesh otherwise.
    pub async fn call(self: &Rc<Self>, to: usize, body: Req) -> Resp {
        if to == self.id {
            // Boxed: serve() itself calls shards (create_topics -> OpenPartitions).
            return Box::pin(self.serve(body)).await;
        }
        match self.mesh.get() {
            Some(m) => m.call(self.id, to, body).await,
            None => Resp::Failed(format!("no mesh to reach shard {to}")),
        }
    }

    /// Opens the partitions the current metadata places on this shard.
    pub async fn open_own_partitions(self: &Rc<Self>) -> anyhow::Result<()> {
        let meta = self.meta();
        let mut list = Vec::new();
        for (name, t) in &meta.topics {
            for (p, &owner) in t.placement.iter().enumerate() {
                if owner == self.id {
                    list.push((name.clone(), p as i32, t.configs.clone()));
                }
            }
        }
        self.open_partitions(list)
            .await
            .map_err(|e| anyhow::anyhow!(e.to_string()))?;
        if let Some(t) = meta.topics.get(crate::txn::TXN_TOPIC) {
            for (p, &owner) in t.placement.iter().enumerate() {
                if owner == self.id {
                    self.txns
                        .load(self, p as i32)
                        .await
                        .map_err(|e| anyhow::anyhow!("loading transaction states: {e}"))?;
                }
            }
        }
        if let Some(t) = meta.topics.get(crate::group::OFFSETS_TOPIC) {
            for (p, &owner) in t.placement.iter().enumerate() {
                if owner == self.id {
                    let n = self
                        .groups
                        .load(self, p as i32)
                        .await
                        .map_err(|e| anyhow::anyhow!("loading committed offsets: {e}"))?;
                    tracing::debug!(
                        shard = self.id,
                        partition = p,
                        records = n,
                        "loaded offsets"
                    );
                }
            }
        }
        Ok(())
    }

    /// Creates `__consumer_offsets` and `__transaction_state` on first start (shard 0).
    pub async fn ensure_offsets_topic(self: &Rc<Self>) {
        for (name, partitions) in [
            (
                crate::group::OFFSETS_TOPIC,
                self.config.offsets_topic_partitions,
            ),
            (
                crate::txn::TXN_TOPIC,
                self.config.transaction_state_partitions,
            ),
        ] {
            if self.meta().topics.contains_key(name) {
                continue;
            }
            let spec = CreateSpec {
                name: name.into(),
                partitions,
                replication_factor: 1,
                configs: BTreeMap::from([
                    ("segment.bytes".to_string(), (100u64 << 20).to_string()),
                    // Without compaction the records must stay: deleting old segments would
                    // forget the offsets or transactions written long ago.
                    ("retention.ms".to_string(), "-1".to_string()),
                ]),
                validate_only: false,
            };
            for (code, msg) in self.request_create(vec![spec]).await {
                if !code.is_ok() && code != ErrorCode::TOPIC_ALREADY_EXISTS {
                    tracing::error!("creating {name}: {msg:?}");
                }
            }
        }
    }

    /// Writes transaction markers on local partitions: all appended first, then waited for,
    /// so their writes share group commits.
    async fn write_markers_local(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        parts: Vec<(String, i32)>,
    ) -> Vec<Result<(), String>> {
        let mut pending = Vec::with_capacity(parts.len());
        for (t, i) in &parts {
            let r = match self.partition(t, *i) {
                None => Err(None), // deleted meanwhile: nothing to mark
                Some(p) => match p.append_marker(producer_id, epoch, commit, 0).await {
                    Ok(target) => Ok((p, target)),
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
                Ok((p, target)) => match p.wait_durable(target).await {
                    Ok(()) => {
                        if t == crate::group::OFFSETS_TOPIC {
                            self.groups.complete_txn(producer_id, commit);
                        }
                        Ok(())
                    }
                    Err(e) => Err(format!("{}-{}: {e}", p.topic, p.index)),
                },
            });
        }
        out
    }

    /// The data directory of a partition: where it already is, else (a new partition) the
    /// one with the fewest of this shard's partitions, ties broken by shard so that shards
    /// start on different disks.
    fn log_dir_for(&self, topic: &str, index: i32) -> PathBuf {
        let dirs = self.config.log_dirs();
        let name = Partition::dir_name(topic, index);
        if dirs.len() == 1 {
            return dirs[0].clone();
        }
        if let Some(d) = dirs.iter().find(|d| d.join(&name).is_dir()) {
            return d.clone();
        }
        let parts = self.partitions.borrow();
        let n = dirs.len();
        (0..n)
            .min_by_key(|&i| {
                let held = parts
                    .values()
                    .filter(|p| p.dir.starts_with(&dirs[i]))
                    .count();
                (held, (i + n - self.id % n) % n)
            })
            .map(|i| dirs[i].clone())
            .expect("at least one data dir")
    }

    async fn open_partitions(&self, list: Vec<PartOpen>) -> Result<(), KafkaError> {
        for (topic, index, configs) in list {
            if self.partition(&topic, index).is_some() {
                continue;
            }
            let cfg = log_config(&self.config, &configs);
            let p = Partition::open(
                &self.log_dir_for(&topic, index),
                &topic,
                index,
                cfg,
                self.tail_cache.clone(),
            )
            .await?;
            self.partitions.borrow_mut().insert((topic, index), p);
        }
        Ok(())
    }

    /// The shard-local half of every cross-shard request.
    pub async fn serve(self: &Rc<Self>, body: Req) -> Resp {
        match body {
            Req::Produce {
                acks,
                timeout_ms,
                parts,
            } => Resp::Produce(self.produce_local(acks, timeout_ms, parts).await),
            Req::Fetch { parts, max_bytes } => {
                Resp::Fetch(self.fetch_local(parts, max_bytes).await)
            }
            Req::Watch { parts, max_wait_ms } => {
                self.watch_local(parts, max_wait_ms).await;
                Resp::Watch
            }
            Req::ListOffsets { parts, committed } => {
                let mut out = Vec::with_capacity(parts.len());
                for (topic, index, ts) in parts {
                    out.push(self.list_offset_local(&topic, index, ts, committed).await);
                }
                Resp::ListOffsets(out)
            }
            Req::CreateTopics(specs) => Resp::Topics(self.create_topics(specs).await),
            Req::DeleteTopics(names) => Resp::Topics(self.delete_topics(names).await),
            Req::OpenPartitions(list) => match self.open_partitions(list).await {
                Ok(()) => Resp::Done,
                Err(e) => Resp::Failed(e.message),
            },
            Req::RemovePartitions(list) => {
                for (topic, index) in list {
                    let p = self.partitions.borrow_mut().remove(&(topic, index));
                    if let Some(p) = p {
                        let _ = p.close().await;
                        if let Err(e) = p.remove_files().await {
                            tracing::error!("removing {}: {e}", p.dir.display());
                        }
                    }
                }
                self.files.borrow_mut().clear();
                Resp::Done
            }
            Req::Group(req) => Resp::Group(self.groups.handle(self, req).await),
            Req::Txn(req) => Resp::Txn(self.txns.handle(self, req).await),
            Req::WriteMarkers {
                producer_id,
                epoch,
                commit,
                parts,
            } => Resp::Markers(
                self.write_markers_local(producer_id, epoch, commit, parts)
                    .await,
            ),
            Req::AllocProducerId => match self.alloc_producer_id().await {
                Ok(id) => Resp::ProducerId(id),
                Err(e) => Resp::Failed(e),
            },
            Req::SetMeta(meta) => {
                let newer = meta.version >= self.meta.borrow().version;
                if newer {
                    *self.meta.borrow_mut() = Rc::new(meta);
                }
                Resp::Done
            }
        }
    }

    async fn produce_local(
        &self,
        acks: i16,
        timeout_ms: u64,
        parts: Vec<ProducePart>,
    ) -> Vec<ProduceOut> {
        let mut out = Vec::with_capacity(parts.len());
        let mut waits = Vec::new();
        for part in parts {
            let Some(p) = self.partition(&part.topic, part.partition) else {
                out.push(ProduceOut {
                    error: Some(KafkaError::new(
                        ErrorCode::NOT_LEADER_OR_FOLLOWER,
                        "partition is not on this shard",
                    )),
                    base_offset: -1,
                    log_append_time: -1,
                    log_start_offset: -1,
                });
                continue;
            };
            match p.append(&part.records, &part.infos).await {
                Ok((base, lat, target)) => {
                    waits.push((out.len(), p.clone(), target));
                    out.push(ProduceOut {
                        error: None,
                        base_offset: base,
                        log_append_time: lat,
                        log_start_offset: p.log_start_offset(),
                    });
                }
                Err(e) => out.push(ProduceOut {
                    error: Some(e),
                    base_offset: -1,
                    log_append_time: -1,
                    log_start_offset: -1,
                }),
            }
        }
        if acks != 0 {
            // All appends are queued; their group commits complete together.
            for (i, p, target) in waits {
                let waited = with_timeout(
                    Duration::from_millis(timeout_ms.max(1)),
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

    async fn fetch_local(&self, parts: Vec<FetchPart>, max_bytes: usize) -> Vec<FetchOut> {
        let mut out = Vec::with_capacity(parts.len());
        let mut budget = max_bytes;
        for part in parts {
            let Some(p) = self.partition(&part.topic, part.partition) else {
                out.push(FetchOut::error(ErrorCode::NOT_LEADER_OR_FOLLOWER, -1, -1));
                continue;
            };
            // The first partition with data may exceed the budget (Kafka's rule), later ones not.
            let limit = if budget == 0 {
                0
            } else {
                part.max_bytes.min(budget)
            };
            let result = if limit == 0 && budget == 0 {
                Ok(crate::log::ReadResult {
                    high_watermark: p.high_watermark(),
                    last_stable_offset: p.last_stable_offset(),
                    log_start_offset: p.log_start_offset(),
                    chunks: Vec::new(),
                    bytes: 0,
                    aborted: Vec::new(),
                    next_offset: part.offset,
                })
            } else {
                p.read_isolated(part.offset, limit.max(1), part.committed)
                    .await
            };
            match result {
                Ok(r) => {
                    budget = budget.saturating_sub(r.bytes);
                    out.push(FetchOut {
                        error: ErrorCode::NONE,
                        high_watermark: r.high_watermark,
                        last_stable_offset: r.last_stable_offset,
                        aborted: r.aborted,
                        log_start_offset: r.log_start_offset,
                        chunks: r
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
                        bytes: r.bytes,
                    });
                }
                Err(e) => out.push(FetchOut::error(
                    e.code,
                    p.high_watermark(),
                    p.log_start_offset(),
                )),
            }
        }
        out
    }

    async fn watch_local(&self, parts: Vec<PartAt>, max_wait_ms: u64) {
        let list: Vec<(Rc<Partition>, i64)> = parts
            .iter()
            .filter_map(|(t, i, o)| self.partition(t, *i).map(|p| (p, *o)))
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_millis(max_wait_ms);
        loop {
            if list
                .iter()
                .any(|(p, o)| p.high_watermark() > *o || p.failure().is_some())
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
            let wakers: Vec<_> = list.iter().map(|(p, _)| p.progress.wait()).collect();
            let any = AnyOf(wakers.into_iter().map(|f| Box::pin(f) as _).collect());
            with_timeout(deadline - now, any).await;
        }
    }

    async fn list_offset_local(
        &self,
        topic: &str,
        index: i32,
        ts: i64,
        committed: bool,
    ) -> (ErrorCode, i64, i64) {
        let Some(p) = self.partition(topic, index) else {
            return (ErrorCode::NOT_LEADER_OR_FOLLOWER, -1, -1);
        };
        if let Some(e) = p.failure() {
            return (e.code, -1, -1);
        }
        match ts {
            -2 => (ErrorCode::NONE, -1, p.log_start_offset()),
            -1 if committed => (ErrorCode::NONE, -1, p.last_stable_offset()),
            -1 => (ErrorCode::NONE, -1, p.high_watermark()),
            t if t < 0 => (ErrorCode::INVALID_REQUEST, -1, -1),
            t => match p.offset_for_timestamp(t).await {
                Ok(Some((offset, ts))) => (ErrorCode::NONE, ts, offset),
                Ok(None) => (ErrorCode::NONE, -1, -1),
                Err(e) => (e.code, -1, -1),
            },
        }
    }

    /// Creates topics (shard 0 only): validate, place, persist, open on the owners, broadcast.
    async fn create_topics(
        self: &Rc<Self>,
        specs: Vec<CreateSpec>,
    ) -> Vec<(ErrorCode, Option<String>)> {
        assert_eq!(self.id, 0, "only shard 0 changes metadata");
        let _permit = self.control_lock.acquire_permit(1).await.ok();
        let mut meta = (*self.meta()).clone();
        let mut results = Vec::with_capacity(specs.len());
        let mut opens: Vec<Vec<PartOpen>> = vec![Vec::new(); self.nr_shards];
        let mut changed = false;
        for spec in specs {
            let partitions = if spec.partitions == -1 {
                self.config.default_partitions
            } else {
                spec.partitions
            };
            let err = |c: ErrorCode, m: String| (c, Some(m));
            let verdict = if !meta::valid_topic_name(&spec.name) {
                err(
                    ErrorCode::INVALID_TOPIC_EXCEPTION,
                    format!("invalid topic name {:?}", spec.name),
                )
            } else if meta.topics.contains_key(&spec.name) {
                err(
                    ErrorCode::TOPIC_ALREADY_EXISTS,
                    format!("topic {} already exists", spec.name),
                )
            } else if partitions < 1 || partitions > self.config.max_partitions_per_topic {
                err(
                    ErrorCode::INVALID_PARTITIONS,
                    format!(
                        "partitions must be 1..={}",
                        self.config.max_partitions_per_topic
                    ),
                )
            } else if spec.replication_factor != -1 && spec.replication_factor != 1 {
                err(
                    ErrorCode::INVALID_REPLICATION_FACTOR,
                    "replication factor must be 1 on a single broker".into(),
                )
            } else if let Some(e) = spec
                .configs
                .iter()
                .find_map(|(k, v)| check_topic_config(k, v).err())
            {
                err(ErrorCode::INVALID_CONFIG, e)
            } else {
                (ErrorCode::NONE, None)
            };
            if verdict.0.is_ok() && !spec.validate_only {
                let mut load = meta.load_per_shard(self.nr_shards);
                let mut placement = Vec::with_capacity(partitions as usize);
                for p in 0..partitions {
                    let shard = (0..self.nr_shards)
                        .min_by_key(|&s| (load[s], s))
                        .unwrap_or(0);
                    load[shard] += 1;
                    placement.push(shard);
                    opens[shard].push((spec.name.clone(), p, spec.configs.clone()));
                }
                meta.topics.insert(
                    spec.name.clone(),
                    TopicMeta {
                        id: meta::random_hex(16),
                        placement,
                        configs: spec.configs.clone(),
                    },
                );
                changed = true;
                tracing::info!(topic = %spec.name, partitions, "created topic");
            }
            results.push(verdict);
        }
        if !changed {
            return results;
        }
        meta.version += 1;
        if let Err(e) = self.persist_meta(&meta).await {
            for r in results.iter_mut().filter(|r| r.0.is_ok()) {
                *r = (
                    ErrorCode::KAFKA_STORAGE_ERROR,
                    Some(format!("saving metadata: {e}")),
                );
            }
            return results;
        }
        for (shard, list) in opens.into_iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            if let Resp::Failed(m) = self.call(shard, Req::OpenPartitions(list)).await {
                tracing::error!("opening partitions on shard {shard}: {m}");
            }
        }
        self.broadcast_meta(meta).await;
        results
    }

    async fn delete_topics(
        self: &Rc<Self>,
        names: Vec<String>,
    ) -> Vec<(ErrorCode, Option<String>)> {
        assert_eq!(self.id, 0, "only shard 0 changes metadata");
        let _permit = self.control_lock.acquire_permit(1).await.ok();
        let mut meta = (*self.meta()).clone();
        let mut removes: Vec<Vec<(String, i32)>> = vec![Vec::new(); self.nr_shards];
        let mut results = Vec::with_capacity(names.len());
        for name in names {
            match meta.topics.remove(&name) {
                Some(t) => {
                    for (p, &s) in t.placement.iter().enumerate() {
                        removes[s].push((name.clone(), p as i32));
                    }
                    tracing::info!(topic = %name, "deleted topic");
                    results.push((ErrorCode::NONE, None));
                }
                None => results.push((
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    Some(format!("topic {name} does not exist")),
                )),
            }
        }
        if removes.iter().all(Vec::is_empty) {
            return results;
        }
        meta.version += 1;
        if let Err(e) = self.persist_meta(&meta).await {
            for r in results.iter_mut().filter(|r| r.0.is_ok()) {
                *r = (
                    ErrorCode::KAFKA_STORAGE_ERROR,
                    Some(format!("saving metadata: {e}")),
                );
            }
            return results;
        }
        // New requests stop seeing the topic before its files go.
        self.broadcast_meta(meta).await;
        for (shard, list) in removes.into_iter().enumerate() {
            if !list.is_empty() {
                self.call(shard, Req::RemovePartitions(list)).await;
            }
        }
        results
    }

    /// Hands out producer ids from blocks reserved in the metadata file, so an id is never
    /// reused across restarts.
    async fn alloc_producer_id(self: &Rc<Self>) -> Result<i64, String> {
        assert_eq!(self.id, 0, "only shard 0 allocates producer ids");
        const BLOCK: i64 = 1000;
        let _permit = self.control_lock.acquire_permit(1).await.ok();
        let mut meta = (*self.meta()).clone();
        if self.next_producer_id.get() < 0 {
            self.next_producer_id.set(meta.producer_id_block_end);
        }
        let id = self.next_producer_id.get();
        if id >= meta.producer_id_block_end {
            meta.producer_id_block_end = id + BLOCK;
            meta.version += 1;
            self.persist_meta(&meta)
                .await
                .map_err(|e| format!("saving metadata: {e}"))?;
            *self.meta.borrow_mut() = Rc::new(meta);
        }
        self.next_producer_id.set(id + 1);
        Ok(id)
    }

    async fn persist_meta(&self, meta: &ClusterMeta) -> std::io::Result<()> {
        let m = meta.clone();
        let dir = self.config.meta_dir();
        glommio::executor()
            .spawn_blocking(move || m.save(&dir))
            .await
    }

    async fn broadcast_meta(self: &Rc<Self>, meta: ClusterMeta) {
        for shard in 0..self.nr_shards {
            self.call(shard, Req::SetMeta(meta.clone())).await;
        }
    }

    /// Creates missing topics through shard 0 (auto-creation, CreateTopics from any shard).
    pub async fn request_create(
        self: &Rc<Self>,
        specs: Vec<CreateSpec>,
    ) -> Vec<(ErrorCode, Option<String>)> {
        let n = specs.len();
        match self.call(0, Req::CreateTopics(specs)).await {
            Resp::Topics(r) => r,
            other => {
                let m = match other {
                    Resp::Failed(m) => m,
                    _ => "unexpected reply".into(),
                };
                vec![(ErrorCode::UNKNOWN_SERVER_ERROR, Some(m)); n]
            }
        }
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

    /// Background work of a shard: retention checks and interval fdatasync.
    /// Publishes this shard's metrics once a second until the broker stops.
    pub fn spawn_metrics(
        self: &Rc<Self>,
        registry: Arc<crate::metrics::Registry>,
        stop: Arc<AtomicBool>,
    ) {
        let shard = self.clone();
        glommio::spawn_local(async move {
            while !stop.load(Ordering::Relaxed) {
                registry.publish(shard.id, shard.metric_samples());
                glommio::timer::sleep(Duration::from_secs(1)).await;
            }
        })
        .detach();
    }

    fn metric_samples(&self) -> Vec<crate::metrics::Sample> {
        let mut out = Vec::new();
        let sl = format!("shard=\"{}\"", self.id);
        self.metrics.samples(self.id, &mut out);
        let limit = self.config.request_memory_bytes as f64;
        let used = limit - self.request_memory.available() as f64;
        out.push(("flumen_request_memory_used_bytes", sl.clone(), used));
        out.push(("flumen_request_memory_limit_bytes", sl.clone(), limit));
        let cache = self.tail_cache.used_bytes() as f64;
        out.push(("flumen_tail_cache_used_bytes", sl.clone(), cache));
        let parts = self.partitions.borrow();
        out.push(("flumen_shard_partitions", sl.clone(), parts.len() as f64));
        let (mut hits, mut misses) = (0, 0);
        for ((topic, index), p) in parts.iter() {
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
                ("flumen_partition_high_watermark", p.high_watermark() as f64),
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
        out.push(("flumen_tail_cache_hits_total", sl.clone(), hits as f64));
        out.push(("flumen_tail_cache_misses_total", sl, misses as f64));
        out
    }

    pub fn spawn_background(self: &Rc<Self>, stop: Arc<AtomicBool>) {
        let shard = self.clone();
        let stop3 = stop.clone();
        glommio::spawn_local(async move {
            // Group deadlines (sessions, rebalances) at 100 ms resolution; offsets expiry each minute.
            let mut ticks = 0u64;
            while !stop3.load(Ordering::Relaxed) {
                glommio::timer::sleep(Duration::from_millis(100)).await;
                shard.groups.tick();
                ticks += 1;
                if ticks.is_multiple_of(600) {
                    shard.groups.expire_offsets(&shard).await;
                }
            }
        })
        .detach();
        let shard = self.clone();
        let stop4 = stop.clone();
        glommio::spawn_local(async move {
            let every = Duration::from_millis(shard.config.transaction_abort_check_interval_ms);
            while !stop4.load(Ordering::Relaxed) {
                glommio::timer::sleep(every).await;
                shard.txns.tick(&shard).await;
            }
        })
        .detach();
        let shard = self.clone();
        let stop2 = stop.clone();
        glommio::spawn_local(async move {
            let every = Duration::from_millis(shard.config.retention_check_interval_ms.max(10));
            while !stop2.load(Ordering::Relaxed) {
                glommio::timer::sleep(every).await;
                // Let go of handles to segments retention may have deleted, so their space is freed.
                shard.files.borrow_mut().clear();
                let parts: Vec<_> = shard.partitions.borrow().values().cloned().collect();
                for p in parts {
                    if let Err(e) = p.enforce_retention().await {
                        tracing::warn!(topic = %p.topic, partition = p.index, "retention: {e}");
                    }
                }
            }
        })
        .detach();
        if let crate::config::FlushPolicy::IntervalMs(ms) = self.config.flush_policy() {
            let shard = self.clone();
            glommio::spawn_local(async move {
                while !stop.load(Ordering::Relaxed) {
                    glommio::timer::sleep(Duration::from_millis(ms)).await;
                    let parts: Vec<_> = shard.partitions.borrow().values().cloned().collect();
                    for p in parts {
                        p.sync_if_dirty().await;
                    }
                }
            })
            .detach();
        }
    }

    /// Clean shutdown: every partition flushes what it accepted and cuts its preallocation.
    pub async fn close_all(&self) {
        let parts: Vec<_> = self
            .partitions
            .borrow_mut()
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in parts {
            if let Err(e) = p.close().await {
                tracing::error!(topic = %p.topic, partition = p.index, "close: {e}");
            }
        }
    }
}
