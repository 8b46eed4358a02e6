//! `flumen bench produce`: a Kafka-protocol load generator that works against any broker.
//!
//! One thread per connection, each pinned to a core in turn (thread-per-core like the broker),
//! each keeping `inflight` Produce requests pipelined on its own connection; every request
//! carries one batch of `batch_records` records for one partition, partitions taken round
//! robin. A request's latency is from writing it to reading its response; latencies go into
//! per-thread HDR histograms (µs) merged at the end. A progress line each second on stderr;
//! the summary on stdout (text, or `--json`).

use crate::admin::Client;
use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Produce version used: v7 (non-flexible, supported by Kafka 2.1+ and by Flumen).
const PRODUCE_VERSION: i16 = 7;

pub struct ProduceOpts {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub record_size: usize,
    pub batch_records: usize,
    pub acks: i16,
    pub records: u64,
    pub duration: Option<Duration>,
    pub connections: usize,
    pub inflight: usize,
    pub json: bool,
}

struct Shared {
    records: AtomicU64,
    bytes: AtomicU64,
    stop: AtomicBool,
    /// Records handed out to the threads so far (with `records`, the total is exact).
    claimed: AtomicU64,
}

/// The topic exists with at least `partitions` partitions (created when missing).
fn ensure_topic(c: &mut Client, topic: &str, partitions: i32) -> anyhow::Result<i32> {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
        )
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))]));
    let meta = c.send(&req.with_allow_auto_topic_creation(false), 9)?;
    if let Some(t) = meta.topics.first() {
        if t.error_code == 0 {
            return Ok(t.partitions.len() as i32);
        }
    }
    let create = CreateTopicsRequest::default()
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(30_000);
    let r = c.send(&create, 5)?;
    let code = r.topics.first().map_or(-1, |t| t.error_code);
    if code != 0 && code != 36 {
        bail!("creating {topic}: Kafka error code {code}");
    }
    Ok(partitions)
}

/// One batch of `n` records of `size` bytes (a record number then filler), uncompressed.
fn batch(n: usize, size: usize, first: u64) -> anyhow::Result<Bytes> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let kvs: Vec<_> = (0..n)
        .map(|i| {
            let mut v = vec![b'.'; size.max(12)];
            v[..12].copy_from_slice(format!("{:012}", first + i as u64).as_bytes());
            (None, Some(Bytes::from(v)))
        })
        .collect();
    Ok(crate::protocol::batch::encode_records(&kvs, now, None))
}

fn worker(
    o: &ProduceOpts,
    id: usize,
    partitions: i32,
    shared: &Shared,
) -> anyhow::Result<Histogram<u64>> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut c = Client::connect(&o.bootstrap)?;
    let mut pending: VecDeque<(i32, Instant, u64, u64)> = VecDeque::new();
    let mut partition = id as i32 % partitions;
    // The batch is built once per thread: the broker sees the same bytes at new offsets.
    let proto = batch(o.batch_records, o.record_size, 0)?;
    loop {
        let more = !shared.stop.load(Ordering::Relaxed)
            && shared
                .claimed
                .fetch_add(o.batch_records as u64, Ordering::Relaxed)
                < o.records;
        if more {
            let req = ProduceRequest::default()
                .with_acks(o.acks)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(o.topic.clone())))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(proto.clone()))])]);
            let corr = c.write(&req, PRODUCE_VERSION)?;
            pending.push_back((
                corr,
                Instant::now(),
                o.batch_records as u64,
                proto.len() as u64,
            ));
            partition = (partition + 1) % partitions;
            if o.acks == 0 {
                // No responses: count at send.
                let (_, _, n, b) = pending.pop_back().expect("just pushed");
                shared.records.fetch_add(n, Ordering::Relaxed);
                shared.bytes.fetch_add(b, Ordering::Relaxed);
                continue;
            }
            if pending.len() < o.inflight {
                continue;
            }
        }
        let Some((corr, sent, n, b)) = pending.pop_front() else {
            break;
        };
        let r = c.read::<ProduceRequest>(PRODUCE_VERSION, corr)?;
        for t in &r.responses {
            for p in &t.partition_responses {
                if p.error_code != 0 {
                    bail!("partition {}: Kafka error code {}", p.index, p.error_code);
                }
            }
        }
        hist.record(sent.elapsed().as_micros().max(1) as u64)?;
        shared.records.fetch_add(n, Ordering::Relaxed);
        shared.bytes.fetch_add(b, Ordering::Relaxed);
    }
    Ok(hist)
}

pub fn produce(o: ProduceOpts) -> anyhow::Result<()> {
    anyhow::ensure!(o.batch_records >= 1 && o.connections >= 1 && o.inflight >= 1);
    let mut admin = Client::connect(&o.bootstrap)?;
    let partitions = ensure_topic(&mut admin, &o.topic, o.partitions)?;
    let shared = Arc::new(Shared {
        records: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        claimed: AtomicU64::new(0),
    });
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let opts = Arc::new(o);
    let start = Instant::now();
    let threads: Vec<_> = (0..opts.connections)
        .map(|id| {
            let (o, shared) = (opts.clone(), shared.clone());
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            std::thread::spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                worker(&o, id, partitions, &shared)
            })
        })
        .collect();
    let mut last = (0u64, Instant::now());
    while !threads.iter().all(|t| t.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(d) = opts.duration {
            if start.elapsed() >= d {
                shared.stop.store(true, Ordering::Relaxed);
            }
        }
        if last.1.elapsed() >= Duration::from_secs(1) {
            let n = shared.records.load(Ordering::Relaxed);
            let rate = (n - last.0) as f64 / last.1.elapsed().as_secs_f64();
            eprintln!(
                "{:6.1}s {:>12} records {:>12.0} records/s {:>9.1} MB/s",
                start.elapsed().as_secs_f64(),
                n,
                rate,
                rate * opts.record_size as f64 / 1e6
            );
            last = (n, Instant::now());
        }
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for t in threads {
        let h = t
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
            .context("load thread")?;
        hist.add(&h)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let records = shared.records.load(Ordering::Relaxed);
    let bytes = shared.bytes.load(Ordering::Relaxed);
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    if opts.json {
        println!(
            "{{\"records\":{records},\"bytes\":{bytes},\"seconds\":{secs:.3},\"records_per_sec\":{:.0},\"mb_per_sec\":{:.2},\"requests\":{},\"latency_ms\":{{\"p50\":{:.3},\"p99\":{:.3},\"p99_9\":{:.3},\"p99_99\":{:.3},\"max\":{:.3}}}}}",
            records as f64 / secs,
            bytes as f64 / secs / 1e6,
            hist.len(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            ms(0.9999),
            hist.max() as f64 / 1000.0
        );
    } else {
        println!(
            "{records} records in {secs:.2} s: {:.0} records/s, {:.1} MB/s (batches on the wire)",
            records as f64 / secs,
            bytes as f64 / secs / 1e6
        );
        println!(
            "request latency ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  p99.99 {:.2}  max {:.2}  ({} requests)",
            ms(0.5),
            ms(0.99),
            ms(0.999),
            ms(0.9999),
            hist.max() as f64 / 1000.0,
            hist.len()
        );
    }
    Ok(())
}
