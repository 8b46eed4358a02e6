//! Metadata: this broker as the only node and leader of every partition; auto-creates requested
//! topics when allowed (Kafka's auto.create.topics.enable).

use super::{auto_create, decode, Ctx};
use crate::broker::Broker;
use crate::metadata::image as meta;
use crate::protocol::errors::ErrorCode;
use crate::protocol::Response;
use bytes::Bytes;
use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;

pub const NODE_ID: i32 = 0;

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
    let mut errors = std::collections::BTreeMap::new();
    if let Some(names) = &requested {
        let valid: Vec<String> = names
            .iter()
            .filter(|n| meta::valid_topic_name(n))
            .cloned()
            .collect();
        if allow_create {
            errors = auto_create(broker, &valid).await;
        }
    }
    let cluster = broker.meta();
    let topic_entry = |name: &str| -> MetadataResponseTopic {
        let base = MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))));
        if !meta::valid_topic_name(name) {
            return base.with_error_code(ErrorCode::INVALID_TOPIC_EXCEPTION.0);
        }
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
                            MetadataResponsePartition::default()
                                .with_partition_index(p)
                                .with_leader_id(BrokerId(NODE_ID))
                                .with_leader_epoch(t.leader_epoch(p))
                                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                                .with_isr_nodes(vec![BrokerId(NODE_ID)])
                        })
                        .collect(),
                ),
        }
    };
    let topics = match &requested {
        None => cluster.topics.keys().map(|n| topic_entry(n)).collect(),
        Some(names) => names.iter().map(|n| topic_entry(n)).collect(),
    };
    let (host, port) = broker.config.advertised();
    let resp = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(NODE_ID))
            .with_host(StrBytes::from_string(host))
            .with_port(port)])
        .with_cluster_id(Some(StrBytes::from_string(cluster.cluster_id.clone())))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics);
    Ok(ctx.respond(&resp))
}
