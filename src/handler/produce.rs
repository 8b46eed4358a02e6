//! Produce: validate each partition's record batches on the connection's shard (CRC, magic,
//! framing), send each owning shard its partitions in one message, answer in request order.

use super::{auto_create, decode, Ctx};
use crate::net::Response;
use crate::protocol::batch;
use crate::protocol::errors::{ErrorCode, KafkaError};
use crate::shard::{ProduceOut, ProducePart, Req, Resp, Shard};
use bytes::Bytes;
use kafka_protocol::messages::produce_request::ProduceRequest;
use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::rc::Rc;

/// Most partitions one produce request may name; bounds the work a single frame can ask for.
const MAX_PARTITIONS_PER_REQUEST: usize = 100_000;

pub async fn handle(shard: &Rc<Shard>, ctx: &Ctx, body: &mut Bytes) -> Result<Response, Response> {
    let req: ProduceRequest = decode(ctx, body)?;
    let acks = req.acks;
    let n_parts: usize = req.topic_data.iter().map(|t| t.partition_data.len()).sum();
    if n_parts > MAX_PARTITIONS_PER_REQUEST {
        return Err(Response::Close(format!(
            "produce names {n_parts} partitions"
        )));
    }
    if req.transactional_id.is_some() {
        // Transactions are not implemented: refuse rather than write without their guarantees.
        let results = vec![
            (
                ErrorCode::INVALID_REQUEST,
                "transactions are not supported yet".to_string()
            );
            n_parts
        ];
        return Ok(respond_errors(ctx, &req, results));
    }
    let names: Vec<String> = req
        .topic_data
        .iter()
        .map(|t| t.name.0.to_string())
        .collect();
    let missing = auto_create(shard, &names).await;
    let meta = shard.meta();

    // Slot per partition in request order; each is either an immediate error or a routed part.
    let mut slots: Vec<Option<ProduceOut>> = Vec::with_capacity(n_parts);
    let mut by_shard: BTreeMap<usize, (Vec<usize>, Vec<ProducePart>)> = BTreeMap::new();
    let bad = |code: ErrorCode, m: String| ProduceOut {
        error: Some(KafkaError::new(code, m)),
        base_offset: -1,
        log_append_time: -1,
        log_start_offset: -1,
    };
    for topic in &req.topic_data {
        let name = topic.name.0.to_string();
        for p in &topic.partition_data {
            let slot = slots.len();
            if ![0, 1, -1].contains(&acks) {
                slots.push(Some(bad(
                    ErrorCode::INVALID_REQUIRED_ACKS,
                    format!("acks={acks}"),
                )));
                continue;
            }
            if let Some(code) = missing.get(&name) {
                slots.push(Some(bad(*code, format!("unknown topic {name}"))));
                continue;
            }
            let Some(owner) = meta.owner(&name, p.index) else {
                slots.push(Some(bad(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("{name} has no partition {}", p.index),
                )));
                continue;
            };
            let records = p.records.clone().unwrap_or_default();
            match batch::validate_produce(&records, shard.config.max_batch_bytes) {
                Err(e) => slots.push(Some(ProduceOut {
                    error: Some(e),
                    base_offset: -1,
                    log_append_time: -1,
                    log_start_offset: -1,
                })),
                Ok(infos) => {
                    slots.push(None);
                    let entry = by_shard.entry(owner).or_default();
                    entry.0.push(slot);
                    entry.1.push(ProducePart {
                        topic: name.clone(),
                        partition: p.index,
                        records,
                        infos,
                    });
                }
            }
        }
    }
    let timeout_ms = req.timeout_ms.max(0) as u64;
    let mut calls = Vec::new();
    for (owner, (idx, parts)) in by_shard {
        let s = shard.clone();
        let task = glommio::spawn_local(async move {
            s.call(
                owner,
                Req::Produce {
                    acks,
                    timeout_ms,
                    parts,
                },
            )
            .await
        });
        calls.push((idx, task));
    }
    for (idx, task) in calls {
        match task.await {
            Resp::Produce(outs) => {
                for (i, o) in idx.into_iter().zip(outs) {
                    slots[i] = Some(o);
                }
            }
            other => {
                let m = match other {
                    Resp::Failed(m) => m,
                    _ => "unexpected reply".into(),
                };
                for i in idx {
                    slots[i] = Some(bad(ErrorCode::NOT_LEADER_OR_FOLLOWER, m.clone()));
                }
            }
        }
    }
    if acks == 0 {
        return Ok(Response::Nothing);
    }
    let mut it = slots.into_iter();
    let responses = req
        .topic_data
        .iter()
        .map(|t| {
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_partition_responses(
                t.partition_data
                    .iter()
                    .map(|p| {
                        let o = it.next().flatten().expect("every slot filled");
                        let mut r = PartitionProduceResponse::default()
                            .with_index(p.index)
                            .with_base_offset(o.base_offset)
                            .with_log_append_time_ms(o.log_append_time)
                            .with_log_start_offset(o.log_start_offset);
                        if let Some(e) = o.error {
                            tracing::debug!(client = %ctx.client_id, "produce {}: {e}", t.name.0);
                            r = r
                                .with_error_code(e.code.0)
                                .with_error_message(Some(StrBytes::from_string(e.message)));
                        }
                        r
                    })
                    .collect(),
            )
        })
        .collect();
    Ok(ctx.respond(&ProduceResponse::default().with_responses(responses)))
}

fn respond_errors(ctx: &Ctx, req: &ProduceRequest, results: Vec<(ErrorCode, String)>) -> Response {
    if req.acks == 0 {
        return Response::Nothing;
    }
    let mut it = results.into_iter();
    let responses = req
        .topic_data
        .iter()
        .map(|t| {
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_partition_responses(
                    t.partition_data
                        .iter()
                        .map(|p| {
                            let (code, m) = it.next().expect("one result per partition");
                            PartitionProduceResponse::default()
                                .with_index(p.index)
                                .with_base_offset(-1)
                                .with_error_code(code.0)
                                .with_error_message(Some(StrBytes::from_string(m)))
                        })
                        .collect(),
                )
        })
        .collect();
    ctx.respond(&ProduceResponse::default().with_responses(responses))
}
