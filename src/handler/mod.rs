//! One module per Kafka API family. A handler decodes its request, splits it by owning shard,
//! calls each owner once (directly when local, over the mesh otherwise), merges the answers in
//! request order and encodes the response.

pub mod acls;
pub mod api_versions;
pub mod configs;
pub mod fetch;
pub mod group;
pub mod list_offsets;
pub mod log_dirs;
pub mod metadata;
pub mod produce;
pub mod producer;
pub mod quotas;
pub mod records;
pub mod sasl;
pub mod topics;
pub mod txn;
pub mod txn_admin;

use crate::broker::Broker;
use crate::controller::CreateSpec;
use crate::protocol::{self, errors::ErrorCode};
use crate::protocol::{Piece, Response};
use crate::security::acl::{self, Operation, ResourceType};
use crate::security::quota;
use crate::security::Session;
use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};
use std::collections::BTreeMap;
use std::rc::Rc;

/// A decoded request header plus what the response needs.
pub struct Ctx {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: String,
    /// Who asks, when the authorizer is on (None: everything is allowed).
    pub auth: Option<Auth>,
    /// The connection: its listener (Metadata advertises that listener's addresses), peer
    /// and principal.
    pub session: Rc<Session>,
    /// The quota throttle this request earned (Produce and Fetch answer it in
    /// throttle_time_ms); the connection is muted for it.
    pub throttle: std::cell::Cell<std::time::Duration>,
}

/// The requester as the authorizer sees it.
pub struct Auth {
    pub principal: String,
    pub host: Rc<str>,
    /// One of `super_users`: every check passes.
    pub superuser: bool,
}

impl Auth {
    fn new(broker: &Broker, session: &Session) -> Option<Auth> {
        if !broker.config.authorizer_enabled {
            return None;
        }
        let principal = session.principal();
        let superuser = broker.config.super_users.contains(&principal);
        Some(Auth {
            principal,
            host: session.host.clone(),
            superuser,
        })
    }
}

impl Ctx {
    /// Whether the requester may perform `op` on the resource (`rtype`, `name`): always when
    /// the authorizer is off or the requester is a super user, else as the ACLs say.
    pub fn allowed(&self, broker: &Broker, op: Operation, rtype: ResourceType, name: &str) -> bool {
        match &self.auth {
            None => true,
            Some(a) if a.superuser => true,
            Some(a) => acl::authorize(
                &broker.meta().acls,
                &acl::Requester {
                    principal: &a.principal,
                    host: &a.host,
                },
                op,
                rtype,
                name,
            ),
        }
    }

    /// The quota on `key` for this client, if one is set: (rate, meter).
    fn quota(&self, broker: &Broker, key: &str) -> Option<(f64, quota::MeterKey)> {
        let meta = broker.meta();
        if meta.client_quotas.is_empty() {
            return None;
        }
        let user = self.session.quota_user();
        quota::resolve(&meta.client_quotas, &user, &self.client_id, key)
    }

    /// Counts `amount` against this client's quota on `key`; the throttle it earns is kept.
    pub fn quota_record(&self, broker: &Broker, key: &str, amount: f64) -> std::time::Duration {
        let Some((rate, meter)) = self.quota(broker, key) else {
            return std::time::Duration::ZERO;
        };
        let t = broker.quota_meters.record(&meter, rate, amount);
        self.throttle.set(self.throttle.get().max(t));
        t
    }

    /// The throttle this client owes on `key` now (nothing counted); it is kept.
    pub fn quota_owed(&self, broker: &Broker, key: &str) -> std::time::Duration {
        let Some((rate, meter)) = self.quota(broker, key) else {
            return std::time::Duration::ZERO;
        };
        let t = broker.quota_meters.owed(&meter, rate);
        self.throttle.set(self.throttle.get().max(t));
        t
    }

    /// throttle_time_ms for the response.
    pub fn throttle_ms(&self) -> i32 {
        self.throttle.get().as_millis().min(i32::MAX as u128) as i32
    }

    /// `allowed` on a topic, as a result: Err(TOPIC_AUTHORIZATION_FAILED) when refused.
    pub fn check_topic(&self, broker: &Broker, op: Operation, name: &str) -> Result<(), ErrorCode> {
        if self.allowed(broker, op, ResourceType::Topic, name) {
            Ok(())
        } else {
            Err(ErrorCode::TOPIC_AUTHORIZATION_FAILED)
        }
    }

    /// `allowed` on a group, as a result: Err(GROUP_AUTHORIZATION_FAILED) when refused.
    pub fn check_group(
        &self,
        broker: &Broker,
        op: Operation,
        group: &str,
    ) -> Result<(), ErrorCode> {
        if self.allowed(broker, op, ResourceType::Group, group) {
            Ok(())
        } else {
            Err(ErrorCode::GROUP_AUTHORIZATION_FAILED)
        }
    }

    /// `allowed` on a transactional id: Err(TRANSACTIONAL_ID_AUTHORIZATION_FAILED) when refused.
    pub fn check_txn(&self, broker: &Broker, op: Operation, id: &str) -> Result<(), ErrorCode> {
        if self.allowed(broker, op, ResourceType::TransactionalId, id) {
            Ok(())
        } else {
            Err(ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        }
    }

    /// `allowed` on the cluster: Err(CLUSTER_AUTHORIZATION_FAILED) when refused.
    pub fn check_cluster(&self, broker: &Broker, op: Operation) -> Result<(), ErrorCode> {
        if self.allowed_cluster(broker, op) {
            Ok(())
        } else {
            Err(ErrorCode::CLUSTER_AUTHORIZATION_FAILED)
        }
    }

    /// Whether some ACL lets the requester WRITE to topics (KIP-679: enough for an idempotent
    /// producer's id): an ALLOW of WRITE or ALL on topics for it, from its host.
    pub fn may_write_some_topic(&self, broker: &Broker) -> bool {
        match &self.auth {
            None => true,
            Some(a) if a.superuser => true,
            Some(a) => {
                let meta = broker.meta();
                // WRITE (or ALL) on topics for this principal from this host, as ALLOW or DENY.
                let writes = |perm: acl::Permission| {
                    meta.acls.iter().filter(move |b| {
                        b.resource_type == ResourceType::Topic
                            && b.permission == perm
                            && matches!(b.operation, Operation::Write | Operation::All)
                            && (b.principal == a.principal
                                || b.principal == acl::WILDCARD_PRINCIPAL)
                            && (b.host == acl::WILDCARD || *b.host == *a.host)
                    })
                };
                // An ALLOW counts unless a DENY covers all it names (Kafka's
                // authorizeByResourceType): DENY on `*`, on the same literal name, or on a
                // prefix of its name.
                writes(acl::Permission::Allow).any(|allow| {
                    !writes(acl::Permission::Deny).any(|deny| match deny.pattern {
                        acl::PatternType::Literal => {
                            deny.name == acl::WILDCARD
                                || (allow.pattern == acl::PatternType::Literal
                                    && deny.name == allow.name)
                        }
                        acl::PatternType::Prefixed => allow.name.starts_with(deny.name.as_str()),
                    })
                })
            }
        }
    }

    /// `allowed` on the cluster resource.
    pub fn allowed_cluster(&self, broker: &Broker, op: Operation) -> bool {
        self.allowed(broker, op, ResourceType::Cluster, acl::CLUSTER_NAME)
    }

    /// Whether the authorizer checks this request at all.
    pub fn authorizing(&self) -> bool {
        self.auth.as_ref().is_some_and(|a| !a.superuser)
    }

    /// Kafka's authorized-operations bit set of a resource for this requester (KIP-430).
    pub fn authorized_operations(&self, broker: &Broker, rtype: ResourceType, name: &str) -> i32 {
        acl::operations_of(rtype)
            .iter()
            .filter(|op| self.allowed(broker, **op, rtype, name))
            .fold(0, |bits, op| bits | (1 << op.code()))
    }

    /// A whole response frame for a generated response type.
    pub fn respond<M: Encodable>(&self, body: &M) -> Response {
        let header_version = self.api_key.response_header_version(self.version);
        match protocol::encode_response(self.correlation_id, header_version, body, self.version) {
            Ok(b) => Response::Frame(vec![Piece::Bytes(b)]),
            Err(e) => Response::Close(format!(
                "encoding {:?} v{}: {e}",
                self.api_key, self.version
            )),
        }
    }

    /// A whole response frame around a body encoded by hand (protocol::legacy's versions,
    /// all with the v0 response header).
    pub fn respond_raw(&self, body: bytes::BytesMut) -> Response {
        let mut b = bytes::BytesMut::with_capacity(8 + body.len());
        bytes::BufMut::put_i32(&mut b, (4 + body.len()) as i32);
        bytes::BufMut::put_i32(&mut b, self.correlation_id);
        b.extend_from_slice(&body);
        Response::Frame(vec![Piece::Bytes(b.freeze())])
    }

    /// A request that could not be read: the connection closes.
    pub fn malformed(&self, why: String) -> Response {
        Response::Close(format!(
            "malformed {:?} v{} request from {:?}: {why}",
            self.api_key, self.version, self.client_id
        ))
    }
}

/// Decodes the body of a request of type `R` or closes the connection (Kafka does the same with
/// an unparseable request: the client cannot match a response to it).
pub fn decode<R: Decodable>(ctx: &Ctx, body: &mut Bytes) -> Result<R, Response> {
    R::decode(body, ctx.version).map_err(|e| ctx.malformed(e.to_string()))
}

/// Runs one request frame (without its size prefix) and produces its response.
pub async fn handle(broker: Rc<Broker>, mut frame: Bytes, session: Rc<Session>) -> Response {
    let started = std::time::Instant::now();
    let request_bytes = frame.len();
    let (api_key, version, correlation_id, header) =
        match protocol::parse_request_header(&mut frame) {
            Ok(h) => h,
            // Kafka answers an unknown ApiVersions version in v0 form, so the client can retry.
            Err(protocol::HeaderError::UnsupportedApiVersions(corr)) => {
                return api_versions::unsupported(corr)
            }
            Err(protocol::HeaderError::Refused(m)) => return Response::Close(m),
        };
    let ctx = Ctx {
        api_key,
        version,
        correlation_id,
        client_id: header
            .client_id
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        auth: Auth::new(&broker, &session),
        session: session.clone(),
        throttle: Default::default(),
    };
    let body = &mut frame;
    let sasl_api = matches!(
        api_key,
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
    );
    if !sasl_api {
        if let Some(why) = session.refuses_requests() {
            // Kafka closes such a connection too: the client must authenticate first.
            return Response::Close(format!("{api_key:?} from {}: {why}", session.peer));
        }
    }
    // Brokers' own requests (replication, transaction markers) are never throttled.
    let quotas_on =
        !broker.meta().client_quotas.is_empty() && !inter_broker(api_key, version, body, &session);
    if quotas_on {
        // Time owed from earlier requests, and a produce request's bytes (Kafka counts the
        // request's size); the request is still served, then the connection waits.
        ctx.quota_owed(&broker, quota::REQUEST_PERCENTAGE);
        if api_key == ApiKey::Produce {
            ctx.quota_record(&broker, quota::PRODUCER_BYTE_RATE, request_bytes as f64);
        }
        // Before anything awaits: the read loop reads the next request after this.
        session.mute_for(ctx.throttle.get());
    }
    let r = if quotas_on {
        let (r, busy) = Busy::new(dispatch(&broker, &ctx, body, &session)).await;
        // request_percentage is a share of one thread: percent-seconds against a rate of
        // that many percent per second.
        ctx.quota_record(
            &broker,
            quota::REQUEST_PERCENTAGE,
            busy.as_secs_f64() * 100.0,
        );
        session.mute_for(ctx.throttle.get());
        // The answer carries the whole throttle, this request's time included (Kafka's).
        r.map(|mut resp| {
            if !ctx.throttle.get().is_zero() {
                protocol::response::set_throttle(&mut resp, api_key, version, ctx.throttle_ms());
            }
            resp
        })
    } else {
        dispatch(&broker, &ctx, body, &session).await
    };
    broker.metrics.observe(api_key as i16, started.elapsed());
    r.unwrap_or_else(|resp| resp)
}

/// What stands for a result a piece of work failed to give.
pub trait Missing {
    fn missing() -> Self;
}

impl Missing for ErrorCode {
    fn missing() -> Self {
        ErrorCode::UNKNOWN_SERVER_ERROR
    }
}

impl Missing for crate::controller::TopicResult {
    fn missing() -> Self {
        crate::controller::TopicResult::err(ErrorCode::UNKNOWN_SERVER_ERROR, "no reply".into())
    }
}

/// Runs `work` on the items `ok` allows and answers one code per item in order: the work's
/// for the allowed ones, `refused` for the others (the authorizer's per-partition answers).
pub async fn on_allowed<T, R, F, Fut>(
    items: Vec<T>,
    ok: impl Fn(&T) -> bool,
    refused: R,
    work: F,
) -> Vec<R>
where
    R: Clone + Missing,
    F: FnOnce(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = Vec<R>>,
{
    let mask: Vec<bool> = items.iter().map(&ok).collect();
    let kept: Vec<T> = items
        .into_iter()
        .zip(&mask)
        .filter_map(|(t, m)| m.then_some(t))
        .collect();
    let mut done = if kept.is_empty() {
        Vec::new().into_iter()
    } else {
        work(kept).await.into_iter()
    };
    mask.into_iter()
        .map(|m| {
            if m {
                done.next().unwrap_or_else(R::missing)
            } else {
                refused.clone()
            }
        })
        .collect()
}

/// Whether a request is a broker's: WriteTxnMarkers, a follower's Fetch or
/// OffsetForLeaderEpoch (a replica id ≥ 0 leads their bodies at the versions served), or
/// anything from the inter-broker user.
fn inter_broker(api_key: ApiKey, version: i16, body: &Bytes, session: &Session) -> bool {
    let replica_id = || {
        body.get(..4)
            .is_some_and(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]) >= 0)
    };
    match api_key {
        ApiKey::WriteTxnMarkers => true,
        ApiKey::Fetch if replica_id() => true,
        ApiKey::OffsetForLeaderEpoch if version >= 3 && replica_id() => true,
        _ => crate::security::inter_broker_login()
            .is_some_and(|(user, _)| session.principal() == crate::security::user_principal(user)),
    }
}

/// Runs the request's handler.
async fn dispatch(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
    session: &Rc<Session>,
) -> Result<Response, Response> {
    let api_key = ctx.api_key;
    match api_key {
        ApiKey::ApiVersions => api_versions::handle(ctx, body),
        ApiKey::SaslHandshake => sasl::handshake(broker, session, ctx, body),
        ApiKey::SaslAuthenticate => sasl::authenticate(broker, session, ctx, body),
        ApiKey::DescribeUserScramCredentials => sasl::describe_scram(broker, ctx, body),
        ApiKey::AlterUserScramCredentials => sasl::alter_scram(broker, ctx, body).await,
        ApiKey::DescribeClientQuotas => quotas::describe(broker, ctx, body).await,
        ApiKey::AlterClientQuotas => quotas::alter(broker, ctx, body).await,
        ApiKey::CreateAcls => acls::create(broker, ctx, body).await,
        ApiKey::DescribeAcls => acls::describe(broker, ctx, body).await,
        ApiKey::DeleteAcls => acls::delete(broker, ctx, body).await,
        ApiKey::Metadata => metadata::handle(broker, ctx, body).await,
        ApiKey::DescribeCluster => metadata::describe_cluster(broker, ctx, body).await,
        ApiKey::DescribeConfigs => configs::describe(broker, ctx, body).await,
        ApiKey::AlterConfigs => configs::alter(broker, ctx, body).await,
        ApiKey::IncrementalAlterConfigs => configs::incremental_alter(broker, ctx, body).await,
        ApiKey::Produce => produce::handle(broker, ctx, body).await,
        ApiKey::Fetch => fetch::handle(broker, ctx, body).await,
        ApiKey::ListOffsets => list_offsets::handle(broker, ctx, body).await,
        ApiKey::OffsetForLeaderEpoch => list_offsets::for_leader_epoch(broker, ctx, body).await,
        ApiKey::CreateTopics => topics::create(broker, ctx, body).await,
        ApiKey::DeleteTopics => topics::delete(broker, ctx, body).await,
        ApiKey::CreatePartitions => topics::create_partitions(broker, ctx, body).await,
        ApiKey::DeleteRecords => records::delete_records(broker, ctx, body).await,
        ApiKey::DescribeLogDirs => log_dirs::describe(broker, ctx, body).await,
        ApiKey::ElectLeaders => topics::elect_leaders(broker, ctx, body).await,
        ApiKey::AlterPartitionReassignments => topics::alter_reassignments(broker, ctx, body).await,
        ApiKey::ListPartitionReassignments => topics::list_reassignments(broker, ctx, body).await,
        ApiKey::FindCoordinator => group::find_coordinator(broker, ctx, body).await,
        ApiKey::JoinGroup => group::join(broker, ctx, body, &session.peer).await,
        ApiKey::SyncGroup => group::sync(broker, ctx, body).await,
        ApiKey::Heartbeat => group::heartbeat(broker, ctx, body).await,
        ApiKey::LeaveGroup => group::leave(broker, ctx, body).await,
        ApiKey::OffsetCommit => group::offset_commit(broker, ctx, body).await,
        ApiKey::OffsetFetch => group::offset_fetch(broker, ctx, body).await,
        ApiKey::ListGroups => group::list_groups(broker, ctx, body).await,
        ApiKey::DescribeGroups => group::describe_groups(broker, ctx, body).await,
        ApiKey::DeleteGroups => group::delete_groups(broker, ctx, body).await,
        ApiKey::OffsetDelete => group::offset_delete(broker, ctx, body).await,
        ApiKey::InitProducerId => producer::init_producer_id(broker, ctx, body).await,
        ApiKey::AddPartitionsToTxn => txn::add_partitions(broker, ctx, body).await,
        ApiKey::AddOffsetsToTxn => txn::add_offsets(broker, ctx, body).await,
        ApiKey::EndTxn => txn::end(broker, ctx, body).await,
        ApiKey::TxnOffsetCommit => txn::offset_commit(broker, ctx, body).await,
        ApiKey::WriteTxnMarkers => txn::write_markers(broker, ctx, body).await,
        ApiKey::ListTransactions => txn_admin::list(broker, ctx, body).await,
        ApiKey::DescribeTransactions => txn_admin::describe(broker, ctx, body).await,
        ApiKey::DescribeProducers => txn_admin::describe_producers(broker, ctx, body).await,
        other => Err(Response::Close(format!("API {other:?} is not implemented"))),
    }
}

/// A future and the time spent polling it: the shard's time on a request (what
/// request_percentage limits), without the time it waited.
struct Busy<F> {
    inner: std::pin::Pin<Box<F>>,
    spent: std::time::Duration,
}

impl<F: std::future::Future> Busy<F> {
    fn new(f: F) -> Busy<F> {
        Busy {
            inner: Box::pin(f),
            spent: std::time::Duration::ZERO,
        }
    }
}

impl<F: std::future::Future> std::future::Future for Busy<F> {
    type Output = (F::Output, std::time::Duration);

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let t = std::time::Instant::now();
        let r = self.inner.as_mut().poll(cx);
        self.spent += t.elapsed();
        r.map(|out| (out, self.spent))
    }
}

/// Auto-creates `topics` that do not exist yet, when the broker allows it and the requester
/// may create them (CREATE on the cluster or the topic; else TOPIC_AUTHORIZATION_FAILED, as in
/// Kafka). Returns the error code for each topic that is still missing afterwards.
pub async fn auto_create(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    topics: &[String],
) -> BTreeMap<String, ErrorCode> {
    let meta = broker.meta();
    // The internal topics are the controller's to create (with their own partition counts
    // and configs), never a client's side effect.
    let missing: Vec<&String> = topics
        .iter()
        .filter(|t| !meta.topics.contains_key(*t) && !crate::metadata::is_internal(t))
        .collect();
    let mut errors = BTreeMap::new();
    if missing.is_empty() {
        return errors;
    }
    if !broker.config.auto_create_topics {
        for t in missing {
            errors.insert(t.clone(), ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
        }
        return errors;
    }
    let cluster_create = ctx.allowed_cluster(broker, Operation::Create);
    let (missing, refused): (Vec<&String>, Vec<&String>) = missing.into_iter().partition(|t| {
        cluster_create || ctx.allowed(broker, Operation::Create, ResourceType::Topic, t)
    });
    for t in refused {
        errors.insert(t.clone(), ErrorCode::TOPIC_AUTHORIZATION_FAILED);
    }
    if missing.is_empty() {
        return errors;
    }
    let specs = missing
        .iter()
        .map(|name| CreateSpec {
            name: (*name).clone(),
            partitions: broker.config.default_partitions,
            replication_factor: -1,
            configs: BTreeMap::new(),
            validate_only: false,
            assignment: None,
        })
        .collect();
    let results = broker.controller.create_topics(specs).await;
    for (name, r) in missing.into_iter().zip(results) {
        let code = r.error;
        if !code.is_ok() && code != ErrorCode::TOPIC_ALREADY_EXISTS {
            let code = if code == ErrorCode::INVALID_TOPIC_EXCEPTION {
                code
            } else {
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
            };
            errors.insert(name.clone(), code);
        }
    }
    errors
}
