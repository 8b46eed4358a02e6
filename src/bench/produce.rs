//! `flumen bench produce`: pipelined Produce requests from pinned threads.
//!
//! Each thread keeps `inflight` requests outstanding on its own connection; a request carries
//! one batch for one partition, partitions taken round robin. Record numbers are handed out
//! from one counter, so the run's records are numbered 0..N without gaps.
//!
//! Latency is from when the batch's first record existed to the response. Without `--rate`
//! that is when the request is written. With `--rate` records arrive on a schedule, a batch
//! closes when full or after `--linger-ms`, and latency counts from the scheduled arrival of its
//! first record, so a stalled broker shows up as latency instead of a slower schedule
//! (no coordinated omission).

use super::payload::{BatchBuilder, Keys};
use super::{Common, Meter, Side};
use crate::admin::Client;
use anyhow::bail;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Produce version used: v7 (non-flexible, supported by Kafka 2.1+ and by Flumen).
const PRODUCE_VERSION: i16 = 7;

#[derive(Clone)]
pub struct ProduceOpts {
    pub common: Common,
    pub record_size: usize,
    pub batch_records: usize,
    pub linger_ms: f64,
    pub acks: i16,
    /// Records to send (rounded up to whole batches); u64::MAX with a duration.
    pub records: u64,
    pub connections: usize,
    pub inflight: usize,
    pub keys: Keys,
    pub compression: Compression,
    /// Target records/s over all connections.
    pub rate: Option<f64>,
}

/// State the producer threads share.
pub struct Producers {
    pub stop: AtomicBool,
    claimed: AtomicU64,
    pub run: u64,
}

/// A run id unlikely to repeat: time and process id.
fn run_id() -> u64 {
    let t = super::now_us();
    t.rotate_left(20) ^ (std::process::id() as u64) << 1 ^ 0x9e37_79b9_7f4a_7c15
}

/// Records per batch: `batch_records`, or with a rate what arrives within the linger time.
fn batch_size(o: &ProduceOpts) -> usize {
    match o.rate {
        Some(r) => {
            let per_thread = r / o.connections as f64;
            ((per_thread * o.linger_ms / 1000.0).ceil() as usize).clamp(1, o.batch_records)
        }
        None => o.batch_records,
    }
}

/// Starts the producer threads on cores from `first_core`; their meters join `side`.
pub fn start(
    o: &ProduceOpts,
    partitions: i32,
    side: &mut Side,
    first_core: usize,
) -> anyhow::Result<(super::Threads<()>, Arc<Producers>)> {
    anyhow::ensure!(
        o.batch_records >= 1 && o.connections >= 1 && o.inflight >= 1,
        "batch records, connections and in-flight requests must be at least 1"
    );
    let shared = Arc::new(Producers {
        stop: AtomicBool::new(false),
        claimed: AtomicU64::new(0),
        run: run_id(),
    });
    let meters: Vec<Arc<Meter>> = (0..o.connections).map(|_| side.meter()).collect();
    let builders = (0..o.connections)
        .map(|id| {
            BatchBuilder::new(
                shared.run,
                batch_size(o),
                o.record_size,
                o.keys,
                o.compression,
                id as u64 + 1,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let builders = std::sync::Mutex::new(builders.into_iter().map(Some).collect::<Vec<_>>());
    let (o2, s2) = (o.clone(), shared.clone());
    let threads = super::spawn_pinned(o.connections, first_core, move |id| {
        let b = builders.lock().expect("builders")[id]
            .take()
            .expect("one builder per thread");
        worker(&o2, id, partitions, &s2, &meters[id], b)
    });
    Ok((threads, shared))
}

fn worker(
    o: &ProduceOpts,
    id: usize,
    partitions: i32,
    shared: &Producers,
    meter: &Meter,
    mut builder: BatchBuilder,
) -> anyhow::Result<()> {
    let mut c = Client::connect(&o.common.bootstrap)?;
    let n = batch_size(o) as u64;
    // (correlation id, first record's arrival, records, bytes)
    let mut pending: VecDeque<(i32, Instant, u64, u64)> = VecDeque::new();
    let mut partition = id as i32 % partitions;
    let start = Instant::now();
    let interval = o
        .rate
        .map(|r| Duration::from_secs_f64(n as f64 * o.connections as f64 / r));
    let mut sent_batches = 0u32;
    let topic = TopicName(StrBytes::from_string(o.common.topic.clone()));
    loop {
        let more = !shared.stop.load(Ordering::Relaxed)
            && shared.claimed.load(Ordering::Relaxed) < o.records;
        // With a rate, the next batch's first record arrives on schedule; the batch goes out
        // once all its records have arrived: the last one (n - 1) / n of an interval later.
        // (Not a whole interval: with one record per batch, at one record a second per
        // connection, that counted a second of latency no broker caused.)
        let arrival = interval.map(|i| start + i * sent_batches);
        let due = arrival.map(|a| a + interval.expect("with arrival") * (n as u32 - 1) / n as u32);
        let may_send =
            more && pending.len() < o.inflight && due.is_none_or(|d| Instant::now() >= d);
        if may_send {
            let first = shared.claimed.fetch_add(n, Ordering::Relaxed);
            if first >= o.records {
                continue;
            }
            let records = builder.build(first, super::now_us());
            let bytes = records.len() as u64;
            let req = ProduceRequest::default()
                .with_acks(o.acks)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(topic.clone())
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records))])]);
            let corr = c.write(&req, PRODUCE_VERSION)?;
            sent_batches += 1;
            partition = (partition + 1) % partitions;
            if o.acks == 0 {
                meter.count(n, bytes); // no responses: counted when sent
            } else {
                pending.push_back((corr, arrival.unwrap_or_else(Instant::now), n, bytes));
            }
            continue;
        }
        let Some((corr, first_arrival, records, bytes)) = pending.pop_front() else {
            if !more {
                break;
            }
            // Waiting for the schedule with nothing in flight.
            if let Some(d) = due {
                std::thread::sleep(d.saturating_duration_since(Instant::now()));
            }
            continue;
        };
        let r = c.read::<ProduceRequest>(PRODUCE_VERSION, corr)?;
        for t in &r.responses {
            for p in &t.partition_responses {
                if p.error_code != 0 {
                    bail!("partition {}: Kafka error code {}", p.index, p.error_code);
                }
            }
        }
        let us = first_arrival.elapsed().as_micros().max(1) as u64;
        meter.interval.lock().expect("meter").saturating_record(us);
        meter.requests.fetch_add(1, Ordering::Relaxed);
        meter.count(records, bytes);
    }
    Ok(())
}

pub fn produce(o: ProduceOpts) -> anyhow::Result<()> {
    let mut admin = Client::connect(&o.common.bootstrap)?;
    let partitions = super::ensure_topic(&mut admin, &o.common.topic, o.common.partitions)?;
    let mut sides = [Side::new("produce")];
    let (threads, shared) = start(&o, partitions, &mut sides[0], 0)?;
    let secs = super::monitor(&mut sides, o.common.duration, &shared.stop, || {
        threads.iter().all(|t| t.is_finished())
    });
    super::join_all(threads)?;
    super::summarize("produce", &o.common, &sides, secs, None)
}
