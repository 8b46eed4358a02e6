//! The broker's metadata: topics, their configs, the partition -> shard placement and each
//! partition's leader epoch.
//!
//! The controller (shard 0) is the only writer: it persists `<data>/flumen-meta.toml` (write,
//! fsync, rename) and publishes each new version to every shard, which keeps it as its image.

use crate::protocol::errors::ErrorCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const META_FILE: &str = "flumen-meta.toml";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    /// Topic id (UUID) as 32 hex digits.
    pub id: String,
    /// Owning shard of each partition, by partition index.
    pub placement: Vec<usize>,
    /// Topic-level config overrides (Kafka names, e.g. retention.ms).
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    /// Leader epoch of each partition, by partition index (absent in files written before
    /// epochs were stored: those partitions are at epoch 0). Bumped by every leader change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leader_epochs: Vec<i32>,
    /// In a cluster: the brokers holding each partition (empty on a single node, which holds
    /// and leads every partition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Vec<i32>>,
    /// In a cluster: each partition's leader, -1 while it has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaders: Vec<i32>,
    /// In a cluster: each partition's in-sync replicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub isr: Vec<Vec<i32>>,
    /// In a cluster: each partition record's epoch (bumped by every change to it, ISR
    /// changes included); a leader's AlterPartition names the one it saw.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_epochs: Vec<i32>,
}

impl TopicMeta {
    /// The leader epoch of partition `p`.
    pub fn leader_epoch(&self, p: i32) -> i32 {
        usize::try_from(p)
            .ok()
            .and_then(|i| self.leader_epochs.get(i).copied())
            .unwrap_or(0)
    }

    /// Partition `p`'s leader; `me` on a single node.
    pub fn leader(&self, p: i32, me: i32) -> i32 {
        if self.replicas.is_empty() {
            return me;
        }
        usize::try_from(p)
            .ok()
            .and_then(|i| self.leaders.get(i).copied())
            .unwrap_or(-1)
    }

    /// Partition `p`'s replicas; `[me]` on a single node.
    pub fn replicas_of(&self, p: i32, me: i32) -> Vec<i32> {
        self.pick(&self.replicas, p).unwrap_or_else(|| vec![me])
    }

    /// Partition `p`'s in-sync replicas; `[me]` on a single node.
    pub fn isr_of(&self, p: i32, me: i32) -> Vec<i32> {
        self.pick(&self.isr, p).unwrap_or_else(|| vec![me])
    }

    /// Partition `p`'s record epoch (0 on a single node).
    pub fn partition_epoch(&self, p: i32) -> i32 {
        usize::try_from(p)
            .ok()
            .and_then(|i| self.partition_epochs.get(i).copied())
            .unwrap_or(0)
    }

    fn pick(&self, v: &[Vec<i32>], p: i32) -> Option<Vec<i32>> {
        if self.replicas.is_empty() {
            return None;
        }
        Some(
            usize::try_from(p)
                .ok()
                .and_then(|i| v.get(i).cloned())
                .unwrap_or_default(),
        )
    }

    pub fn id_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(self.id.get(2 * i..2 * i + 2).unwrap_or("00"), 16).unwrap_or(0);
        }
        out
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterMeta {
    pub version: u64,
    /// Random per data dir, reported as Kafka's cluster id.
    #[serde(default)]
    pub cluster_id: String,
    #[serde(default)]
    pub topics: BTreeMap<String, TopicMeta>,
    /// Producer ids below this may have been handed out; a restarted broker starts here.
    #[serde(default)]
    pub producer_id_block_end: i64,
    /// This broker's id (Kafka's node.id; 0 on a single node).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub node_id: i32,
    /// The broker that leads the metadata quorum (this one on a single node).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub controller_id: i32,
    /// Live brokers of the cluster; empty on a single node (then this broker is the only one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<BrokerInfo>,
    /// Dynamic broker configs (AlterConfigs on a broker resource): "" for the cluster's
    /// defaults, a broker's id for its own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub broker_configs: crate::metadata::topic_config::BrokerConfigs,
    /// SCRAM credentials (salted and hashed; never a password), by user and mechanism.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scram_users: crate::security::ScramUsers,
    /// ACLs (enforced when `authorizer_enabled`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub acls: crate::security::acl::Acls,
    /// Client quotas (enforced per shard).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_quotas: crate::security::quota::ClientQuotas,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

/// A live broker as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// Its listeners, (name, host, port); empty: `host:port` is its only (PLAINTEXT) one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<(String, String, i32)>,
}

impl BrokerInfo {
    /// The broker as a client of `listener` reaches it, if it has that listener.
    pub fn on_listener(&self, listener: &str) -> Option<BrokerInfo> {
        let (host, port) = if self.listeners.is_empty() {
            (listener == "PLAINTEXT").then(|| (self.host.clone(), self.port))?
        } else {
            let (_, h, p) = self.listeners.iter().find(|(n, ..)| n == listener)?;
            (h.clone(), *p)
        };
        Some(BrokerInfo {
            host,
            port,
            listeners: Vec::new(),
            ..self.clone()
        })
    }
}

impl ClusterMeta {
    /// Loads the metadata of a data dir, or a fresh one. Placements are folded onto the current
    /// shard count, so a broker restarted with fewer shards still serves every partition.
    pub fn load(data_dir: &Path, nr_shards: usize) -> anyhow::Result<ClusterMeta> {
        let path = data_dir.join(META_FILE);
        let mut meta = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str::<ClusterMeta>(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ClusterMeta::default(),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        if meta.cluster_id.is_empty() {
            meta.cluster_id = random_hex(16);
        }
        for t in meta.topics.values_mut() {
            for s in t.placement.iter_mut() {
                *s %= nr_shards;
            }
        }
        Ok(meta)
    }

    /// Writes the metadata atomically (blocking: call from the main thread or spawn_blocking).
    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        use std::io::Write;
        std::fs::create_dir_all(data_dir)?;
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        let tmp = data_dir.join(format!("{META_FILE}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, data_dir.join(META_FILE))?;
        std::fs::File::open(data_dir)?.sync_all()
    }

    /// Partitions placed on each shard.
    pub fn load_per_shard(&self, nr_shards: usize) -> Vec<usize> {
        let mut load = vec![0usize; nr_shards];
        for t in self.topics.values() {
            for &s in &t.placement {
                load[s % nr_shards] += 1;
            }
        }
        load
    }

    /// This broker's dynamic defaults of topic configs, by topic config name.
    pub fn dynamic_topic_defaults(&self) -> BTreeMap<String, String> {
        crate::metadata::topic_config::dynamic_topic_defaults(&self.broker_configs, self.node_id)
    }

    /// A topic config's value where it is not the config file's: the topic's override, else
    /// this broker's dynamic default. None also for a topic that does not exist.
    pub fn topic_value(&self, topic: &str, key: &str) -> Option<&str> {
        let t = self.topics.get(topic)?;
        crate::metadata::topic_config::topic_value(
            &self.broker_configs,
            self.node_id,
            &t.configs,
            key,
        )
    }

    /// True in a cluster of brokers (replicas and leaders come from the quorum).
    pub fn is_cluster(&self) -> bool {
        !self.brokers.is_empty()
    }

    /// Whether this broker holds a replica of the partition (a single node holds them all).
    pub fn hosts(&self, topic: &str, partition: i32) -> bool {
        self.topics.get(topic).is_some_and(|t| {
            t.replicas_of(partition, self.node_id)
                .contains(&self.node_id)
        })
    }

    /// The shard that serves a client's request for the partition: UNKNOWN_TOPIC_OR_PARTITION
    /// when it does not exist, NOT_LEADER_OR_FOLLOWER when another broker (or none) leads it.
    pub fn route(&self, topic: &str, partition: i32) -> Result<usize, ErrorCode> {
        let owner = self
            .owner(topic, partition)
            .ok_or(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)?;
        let t = &self.topics[topic];
        if t.leader(partition, self.node_id) != self.node_id {
            return Err(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        }
        Ok(owner)
    }

    /// This image with this broker leading nothing (what it led shows no leader): the view
    /// of a restarted broker until its new registration is in the metadata it has.
    pub fn without_own_leadership(mut self) -> ClusterMeta {
        let me = self.node_id;
        for t in self.topics.values_mut() {
            for l in t.leaders.iter_mut().filter(|l| **l == me) {
                *l = -1;
            }
        }
        self
    }

    /// A live broker's endpoint.
    pub fn broker(&self, id: i32) -> Option<&BrokerInfo> {
        self.brokers.iter().find(|b| b.id == id)
    }

    /// The shard holding the partition on this broker (whether or not it leads it).
    pub fn owner(&self, topic: &str, partition: i32) -> Option<usize> {
        let t = self.topics.get(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| t.placement.get(p).copied())
    }
}

/// Random hex (topic ids, cluster id, member ids) from `util::random_u64`: no system call on
/// the shard thread.
pub fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    let mut word = 0u64;
    for i in 0..bytes {
        if i % 8 == 0 {
            word = crate::util::random_u64();
        }
        out.push_str(&format!("{:02x}", (word >> ((i % 8) * 8)) as u8));
    }
    out
}

/// Kafka's topic name rule: 1..=249 of [a-zA-Z0-9._-], not "." or "..".
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(valid_topic_name("orders.v1_x-2"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name(".."));
        assert!(!valid_topic_name("a/b"));
        assert!(!valid_topic_name(&"x".repeat(250)));
    }

    #[test]
    fn save_load_round_trip_and_fold_placement() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = ClusterMeta {
            version: 3,
            cluster_id: "abc".into(),
            ..Default::default()
        };
        m.topics.insert(
            "t".into(),
            TopicMeta {
                id: random_hex(16),
                placement: vec![0, 1, 2, 3],
                configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
                leader_epochs: vec![0, 3, 0, 1],
                ..Default::default()
            },
        );
        m.save(dir.path()).unwrap();
        let same = ClusterMeta::load(dir.path(), 4).unwrap();
        assert_eq!(same, m);
        let folded = ClusterMeta::load(dir.path(), 2).unwrap();
        assert_eq!(folded.topics["t"].placement, vec![0, 1, 0, 1]);
        assert_eq!(folded.load_per_shard(2), vec![2, 2]);
        assert_eq!(m.topics["t"].id_bytes().len(), 16);
        assert_eq!(m.topics["t"].leader_epoch(1), 3);
        assert_eq!(m.topics["t"].leader_epoch(9), 0);
        assert_ne!(random_hex(16), random_hex(16));
        assert_eq!(random_hex(5).len(), 10);
    }
}
