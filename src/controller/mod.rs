//! The metadata controller: the one writer of the cluster metadata. It runs on shard 0 (every
//! other shard's instance forwards to it): creates and deletes topics (validate, place, persist,
//! open on the owners, publish), hands out producer ids from persisted blocks, and publishes
//! each new image to every shard.
//!
//! Invariants: one change at a time (`control_lock`); a new image is on disk before any shard
//! sees it; a deleted topic disappears from every image before its files go.

use crate::cluster::node::ClusterNode;
use crate::cluster::state::{Command as ClusterCommand, NewTopic};
use crate::config::Config;
use crate::metadata::topic_config::{
    altered_configs, broker_schema, check_topic_config, topic_schema, ConfigOp,
};
use crate::metadata::{
    self, image, internal_topic_configs, ClusterMeta, MetadataImage, TopicMeta, MAX_PARTITIONS,
    MAX_TOPICS,
};
use crate::partition_manager::{IsrChange, PartitionManager, PartitionSpec};
use crate::protocol::errors::ErrorCode;
use crate::shard::{local, Shard};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

/// The shard the controller runs on.
const CONTROLLER_SHARD: usize = 0;
/// Producer ids reserved per metadata write.
const PRODUCER_ID_BLOCK: i64 = 1000;
/// A topic to create.
pub struct CreateSpec {
    pub name: String,
    /// -1: the broker default.
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    pub validate_only: bool,
    /// Explicit replicas per partition (CreateTopics' assignments), placed as given.
    pub assignment: Option<Vec<Vec<i32>>>,
}

impl CreateSpec {
    /// The partitions asked for, or `default` for -1.
    pub fn partitions_or(&self, default: i32) -> i32 {
        if self.partitions == -1 {
            default
        } else {
            self.partitions
        }
    }
}

/// A CreatePartitions entry: grow `topic` to `count` partitions.
pub struct GrowSpec {
    pub topic: String,
    pub count: i32,
    /// Replicas of each new partition, when given.
    pub assignment: Option<Vec<Vec<i32>>>,
    pub validate_only: bool,
}

/// What an AlterConfigs or IncrementalAlterConfigs entry changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigTarget {
    /// A topic's overrides.
    Topic(String),
    /// Dynamic broker configs: "" for the cluster's defaults, a broker's id for its own.
    Broker(String),
}

/// An AlterConfigs or IncrementalAlterConfigs entry for one resource.
pub struct ConfigChange {
    pub target: ConfigTarget,
    /// In order; AlterConfigs' entries are all `Set`.
    pub ops: Vec<(String, ConfigOp)>,
    /// AlterConfigs: the entries replace every override (those not named go back to the
    /// broker's values). IncrementalAlterConfigs: only the named configs change.
    pub replace: bool,
    pub validate_only: bool,
}

/// How often a config change computed from overrides that changed meanwhile is computed
/// again before the client is told.
const CONFIG_CHANGE_TRIES: usize = 5;

/// What one DeleteAcls filter removed, or why nothing was.
pub type AclsRemoved = Result<Vec<crate::security::acl::AclBinding>, TopicResult>;

/// The outcome for one topic of a CreateTopics or DeleteTopics.
#[derive(Clone, Debug)]
pub struct TopicResult {
    pub error: ErrorCode,
    pub message: Option<String>,
}

impl TopicResult {
    pub fn ok() -> TopicResult {
        TopicResult {
            error: ErrorCode::NONE,
            message: None,
        }
    }
    pub fn err(error: ErrorCode, message: String) -> TopicResult {
        TopicResult {
            error,
            message: Some(message),
        }
    }
}

/// A reassignment in progress (ListPartitionReassignments).
pub struct Reassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// A requested move: (topic, partition, new replicas, or None to cancel).
pub type Move = (String, i32, Option<Vec<i32>>);

pub struct Controller {
    shard: Rc<Shard>,
    config: Rc<Config>,
    image: Rc<MetadataImage>,
    partitions: Rc<PartitionManager>,
    control_lock: crate::util::FifoLock,
    /// Next producer id to hand out (controller shard).
    next_producer_id: Cell<i64>,
    /// In a cluster (shard 0): the node whose quorum holds the metadata. None on a single
    /// node, where the metadata file is the record.
    cluster: RefCell<Option<Rc<ClusterNode>>>,
    /// In a cluster: the end of the producer-id block this broker holds.
    producer_id_end: Cell<i64>,
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
            cluster: RefCell::new(None),
            producer_id_end: Cell::new(-1),
        })
    }

    /// Makes this (shard 0's) controller a member of a cluster: metadata changes go to the
    /// quorum from now on.
    pub fn attach_cluster(&self, node: Rc<ClusterNode>) {
        *self.cluster.borrow_mut() = Some(node);
    }

    fn cluster(&self) -> Option<Rc<ClusterNode>> {
        self.cluster.borrow().clone()
    }

    /// Waits (on the calling shard) until its image has reached `version`, so a client that
    /// created a topic here finds it here at once.
    async fn see_version(&self, version: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.image.get().version < version && std::time::Instant::now() < deadline {
            glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Creates topics (from any shard: carried out by the controller shard).
    pub async fn create_topics(&self, specs: Vec<CreateSpec>) -> Vec<TopicResult> {
        let n = specs.len();
        self.change(n, move |c| async move { c.create_local(specs).await })
            .await
    }

    /// Runs a metadata change on the controller shard; answers its per-item results once this
    /// shard's image holds the change (every item fails alike if the shard is unreachable).
    async fn change<F, Fut>(&self, n: usize, f: F) -> Vec<TopicResult>
    where
        F: FnOnce(Rc<Controller>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = (Vec<TopicResult>, u64)> + 'static,
    {
        let r = self
            .shard
            .invoke_on(CONTROLLER_SHARD, move || f(local::<Controller>()))
            .await;
        match r {
            Ok((results, version)) => {
                self.see_version(version).await;
                results
            }
            Err(e) => vec![TopicResult::err(ErrorCode::UNKNOWN_SERVER_ERROR, e.0); n],
        }
    }

    /// Deletes topics (from any shard). Internal topics are refused (Kafka's rule).
    pub async fn delete_topics(&self, names: Vec<String>) -> Vec<TopicResult> {
        let n = names.len();
        self.change(n, move |c| async move { c.delete_local(names).await })
            .await
    }

    /// Grows topics (CreatePartitions, from any shard).
    pub async fn create_partitions(&self, specs: Vec<GrowSpec>) -> Vec<TopicResult> {
        let n = specs.len();
        self.change(n, move |c| async move { c.grow_local(specs).await })
            .await
    }

    /// Alters topic configs and dynamic broker configs (from any shard): committed,
    /// persisted, and in force on every replica from the image that carries them.
    pub async fn alter_configs(&self, changes: Vec<ConfigChange>) -> Vec<TopicResult> {
        let n = changes.len();
        self.change(
            n,
            move |c| async move { c.alter_configs_local(changes).await },
        )
        .await
    }

    /// Sets and deletes SCRAM credentials (from any shard): one result per change, in order.
    pub async fn alter_scram(
        &self,
        changes: Vec<crate::security::ScramChange>,
    ) -> Vec<TopicResult> {
        let n = changes.len();
        self.change(
            n,
            move |c| async move { c.alter_scram_local(changes).await },
        )
        .await
    }

    /// AlterClientQuotas (from any shard): one result per (validated) entity change.
    pub async fn alter_client_quotas(
        &self,
        changes: Vec<crate::security::quota::QuotaChange>,
    ) -> Vec<TopicResult> {
        let n = changes.len();
        self.change(
            n,
            move |c| async move { c.alter_quotas_local(changes).await },
        )
        .await
    }

    /// CreateAcls and DeleteAcls (from any shard): adds `create`, and removes every binding
    /// that one of `delete`'s filters matches. Answers one result per binding created, and per
    /// filter the bindings it removed.
    pub async fn alter_acls(
        &self,
        create: Vec<crate::security::acl::AclBinding>,
        delete: Vec<crate::security::acl::AclFilter>,
    ) -> (Vec<TopicResult>, Vec<AclsRemoved>) {
        let (n, filters) = (create.len(), delete.len());
        let r = self
            .shard
            .invoke_on(CONTROLLER_SHARD, move || async move {
                local::<Controller>().alter_acls_local(create, delete).await
            })
            .await;
        match r {
            Ok((results, removed, version)) => {
                self.see_version(version).await;
                (results, removed)
            }
            Err(e) => {
                let failed = TopicResult::err(ErrorCode::UNKNOWN_SERVER_ERROR, e.0);
                (vec![failed.clone(); n], vec![Err(failed); filters])
            }
        }
    }

    /// ElectLeaders (from any shard): one result per partition asked for, or, for None, per
    /// partition whose preferred replica could lead and does not.
    pub async fn elect_leaders(
        &self,
        unclean: bool,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Vec<((String, i32), TopicResult)> {
        let asked = partitions.clone().unwrap_or_default();
        let r = self
            .shard
            .invoke_on(CONTROLLER_SHARD, move || async move {
                local::<Controller>().elect_local(unclean, partitions).await
            })
            .await;
        match r {
            Ok((results, version)) => {
                self.see_version(version).await;
                results
            }
            // Every partition asked about gets the failure (none is left out of the answer).
            Err(e) => asked
                .into_iter()
                .map(|tp| {
                    let r = TopicResult::err(ErrorCode::UNKNOWN_SERVER_ERROR, e.0.clone());
                    (tp, r)
                })
                .collect(),
        }
    }

    /// AlterPartitionReassignments (from any shard): one result per move.
    pub async fn alter_reassignments(&self, moves: Vec<Move>) -> Vec<TopicResult> {
        let n = moves.len();
        self.change(n, move |c| async move { c.reassign_local(moves).await })
            .await
    }

    async fn reassign_local(&self, moves: Vec<Move>) -> (Vec<TopicResult>, u64) {
        let Some(node) = self.cluster() else {
            // One broker holds every partition: it can only stay there.
            let meta = self.image.get();
            let results = moves
                .iter()
                .map(|(t, p, target)| match (meta.owner(t, *p), target) {
                    (None, _) => TopicResult::err(
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("{t}-{p} does not exist"),
                    ),
                    (Some(_), None) => TopicResult::err(
                        ErrorCode::NO_REASSIGNMENT_IN_PROGRESS,
                        format!("no reassignment of {t}-{p} is in progress"),
                    ),
                    (Some(_), Some(r)) if r == &vec![meta.node_id] => TopicResult::ok(),
                    (Some(_), Some(r)) => TopicResult::err(
                        ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                        format!(
                            "{r:?}: a single broker (id {}) holds every partition",
                            meta.node_id
                        ),
                    ),
                })
                .collect();
            return (results, 0);
        };
        let mut results = vec![TopicResult::ok(); moves.len()];
        let slots: Vec<usize> = (0..moves.len()).collect();
        let cmd = ClusterCommand::AlterReassignments { moves };
        let version = self.commit(&node, cmd, &slots, &mut results).await;
        (results, version)
    }

    /// ListPartitionReassignments (from any shard): the reassignments in progress, of the
    /// listed partitions only when `only` is given.
    pub async fn list_reassignments(&self, only: Option<Vec<(String, i32)>>) -> Vec<Reassignment> {
        let r = self
            .shard
            .invoke_on(CONTROLLER_SHARD, move || async move {
                let Some(node) = local::<Controller>().cluster() else {
                    return Vec::new();
                };
                let state = node.state();
                let mut out = Vec::new();
                for (name, t) in &state.topics {
                    for (i, p) in t.partitions.iter().enumerate() {
                        let wanted = only
                            .as_ref()
                            .is_none_or(|o| o.iter().any(|(n, q)| n == name && *q == i as i32));
                        if p.reassigning() && wanted {
                            out.push(Reassignment {
                                topic: name.clone(),
                                partition: i as i32,
                                replicas: p.replicas.clone(),
                                adding: p.adding.clone(),
                                removing: p.removing.clone(),
                            });
                        }
                    }
                }
                out
            })
            .await;
        r.unwrap_or_default()
    }

    /// Commits a leader's ISR change (from any shard); Err says why it was not.
    pub async fn alter_partition(&self, change: IsrChange) -> Result<(), String> {
        self.shard
            .invoke_on(CONTROLLER_SHARD, move || async move {
                let c = local::<Controller>();
                let node = c.cluster().ok_or("not in a cluster")?;
                let cmd = ClusterCommand::AlterPartition {
                    broker: c.image.get().node_id,
                    topic: change.topic,
                    partition: change.partition,
                    leader_epoch: change.leader_epoch,
                    partition_epoch: change.partition_epoch,
                    isr: change.isr,
                };
                let (_, reply) = node.write(cmd).await.map_err(|e| e.to_string())?;
                match reply.results.first() {
                    Some((0, _)) => Ok(()),
                    Some((code, m)) => Err(format!(
                        "error {code}: {}",
                        m.as_deref().unwrap_or_default()
                    )),
                    None => Err("no answer".into()),
                }
            })
            .await
            .map_err(|e| e.0)?
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
        if self.config.is_cluster() {
            // The active controller creates them for the whole cluster.
            return;
        }
        for &(name, partitions) in topics {
            if self.image.get().topics.contains_key(name) {
                continue;
            }
            let spec = CreateSpec {
                name: name.into(),
                partitions,
                replication_factor: 1,
                configs: internal_topic_configs(&self.config, name),
                validate_only: false,
                assignment: None,
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
        } else if !self.config.is_cluster()
            && spec.replication_factor != -1
            && spec.replication_factor != 1
        {
            TopicResult::err(
                ErrorCode::INVALID_REPLICATION_FACTOR,
                "replication factor must be 1 on a single broker".into(),
            )
        } else if self.config.is_cluster()
            && (spec.replication_factor == 0 || spec.replication_factor < -1)
        {
            TopicResult::err(
                ErrorCode::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {} is not allowed",
                    spec.replication_factor
                ),
            )
        } else if self.config.is_cluster()
            && spec.replication_factor > 0
            && spec.replication_factor as usize > meta.brokers.len().max(1)
        {
            TopicResult::err(
                ErrorCode::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {} is larger than the {} live brokers",
                    spec.replication_factor,
                    meta.brokers.len()
                ),
            )
        } else if let Some(b) = spec.assignment.iter().flatten().flatten().find(|b| {
            !self.config.is_cluster() && **b != meta.node_id
                || self.config.is_cluster() && meta.broker(**b).is_none()
        }) {
            TopicResult::err(
                ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                format!("the assignment names broker {b}, which is not a live broker"),
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

    /// Validate, place, persist, open on the owners, publish; answers the results and the
    /// image version that holds them.
    async fn create_local(&self, specs: Vec<CreateSpec>) -> (Vec<TopicResult>, u64) {
        assert_eq!(
            self.shard.id, CONTROLLER_SHARD,
            "only the controller changes metadata"
        );
        if let Some(node) = self.cluster() {
            return self.create_in_cluster(&node, specs).await;
        }
        let _turn = self.control_lock.lock().await;
        let nr_shards = self.shard.nr_shards;
        let mut meta = (*self.image.get()).clone();
        let mut results = Vec::with_capacity(specs.len());
        let mut opens: Vec<Vec<PartitionSpec>> = (0..nr_shards).map(|_| Vec::new()).collect();
        let mut changed = false;
        for spec in specs {
            let partitions = spec.partitions_or(self.config.default_partitions);
            let verdict = self.validate(&meta, &spec, partitions);
            if verdict.error.is_ok() && !spec.validate_only {
                let topic_id = image::random_hex(16);
                let mut load = meta.load_per_shard(nr_shards);
                let mut placement = Vec::with_capacity(partitions as usize);
                for p in 0..partitions {
                    let shard = (0..nr_shards).min_by_key(|&s| (load[s], s)).unwrap_or(0);
                    load[shard] += 1;
                    placement.push(shard);
                    opens[shard].push(PartitionSpec {
                        topic: spec.name.clone(),
                        topic_id: topic_id.clone(),
                        partition: p,
                        configs: spec.configs.clone(),
                    });
                }
                meta.topics.insert(
                    spec.name.clone(),
                    TopicMeta {
                        id: topic_id,
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
            return (results, 0);
        }
        self.commit_local(meta, opens, results).await
    }

    /// Cluster mode: validate here, then commit through the quorum, which places the
    /// partitions (inside its apply, from the state every node shares).
    async fn create_in_cluster(
        &self,
        node: &ClusterNode,
        specs: Vec<CreateSpec>,
    ) -> (Vec<TopicResult>, u64) {
        let meta = self.image.get();
        let mut results = Vec::with_capacity(specs.len());
        let mut proposed = Vec::new();
        for spec in specs {
            let partitions = spec.partitions_or(self.config.default_partitions);
            let verdict = self.validate(&meta, &spec, partitions);
            if verdict.error.is_ok() && !spec.validate_only {
                proposed.push((
                    results.len(),
                    NewTopic {
                        name: spec.name.clone(),
                        id: image::random_hex(16),
                        partitions,
                        replication_factor: if spec.replication_factor == -1 {
                            self.config.default_replication_factor
                        } else {
                            spec.replication_factor
                        },
                        assignment: spec.assignment.clone(),
                        configs: spec.configs.clone(),
                    },
                ));
            }
            results.push(verdict);
        }
        if proposed.is_empty() {
            return (results, 0);
        }
        let (slots, topics): (Vec<usize>, Vec<NewTopic>) = proposed.into_iter().unzip();
        let cmd = ClusterCommand::CreateTopics {
            topics,
            max_partitions: MAX_PARTITIONS,
            max_topics: MAX_TOPICS,
        };
        let version = self.commit(node, cmd, &slots, &mut results).await;
        (results, version)
    }

    /// Commits a command whose reply has one result per slot of `results`; a failed commit
    /// fails each of them. Answers the log index it was applied at (0 when it was not).
    async fn commit(
        &self,
        node: &ClusterNode,
        cmd: ClusterCommand,
        slots: &[usize],
        results: &mut [TopicResult],
    ) -> u64 {
        match node.write(cmd).await {
            Ok((index, reply)) => {
                for (&slot, (code, message)) in slots.iter().zip(reply.results) {
                    results[slot] = TopicResult {
                        error: ErrorCode(code),
                        message,
                    };
                }
                index
            }
            Err(e) => {
                for &slot in slots {
                    results[slot] = TopicResult::err(
                        ErrorCode::REQUEST_TIMED_OUT,
                        format!("the metadata quorum did not commit the change: {e}"),
                    );
                }
                0
            }
        }
    }

    async fn delete_local(&self, names: Vec<String>) -> (Vec<TopicResult>, u64) {
        assert_eq!(
            self.shard.id, CONTROLLER_SHARD,
            "only the controller changes metadata"
        );
        if let Some(node) = self.cluster() {
            let mut results = Vec::with_capacity(names.len());
            let mut slots = Vec::new();
            let mut to_delete = Vec::new();
            for name in names {
                if metadata::is_internal(&name) {
                    results.push(TopicResult::err(
                        ErrorCode::INVALID_REQUEST,
                        format!("{name} is an internal topic and cannot be deleted"),
                    ));
                } else {
                    slots.push(results.len());
                    results.push(TopicResult::ok());
                    to_delete.push(name);
                }
            }
            if to_delete.is_empty() {
                return (results, 0);
            }
            let cmd = ClusterCommand::DeleteTopics { names: to_delete };
            let version = self.commit(&node, cmd, &slots, &mut results).await;
            return (results, version);
        }
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
            return (results, 0);
        }
        if !self.persist_or_fail(&mut meta, &mut results).await {
            return (results, 0);
        }
        let version = meta.version;
        // New requests stop seeing the topic before its files go.
        self.publish(meta).await;
        for (shard, list) in removes.into_iter().enumerate() {
            if !list.is_empty() {
                self.partitions.remove_on(shard, list).await;
            }
        }
        (results, version)
    }

    /// Checks a CreatePartitions entry against the current image.
    fn validate_growth(&self, meta: &ClusterMeta, spec: &GrowSpec) -> TopicResult {
        let Some(t) = meta.topics.get(&spec.topic) else {
            return TopicResult::err(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic {} does not exist", spec.topic),
            );
        };
        let have = t.placement.len() as i32;
        let total: usize = meta.topics.values().map(|t| t.placement.len()).sum();
        if metadata::is_internal(&spec.topic) {
            TopicResult::err(
                ErrorCode::POLICY_VIOLATION,
                format!(
                    "{} is internal: more partitions would move every key's coordinator",
                    spec.topic
                ),
            )
        } else if spec.count <= have {
            TopicResult::err(
                ErrorCode::INVALID_PARTITIONS,
                format!(
                    "topic {} has {have} partitions; the new count must be larger, not {}",
                    spec.topic, spec.count
                ),
            )
        } else if spec.count > self.config.max_partitions_per_topic {
            TopicResult::err(
                ErrorCode::INVALID_PARTITIONS,
                format!(
                    "partitions must be 1..={}",
                    self.config.max_partitions_per_topic
                ),
            )
        } else if total + (spec.count - have) as usize > MAX_PARTITIONS {
            TopicResult::err(
                ErrorCode::INVALID_PARTITIONS,
                format!(
                    "{} more partitions would pass the limit of {MAX_PARTITIONS}",
                    spec.count - have
                ),
            )
        } else if let Some(b) = spec.assignment.iter().flatten().flatten().find(|b| {
            !self.config.is_cluster() && **b != meta.node_id
                || self.config.is_cluster() && meta.broker(**b).is_none()
        }) {
            TopicResult::err(
                ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                format!("the assignment names broker {b}, which is not a live broker"),
            )
        } else {
            TopicResult::ok()
        }
    }

    async fn grow_local(&self, specs: Vec<GrowSpec>) -> (Vec<TopicResult>, u64) {
        let node = self.cluster();
        let _turn = self.control_lock.lock().await;
        let mut meta = (*self.image.get()).clone();
        let nr_shards = self.shard.nr_shards;
        let mut results = Vec::with_capacity(specs.len());
        let mut opens: Vec<Vec<PartitionSpec>> = (0..nr_shards).map(|_| Vec::new()).collect();
        let mut version = 0;
        for spec in specs {
            let mut verdict = self.validate_growth(&meta, &spec);
            if verdict.error.is_ok() && !spec.validate_only {
                if let Some(node) = &node {
                    let cmd = ClusterCommand::CreatePartitions {
                        topic: spec.topic.clone(),
                        count: spec.count,
                        assignment: spec.assignment.clone(),
                        max_partitions: MAX_PARTITIONS,
                    };
                    let mut one = [verdict];
                    version = version.max(self.commit(node, cmd, &[0], &mut one).await);
                    [verdict] = one;
                } else {
                    let mut load = meta.load_per_shard(nr_shards);
                    let t = meta.topics.get_mut(&spec.topic).expect("validated");
                    for p in t.placement.len() as i32..spec.count {
                        let shard = (0..nr_shards).min_by_key(|&s| (load[s], s)).unwrap_or(0);
                        load[shard] += 1;
                        t.placement.push(shard);
                        if !t.leader_epochs.is_empty() {
                            t.leader_epochs.push(0);
                        }
                        opens[shard].push(PartitionSpec {
                            topic: spec.topic.clone(),
                            topic_id: t.id.clone(),
                            partition: p,
                            configs: t.configs.clone(),
                        });
                    }
                    tracing::info!(topic = %spec.topic, partitions = spec.count, "grew topic");
                }
            }
            results.push(verdict);
        }
        if node.is_some() || opens.iter().all(Vec::is_empty) {
            return (results, version);
        }
        self.commit_local(meta, opens, results).await
    }

    async fn alter_configs_local(&self, changes: Vec<ConfigChange>) -> (Vec<TopicResult>, u64) {
        let node = self.cluster();
        let _turn = self.control_lock.lock().await;
        let mut meta = (*self.image.get()).clone();
        let mut results = Vec::with_capacity(changes.len());
        let (mut version, mut changed) = (0, false);
        for ch in changes {
            let mut tries = 0;
            let verdict = loop {
                tries += 1;
                // In a cluster, the configs as this node's copy of the state has them (the
                // image may trail it); a stale copy is caught when the change applies.
                let state = node.as_ref().map(|n| n.state());
                let brokers = state
                    .as_ref()
                    .map_or(&meta.broker_configs, |s| &s.broker_configs);
                let current = match (&ch.target, &state) {
                    (ConfigTarget::Topic(t), Some(s)) => s.topics.get(t).map(|t| t.configs.clone()),
                    (ConfigTarget::Topic(t), None) => meta.topics.get(t).map(|t| t.configs.clone()),
                    (ConfigTarget::Broker(b), _) => {
                        Some(brokers.get(b).cloned().unwrap_or_default())
                    }
                };
                let (ConfigTarget::Topic(name) | ConfigTarget::Broker(name)) = &ch.target;
                let Some(before) = current else {
                    break TopicResult::err(
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("topic {name} does not exist"),
                    );
                };
                let schema = match &ch.target {
                    ConfigTarget::Topic(_) => {
                        let dynamic = crate::metadata::topic_config::dynamic_topic_defaults(
                            brokers,
                            meta.node_id,
                        );
                        topic_schema(&self.config, &dynamic)
                    }
                    ConfigTarget::Broker(b) => broker_schema(&self.config, brokers, b),
                };
                let after = match altered_configs(&before, &ch.ops, ch.replace, &schema) {
                    Ok(a) => a,
                    Err(m) => break TopicResult::err(ErrorCode::INVALID_CONFIG, m),
                };
                drop(schema);
                if ch.validate_only || after == before {
                    break TopicResult::ok();
                }
                let Some(node) = &node else {
                    match &ch.target {
                        ConfigTarget::Topic(t) => {
                            if let Some(t) = meta.topics.get_mut(t) {
                                t.configs = after;
                            }
                        }
                        ConfigTarget::Broker(b) if after.is_empty() => {
                            meta.broker_configs.remove(b);
                        }
                        ConfigTarget::Broker(b) => {
                            meta.broker_configs.insert(b.clone(), after);
                        }
                    }
                    changed = true;
                    break TopicResult::ok();
                };
                let cmd = match &ch.target {
                    ConfigTarget::Topic(_) => ClusterCommand::AlterTopicConfigs {
                        topic: name.clone(),
                        before,
                        after,
                    },
                    ConfigTarget::Broker(_) => ClusterCommand::AlterBrokerConfigs {
                        resource: name.clone(),
                        before,
                        after,
                    },
                };
                let mut one = [TopicResult::ok()];
                version = version.max(self.commit(node, cmd, &[0], &mut one).await);
                let [r] = one;
                if r.error != ErrorCode::INVALID_UPDATE_VERSION || tries >= CONFIG_CHANGE_TRIES {
                    break r;
                }
                glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
            };
            if verdict.error.is_ok() && !ch.validate_only {
                match &ch.target {
                    ConfigTarget::Topic(t) => tracing::info!(topic = %t, "altered topic configs"),
                    ConfigTarget::Broker(b) if b.is_empty() => {
                        tracing::info!("altered the cluster's dynamic broker configs")
                    }
                    ConfigTarget::Broker(b) => {
                        tracing::info!(broker = %b, "altered dynamic broker configs")
                    }
                }
            }
            results.push(verdict);
        }
        if node.is_some() || !changed {
            return (results, version);
        }
        let nr = self.shard.nr_shards;
        self.commit_local(meta, (0..nr).map(|_| Vec::new()).collect(), results)
            .await
    }

    async fn alter_scram_local(
        &self,
        changes: Vec<crate::security::ScramChange>,
    ) -> (Vec<TopicResult>, u64) {
        let _turn = self.control_lock.lock().await;
        if let Some(node) = self.cluster() {
            let mut results = vec![TopicResult::ok(); changes.len()];
            let slots: Vec<usize> = (0..changes.len()).collect();
            let cmd = ClusterCommand::AlterScramCredentials { changes };
            let version = self.commit(&node, cmd, &slots, &mut results).await;
            return (results, version);
        }
        let mut meta = (*self.image.get()).clone();
        let results: Vec<TopicResult> = changes
            .iter()
            .map(|c| match c.apply(&mut meta.scram_users) {
                Ok(()) => TopicResult::ok(),
                Err(m) => TopicResult::err(ErrorCode::RESOURCE_NOT_FOUND, m),
            })
            .collect();
        if results.iter().all(|r| !r.error.is_ok()) {
            return (results, 0);
        }
        for c in &changes {
            tracing::info!(user = %c.user(), "altered SCRAM credentials");
        }
        let nr = self.shard.nr_shards;
        self.commit_local(meta, (0..nr).map(|_| Vec::new()).collect(), results)
            .await
    }

    async fn alter_quotas_local(
        &self,
        changes: Vec<crate::security::quota::QuotaChange>,
    ) -> (Vec<TopicResult>, u64) {
        let _turn = self.control_lock.lock().await;
        for c in &changes {
            tracing::info!(entity = %c.entity, ops = ?c.ops, "altering client quotas");
        }
        if let Some(node) = self.cluster() {
            let mut results = vec![TopicResult::ok(); changes.len()];
            let slots: Vec<usize> = (0..changes.len()).collect();
            let cmd = ClusterCommand::AlterClientQuotas { changes };
            let version = self.commit(&node, cmd, &slots, &mut results).await;
            return (results, version);
        }
        let mut meta = (*self.image.get()).clone();
        for c in &changes {
            crate::security::quota::apply(&mut meta.client_quotas, c);
        }
        let results = vec![TopicResult::ok(); changes.len()];
        let nr = self.shard.nr_shards;
        self.commit_local(meta, (0..nr).map(|_| Vec::new()).collect(), results)
            .await
    }

    async fn alter_acls_local(
        &self,
        create: Vec<crate::security::acl::AclBinding>,
        delete: Vec<crate::security::acl::AclFilter>,
    ) -> (Vec<TopicResult>, Vec<AclsRemoved>, u64) {
        let _turn = self.control_lock.lock().await;
        // Filters resolve against the newest image under the controller's turn, so what is
        // reported removed is what the command removes.
        let meta = self.image.get();
        let removed: Vec<Vec<_>> = delete
            .iter()
            .map(|f| meta.acls.iter().filter(|b| f.matches(b)).cloned().collect())
            .collect();
        let gone: Vec<_> = removed.iter().flatten().cloned().collect();
        if create.is_empty() && gone.is_empty() {
            return (Vec::new(), removed.into_iter().map(Ok).collect(), 0);
        }
        tracing::info!(added = create.len(), removed = gone.len(), "altering ACLs");
        // One result per binding created, and a last one for the whole change (what the
        // removals report when it fails).
        let results = vec![TopicResult::ok(); create.len() + 1];
        let (mut results, version) = if let Some(node) = self.cluster() {
            let mut results = results;
            let slots: Vec<usize> = (0..results.len()).collect();
            let cmd = ClusterCommand::AlterAcls {
                create,
                delete: gone,
            };
            let version = self.commit(&node, cmd, &slots, &mut results).await;
            (results, version)
        } else {
            let mut next = (*meta).clone();
            for b in &gone {
                next.acls.remove(b);
            }
            next.acls.extend(create);
            let nr = self.shard.nr_shards;
            self.commit_local(next, (0..nr).map(|_| Vec::new()).collect(), results)
                .await
        };
        let whole = results.pop().unwrap_or_else(TopicResult::ok);
        let removed = removed
            .into_iter()
            .map(|r| {
                if whole.error.is_ok() {
                    Ok(r)
                } else {
                    Err(whole.clone())
                }
            })
            .collect();
        (results, removed, version)
    }

    async fn elect_local(
        &self,
        unclean: bool,
        partitions: Option<Vec<(String, i32)>>,
    ) -> (Vec<((String, i32), TopicResult)>, u64) {
        let meta = self.image.get();
        let Some(node) = self.cluster() else {
            // One broker leads every partition: there is never anything to elect.
            let results = partitions
                .unwrap_or_default()
                .into_iter()
                .map(|(t, p)| {
                    let r = match meta.owner(&t, p) {
                        None => TopicResult::err(
                            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                            format!("{t}-{p} does not exist"),
                        ),
                        Some(_) => TopicResult::err(
                            ErrorCode::ELECTION_NOT_NEEDED,
                            "the only broker leads it".into(),
                        ),
                    };
                    ((t, p), r)
                })
                .collect();
            return (results, 0);
        };
        let asked = partitions.unwrap_or_else(|| {
            if unclean {
                // Kafka: all partitions without a leader.
                let state = node.state();
                state
                    .topics
                    .iter()
                    .flat_map(|(n, t)| {
                        t.partitions
                            .iter()
                            .enumerate()
                            .filter(|(_, p)| p.leader == -1)
                            .map(move |(i, _)| (n.clone(), i as i32))
                    })
                    .collect()
            } else {
                node.state().preferred_imbalance()
            }
        });
        if asked.is_empty() {
            return (Vec::new(), 0);
        }
        let mut results = vec![TopicResult::ok(); asked.len()];
        let slots: Vec<usize> = (0..asked.len()).collect();
        let cmd = ClusterCommand::ElectLeaders {
            unclean,
            partitions: asked.clone(),
        };
        let version = self.commit(&node, cmd, &slots, &mut results).await;
        (asked.into_iter().zip(results).collect(), version)
    }

    /// Cluster mode (shard 0): makes `meta` every shard's image. Partitions this broker no
    /// longer holds (or whose topic was replaced) are closed and removed first, new ones
    /// opened, then the image published, so no shard routes to a partition not open.
    pub async fn install_image(&self, meta: ClusterMeta) {
        let old = self.image.get();
        let nr = self.shard.nr_shards;
        let same_topic = |a: &ClusterMeta, b: &ClusterMeta, name: &str| {
            a.topics.get(name).map(|t| &t.id) == b.topics.get(name).map(|t| &t.id)
        };
        let mut removes: Vec<Vec<(String, i32)>> = vec![Vec::new(); nr];
        for (name, t) in &old.topics {
            for p in 0..t.placement.len() as i32 {
                let kept = same_topic(&old, &meta, name) && meta.hosts(name, p);
                if old.hosts(name, p) && !kept {
                    removes[t.placement[p as usize] % nr].push((name.clone(), p));
                }
            }
        }
        let mut opens: Vec<Vec<PartitionSpec>> = (0..nr).map(|_| Vec::new()).collect();
        for (name, t) in &meta.topics {
            for p in 0..t.placement.len() as i32 {
                let had = same_topic(&old, &meta, name) && old.hosts(name, p);
                if meta.hosts(name, p) && !had {
                    opens[t.placement[p as usize] % nr].push(PartitionSpec {
                        topic: name.clone(),
                        topic_id: t.id.clone(),
                        partition: p,
                        configs: t.configs.clone(),
                    });
                }
            }
        }
        // A topic replaced under the same name must close before the new one opens its
        // directories; a plain deletion waits until no image routes to it any more.
        let replaced = |name: &str| meta.topics.contains_key(name);
        let (now, later): (Vec<_>, Vec<_>) = removes
            .into_iter()
            .enumerate()
            .map(|(shard, list)| {
                let (r, d): (Vec<_>, Vec<_>) = list.into_iter().partition(|(t, _)| replaced(t));
                ((shard, r), (shard, d))
            })
            .unzip();
        for (shard, list) in now {
            if !list.is_empty() {
                self.partitions.remove_on(shard, list).await;
            }
        }
        self.open_all(opens).await;
        self.publish(meta).await;
        for (shard, list) in later {
            if !list.is_empty() {
                self.partitions.remove_on(shard, list).await;
            }
        }
    }

    /// Hands out producer ids from blocks reserved in the metadata file, so an id is never
    /// reused across restarts.
    async fn alloc_producer_id_local(&self) -> Result<i64, String> {
        assert_eq!(
            self.shard.id, CONTROLLER_SHARD,
            "only the controller allocates producer ids"
        );
        let _turn = self.control_lock.lock().await;
        if let Some(node) = self.cluster() {
            let id = self.next_producer_id.get();
            if id < 0 || id >= self.producer_id_end.get() {
                let (_, reply) = node
                    .write(ClusterCommand::AllocateProducerIds)
                    .await
                    .map_err(|e| format!("allocating producer ids: {e}"))?;
                self.next_producer_id.set(reply.value);
                self.producer_id_end
                    .set(reply.value + crate::cluster::state::PRODUCER_ID_BLOCK);
            }
            let id = self.next_producer_id.get();
            self.next_producer_id.set(id + 1);
            return Ok(id);
        }
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

    /// Single node: saves the next version of the metadata, opens the new partitions, then
    /// publishes the image; answers the results and the version (0 when nothing was saved).
    async fn commit_local(
        &self,
        mut meta: ClusterMeta,
        opens: Vec<Vec<PartitionSpec>>,
        mut results: Vec<TopicResult>,
    ) -> (Vec<TopicResult>, u64) {
        if !self.persist_or_fail(&mut meta, &mut results).await {
            return (results, 0);
        }
        let version = meta.version;
        self.open_all(opens).await;
        self.publish(meta).await;
        (results, version)
    }

    /// Opens the listed partitions on each shard (before an image routes to them); a failure
    /// is logged and leaves the others open.
    async fn open_all(&self, opens: Vec<Vec<PartitionSpec>>) {
        for (shard, list) in opens.into_iter().enumerate() {
            if !list.is_empty() {
                if let Err(m) = self.partitions.open_on(shard, list).await {
                    tracing::error!("opening partitions on shard {shard}: {m}");
                }
            }
        }
    }

    /// Gives every shard the new image.
    async fn publish(&self, meta: ClusterMeta) {
        for shard in 0..self.shard.nr_shards {
            let m = meta.clone();
            let r = self
                .shard
                .invoke_on(shard, move || async move {
                    local::<MetadataImage>().publish(Rc::new(m));
                    local::<PartitionManager>().follow_image();
                })
                .await;
            if let Err(e) = r {
                tracing::error!("publishing metadata to shard {shard}: {e}");
            }
        }
    }
}
