//! SaslHandshake and SaslAuthenticate (PLAIN, SCRAM-SHA-256/512, re-authentication per
//! KIP-368) on a connection's session, and the SCRAM credential admin APIs
//! (DescribeUserScramCredentials, AlterUserScramCredentials, KIP-554).

use super::{decode, Ctx};
use crate::broker::Broker;
use crate::controller::TopicResult;
use crate::protocol::errors::ErrorCode;
use crate::protocol::Response;
use crate::security::scram::{self, Credential, Mechanism};
use crate::security::{self, SaslMechanism, SaslState, ScramChange, Session};
use bytes::Bytes;
use kafka_protocol::messages::alter_user_scram_credentials_request::AlterUserScramCredentialsRequest;
use kafka_protocol::messages::alter_user_scram_credentials_response::{
    AlterUserScramCredentialsResponse, AlterUserScramCredentialsResult,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::DescribeUserScramCredentialsRequest;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResponse, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::sasl_authenticate_request::SaslAuthenticateRequest;
use kafka_protocol::messages::sasl_authenticate_response::SaslAuthenticateResponse;
use kafka_protocol::messages::sasl_handshake_request::SaslHandshakeRequest;
use kafka_protocol::messages::sasl_handshake_response::SaslHandshakeResponse;
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// The mechanisms this broker offers, in its config's order.
fn enabled(broker: &Broker) -> Vec<StrBytes> {
    broker
        .config
        .sasl_enabled_mechanisms
        .iter()
        .map(|m| s(m.as_str()))
        .collect()
}

pub fn handshake(
    broker: &Rc<Broker>,
    session: &Session,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: SaslHandshakeRequest = decode(ctx, body)?;
    let resp = |code: ErrorCode| {
        ctx.respond(
            &SaslHandshakeResponse::default()
                .with_error_code(code.0)
                .with_mechanisms(enabled(broker)),
        )
    };
    if !session.listener.protocol.sasl() {
        // Kafka's answer on a listener without SASL.
        return Ok(resp(ErrorCode::ILLEGAL_SASL_STATE));
    }
    if ctx.version == 0 {
        // v0 is followed by raw SASL frames without Kafka headers, which this broker does
        // not read: say so, then close.
        return Ok(match resp(ErrorCode::UNSUPPORTED_VERSION) {
            Response::Frame(p) => Response::Last(
                p,
                "SaslHandshake v0 (raw SASL frames) is not supported; use v1".into(),
            ),
            other => other,
        });
    }
    // Kafka closes the connection after these refusals; so does Flumen.
    let last = |code: ErrorCode, why: String| match resp(code) {
        Response::Frame(p) => Response::Last(p, why),
        other => other,
    };
    if session.has_failed() {
        return Ok(last(
            ErrorCode::ILLEGAL_SASL_STATE,
            "SaslHandshake after a failed authentication".into(),
        ));
    }
    let name = req.mechanism.as_str();
    let chosen = SaslMechanism::from_name(name).filter(|_| {
        broker
            .config
            .sasl_enabled_mechanisms
            .iter()
            .any(|m| m == name)
    });
    let Some(m) = chosen else {
        return Ok(last(
            ErrorCode::UNSUPPORTED_SASL_MECHANISM,
            format!("SASL mechanism {name} is not enabled"),
        ));
    };
    let mut state = session.sasl.borrow_mut();
    if matches!(*state, SaslState::ScramSent(_)) {
        session.fail();
        return Ok(last(
            ErrorCode::ILLEGAL_SASL_STATE,
            "SaslHandshake in the middle of a SCRAM exchange".into(),
        ));
    }
    *state = SaslState::Chosen(m);
    Ok(resp(ErrorCode::NONE))
}

pub fn authenticate(
    broker: &Rc<Broker>,
    session: &Session,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: SaslAuthenticateRequest = decode(ctx, body)?;
    let base = SaslAuthenticateResponse::default();
    if session.has_failed() {
        // Pipelined behind a failure: no second try (each costs a PBKDF2) on this connection.
        return Ok(failed_as(
            ctx,
            session,
            ErrorCode::ILLEGAL_SASL_STATE,
            "SaslAuthenticate after a failed authentication".into(),
        ));
    }
    let state = std::mem::replace(&mut *session.sasl.borrow_mut(), SaslState::Idle);
    let meta = broker.meta();
    let lookup = |m: Mechanism| {
        move |user: &str| {
            meta.scram_users
                .get(user)
                .and_then(|c| c.get(m.name()))
                .cloned()
        }
    };
    let done = |user: Result<String, String>, out: Vec<u8>| -> Response {
        let reauth = broker.config.connections_max_reauth_ms;
        let lifetime = (reauth > 0).then(|| Duration::from_millis(reauth));
        match user.and_then(|u| session.authenticated(u, lifetime)) {
            Ok(()) => {
                tracing::debug!(peer = %session.peer, principal = %session.principal(),
                    "SASL authentication succeeded");
                ctx.respond(
                    &base
                        .clone()
                        .with_auth_bytes(Bytes::from(out))
                        .with_session_lifetime_ms(reauth as i64),
                )
            }
            Err(m) => failed(ctx, session, m),
        }
    };
    match state {
        SaslState::Idle => Ok(failed_as(
            ctx,
            session,
            ErrorCode::ILLEGAL_SASL_STATE,
            "SaslAuthenticate without a SaslHandshake before it".into(),
        )),
        SaslState::Chosen(SaslMechanism::Plain) => {
            let user = security::check_plain(
                &req.auth_bytes,
                security::plain_users(),
                &broker.meta().scram_users,
            );
            Ok(done(user, Vec::new()))
        }
        SaslState::Chosen(SaslMechanism::Scram(m)) => {
            match scram::Exchange::start(m, &req.auth_bytes, lookup(m)) {
                Ok((exchange, server_first)) => {
                    *session.sasl.borrow_mut() = SaslState::ScramSent(exchange);
                    Ok(ctx.respond(&base.with_auth_bytes(Bytes::from(server_first))))
                }
                Err(e) => Ok(failed(ctx, session, e)),
            }
        }
        SaslState::ScramSent(exchange) => {
            let r = exchange.finish(&req.auth_bytes);
            let (out, user) = match r {
                Ok((out, user)) => (out, Ok(user)),
                Err(e) => (Vec::new(), Err(e)),
            };
            Ok(done(user, out))
        }
    }
}

/// SASL_AUTHENTICATION_FAILED with `why`; the connection then closes, as Kafka's does.
fn failed(ctx: &Ctx, session: &Session, why: String) -> Response {
    failed_as(ctx, session, ErrorCode::SASL_AUTHENTICATION_FAILED, why)
}

fn failed_as(ctx: &Ctx, session: &Session, code: ErrorCode, why: String) -> Response {
    session.fail();
    tracing::info!(peer = %session.peer, listener = %session.listener.name,
        "SASL authentication failed: {why}");
    let r = ctx.respond(
        &SaslAuthenticateResponse::default()
            .with_error_code(code.0)
            .with_error_message(Some(s(why.clone()))),
    );
    match r {
        Response::Frame(pieces) => Response::Last(pieces, format!("SASL: {why}")),
        other => other,
    }
}

pub fn describe_scram(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: DescribeUserScramCredentialsRequest = decode(ctx, body)?;
    if let Err(e) = ctx.check_cluster(broker, crate::security::acl::Operation::Describe) {
        let resp = DescribeUserScramCredentialsResponse::default()
            .with_error_code(e.0)
            .with_error_message(Some(s("not authorized to describe SCRAM credentials")));
        return Ok(ctx.respond(&resp));
    }
    let meta = broker.meta();
    let info = |user: &str, creds: &BTreeMap<String, Credential>| {
        DescribeUserScramCredentialsResult::default()
            .with_user(s(user))
            .with_credential_infos(
                creds
                    .iter()
                    .filter_map(|(m, c)| {
                        let m = Mechanism::from_name(m)?;
                        Some(
                            CredentialInfo::default()
                                .with_mechanism(m.code())
                                .with_iterations(c.iterations as i32),
                        )
                    })
                    .collect(),
            )
    };
    let results = match req.users.filter(|u| !u.is_empty()) {
        None => meta.scram_users.iter().map(|(u, c)| info(u, c)).collect(),
        Some(users) => {
            let mut seen = BTreeMap::new();
            for u in &users {
                *seen.entry(u.name.to_string()).or_insert(0) += 1;
            }
            users
                .iter()
                .map(|u| {
                    let name = u.name.as_str();
                    let err = |code: ErrorCode, m: String| {
                        DescribeUserScramCredentialsResult::default()
                            .with_user(s(name))
                            .with_error_code(code.0)
                            .with_error_message(Some(s(m)))
                    };
                    if seen[name] > 1 {
                        return err(
                            ErrorCode::DUPLICATE_RESOURCE,
                            format!("user {name} is named twice"),
                        );
                    }
                    match meta.scram_users.get(name) {
                        Some(c) => info(name, c),
                        None => err(
                            ErrorCode::RESOURCE_NOT_FOUND,
                            format!("user {name} has no SCRAM credentials"),
                        ),
                    }
                })
                .collect()
        }
    };
    Ok(ctx.respond(&DescribeUserScramCredentialsResponse::default().with_results(results)))
}

/// One user's changes of an AlterUserScramCredentials, or why none of them apply.
type UserChanges = Result<Vec<ScramChange>, (ErrorCode, String)>;

pub async fn alter_scram(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: AlterUserScramCredentialsRequest = decode(ctx, body)?;
    // Each user's changes, in request order; one result per user (Kafka's shape).
    let mut users: Vec<(String, UserChanges)> = Vec::new();
    let mut add = |user: &str, change: Result<ScramChange, (ErrorCode, String)>| {
        let i = match users.iter().position(|(u, _)| u == user) {
            Some(i) => i,
            None => {
                users.push((user.to_string(), Ok(Vec::new())));
                users.len() - 1
            }
        };
        let slot = &mut users[i].1;
        match (slot.as_mut(), change) {
            (Ok(list), Ok(c)) => {
                let m = |c: &ScramChange| match c {
                    ScramChange::Upsert { mechanism, .. }
                    | ScramChange::Delete { mechanism, .. } => *mechanism,
                };
                if list.iter().any(|x| m(x) == m(&c)) {
                    *slot = Err((
                        ErrorCode::DUPLICATE_RESOURCE,
                        format!("user {user}: one change per mechanism in a request"),
                    ));
                } else {
                    list.push(c);
                }
            }
            (Ok(_), Err(e)) => *slot = Err(e),
            (Err(_), _) => {}
        }
    };
    let meta = broker.meta();
    let mechanism = |code: i8| {
        Mechanism::from_code(code).ok_or((
            ErrorCode::UNSUPPORTED_SASL_MECHANISM,
            format!("unknown SCRAM mechanism {code}"),
        ))
    };
    let may_alter = ctx.allowed_cluster(broker, crate::security::acl::Operation::Alter);
    let named = |name: &str| {
        if !may_alter {
            Err((
                ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
                "not authorized to alter SCRAM credentials (ALTER on the cluster)".to_string(),
            ))
        } else if name.is_empty() {
            Err((
                ErrorCode::UNACCEPTABLE_CREDENTIAL,
                "a user name may not be empty".to_string(),
            ))
        } else {
            Ok(())
        }
    };
    for d in &req.deletions {
        let user = d.name.as_str();
        let c = named(user).and(mechanism(d.mechanism)).and_then(|m| {
            if meta
                .scram_users
                .get(user)
                .is_some_and(|c| c.contains_key(m.name()))
            {
                Ok(ScramChange::Delete {
                    user: user.to_string(),
                    mechanism: m,
                })
            } else {
                Err((
                    ErrorCode::RESOURCE_NOT_FOUND,
                    format!("user {user} has no {} credential", m.name()),
                ))
            }
        });
        add(user, c);
    }
    for u in &req.upsertions {
        let user = u.name.as_str();
        let c = named(user).and(mechanism(u.mechanism)).and_then(|m| {
            let iterations = u.iterations;
            if !(scram::MIN_ITERATIONS as i32..=scram::MAX_ITERATIONS as i32).contains(&iterations)
            {
                return Err((
                    ErrorCode::UNACCEPTABLE_CREDENTIAL,
                    format!(
                        "iterations must be in [{}, {}], got {iterations}",
                        scram::MIN_ITERATIONS,
                        scram::MAX_ITERATIONS
                    ),
                ));
            }
            if u.salt.is_empty() || u.salted_password.is_empty() {
                return Err((
                    ErrorCode::UNACCEPTABLE_CREDENTIAL,
                    "the salt and the salted password may not be empty".to_string(),
                ));
            }
            Ok(ScramChange::Upsert {
                user: user.to_string(),
                mechanism: m,
                credential: Credential::from_salted(
                    m,
                    u.salt.to_vec(),
                    &u.salted_password,
                    iterations as u32,
                ),
            })
        });
        add(user, c);
    }
    drop(meta);
    let changes: Vec<ScramChange> = users
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .flatten()
        .cloned()
        .collect();
    let mut done = if changes.is_empty() {
        Vec::new()
    } else {
        broker.controller.alter_scram(changes).await
    }
    .into_iter();
    let results = users
        .into_iter()
        .map(|(user, r)| {
            let outcome = match r {
                Err(e) => Err(e),
                Ok(list) => {
                    // This user's results, all of them, before the next user's.
                    let mine: Vec<TopicResult> = done.by_ref().take(list.len()).collect();
                    mine.into_iter()
                        .find(|r| !r.error.is_ok())
                        .map_or(Ok(()), |r| Err((r.error, r.message.unwrap_or_default())))
                }
            };
            let base = AlterUserScramCredentialsResult::default().with_user(s(user));
            match outcome {
                Ok(()) => base,
                Err((code, m)) => base.with_error_code(code.0).with_error_message(Some(s(m))),
            }
        })
        .collect();
    Ok(ctx.respond(&AlterUserScramCredentialsResponse::default().with_results(results)))
}
