//! DescribeConfigs: every topic config Flumen honours (the topic's override or the broker's
//! value, with Kafka's source, read-only and type codes) and the broker's own configs.
//! AlterConfigs and IncrementalAlterConfigs: a topic's overrides, committed through the
//! controller and in force without a restart; and the dynamic broker configs, for the whole
//! cluster (resource "") or one broker (its id), the same way. Broker configs only a restart
//! changes answer INVALID_REQUEST.

use super::{decode, Ctx};
use crate::broker::Broker;
use crate::controller::{ConfigChange, ConfigTarget, TopicResult};
use crate::metadata::topic_config::{
    describe_broker, describe_cluster_defaults, describe_topic, is_static_broker_config, ConfigOp,
    ConfigSource, DescribedConfig,
};
use crate::protocol::errors::ErrorCode;
use crate::protocol::legacy;
use crate::protocol::Response;
use crate::security::acl::{Operation, ResourceType};
use bytes::Bytes;
use kafka_protocol::messages::alter_configs_request::AlterConfigsRequest;
use kafka_protocol::messages::alter_configs_response::{
    AlterConfigsResourceResponse, AlterConfigsResponse,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
    DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_request::IncrementalAlterConfigsRequest;
use kafka_protocol::messages::incremental_alter_configs_response::{
    AlterConfigsResourceResponse as IncrementalResult, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeSet;
use std::rc::Rc;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// Whether the requester may `op` the configs of a topic (the topic's ACLs) or a broker
/// (the cluster's).
fn may(ctx: &Ctx, broker: &Broker, op: Operation, kind: i8, name: &str) -> bool {
    if kind == TOPIC {
        ctx.allowed(broker, op, ResourceType::Topic, name)
    } else {
        ctx.allowed_cluster(broker, op)
    }
}

fn refused_code(kind: i8) -> ErrorCode {
    if kind == TOPIC {
        ErrorCode::TOPIC_AUTHORIZATION_FAILED
    } else {
        ErrorCode::CLUSTER_AUTHORIZATION_FAILED
    }
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

pub async fn describe(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: DescribeConfigsRequest = if ctx.version == 0 {
        legacy::describe_configs(body).map_err(|e| ctx.malformed(e))?
    } else {
        decode(ctx, body)?
    };
    let meta = broker.meta();
    let results = req
        .resources
        .iter()
        .map(|r| {
            let name = r.resource_name.as_str();
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let configs = match r.resource_type {
                kind @ (TOPIC | BROKER)
                    if !may(ctx, broker, Operation::DescribeConfigs, kind, name) =>
                {
                    Err((
                        refused_code(kind),
                        format!("not authorized to describe {name}"),
                    ))
                }
                TOPIC => match meta.topics.get(name) {
                    Some(t) => Ok(describe_topic(
                        &broker.config,
                        &meta.broker_configs,
                        meta.node_id,
                        &t.configs,
                    )),
                    None => Err((
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("topic {name} does not exist"),
                    )),
                },
                BROKER if name.is_empty() => Ok(describe_cluster_defaults(&meta.broker_configs)),
                BROKER if name == meta.node_id.to_string() => Ok(describe_broker(
                    &broker.config,
                    &meta.broker_configs,
                    meta.node_id,
                )),
                BROKER => Err((
                    ErrorCode::INVALID_REQUEST,
                    format!(
                        "this is broker {}; ask broker {name} for its configs",
                        meta.node_id
                    ),
                )),
                other => Err((
                    ErrorCode::INVALID_REQUEST,
                    format!("resource type {other} has no configs here"),
                )),
            };
            match configs {
                Err((code, m)) => base.with_error_code(code.0).with_error_message(Some(s(m))),
                Ok(all) => base.with_configs(
                    all.into_iter()
                        .filter(|c| {
                            r.configuration_keys
                                .as_ref()
                                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == c.name))
                        })
                        .map(|c| entry(c, req.include_synonyms, req.include_documentation))
                        .collect(),
                ),
            }
        })
        .collect::<Vec<_>>();
    if ctx.version == 0 {
        // v0: is_default where later versions give the source.
        let v0 = results
            .into_iter()
            .map(|r| legacy::ResourceV0 {
                error_code: r.error_code,
                error_message: r.error_message.map(|m| m.to_string()),
                resource_type: r.resource_type,
                resource_name: r.resource_name.to_string(),
                configs: r
                    .configs
                    .into_iter()
                    .map(|c| legacy::ConfigV0 {
                        name: c.name.to_string(),
                        value: c.value.map(|v| v.to_string()).unwrap_or_default(),
                        read_only: c.read_only,
                        // A topic's value is a default unless the topic sets it; a
                        // broker's unless someone set it.
                        is_default: if r.resource_type == TOPIC {
                            c.config_source != ConfigSource::DynamicTopic as i8
                        } else {
                            c.config_source == ConfigSource::Default as i8
                        },
                    })
                    .collect(),
            })
            .collect::<Vec<_>>();
        return Ok(ctx.respond_raw(legacy::describe_configs_response(&v0)));
    }
    Ok(ctx.respond(&DescribeConfigsResponse::default().with_results(results)))
}

fn entry(c: DescribedConfig, synonyms: bool, docs: bool) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default()
        .with_name(s(c.name))
        .with_value(Some(s(c.value.clone())))
        .with_read_only(c.read_only)
        .with_config_source(c.source as i8)
        .with_config_type(c.kind as i8)
        .with_documentation(docs.then(|| s(c.doc.clone())));
    if synonyms {
        e = e.with_synonyms(
            c.synonyms
                .into_iter()
                .map(|(name, value, source)| {
                    DescribeConfigsSynonym::default()
                        .with_name(s(name))
                        .with_value(Some(s(value)))
                        .with_source(source as i8)
                })
                .collect(),
        );
    }
    e
}

/// One resource of an AlterConfigs or IncrementalAlterConfigs request: (type, name, and
/// per config its name, Kafka's operation code and value).
type Resource = (i8, String, Vec<(String, i8, Option<String>)>);

/// AlterConfigs (v0-2): each topic's overrides become exactly the configs given.
pub async fn alter(broker: &Rc<Broker>, ctx: &Ctx, body: &mut Bytes) -> Result<Response, Response> {
    let req: AlterConfigsRequest = decode(ctx, body)?;
    let resources = req
        .resources
        .iter()
        .map(|r| {
            let configs = r.configs.iter().map(|c| {
                let v = c.value.as_ref().map(|v| v.to_string());
                (c.name.to_string(), OP_SET, v)
            });
            (
                r.resource_type,
                r.resource_name.to_string(),
                configs.collect(),
            )
        })
        .collect();
    let results = apply(broker, ctx, resources, true, req.validate_only).await;
    let responses = results.into_iter().map(|((kind, name), r)| {
        AlterConfigsResourceResponse::default()
            .with_resource_type(kind)
            .with_resource_name(s(name))
            .with_error_code(r.error.0)
            .with_error_message(r.message.map(s))
    });
    Ok(ctx.respond(&AlterConfigsResponse::default().with_responses(responses.collect())))
}

/// IncrementalAlterConfigs (v0-1): SET, DELETE, APPEND and SUBTRACT on the named configs.
pub async fn incremental_alter(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: IncrementalAlterConfigsRequest = decode(ctx, body)?;
    let resources = req
        .resources
        .iter()
        .map(|r| {
            let configs = r.configs.iter().map(|c| {
                let v = c.value.as_ref().map(|v| v.to_string());
                (c.name.to_string(), c.config_operation, v)
            });
            (
                r.resource_type,
                r.resource_name.to_string(),
                configs.collect(),
            )
        })
        .collect();
    let results = apply(broker, ctx, resources, false, req.validate_only).await;
    let responses = results.into_iter().map(|((kind, name), r)| {
        IncrementalResult::default()
            .with_resource_type(kind)
            .with_resource_name(s(name))
            .with_error_code(r.error.0)
            .with_error_message(r.message.map(s))
    });
    let resp = IncrementalAlterConfigsResponse::default().with_responses(responses.collect());
    Ok(ctx.respond(&resp))
}

/// Kafka's AlterConfigOp codes.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Checks each resource, hands the topics' changes to the controller, and answers one result
/// per resource, in order.
async fn apply(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    resources: Vec<Resource>,
    replace: bool,
    validate_only: bool,
) -> Vec<((i8, String), TopicResult)> {
    let meta = broker.meta();
    let node_id = meta.node_id.to_string();
    // A broker resource: "" (the cluster's defaults), this broker or another live one.
    let is_broker = |name: &str| {
        name.is_empty() || name == node_id || meta.brokers.iter().any(|b| b.id.to_string() == name)
    };
    let mut seen = BTreeSet::new();
    let twice: BTreeSet<(i8, String)> = resources
        .iter()
        .filter(|(k, n, _)| !seen.insert((*k, n.clone())))
        .map(|(k, n, _)| (*k, n.clone()))
        .collect();
    let mut out: Vec<((i8, String), Option<TopicResult>)> = Vec::new();
    let mut changes = Vec::new();
    let mut slots = Vec::new();
    for (kind, name, configs) in resources {
        let verdict = if twice.contains(&(kind, name.clone())) {
            Err((
                ErrorCode::INVALID_REQUEST,
                format!("{name} is named twice in the request"),
            ))
        } else {
            match kind {
                TOPIC | BROKER if !may(ctx, broker, Operation::AlterConfigs, kind, &name) => Err((
                    refused_code(kind),
                    format!("not authorized to alter the configs of {name}"),
                )),
                TOPIC | BROKER if kind == TOPIC || is_broker(&name) => {
                    let fixed = configs
                        .iter()
                        .find(|c| kind == BROKER && is_static_broker_config(&c.0));
                    match fixed {
                        Some((key, ..)) => Err((
                            ErrorCode::INVALID_REQUEST,
                            format!(
                                "{key} cannot change at run time: set it in the broker's \
                                     config file and restart it"
                            ),
                        )),
                        None => ops(&configs, replace).map(|ops| {
                            slots.push(out.len());
                            let target = if kind == TOPIC {
                                ConfigTarget::Topic(name.clone())
                            } else {
                                ConfigTarget::Broker(name.clone())
                            };
                            changes.push(ConfigChange {
                                target,
                                ops,
                                replace,
                                validate_only,
                            });
                        }),
                    }
                }
                BROKER => Err((
                    ErrorCode::INVALID_REQUEST,
                    format!("no live broker {name} in this cluster"),
                )),
                other => Err((
                    ErrorCode::INVALID_REQUEST,
                    format!("resource type {other} has no configs here"),
                )),
            }
        };
        let r = verdict.err().map(|(code, m)| TopicResult::err(code, m));
        out.push(((kind, name), r));
    }
    if !changes.is_empty() {
        let done = broker.controller.alter_configs(changes).await;
        for (slot, r) in slots.into_iter().zip(done) {
            out[slot].1 = Some(r);
        }
    }
    out.into_iter()
        .map(|(k, r)| (k, r.unwrap_or_else(TopicResult::ok)))
        .collect()
}

/// A resource's configs as operations: each config named once, a known operation, a value
/// where the operation needs one.
fn ops(
    configs: &[(String, i8, Option<String>)],
    replace: bool,
) -> Result<Vec<(String, ConfigOp)>, (ErrorCode, String)> {
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(configs.len());
    for (name, op, value) in configs {
        if !names.insert(name.as_str()) {
            return Err((ErrorCode::INVALID_REQUEST, format!("{name} is named twice")));
        }
        let need = |v: &Option<String>| {
            v.clone().ok_or_else(|| {
                (
                    ErrorCode::INVALID_CONFIG,
                    format!("{name}: a null value for operation {op}"),
                )
            })
        };
        let op = match (*op, replace) {
            // AlterConfigs: a null value leaves the config at the broker's value.
            (OP_SET, true) if value.is_none() => continue,
            (OP_SET, _) => ConfigOp::Set(need(value)?),
            (OP_DELETE, false) => ConfigOp::Delete,
            (OP_APPEND, false) => ConfigOp::Append(need(value)?),
            (OP_SUBTRACT, false) => ConfigOp::Subtract(need(value)?),
            (other, _) => {
                return Err((
                    ErrorCode::INVALID_REQUEST,
                    format!("{name}: unknown config operation {other}"),
                ))
            }
        };
        out.push((name.clone(), op));
    }
    Ok(out)
}
