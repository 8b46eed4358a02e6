//! Produce: validate each partition's record batches on the connection's shard (CRC, magic,
//! framing), send each owning shard its partitions in one message, answer in request order.

use super::{auto_create, decode, Ctx};
use crate::broker::Broker;
use crate::partition_manager::{self as pm, ProduceOut, ProducePart};
use crate::protocol::batch;
use crate::protocol::errors::{ErrorCode, KafkaError};
use crate::protocol::Piece;
use crate::protocol::Response;
use crate::security::acl::{Operation, ResourceType};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::ProduceRequest;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::rc::Rc;

/// Most partitions one produce request may name; bounds the work a single frame can ask for.
const MAX_PARTITIONS_PER_REQUEST: usize = 100_000;

/// Oldest Produce version whose records are v2 record batches, the only format Flumen stores.
const MIN_STORED_PRODUCE_VERSION: i16 = 3;

pub async fn handle(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    if ctx.version < MIN_STORED_PRODUCE_VERSION {
        return legacy_unsupported(ctx, body);
    }
    let req: ProduceRequest = decode(ctx, body)?;
    let acks = req.acks;
    let n_parts: usize = req.topic_data.iter().map(|t| t.partition_data.len()).sum();
    if n_parts > MAX_PARTITIONS_PER_REQUEST {
        return Err(Response::Close(format!(
            "produce names {n_parts} partitions"
        )));
    }
    // ACLs: WRITE on the transactional id, if any, then on each topic (Kafka's checks).
    let txn_refused = req.transactional_id.as_ref().is_some_and(|id| {
        !ctx.allowed(
            broker,
            Operation::Write,
            ResourceType::TransactionalId,
            id.as_str(),
        )
    });
    let writable = |name: &str| ctx.allowed(broker, Operation::Write, ResourceType::Topic, name);
    let names: Vec<String> = req
        .topic_data
        .iter()
        .map(|t| t.name.0.to_string())
        .filter(|n| !txn_refused && writable(n))
        .collect();
    let missing = auto_create(broker, ctx, &names).await;
    let meta = broker.meta();

    // Slot per partition in request order; each is either an immediate error or a routed part.
    let mut slots: Vec<Option<ProduceOut>> = Vec::with_capacity(n_parts);
    let mut by_shard: BTreeMap<usize, (Vec<usize>, Vec<ProducePart>)> = BTreeMap::new();
    // KIP-467: the records that made a slot's batches be refused.
    let mut record_errors: BTreeMap<usize, Vec<(i32, String)>> = BTreeMap::new();
    let bad = ProduceOut::failed;
    for topic in &req.topic_data {
        let name = topic.name.0.to_string();
        for p in &topic.partition_data {
            let slot = slots.len();
            if ![0, 1, -1].contains(&acks) {
                slots.push(Some(bad(
                    ErrorCode::INVALID_REQUIRED_ACKS,
                    format!("acks={acks}"),
                )));
                continue;
            }
            if txn_refused {
                slots.push(Some(bad(
                    ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                    "not authorized to write as this transactional id".into(),
                )));
                continue;
            }
            if ctx.authorizing() && !writable(&name) {
                slots.push(Some(bad(
                    ErrorCode::TOPIC_AUTHORIZATION_FAILED,
                    format!("not authorized to write to {name}"),
                )));
                continue;
            }
            if crate::metadata::is_internal(&name) {
                // Only the coordinators write there (Kafka answers the same).
                slots.push(Some(bad(
                    ErrorCode::INVALID_TOPIC_EXCEPTION,
                    format!("{name} is an internal topic: clients cannot produce to it"),
                )));
                continue;
            }
            if let Some(code) = missing.get(&name) {
                slots.push(Some(bad(*code, format!("unknown topic {name}"))));
                continue;
            }
            let owner = match meta.route(&name, p.index) {
                Ok(owner) => owner,
                Err(code) => {
                    let why = if code == ErrorCode::NOT_LEADER_OR_FOLLOWER {
                        format!("this broker does not lead {name}-{}", p.index)
                    } else {
                        format!("{name} has no partition {}", p.index)
                    };
                    slots.push(Some(bad(code, why)));
                    continue;
                }
            };
            let records = p.records.clone().unwrap_or_default();
            match batch::validate_produce(&records, broker.config.max_batch_bytes).and_then(
                |infos| client_rules(&infos, req.transactional_id.is_some()).map(|()| infos),
            ) {
                Err(e) => slots.push(Some(bad(e.code, e.message))),
                Ok(infos) => {
                    if compacted(broker, &meta, &name) {
                        // Every record of a compacted topic needs a key (Kafka decompresses
                        // to check, so this does too; only here, off the plain topics' path).
                        let errs = crate::protocol::records::keyless_records(&records, &infos);
                        if !errs.is_empty() {
                            slots.push(Some(bad(
                                ErrorCode::INVALID_RECORD,
                                format!(
                                    "compacted topic {name} cannot accept a record without a key ({} refused)",
                                    errs.len()
                                ),
                            )));
                            record_errors.insert(slot, errs);
                            continue;
                        }
                    }
                    // compression.type names a codec: batches in another are recompressed
                    // (topics left at `producer`, the default, pay one map lookup).
                    let (records, infos) = match topic_codec(&meta, &name) {
                        None => (records, infos),
                        Some(codec) => match recompress_set(&records, &infos, codec, broker) {
                            Ok(r) => r,
                            Err(e) => {
                                slots.push(Some(bad(e.code, e.message)));
                                continue;
                            }
                        },
                    };
                    slots.push(None);
                    let entry = by_shard.entry(owner).or_default();
                    entry.0.push(slot);
                    entry.1.push(ProducePart {
                        topic: name.clone(),
                        partition: p.index,
                        records,
                        infos,
                    });
                }
            }
        }
    }
    let timeout_ms = req.timeout_ms.max(0) as u64;
    let mut calls = Vec::new();
    for (owner, (idx, parts)) in by_shard {
        let b = broker.clone();
        let req = pm::ProduceRequest {
            acks,
            timeout_ms,
            parts,
        };
        let task = glommio::spawn_local(async move { b.partitions.produce_on(owner, req).await });
        calls.push((idx, task));
    }
    for (idx, task) in calls {
        for (i, o) in idx.into_iter().zip(task.await) {
            slots[i] = Some(o);
        }
    }
    if acks == 0 {
        return Ok(Response::Nothing);
    }
    let mut it = slots.into_iter().enumerate();
    let responses = req
        .topic_data
        .iter()
        .map(|t| {
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_partition_responses(
                t.partition_data
                    .iter()
                    .map(|p| {
                        let (slot, o) = it.next().expect("a slot per partition");
                        let o = o.expect("every slot filled");
                        let mut r = PartitionProduceResponse::default()
                            .with_index(p.index)
                            .with_base_offset(o.base_offset)
                            .with_log_append_time_ms(o.log_append_time)
                            .with_log_start_offset(o.log_start_offset);
                        if let Some(e) = o.error {
                            tracing::debug!(client = %ctx.client_id, "produce {}: {e}", t.name.0);
                            r = r
                                .with_error_code(e.code.0)
                                .with_error_message(Some(StrBytes::from_string(e.message)));
                        }
                        if let Some(errs) = record_errors.get(&slot) {
                            r = r.with_record_errors(
                                errs.iter()
                                    .map(|(i, m)| {
                                        BatchIndexAndErrorMessage::default()
                                            .with_batch_index(*i)
                                            .with_batch_index_error_message(Some(
                                                StrBytes::from_string(m.clone()),
                                            ))
                                    })
                                    .collect(),
                            );
                        }
                        r
                    })
                    .collect(),
            )
        })
        .collect();
    Ok(ctx.respond(
        &ProduceResponse::default()
            .with_responses(responses)
            .with_throttle_time_ms(ctx.throttle_ms()),
    ))
}

/// The codec a topic's `compression.type` (its own, else the broker's dynamic one) names;
/// None for `producer` (or unset).
fn topic_codec(meta: &crate::metadata::ClusterMeta, topic: &str) -> Option<i16> {
    meta.topic_value(topic, "compression.type")
        .and_then(|c| crate::protocol::records::codec_named(c.trim()))
}

/// The record set with every batch in `codec`, revalidated: what the topic stores.
fn recompress_set(
    records: &Bytes,
    infos: &[batch::BatchInfo],
    codec: i16,
    broker: &Broker,
) -> Result<(Bytes, Vec<batch::BatchInfo>), KafkaError> {
    let same = infos.iter().all(|i| {
        batch::be_i16(&records[i.start..], batch::OFF_ATTRIBUTES) & batch::ATTR_COMPRESSION_MASK
            == codec
    });
    if same {
        return Ok((records.clone(), infos.to_vec()));
    }
    let mut out = Vec::with_capacity(records.len());
    for i in infos {
        let b = crate::protocol::records::recompress(&records[i.start..i.start + i.len], codec)
            .map_err(|e| KafkaError::new(ErrorCode::CORRUPT_MESSAGE, e))?;
        out.extend_from_slice(&b);
    }
    let out = Bytes::from(out);
    let infos = batch::validate_produce(&out, broker.config.max_batch_bytes)?;
    Ok((out, infos))
}

/// Whether the topic's cleanup.policy (its own, else the broker's) compacts it.
fn compacted(broker: &Broker, meta: &crate::metadata::ClusterMeta, topic: &str) -> bool {
    let policy = meta
        .topic_value(topic, "cleanup.policy")
        .unwrap_or(&broker.config.cleanup_policy);
    crate::metadata::topic_config::policy_has(policy, "compact")
}

/// What a client's batches must satisfy beyond framing: a transactional batch comes from a
/// transactional producer (with its id) and an idempotent batch carries a sequence. Batches
/// without a sequence are the coordinators' own.
fn client_rules(infos: &[batch::BatchInfo], transactional_request: bool) -> Result<(), KafkaError> {
    for i in infos {
        if i.transactional && (i.producer_id < 0 || !transactional_request) {
            return Err(KafkaError::new(
                ErrorCode::INVALID_RECORD,
                "a transactional batch needs a producer id and a transactional_id in the request",
            ));
        }
        if i.producer_id >= 0 && i.base_sequence < 0 {
            return Err(KafkaError::new(
                ErrorCode::INVALID_RECORD,
                "a batch with a producer id needs a base sequence",
            ));
        }
    }
    Ok(())
}

/// Produce v0-v2 carry message sets (magic 0/1), which Flumen does not store. The range is still
/// advertised from v0 because librdkafka before 2.10 turns compression off unless ApiVersions
/// lists Produce v0 (librdkafka #4956); Kafka 4 does the same (KAFKA-18659). Each partition is
/// answered UNSUPPORTED_VERSION; acks=0 cannot carry an error, so that connection is closed.
/// The generated codec has no v0-v2 forms, hence the few lines of hand decoding.
fn legacy_unsupported(ctx: &Ctx, body: &mut Bytes) -> Result<Response, Response> {
    let malformed = || {
        Response::Close(format!(
            "malformed Produce v{} request from {:?}",
            ctx.version, ctx.client_id
        ))
    };
    let mut r = LegacyReader(body.clone());
    let acks = r.i16().ok_or_else(malformed)?;
    r.i32().ok_or_else(malformed)?; // timeout
    if acks == 0 {
        return Err(Response::Close(format!(
            "Produce v{} (message format v0/v1) with acks=0 is not supported; use v3 or later",
            ctx.version
        )));
    }
    let mut out = BytesMut::new();
    out.put_i32(0); // frame size, patched below
    out.put_i32(ctx.correlation_id);
    let n_topics = r.count().ok_or_else(malformed)?;
    out.put_i32(n_topics as i32);
    for _ in 0..n_topics {
        let name = r.bytes_i16().ok_or_else(malformed)?;
        out.put_i16(name.len() as i16);
        out.put_slice(&name);
        let n_parts = r.count().ok_or_else(malformed)?;
        out.put_i32(n_parts as i32);
        for _ in 0..n_parts {
            let index = r.i32().ok_or_else(malformed)?;
            r.bytes_i32().ok_or_else(malformed)?;
            out.put_i32(index);
            out.put_i16(ErrorCode::UNSUPPORTED_VERSION.0);
            out.put_i64(-1); // base offset
            if ctx.version >= 2 {
                out.put_i64(-1); // log append time
            }
        }
    }
    if ctx.version >= 1 {
        out.put_i32(0); // throttle time
    }
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(Response::Frame(vec![Piece::Bytes(out.freeze())]))
}

/// Bounds-checked big-endian reads for `legacy_unsupported`.
struct LegacyReader(Bytes);

impl LegacyReader {
    fn i16(&mut self) -> Option<i16> {
        (self.0.remaining() >= 2).then(|| self.0.get_i16())
    }
    fn i32(&mut self) -> Option<i32> {
        (self.0.remaining() >= 4).then(|| self.0.get_i32())
    }
    /// An array length: never more entries than bytes left, so a lying count cannot make us
    /// allocate or loop for long.
    fn count(&mut self) -> Option<usize> {
        let n = self.i32()?;
        (n >= 0 && n as usize <= self.0.remaining()).then_some(n as usize)
    }
    fn bytes_i16(&mut self) -> Option<Bytes> {
        let n = self.i16()?;
        (n >= 0 && n as usize <= self.0.remaining()).then(|| self.0.split_to(n as usize))
    }
    fn bytes_i32(&mut self) -> Option<Bytes> {
        let n = self.i32()?;
        if n < 0 {
            return Some(Bytes::new());
        }
        (n as usize <= self.0.remaining()).then(|| self.0.split_to(n as usize))
    }
}
