//! ListOffsets: earliest (-2), latest (-1: the high watermark, or the last stable offset for
//! read_committed) and by timestamp, answered by
//! the owning shards.

use super::{decode, Ctx};
use crate::broker::Broker;
use crate::partition_manager::{ListedOffset, PartitionOffset};
use crate::protocol::errors::ErrorCode;
use crate::protocol::Response;
use crate::security::acl::Operation;
use bytes::Bytes;
use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderEpochRequest;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};
use std::collections::BTreeMap;
use std::rc::Rc;

pub async fn handle(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: ListOffsetsRequest = decode(ctx, body)?;
    let meta = broker.meta();
    let mut results: Vec<ListedOffset> = Vec::new();
    let mut by_owner: BTreeMap<usize, (Vec<usize>, Vec<PartitionOffset>)> = BTreeMap::new();
    for t in &req.topics {
        let name = t.name.0.to_string();
        for p in &t.partitions {
            let i = results.len();
            let owner = ctx
                .check_topic(broker, Operation::Describe, &name)
                .and_then(|()| meta.route(&name, p.partition_index));
            results.push(ListedOffset::error(
                owner.err().unwrap_or(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
            ));
            if let Ok(owner) = owner {
                let e = by_owner.entry(owner).or_default();
                e.0.push(i);
                e.1.push(PartitionOffset {
                    topic: name.clone(),
                    partition: p.partition_index,
                    offset: p.timestamp,
                    follower: false,
                });
            }
        }
    }
    let committed = req.isolation_level == 1;
    for (owner, (idx, parts)) in by_owner {
        let listed = broker
            .partitions
            .list_offsets_on(owner, parts, committed)
            .await;
        for (i, v) in idx.into_iter().zip(listed) {
            results[i] = v;
        }
    }
    let mut it = results.into_iter();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let lo = it.next().expect("one result per partition");
                            let r = ListOffsetsPartitionResponse::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(lo.error.0)
                                .with_timestamp(lo.timestamp)
                                .with_offset(lo.offset);
                            // leader_epoch exists from v4 on; a set field fails older encodings.
                            if ctx.version >= 4 && lo.offset >= 0 {
                                r.with_leader_epoch(lo.leader_epoch)
                            } else {
                                r
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    Ok(ctx.respond(&ListOffsetsResponse::default().with_topics(topics)))
}

/// OffsetForLeaderEpoch (KIP-101/320): where each asked-for leader epoch ends in the leader's
/// log, so a consumer (or, with replication, a follower) finds a divergent tail. The caller's
/// view of the current epoch is checked first: older is FENCED_LEADER_EPOCH, newer
/// UNKNOWN_LEADER_EPOCH (both make librdkafka refresh its metadata).
pub async fn for_leader_epoch(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: OffsetForLeaderEpochRequest = decode(ctx, body)?;
    let meta = broker.meta();
    let mut slots: Vec<Vec<EpochEndOffset>> = Vec::with_capacity(req.topics.len());
    // Per owning shard: where each answer goes (topic, partition slot) and what is asked.
    type Asks = (Vec<(usize, usize)>, Vec<(String, i32, i32)>);
    let mut by_owner: BTreeMap<usize, Asks> = BTreeMap::new();
    // A follower (replica id, v3+) needs CLUSTER_ACTION, a client DESCRIBE on the topic.
    let follower = req.replica_id.0 >= 0;
    let cluster_ok = !follower || ctx.allowed_cluster(broker, Operation::ClusterAction);
    for (ti, t) in req.topics.iter().enumerate() {
        let name = t.topic.0.to_string();
        let mut parts = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let out = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            let authorized = if follower {
                cluster_ok
                    .then_some(())
                    .ok_or(ErrorCode::CLUSTER_AUTHORIZATION_FAILED)
            } else {
                ctx.check_topic(broker, Operation::Describe, &name)
            };
            let checked = authorized
                .and_then(|()| meta.route(&name, p.partition))
                .and_then(|owner| {
                    let current = meta.topics[&name].leader_epoch(p.partition);
                    match p.current_leader_epoch {
                        e if e >= 0 && e < current => Err(ErrorCode::FENCED_LEADER_EPOCH),
                        e if e > current => Err(ErrorCode::UNKNOWN_LEADER_EPOCH),
                        _ => Ok(owner),
                    }
                });
            match checked {
                Ok(owner) => {
                    let e = by_owner.entry(owner).or_default();
                    e.0.push((ti, pi));
                    e.1.push((name.clone(), p.partition, p.leader_epoch));
                    parts.push(out);
                }
                Err(code) => parts.push(out.with_error_code(code.0)),
            }
        }
        slots.push(parts);
    }
    for (owner, (places, asks)) in by_owner {
        let answers = broker
            .partitions
            .epoch_end_offsets_on(owner, asks, follower)
            .await;
        for ((ti, pi), a) in places.into_iter().zip(answers) {
            let slot = &mut slots[ti][pi];
            match a {
                Ok((epoch, end)) => {
                    slot.leader_epoch = epoch;
                    slot.end_offset = end;
                }
                Err(code) => slot.error_code = code.0,
            }
        }
    }
    let topics = req
        .topics
        .iter()
        .zip(slots)
        .map(|(t, parts)| {
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(parts)
        })
        .collect();
    Ok(ctx.respond(&OffsetForLeaderEpochResponse::default().with_topics(topics)))
}
