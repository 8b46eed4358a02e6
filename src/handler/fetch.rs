//! Fetch: reads on the owning shards, long poll (min_bytes / max_wait_ms) by asking the owners
//! to report the first new data, and a response whose file-backed records are sent to the
//! socket (sendfile or copy). Fetch sessions (KIP-227) are not kept: session_id 0 tells
//! clients every request is a full one, which the protocol allows.

use super::{decode, Ctx};
use crate::broker::Broker;
use crate::partition_manager::{FetchOut, FetchPart, PartitionOffset, SendChunk};
use crate::protocol::errors::ErrorCode;
use crate::protocol::fetch_encode::{self, PartitionData, TopicData};
use crate::protocol::{Piece, Response};
use crate::security::acl::{Operation, ResourceType};
use crate::security::quota;
use crate::util::{with_timeout, AnyOf};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::FetchRequest;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Longest long poll honoured; a client asking more gets an empty answer after this.
const MAX_WAIT_CAP_MS: u64 = 300_000;
/// Most partitions one fetch may name.
const MAX_PARTITIONS_PER_REQUEST: usize = 100_000;

struct Slot {
    topic: usize,
    partition: i32,
    offset: i64,
    /// The fetcher's own log start (a follower's: the leader's DeleteRecords waits for it).
    log_start: i64,
    current_leader_epoch: i32,
    owner: Result<usize, ErrorCode>,
    out: Option<FetchOut>,
}

pub async fn handle(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: FetchRequest = decode(ctx, body)?;
    let meta = broker.meta();
    let n: usize = req.topics.iter().map(|t| t.partitions.len()).sum();
    if n > MAX_PARTITIONS_PER_REQUEST {
        return Err(Response::Close(format!("fetch names {n} partitions")));
    }
    if req.max_bytes < 0 {
        let b = fetch_encode::encode_empty(
            ctx.version,
            ctx.correlation_id,
            0,
            ErrorCode::INVALID_FETCH_SIZE.0,
        );
        return Ok(Response::Frame(vec![Piece::Bytes(b)]));
    }
    // A follower broker's fetch (Kafka's replica id; -1 for consumers) needs CLUSTER_ACTION.
    if req.replica_id.0 >= 0 && !ctx.allowed_cluster(broker, Operation::ClusterAction) {
        let b = fetch_encode::encode_empty(
            ctx.version,
            ctx.correlation_id,
            0,
            ErrorCode::CLUSTER_AUTHORIZATION_FAILED.0,
        );
        return Ok(Response::Frame(vec![Piece::Bytes(b)]));
    }
    // A consumer that owes its consumer_byte_rate gets an empty answer with the throttle
    // (Kafka's), and reads nothing.
    if req.replica_id.0 < 0 && !ctx.quota_owed(broker, quota::CONSUMER_BYTE_RATE).is_zero() {
        let b = fetch_encode::encode_empty(ctx.version, ctx.correlation_id, ctx.throttle_ms(), 0);
        return Ok(Response::Frame(vec![Piece::Bytes(b)]));
    }
    let topic_names: Vec<String> = req.topics.iter().map(|t| t.topic.0.to_string()).collect();
    // A consumer needs READ on each topic; a topic it may not read answers
    // TOPIC_AUTHORIZATION_FAILED and no data.
    let readable: Vec<bool> = topic_names
        .iter()
        .map(|t| {
            req.replica_id.0 >= 0 || ctx.allowed(broker, Operation::Read, ResourceType::Topic, t)
        })
        .collect();
    let mut slots = Vec::with_capacity(n);
    let mut part_max = Vec::with_capacity(n);
    for (ti, t) in req.topics.iter().enumerate() {
        for p in &t.partitions {
            slots.push(Slot {
                topic: ti,
                partition: p.partition,
                offset: p.fetch_offset,
                log_start: p.log_start_offset,
                current_leader_epoch: p.current_leader_epoch,
                owner: if readable[ti] {
                    meta.route(&topic_names[ti], p.partition)
                } else {
                    Err(ErrorCode::TOPIC_AUTHORIZATION_FAILED)
                },
                out: None,
            });
            part_max.push(p.partition_max_bytes.max(0) as usize);
        }
    }
    let max_bytes = req.max_bytes as usize;
    // isolation_level 1: READ_COMMITTED.
    let committed = req.isolation_level == 1;
    // A follower broker's fetch (Kafka's replica id; -1 for consumers).
    let replica_id = if req.replica_id.0 >= 0 {
        req.replica_id.0
    } else {
        -1
    };
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_wait = Duration::from_millis((req.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP_MS));
    let deadline = Instant::now() + max_wait;

    loop {
        read_round(
            broker,
            &topic_names,
            &mut slots,
            &part_max,
            max_bytes,
            (committed, replica_id),
        )
        .await;
        let total: usize = slots
            .iter()
            .filter_map(|s| s.out.as_ref())
            .map(|o| o.bytes)
            .sum();
        let any_error = slots
            .iter()
            .any(|s| s.out.as_ref().is_some_and(|o| o.error != ErrorCode::NONE));
        if total >= min_bytes.max(1) || any_error || Instant::now() >= deadline {
            break;
        }
        wait_for_data(broker, &topic_names, &slots, deadline, replica_id >= 0).await;
    }

    // Kafka's response limit: whole partitions in order, the first non-empty one always.
    let mut used = 0usize;
    for s in slots.iter_mut() {
        if let Some(o) = s.out.as_mut() {
            if o.bytes > 0 && used > 0 && used + o.bytes > max_bytes {
                o.chunks.clear();
                o.bytes = 0;
            }
            used += o.bytes;
        }
    }

    let mut topics: Vec<TopicData> = topic_names
        .iter()
        .map(|name| TopicData {
            name: name.clone(),
            partitions: Vec::new(),
        })
        .collect();
    for s in slots {
        let o = s.out.unwrap_or(FetchOut::error(
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            -1,
            -1,
        ));
        let mut records = Vec::with_capacity(o.chunks.len());
        let mut error = o.error;
        for c in o.chunks {
            match c {
                SendChunk::Mem(b) => records.push(Piece::Bytes(b)),
                SendChunk::File {
                    path,
                    inode,
                    pos,
                    len,
                    written,
                } => match broker.partitions.file_handle(&path, inode).await {
                    Ok(file) => records.push(Piece::File {
                        file,
                        pos,
                        len,
                        written,
                    }),
                    Err(e) => {
                        tracing::warn!("opening {} for fetch: {e}", path.display());
                        error = ErrorCode::KAFKA_STORAGE_ERROR;
                        records.clear();
                        break;
                    }
                },
            }
        }
        topics[s.topic].partitions.push(PartitionData {
            partition: s.partition,
            error_code: error.0,
            high_watermark: o.high_watermark,
            last_stable_offset: o.last_stable_offset,
            aborted: o.aborted,
            log_start_offset: o.log_start_offset,
            records,
        });
    }
    // A consumer's bytes count against its consumer_byte_rate (a follower's do not).
    if replica_id < 0 {
        ctx.quota_record(broker, quota::CONSUMER_BYTE_RATE, used as f64);
    }
    Ok(Response::Frame(fetch_encode::encode(
        ctx.version,
        ctx.correlation_id,
        ctx.throttle_ms(),
        0,
        0,
        topics,
    )))
}

/// One read of every partition on its owner (one call per owning shard).
async fn read_round(
    broker: &Rc<Broker>,
    names: &[String],
    slots: &mut [Slot],
    part_max: &[usize],
    max_bytes: usize,
    (committed, replica_id): (bool, i32),
) {
    let mut by_owner: BTreeMap<usize, (Vec<usize>, Vec<FetchPart>)> = BTreeMap::new();
    for (i, s) in slots.iter_mut().enumerate() {
        match s.owner {
            Err(code) => s.out = Some(FetchOut::error(code, -1, -1)),
            Ok(o) => {
                let e = by_owner.entry(o).or_default();
                e.0.push(i);
                e.1.push(FetchPart {
                    topic: names[s.topic].clone(),
                    partition: s.partition,
                    offset: s.offset,
                    max_bytes: part_max[i],
                    committed,
                    current_leader_epoch: s.current_leader_epoch,
                    replica_id,
                    log_start: s.log_start,
                });
            }
        }
    }
    let mut calls = Vec::new();
    for (owner, (idx, parts)) in by_owner {
        let b = broker.clone();
        calls.push((
            idx,
            glommio::spawn_local(
                async move { b.partitions.fetch_on(owner, parts, max_bytes).await },
            ),
        ));
    }
    for (idx, task) in calls {
        for (i, o) in idx.into_iter().zip(task.await) {
            slots[i].out = Some(o);
        }
    }
}

/// Waits until any owner reports new data for one of the partitions, or the deadline.
async fn wait_for_data(
    broker: &Rc<Broker>,
    names: &[String],
    slots: &[Slot],
    deadline: Instant,
    follower: bool,
) {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let mut by_owner: BTreeMap<usize, Vec<PartitionOffset>> = BTreeMap::new();
    for s in slots {
        if let Ok(o) = s.owner {
            // Wake on data past what this round already saw, not past the fetch offset (a
            // follower sees everything durable, so its fetch offset is what it saw).
            let seen = if follower {
                s.offset
            } else {
                s.out
                    .as_ref()
                    .map_or(s.offset, |o| o.high_watermark.max(s.offset))
            };
            by_owner.entry(o).or_default().push(PartitionOffset {
                topic: names[s.topic].clone(),
                partition: s.partition,
                offset: seen,
                follower,
            });
        }
    }
    if by_owner.is_empty() {
        glommio::timer::sleep(remaining).await;
        return;
    }
    let max_wait_ms = remaining.as_millis() as u64;
    let tasks: Vec<_> = by_owner
        .into_iter()
        .map(|(owner, parts)| {
            let b = broker.clone();
            glommio::spawn_local(async move {
                b.partitions.watch_on(owner, parts, max_wait_ms).await;
            })
        })
        .collect();
    let any = AnyOf(
        tasks
            .into_iter()
            .map(|t| {
                Box::pin(async move {
                    t.await;
                }) as _
            })
            .collect(),
    );
    with_timeout(remaining + Duration::from_millis(5), any).await;
}
