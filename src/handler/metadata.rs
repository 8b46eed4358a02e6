//! Metadata: the live brokers, and each partition's leader, replicas and in-sync replicas (on a
//! single node: this broker, leading everything); auto-creates requested topics when allowed
//! (Kafka's auto.create.topics.enable).

use super::{auto_create, decode, Ctx};
use crate::broker::Broker;
use crate::metadata::image::{self as meta, BrokerInfo};
use crate::metadata::ClusterMeta;
use crate::protocol::errors::ErrorCode;
use crate::protocol::Response;
use crate::security::acl::{self, Operation, ResourceType};
use bytes::Bytes;
use kafka_protocol::messages::describe_cluster_request::DescribeClusterRequest;
use kafka_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;

/// The live brokers a client of `ctx`'s listener may connect to, at that listener's
/// addresses: the cluster's (those with such a listener), or this one alone.
pub fn live_brokers(broker: &Broker, cluster: &ClusterMeta, ctx: &Ctx) -> Vec<BrokerInfo> {
    if cluster.is_cluster() {
        return cluster
            .brokers
            .iter()
            .filter_map(|b| b.on_listener(&ctx.session.listener.name))
            .collect();
    }
    let (host, port) = ctx.session.listener.advertised.clone();
    vec![BrokerInfo {
        id: cluster.node_id,
        host,
        port,
        rack: broker.config.broker_rack.clone(),
        listeners: Vec::new(),
    }]
}

pub async fn handle(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: MetadataRequest = decode(ctx, body)?;
    // v0: an empty list means all topics; v1+: null means all topics.
    let requested: Option<Vec<String>> = match &req.topics {
        None => None,
        Some(t) if t.is_empty() && ctx.version == 0 => None,
        Some(t) => Some(
            t.iter()
                .map(|t| t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default())
                .collect(),
        ),
    };
    let allow_create = ctx.version < 4 || req.allow_auto_topic_creation;
    let describable =
        |name: &str| ctx.allowed(broker, Operation::Describe, ResourceType::Topic, name);
    let mut errors = std::collections::BTreeMap::new();
    if let Some(names) = &requested {
        let valid: Vec<String> = names
            .iter()
            .filter(|n| meta::valid_topic_name(n) && describable(n))
            .cloned()
            .collect();
        if allow_create {
            errors = auto_create(broker, ctx, &valid).await;
        }
    }
    let cluster = broker.meta();
    let with_ops = req.include_topic_authorized_operations && ctx.version >= 8;
    let topic_entry = |name: &str| -> MetadataResponseTopic {
        let base = MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))));
        if !meta::valid_topic_name(name) {
            return base.with_error_code(ErrorCode::INVALID_TOPIC_EXCEPTION.0);
        }
        // Kafka's answer for a topic the requester may not see, whether it exists or not.
        if !describable(name) {
            return base.with_error_code(ErrorCode::TOPIC_AUTHORIZATION_FAILED.0);
        }
        let base = if with_ops {
            base.with_topic_authorized_operations(ctx.authorized_operations(
                broker,
                ResourceType::Topic,
                name,
            ))
        } else {
            base
        };
        match cluster.topics.get(name) {
            None => base.with_error_code(
                errors
                    .get(name)
                    .copied()
                    .unwrap_or(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
                    .0,
            ),
            Some(t) => base
                .with_is_internal(crate::metadata::is_internal(name) && ctx.version >= 1)
                .with_topic_id(uuid::Uuid::from_bytes(t.id_bytes()))
                .with_partitions(
                    (0..t.placement.len() as i32)
                        .map(|p| {
                            let me = cluster.node_id;
                            let ids = |v: Vec<i32>| v.into_iter().map(BrokerId).collect();
                            let leader = t.leader(p, me);
                            let replicas = t.replicas_of(p, me);
                            let offline: Vec<i32> = replicas
                                .iter()
                                .copied()
                                .filter(|r| cluster.is_cluster() && cluster.broker(*r).is_none())
                                .collect();
                            MetadataResponsePartition::default()
                                .with_error_code(if leader < 0 {
                                    ErrorCode::LEADER_NOT_AVAILABLE.0
                                } else {
                                    0
                                })
                                .with_partition_index(p)
                                .with_leader_id(BrokerId(leader))
                                .with_leader_epoch(t.leader_epoch(p))
                                .with_replica_nodes(ids(replicas))
                                .with_isr_nodes(ids(t.isr_of(p, me)))
                                .with_offline_replicas(ids(offline))
                        })
                        .collect(),
                ),
        }
    };
    let topics = match &requested {
        // Every topic the requester may describe; the others are not named.
        None => cluster
            .topics
            .keys()
            .filter(|n| describable(n))
            .map(|n| topic_entry(n))
            .collect(),
        Some(names) => names.iter().map(|n| topic_entry(n)).collect(),
    };
    let resp = MetadataResponse::default()
        .with_brokers(
            live_brokers(broker, &cluster, ctx)
                .into_iter()
                .map(|b| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(b.id))
                        .with_host(StrBytes::from_string(b.host))
                        .with_port(b.port)
                        .with_rack(b.rack.map(StrBytes::from_string))
                })
                .collect(),
        )
        .with_cluster_id(Some(StrBytes::from_string(cluster.cluster_id.clone())))
        .with_controller_id(BrokerId(cluster.controller_id))
        .with_topics(topics);
    let resp = if req.include_cluster_authorized_operations && (8..=10).contains(&ctx.version) {
        resp.with_cluster_authorized_operations(ctx.authorized_operations(
            broker,
            ResourceType::Cluster,
            acl::CLUSTER_NAME,
        ))
    } else {
        resp
    };
    Ok(ctx.respond(&resp))
}

/// DescribeCluster (KIP-700): the cluster id, the active controller and the live brokers.
pub async fn describe_cluster(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: DescribeClusterRequest = decode(ctx, body)?;
    let cluster = broker.meta();
    let mut resp = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(cluster.cluster_id.clone()))
        .with_controller_id(BrokerId(cluster.controller_id))
        // Kafka's "not requested" marker for authorized operations.
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            ctx.authorized_operations(broker, ResourceType::Cluster, acl::CLUSTER_NAME)
        } else {
            i32::MIN
        });
    if ctx.version >= 1 && req.endpoint_type != 1 {
        // 1: brokers; controllers are not exposed to clients (Kafka answers the same).
        resp = resp
            .with_error_code(ErrorCode::UNSUPPORTED_VERSION.0)
            .with_error_message(Some(StrBytes::from_static_str(
                "only broker endpoints (endpoint_type 1) are served",
            )))
            .with_endpoint_type(req.endpoint_type);
        return Ok(ctx.respond(&resp));
    }
    resp.brokers = live_brokers(broker, &cluster, ctx)
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host))
                .with_port(b.port)
                .with_rack(b.rack.map(StrBytes::from_string))
        })
        .collect();
    Ok(ctx.respond(&resp.with_endpoint_type(1)))
}
