//! The cluster metadata as every shard sees it: an immutable image (`ClusterMeta`: topics, their
//! configs, partition placement and leader epochs, producer-id blocks) that is replaced, never
//! mutated, when the controller publishes a new version; the names of the internal topics; and
//! how a topic's configs map onto its log.
//!
//! Invariants: only the controller (shard 0) produces new images, each with a higher version;
//! a shard ignores an image older than the one it holds.

pub mod image;
pub mod topic_config;

pub use image::{ClusterMeta, TopicMeta};

use crate::protocol::errors::ErrorCode;
use std::cell::RefCell;
use std::rc::Rc;

/// Committed offsets of consumer groups (Kafka's name and layout).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Transaction coordinator state (Kafka's name and layout).
pub const TXN_TOPIC: &str = "__transaction_state";

/// The broker's own topics: clients may read them (Kafka allows it) but neither produce to
/// them nor delete them.
pub fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC || topic == TXN_TOPIC
}

/// Most topics the broker holds (each costs at least a partition, its files and a metadata
/// entry every shard keeps); CreateTopics and auto-creation past it answer POLICY_VIOLATION.
pub const MAX_TOPICS: usize = 10_000;
/// Most partitions the broker holds, over all topics: each costs an open segment, its
/// preallocation and descriptors.
pub const MAX_PARTITIONS: usize = 100_000;

/// The configs of `__consumer_offsets` and `__transaction_state` (`topic`).
pub fn internal_topic_configs(
    cfg: &crate::config::Config,
    topic: &str,
) -> std::collections::BTreeMap<String, String> {
    let segment_bytes = if topic == OFFSETS_TOPIC {
        cfg.offsets_topic_segment_bytes
    } else {
        cfg.transaction_state_segment_bytes
    };
    std::collections::BTreeMap::from([
        ("segment.bytes".to_string(), segment_bytes.to_string()),
        // Keyed state: the cleaner keeps each key's latest record, and nothing expires by age
        // (deleting old segments would forget offsets or transactions written long ago).
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("retention.ms".to_string(), "-1".to_string()),
    ])
}

/// This shard's current metadata image.
pub struct MetadataImage {
    current: RefCell<Rc<ClusterMeta>>,
}

impl MetadataImage {
    pub fn new(meta: ClusterMeta) -> Rc<MetadataImage> {
        Rc::new(MetadataImage {
            current: RefCell::new(Rc::new(meta)),
        })
    }

    /// The current image; holding it keeps that version, whatever is published meanwhile.
    pub fn get(&self) -> Rc<ClusterMeta> {
        self.current.borrow().clone()
    }

    /// Replaces the image unless `meta` is older than the current one.
    pub fn publish(&self, meta: Rc<ClusterMeta>) {
        let newer = meta.version >= self.current.borrow().version;
        if newer {
            *self.current.borrow_mut() = meta;
        }
    }

    /// The shard coordinating `key` (a group or a transactional id): the one holding the
    /// partition of internal topic `topic` it hashes to. COORDINATOR_NOT_AVAILABLE while the
    /// topic does not exist or the partition has no leader, NOT_COORDINATOR when another
    /// broker leads it (the client asks FindCoordinator again).
    pub fn key_owner(&self, topic: &str, key: &str) -> Result<usize, ErrorCode> {
        let meta = self.get();
        let t = meta
            .topics
            .get(topic)
            .ok_or(ErrorCode::COORDINATOR_NOT_AVAILABLE)?;
        let p = key_partition(key, t.placement.len() as i32);
        match t.leader(p, meta.node_id) {
            -1 => Err(ErrorCode::COORDINATOR_NOT_AVAILABLE),
            l if l != meta.node_id => Err(ErrorCode::NOT_COORDINATOR),
            _ => t
                .placement
                .get(p as usize)
                .copied()
                .ok_or(ErrorCode::COORDINATOR_NOT_AVAILABLE),
        }
    }

    /// Partitions of `topic`, or None while it does not exist.
    pub fn partition_count(&self, topic: &str) -> Option<i32> {
        self.get()
            .topics
            .get(topic)
            .map(|t| t.placement.len() as i32)
    }
}

/// The partition of an internal topic that a group or transactional id maps to (Java's
/// `String.hashCode`, as Kafka uses, so the mapping is the familiar one).
pub fn key_partition(key: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for c in key.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(c as i32);
    }
    // Kafka: Utils.abs(hash) % n, where abs(MIN) is 0.
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn partition_matches_java_hash() {
        // "group".hashCode() == 98629247 in Java.
        assert_eq!(super::key_partition("group", 50), 98629247 % 50);
        assert_eq!(super::key_partition("", 50), 0);
    }
}
