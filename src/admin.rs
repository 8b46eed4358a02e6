//! `flumen groups ...` and `flumen topics ...`: consumer-group and partition-reassignment
//! administration over the Kafka protocol, so it works against Flumen or any Kafka broker. A small blocking client: this runs in the CLI process,
//! never on a shard.

use crate::protocol::client;
use anyhow::{anyhow, bail, Context};
use bytes::{Buf, Bytes};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Request, StrBytes};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Client {
    stream: TcpStream,
    correlation: i32,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl Client {
    pub fn connect(addr: &str) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client {
            stream,
            correlation: 0,
        })
    }

    pub fn send<R: Request>(&mut self, req: &R, version: i16) -> anyhow::Result<R::Response> {
        let corr = self.write(req, version)?;
        self.read::<R>(version, corr)
    }

    /// Sends a request without waiting (pipelining); answers its correlation id.
    pub fn write<R: Request>(&mut self, req: &R, version: i16) -> anyhow::Result<i32> {
        self.correlation += 1;
        let frame = client::encode_request(req, version, self.correlation, "flumen-admin")?;
        self.stream.write_all(&frame)?;
        Ok(self.correlation)
    }

    /// Reads the next response, which must be the one to request `corr`.
    pub fn read<R: Request>(&mut self, version: i16, corr: i32) -> anyhow::Result<R::Response> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let mut buf = vec![0u8; client::response_len(len)?];
        self.stream.read_exact(&mut buf)?;
        client::decode_response::<R>(Bytes::from(buf), version, corr)
    }
}

fn err(code: i16, what: &str) -> anyhow::Result<()> {
    if code != 0 {
        bail!("{what}: Kafka error code {code}");
    }
    Ok(())
}

pub fn list(bootstrap: &str) -> anyhow::Result<()> {
    let mut c = Client::connect(bootstrap)?;
    let r = c.send(&ListGroupsRequest::default(), 4)?;
    err(r.error_code, "ListGroups")?;
    println!("{:<40} {:<20} PROTOCOL TYPE", "GROUP", "STATE");
    for g in r.groups {
        println!(
            "{:<40} {:<20} {}",
            g.group_id.0.as_str(),
            g.group_state.as_str(),
            g.protocol_type.as_str()
        );
    }
    Ok(())
}

/// Partitions of an assignment in the consumer protocol (`i16 version` + struct).
fn assigned_partitions(mut b: Bytes) -> Vec<(String, i32)> {
    if b.remaining() < 2 {
        return Vec::new();
    }
    let version = b.get_i16();
    match ConsumerProtocolAssignment::decode(&mut b, version.min(3)) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .flat_map(|tp| {
                let t = tp.topic.0.to_string();
                tp.partitions.into_iter().map(move |p| (t.clone(), p))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn committed(c: &mut Client, group: &str) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let r = c.send(
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(None),
        7,
    )?;
    err(r.error_code, "OffsetFetch")?;
    let mut out = BTreeMap::new();
    for t in r.topics {
        for p in t.partitions {
            if p.committed_offset >= 0 {
                out.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    Ok(out)
}

/// Offsets at `timestamp` (-1 latest, -2 earliest) for the given partitions.
pub(crate) fn list_offsets(
    c: &mut Client,
    parts: &[(String, i32)],
    timestamp: i64,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in parts {
        by_topic.entry(t).or_default().push(*p);
    }
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(
            by_topic
                .iter()
                .map(|(t, ps)| {
                    list_offsets_request::ListOffsetsTopic::default()
                        .with_name(TopicName(s(t)))
                        .with_partitions(
                            ps.iter()
                                .map(|p| {
                                    list_offsets_request::ListOffsetsPartition::default()
                                        .with_partition_index(*p)
                                        .with_timestamp(timestamp)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let r = c.send(&req, 5)?;
    let mut out = BTreeMap::new();
    for t in r.topics {
        for p in t.partitions {
            err(
                p.error_code,
                &format!("ListOffsets {}-{}", t.name.0.as_str(), p.partition_index),
            )?;
            out.insert((t.name.0.to_string(), p.partition_index), p.offset);
        }
    }
    Ok(out)
}

pub(crate) fn topic_partitions(c: &mut Client, topic: &str) -> anyhow::Result<Vec<(String, i32)>> {
    let r = c.send(
        &MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(TopicName(s(topic))))]))
            .with_allow_auto_topic_creation(false),
        9,
    )?;
    let t = r
        .topics
        .first()
        .ok_or_else(|| anyhow!("no metadata for {topic}"))?;
    err(t.error_code, &format!("topic {topic}"))?;
    Ok(t.partitions
        .iter()
        .map(|p| (topic.to_string(), p.partition_index))
        .collect())
}

pub fn describe(bootstrap: &str, group: &str) -> anyhow::Result<()> {
    let mut c = Client::connect(bootstrap)?;
    let r = c.send(
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]),
        5,
    )?;
    let g = r
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no answer for {group}"))?;
    err(g.error_code, "DescribeGroups")?;
    println!(
        "group {group}: state {}, protocol {} ({}), {} member(s)",
        g.group_state.as_str(),
        g.protocol_data.as_str(),
        g.protocol_type.as_str(),
        g.members.len()
    );
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    for m in &g.members {
        let parts = assigned_partitions(m.member_assignment.clone());
        println!(
            "  member {} client {} host {}{}: {} partition(s)",
            m.member_id.as_str(),
            m.client_id.as_str(),
            m.client_host.as_str(),
            m.group_instance_id
                .as_ref()
                .map(|i| format!(" instance {}", i.as_str()))
                .unwrap_or_default(),
            parts.len()
        );
        for p in parts {
            owner.insert(p, m.member_id.to_string());
        }
    }
    let committed = committed(&mut c, group)?;
    let mut parts: Vec<(String, i32)> = committed.keys().cloned().collect();
    for k in owner.keys() {
        if !committed.contains_key(k) {
            parts.push(k.clone());
        }
    }
    parts.sort();
    let ends = if parts.is_empty() {
        BTreeMap::new()
    } else {
        list_offsets(&mut c, &parts, -1)?
    };
    println!(
        "{:<30} {:>9} {:>14} {:>14} {:>10}  MEMBER",
        "TOPIC", "PARTITION", "COMMITTED", "LOG END", "LAG"
    );
    for k in parts {
        let end = ends.get(&k).copied().unwrap_or(-1);
        let com = committed.get(&k).copied();
        let lag = com
            .map(|o| (end - o).max(0).to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<30} {:>9} {:>14} {:>14} {:>10}  {}",
            k.0,
            k.1,
            com.map(|o| o.to_string()).unwrap_or_else(|| "-".into()),
            end,
            lag,
            owner.get(&k).map(String::as_str).unwrap_or("-")
        );
    }
    Ok(())
}

pub enum ResetTo {
    Earliest,
    Latest,
    Offset(i64),
}

pub fn reset_offsets(bootstrap: &str, group: &str, topic: &str, to: ResetTo) -> anyhow::Result<()> {
    let mut c = Client::connect(bootstrap)?;
    let r = c.send(
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(group))]),
        5,
    )?;
    if let Some(g) = r.groups.first() {
        if !g.members.is_empty() {
            bail!(
                "group {group} has {} active member(s): stop its consumers first",
                g.members.len()
            );
        }
    }
    let parts = topic_partitions(&mut c, topic)?;
    let targets: BTreeMap<(String, i32), i64> = match to {
        ResetTo::Earliest => list_offsets(&mut c, &parts, -2)?,
        ResetTo::Latest => list_offsets(&mut c, &parts, -1)?,
        ResetTo::Offset(o) => parts.iter().map(|p| (p.clone(), o)).collect(),
    };
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(
                    targets
                        .iter()
                        .map(|((_, p), o)| {
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*o)
                        })
                        .collect(),
                ),
        ]);
    let r = c.send(&req, 8)?;
    for t in r.topics {
        for p in t.partitions {
            err(
                p.error_code,
                &format!("commit {}-{}", t.name.0.as_str(), p.partition_index),
            )?;
        }
    }
    for ((t, p), o) in targets {
        println!("{group} {t}-{p} -> {o}");
    }
    Ok(())
}

/// `flumen topics reassign`: moves partitions of `topic` (all, or `partitions`) to the
/// brokers `replicas` (leader first), or cancels their reassignment; with `wait`, returns
/// once no listed partition is being reassigned any more.
pub fn reassign(
    bootstrap: &str,
    topic: &str,
    partitions: &[i32],
    replicas: Option<&[i32]>,
    wait: bool,
) -> anyhow::Result<()> {
    let mut c = Client::connect(bootstrap)?;
    let parts: Vec<i32> = if partitions.is_empty() {
        topic_partitions(&mut c, topic)?
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    } else {
        partitions.to_vec()
    };
    let target = replicas.map(|r| r.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>());
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![
            alter_partition_reassignments_request::ReassignableTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(
                    parts
                        .iter()
                        .map(|p| {
                            alter_partition_reassignments_request::ReassignablePartition::default()
                                .with_partition_index(*p)
                                .with_replicas(target.clone())
                        })
                        .collect(),
                ),
        ]);
    let r = c.send(&req, 0)?;
    err(r.error_code, "AlterPartitionReassignments")?;
    for t in &r.responses {
        for p in &t.partitions {
            let what = format!("{}-{}", t.name.0.as_str(), p.partition_index);
            if p.error_code != 0 {
                let m = p.error_message.as_ref().map_or("", |m| m.as_str());
                bail!("{what}: Kafka error code {} {m}", p.error_code);
            }
            match replicas {
                Some(r) => println!("{what}: moving to {r:?}"),
                None => println!("{what}: reassignment cancelled"),
            }
        }
    }
    if !wait {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3600);
    loop {
        let left = ongoing(&mut c, Some((topic, &parts)))?;
        if left.is_empty() {
            println!("done");
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("{} partitions still moving after an hour", left.len());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Reassignments in progress: (topic, partition, replicas, adding, removing).
type Ongoing = Vec<(String, i32, Vec<i32>, Vec<i32>, Vec<i32>)>;

fn ongoing(c: &mut Client, only: Option<(&str, &[i32])>) -> anyhow::Result<Ongoing> {
    let req = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(only.map(|(t, ps)| {
            vec![
                list_partition_reassignments_request::ListPartitionReassignmentsTopics::default()
                    .with_name(TopicName(s(t)))
                    .with_partition_indexes(ps.to_vec()),
            ]
        }));
    let r = c.send(&req, 0)?;
    err(r.error_code, "ListPartitionReassignments")?;
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<i32>>();
    Ok(r.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    ids(&p.replicas),
                    ids(&p.adding_replicas),
                    ids(&p.removing_replicas),
                )
            })
        })
        .collect())
}

/// `flumen topics reassignments`: what is being moved.
pub fn list_reassignments(bootstrap: &str) -> anyhow::Result<()> {
    let mut c = Client::connect(bootstrap)?;
    println!(
        "{:<40} {:>9}  {:<16} {:<12} REMOVING",
        "TOPIC", "PARTITION", "REPLICAS", "ADDING"
    );
    for (t, p, r, a, d) in ongoing(&mut c, None)? {
        let (r, a) = (format!("{r:?}"), format!("{a:?}"));
        println!("{t:<40} {p:>9}  {r:<16} {a:<12} {d:?}");
    }
    Ok(())
}
