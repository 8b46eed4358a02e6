//! Transaction APIs: AddPartitionsToTxn, AddOffsetsToTxn and EndTxn go to the coordinator
//! of the transactional id (see `crate::coordinator::txn`); TxnOffsetCommit goes to the group's
//! coordinator, which keeps the offsets pending until the transaction's marker.

use super::{decode, Ctx};
use crate::broker::Broker;
use crate::coordinator::group::OFFSETS_TOPIC;
use crate::coordinator::txn::TxnClaim;
use crate::metadata::key_partition;
use crate::protocol::errors::ErrorCode;
use crate::protocol::Response;
use crate::security::acl::{Operation, ResourceType};
use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;

/// The error an old epoch gets: PRODUCER_FENCED from the versions that know it (KIP-588),
/// INVALID_PRODUCER_EPOCH before.
fn fenced(ctx: &Ctx, first_version_with_fenced: i16) -> ErrorCode {
    if ctx.version >= first_version_with_fenced {
        ErrorCode::PRODUCER_FENCED
    } else {
        ErrorCode::INVALID_PRODUCER_EPOCH
    }
}

pub async fn add_partitions(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: AddPartitionsToTxnRequest = decode(ctx, body)?;
    let txn_id = req.v3_and_below_transactional_id.0.to_string();
    let meta = broker.meta();
    // Partitions of unknown topics fail alone; the others wait for them (Kafka's
    // OPERATION_NOT_ATTEMPTED) so the transaction is not half-extended.
    let mut unknown = false;
    let mut parts = Vec::new();
    // WRITE on the transactional id, then on every topic: one refused topic fails the
    // request (its partitions TOPIC_AUTHORIZATION_FAILED, the others OPERATION_NOT_ATTEMPTED).
    let txn_ok = ctx.check_txn(broker, Operation::Write, &txn_id);
    let writable = |t: &str| ctx.allowed(broker, Operation::Write, ResourceType::Topic, t);
    let mut refused = false;
    for t in &req.v3_and_below_topics {
        refused |= !writable(&t.name.0);
        for p in &t.partitions {
            match meta.owner(&t.name.0, *p) {
                Some(_) => parts.push((t.name.0.to_string(), *p)),
                None => unknown = true,
            }
        }
    }
    let code = if let Err(e) = txn_ok {
        Some(e)
    } else if refused || unknown {
        None
    } else {
        let claim = TxnClaim {
            txn_id,
            producer_id: req.v3_and_below_producer_id.0,
            epoch: req.v3_and_below_producer_epoch,
            fenced: fenced(ctx, 2),
        };
        Some(broker.txns.add_partitions(claim, parts).await)
    };
    let results = req
        .v3_and_below_topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let e = match code {
                                Some(c) => c,
                                None if !writable(&t.name.0) => {
                                    ErrorCode::TOPIC_AUTHORIZATION_FAILED
                                }
                                None if meta.owner(&t.name.0, *p).is_none() => {
                                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
                                }
                                None => ErrorCode::OPERATION_NOT_ATTEMPTED,
                            };
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(e.0)
                        })
                        .collect(),
                )
        })
        .collect();
    Ok(ctx.respond(
        &AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results),
    ))
}

pub async fn add_offsets(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: AddOffsetsToTxnRequest = decode(ctx, body)?;
    let txn_id = req.transactional_id.0.to_string();
    let n = broker
        .meta()
        .topics
        .get(OFFSETS_TOPIC)
        .map(|t| t.placement.len() as i32);
    let authorized = ctx
        .check_txn(broker, Operation::Write, &txn_id)
        .and_then(|()| ctx.check_group(broker, Operation::Read, &req.group_id.0));
    let code = match n {
        _ if authorized.is_err() => authorized.err().unwrap_or(ErrorCode::NONE),
        None => ErrorCode::COORDINATOR_NOT_AVAILABLE,
        Some(n) => {
            let claim = TxnClaim {
                txn_id,
                producer_id: req.producer_id.0,
                epoch: req.producer_epoch,
                fenced: fenced(ctx, 2),
            };
            let offsets_partition = (OFFSETS_TOPIC.to_string(), key_partition(&req.group_id.0, n));
            broker
                .txns
                .add_partitions(claim, vec![offsets_partition])
                .await
        }
    };
    Ok(ctx.respond(&AddOffsetsToTxnResponse::default().with_error_code(code.0)))
}

pub async fn end(broker: &Rc<Broker>, ctx: &Ctx, body: &mut Bytes) -> Result<Response, Response> {
    let req: EndTxnRequest = decode(ctx, body)?;
    let txn_id = req.transactional_id.0.to_string();
    let claim = TxnClaim {
        txn_id,
        producer_id: req.producer_id.0,
        epoch: req.producer_epoch,
        fenced: fenced(ctx, 2),
    };
    let code = match ctx.check_txn(broker, Operation::Write, &claim.txn_id) {
        Ok(()) => broker.txns.end_txn(claim, req.committed).await,
        Err(e) => e,
    };
    Ok(ctx.respond(&EndTxnResponse::default().with_error_code(code.0)))
}

pub async fn offset_commit(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: TxnOffsetCommitRequest = decode(ctx, body)?;
    let entries: Vec<_> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    p.committed_metadata.as_ref().map(|m| m.to_string()),
                )
            })
        })
        .collect();
    let codes = match ctx.check_txn(broker, Operation::Write, &req.transactional_id.0) {
        Err(e) => vec![e; entries.len()],
        Ok(()) => {
            super::group::commit_offsets(
                broker,
                ctx,
                &req.group_id.0,
                req.generation_id,
                req.member_id.to_string(),
                req.group_instance_id.as_ref().map(|x| x.to_string()),
                entries,
                Some((req.producer_id.0, req.producer_epoch)),
            )
            .await
        }
    };
    let mut it = codes.into_iter().map(|c| {
        if c == ErrorCode::INVALID_PRODUCER_EPOCH {
            fenced(ctx, 3)
        } else {
            c
        }
    });
    let topics = req
        .topics
        .iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(
                                    it.next().unwrap_or(ErrorCode::UNKNOWN_SERVER_ERROR).0,
                                )
                        })
                        .collect(),
                )
        })
        .collect();
    Ok(ctx.respond(&TxnOffsetCommitResponse::default().with_topics(topics)))
}

/// WriteTxnMarkers: another broker's transaction coordinator asks this one to write the
/// commit or abort marker of a producer into partitions this broker leads. Served in a
/// cluster only (on a single node the coordinator writes every marker itself).
pub async fn write_markers(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    if !broker.config.is_cluster() {
        return Err(Response::Close(
            "WriteTxnMarkers is for the brokers of a cluster".into(),
        ));
    }
    let req: WriteTxnMarkersRequest = decode(ctx, body)?;
    let meta = broker.meta();
    // Only brokers write markers (CLUSTER_ACTION).
    let cluster_ok = ctx.check_cluster(broker, Operation::ClusterAction);
    let mut markers = Vec::with_capacity(req.markers.len());
    for m in &req.markers {
        let mut here = std::collections::BTreeSet::new();
        let mut codes: Vec<(String, i32, ErrorCode)> = Vec::new();
        for t in &m.topics {
            for &p in &t.partition_indexes {
                let name = t.name.0.to_string();
                if let Err(e) = cluster_ok {
                    codes.push((name, p, e));
                    continue;
                }
                match meta.route(&name, p) {
                    Ok(_) => {
                        here.insert((name.clone(), p));
                        codes.push((name, p, ErrorCode::NONE));
                    }
                    // Deleted since the transaction wrote to it: no marker is needed (Kafka
                    // drops them too), and refusing would block the transaction forever.
                    Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION) => {
                        codes.push((name, p, ErrorCode::NONE))
                    }
                    Err(code) => codes.push((name, p, code)),
                }
            }
        }
        let written = broker
            .partitions
            .write_markers(
                m.producer_id.0,
                m.producer_epoch,
                m.transaction_result,
                &here,
            )
            .await;
        if let Err(e) = &written {
            tracing::warn!("writing transaction markers for another broker: {e}");
        }
        let mut by_topic: std::collections::BTreeMap<String, Vec<_>> = Default::default();
        for (t, p, code) in codes {
            let code = match (&written, code) {
                (Err(_), ErrorCode::NONE) => ErrorCode::KAFKA_STORAGE_ERROR,
                (_, c) => c,
            };
            by_topic.entry(t).or_default().push(
                write_txn_markers_response::WritableTxnMarkerPartitionResult::default()
                    .with_partition_index(p)
                    .with_error_code(code.0),
            );
        }
        markers.push(
            write_txn_markers_response::WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(
                    by_topic
                        .into_iter()
                        .map(|(t, parts)| {
                            write_txn_markers_response::WritableTxnMarkerTopicResult::default()
                                .with_name(TopicName(StrBytes::from_string(t)))
                                .with_partitions(parts)
                        })
                        .collect(),
                ),
        );
    }
    Ok(ctx.respond(&WriteTxnMarkersResponse::default().with_markers(markers)))
}
