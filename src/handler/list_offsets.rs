//! ListOffsets: earliest (-2), latest (-1: the high watermark, or the last stable offset for
//! read_committed) and by timestamp, answered by
//! the owning shards.

use super::{decode, Ctx};
use crate::broker::Broker;
use crate::partition_manager::{ListedOffset, PartitionOffset};
use crate::protocol::errors::ErrorCode;
use crate::protocol::Response;
use bytes::Bytes;
use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
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
            let owner = meta.route(&name, p.partition_index);
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
