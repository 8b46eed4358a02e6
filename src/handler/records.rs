//! DeleteRecords: moves partitions' log starts (Kafka's low watermark) forward, on their
//! leaders; readers below it get OFFSET_OUT_OF_RANGE and followers follow it.

use super::{decode, Ctx};
use crate::broker::Broker;
use crate::protocol::errors::ErrorCode;
use crate::protocol::Response;
use crate::security::acl::Operation;
use bytes::Bytes;
use kafka_protocol::messages::delete_records_request::DeleteRecordsRequest;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// A partition to ask its owner about: its (topic, partition) slot in the request, and
/// (topic, partition, offset).
type Ask = ((usize, usize), (String, i32, i64));

pub async fn delete_records(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: DeleteRecordsRequest = decode(ctx, body)?;
    let meta = broker.meta();
    // Per slot (topic i, partition j): the answer, or the owning shard to ask.
    let mut answers: Vec<Vec<(i64, ErrorCode)>> = Vec::new();
    let mut by_owner: BTreeMap<usize, Vec<Ask>> = BTreeMap::new();
    for (i, t) in req.topics.iter().enumerate() {
        answers.push(vec![(-1, ErrorCode::NONE); t.partitions.len()]);
        for (j, p) in t.partitions.iter().enumerate() {
            let routed = ctx
                .check_topic(broker, Operation::Delete, t.name.as_str())
                .and_then(|()| meta.route(t.name.as_str(), p.partition_index));
            match routed {
                Ok(owner) => by_owner
                    .entry(owner)
                    .or_default()
                    .push(((i, j), (t.name.to_string(), p.partition_index, p.offset))),
                Err(code) => answers[i][j] = (-1, code),
            }
        }
    }
    for (owner, list) in by_owner {
        let (slots, parts): (Vec<_>, Vec<_>) = list.into_iter().unzip();
        let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
        let done = broker
            .partitions
            .delete_records_on(owner, parts, timeout)
            .await;
        for ((i, j), r) in slots.into_iter().zip(done) {
            answers[i][j] = match r {
                Ok(low) => (low, ErrorCode::NONE),
                Err(e) => {
                    tracing::debug!("DeleteRecords: {e}");
                    (-1, e.code)
                }
            };
        }
    }
    let topics = req
        .topics
        .iter()
        .zip(answers)
        .map(|(t, a)| {
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .zip(a)
                        .map(|(p, (low, code))| {
                            DeleteRecordsPartitionResult::default()
                                .with_partition_index(p.partition_index)
                                .with_low_watermark(low)
                                .with_error_code(code.0)
                        })
                        .collect(),
                )
        })
        .collect();
    Ok(ctx.respond(&DeleteRecordsResponse::default().with_topics(topics)))
}
