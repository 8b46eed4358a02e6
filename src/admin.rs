//! `flumen groups ...` and `flumen topics ...`: consumer-group and topic administration
//! (list, describe, create, delete, configs, partitions, records, reassignments) over the Kafka
//! protocol, so it works against Flumen or any Kafka broker. A small blocking client: this runs
//! in the CLI process, never on a shard.

use crate::protocol::client;
use anyhow::{anyhow, bail, Context};
use bytes::{Buf, Bytes};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Request, StrBytes};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Client {
    addr: String,
    stream: TcpStream,
    correlation: i32,
    /// The broker's ApiVersions: key -> (min, max), asked on first need.
    versions: Option<BTreeMap<i16, (i16, i16)>>,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl Client {
    /// Connects; with `FLUMEN_SASL_USERNAME` and `FLUMEN_SASL_PASSWORD` set, logs in with
    /// SASL PLAIN first (a SASL_PLAINTEXT listener; SCRAM users log in with PLAIN on Flumen).
    pub fn connect(addr: &str) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut c = Client {
            addr: addr.to_string(),
            stream,
            correlation: 0,
            versions: None,
        };
        if let (Ok(user), Ok(password)) = (
            std::env::var("FLUMEN_SASL_USERNAME"),
            std::env::var("FLUMEN_SASL_PASSWORD"),
        ) {
            c.login_plain(&user, &password)
                .with_context(|| format!("SASL PLAIN login as {user} at {addr}"))?;
        }
        Ok(c)
    }

    fn login_plain(&mut self, user: &str, password: &str) -> anyhow::Result<()> {
        let hs = SaslHandshakeRequest::default().with_mechanism(s("PLAIN"));
        let r = self.send(&hs, 1)?;
        err(r.error_code, "SaslHandshake")?;
        let token = format!("\0{user}\0{password}");
        let auth = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let r = self.send(&auth, 1)?;
        if let Some(e) = KafkaError::of(r.error_code, r.error_message.as_ref()) {
            bail!("{e}");
        }
        Ok(())
    }

    /// The version of `R` to send: the highest of `lo..=hi` that the broker speaks too (its
    /// ApiVersions, asked once per connection).
    pub fn version<R: Request>(&mut self, lo: i16, hi: i16) -> anyhow::Result<i16> {
        if self.versions.is_none() {
            let r = self.send(&ApiVersionsRequest::default(), 0)?;
            err(r.error_code, "ApiVersions")?;
            self.versions = Some(
                r.api_keys
                    .iter()
                    .map(|k| (k.api_key, (k.min_version, k.max_version)))
                    .collect(),
            );
        }
        let name = ApiKey::try_from(R::KEY)
            .map(|k| format!("{k:?}"))
            .unwrap_or_else(|_| format!("API {}", R::KEY));
        match self.versions.as_ref().and_then(|v| v.get(&R::KEY)) {
            None => bail!(
                "the broker at {} does not support {name} (API key {})",
                self.addr,
                R::KEY
            ),
            Some(&(min, max)) if min > hi || max < lo => bail!(
                "the broker at {} speaks {name} v{min}-{max}, this client v{lo}-{hi}",
                self.addr
            ),
            Some(&(_, max)) => Ok(max.min(hi)),
        }
    }

    /// Sends `req` at the highest version of `lo..=hi` the broker speaks.
    pub fn request<R: Request>(
        &mut self,
        req: &R,
        lo: i16,
        hi: i16,
    ) -> anyhow::Result<(R::Response, i16)> {
        let v = self.version::<R>(lo, hi)?;
        Ok((self.send(req, v)?, v))
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
    match KafkaError::of(code, None) {
        Some(e) => bail!("{what}: {e}"),
        None => Ok(()),
    }
}

/// Kafka's name for an error code, as its `Errors` enum spells it: TOPIC_ALREADY_EXISTS for 36.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".into(),
        Some(ResponseError::Unknown(_)) => "UNKNOWN".into(),
        Some(e) => {
            let mut out = String::new();
            for (i, ch) in format!("{e:?}").chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
    }
}

/// An error a broker answered: its code, Kafka's name for it, and the broker's message if
/// the response carries one. Displays as `TOPIC_ALREADY_EXISTS (36): Topic 't' already exists`.
#[derive(Debug, Clone)]
pub struct KafkaError {
    pub code: i16,
    pub message: Option<String>,
}

impl KafkaError {
    /// None for code 0.
    pub fn of(code: i16, message: Option<&StrBytes>) -> Option<KafkaError> {
        (code != 0).then(|| KafkaError {
            code,
            message: message
                .map(|m| m.to_string())
                .filter(|m| !m.trim().is_empty()),
        })
    }

    pub fn name(&self) -> String {
        error_name(self.code)
    }
}

/// In JSON output: `{"code": 36, "name": "TOPIC_ALREADY_EXISTS", "message": "..."}`.
impl Serialize for KafkaError {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Doc<'a> {
            code: i16,
            name: String,
            message: &'a Option<String>,
        }
        Doc {
            code: self.code,
            name: self.name(),
            message: &self.message,
        }
        .serialize(ser)
    }
}

impl std::fmt::Display for KafkaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code)?;
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        Ok(())
    }
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
            if let Some(e) = KafkaError::of(p.error_code, p.error_message.as_ref()) {
                bail!("{what}: {e}");
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

// `flumen topics list | describe | create | delete | alter | add-partitions | delete-records`:
// each builds its results once, then prints them as a table or, with `--json`, as one JSON
// document on stdout (the structs below, fields in order). Whatever the broker refuses is
// shown in its place (the STATUS column, `"error"` in JSON) and then fails the command
// (stderr, exit status 1): the output always says what did happen.

/// How long the broker may take over a topic operation before answering REQUEST_TIMED_OUT
/// (below the client's 30 s read timeout).
const ADMIN_TIMEOUT_MS: i32 = 20_000;
/// DescribeConfigs resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// DescribeConfigs' config_source of a topic's own override.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;

/// `key=value` (the value may hold `=` and `,`), for `--config` and `--set`.
pub fn parse_config(kv: &str) -> Result<(String, String), String> {
    match kv.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {kv:?}")),
    }
}

/// Rows under their headers, each column as wide as its widest cell, two spaces between
/// columns, the last one unpadded.
fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers);
    for r in rows {
        line(&r.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

fn print_json<T: Serialize + ?Sized>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// OK (or what a dry run did), or the broker's refusal: a STATUS cell.
fn status(e: &Option<KafkaError>, dry_run: bool) -> String {
    match e {
        Some(e) => e.to_string(),
        None if dry_run => "OK (dry run: nothing changed)".into(),
        None => "OK".into(),
    }
}

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Fails the command with every refusal (`what`: the topic or partition refused), once the
/// output has shown them in place.
fn refused<'a>(
    errors: impl IntoIterator<Item = (String, &'a Option<KafkaError>)>,
) -> anyhow::Result<()> {
    let all: Vec<String> = errors
        .into_iter()
        .filter_map(|(what, e)| e.as_ref().map(|e| format!("{what}: {e}")))
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    bail!("{}", all.join("; "))
}

fn ids(v: &[BrokerId]) -> Vec<i32> {
    v.iter().map(|b| b.0).collect()
}

fn id_list(v: &[i32]) -> String {
    v.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

fn topic_name_of(t: &metadata_response::MetadataResponseTopic) -> &str {
    t.name.as_ref().map_or("", |n| n.0.as_str())
}

/// Metadata for `topics` (None: all), without creating any.
fn metadata(c: &mut Client, topics: Option<&[&str]>) -> anyhow::Result<MetadataResponse> {
    let req = MetadataRequest::default()
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(TopicName(s(t))))
                })
                .collect()
        }))
        .with_allow_auto_topic_creation(false);
    Ok(c.request(&req, 4, 12)?.0)
}

/// One topic's metadata, its partitions sorted; fails when the broker refuses the topic.
fn topic_metadata(
    c: &mut Client,
    topic: &str,
) -> anyhow::Result<(MetadataResponse, metadata_response::MetadataResponseTopic)> {
    let mut md = metadata(c, Some(&[topic]))?;
    let i = md
        .topics
        .iter()
        .position(|t| topic_name_of(t) == topic)
        .ok_or_else(|| anyhow!("the broker sent no metadata for topic {topic}"))?;
    let mut t = md.topics.swap_remove(i);
    if let Some(e) = KafkaError::of(t.error_code, None) {
        bail!("topic {topic}: {e}");
    }
    t.partitions.sort_by_key(|p| p.partition_index);
    Ok((md, t))
}

/// The replication factor: partition 0's replica count (during a reassignment, the union of
/// old and new replicas, as Kafka shows it).
fn replication_factor(t: &metadata_response::MetadataResponseTopic) -> usize {
    t.partitions
        .iter()
        .min_by_key(|p| p.partition_index)
        .map_or(0, |p| p.replica_nodes.len())
}

/// Connections to the brokers a Metadata response names, opened when first needed: requests
/// for a partition's leader go to that broker.
struct Brokers {
    addrs: BTreeMap<i32, String>,
    conns: BTreeMap<i32, Client>,
}

impl Brokers {
    fn new(md: &MetadataResponse) -> Brokers {
        let addrs = md
            .brokers
            .iter()
            .map(|b| {
                let host = b.host.as_str();
                let addr = if host.contains(':') {
                    format!("[{host}]:{}", b.port)
                } else {
                    format!("{host}:{}", b.port)
                };
                (b.node_id.0, addr)
            })
            .collect();
        Brokers {
            addrs,
            conns: BTreeMap::new(),
        }
    }

    fn get(&mut self, id: i32) -> anyhow::Result<&mut Client> {
        if !self.conns.contains_key(&id) {
            let addr = self
                .addrs
                .get(&id)
                .ok_or_else(|| anyhow!("broker {id} is not in the Metadata response"))?;
            let c = Client::connect(addr).with_context(|| format!("broker {id}"))?;
            self.conns.insert(id, c);
        }
        Ok(self.conns.get_mut(&id).expect("just connected"))
    }
}

/// `parts` of a topic by leader; those without one (-1) under -1.
fn by_leader(
    t: &metadata_response::MetadataResponseTopic,
    parts: impl Fn(i32) -> bool,
) -> BTreeMap<i32, Vec<i32>> {
    let mut out: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in t.partitions.iter().filter(|p| parts(p.partition_index)) {
        out.entry(p.leader_id.0.max(-1))
            .or_default()
            .push(p.partition_index);
    }
    out
}

/// What stands for a broker's answer when there was none to ask for, or none came.
fn no_leader() -> KafkaError {
    KafkaError {
        code: 5, // LEADER_NOT_AVAILABLE
        message: Some("the partition has no leader in Metadata".into()),
    }
}

fn no_answer(leader: i32) -> KafkaError {
    KafkaError {
        code: -1,
        message: Some(format!("broker {leader} did not answer for this partition")),
    }
}

/// ListOffsets at `timestamp` (-2 earliest, -1 latest) of `topic`'s `parts`, asked of their
/// leader `c`: per partition the offset or the broker's refusal.
fn offsets_at(
    c: &mut Client,
    topic: &str,
    parts: &[i32],
    timestamp: i64,
) -> anyhow::Result<BTreeMap<i32, Result<i64, KafkaError>>> {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(
                parts
                    .iter()
                    .map(|p| {
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(*p)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )]);
    let (r, _) = c.request(&req, 1, 7)?;
    let mut out = BTreeMap::new();
    for t in r.topics.iter().filter(|t| t.name.0.as_str() == topic) {
        for p in &t.partitions {
            let v = match KafkaError::of(p.error_code, None) {
                Some(e) => Err(e),
                None => Ok(p.offset),
            };
            out.insert(p.partition_index, v);
        }
    }
    Ok(out)
}

#[derive(Serialize)]
struct ListedTopic {
    name: String,
    topic_id: String,
    internal: bool,
    partitions: usize,
    replication_factor: usize,
    error: Option<KafkaError>,
}

/// `flumen topics list`: name, partitions and replication factor of every topic (internal
/// ones too with `internal`).
pub fn topics_list(bootstrap: &str, internal: bool, as_json: bool) -> anyhow::Result<()> {
    let mut c = Client::connect(bootstrap)?;
    let md = metadata(&mut c, None)?;
    let mut topics: Vec<ListedTopic> = md
        .topics
        .iter()
        .filter(|t| internal || !t.is_internal)
        .map(|t| ListedTopic {
            name: topic_name_of(t).to_string(),
            topic_id: t.topic_id.to_string(),
            internal: t.is_internal,
            partitions: t.partitions.len(),
            replication_factor: replication_factor(t),
            error: KafkaError::of(t.error_code, None),
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    if as_json {
        print_json(&topics)?;
    } else {
        let failed = topics.iter().any(|t| t.error.is_some());
        let mut headers = vec!["NAME", "PARTITIONS", "REPLICAS"];
        if failed {
            headers.push("ERROR");
        }
        let rows: Vec<Vec<String>> = topics
            .iter()
            .map(|t| {
                let mut r = vec![
                    t.name.clone(),
                    t.partitions.to_string(),
                    t.replication_factor.to_string(),
                ];
                if failed {
                    r.push(t.error.as_ref().map_or_else(String::new, |e| e.to_string()));
                }
                r
            })
            .collect();
        print_table(&headers, &rows);
    }
    refused(
        topics
            .iter()
            .map(|t| (format!("topic {}", t.name), &t.error)),
    )
}

/// Kafka's name for a DescribeConfigs config_source.
fn config_source_name(source: i8) -> String {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG".into(),
        2 => "DYNAMIC_BROKER_CONFIG".into(),
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG".into(),
        4 => "STATIC_BROKER_CONFIG".into(),
        5 => "DEFAULT_CONFIG".into(),
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG".into(),
        7 => "CLIENT_METRICS_CONFIG".into(),
        8 => "GROUP_CONFIG".into(),
        other => format!("UNKNOWN({other})"),
    }
}

#[derive(Serialize)]
struct DescribedTopic {
    name: String,
    topic_id: String,
    internal: bool,
    replication_factor: usize,
    partitions: Vec<DescribedPartition>,
    /// The overrides, or every config with `--all-configs`.
    configs: Vec<DescribedConfig>,
    /// DescribeConfigs refused.
    configs_error: Option<KafkaError>,
}

#[derive(Serialize)]
struct DescribedPartition {
    partition: i32,
    /// -1: none
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    offline_replicas: Vec<i32>,
    /// ListOffsets earliest
    log_start_offset: Option<i64>,
    /// ListOffsets latest
    high_watermark: Option<i64>,
    error: Option<KafkaError>,
}

#[derive(Serialize)]
struct DescribedConfig {
    name: String,
    value: Option<String>,
    source: String,
    read_only: bool,
    sensitive: bool,
}

/// `flumen topics describe`: the topic, per partition its leader, replicas, ISR and offsets
/// (ListOffsets earliest and latest, asked of the partition's leader), and its config
/// overrides (every config with `all_configs`).
pub fn topics_describe(
    bootstrap: &str,
    topic: &str,
    all_configs: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut c = Client::connect(bootstrap)?;
    let (md, t) = topic_metadata(&mut c, topic)?;

    let req = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(s(topic))
            .with_configuration_keys(None),
    ]);
    let (r, _) = c.request(&req, 1, 4)?;
    let mut configs = Vec::new();
    let mut configs_error = None;
    for res in r.results {
        configs_error = KafkaError::of(res.error_code, res.error_message.as_ref());
        configs.extend(
            res.configs
                .into_iter()
                .filter(|c| all_configs || c.config_source == DYNAMIC_TOPIC_CONFIG)
                .map(|c| DescribedConfig {
                    name: c.name.to_string(),
                    value: c.value.map(|v| v.to_string()),
                    source: config_source_name(c.config_source),
                    read_only: c.read_only,
                    sensitive: c.is_sensitive,
                }),
        );
    }
    configs.sort_by(|a, b| a.name.cmp(&b.name));

    let mut brokers = Brokers::new(&md);
    let mut earliest = BTreeMap::new();
    let mut latest = BTreeMap::new();
    for (leader, parts) in by_leader(&t, |_| true) {
        if leader < 0 {
            continue;
        }
        let conn = brokers.get(leader)?;
        earliest.extend(offsets_at(conn, topic, &parts, -2)?);
        latest.extend(offsets_at(conn, topic, &parts, -1)?);
    }
    let partitions = t
        .partitions
        .iter()
        .map(|p| {
            let i = p.partition_index;
            let offset = |m: &BTreeMap<i32, Result<i64, KafkaError>>| match m.get(&i) {
                Some(r) => r.clone(),
                None if p.leader_id.0 < 0 => Err(no_leader()),
                None => Err(no_answer(p.leader_id.0)),
            };
            let (lo, hi) = (offset(&earliest), offset(&latest));
            let error = KafkaError::of(p.error_code, None)
                .or_else(|| lo.clone().err())
                .or_else(|| hi.clone().err());
            DescribedPartition {
                partition: i,
                leader: p.leader_id.0,
                leader_epoch: p.leader_epoch,
                replicas: ids(&p.replica_nodes),
                isr: ids(&p.isr_nodes),
                offline_replicas: ids(&p.offline_replicas),
                log_start_offset: lo.ok(),
                high_watermark: hi.ok(),
                error,
            }
        })
        .collect();
    let d = DescribedTopic {
        name: topic.to_string(),
        topic_id: t.topic_id.to_string(),
        internal: t.is_internal,
        replication_factor: replication_factor(&t),
        partitions,
        configs,
        configs_error,
    };
    if as_json {
        print_json(&d)?;
    } else {
        print_described(&d, all_configs);
    }
    refused(
        std::iter::once((format!("DescribeConfigs {topic}"), &d.configs_error)).chain(
            d.partitions
                .iter()
                .map(|p| (format!("{topic}-{}", p.partition), &p.error)),
        ),
    )
}

/// `describe` as rpk shows it: summary, configs, partitions.
fn print_described(d: &DescribedTopic, all_configs: bool) {
    println!("SUMMARY\n=======");
    let mut summary = vec![
        ("NAME", d.name.clone()),
        ("ID", d.topic_id.clone()),
        ("PARTITIONS", d.partitions.len().to_string()),
        ("REPLICAS", d.replication_factor.to_string()),
    ];
    if d.internal {
        summary.push(("INTERNAL", "true".into()));
    }
    for (k, v) in summary {
        println!("{k:<12}{v}");
    }
    println!("\nCONFIGS\n=======");
    if let Some(e) = &d.configs_error {
        println!("(DescribeConfigs refused: {e})");
    } else if d.configs.is_empty() && !all_configs {
        println!("(no overrides; --all-configs shows every config)");
    } else {
        let rows: Vec<Vec<String>> = d
            .configs
            .iter()
            .map(|c| {
                let value = match (&c.value, c.sensitive) {
                    (_, true) => "(sensitive)".to_string(),
                    (Some(v), _) => v.clone(),
                    (None, _) => "(null)".to_string(),
                };
                vec![c.name.clone(), value, c.source.clone()]
            })
            .collect();
        print_table(&["KEY", "VALUE", "SOURCE"], &rows);
    }
    println!("\nPARTITIONS\n==========");
    let offline = d.partitions.iter().any(|p| !p.offline_replicas.is_empty());
    let failed = d.partitions.iter().any(|p| p.error.is_some());
    let mut headers = vec![
        "PARTITION",
        "LEADER",
        "EPOCH",
        "REPLICAS",
        "ISR",
        "LOG-START-OFFSET",
        "HIGH-WATERMARK",
    ];
    if offline {
        headers.push("OFFLINE-REPLICAS");
    }
    if failed {
        headers.push("ERROR");
    }
    let rows: Vec<Vec<String>> = d
        .partitions
        .iter()
        .map(|p| {
            let mut r = vec![
                p.partition.to_string(),
                dash((p.leader >= 0).then_some(p.leader)),
                p.leader_epoch.to_string(),
                id_list(&p.replicas),
                id_list(&p.isr),
                dash(p.log_start_offset),
                dash(p.high_watermark),
            ];
            if offline {
                r.push(id_list(&p.offline_replicas));
            }
            if failed {
                r.push(p.error.as_ref().map_or_else(String::new, |e| e.to_string()));
            }
            r
        })
        .collect();
    print_table(&headers, &rows);
}

/// What `flumen topics create` asks for; -1: the broker's default.
pub struct NewTopics<'a> {
    pub names: &'a [String],
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: &'a [(String, String)],
    pub dry_run: bool,
}

#[derive(Serialize)]
struct CreatedTopic {
    name: String,
    topic_id: Option<String>,
    partitions: Option<i32>,
    replication_factor: Option<i16>,
    dry_run: bool,
    error: Option<KafkaError>,
}

/// `flumen topics create` (CreateTopics).
pub fn topics_create(bootstrap: &str, new: &NewTopics, as_json: bool) -> anyhow::Result<()> {
    let mut c = Client::connect(bootstrap)?;
    let topics = new
        .names
        .iter()
        .map(|name| {
            create_topics_request::CreatableTopic::default()
                .with_name(TopicName(s(name)))
                .with_num_partitions(new.partitions)
                .with_replication_factor(new.replication_factor)
                .with_configs(
                    new.configs
                        .iter()
                        .map(|(k, v)| {
                            create_topics_request::CreatableTopicConfig::default()
                                .with_name(s(k))
                                .with_value(Some(s(v)))
                        })
                        .collect(),
                )
        })
        .collect();
    let req = CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_validate_only(new.dry_run);
    let (r, v) = c.request(&req, 2, 7)?;
    let created: Vec<CreatedTopic> = r
        .topics
        .iter()
        .map(|t| {
            let error = KafkaError::of(t.error_code, t.error_message.as_ref());
            let ok = error.is_none();
            // v5+ says what the broker made of -1; before it, what was asked.
            let (partitions, replication_factor) = if v >= 5 {
                (Some(t.num_partitions), Some(t.replication_factor))
            } else {
                (Some(new.partitions), Some(new.replication_factor))
            };
            CreatedTopic {
                name: t.name.0.to_string(),
                topic_id: (ok && !t.topic_id.is_nil()).then(|| t.topic_id.to_string()),
                partitions: partitions.filter(|n| ok && *n >= 0),
                replication_factor: replication_factor.filter(|n| ok && *n >= 0),
                dry_run: new.dry_run,
                error,
            }
        })
        .collect();
    if as_json {
        print_json(&created)?;
    } else {
        let rows: Vec<Vec<String>> = created
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    dash(t.partitions),
                    dash(t.replication_factor),
                    status(&t.error, t.dry_run),
                ]
            })
            .collect();
        print_table(&["TOPIC", "PARTITIONS", "REPLICAS", "STATUS"], &rows);
    }
    refused(
        created
            .iter()
            .map(|t| (format!("topic {}", t.name), &t.error)),
    )
}

#[derive(Serialize)]
struct DeletedTopic {
    name: String,
    error: Option<KafkaError>,
}

/// `flumen topics delete` (DeleteTopics).
pub fn topics_delete(bootstrap: &str, names: &[String], as_json: bool) -> anyhow::Result<()> {
    let mut c = Client::connect(bootstrap)?;
    let v = c.version::<DeleteTopicsRequest>(1, 6)?;
    let mut req = DeleteTopicsRequest::default().with_timeout_ms(ADMIN_TIMEOUT_MS);
    // v6 names topics in `topics` (by name or id), older versions in `topic_names`.
    if v >= 6 {
        req = req.with_topics(
            names
                .iter()
                .map(|n| {
                    delete_topics_request::DeleteTopicState::default()
                        .with_name(Some(TopicName(s(n))))
                })
                .collect(),
        );
    } else {
        req = req.with_topic_names(names.iter().map(|n| TopicName(s(n))).collect());
    }
    let r = c.send(&req, v)?;
    let deleted: Vec<DeletedTopic> = r
        .responses
        .iter()
        .enumerate()
        .map(|(i, t)| DeletedTopic {
            name: t.name.as_ref().map_or_else(
                || names.get(i).cloned().unwrap_or_default(),
                |n| n.0.to_string(),
            ),
            error: KafkaError::of(t.error_code, t.error_message.as_ref()),
        })
        .collect();
    if as_json {
        print_json(&deleted)?;
    } else {
        let rows: Vec<Vec<String>> = deleted
            .iter()
            .map(|t| vec![t.name.clone(), status(&t.error, false)])
            .collect();
        print_table(&["TOPIC", "STATUS"], &rows);
    }
    refused(
        deleted
            .iter()
            .map(|t| (format!("topic {}", t.name), &t.error)),
    )
}

#[derive(Serialize)]
struct AlteredTopic<'a> {
    name: &'a str,
    set: BTreeMap<&'a str, &'a str>,
    deleted: &'a [String],
    dry_run: bool,
    error: Option<KafkaError>,
}

/// `flumen topics alter`: sets and removes config overrides (IncrementalAlterConfigs; a
/// removed override falls back to the broker's value).
pub fn topics_alter(
    bootstrap: &str,
    topic: &str,
    set: &[(String, String)],
    delete: &[String],
    dry_run: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    if set.is_empty() && delete.is_empty() {
        bail!("nothing to change: give --set key=value and/or --delete key");
    }
    const OP_SET: i8 = 0;
    const OP_DELETE: i8 = 1;
    let mut c = Client::connect(bootstrap)?;
    let configs = set
        .iter()
        .map(|(k, v)| (k, OP_SET, Some(s(v))))
        .chain(delete.iter().map(|k| (k, OP_DELETE, None)))
        .map(|(k, op, v)| {
            incremental_alter_configs_request::AlterableConfig::default()
                .with_name(s(k))
                .with_config_operation(op)
                .with_value(v)
        })
        .collect();
    let req = IncrementalAlterConfigsRequest::default()
        .with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(s(topic))
                .with_configs(configs),
        ])
        .with_validate_only(dry_run);
    let (r, _) = c.request(&req, 0, 1)?;
    let res = r
        .responses
        .first()
        .ok_or_else(|| anyhow!("the broker answered IncrementalAlterConfigs for no topic"))?;
    let altered = AlteredTopic {
        name: topic,
        set: set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        deleted: delete,
        dry_run,
        error: KafkaError::of(res.error_code, res.error_message.as_ref()),
    };
    if as_json {
        print_json(&altered)?;
    } else {
        let row = vec![topic.to_string(), status(&altered.error, dry_run)];
        print_table(&["TOPIC", "STATUS"], &[row]);
    }
    refused([(format!("topic {topic}"), &altered.error)])
}

#[derive(Serialize)]
struct GrownTopic<'a> {
    name: &'a str,
    partitions: i32,
    dry_run: bool,
    error: Option<KafkaError>,
}

/// `flumen topics add-partitions`: grows the topic to `count` partitions (CreatePartitions).
pub fn topics_add_partitions(
    bootstrap: &str,
    topic: &str,
    count: i32,
    dry_run: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut c = Client::connect(bootstrap)?;
    let req = CreatePartitionsRequest::default()
        .with_topics(vec![
            create_partitions_request::CreatePartitionsTopic::default()
                .with_name(TopicName(s(topic)))
                .with_count(count)
                .with_assignments(None),
        ])
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_validate_only(dry_run);
    let (r, _) = c.request(&req, 0, 3)?;
    let res = r
        .results
        .first()
        .ok_or_else(|| anyhow!("the broker answered CreatePartitions for no topic"))?;
    let grown = GrownTopic {
        name: topic,
        partitions: count,
        dry_run,
        error: KafkaError::of(res.error_code, res.error_message.as_ref()),
    };
    if as_json {
        print_json(&grown)?;
    } else {
        let row = vec![
            topic.to_string(),
            count.to_string(),
            status(&grown.error, dry_run),
        ];
        print_table(&["TOPIC", "PARTITIONS", "STATUS"], &[row]);
    }
    refused([(format!("topic {topic}"), &grown.error)])
}

#[derive(Serialize)]
struct TrimmedPartition<'a> {
    topic: &'a str,
    partition: i32,
    low_watermark: Option<i64>,
    error: Option<KafkaError>,
}

/// `flumen topics delete-records`: removes the records of `partitions` below `before` (-1:
/// all, up to the high watermark) by moving their log start (DeleteRecords, sent to each
/// partition's leader); prints the new low watermarks.
pub fn topics_delete_records(
    bootstrap: &str,
    topic: &str,
    partitions: &[i32],
    before: i64,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut c = Client::connect(bootstrap)?;
    let (md, t) = topic_metadata(&mut c, topic)?;
    if let Some(p) = partitions
        .iter()
        .find(|p| !t.partitions.iter().any(|m| m.partition_index == **p))
    {
        bail!(
            "topic {topic} has no partition {p} (it has {})",
            t.partitions.len()
        );
    }
    let mut results: BTreeMap<i32, Result<i64, KafkaError>> = BTreeMap::new();
    let mut brokers = Brokers::new(&md);
    for (leader, parts) in by_leader(&t, |p| partitions.contains(&p)) {
        if leader < 0 {
            results.extend(parts.iter().map(|p| (*p, Err(no_leader()))));
            continue;
        }
        let req = DeleteRecordsRequest::default()
            .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(
                    parts
                        .iter()
                        .map(|p| {
                            delete_records_request::DeleteRecordsPartition::default()
                                .with_partition_index(*p)
                                .with_offset(before)
                        })
                        .collect(),
                )])
            .with_timeout_ms(ADMIN_TIMEOUT_MS);
        let (r, _) = brokers.get(leader)?.request(&req, 0, 2)?;
        for rt in r.topics.iter().filter(|rt| rt.name.0.as_str() == topic) {
            for p in &rt.partitions {
                let v = match KafkaError::of(p.error_code, None) {
                    // DeleteRecords carries no message: say what Kafka means by this one.
                    Some(mut e) if e.code == 1 => {
                        e.message = Some(format!("--before {before} is above the high watermark"));
                        Err(e)
                    }
                    Some(e) => Err(e),
                    None => Ok(p.low_watermark),
                };
                results.insert(p.partition_index, v);
            }
        }
        for p in parts {
            results.entry(p).or_insert_with(|| Err(no_answer(leader)));
        }
    }
    let trimmed: Vec<TrimmedPartition> = results
        .into_iter()
        .map(|(partition, r)| TrimmedPartition {
            topic,
            partition,
            low_watermark: r.as_ref().ok().copied(),
            error: r.err(),
        })
        .collect();
    if as_json {
        print_json(&trimmed)?;
    } else {
        let rows: Vec<Vec<String>> = trimmed
            .iter()
            .map(|p| {
                vec![
                    topic.to_string(),
                    p.partition.to_string(),
                    dash(p.low_watermark),
                    status(&p.error, false),
                ]
            })
            .collect();
        print_table(&["TOPIC", "PARTITION", "LOW-WATERMARK", "STATUS"], &rows);
    }
    refused(
        trimmed
            .iter()
            .map(|p| (format!("{topic}-{}", p.partition), &p.error)),
    )
}

#[derive(Serialize)]
struct UserResult {
    user: String,
    mechanism: Option<&'static str>,
    error: Option<KafkaError>,
}

/// `flumen users create`: a SCRAM credential for `user` (AlterUserScramCredentials). The
/// password is salted and hashed here; only the salted password travels (KIP-554).
pub fn users_create(
    bootstrap: &str,
    user: &str,
    password: &str,
    mechanism: crate::security::scram::Mechanism,
    iterations: u32,
    as_json: bool,
) -> anyhow::Result<()> {
    use crate::security::scram;
    let salt = scram::random_bytes(32);
    let salted = scram::salted_password(mechanism, password, &salt, iterations);
    let up = alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
        .with_name(s(user))
        .with_mechanism(mechanism.code())
        .with_iterations(iterations as i32)
        .with_salt(Bytes::from(salt))
        .with_salted_password(Bytes::from(salted));
    let req = AlterUserScramCredentialsRequest::default().with_upsertions(vec![up]);
    alter_users(bootstrap, req, Some(mechanism.name()), as_json)
}

/// `flumen users delete`: removes `user`'s credential for `mechanism`, or all of them.
pub fn users_delete(
    bootstrap: &str,
    user: &str,
    mechanism: Option<crate::security::scram::Mechanism>,
    as_json: bool,
) -> anyhow::Result<()> {
    use crate::security::scram::Mechanism;
    let mechanisms: Vec<Mechanism> = match mechanism {
        Some(m) => vec![m],
        None => {
            let mut c = Client::connect(bootstrap)?;
            let v = c.version::<DescribeUserScramCredentialsRequest>(0, 0)?;
            let req = DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
                describe_user_scram_credentials_request::UserName::default().with_name(s(user)),
            ]));
            let r = c.send(&req, v)?;
            let Some(u) = r.results.first() else {
                bail!("user {user}: the broker answered nothing");
            };
            if let Some(e) = KafkaError::of(u.error_code, u.error_message.as_ref()) {
                bail!("user {user}: {e}");
            }
            u.credential_infos
                .iter()
                .filter_map(|c| Mechanism::from_code(c.mechanism))
                .collect()
        }
    };
    let deletions = mechanisms
        .iter()
        .map(|m| {
            alter_user_scram_credentials_request::ScramCredentialDeletion::default()
                .with_name(s(user))
                .with_mechanism(m.code())
        })
        .collect();
    let req = AlterUserScramCredentialsRequest::default().with_deletions(deletions);
    let shown = (mechanisms.len() == 1).then(|| mechanisms[0].name());
    alter_users(bootstrap, req, shown, as_json)
}

fn alter_users(
    bootstrap: &str,
    req: AlterUserScramCredentialsRequest,
    mechanism: Option<&'static str>,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut c = Client::connect(bootstrap)?;
    let v = c.version::<AlterUserScramCredentialsRequest>(0, 0)?;
    let r = c.send(&req, v)?;
    let results: Vec<UserResult> = r
        .results
        .iter()
        .map(|u| UserResult {
            user: u.user.to_string(),
            mechanism,
            error: KafkaError::of(u.error_code, u.error_message.as_ref()),
        })
        .collect();
    if as_json {
        print_json(&results)?;
    } else {
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|u| {
                vec![
                    u.user.clone(),
                    u.mechanism.unwrap_or("-").to_string(),
                    status(&u.error, false),
                ]
            })
            .collect();
        print_table(&["USER", "MECHANISM", "STATUS"], &rows);
    }
    refused(
        results
            .iter()
            .map(|u| (format!("user {}", u.user), &u.error)),
    )
}

#[derive(Serialize)]
struct UserCredentials {
    user: String,
    credentials: Vec<(&'static str, i32)>,
}

/// `flumen users list`: every SCRAM user with its mechanisms and iterations
/// (DescribeUserScramCredentials; never a password or a hash).
pub fn users_list(bootstrap: &str, as_json: bool) -> anyhow::Result<()> {
    use crate::security::scram::Mechanism;
    let mut c = Client::connect(bootstrap)?;
    let v = c.version::<DescribeUserScramCredentialsRequest>(0, 0)?;
    let r = c.send(&DescribeUserScramCredentialsRequest::default(), v)?;
    if let Some(e) = KafkaError::of(r.error_code, r.error_message.as_ref()) {
        bail!("listing users: {e}");
    }
    let users: Vec<UserCredentials> = r
        .results
        .iter()
        .map(|u| UserCredentials {
            user: u.user.to_string(),
            credentials: u
                .credential_infos
                .iter()
                .map(|c| {
                    let name = Mechanism::from_code(c.mechanism).map_or("UNKNOWN", |m| m.name());
                    (name, c.iterations)
                })
                .collect(),
        })
        .collect();
    if as_json {
        return print_json(&users);
    }
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            let creds: Vec<String> = u
                .credentials
                .iter()
                .map(|(m, i)| format!("{m} ({i} iterations)"))
                .collect();
            vec![u.user.clone(), creds.join(", ")]
        })
        .collect();
    print_table(&["USER", "CREDENTIALS"], &rows);
    Ok(())
}

/// What `flumen acls` works on: a binding to add, or a filter (None: any).
#[derive(Debug, Clone, Default)]
pub struct AclSpec {
    pub resource: Option<(crate::security::acl::ResourceType, String)>,
    pub prefixed: bool,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operations: Vec<crate::security::acl::Operation>,
    pub permission: Option<crate::security::acl::Permission>,
}

#[derive(Serialize)]
struct AclRow {
    resource_type: &'static str,
    name: String,
    pattern: &'static str,
    principal: String,
    host: String,
    operation: &'static str,
    permission: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<KafkaError>,
}

impl AclRow {
    fn of(b: &crate::security::acl::AclBinding, error: Option<KafkaError>) -> AclRow {
        AclRow {
            resource_type: b.resource_type.name(),
            name: b.name.clone(),
            pattern: b.pattern.name(),
            principal: b.principal.clone(),
            host: b.host.clone(),
            operation: b.operation.name(),
            permission: b.permission.name(),
            error,
        }
    }

    fn cells(&self) -> Vec<String> {
        let mut v = vec![
            self.resource_type.to_string(),
            self.name.clone(),
            self.pattern.to_string(),
            self.principal.clone(),
            self.host.clone(),
            self.operation.to_string(),
            self.permission.to_string(),
        ];
        if let Some(e) = &self.error {
            v.push(e.to_string());
        }
        v
    }
}

fn print_acls(rows: &[AclRow], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return print_json(rows);
    }
    let mut headers = vec![
        "TYPE",
        "NAME",
        "PATTERN",
        "PRINCIPAL",
        "HOST",
        "OPERATION",
        "PERMISSION",
    ];
    if rows.iter().any(|r| r.error.is_some()) {
        headers.push("STATUS");
    }
    let cells: Vec<Vec<String>> = rows.iter().map(AclRow::cells).collect();
    print_table(&headers, &cells);
    Ok(())
}

/// The wire's filter of a spec: unset fields are ANY (or null).
fn acl_filter_codes(spec: &AclSpec, op: Option<crate::security::acl::Operation>) -> AclFilterCodes {
    const ANY: i8 = 1;
    const LITERAL: i8 = 3;
    const PREFIXED: i8 = 4;
    AclFilterCodes {
        resource_type: spec.resource.as_ref().map_or(ANY, |r| r.0.code()),
        name: spec.resource.as_ref().map(|r| r.1.clone()),
        pattern: match (&spec.resource, spec.prefixed) {
            (_, true) => PREFIXED,
            (Some(_), false) => LITERAL,
            (None, false) => ANY,
        },
        principal: spec.principal.clone(),
        host: spec.host.clone(),
        operation: op.map_or(ANY, |o| o.code()),
        permission: spec.permission.map_or(ANY, |p| p.code()),
    }
}

struct AclFilterCodes {
    resource_type: i8,
    name: Option<String>,
    pattern: i8,
    principal: Option<String>,
    host: Option<String>,
    operation: i8,
    permission: i8,
}

/// `flumen acls add`: one ACL per operation (CreateAcls).
pub fn acls_add(bootstrap: &str, spec: &AclSpec, as_json: bool) -> anyhow::Result<()> {
    use crate::security::acl::{AclBinding, PatternType, Permission};
    let Some((rtype, name)) = spec.resource.clone() else {
        bail!("name a resource: --topic, --group, --transactional-id or --cluster");
    };
    let Some(principal) = spec.principal.clone() else {
        bail!("name a principal (--principal User:alice)");
    };
    if spec.operations.is_empty() {
        bail!("name at least one --operation");
    }
    let bindings: Vec<AclBinding> = spec
        .operations
        .iter()
        .map(|op| AclBinding {
            resource_type: rtype,
            pattern: if spec.prefixed {
                PatternType::Prefixed
            } else {
                PatternType::Literal
            },
            name: name.clone(),
            principal: principal.clone(),
            host: spec.host.clone().unwrap_or_else(|| "*".into()),
            operation: *op,
            permission: spec.permission.unwrap_or(Permission::Allow),
        })
        .collect();
    let creations = bindings
        .iter()
        .map(|b| {
            create_acls_request::AclCreation::default()
                .with_resource_type(b.resource_type.code())
                .with_resource_name(s(&b.name))
                .with_resource_pattern_type(b.pattern.code())
                .with_principal(s(&b.principal))
                .with_host(s(&b.host))
                .with_operation(b.operation.code())
                .with_permission_type(b.permission.code())
        })
        .collect();
    let mut c = Client::connect(bootstrap)?;
    let (r, _) = c.request(
        &CreateAclsRequest::default().with_creations(creations),
        1,
        3,
    )?;
    let rows: Vec<AclRow> = bindings
        .iter()
        .zip(&r.results)
        .map(|(b, res)| {
            AclRow::of(
                b,
                KafkaError::of(res.error_code, res.error_message.as_ref()),
            )
        })
        .collect();
    print_acls(&rows, as_json)?;
    refused(
        rows.iter()
            .map(|r| (format!("{} {}", r.operation, r.name), &r.error)),
    )
}

/// `flumen acls list`: the ACLs the filter matches (DescribeAcls; a named resource matches
/// the ACLs that apply to it, `*` and prefixes included).
pub fn acls_list(bootstrap: &str, spec: &AclSpec, as_json: bool) -> anyhow::Result<()> {
    if spec.operations.len() > 1 {
        bail!("list takes at most one --operation");
    }
    let f = acl_filter_codes(spec, spec.operations.first().copied());
    let req = DescribeAclsRequest::default()
        .with_resource_type_filter(f.resource_type)
        .with_resource_name_filter(f.name.as_deref().map(s))
        // A named resource without --prefixed: every ACL that applies to it (MATCH).
        .with_pattern_type_filter(if spec.resource.is_some() && !spec.prefixed {
            2
        } else {
            f.pattern
        })
        .with_principal_filter(f.principal.as_deref().map(s))
        .with_host_filter(f.host.as_deref().map(s))
        .with_operation(f.operation)
        .with_permission_type(f.permission);
    let mut c = Client::connect(bootstrap)?;
    let (r, _) = c.request(&req, 1, 3)?;
    if let Some(e) = KafkaError::of(r.error_code, r.error_message.as_ref()) {
        bail!("listing ACLs: {e}");
    }
    let mut rows = Vec::new();
    for res in &r.resources {
        for a in &res.acls {
            let codes = (
                res.resource_type,
                res.pattern_type,
                a.operation,
                a.permission_type,
            );
            let texts = (
                res.resource_name.as_str(),
                a.principal.as_str(),
                a.host.as_str(),
            );
            if let Some(b) = binding_of(codes, texts) {
                rows.push(AclRow::of(&b, None));
            }
        }
    }
    print_acls(&rows, as_json)
}

/// `flumen acls remove`: deletes the ACLs the filter matches (DeleteAcls; one filter per
/// operation named, or any operation).
pub fn acls_remove(bootstrap: &str, spec: &AclSpec, as_json: bool) -> anyhow::Result<()> {
    use crate::security::acl::Operation;
    let ops: Vec<Option<Operation>> = if spec.operations.is_empty() {
        vec![None]
    } else {
        spec.operations.iter().copied().map(Some).collect()
    };
    let filters = ops
        .into_iter()
        .map(|op| {
            let f = acl_filter_codes(spec, op);
            delete_acls_request::DeleteAclsFilter::default()
                .with_resource_type_filter(f.resource_type)
                .with_resource_name_filter(f.name.as_deref().map(s))
                .with_pattern_type_filter(f.pattern)
                .with_principal_filter(f.principal.as_deref().map(s))
                .with_host_filter(f.host.as_deref().map(s))
                .with_operation(f.operation)
                .with_permission_type(f.permission)
        })
        .collect();
    let mut c = Client::connect(bootstrap)?;
    let (r, _) = c.request(&DeleteAclsRequest::default().with_filters(filters), 1, 3)?;
    let mut rows = Vec::new();
    for fr in &r.filter_results {
        if let Some(e) = KafkaError::of(fr.error_code, fr.error_message.as_ref()) {
            bail!("removing ACLs: {e}");
        }
        for m in &fr.matching_acls {
            let codes = (
                m.resource_type,
                m.pattern_type,
                m.operation,
                m.permission_type,
            );
            let texts = (
                m.resource_name.as_str(),
                m.principal.as_str(),
                m.host.as_str(),
            );
            if let Some(b) = binding_of(codes, texts) {
                rows.push(AclRow::of(&b, None));
            }
        }
    }
    if !as_json && rows.is_empty() {
        println!("no ACL matched");
        return Ok(());
    }
    print_acls(&rows, as_json)
}

/// A binding from a response's codes (resource type, pattern, operation, permission) and
/// texts (name, principal, host); None for codes this client does not know.
fn binding_of(
    codes: (i8, i8, i8, i8),
    texts: (&str, &str, &str),
) -> Option<crate::security::acl::AclBinding> {
    use crate::security::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
    Some(AclBinding {
        resource_type: ResourceType::from_code(codes.0)?,
        pattern: PatternType::from_code(codes.1)?,
        name: texts.0.to_string(),
        principal: texts.1.to_string(),
        host: texts.2.to_string(),
        operation: Operation::from_code(codes.2)?,
        permission: Permission::from_code(codes.3)?,
    })
}

/// A quota entity for `flumen quotas`: `--user` and/or `--client-id`, `<default>` naming the
/// default entity.
fn quota_entity(
    user: Option<&str>,
    client_id: Option<&str>,
) -> Vec<(&'static str, Option<String>)> {
    use crate::security::quota::{CLIENT_ID, USER};
    let named = |v: &str| (v != "<default>").then(|| v.to_string());
    let mut out = Vec::new();
    if let Some(u) = user {
        out.push((USER, named(u)));
    }
    if let Some(c) = client_id {
        out.push((CLIENT_ID, named(c)));
    }
    out
}

/// `flumen quotas set` / `remove`: AlterClientQuotas for one entity; `values` are (key,
/// Some(value)) to set or (key, None) to remove. No keys to remove: every one it has.
pub fn quotas_alter(
    bootstrap: &str,
    user: Option<&str>,
    client_id: Option<&str>,
    values: Vec<(String, Option<f64>)>,
) -> anyhow::Result<()> {
    use alter_client_quotas_request::{EntityData, EntryData, OpData};
    let entity = quota_entity(user, client_id);
    if entity.is_empty() {
        bail!("name --user, --client-id or both (<default> for the default)");
    }
    let values = if values.is_empty() {
        crate::security::quota::KEYS
            .iter()
            .map(|k| (k.to_string(), None))
            .collect()
    } else {
        values
    };
    let entry = EntryData::default()
        .with_entity(
            entity
                .iter()
                .map(|(k, n)| {
                    EntityData::default()
                        .with_entity_type(s(k))
                        .with_entity_name(n.as_deref().map(s))
                })
                .collect(),
        )
        .with_ops(
            values
                .iter()
                .map(|(k, v)| {
                    OpData::default()
                        .with_key(s(k))
                        .with_value(v.unwrap_or(0.0))
                        .with_remove(v.is_none())
                })
                .collect(),
        );
    let mut c = Client::connect(bootstrap)?;
    let req = AlterClientQuotasRequest::default().with_entries(vec![entry]);
    let (r, _) = c.request(&req, 0, 1)?;
    for e in &r.entries {
        if let Some(e) = KafkaError::of(e.error_code, e.error_message.as_ref()) {
            bail!("altering quotas: {e}");
        }
    }
    let shown: Vec<String> = values
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => format!("{k} removed"),
        })
        .collect();
    println!("{}: {}", entity_text(&entity), shown.join(", "));
    Ok(())
}

fn entity_text(entity: &[(&str, Option<String>)]) -> String {
    entity
        .iter()
        .map(|(k, n)| format!("{k}={}", n.as_deref().unwrap_or("<default>")))
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(Serialize)]
struct QuotaRow {
    entity: BTreeMap<String, Option<String>>,
    values: BTreeMap<String, f64>,
}

/// `flumen quotas list`: the quotas set (DescribeClientQuotas), of one user or client id
/// (`<default>` for the default) or all.
pub fn quotas_list(
    bootstrap: &str,
    user: Option<&str>,
    client_id: Option<&str>,
    as_json: bool,
) -> anyhow::Result<()> {
    use describe_client_quotas_request::ComponentData;
    let components = quota_entity(user, client_id)
        .into_iter()
        .map(|(k, n)| {
            ComponentData::default()
                .with_entity_type(s(k))
                .with_match_type(if n.is_some() { 0 } else { 1 })
                .with_match(n.as_deref().map(s))
        })
        .collect();
    let mut c = Client::connect(bootstrap)?;
    let req = DescribeClientQuotasRequest::default().with_components(components);
    let (r, _) = c.request(&req, 0, 1)?;
    if let Some(e) = KafkaError::of(r.error_code, r.error_message.as_ref()) {
        bail!("listing quotas: {e}");
    }
    let rows: Vec<QuotaRow> = r
        .entries
        .unwrap_or_default()
        .iter()
        .map(|e| QuotaRow {
            entity: e
                .entity
                .iter()
                .map(|p| {
                    (
                        p.entity_type.to_string(),
                        p.entity_name.as_ref().map(|n| n.to_string()),
                    )
                })
                .collect(),
            values: e
                .values
                .iter()
                .map(|v| (v.key.to_string(), v.value))
                .collect(),
        })
        .collect();
    if as_json {
        return print_json(&rows);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let entity: Vec<(&str, Option<String>)> = r
                .entity
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            let values: Vec<String> = r.values.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![entity_text(&entity), values.join(", ")]
        })
        .collect();
    print_table(&["ENTITY", "QUOTAS"], &cells);
    Ok(())
}
