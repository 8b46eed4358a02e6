//! CreateAcls, DescribeAcls and DeleteAcls (KIP-140): the cluster's ACLs, committed through
//! the controller like topics. Changing them needs ALTER on the cluster, reading them
//! DESCRIBE. Without `authorizer_enabled` they answer SECURITY_DISABLED, as Kafka does
//! without an authorizer: otherwise anyone could stage grants for themselves before
//! enforcement starts.

use super::{decode, Ctx};
use crate::broker::Broker;
use crate::protocol::errors::ErrorCode;
use crate::protocol::Response;
use crate::security::acl::{
    AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType,
};
use bytes::Bytes;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::rc::Rc;

const DISABLED: &str = "no authorizer is enabled on this broker (authorizer_enabled = false)";

/// SECURITY_DISABLED without `authorizer_enabled`.
fn enabled(broker: &Broker) -> Result<(), ErrorCode> {
    if broker.config.authorizer_enabled {
        Ok(())
    } else {
        Err(ErrorCode::SECURITY_DISABLED)
    }
}

fn refusal(e: ErrorCode, what: &str) -> String {
    if e == ErrorCode::SECURITY_DISABLED {
        DISABLED.into()
    } else {
        format!("not authorized to {what} ACLs (ALTER on the cluster)")
    }
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// A binding from CreateAcls' codes, checked; Err(reason) answers INVALID_REQUEST.
fn binding(c: &create_acls_request::AclCreation) -> Result<AclBinding, String> {
    let b = AclBinding {
        resource_type: ResourceType::from_code(c.resource_type)
            .ok_or_else(|| format!("resource type {} cannot be given an ACL", c.resource_type))?,
        pattern: PatternType::from_code(c.resource_pattern_type).ok_or_else(|| {
            format!(
                "pattern type {} is not LITERAL (3) or PREFIXED (4)",
                c.resource_pattern_type
            )
        })?,
        name: c.resource_name.to_string(),
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        operation: Operation::from_code(c.operation)
            .ok_or_else(|| format!("operation {} cannot be given an ACL", c.operation))?,
        permission: Permission::from_code(c.permission_type)
            .ok_or_else(|| format!("permission type {} is not DENY or ALLOW", c.permission_type))?,
    };
    b.validate()?;
    Ok(b.canonical())
}

pub async fn create(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: CreateAclsRequest = decode(ctx, body)?;
    let allowed = enabled(broker).and_then(|()| ctx.check_cluster(broker, Operation::Alter));
    let checked: Vec<Result<AclBinding, (ErrorCode, String)>> = req
        .creations
        .iter()
        .map(|c| match allowed {
            Err(e) => Err((e, refusal(e, "create"))),
            Ok(()) => binding(c).map_err(|m| (ErrorCode::INVALID_REQUEST, m)),
        })
        .collect();
    let valid: Vec<AclBinding> = checked.iter().filter_map(|c| c.clone().ok()).collect();
    let mut done = if valid.is_empty() {
        Vec::new()
    } else {
        broker.controller.alter_acls(valid, Vec::new()).await.0
    }
    .into_iter();
    let results = checked
        .into_iter()
        .map(|c| {
            let (code, message) = match c {
                Err((code, m)) => (code, Some(m)),
                Ok(_) => match done.next() {
                    Some(r) => (r.error, r.message),
                    None => (ErrorCode::UNKNOWN_SERVER_ERROR, Some("no reply".into())),
                },
            };
            AclCreationResult::default()
                .with_error_code(code.0)
                .with_error_message(message.map(s))
        })
        .collect();
    Ok(ctx.respond(&CreateAclsResponse::default().with_results(results)))
}

pub async fn describe(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: DescribeAclsRequest = decode(ctx, body)?;
    let fail = |code: ErrorCode, m: String| {
        ctx.respond(
            &DescribeAclsResponse::default()
                .with_error_code(code.0)
                .with_error_message(Some(s(m))),
        )
    };
    if let Err(e) = enabled(broker) {
        return Ok(fail(e, DISABLED.into()));
    }
    if let Err(e) = ctx.check_cluster(broker, Operation::Describe) {
        return Ok(fail(
            e,
            "not authorized to describe ACLs (DESCRIBE on the cluster)".into(),
        ));
    }
    let filter = match AclFilter::from_wire(
        req.resource_type_filter,
        req.resource_name_filter.as_deref(),
        req.pattern_type_filter,
        req.principal_filter.as_deref(),
        req.host_filter.as_deref(),
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(m) => return Ok(fail(ErrorCode::INVALID_REQUEST, m)),
    };
    let meta = broker.meta();
    let mut by_resource: BTreeMap<(ResourceType, PatternType, &str), Vec<AclDescription>> =
        BTreeMap::new();
    for b in meta.acls.iter().filter(|b| filter.matches(b)) {
        by_resource
            .entry((b.resource_type, b.pattern, b.name.as_str()))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(s(b.principal.clone()))
                    .with_host(s(b.host.clone()))
                    .with_operation(b.operation.code())
                    .with_permission_type(b.permission.code()),
            );
    }
    let resources = by_resource
        .into_iter()
        .map(|((rt, pattern, name), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(rt.code())
                .with_resource_name(s(name))
                .with_pattern_type(pattern.code())
                .with_acls(acls)
        })
        .collect();
    Ok(ctx.respond(&DescribeAclsResponse::default().with_resources(resources)))
}

pub async fn delete(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: DeleteAclsRequest = decode(ctx, body)?;
    let allowed = enabled(broker).and_then(|()| ctx.check_cluster(broker, Operation::Alter));
    let checked: Vec<Result<AclFilter, (ErrorCode, String)>> = req
        .filters
        .iter()
        .map(|f| match allowed {
            Err(e) => Err((e, refusal(e, "delete"))),
            Ok(()) => AclFilter::from_wire(
                f.resource_type_filter,
                f.resource_name_filter.as_deref(),
                f.pattern_type_filter,
                f.principal_filter.as_deref(),
                f.host_filter.as_deref(),
                f.operation,
                f.permission_type,
            )
            .map_err(|m| (ErrorCode::INVALID_REQUEST, m)),
        })
        .collect();
    let valid: Vec<AclFilter> = checked.iter().filter_map(|c| c.clone().ok()).collect();
    let mut removed = if valid.is_empty() {
        Vec::new()
    } else {
        broker.controller.alter_acls(Vec::new(), valid).await.1
    }
    .into_iter();
    let results = checked
        .into_iter()
        .map(|c| match c {
            Err((code, m)) => DeleteAclsFilterResult::default()
                .with_error_code(code.0)
                .with_error_message(Some(s(m))),
            Ok(_) => match removed.next() {
                None => DeleteAclsFilterResult::default()
                    .with_error_code(ErrorCode::UNKNOWN_SERVER_ERROR.0)
                    .with_error_message(Some(s("no reply"))),
                Some(Err(r)) => DeleteAclsFilterResult::default()
                    .with_error_code(r.error.0)
                    .with_error_message(r.message.map(s)),
                Some(Ok(gone)) => DeleteAclsFilterResult::default().with_matching_acls(
                    gone.into_iter()
                        .map(|b| {
                            DeleteAclsMatchingAcl::default()
                                .with_resource_type(b.resource_type.code())
                                .with_resource_name(s(b.name))
                                .with_pattern_type(b.pattern.code())
                                .with_principal(s(b.principal))
                                .with_host(s(b.host))
                                .with_operation(b.operation.code())
                                .with_permission_type(b.permission.code())
                        })
                        .collect(),
                ),
            },
        })
        .collect();
    Ok(ctx.respond(&DeleteAclsResponse::default().with_filter_results(results)))
}
