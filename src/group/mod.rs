//! Consumer group coordinator (Kafka's classic group protocol).
//!
//! The coordinator of group `g` runs on the shard that owns partition `hash(g) % P` of the
//! internal `__consumer_offsets` topic; every other shard forwards group requests there over the
//! mesh. Committed offsets are records in that partition (Kafka's key v1 / value v3 layout), so
//! they survive restarts and kill -9 like any data; the shard replays them when it opens the
//! partition. Group membership itself is kept in memory: after a broker restart members rejoin
//! (their heartbeats get UNKNOWN_MEMBER_ID), as after a Kafka coordinator move.
//!
//! States follow Kafka: Empty, PreparingRebalance, CompletingRebalance, Stable, Dead.

pub mod offsets;
pub mod state;

pub use state::{Coordinator, GroupReq, GroupResp};

/// Name of the internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The `__consumer_offsets` partition of a group (Java's `String.hashCode`, as Kafka uses, so
/// the mapping is the familiar one).
pub fn offsets_partition(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for c in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(c as i32);
    }
    // Kafka: Utils.abs(hash) % n, where abs(MIN) is 0.
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// The shard owning the partition of internal topic `topic` that `key` (a group or a
/// transactional id) hashes to; None while the topic does not exist yet.
pub fn key_owner(shard: &crate::shard::Shard, topic: &str, key: &str) -> Option<usize> {
    let meta = shard.meta();
    let t = meta.topics.get(topic)?;
    t.placement
        .get(offsets_partition(key, t.placement.len() as i32) as usize)
        .copied()
}

#[cfg(test)]
mod tests {
    #[test]
    fn partition_matches_java_hash() {
        // "group".hashCode() == 98629247 in Java.
        assert_eq!(super::offsets_partition("group", 50), 98629247 % 50);
        assert_eq!(super::offsets_partition("", 50), 0);
    }
}
