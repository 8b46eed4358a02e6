//! DescribeConfigs: every topic config Flumen honours (the topic's override or the broker's
//! value, with Kafka's source, read-only and type codes) and the broker's own configs.

use super::{decode, Ctx};
use crate::broker::Broker;
use crate::metadata::topic_config::{describe_broker, describe_topic, DescribedConfig};
use crate::protocol::errors::ErrorCode;
use crate::protocol::Response;
use bytes::Bytes;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
    DescribeConfigsSynonym,
};
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

pub async fn describe(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: DescribeConfigsRequest = decode(ctx, body)?;
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
                TOPIC => match meta.topics.get(name) {
                    Some(t) => Ok(describe_topic(&broker.config, &t.configs)),
                    None => Err((
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("topic {name} does not exist"),
                    )),
                },
                BROKER if name.is_empty() || name == meta.node_id.to_string() => {
                    Ok(describe_broker(&broker.config))
                }
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
        .collect();
    Ok(ctx.respond(&DescribeConfigsResponse::default().with_results(results)))
}

fn entry(c: DescribedConfig, synonyms: bool, docs: bool) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default()
        .with_name(s(c.name))
        .with_value(Some(s(c.value.clone())))
        .with_read_only(c.read_only)
        .with_config_source(c.source as i8)
        .with_config_type(c.kind as i8)
        .with_documentation(docs.then(|| s(c.doc)));
    if synonyms {
        e = e.with_synonyms(vec![DescribeConfigsSynonym::default()
            .with_name(s(c.name))
            .with_value(Some(s(c.value)))
            .with_source(c.source as i8)]);
    }
    e
}
