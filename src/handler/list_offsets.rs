//! ListOffsets: earliest (-2), latest (-1: the high watermark, or the last stable offset for
//! read_committed) and by timestamp, answered by
//! the owning shards.

use super::{decode, Ctx};
use crate::net::Response;
use crate::protocol::errors::ErrorCode;
use crate::shard::{PartAt, Req, Resp, Shard};
use bytes::Bytes;
use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use std::collections::BTreeMap;
use std::rc::Rc;

pub async fn handle(shard: &Rc<Shard>, ctx: &Ctx, body: &mut Bytes) -> Result<Response, Response> {
    let req: ListOffsetsRequest = decode(ctx, body)?;
    let meta = shard.meta();
    let mut results: Vec<(ErrorCode, i64, i64)> = Vec::new();
    let mut by_owner: BTreeMap<usize, (Vec<usize>, Vec<PartAt>)> = BTreeMap::new();
    for t in &req.topics {
        let name = t.name.0.to_string();
        for p in &t.partitions {
            let i = results.len();
            results.push((ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, -1, -1));
            if let Some(owner) = meta.owner(&name, p.partition_index) {
                let e = by_owner.entry(owner).or_default();
                e.0.push(i);
                e.1.push((name.clone(), p.partition_index, p.timestamp));
            }
        }
    }
    for (owner, (idx, parts)) in by_owner {
        let committed = req.isolation_level == 1;
        match shard
            .call(owner, Req::ListOffsets { parts, committed })
            .await
        {
            Resp::ListOffsets(r) => {
                for (i, v) in idx.into_iter().zip(r) {
                    results[i] = v;
                }
            }
            _ => {
                for i in idx {
                    results[i] = (ErrorCode::NOT_LEADER_OR_FOLLOWER, -1, -1);
                }
            }
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
                            let (code, ts, offset) = it.next().expect("one result per partition");
                            let r = ListOffsetsPartitionResponse::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code.0)
                                .with_timestamp(ts)
                                .with_offset(offset);
                            // leader_epoch exists from v4 on; a set field fails older encodings.
                            if ctx.version >= 4 && offset >= 0 {
                                r.with_leader_epoch(0)
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
