//! DescribeClientQuotas and AlterClientQuotas (KIP-546): the quotas of users and client ids,
//! committed through the controller like topic configs. Reading them needs DESCRIBE_CONFIGS
//! on the cluster, changing them ALTER_CONFIGS (Kafka's rules).

use super::{decode, Ctx};
use crate::broker::Broker;
use crate::protocol::errors::ErrorCode;
use crate::protocol::Response;
use crate::security::acl::Operation;
use crate::security::quota::{self, EntityName, QuotaChange, QuotaEntity, CLIENT_ID, USER};
use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// An entity from (type, name or None for the default) pairs.
fn entity<'a>(
    parts: impl Iterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<QuotaEntity, String> {
    let mut e = QuotaEntity {
        user: None,
        client_id: None,
    };
    for (kind, name) in parts {
        let slot = match kind {
            USER => &mut e.user,
            CLIENT_ID => &mut e.client_id,
            other => {
                return Err(format!(
                    "entity type {other:?} is not supported (user, client-id)"
                ))
            }
        };
        if slot.is_some() {
            return Err(format!("entity type {kind} is named twice"));
        }
        *slot = Some(EntityName::from_wire(name));
    }
    Ok(e)
}

/// The entity as the wire gives it back: (type, name or null).
fn wire_parts(e: &QuotaEntity) -> Vec<(&'static str, Option<String>)> {
    let mut out = Vec::new();
    if let Some(u) = &e.user {
        out.push((USER, u.to_wire().map(str::to_string)));
    }
    if let Some(c) = &e.client_id {
        out.push((CLIENT_ID, c.to_wire().map(str::to_string)));
    }
    out
}

/// One filter component: which entity type, and EXACT (0, a name or null), DEFAULT (1)
/// or ANY (2) of it.
struct Component {
    kind: String,
    matches: Box<dyn Fn(&EntityName) -> bool>,
}

fn component(c: &describe_client_quotas_request::ComponentData) -> Result<Component, String> {
    let kind = c.entity_type.to_string();
    if kind != USER && kind != CLIENT_ID {
        return Err(format!(
            "entity type {kind:?} is not supported (user, client-id)"
        ));
    }
    let matches: Box<dyn Fn(&EntityName) -> bool> = match c.match_type {
        0 => {
            let want = EntityName::from_wire(c._match.as_deref());
            Box::new(move |n| *n == want)
        }
        1 => Box::new(|n| *n == EntityName::Default),
        2 => Box::new(|_| true),
        other => return Err(format!("unknown match type {other}")),
    };
    Ok(Component { kind, matches })
}

pub async fn describe(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: DescribeClientQuotasRequest = decode(ctx, body)?;
    let fail = |code: ErrorCode, m: String| {
        ctx.respond(
            &DescribeClientQuotasResponse::default()
                .with_error_code(code.0)
                .with_error_message(Some(s(m))),
        )
    };
    if let Err(e) = ctx.check_cluster(broker, Operation::DescribeConfigs) {
        return Ok(fail(e, "not authorized to describe client quotas".into()));
    }
    let mut components: Vec<Component> = Vec::new();
    for c in &req.components {
        match component(c) {
            Ok(c) if components.iter().any(|x| x.kind == c.kind) => {
                return Ok(fail(
                    ErrorCode::INVALID_REQUEST,
                    format!("entity type {} is filtered twice", c.kind),
                ))
            }
            Ok(c) => components.push(c),
            Err(m) => return Ok(fail(ErrorCode::INVALID_REQUEST, m)),
        }
    }
    let meta = broker.meta();
    let entries = meta
        .client_quotas
        .iter()
        .filter(|q| {
            let get = |kind: &str| {
                if kind == USER {
                    q.entity.user.as_ref()
                } else {
                    q.entity.client_id.as_ref()
                }
            };
            let each = components
                .iter()
                .all(|c| get(&c.kind).is_some_and(|n| (c.matches)(n)));
            // Strict: the entity has no component beyond those filtered.
            let only = !req.strict
                || [USER, CLIENT_ID]
                    .iter()
                    .all(|k| get(k).is_none() || components.iter().any(|c| c.kind == *k));
            each && only
        })
        .map(|q| {
            describe_client_quotas_response::EntryData::default()
                .with_entity(
                    wire_parts(&q.entity)
                        .into_iter()
                        .map(|(kind, name)| {
                            describe_client_quotas_response::EntityData::default()
                                .with_entity_type(s(kind))
                                .with_entity_name(name.map(s))
                        })
                        .collect(),
                )
                .with_values(
                    q.values
                        .iter()
                        .map(|(k, v)| {
                            describe_client_quotas_response::ValueData::default()
                                .with_key(s(k.clone()))
                                .with_value(*v)
                        })
                        .collect(),
                )
        })
        .collect();
    Ok(ctx.respond(&DescribeClientQuotasResponse::default().with_entries(Some(entries))))
}

pub async fn alter(broker: &Rc<Broker>, ctx: &Ctx, body: &mut Bytes) -> Result<Response, Response> {
    let req: AlterClientQuotasRequest = decode(ctx, body)?;
    let allowed = ctx.check_cluster(broker, Operation::AlterConfigs);
    let checked: Vec<Result<QuotaChange, (ErrorCode, String)>> = req
        .entries
        .iter()
        .map(|e| {
            allowed.map_err(|code| (code, "not authorized to alter client quotas".to_string()))?;
            let parts = e
                .entity
                .iter()
                .map(|p| (p.entity_type.as_str(), p.entity_name.as_deref()));
            let change = QuotaChange {
                entity: entity(parts).map_err(|m| (ErrorCode::INVALID_REQUEST, m))?,
                ops: e
                    .ops
                    .iter()
                    .map(|o| (o.key.to_string(), (!o.remove).then_some(o.value)))
                    .collect(),
            };
            quota::validate(&change).map_err(|m| (ErrorCode::INVALID_REQUEST, m))?;
            Ok(change)
        })
        .collect();
    let valid: Vec<QuotaChange> = checked.iter().filter_map(|c| c.clone().ok()).collect();
    let mut done = if valid.is_empty() || req.validate_only {
        Vec::new()
    } else {
        broker.controller.alter_client_quotas(valid).await
    }
    .into_iter();
    let entries = req
        .entries
        .iter()
        .zip(checked)
        .map(|(e, c)| {
            let (code, message) = match c {
                Err((code, m)) => (code, Some(m)),
                Ok(_) if req.validate_only => (ErrorCode::NONE, None),
                Ok(_) => match done.next() {
                    Some(r) => (r.error, r.message),
                    None => (ErrorCode::UNKNOWN_SERVER_ERROR, Some("no reply".into())),
                },
            };
            alter_client_quotas_response::EntryData::default()
                .with_error_code(code.0)
                .with_error_message(message.map(s))
                .with_entity(
                    e.entity
                        .iter()
                        .map(|p| {
                            alter_client_quotas_response::EntityData::default()
                                .with_entity_type(p.entity_type.clone())
                                .with_entity_name(p.entity_name.clone())
                        })
                        .collect(),
                )
        })
        .collect();
    Ok(ctx.respond(&AlterClientQuotasResponse::default().with_entries(entries)))
}
