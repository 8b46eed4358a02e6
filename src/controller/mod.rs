//! The metadata controller: the one writer of the cluster metadata. It runs on shard 0 (every
//! other shard's instance forwards to it): creates and deletes topics (validate, place, persist,
//! open on the owners, publish), hands out producer ids from persisted blocks, and publishes
//! each new image to every shard.
//!
//! Invariants: one change at a time (`control_lock`); a new image is on disk before any shard
//! sees it; a deleted topic disappears from every image before its files go.

use crate::config::Config;
use crate::metadata::topic_config::check_topic_config;
use crate::metadata::{self, image, ClusterMeta, MetadataImage, TopicMeta};
use crate::partition_manager::{PartitionManager, PartitionSpec};
use crate::protocol::errors::ErrorCode;
use crate::shard::{local, Shard};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// The shard the controller runs on.
const CONTROLLER_SHARD: usize = 0;
/// Producer ids reserved per metadata write.
const PRODUCER_ID_BLOCK: i64 = 1000;
/// Most topics the broker holds (each costs at least a partition, its files and a metadata
/// entry every shard keeps); CreateTopics and auto-creation past it answer POLICY_VIOLATION.
pub const MAX_TOPICS: usize = 10_000;
/// Most partitions the broker holds, over all topics: each costs an open segment, its
/// preallocation and descriptors.
pub const MAX_PARTITIONS: usize = 100_000;

/// A topic to create.
pub struct CreateSpec {
    pub name: String,
    /// -1: the broker default.
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    pub validate_only: bool,
}

/// The outcome for one topic of a CreateTopics or DeleteTopics.
#[derive(Clone, Debug)]
pub struct TopicResult {
    pub error: ErrorCode,
    pub message: Option<String>,
}

impl TopicResult {
    fn ok() -> TopicResult {
        TopicResult {
            error: ErrorCode::NONE,
            message: None,
        }
    }
    fn err(error: ErrorCode, message: String) -> TopicResult {
        TopicResult {
            error,
            message: Some(message),
        }
    }
}

pub struct Controller {
    shard: Rc<Shard>,
    config: Rc<Config>,
    image: Rc<MetadataImage>,
    partitions: Rc<PartitionManager>,
    control_lock: crate::util::FifoLock,
    /// Next producer id to hand out (controller shard).
    next_producer_id: Cell<i64>,
}

impl Controller {
    pub fn new(
        shard: Rc<Shard>,
        config: Rc<Config>,
        image: Rc<MetadataImage>,
        partitions: Rc<PartitionManager>,
    ) -> Rc<Controller> {
        Rc::new(Controller {
            shard,
            config,
            image,
            partitions,
            control_lock: crate::util::FifoLock::default(),
            next_producer_id: Cell::new(-1),
        })
    }

    /// Creates topics (from any shard: carried out by the controller shard).
    pub async fn create_topics(&self, specs: Vec<CreateSpec>) -> Vec<TopicResult> {
        let n = specs.len();
        let r = self
            .shard
            .invoke_on(CONTROLLER_SHARD, move || async move {
                local::<Controller>().create_local(specs).await
            })
            .await;
        r.unwrap_or_else(|e| vec![TopicResult::err(ErrorCode::UNKNOWN_SERVER_ERROR, e.0); n])
    }

    /// Deletes topics (from any shard). Internal topics are refused (Kafka's rule).
    pub async fn delete_topics(&self, names: Vec<String>) -> Vec<TopicResult> {
        let n = names.len();
        let r = self
            .shard
            .invoke_on(CONTROLLER_SHARD, move || async move {
                local::<Controller>().delete_local(names).await
            })
            .await;
        r.unwrap_or_else(|e| vec![TopicResult::err(ErrorCode::UNKNOWN_SERVER_ERROR, e.0); n])
    }

    /// A new producer id, never handed out before (from any shard).
    pub async fn alloc_producer_id(&self) -> Result<i64, String> {
        self.shard
            .invoke_on(CONTROLLER_SHARD, || async {
                local::<Controller>().alloc_producer_id_local().await
            })
            .await
            .map_err(|e| e.0)?
    }

    /// Creates the internal topics that do not exist yet, with `partitions` each (first
    /// start; afterwards their partition counts are fixed).
    pub async fn ensure_internal_topics(&self, topics: &[(&str, i32)]) {
        for &(name, partitions) in topics {
            if self.image.get().topics.contains_key(name) {
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
            for r in self.create_topics(vec![spec]).await {
                if !r.error.is_ok() && r.error != ErrorCode::TOPIC_ALREADY_EXISTS {
                    tracing::error!("creating {name}: {:?}", r.message);
                }
            }
        }
    }

    fn validate(&self, meta: &ClusterMeta, spec: &CreateSpec, partitions: i32) -> TopicResult {
        let total: usize = meta.topics.values().map(|t| t.placement.len()).sum();
        if !image::valid_topic_name(&spec.name) {
            TopicResult::err(
                ErrorCode::INVALID_TOPIC_EXCEPTION,
                format!("invalid topic name {:?}", spec.name),
            )
        } else if meta.topics.contains_key(&spec.name) {
            TopicResult::err(
                ErrorCode::TOPIC_ALREADY_EXISTS,
                format!("topic {} already exists", spec.name),
            )
        } else if partitions < 1 || partitions > self.config.max_partitions_per_topic {
            TopicResult::err(
                ErrorCode::INVALID_PARTITIONS,
                format!(
                    "partitions must be 1..={}",
                    self.config.max_partitions_per_topic
                ),
            )
        } else if meta.topics.len() >= MAX_TOPICS {
            TopicResult::err(
                ErrorCode::POLICY_VIOLATION,
                format!("the broker holds its limit of {MAX_TOPICS} topics"),
            )
        } else if total + partitions as usize > MAX_PARTITIONS {
            TopicResult::err(
                ErrorCode::INVALID_PARTITIONS,
                format!(
                    "the broker holds {total} partitions; {partitions} more would pass its limit of {MAX_PARTITIONS}"
                ),
            )
        } else if spec.replication_factor != -1 && spec.replication_factor != 1 {
            TopicResult::err(
                ErrorCode::INVALID_REPLICATION_FACTOR,
                "replication factor must be 1 on a single broker".into(),
            )
        } else if let Some(e) = spec
            .configs
            .iter()
            .find_map(|(k, v)| check_topic_config(k, v).err())
        {
            TopicResult::err(ErrorCode::INVALID_CONFIG, e)
        } else {
            TopicResult::ok()
        }
    }

    /// Validate, place, persist, open on the owners, publish.
    async fn create_local(&self, specs: Vec<CreateSpec>) -> Vec<TopicResult> {
        assert_eq!(
            self.shard.id, CONTROLLER_SHARD,
            "only the controller changes metadata"
        );
        let _turn = self.control_lock.lock().await;
        let nr_shards = self.shard.nr_shards;
        let mut meta = (*self.image.get()).clone();
        let mut results = Vec::with_capacity(specs.len());
        let mut opens: Vec<Vec<PartitionSpec>> = (0..nr_shards).map(|_| Vec::new()).collect();
        let mut changed = false;
        for spec in specs {
            let partitions = if spec.partitions == -1 {
                self.config.default_partitions
            } else {
                spec.partitions
            };
            let verdict = self.validate(&meta, &spec, partitions);
            if verdict.error.is_ok() && !spec.validate_only {
                let mut load = meta.load_per_shard(nr_shards);
                let mut placement = Vec::with_capacity(partitions as usize);
                for p in 0..partitions {
                    let shard = (0..nr_shards).min_by_key(|&s| (load[s], s)).unwrap_or(0);
                    load[shard] += 1;
                    placement.push(shard);
                    opens[shard].push(PartitionSpec {
                        topic: spec.name.clone(),
                        partition: p,
                        configs: spec.configs.clone(),
                    });
                }
                meta.topics.insert(
                    spec.name.clone(),
                    TopicMeta {
                        id: image::random_hex(16),
                        leader_epochs: vec![0; placement.len()],
                        placement,
                        configs: spec.configs.clone(),
                        ..Default::default()
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
        if !self.persist_or_fail(&mut meta, &mut results).await {
            return results;
        }
        for (shard, list) in opens.into_iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            if let Err(m) = self.partitions.open_on(shard, list).await {
                tracing::error!("opening partitions on shard {shard}: {m}");
            }
        }
        self.publish(meta).await;
        results
    }

    async fn delete_local(&self, names: Vec<String>) -> Vec<TopicResult> {
        assert_eq!(
            self.shard.id, CONTROLLER_SHARD,
            "only the controller changes metadata"
        );
        let _turn = self.control_lock.lock().await;
        let mut meta = (*self.image.get()).clone();
        let mut removes: Vec<Vec<(String, i32)>> = vec![Vec::new(); self.shard.nr_shards];
        let mut results = Vec::with_capacity(names.len());
        for name in names {
            if metadata::is_internal(&name) {
                // Kafka refuses to delete its internal topics the same way.
                results.push(TopicResult::err(
                    ErrorCode::INVALID_REQUEST,
                    format!("{name} is an internal topic and cannot be deleted"),
                ));
                continue;
            }
            match meta.topics.remove(&name) {
                Some(t) => {
                    for (p, &s) in t.placement.iter().enumerate() {
                        removes[s].push((name.clone(), p as i32));
                    }
                    tracing::info!(topic = %name, "deleted topic");
                    results.push(TopicResult::ok());
                }
                None => results.push(TopicResult::err(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic {name} does not exist"),
                )),
            }
        }
        if removes.iter().all(Vec::is_empty) {
            return results;
        }
        if !self.persist_or_fail(&mut meta, &mut results).await {
            return results;
        }
        // New requests stop seeing the topic before its files go.
        self.publish(meta).await;
        for (shard, list) in removes.into_iter().enumerate() {
            if !list.is_empty() {
                self.partitions.remove_on(shard, list).await;
            }
        }
        results
    }

    /// Hands out producer ids from blocks reserved in the metadata file, so an id is never
    /// reused across restarts.
    async fn alloc_producer_id_local(&self) -> Result<i64, String> {
        assert_eq!(
            self.shard.id, CONTROLLER_SHARD,
            "only the controller allocates producer ids"
        );
        let _turn = self.control_lock.lock().await;
        let mut meta = (*self.image.get()).clone();
        if self.next_producer_id.get() < 0 {
            self.next_producer_id.set(meta.producer_id_block_end);
        }
        let id = self.next_producer_id.get();
        if id >= meta.producer_id_block_end {
            meta.producer_id_block_end = id + PRODUCER_ID_BLOCK;
            meta.version += 1;
            self.persist(&meta)
                .await
                .map_err(|e| format!("saving metadata: {e}"))?;
            self.image.publish(Rc::new(meta));
        }
        self.next_producer_id.set(id + 1);
        Ok(id)
    }

    /// Saves the next version of the metadata; when that fails, every topic that was going
    /// to change answers KAFKA_STORAGE_ERROR instead and nothing is published.
    async fn persist_or_fail(&self, meta: &mut ClusterMeta, results: &mut [TopicResult]) -> bool {
        meta.version += 1;
        match self.persist(meta).await {
            Ok(()) => true,
            Err(e) => {
                for r in results.iter_mut().filter(|r| r.error.is_ok()) {
                    *r = TopicResult::err(
                        ErrorCode::KAFKA_STORAGE_ERROR,
                        format!("saving metadata: {e}"),
                    );
                }
                false
            }
        }
    }

    async fn persist(&self, meta: &ClusterMeta) -> std::io::Result<()> {
        let m = meta.clone();
        let dir = self.config.meta_dir();
        glommio::executor()
            .spawn_blocking(move || m.save(&dir))
            .await
    }

    /// Gives every shard the new image.
    async fn publish(&self, meta: ClusterMeta) {
        for shard in 0..self.shard.nr_shards {
            let m = meta.clone();
            let r = self
                .shard
                .invoke_on(shard, move || async move {
                    local::<MetadataImage>().publish(Rc::new(m));
                })
                .await;
            if let Err(e) = r {
                tracing::error!("publishing metadata to shard {shard}: {e}");
            }
        }
    }
}
