//! Consumer group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete.
//! Each group's requests go to the shard owning its `__consumer_offsets` partition.

use super::metadata::live_brokers;
use super::{decode, Ctx};
use crate::broker::Broker;
use crate::coordinator::group::{
    CommitRequest, FetchOffsetsRequest, JoinRequest, MemberRef, SyncOut, SyncRequest, OFFSETS_TOPIC,
};
use crate::coordinator::group::{DescribeOut, JoinOut, OffsetCommitEntry, OffsetRow};
use crate::metadata::image::BrokerInfo;
use crate::protocol::errors::ErrorCode;
use crate::protocol::Response;
use crate::security::acl::{Operation, ResourceType};
use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

pub async fn find_coordinator(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: FindCoordinatorRequest = decode(ctx, body)?;
    let cluster = broker.meta();
    let brokers = live_brokers(broker, &cluster, ctx);
    // The coordinator of a key is the leader of the internal partition it hashes to.
    let answer = |key_type: i8, key: &str| -> Result<BrokerInfo, (ErrorCode, String)> {
        let topic = match key_type {
            0 => OFFSETS_TOPIC,
            1 => crate::metadata::TXN_TOPIC,
            k => {
                return Err((
                    ErrorCode::INVALID_REQUEST,
                    format!("unknown coordinator key type {k}"),
                ))
            }
        };
        let authorized = if key_type == 0 {
            ctx.check_group(broker, Operation::Describe, key)
        } else {
            ctx.check_txn(broker, Operation::Describe, key)
        };
        if let Err(e) = authorized {
            return Err((e, format!("not authorized to describe {key}")));
        }
        let not_yet = |why: &str| (ErrorCode::COORDINATOR_NOT_AVAILABLE, why.to_string());
        let t = cluster
            .topics
            .get(topic)
            .ok_or_else(|| not_yet("internal topic is being created"))?;
        let p = crate::metadata::key_partition(key, t.placement.len() as i32);
        let leader = t.leader(p, cluster.node_id);
        brokers
            .iter()
            .find(|b| b.id == leader)
            .cloned()
            .ok_or_else(|| not_yet("the coordinator's partition has no leader"))
    };
    let mut resp = FindCoordinatorResponse::default();
    if ctx.version >= 4 {
        resp.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let c = Coordinator::default().with_key(k.clone());
                match answer(req.key_type, k) {
                    Ok(b) => c
                        .with_node_id(BrokerId(b.id))
                        .with_host(s(b.host))
                        .with_port(b.port),
                    Err((e, m)) => c
                        .with_error_code(e.0)
                        .with_error_message(Some(s(m)))
                        .with_node_id(BrokerId(-1))
                        .with_port(-1),
                }
            })
            .collect();
    } else {
        let key_type = if ctx.version >= 1 { req.key_type } else { 0 };
        match answer(key_type, &req.key) {
            Ok(b) => {
                resp = resp
                    .with_node_id(BrokerId(b.id))
                    .with_host(s(b.host))
                    .with_port(b.port)
            }
            Err((e, m)) => {
                resp.error_code = e.0;
                if ctx.version >= 1 {
                    resp.error_message = Some(s(m));
                }
                resp = resp.with_node_id(BrokerId(-1)).with_port(-1);
            }
        }
    }
    Ok(ctx.respond(&resp))
}

pub async fn join(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
    peer: &str,
) -> Result<Response, Response> {
    let req: JoinGroupRequest = decode(ctx, body)?;
    let group = req.group_id.0.to_string();
    let gr = JoinRequest {
        group,
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|x| x.to_string()),
        client_id: ctx.client_id.clone(),
        client_host: format!("/{}", peer.rsplit_once(':').map_or(peer, |(h, _)| h)),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if ctx.version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_member_id: ctx.version >= 4,
        can_skip_assignment: ctx.version >= 9,
    };
    let out = match ctx.check_group(broker, Operation::Read, &gr.group) {
        Ok(()) => broker.groups.join(gr).await,
        Err(e) => Err(e),
    }
    .unwrap_or_else(|e| JoinOut::error(e, req.member_id.to_string()));
    let mut resp = JoinGroupResponse::default()
        .with_error_code(out.error.0)
        .with_generation_id(out.generation)
        .with_leader(s(out.leader))
        .with_member_id(s(out.member_id))
        .with_members(
            out.members
                .into_iter()
                .map(|(id, iid, meta)| {
                    let m = JoinGroupResponseMember::default()
                        .with_member_id(s(id))
                        .with_metadata(meta);
                    if ctx.version >= 5 {
                        m.with_group_instance_id(iid.map(s))
                    } else {
                        m
                    }
                })
                .collect(),
        );
    if ctx.version >= 7 {
        resp.protocol_type = out.protocol_type.map(s);
        resp.protocol_name = out.protocol.map(s);
    } else {
        resp.protocol_name = Some(s(out.protocol.unwrap_or_default()));
    }
    if ctx.version >= 9 {
        resp.skip_assignment = out.skip_assignment;
    }
    Ok(ctx.respond(&resp))
}

pub async fn sync(broker: &Rc<Broker>, ctx: &Ctx, body: &mut Bytes) -> Result<Response, Response> {
    let req: SyncGroupRequest = decode(ctx, body)?;
    let gr = SyncRequest {
        member: MemberRef {
            group: req.group_id.0.to_string(),
            generation: req.generation_id,
            member_id: req.member_id.to_string(),
            instance_id: req.group_instance_id.as_ref().map(|x| x.to_string()),
        },
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let out = match ctx.check_group(broker, Operation::Read, &gr.member.group) {
        Ok(()) => broker.groups.sync(gr).await,
        Err(e) => Err(e),
    }
    .unwrap_or_else(SyncOut::error);
    let mut resp = SyncGroupResponse::default()
        .with_error_code(out.error.0)
        .with_assignment(out.assignment);
    if ctx.version >= 5 {
        resp.protocol_type = out.protocol_type.map(s);
        resp.protocol_name = out.protocol.map(s);
    }
    Ok(ctx.respond(&resp))
}

pub async fn heartbeat(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: HeartbeatRequest = decode(ctx, body)?;
    let member = MemberRef {
        group: req.group_id.0.to_string(),
        generation: req.generation_id,
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|x| x.to_string()),
    };
    let e = match ctx.check_group(broker, Operation::Read, &member.group) {
        Ok(()) => broker.groups.heartbeat(member).await.unwrap_or_else(|e| e),
        Err(e) => e,
    };
    Ok(ctx.respond(&HeartbeatResponse::default().with_error_code(e.0)))
}

pub async fn leave(broker: &Rc<Broker>, ctx: &Ctx, body: &mut Bytes) -> Result<Response, Response> {
    let req: LeaveGroupRequest = decode(ctx, body)?;
    let group = req.group_id.0.to_string();
    let members: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|x| x.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let left = match ctx.check_group(broker, Operation::Read, &group) {
        Ok(()) => broker.groups.leave(group, members.clone()).await,
        Err(e) => Err(e),
    };
    let (top, each) = match left {
        Ok(out) => (out.error, out.members),
        Err(e) => (e, Vec::new()),
    };
    let mut resp = LeaveGroupResponse::default();
    if ctx.version >= 3 {
        resp.error_code = top.0;
        resp.members = members
            .into_iter()
            .zip(each.into_iter().chain(std::iter::repeat(top)))
            .map(|((id, iid), e)| {
                MemberResponse::default()
                    .with_member_id(s(id))
                    .with_group_instance_id(iid.map(s))
                    .with_error_code(e.0)
            })
            .collect();
    } else {
        resp.error_code = if top.is_ok() {
            each.first().copied().unwrap_or(top).0
        } else {
            top.0
        };
    }
    Ok(ctx.respond(&resp))
}

pub async fn offset_commit(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: OffsetCommitRequest = if ctx.version < 2 {
        crate::protocol::legacy::offset_commit(ctx.version, body).map_err(|e| ctx.malformed(e))?
    } else {
        decode(ctx, body)?
    };
    let entries = req
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
    let codes = commit_offsets(
        broker,
        ctx,
        &req.group_id.0,
        req.generation_id_or_member_epoch,
        req.member_id.to_string(),
        req.group_instance_id.as_ref().map(|x| x.to_string()),
        entries,
        None,
    )
    .await;
    let mut it = codes.into_iter();
    if ctx.version < 2 {
        let topics: Vec<_> = req
            .topics
            .iter()
            .map(|t| {
                let parts = t.partitions.iter().map(|p| {
                    let code = it.next().unwrap_or(ErrorCode::UNKNOWN_SERVER_ERROR);
                    (p.partition_index, code.0)
                });
                (t.name.0.clone(), parts.collect())
            })
            .collect();
        return Ok(ctx.respond_raw(crate::protocol::legacy::offset_commit_response(&topics)));
    }
    let topics = req
        .topics
        .iter()
        .map(|t| {
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(
                                    it.next().unwrap_or(ErrorCode::UNKNOWN_SERVER_ERROR).0,
                                )
                        })
                        .collect(),
                )
        })
        .collect();
    Ok(ctx.respond(&OffsetCommitResponse::default().with_topics(topics)))
}

/// Runs an OffsetCommit, or with `producer` (id, epoch) a TxnOffsetCommit, on the group's
/// coordinator. Entries are (topic, partition, offset, leader epoch, metadata); one error code
/// comes back per entry, in order. The requester needs READ on the group and on each topic.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn commit_offsets(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    group: &str,
    generation: i32,
    member_id: String,
    instance_id: Option<String>,
    entries: Vec<(String, i32, i64, i32, Option<String>)>,
    producer: Option<(i64, i16)>,
) -> Vec<ErrorCode> {
    if let Err(e) = ctx.check_group(broker, Operation::Read, group) {
        return vec![e; entries.len()];
    }
    let readable = |e: &(String, i32, i64, i32, Option<String>)| {
        ctx.allowed(broker, Operation::Read, ResourceType::Topic, &e.0)
    };
    let refused = ErrorCode::TOPIC_AUTHORIZATION_FAILED;
    super::on_allowed(entries, readable, refused, |entries| async move {
        commit_allowed(
            broker,
            group,
            generation,
            member_id,
            instance_id,
            entries,
            producer,
        )
        .await
    })
    .await
}

async fn commit_allowed(
    broker: &Rc<Broker>,
    group: &str,
    generation: i32,
    member_id: String,
    instance_id: Option<String>,
    entries: Vec<(String, i32, i64, i32, Option<String>)>,
    producer: Option<(i64, i16)>,
) -> Vec<ErrorCode> {
    let meta = broker.meta();
    let n = entries.len();
    let offsets = entries
        .into_iter()
        .map(|(topic, partition, offset, leader_epoch, metadata)| {
            let count = meta
                .topics
                .get(&topic)
                .map_or(0, |m| m.placement.len() as i32);
            OffsetCommitEntry {
                topic_exists: partition >= 0 && partition < count,
                topic,
                partition,
                offset,
                leader_epoch,
                metadata,
            }
        })
        .collect();
    let req = CommitRequest {
        member: MemberRef {
            group: group.to_string(),
            generation,
            member_id,
            instance_id,
        },
        offsets,
        producer,
    };
    broker
        .groups
        .commit(req)
        .await
        .unwrap_or_else(|e| vec![e; n])
}

/// A group's committed offsets (all, or `partitions`'). The requester needs DESCRIBE on the
/// group; partitions of topics it may not describe answer TOPIC_AUTHORIZATION_FAILED, or,
/// when all are asked for, are left out (Kafka's rules).
async fn fetch_group_offsets(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    group: &str,
    partitions: Option<Vec<(String, i32)>>,
    require_stable: bool,
) -> (ErrorCode, Vec<OffsetRow>) {
    if let Err(e) = ctx.check_group(broker, Operation::Describe, group) {
        return (e, Vec::new());
    }
    let describable = |t: &str| ctx.allowed(broker, Operation::Describe, ResourceType::Topic, t);
    let asked = partitions.clone();
    let allowed = partitions.map(|ps| ps.into_iter().filter(|(t, _)| describable(t)).collect());
    let req = FetchOffsetsRequest {
        group: group.to_string(),
        partitions: allowed,
        require_stable,
    };
    let rows = match broker.groups.fetch_offsets(req).await {
        Ok(rows) => rows,
        Err(e) => return (e, Vec::new()),
    };
    if !ctx.authorizing() {
        return (ErrorCode::NONE, rows);
    }
    let Some(asked) = asked else {
        let rows = rows.into_iter().filter(|r| describable(&r.topic)).collect();
        return (ErrorCode::NONE, rows);
    };
    let mut found: std::collections::HashMap<(String, i32), OffsetRow> = rows
        .into_iter()
        .map(|r| ((r.topic.clone(), r.partition), r))
        .collect();
    let rows = asked
        .into_iter()
        .map(|(topic, partition)| {
            found
                .remove(&(topic.clone(), partition))
                .unwrap_or(OffsetRow {
                    topic,
                    partition,
                    offset: -1,
                    leader_epoch: -1,
                    metadata: String::new(),
                    error: ErrorCode::TOPIC_AUTHORIZATION_FAILED,
                })
        })
        .collect();
    (ErrorCode::NONE, rows)
}

/// Groups rows by topic, in first-seen order.
/// (partition, offset, leader epoch, metadata, error)
type PartRow = (i32, i64, i32, String, ErrorCode);

fn by_topic(rows: Vec<OffsetRow>) -> Vec<(String, Vec<PartRow>)> {
    let mut out: Vec<(String, Vec<PartRow>)> = Vec::new();
    for r in rows {
        let row = (r.partition, r.offset, r.leader_epoch, r.metadata, r.error);
        match out.iter_mut().find(|x| x.0 == r.topic) {
            Some(x) => x.1.push(row),
            None => out.push((r.topic, vec![row])),
        }
    }
    out
}

pub async fn offset_fetch(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: OffsetFetchRequest = decode(ctx, body)?;
    if ctx.version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in &req.groups {
            let gid = g.group_id.0.to_string();
            let parts = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .flat_map(|t| {
                        t.partition_indexes
                            .iter()
                            .map(move |p| (t.name.0.to_string(), *p))
                    })
                    .collect()
            });
            let (e, rows) = fetch_group_offsets(broker, ctx, &gid, parts, req.require_stable).await;
            groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_error_code(e.0)
                    .with_topics(
                        by_topic(rows)
                            .into_iter()
                            .map(|(t, ps)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(s(t)))
                                    .with_partitions(
                                        ps.into_iter()
                                            .map(|(p, o, le, m, err)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_error_code(err.0)
                                                    .with_committed_offset(o)
                                                    .with_committed_leader_epoch(le)
                                                    .with_metadata(Some(s(m)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
            );
        }
        return Ok(ctx.respond(&OffsetFetchResponse::default().with_groups(groups)));
    }
    let gid = req.group_id.0.to_string();
    let parts = req.topics.as_ref().map(|ts| {
        ts.iter()
            .flat_map(|t| {
                t.partition_indexes
                    .iter()
                    .map(move |p| (t.name.0.to_string(), *p))
            })
            .collect()
    });
    let (e, rows) = fetch_group_offsets(broker, ctx, &gid, parts, req.require_stable).await;
    let topics = by_topic(rows)
        .into_iter()
        .map(|(t, ps)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(s(t)))
                .with_partitions(
                    ps.into_iter()
                        .map(|(p, o, le, m, err)| {
                            let r = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(err.0)
                                .with_committed_offset(o)
                                .with_metadata(Some(s(m)));
                            if ctx.version >= 5 {
                                r.with_committed_leader_epoch(le)
                            } else {
                                r
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    let mut resp = OffsetFetchResponse::default().with_topics(topics);
    if ctx.version >= 2 {
        resp.error_code = e.0;
    }
    Ok(ctx.respond(&resp))
}

pub async fn list_groups(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: ListGroupsRequest = decode(ctx, body)?;
    let mut listed = broker.groups.list_all().await;
    // Without DESCRIBE on the cluster, the groups the requester may describe.
    if !ctx.allowed_cluster(broker, Operation::Describe) {
        listed.retain(|(g, _, _)| ctx.allowed(broker, Operation::Describe, ResourceType::Group, g));
    }
    let filter: Vec<String> = req
        .states_filter
        .iter()
        .map(|x| x.to_string().to_lowercase())
        .collect();
    let groups = listed
        .into_iter()
        .filter(|(_, _, st)| filter.is_empty() || filter.contains(&st.to_lowercase()))
        .map(|(g, pt, st)| {
            let l = ListedGroup::default()
                .with_group_id(GroupId(s(g)))
                .with_protocol_type(s(pt));
            if ctx.version >= 4 {
                l.with_group_state(s(st))
            } else {
                l
            }
        })
        .collect();
    Ok(ctx.respond(&ListGroupsResponse::default().with_groups(groups)))
}

pub async fn describe_groups(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: DescribeGroupsRequest = decode(ctx, body)?;
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in &req.groups {
        let gid = g.0.to_string();
        let d = match ctx.check_group(broker, Operation::Describe, &gid) {
            Ok(()) => broker.groups.describe_group(gid).await,
            Err(e) => Err(e),
        };
        groups.push(match d {
            Ok(DescribeOut {
                group,
                state,
                protocol_type,
                protocol,
                members,
            }) => DescribedGroup::default()
                .with_group_id(GroupId(s(group)))
                .with_group_state(s(state))
                .with_protocol_type(s(protocol_type))
                .with_protocol_data(s(protocol))
                .with_members(
                    members
                        .into_iter()
                        .map(|d| {
                            let m = DescribedGroupMember::default()
                                .with_member_id(s(d.member_id))
                                .with_client_id(s(d.client_id))
                                .with_client_host(s(d.client_host))
                                .with_member_metadata(d.metadata)
                                .with_member_assignment(d.assignment);
                            if ctx.version >= 4 {
                                m.with_group_instance_id(d.instance_id.map(s))
                            } else {
                                m
                            }
                        })
                        .collect(),
                ),
            Err(e) => DescribedGroup::default()
                .with_group_id(g.clone())
                .with_error_code(e.0),
        });
    }
    Ok(ctx.respond(&DescribeGroupsResponse::default().with_groups(groups)))
}

pub async fn delete_groups(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: DeleteGroupsRequest = decode(ctx, body)?;
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in &req.groups_names {
        let gid = g.0.to_string();
        let e = match ctx.check_group(broker, Operation::Delete, &gid) {
            Ok(()) => broker.groups.delete(gid).await.unwrap_or_else(|e| e),
            Err(e) => e,
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g.clone())
                .with_error_code(e.0),
        );
    }
    Ok(ctx.respond(&DeleteGroupsResponse::default().with_results(results)))
}

pub async fn offset_delete(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: OffsetDeleteRequest = decode(ctx, body)?;
    let gid = req.group_id.0.to_string();
    let parts: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let (top, codes) = match ctx.check_group(broker, Operation::Delete, &gid) {
        Err(e) => (e, Vec::new()),
        Ok(()) => {
            let mut top = ErrorCode::NONE;
            let readable =
                |p: &(String, i32)| ctx.allowed(broker, Operation::Read, ResourceType::Topic, &p.0);
            let refused = ErrorCode::TOPIC_AUTHORIZATION_FAILED;
            let codes = super::on_allowed(parts, readable, refused, |parts| async {
                let n = parts.len();
                match broker.groups.delete_offsets(gid.clone(), parts).await {
                    Ok((t, codes)) => {
                        top = t;
                        codes
                    }
                    Err(e) => {
                        top = e;
                        vec![e; n]
                    }
                }
            })
            .await;
            (top, codes)
        }
    };
    let mut it = codes.into_iter();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(it.next().unwrap_or(top).0)
                        })
                        .collect(),
                )
        })
        .collect();
    Ok(ctx.respond(
        &OffsetDeleteResponse::default()
            .with_error_code(top.0)
            .with_topics(topics),
    ))
}
