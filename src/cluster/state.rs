//! The cluster metadata as the Raft state machine holds it, and the commands that change it.
//!
//! `ClusterState::apply` is pure and deterministic: every node applies the same committed
//! commands in the same order and reaches the same state. Placement decisions (which brokers
//! hold a partition, on which shard, who leads) are made here, inside apply, from the state
//! alone, so no two proposals can race on a stale view. Random values (topic ids, the cluster
//! id) travel inside the command.

use crate::metadata::{image, ClusterMeta, TopicMeta};
use crate::protocol::errors::ErrorCode;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Producer ids handed to a broker per AllocateProducerIds (Kafka: 1000).
pub const PRODUCER_ID_BLOCK: i64 = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BrokerRecord {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Shards (cores) the broker runs; partitions are spread over them.
    pub shards: u32,
    /// The log index of its latest registration: a restarted broker gets a new epoch, and a
    /// heartbeat carrying an old one is ignored.
    pub epoch: u64,
    /// Missed its heartbeats or shut down: leads nothing, listed to no client.
    pub fenced: bool,
    /// Its listeners as clients reach them: (name, host, port). Empty for a broker that
    /// registered before listeners existed (then `host:port` is its PLAINTEXT listener).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<(String, String, i32)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartitionRecord {
    /// Brokers holding the partition; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// The shard of each replica on its broker, by position in `replicas`.
    pub shards: Vec<u32>,
    /// -1: no leader (every in-sync replica is fenced).
    pub leader: i32,
    pub leader_epoch: i32,
    /// In-sync replicas: each has every record below the leader's high watermark, so a leader
    /// elected from them loses nothing acknowledged. Changed by the leader (AlterPartition)
    /// and by fencing.
    pub isr: Vec<i32>,
    /// Bumped by every change to this record.
    pub partition_epoch: i32,
    /// A reassignment in progress (KIP-455): replicas being added (not yet caught up) and
    /// replicas to remove once every target replica is in sync. The target is `replicas`
    /// without `removing`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<i32>,
}

impl PartitionRecord {
    /// The replicas a reassignment moves to (all of them when none is in progress).
    pub fn target(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing.contains(r))
            .collect()
    }

    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicRecord {
    pub id: String,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionRecord>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterState {
    pub cluster_id: String,
    pub brokers: BTreeMap<i32, BrokerRecord>,
    pub topics: BTreeMap<String, TopicRecord>,
    /// Producer ids below this have been handed out.
    pub producer_id_block_end: i64,
    /// The log index of the last applied command (the image version).
    pub applied_index: u64,
    /// Dynamic broker configs: "" for the cluster's defaults, a broker's id for its own.
    #[serde(default)]
    pub broker_configs: crate::metadata::topic_config::BrokerConfigs,
    /// SCRAM credentials by user and mechanism.
    #[serde(default)]
    pub scram_users: crate::security::ScramUsers,
    /// ACLs (CreateAcls, DeleteAcls).
    #[serde(default)]
    pub acls: crate::security::acl::Acls,
    /// Client quotas (AlterClientQuotas).
    #[serde(default)]
    pub client_quotas: crate::security::quota::ClientQuotas,
}

/// A topic to create, as proposed (validated again when applied).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewTopic {
    pub name: String,
    pub id: String,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Explicit assignment (CreateTopics' assignments): replicas per partition.
    pub assignment: Option<Vec<Vec<i32>>>,
    pub configs: BTreeMap<String, String>,
}

/// A change to the cluster metadata: the data of every Raft log entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Command {
    /// The first entry of a cluster: its id.
    InitCluster {
        cluster_id: String,
    },
    RegisterBroker {
        id: i32,
        host: String,
        port: i32,
        rack: Option<String>,
        shards: u32,
        /// Every listener, (name, advertised host, port); `host:port` is the first's.
        #[serde(default)]
        listeners: Vec<(String, String, i32)>,
    },
    /// Missed heartbeats (or shut down): fenced, its leaderships move to in-sync replicas.
    FenceBroker {
        id: i32,
        epoch: u64,
    },
    /// Heartbeats again: unfenced, leads again where it is the only in-sync replica left.
    UnfenceBroker {
        id: i32,
        epoch: u64,
    },
    CreateTopics {
        topics: Vec<NewTopic>,
        max_partitions: usize,
        max_topics: usize,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    AllocateProducerIds,
    /// Preferred: leadership back to each partition's first replica where it is live and in
    /// sync. Unclean: a partition without a leader takes any live replica (losing what only
    /// the old in-sync replicas held), as Kafka's unclean election does.
    ElectLeaders {
        unclean: bool,
        partitions: Vec<(String, i32)>,
    },
    /// A leader's new ISR for one of its partitions (Kafka's AlterPartition): applied only
    /// while `broker` still leads at `leader_epoch` and the record is at `partition_epoch`,
    /// so a deposed leader or a stale view changes nothing.
    AlterPartition {
        broker: i32,
        topic: String,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    /// Moves partitions to new replica sets (KIP-455: AlterPartitionReassignments): the new
    /// replicas are added and catch up; once all of the target is in sync the others go.
    /// None cancels a reassignment in progress.
    AlterReassignments {
        moves: Vec<(String, i32, Option<Vec<i32>>)>,
    },
    /// Grows a topic to `count` partitions (placed as new ones are, or as assigned).
    CreatePartitions {
        topic: String,
        count: i32,
        assignment: Option<Vec<Vec<i32>>>,
        max_partitions: usize,
    },
    /// A topic's config overrides become `after` (AlterConfigs, IncrementalAlterConfigs),
    /// if they are still `before`: two changes computed from the same overrides cannot
    /// both apply, so neither is lost silently.
    AlterTopicConfigs {
        topic: String,
        before: BTreeMap<String, String>,
        after: BTreeMap<String, String>,
    },
    /// The dynamic configs of a broker resource ("" for the cluster's defaults, a broker's id
    /// for its own) become `after`, if they are still `before` (as for topic configs).
    AlterBrokerConfigs {
        resource: String,
        before: BTreeMap<String, String>,
        after: BTreeMap<String, String>,
    },
    /// Client quotas set and removed (AlterClientQuotas, validated): one result each.
    AlterClientQuotas {
        changes: Vec<crate::security::quota::QuotaChange>,
    },
    /// ACLs added and removed (CreateAcls, DeleteAcls: the controller resolves the filters
    /// to bindings). One result per binding added.
    AlterAcls {
        create: Vec<crate::security::acl::AclBinding>,
        delete: Vec<crate::security::acl::AclBinding>,
    },
    /// SCRAM credentials set or deleted (AlterUserScramCredentials): one result each.
    AlterScramCredentials {
        changes: Vec<crate::security::ScramChange>,
    },
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::InitCluster { cluster_id } => write!(f, "init cluster {cluster_id}"),
            Command::RegisterBroker { id, host, port, .. } => {
                write!(f, "register broker {id} at {host}:{port}")
            }
            Command::FenceBroker { id, epoch } => write!(f, "fence broker {id} (epoch {epoch})"),
            Command::UnfenceBroker { id, epoch } => {
                write!(f, "unfence broker {id} (epoch {epoch})")
            }
            Command::CreateTopics { topics, .. } => {
                let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
                write!(f, "create topics {names:?}")
            }
            Command::DeleteTopics { names } => write!(f, "delete topics {names:?}"),
            Command::AllocateProducerIds => write!(f, "allocate producer ids"),
            Command::ElectLeaders {
                unclean,
                partitions,
            } => {
                let kind = if *unclean { "unclean" } else { "preferred" };
                write!(f, "elect {kind} leaders of {} partitions", partitions.len())
            }
            Command::AlterPartition {
                broker,
                topic,
                partition,
                isr,
                ..
            } => write!(f, "broker {broker}: ISR of {topic}-{partition} = {isr:?}"),
            Command::AlterReassignments { moves } => write!(f, "reassign {moves:?}"),
            Command::CreatePartitions { topic, count, .. } => {
                write!(f, "grow {topic} to {count} partitions")
            }
            Command::AlterTopicConfigs { topic, after, .. } => {
                write!(f, "set the configs of {topic} to {after:?}")
            }
            Command::AlterBrokerConfigs {
                resource, after, ..
            } => {
                let which = if resource.is_empty() {
                    "the cluster's broker defaults".to_string()
                } else {
                    format!("broker {resource}'s configs")
                };
                write!(f, "set {which} to {after:?}")
            }
            Command::AlterClientQuotas { changes } => {
                write!(f, "alter the client quotas of {} entities", changes.len())
            }
            Command::AlterAcls { create, delete } => {
                write!(f, "add {} and remove {} ACLs", create.len(), delete.len())
            }
            Command::AlterScramCredentials { changes } => {
                let users: Vec<&str> = changes.iter().map(|c| c.user()).collect();
                write!(f, "alter the SCRAM credentials of {users:?}")
            }
        }
    }
}

/// What applying a command answered: one (code, message) per item, and a number.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    pub results: Vec<(i16, Option<String>)>,
    pub value: i64,
}

impl Reply {
    fn value(v: i64) -> Reply {
        Reply {
            results: Vec::new(),
            value: v,
        }
    }
}

/// A per-item result as a reply carries it.
fn outcome(r: Result<(), (ErrorCode, String)>) -> (i16, Option<String>) {
    match r {
        Ok(()) => (ErrorCode::NONE.0, None),
        Err((code, m)) => (code.0, Some(m)),
    }
}

impl ClusterState {
    /// Applies one committed command at log index `index`.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Reply {
        self.applied_index = index;
        match cmd {
            Command::InitCluster { cluster_id } => {
                if self.cluster_id.is_empty() {
                    self.cluster_id = cluster_id.clone();
                }
                Reply::default()
            }
            Command::RegisterBroker {
                id,
                host,
                port,
                rack,
                shards,
                listeners,
            } => {
                if self.brokers.get(id).is_some_and(|b| !b.fenced) {
                    // Restarted before its session ran out: what it led and its place in
                    // every ISR go first, as for a fenced broker; it returns to an ISR by
                    // catching up, like any follower.
                    self.move_leadership_off(*id);
                }
                self.brokers.insert(
                    *id,
                    BrokerRecord {
                        id: *id,
                        host: host.clone(),
                        port: *port,
                        rack: rack.clone(),
                        shards: (*shards).max(1),
                        epoch: index,
                        fenced: false,
                        listeners: listeners.clone(),
                    },
                );
                self.elect_where_leaderless(*id);
                Reply::value(index as i64)
            }
            Command::FenceBroker { id, epoch } => {
                match self.brokers.get_mut(id) {
                    Some(b) if b.epoch == *epoch && !b.fenced => b.fenced = true,
                    _ => return Reply::value(0),
                }
                self.move_leadership_off(*id);
                Reply::value(1)
            }
            Command::UnfenceBroker { id, epoch } => {
                match self.brokers.get_mut(id) {
                    Some(b) if b.epoch == *epoch && b.fenced => b.fenced = false,
                    _ => return Reply::value(0),
                }
                self.elect_where_leaderless(*id);
                Reply::value(1)
            }
            Command::CreateTopics {
                topics,
                max_partitions,
                max_topics,
            } => Reply {
                results: topics
                    .iter()
                    .map(
                        |t| match self.create_topic(t, *max_partitions, *max_topics) {
                            Ok(()) => (ErrorCode::NONE.0, None),
                            Err((code, m)) => (code.0, Some(m)),
                        },
                    )
                    .collect(),
                value: 0,
            },
            Command::DeleteTopics { names } => Reply {
                results: names
                    .iter()
                    .map(|n| match self.topics.remove(n) {
                        Some(_) => (ErrorCode::NONE.0, None),
                        None => (
                            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0,
                            Some(format!("topic {n} does not exist")),
                        ),
                    })
                    .collect(),
                value: 0,
            },
            Command::AllocateProducerIds => {
                let start = self.producer_id_block_end;
                self.producer_id_block_end += PRODUCER_ID_BLOCK;
                Reply::value(start)
            }
            Command::ElectLeaders {
                unclean,
                partitions,
            } => Reply {
                results: partitions
                    .iter()
                    .map(|(t, p)| outcome(self.elect(t, *p, *unclean)))
                    .collect(),
                value: 0,
            },
            Command::AlterPartition {
                broker,
                topic,
                partition,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let r = self.alter_partition(
                    *broker,
                    topic,
                    *partition,
                    (*leader_epoch, *partition_epoch),
                    isr,
                );
                let value = r.as_ref().map_or(0, |e| *e as i64);
                Reply {
                    results: vec![outcome(r.map(|_| ()))],
                    value,
                }
            }
            Command::AlterReassignments { moves } => Reply {
                results: moves
                    .iter()
                    .map(|(t, p, target)| outcome(self.reassign(t, *p, target.as_deref())))
                    .collect(),
                value: 0,
            },
            Command::CreatePartitions {
                topic,
                count,
                assignment,
                max_partitions,
            } => Reply {
                results: vec![outcome(self.grow_topic(
                    topic,
                    *count,
                    assignment.as_deref(),
                    *max_partitions,
                ))],
                value: 0,
            },
            Command::AlterTopicConfigs {
                topic,
                before,
                after,
            } => {
                let r = match self.topics.get_mut(topic) {
                    None => Err((
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("topic {topic} does not exist"),
                    )),
                    Some(t) if t.configs != *before => Err((
                        ErrorCode::INVALID_UPDATE_VERSION,
                        format!("the configs of {topic} changed meanwhile"),
                    )),
                    Some(t) => {
                        t.configs = after.clone();
                        Ok(())
                    }
                };
                Reply {
                    results: vec![outcome(r)],
                    value: 0,
                }
            }
            Command::AlterClientQuotas { changes } => Reply {
                results: changes
                    .iter()
                    .map(|c| {
                        let r = crate::security::quota::validate(c)
                            .map(|()| crate::security::quota::apply(&mut self.client_quotas, c))
                            .map_err(|m| (ErrorCode::INVALID_REQUEST, m));
                        outcome(r)
                    })
                    .collect(),
                value: 0,
            },
            Command::AlterAcls { create, delete } => {
                for b in delete {
                    self.acls.remove(b);
                }
                self.acls.extend(create.iter().cloned());
                // One per binding created, then one for the whole change.
                Reply {
                    results: (0..=create.len()).map(|_| outcome(Ok(()))).collect(),
                    value: 0,
                }
            }
            Command::AlterScramCredentials { changes } => Reply {
                results: changes
                    .iter()
                    .map(|c| {
                        outcome(
                            c.apply(&mut self.scram_users)
                                .map_err(|m| (ErrorCode::RESOURCE_NOT_FOUND, m)),
                        )
                    })
                    .collect(),
                value: 0,
            },
            Command::AlterBrokerConfigs {
                resource,
                before,
                after,
            } => {
                let current = self.broker_configs.get(resource);
                let r = if current.unwrap_or(&BTreeMap::new()) != before {
                    Err((
                        ErrorCode::INVALID_UPDATE_VERSION,
                        "the broker configs changed meanwhile".to_string(),
                    ))
                } else {
                    if after.is_empty() {
                        self.broker_configs.remove(resource);
                    } else {
                        self.broker_configs.insert(resource.clone(), after.clone());
                    }
                    Ok(())
                };
                Reply {
                    results: vec![outcome(r)],
                    value: 0,
                }
            }
        }
    }

    /// Brokers that may lead and hold new replicas.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRecord> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    fn is_live(&self, id: i32) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    fn total_partitions(&self) -> usize {
        self.topics.values().map(|t| t.partitions.len()).sum()
    }

    fn create_topic(
        &mut self,
        t: &NewTopic,
        max_partitions: usize,
        max_topics: usize,
    ) -> Result<(), (ErrorCode, String)> {
        if let Some(existing) = self.topics.get(&t.name) {
            // The same proposal applied again (a forwarded write retried after a timeout
            // that had in fact committed): it succeeded, say so.
            if existing.id == t.id {
                return Ok(());
            }
            return Err((
                ErrorCode::TOPIC_ALREADY_EXISTS,
                format!("topic {} already exists", t.name),
            ));
        }
        if t.partitions < 1 {
            return Err((
                ErrorCode::INVALID_PARTITIONS,
                "a topic needs at least one partition".into(),
            ));
        }
        if self.topics.len() >= max_topics {
            return Err((
                ErrorCode::POLICY_VIOLATION,
                format!("the cluster holds its limit of {max_topics} topics"),
            ));
        }
        let total = self.total_partitions();
        if total + t.partitions.max(0) as usize > max_partitions {
            return Err((
                ErrorCode::INVALID_PARTITIONS,
                format!(
                    "the cluster holds {total} partitions; {} more would pass its limit of {max_partitions}",
                    t.partitions
                ),
            ));
        }
        let replicas = match &t.assignment {
            Some(a) => self.check_assignment(a)?,
            None => self.place(t.partitions, t.replication_factor)?,
        };
        let partitions = self.new_partitions(replicas);
        self.topics.insert(
            t.name.clone(),
            TopicRecord {
                id: t.id.clone(),
                configs: t.configs.clone(),
                partitions,
            },
        );
        Ok(())
    }

    /// Partition records for new partitions with these replicas: spread over each broker's
    /// shards, led by the first live replica, every live replica in sync.
    fn new_partitions(&self, replicas: Vec<Vec<i32>>) -> Vec<PartitionRecord> {
        let mut load = self.shard_load();
        replicas
            .into_iter()
            .map(|reps| {
                let shards = reps
                    .iter()
                    .map(|b| {
                        let n = self.brokers.get(b).map_or(1, |b| b.shards.max(1));
                        let l = load.entry(*b).or_insert_with(|| vec![0; n as usize]);
                        let s = (0..l.len()).min_by_key(|&s| (l[s], s)).unwrap_or(0);
                        l[s] += 1;
                        s as u32
                    })
                    .collect();
                let leader = reps
                    .iter()
                    .copied()
                    .find(|&b| self.is_live(b))
                    .unwrap_or(-1);
                // A new partition is empty everywhere, so every live replica is in sync
                // from the start (KRaft does the same): no ISR expansion storm after a
                // large CreateTopics.
                let isr: Vec<i32> = reps.iter().copied().filter(|&b| self.is_live(b)).collect();
                PartitionRecord {
                    isr,
                    replicas: reps,
                    shards,
                    leader,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    adding: Vec::new(),
                    removing: Vec::new(),
                }
            })
            .collect()
    }

    fn grow_topic(
        &mut self,
        topic: &str,
        count: i32,
        assignment: Option<&[Vec<i32>]>,
        max_partitions: usize,
    ) -> Result<(), (ErrorCode, String)> {
        let have = self
            .topics
            .get(topic)
            .ok_or((
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic {topic} does not exist"),
            ))?
            .partitions
            .len() as i32;
        if count <= have {
            return Err((
                ErrorCode::INVALID_PARTITIONS,
                format!("topic {topic} has {have} partitions; the new count must be larger, not {count}"),
            ));
        }
        let more = (count - have) as usize;
        let total = self.total_partitions();
        if total + more > max_partitions {
            return Err((
                ErrorCode::INVALID_PARTITIONS,
                format!("the cluster holds {total} partitions; {more} more would pass its limit of {max_partitions}"),
            ));
        }
        let rf = self.topics[topic]
            .partitions
            .first()
            .map_or(1, |p| p.replicas.len()) as i16;
        let replicas = match assignment {
            Some(a) if a.len() != more => {
                return Err((
                    ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                    format!("{} assignments for {more} new partitions", a.len()),
                ))
            }
            Some(a) => self.check_assignment(a)?,
            None => self.place(more as i32, rf)?,
        };
        let new = self.new_partitions(replicas);
        self.topics
            .get_mut(topic)
            .expect("checked above")
            .partitions
            .extend(new);
        Ok(())
    }

    fn check_assignment(&self, a: &[Vec<i32>]) -> Result<Vec<Vec<i32>>, (ErrorCode, String)> {
        if a.is_empty() {
            return Err((
                ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                "empty assignment".into(),
            ));
        }
        for (p, reps) in a.iter().enumerate() {
            let distinct: BTreeSet<i32> = reps.iter().copied().collect();
            if reps.is_empty() || distinct.len() != reps.len() {
                return Err((
                    ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                    format!("partition {p}: replicas must be distinct and at least one"),
                ));
            }
            if let Some(b) = reps.iter().find(|b| !self.brokers.contains_key(b)) {
                return Err((
                    ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                    format!("partition {p}: broker {b} is not registered"),
                ));
            }
            if reps.len() != a[0].len() {
                return Err((
                    ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                    "every partition needs the same number of replicas".into(),
                ));
            }
        }
        Ok(a.to_vec())
    }

    /// Replicas for `partitions` new partitions: leaders to the live brokers leading the
    /// fewest partitions, followers to those holding the fewest replicas, on racks not yet
    /// used by the partition where racks allow.
    fn place(&self, partitions: i32, rf: i16) -> Result<Vec<Vec<i32>>, (ErrorCode, String)> {
        let live: Vec<&BrokerRecord> = self.live_brokers().collect();
        let rf = rf.max(1) as usize;
        if live.is_empty() {
            return Err((
                ErrorCode::BROKER_NOT_AVAILABLE,
                "no live broker to place replicas on".into(),
            ));
        }
        if rf > live.len() {
            return Err((
                ErrorCode::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {rf} is larger than the {} live brokers",
                    live.len()
                ),
            ));
        }
        let mut leads: BTreeMap<i32, usize> = live.iter().map(|b| (b.id, 0)).collect();
        let mut holds = leads.clone();
        for t in self.topics.values() {
            for p in &t.partitions {
                if let Some(n) = leads.get_mut(&p.replicas[0]) {
                    *n += 1;
                }
                for r in &p.replicas {
                    if let Some(n) = holds.get_mut(r) {
                        *n += 1;
                    }
                }
            }
        }
        let rack_of = |id: i32| self.brokers.get(&id).and_then(|b| b.rack.clone());
        let mut out = Vec::with_capacity(partitions.max(0) as usize);
        for _ in 0..partitions {
            let leader = *leads
                .iter()
                .min_by_key(|(id, n)| (**n, holds[*id], **id))
                .map(|(id, _)| id)
                .expect("live brokers");
            let mut reps = vec![leader];
            *leads.get_mut(&leader).expect("live") += 1;
            *holds.get_mut(&leader).expect("live") += 1;
            while reps.len() < rf {
                let used_racks: BTreeSet<Option<String>> =
                    reps.iter().map(|&r| rack_of(r)).collect();
                let next = *holds
                    .iter()
                    .filter(|(id, _)| !reps.contains(id))
                    .min_by_key(|(id, n)| {
                        let same_rack =
                            rack_of(**id).is_some() && used_racks.contains(&rack_of(**id));
                        (same_rack, **n, **id)
                    })
                    .map(|(id, _)| id)
                    .expect("rf <= live brokers");
                *holds.get_mut(&next).expect("live") += 1;
                reps.push(next);
            }
            out.push(reps);
        }
        Ok(out)
    }

    /// Replicas per shard of each broker, for spreading new partitions over its shards.
    fn shard_load(&self) -> BTreeMap<i32, Vec<usize>> {
        let mut load: BTreeMap<i32, Vec<usize>> = self
            .brokers
            .values()
            .map(|b| (b.id, vec![0; b.shards.max(1) as usize]))
            .collect();
        for t in self.topics.values() {
            for p in &t.partitions {
                for (b, s) in p.replicas.iter().zip(&p.shards) {
                    if let Some(l) = load.get_mut(b) {
                        if let Some(n) = l.get_mut(*s as usize) {
                            *n += 1;
                        }
                    }
                }
            }
        }
        load
    }

    /// A fenced broker leads nothing and is in no ISR: each partition it led gets the next
    /// live in-sync replica, or no leader when there is none; it leaves every ISR it shares
    /// with another member (Kafka's KRaft does the same), so the high watermark does not wait
    /// for it. The last member of an ISR stays: that replica holds every acknowledged record,
    /// so the partition waits for it (or for an unclean election).
    fn move_leadership_off(&mut self, id: i32) {
        let live: BTreeSet<i32> = self
            .live_brokers()
            .map(|b| b.id)
            .filter(|b| *b != id)
            .collect();
        for t in self.topics.values_mut() {
            for p in t.partitions.iter_mut() {
                let in_isr = p.isr.contains(&id);
                if p.leader == id {
                    let next = p.isr.iter().copied().find(|r| live.contains(r));
                    p.leader = next.unwrap_or(-1);
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                }
                if in_isr && p.isr.len() > 1 {
                    p.isr.retain(|r| *r != id);
                    p.partition_epoch += 1;
                }
            }
        }
    }

    fn partition_mut(
        &mut self,
        topic: &str,
        p: i32,
    ) -> Result<&mut PartitionRecord, (ErrorCode, String)> {
        self.topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(usize::try_from(p).ok()?))
            .ok_or((
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("{topic}-{p} does not exist"),
            ))
    }

    /// AlterPartition: the leader's new ISR, checked against the record as it is now.
    /// Returns the new partition epoch.
    fn alter_partition(
        &mut self,
        broker: i32,
        topic: &str,
        p: i32,
        (leader_epoch, partition_epoch): (i32, i32),
        isr: &[i32],
    ) -> Result<i32, (ErrorCode, String)> {
        let live: BTreeSet<i32> = self.live_brokers().map(|b| b.id).collect();
        let part = self.partition_mut(topic, p)?;
        if part.leader != broker || part.leader_epoch != leader_epoch {
            return Err((
                ErrorCode::FENCED_LEADER_EPOCH,
                format!(
                    "{topic}-{p} is led by {} at epoch {}, not by {broker} at {leader_epoch}",
                    part.leader, part.leader_epoch
                ),
            ));
        }
        if part.partition_epoch != partition_epoch {
            return Err((
                ErrorCode::INVALID_UPDATE_VERSION,
                format!(
                    "{topic}-{p} is at partition epoch {}, not {partition_epoch}",
                    part.partition_epoch
                ),
            ));
        }
        let unique: BTreeSet<i32> = isr.iter().copied().collect();
        if !isr.contains(&broker)
            || unique.len() != isr.len()
            || isr.iter().any(|r| !part.replicas.contains(r))
        {
            return Err((
                ErrorCode::INVALID_REQUEST,
                format!("ISR {isr:?} must hold the leader and only replicas of {topic}-{p}"),
            ));
        }
        if let Some(r) = isr
            .iter()
            .find(|r| !part.isr.contains(r) && !live.contains(r))
        {
            return Err((
                ErrorCode::INELIGIBLE_REPLICA,
                format!("broker {r} is fenced and cannot join the ISR of {topic}-{p}"),
            ));
        }
        part.isr = isr.to_vec();
        part.partition_epoch += 1;
        Self::complete_reassignment(part, &live);
        Ok(part.partition_epoch)
    }

    /// AlterPartitionReassignments for one partition: start (or replace) a move to `target`,
    /// or cancel the one in progress (None).
    fn reassign(
        &mut self,
        topic: &str,
        p: i32,
        target: Option<&[i32]>,
    ) -> Result<(), (ErrorCode, String)> {
        let live: BTreeSet<i32> = self.live_brokers().map(|b| b.id).collect();
        if let Some(t) = target {
            self.check_assignment(&[t.to_vec()])?;
        }
        let mut load = self.shard_load();
        let brokers = self.brokers.clone();
        let part = self.partition_mut(topic, p)?;
        // Back to the replicas before any reassignment (the ones being added go).
        let original: Vec<(i32, u32)> = part
            .replicas
            .iter()
            .zip(&part.shards)
            .filter(|(r, _)| !part.adding.contains(r))
            .map(|(r, s)| (*r, *s))
            .collect();
        let Some(target) = target else {
            if !part.reassigning() {
                return Err((
                    ErrorCode::NO_REASSIGNMENT_IN_PROGRESS,
                    format!("no reassignment of {topic}-{p} is in progress"),
                ));
            }
            part.replicas = original.iter().map(|x| x.0).collect();
            part.shards = original.iter().map(|x| x.1).collect();
            part.isr.retain(|r| part.replicas.contains(r));
            part.adding.clear();
            part.removing.clear();
            part.partition_epoch += 1;
            return Ok(());
        };
        let kept: Vec<i32> = original.iter().map(|x| x.0).collect();
        let mut replicas = Vec::new();
        let mut shards = Vec::new();
        for &r in target {
            replicas.push(r);
            shards.push(match original.iter().find(|x| x.0 == r) {
                Some(x) => x.1,
                None => {
                    // A new replica goes to its broker's least loaded shard.
                    let n = brokers.get(&r).map_or(1, |b| b.shards.max(1));
                    let l = load.entry(r).or_insert_with(|| vec![0; n as usize]);
                    let s = (0..l.len()).min_by_key(|&s| (l[s], s)).unwrap_or(0);
                    l[s] += 1;
                    s as u32
                }
            });
        }
        for &(r, sh) in original.iter().filter(|x| !target.contains(&x.0)) {
            replicas.push(r);
            shards.push(sh);
        }
        part.adding = target
            .iter()
            .copied()
            .filter(|r| !kept.contains(r))
            .collect();
        part.removing = kept
            .iter()
            .copied()
            .filter(|r| !target.contains(r))
            .collect();
        part.replicas = replicas;
        part.shards = shards;
        part.isr.retain(|r| kept.contains(r));
        part.partition_epoch += 1;
        Self::complete_reassignment(part, &live);
        Ok(())
    }

    /// A reassignment whose target is all in sync completes: the removed replicas go (and
    /// the leadership, if it was one of them, moves to the first live in-sync target).
    fn complete_reassignment(part: &mut PartitionRecord, live: &BTreeSet<i32>) {
        if !part.reassigning() {
            return;
        }
        let target = part.target();
        if !target.iter().all(|r| part.isr.contains(r)) {
            return;
        }
        let shards: Vec<u32> = target
            .iter()
            .map(|r| {
                let i = part
                    .replicas
                    .iter()
                    .position(|x| x == r)
                    .expect("target ⊆ replicas");
                part.shards[i]
            })
            .collect();
        part.replicas = target.clone();
        part.shards = shards;
        part.isr.retain(|r| target.contains(r));
        part.adding.clear();
        part.removing.clear();
        if !target.contains(&part.leader) {
            part.leader = target
                .iter()
                .copied()
                .find(|r| live.contains(r) && part.isr.contains(r))
                .unwrap_or(-1);
            part.leader_epoch += 1;
        }
        part.partition_epoch += 1;
    }

    /// A broker back in service leads the partitions that have no leader and list it in sync.
    fn elect_where_leaderless(&mut self, id: i32) {
        for t in self.topics.values_mut() {
            for p in t.partitions.iter_mut() {
                if p.leader == -1
                    && (p.isr.contains(&id) || p.isr.is_empty() && p.replicas.contains(&id))
                {
                    p.leader = id;
                    if p.isr.is_empty() {
                        p.isr.push(id);
                    }
                    p.leader_epoch += 1;
                    p.partition_epoch += 1;
                }
            }
        }
    }

    fn elect(&mut self, topic: &str, p: i32, unclean: bool) -> Result<(), (ErrorCode, String)> {
        let live: BTreeSet<i32> = self.live_brokers().map(|b| b.id).collect();
        let part = self.partition_mut(topic, p)?;
        let next = if unclean {
            if part.leader >= 0 {
                return Err((
                    ErrorCode::ELECTION_NOT_NEEDED,
                    "the partition has a leader".into(),
                ));
            }
            let any = part.replicas.iter().copied().find(|r| live.contains(r));
            let any = any.ok_or((
                ErrorCode::ELIGIBLE_LEADERS_NOT_AVAILABLE,
                "no replica of the partition is live".into(),
            ))?;
            part.isr = vec![any];
            any
        } else {
            let preferred = part.replicas[0];
            if part.leader == preferred {
                return Err((
                    ErrorCode::ELECTION_NOT_NEEDED,
                    "the preferred replica already leads".into(),
                ));
            }
            if !live.contains(&preferred) || !part.isr.contains(&preferred) {
                return Err((
                    ErrorCode::PREFERRED_LEADER_NOT_AVAILABLE,
                    format!("preferred replica {preferred} is not a live in-sync replica"),
                ));
            }
            preferred
        };
        part.leader = next;
        part.leader_epoch += 1;
        part.partition_epoch += 1;
        Ok(())
    }

    /// Partitions whose preferred replica is live, in sync and not leading: what a preferred
    /// election (or the automatic rebalance) would move.
    pub fn preferred_imbalance(&self) -> Vec<(String, i32)> {
        let live: BTreeSet<i32> = self.live_brokers().map(|b| b.id).collect();
        let mut out = Vec::new();
        for (name, t) in &self.topics {
            for (i, p) in t.partitions.iter().enumerate() {
                let pref = p.replicas[0];
                if p.leader != pref && live.contains(&pref) && p.isr.contains(&pref) {
                    out.push((name.clone(), i as i32));
                }
            }
        }
        out
    }

    /// The image broker `node` serves from: every topic, with this broker's shard for the
    /// partitions it holds, and the cluster around it.
    pub fn image_for(&self, node: i32, controller: i32, nr_shards: usize) -> ClusterMeta {
        let nr = nr_shards.max(1);
        let topics = self
            .topics
            .iter()
            .map(|(name, t)| {
                let placement = t
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        p.replicas
                            .iter()
                            .position(|r| *r == node)
                            .map_or(i % nr, |k| p.shards[k] as usize % nr)
                    })
                    .collect();
                let meta = TopicMeta {
                    id: t.id.clone(),
                    placement,
                    configs: t.configs.clone(),
                    leader_epochs: t.partitions.iter().map(|p| p.leader_epoch).collect(),
                    replicas: t.partitions.iter().map(|p| p.replicas.clone()).collect(),
                    leaders: t.partitions.iter().map(|p| p.leader).collect(),
                    isr: t.partitions.iter().map(|p| p.isr.clone()).collect(),
                    partition_epochs: t.partitions.iter().map(|p| p.partition_epoch).collect(),
                };
                (name.clone(), meta)
            })
            .collect();
        ClusterMeta {
            version: self.applied_index,
            cluster_id: self.cluster_id.clone(),
            topics,
            producer_id_block_end: self.producer_id_block_end,
            node_id: node,
            controller_id: controller,
            brokers: self
                .live_brokers()
                .map(|b| image::BrokerInfo {
                    id: b.id,
                    host: b.host.clone(),
                    port: b.port,
                    rack: b.rack.clone(),
                    listeners: b.listeners.clone(),
                })
                .collect(),
            broker_configs: self.broker_configs.clone(),
            scram_users: self.scram_users.clone(),
            acls: self.acls.clone(),
            client_quotas: self.client_quotas.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(s: &mut ClusterState, idx: &mut u64, id: i32, rack: Option<&str>) {
        *idx += 1;
        s.apply(
            *idx,
            &Command::RegisterBroker {
                id,
                host: format!("127.0.0.{id}"),
                port: 9092,
                rack: rack.map(String::from),
                shards: 2,
                listeners: Vec::new(),
            },
        );
    }

    fn create(s: &mut ClusterState, idx: &mut u64, name: &str, parts: i32, rf: i16) -> Reply {
        *idx += 1;
        s.apply(
            *idx,
            &Command::CreateTopics {
                topics: vec![NewTopic {
                    name: name.into(),
                    id: image::random_hex(16),
                    partitions: parts,
                    replication_factor: rf,
                    assignment: None,
                    configs: BTreeMap::new(),
                }],
                max_partitions: 1000,
                max_topics: 100,
            },
        )
    }

    #[test]
    fn topic_configs_change_only_from_the_overrides_they_were_computed_from() {
        let mut s = ClusterState::default();
        let mut i = 0;
        register(&mut s, &mut i, 1, None);
        create(&mut s, &mut i, "t", 1, 1);
        let set = |before: &[(&str, &str)], after: &[(&str, &str)]| Command::AlterTopicConfigs {
            topic: "t".into(),
            before: before
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            after: after
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let r = s.apply(10, &set(&[], &[("retention.ms", "5")]));
        assert_eq!(r.results, vec![(0, None)]);
        assert_eq!(s.topics["t"].configs["retention.ms"], "5");
        // Computed from the overrides before that change: refused, nothing lost.
        let r = s.apply(11, &set(&[], &[("segment.ms", "9")]));
        assert_eq!(r.results[0].0, ErrorCode::INVALID_UPDATE_VERSION.0);
        assert_eq!(s.topics["t"].configs.len(), 1);
        let r = s.apply(12, &set(&[("retention.ms", "5")], &[]));
        assert_eq!(r.results, vec![(0, None)]);
        assert!(s.topics["t"].configs.is_empty());
        let mut gone = set(&[], &[]);
        if let Command::AlterTopicConfigs { topic, .. } = &mut gone {
            *topic = "nope".into();
        }
        let r = s.apply(13, &gone);
        assert_eq!(r.results[0].0, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0);
    }

    #[test]
    fn broker_configs_change_only_from_the_configs_they_were_computed_from() {
        let mut s = ClusterState::default();
        let mut i = 0;
        register(&mut s, &mut i, 1, None);
        create(&mut s, &mut i, "t", 1, 1);
        let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let set = |resource: &str, before: &[(&str, &str)], after: &[(&str, &str)]| {
            Command::AlterBrokerConfigs {
                resource: resource.into(),
                before: map(before),
                after: map(after),
            }
        };
        let r = s.apply(10, &set("", &[], &[("log.retention.ms", "5")]));
        assert_eq!(r.results, vec![(0, None)]);
        let r = s.apply(11, &set("1", &[], &[("log.retention.ms", "7")]));
        assert_eq!(r.results, vec![(0, None)]);
        // Computed from the cluster's defaults before the first change: refused.
        let r = s.apply(12, &set("", &[], &[("log.segment.bytes", "70000")]));
        assert_eq!(r.results[0].0, ErrorCode::INVALID_UPDATE_VERSION.0);
        // Every broker's image carries them: broker 1 takes its own, another the cluster's.
        let image = s.image_for(1, 1, 1);
        let t = crate::metadata::topic_config::topic_value;
        let none = BTreeMap::new();
        assert_eq!(
            t(&image.broker_configs, 1, &none, "retention.ms"),
            Some("7")
        );
        assert_eq!(
            t(&image.broker_configs, 2, &none, "retention.ms"),
            Some("5")
        );
        // A topic's own override wins over both.
        let own = map(&[("retention.ms", "9")]);
        assert_eq!(t(&image.broker_configs, 1, &own, "retention.ms"), Some("9"));
        // Emptied: the resource goes.
        let r = s.apply(13, &set("1", &[("log.retention.ms", "7")], &[]));
        assert_eq!(r.results, vec![(0, None)]);
        assert!(!s.broker_configs.contains_key("1"));
    }

    #[test]
    fn placement_spreads_leaders_replicas_racks_and_shards() {
        let mut s = ClusterState::default();
        let mut i = 0;
        register(&mut s, &mut i, 1, Some("a"));
        register(&mut s, &mut i, 2, Some("a"));
        register(&mut s, &mut i, 3, Some("b"));
        let r = create(&mut s, &mut i, "t", 6, 2);
        assert_eq!(r.results, vec![(0, None)]);
        let t = &s.topics["t"];
        let mut leads = BTreeMap::new();
        for p in &t.partitions {
            *leads.entry(p.leader).or_insert(0) += 1;
            assert_eq!(p.leader, p.replicas[0]);
            assert_eq!(p.replicas.len(), 2);
            assert_ne!(p.replicas[0], p.replicas[1]);
            let racks: BTreeSet<_> = p
                .replicas
                .iter()
                .map(|r| s.brokers[r].rack.clone())
                .collect();
            assert_eq!(racks.len(), 2, "replicas on different racks: {p:?}");
            assert_eq!(p.isr, p.replicas, "a new partition is in sync everywhere");
        }
        assert_eq!(leads.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        let load = s.shard_load();
        for l in load.values() {
            assert!(l[0].abs_diff(l[1]) <= 1, "shards balanced: {load:?}");
        }
        let r = create(&mut s, &mut i, "big", 1, 4);
        assert_eq!(r.results[0].0, ErrorCode::INVALID_REPLICATION_FACTOR.0);
        let r = create(&mut s, &mut i, "t", 1, 1);
        assert_eq!(r.results[0].0, ErrorCode::TOPIC_ALREADY_EXISTS.0);
        // The same proposal applied twice (a retried forward that had committed): success,
        // and nothing changes.
        let again = Command::CreateTopics {
            topics: vec![NewTopic {
                name: "t".into(),
                id: s.topics["t"].id.clone(),
                partitions: 6,
                replication_factor: 2,
                assignment: None,
                configs: BTreeMap::new(),
            }],
            max_partitions: 1000,
            max_topics: 100,
        };
        let before = s.topics["t"].clone();
        i += 1;
        assert_eq!(s.apply(i, &again).results, vec![(0, None)]);
        assert_eq!(s.topics["t"], before);
    }

    /// The partition of "t" (2 partitions, RF 2 on brokers 1 and 2) that broker 1 leads.
    fn led_by_1(s: &ClusterState) -> usize {
        let led: Vec<usize> = (0..2)
            .filter(|&p| s.topics["t"].partitions[p].leader == 1)
            .collect();
        assert_eq!(led.len(), 1);
        led[0]
    }

    fn alter(s: &mut ClusterState, i: &mut u64, p: usize, broker: i32, isr: Vec<i32>) -> Reply {
        let part = &s.topics["t"].partitions[p];
        let cmd = Command::AlterPartition {
            broker,
            topic: "t".into(),
            partition: p as i32,
            leader_epoch: part.leader_epoch,
            partition_epoch: part.partition_epoch,
            isr,
        };
        *i += 1;
        s.apply(*i, &cmd)
    }

    #[test]
    fn fencing_moves_leadership_within_the_isr_and_never_out_of_it() {
        let mut s = ClusterState::default();
        let mut i = 0;
        register(&mut s, &mut i, 1, None);
        register(&mut s, &mut i, 2, None);
        create(&mut s, &mut i, "t", 2, 2);
        let p = led_by_1(&s);
        assert_eq!(s.topics["t"].partitions[p].isr.len(), 2);
        let epoch = s.brokers[&1].epoch;
        // Broker 2 fell behind: the leader drops it from the ISR.
        assert_eq!(
            alter(&mut s, &mut i, p, 1, vec![1]).results,
            vec![(0, None)]
        );
        i += 1;
        s.apply(i, &Command::FenceBroker { id: 1, epoch });
        // Only broker 1 is in sync: no leader rather than a replica without the data.
        let part = &s.topics["t"].partitions[p];
        assert_eq!(part.leader, -1);
        assert_eq!(part.isr, vec![1]);
        assert_eq!(part.leader_epoch, 1);
        let img = s.image_for(2, 2, 1);
        assert_eq!(img.brokers.len(), 1);
        // A stale epoch is ignored; the current one unfences and restores leadership.
        i += 1;
        assert_eq!(
            s.apply(i, &Command::UnfenceBroker { id: 1, epoch: 0 })
                .value,
            0
        );
        i += 1;
        s.apply(i, &Command::UnfenceBroker { id: 1, epoch });
        let part = &s.topics["t"].partitions[p];
        assert_eq!(part.leader, 1);
        assert_eq!(part.leader_epoch, 2);
        // Broker 2 caught up and joined; fencing 1 now moves the leadership to 2 and takes 1
        // out of the ISR.
        assert_eq!(
            alter(&mut s, &mut i, p, 1, vec![1, 2]).results,
            vec![(0, None)]
        );
        i += 1;
        s.apply(i, &Command::FenceBroker { id: 1, epoch });
        assert_eq!(s.topics["t"].partitions[p].leader, 2);
        assert_eq!(s.topics["t"].partitions[p].isr, vec![2]);
        // The other partition (led by 2, followed by 1) lost 1 from its ISR too.
        assert_eq!(s.topics["t"].partitions[1 - p].isr, vec![2]);
        i += 1;
        s.apply(i, &Command::UnfenceBroker { id: 1, epoch });
        // Back in service, it rejoins by catching up (the leader asks), then the preferred
        // replica can lead again.
        assert!(s.preferred_imbalance().is_empty());
        assert_eq!(
            alter(&mut s, &mut i, p, 2, vec![2, 1]).results,
            vec![(0, None)]
        );
        assert_eq!(s.preferred_imbalance(), vec![("t".to_string(), p as i32)]);
        let r = s.apply(
            i + 1,
            &Command::ElectLeaders {
                unclean: false,
                partitions: vec![("t".into(), p as i32)],
            },
        );
        i += 1;
        assert_eq!(r.results[0].0, 0);
        assert_eq!(s.topics["t"].partitions[p].leader, 1);
        assert!(s.preferred_imbalance().is_empty());
        // Unclean: only for a partition without a leader, from any live replica.
        i += 1;
        let r = s.apply(
            i,
            &Command::ElectLeaders {
                unclean: true,
                partitions: vec![("t".into(), p as i32)],
            },
        );
        assert_eq!(r.results[0].0, ErrorCode::ELECTION_NOT_NEEDED.0);
        assert_eq!(
            alter(&mut s, &mut i, p, 1, vec![1]).results,
            vec![(0, None)]
        );
        i += 1;
        s.apply(i, &Command::FenceBroker { id: 1, epoch });
        assert_eq!(s.topics["t"].partitions[p].leader, -1);
        i += 1;
        let r = s.apply(
            i,
            &Command::ElectLeaders {
                unclean: true,
                partitions: vec![("t".into(), p as i32)],
            },
        );
        assert_eq!(r.results[0].0, 0);
        assert_eq!(s.topics["t"].partitions[p].leader, 2);
        assert_eq!(s.topics["t"].partitions[p].isr, vec![2]);
    }

    #[test]
    fn alter_partition_checks_leader_epochs_and_members() {
        let mut s = ClusterState::default();
        let mut i = 0;
        register(&mut s, &mut i, 1, None);
        register(&mut s, &mut i, 2, None);
        register(&mut s, &mut i, 3, None);
        create(&mut s, &mut i, "t", 2, 2);
        let p = led_by_1(&s);
        let follower = s.topics["t"].partitions[p].replicas[1];
        let code = |r: Reply| r.results[0].0;
        // Only the leader, at its epochs, with itself in the ISR and only replicas.
        assert_eq!(
            code(alter(&mut s, &mut i, p, follower, vec![follower])),
            ErrorCode::FENCED_LEADER_EPOCH.0
        );
        assert_eq!(
            code(alter(&mut s, &mut i, p, 1, vec![follower])),
            ErrorCode::INVALID_REQUEST.0
        );
        let outsider = (1..=3)
            .find(|b| !s.topics["t"].partitions[p].replicas.contains(b))
            .unwrap();
        assert_eq!(
            code(alter(&mut s, &mut i, p, 1, vec![1, outsider])),
            ErrorCode::INVALID_REQUEST.0
        );
        let before = s.topics["t"].partitions[p].partition_epoch;
        let r = alter(&mut s, &mut i, p, 1, vec![1]);
        assert_eq!(r.results, vec![(0, None)]);
        assert_eq!(r.value, (before + 1) as i64);
        // A change computed from an older record is refused.
        let stale = Command::AlterPartition {
            broker: 1,
            topic: "t".into(),
            partition: p as i32,
            leader_epoch: s.topics["t"].partitions[p].leader_epoch,
            partition_epoch: before,
            isr: vec![1, follower],
        };
        i += 1;
        assert_eq!(
            code(s.apply(i, &stale)),
            ErrorCode::INVALID_UPDATE_VERSION.0
        );
        // A fenced broker cannot join.
        let fepoch = s.brokers[&follower].epoch;
        i += 1;
        s.apply(
            i,
            &Command::FenceBroker {
                id: follower,
                epoch: fepoch,
            },
        );
        assert_eq!(
            code(alter(&mut s, &mut i, p, 1, vec![1, follower])),
            ErrorCode::INELIGIBLE_REPLICA.0
        );
        // A broker restarted within its session (a new registration while unfenced) leaves
        // every ISR and leadership first, like a fenced one.
        i += 1;
        s.apply(
            i,
            &Command::UnfenceBroker {
                id: follower,
                epoch: fepoch,
            },
        );
        assert_eq!(code(alter(&mut s, &mut i, p, 1, vec![1, follower])), 0);
        register(&mut s, &mut i, follower, None);
        assert_eq!(s.topics["t"].partitions[p].isr, vec![1]);
        assert_eq!(s.topics["t"].partitions[p].leader, 1);
    }

    #[test]
    fn reassignment_adds_catches_up_then_removes() {
        let mut s = ClusterState::default();
        let mut i = 0;
        for b in 1..=4 {
            register(&mut s, &mut i, b, None);
        }
        let cmd = Command::CreateTopics {
            topics: vec![NewTopic {
                name: "t".into(),
                id: "00".repeat(16),
                partitions: 1,
                replication_factor: 2,
                assignment: Some(vec![vec![1, 2]]),
                configs: BTreeMap::new(),
            }],
            max_partitions: 100,
            max_topics: 100,
        };
        i += 1;
        s.apply(i, &cmd);
        let mv = |s: &mut ClusterState, i: &mut u64, target: Option<Vec<i32>>| {
            *i += 1;
            s.apply(
                *i,
                &Command::AlterReassignments {
                    moves: vec![("t".into(), 0, target)],
                },
            )
            .results[0]
                .0
        };
        assert_eq!(
            mv(&mut s, &mut i, None),
            ErrorCode::NO_REASSIGNMENT_IN_PROGRESS.0
        );
        assert_eq!(
            mv(&mut s, &mut i, Some(vec![9])),
            ErrorCode::INVALID_REPLICA_ASSIGNMENT.0
        );
        assert_eq!(mv(&mut s, &mut i, Some(vec![3, 2])), 0);
        let p = &s.topics["t"].partitions[0];
        assert_eq!(p.replicas, vec![3, 2, 1]);
        assert_eq!((p.adding.clone(), p.removing.clone()), (vec![3], vec![1]));
        assert_eq!(p.leader, 1, "the leader stays until the target is in sync");
        assert_eq!(p.shards.len(), 3);
        // Cancelled: back on the brokers it was on (in the order of the move, as Kafka's
        // cancellation leaves them: the replicas without the ones being added).
        assert_eq!(mv(&mut s, &mut i, None), 0);
        assert_eq!(s.topics["t"].partitions[0].replicas, vec![2, 1]);
        assert!(!s.topics["t"].partitions[0].reassigning());
        // Again, and this time broker 3 catches up: the leader adds it, which completes the
        // move, and the leadership leaves the removed broker 1.
        assert_eq!(mv(&mut s, &mut i, Some(vec![3, 2])), 0);
        let epoch = s.topics["t"].partitions[0].leader_epoch;
        let p = &s.topics["t"].partitions[0];
        let cmd = Command::AlterPartition {
            broker: 1,
            topic: "t".into(),
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: vec![1, 2, 3],
        };
        i += 1;
        assert_eq!(s.apply(i, &cmd).results, vec![(0, None)]);
        let p = &s.topics["t"].partitions[0];
        assert_eq!(p.replicas, vec![3, 2]);
        assert_eq!(p.isr, vec![2, 3]);
        assert!(!p.reassigning());
        assert_eq!(p.leader, 3);
        assert_eq!(p.leader_epoch, epoch + 1);
        let img = s.image_for(1, 1, 1);
        assert_eq!(img.topics["t"].replicas[0], vec![3, 2]);
        // A move within the ISR completes at once.
        assert_eq!(mv(&mut s, &mut i, Some(vec![2])), 0);
        assert_eq!(s.topics["t"].partitions[0].replicas, vec![2]);
        assert_eq!(s.topics["t"].partitions[0].leader, 2);
    }

    #[test]
    fn create_partitions_grows_and_places() {
        let mut s = ClusterState::default();
        let mut i = 0;
        register(&mut s, &mut i, 1, None);
        register(&mut s, &mut i, 2, None);
        create(&mut s, &mut i, "t", 2, 2);
        let grow = |s: &mut ClusterState, i: u64, count, assignment| {
            s.apply(
                i,
                &Command::CreatePartitions {
                    topic: "t".into(),
                    count,
                    assignment,
                    max_partitions: 1000,
                },
            )
            .results[0]
                .0
        };
        assert_eq!(grow(&mut s, 10, 2, None), ErrorCode::INVALID_PARTITIONS.0);
        assert_eq!(grow(&mut s, 11, 4, None), 0);
        assert_eq!(s.topics["t"].partitions.len(), 4);
        assert!(s.topics["t"]
            .partitions
            .iter()
            .all(|p| p.replicas.len() == 2));
        assert_eq!(
            grow(&mut s, 12, 6, Some(vec![vec![2, 1]])),
            ErrorCode::INVALID_REPLICA_ASSIGNMENT.0
        );
        assert_eq!(grow(&mut s, 13, 5, Some(vec![vec![2, 1]])), 0);
        assert_eq!(s.topics["t"].partitions[4].leader, 2);
    }

    #[test]
    fn image_places_own_replicas_on_their_shards() {
        let mut s = ClusterState::default();
        let mut i = 0;
        register(&mut s, &mut i, 1, None);
        register(&mut s, &mut i, 2, None);
        create(&mut s, &mut i, "t", 4, 1);
        i += 1;
        let r = s.apply(i, &Command::AllocateProducerIds);
        assert_eq!(r.value, 0);
        let img = s.image_for(1, 1, 2);
        let t = &img.topics["t"];
        for p in 0..4 {
            let part = &s.topics["t"].partitions[p];
            if part.replicas == vec![1] {
                assert_eq!(t.placement[p], part.shards[0] as usize);
                assert!(img.hosts("t", p as i32));
                assert_eq!(img.route("t", p as i32), Ok(t.placement[p]));
            } else {
                assert!(!img.hosts("t", p as i32));
                assert_eq!(
                    img.route("t", p as i32),
                    Err(ErrorCode::NOT_LEADER_OR_FOLLOWER)
                );
            }
        }
        assert_eq!(img.producer_id_block_end, PRODUCER_ID_BLOCK);
        assert_eq!(img.version, i);
    }
}
