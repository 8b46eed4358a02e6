//! CreateTopics, DeleteTopics, CreatePartitions and ElectLeaders, carried out by the
//! controller on shard 0 (the metadata owner; in a cluster, through the quorum).

use super::{decode, on_allowed, Ctx};
use crate::broker::Broker;
use crate::controller::{CreateSpec, GrowSpec, TopicResult};
use crate::protocol::errors::ErrorCode;
use crate::protocol::Response;
use crate::security::acl::{Operation, ResourceType};
use bytes::Bytes;
use kafka_protocol::messages::alter_partition_reassignments_request::AlterPartitionReassignmentsRequest;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    AlterPartitionReassignmentsResponse, ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsRequest;
use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use kafka_protocol::messages::create_topics_request::CreateTopicsRequest;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicsRequest;
use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::messages::elect_leaders_request::ElectLeadersRequest;
use kafka_protocol::messages::elect_leaders_response::{
    ElectLeadersResponse, PartitionResult, ReplicaElectionResult,
};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsRequest;
use kafka_protocol::messages::list_partition_reassignments_response::{
    ListPartitionReassignmentsResponse, OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::rc::Rc;

/// The answer for a topic the requester may not `what`.
fn refused(what: &str) -> TopicResult {
    TopicResult::err(
        ErrorCode::TOPIC_AUTHORIZATION_FAILED,
        format!("not authorized to {what} this topic"),
    )
}

pub async fn create(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: CreateTopicsRequest = decode(ctx, body)?;
    let specs: Vec<CreateSpec> = req
        .topics
        .iter()
        .map(|t| CreateSpec {
            name: t.name.0.to_string(),
            // Explicit replica assignments: their count is the partitions, their length the
            // replication factor.
            partitions: if t.assignments.is_empty() {
                t.num_partitions
            } else {
                t.assignments.len() as i32
            },
            replication_factor: if t.assignments.is_empty() {
                t.replication_factor
            } else {
                t.assignments
                    .first()
                    .map_or(1, |a| a.broker_ids.len() as i16)
            },
            configs: t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect::<BTreeMap<_, _>>(),
            validate_only: req.validate_only,
            assignment: if t.assignments.is_empty() {
                None
            } else {
                let mut a: Vec<_> = t.assignments.iter().collect();
                a.sort_by_key(|a| a.partition_index);
                Some(
                    a.into_iter()
                        .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                        .collect(),
                )
            },
        })
        .collect();
    let partitions: Vec<i32> = specs.iter().map(|s| s.partitions).collect();
    // CREATE on the cluster or on the topic (Kafka's rule).
    let cluster_create = ctx.allowed_cluster(broker, Operation::Create);
    let may_create = |s: &CreateSpec| {
        cluster_create || ctx.allowed(broker, Operation::Create, ResourceType::Topic, &s.name)
    };
    let results = on_allowed(specs, may_create, refused("create"), |specs| {
        broker.controller.create_topics(specs)
    })
    .await;
    let meta = broker.meta();
    let topics = req
        .topics
        .iter()
        .zip(results)
        .zip(partitions)
        .map(|((t, res), n)| {
            let (code, msg) = (res.error, res.message);
            let mut r = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(code.0)
                .with_error_message(msg.map(StrBytes::from_string));
            if code.is_ok() {
                let n = if n == -1 {
                    broker.config.default_partitions
                } else {
                    n
                };
                r = r.with_num_partitions(n).with_replication_factor(1);
                if let Some(m) = meta.topics.get(t.name.0.as_str()) {
                    r = r.with_replication_factor(m.replicas_of(0, meta.node_id).len() as i16);
                    r = r.with_topic_id(uuid::Uuid::from_bytes(m.id_bytes()));
                }
            } else {
                r = r.with_num_partitions(-1).with_replication_factor(-1);
            }
            r
        })
        .collect();
    Ok(ctx.respond(&CreateTopicsResponse::default().with_topics(topics)))
}

pub async fn delete(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: DeleteTopicsRequest = decode(ctx, body)?;
    let meta = broker.meta();
    // v6 names topics in `topics` (by name or id); older versions in `topic_names`.
    let names: Vec<Option<String>> = if ctx.version >= 6 {
        req.topics
            .iter()
            .map(|t| match &t.name {
                Some(n) => Some(n.0.to_string()),
                // An id names a topic only to whom may describe it (Kafka's rule).
                None => meta
                    .topics
                    .iter()
                    .find(|(_, m)| uuid::Uuid::from_bytes(m.id_bytes()) == t.topic_id)
                    .map(|(n, _)| n.clone())
                    .filter(|n| ctx.allowed(broker, Operation::Describe, ResourceType::Topic, n)),
            })
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| Some(n.0.to_string()))
            .collect()
    };
    let known: Vec<String> = names.iter().flatten().cloned().collect();
    let may_delete = |t: &String| ctx.allowed(broker, Operation::Delete, ResourceType::Topic, t);
    let mut results = on_allowed(known, may_delete, refused("delete"), |known| {
        broker.controller.delete_topics(known)
    })
    .await
    .into_iter()
    .map(|r| (r.error, r.message));
    let responses = names
        .into_iter()
        .map(|n| {
            let (code, msg) = match &n {
                Some(_) => results
                    .next()
                    .unwrap_or((ErrorCode::UNKNOWN_SERVER_ERROR, Some("no reply".into()))),
                None => (
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    Some("unknown topic id".into()),
                ),
            };
            DeletableTopicResult::default()
                .with_name(n.map(|n| TopicName(StrBytes::from_string(n))))
                .with_error_code(code.0)
                .with_error_message(msg.map(StrBytes::from_string))
        })
        .collect();
    Ok(ctx.respond(&DeleteTopicsResponse::default().with_responses(responses)))
}

/// CreatePartitions: grows topics (never shrinks them), carried out by the controller.
pub async fn create_partitions(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: CreatePartitionsRequest = decode(ctx, body)?;
    let specs = req
        .topics
        .iter()
        .map(|t| GrowSpec {
            topic: t.name.0.to_string(),
            count: t.count,
            assignment: t.assignments.as_ref().map(|a| {
                a.iter()
                    .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            }),
            validate_only: req.validate_only,
        })
        .collect();
    let may_alter =
        |s: &GrowSpec| ctx.allowed(broker, Operation::Alter, ResourceType::Topic, &s.topic);
    let results = on_allowed(specs, may_alter, refused("alter"), |specs| {
        broker.controller.create_partitions(specs)
    })
    .await;
    let results = req
        .topics
        .iter()
        .zip(results)
        .map(|(t, r)| {
            CreatePartitionsTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(r.error.0)
                .with_error_message(r.message.map(StrBytes::from_string))
        })
        .collect();
    Ok(ctx.respond(&CreatePartitionsResponse::default().with_results(results)))
}

/// ElectLeaders (KIP-460): preferred (0) or unclean (1) elections, committed by the controller.
pub async fn elect_leaders(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: ElectLeadersRequest = decode(ctx, body)?;
    if let Err(e) = ctx.check_cluster(broker, Operation::Alter) {
        return Ok(ctx.respond(&ElectLeadersResponse::default().with_error_code(e.0)));
    }
    let unclean = match req.election_type {
        0 => false,
        1 => true,
        other => {
            let resp =
                ElectLeadersResponse::default().with_error_code(ErrorCode::INVALID_REQUEST.0);
            tracing::debug!("ElectLeaders with election type {other}");
            return Ok(ctx.respond(&resp));
        }
    };
    let asked = req.topic_partitions.as_ref().map(|tps| {
        tps.iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect::<Vec<_>>()
    });
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for ((topic, p), r) in broker.controller.elect_leaders(unclean, asked).await {
        by_topic.entry(topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(p)
                .with_error_code(r.error.0)
                .with_error_message(r.message.map(StrBytes::from_string)),
        );
    }
    let results = by_topic
        .into_iter()
        .map(|(t, parts)| {
            ReplicaElectionResult::default()
                .with_topic(TopicName(StrBytes::from_string(t)))
                .with_partition_result(parts)
        })
        .collect();
    Ok(ctx.respond(&ElectLeadersResponse::default().with_replica_election_results(results)))
}

/// AlterPartitionReassignments (KIP-455): move partitions to new replica sets, or cancel
/// (null replicas); committed by the controller, completed once the new replicas are in sync.
pub async fn alter_reassignments(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: AlterPartitionReassignmentsRequest = decode(ctx, body)?;
    if let Err(e) = ctx.check_cluster(broker, Operation::Alter) {
        let resp = AlterPartitionReassignmentsResponse::default().with_error_code(e.0);
        return Ok(ctx.respond(&resp));
    }
    let moves: Vec<crate::controller::Move> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                let target = p
                    .replicas
                    .as_ref()
                    .map(|r| r.iter().map(|b| b.0).collect::<Vec<i32>>());
                (t.name.0.to_string(), p.partition_index, target)
            })
        })
        .collect();
    let mut results = broker
        .controller
        .alter_reassignments(moves)
        .await
        .into_iter();
    let responses = req
        .topics
        .iter()
        .map(|t| {
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let r = results.next().expect("one result per partition");
                    ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(r.error.0)
                        .with_error_message(r.message.map(StrBytes::from_string))
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(parts)
        })
        .collect();
    Ok(ctx.respond(&AlterPartitionReassignmentsResponse::default().with_responses(responses)))
}

/// ListPartitionReassignments: the reassignments in progress (all, or of the partitions
/// asked about).
pub async fn list_reassignments(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: ListPartitionReassignmentsRequest = decode(ctx, body)?;
    if let Err(e) = ctx.check_cluster(broker, Operation::Describe) {
        let resp = ListPartitionReassignmentsResponse::default().with_error_code(e.0);
        return Ok(ctx.respond(&resp));
    }
    let only = req.topics.as_ref().map(|ts| {
        ts.iter()
            .flat_map(|t| {
                t.partition_indexes
                    .iter()
                    .map(|p| (t.name.0.to_string(), *p))
            })
            .collect::<Vec<_>>()
    });
    let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect::<Vec<_>>();
    let mut by_topic: BTreeMap<String, Vec<OngoingPartitionReassignment>> = BTreeMap::new();
    for r in broker.controller.list_reassignments(only).await {
        by_topic.entry(r.topic).or_default().push(
            OngoingPartitionReassignment::default()
                .with_partition_index(r.partition)
                .with_replicas(ids(r.replicas))
                .with_adding_replicas(ids(r.adding))
                .with_removing_replicas(ids(r.removing)),
        );
    }
    let topics = by_topic
        .into_iter()
        .map(|(t, parts)| {
            OngoingTopicReassignment::default()
                .with_name(TopicName(StrBytes::from_string(t)))
                .with_partitions(parts)
        })
        .collect();
    Ok(ctx.respond(&ListPartitionReassignmentsResponse::default().with_topics(topics)))
}
