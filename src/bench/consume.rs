//! `flumen bench consume` and `flumen bench e2e`: Fetch from pinned threads, each owning a share
//! of the partitions, checking every record.
//!
//! consume reads what is there (from the earliest or latest offsets) and its latency is the
//! Fetch round trip. e2e starts consumers at the log end, then producers, and its latency is
//! per record, from the producer's send time in the value to the consumer checking it (one
//! clock: both run in this process).

use super::payload::{check_records, Checked, SeqSet};
use super::produce::{self, ProduceOpts};
use super::{Common, Meter, Side, Verification};
use crate::admin::{self, Client};
use anyhow::bail;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Fetch version used: v11 (topics by name, non-flexible; Kafka 2.3+ and Flumen).
const FETCH_VERSION: i16 = 11;

#[derive(Clone)]
pub struct ConsumeOpts {
    pub common: Common,
    pub connections: usize,
    /// Bytes per partition per fetch.
    pub fetch_bytes: i32,
    pub max_wait_ms: i32,
    /// Start at the log start instead of the end.
    pub from_earliest: bool,
    /// Stop after this many records (else at the end offsets seen at start).
    pub records: Option<u64>,
}

/// State the consumer threads share.
struct Consumers {
    stop: AtomicBool,
    consumed: AtomicU64,
    /// Stop once this many records were consumed in total.
    target: AtomicU64,
    /// Stop each partition at its end offset seen at start (consume without a count).
    stop_at_end: bool,
    /// Latency per record from the send time in the value (e2e), else per fetch.
    e2e: bool,
}

/// What one consumer thread found.
#[derive(Default)]
struct Found {
    runs: HashMap<u64, SeqSet>,
    corrupt: u64,
    foreign: u64,
    out_of_order: u64,
}

type Assignment = Vec<(i32, i64, i64)>;

fn consumer(
    o: &ConsumeOpts,
    mut parts: Assignment,
    shared: &Consumers,
    meter: &Meter,
) -> anyhow::Result<Found> {
    let mut found = Found::default();
    if parts.is_empty() {
        return Ok(found);
    }
    let mut c = Client::connect(&o.common.bootstrap)?;
    let topic = TopicName(StrBytes::from_string(o.common.topic.clone()));
    let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
    loop {
        if shared.stop.load(Ordering::Relaxed)
            || shared.consumed.load(Ordering::Relaxed) >= shared.target.load(Ordering::Relaxed)
        {
            break;
        }
        if shared.stop_at_end {
            parts.retain(|&(_, pos, end)| pos < end);
            if parts.is_empty() {
                break;
            }
        }
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(o.max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(64 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic.clone())
                .with_partitions(
                    parts
                        .iter()
                        .map(|&(p, pos, _)| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(pos)
                                .with_partition_max_bytes(o.fetch_bytes)
                        })
                        .collect(),
                )]);
        let sent = Instant::now();
        let r = c.send(&req, FETCH_VERSION)?;
        if r.error_code != 0 {
            bail!("Fetch: Kafka error code {}", r.error_code);
        }
        let now = super::now_us();
        let mut checked = Checked::default();
        for t in &r.responses {
            for pd in &t.partitions {
                if pd.error_code != 0 {
                    bail!(
                        "Fetch partition {}: Kafka error code {}",
                        pd.partition_index,
                        pd.error_code
                    );
                }
                let Some(slot) = parts.iter_mut().find(|x| x.0 == pd.partition_index) else {
                    continue;
                };
                let Some(set) = pd.records.as_ref() else {
                    continue;
                };
                let before = checked.records.len();
                slot.1 = check_records(set, slot.1, &mut checked)?;
                let last = last_offset.entry(slot.0).or_insert(-1);
                for (offset, _) in &checked.records[before..] {
                    if *offset <= *last {
                        found.out_of_order += 1;
                    }
                    *last = *offset;
                }
            }
        }
        let n = checked.records.len() as u64;
        {
            let mut h = meter.interval.lock().expect("meter");
            if shared.e2e {
                for (_, s) in &checked.records {
                    h.saturating_record(now.saturating_sub(s.sent_us).max(1));
                }
            } else if n > 0 {
                h.saturating_record(sent.elapsed().as_micros().max(1) as u64);
            }
        }
        for (_, s) in checked.records {
            found.runs.entry(s.run).or_default().insert(s.seq);
        }
        found.corrupt += checked.corrupt;
        found.foreign += checked.foreign;
        meter.requests.fetch_add(1, Ordering::Relaxed);
        meter.count(n + checked.foreign, checked.bytes);
        shared
            .consumed
            .fetch_add(n + checked.foreign, Ordering::Relaxed);
    }
    Ok(found)
}

/// Splits the partitions over `n` threads round robin: (partition, start, end).
fn assign(
    bootstrap: &str,
    topic: &str,
    n: usize,
    from_earliest: bool,
) -> anyhow::Result<Vec<Assignment>> {
    let mut c = Client::connect(bootstrap)?;
    let parts = admin::topic_partitions(&mut c, topic)?;
    let start = admin::list_offsets(&mut c, &parts, if from_earliest { -2 } else { -1 })?;
    let end = admin::list_offsets(&mut c, &parts, -1)?;
    let mut out = vec![Vec::new(); n];
    for (i, key) in parts.iter().enumerate() {
        out[i % n].push((key.1, start[key], end[key]));
    }
    Ok(out)
}

fn start_consumers(
    o: &ConsumeOpts,
    assignment: Vec<Assignment>,
    shared: &Arc<Consumers>,
    side: &mut Side,
    first_core: usize,
) -> super::Threads<Found> {
    let meters: Vec<Arc<Meter>> = assignment.iter().map(|_| side.meter()).collect();
    let (o2, s2) = (o.clone(), shared.clone());
    super::spawn_pinned(assignment.len(), first_core, move |i| {
        consumer(&o2, assignment[i].clone(), &s2, &meters[i])
    })
}

/// Merges what the threads found. `expected`: the run and record count every record of
/// which must have been seen (e2e, or a complete consume of a run).
fn verify(found: Vec<Found>, expected: Option<(u64, u64)>, gaps: bool) -> Verification {
    let mut runs: HashMap<u64, SeqSet> = HashMap::new();
    let mut v = Verification::default();
    for f in found {
        v.corrupt += f.corrupt;
        v.foreign += f.foreign;
        // A record at or below an offset already seen is a duplicate delivery.
        v.duplicates += f.out_of_order;
        for (run, set) in f.runs {
            runs.entry(run).or_default().merge(&set);
        }
    }
    if let Some((run, n)) = expected {
        let set = runs.remove(&run).unwrap_or_default();
        v.verified += set.distinct + set.duplicates;
        v.duplicates += set.duplicates;
        v.missing += set.missing(Some(n));
        v.runs += 1;
    }
    for set in runs.values() {
        v.verified += set.distinct + set.duplicates;
        v.duplicates += set.duplicates;
        if gaps {
            v.missing += set.missing(None);
        }
        v.runs += 1;
    }
    v
}

pub fn consume(o: ConsumeOpts) -> anyhow::Result<()> {
    anyhow::ensure!(o.connections >= 1, "at least one connection");
    if !o.from_earliest && o.records.is_none() && o.common.duration.is_none() {
        bail!("from the latest offsets say how long: --records or --duration");
    }
    let assignment = assign(
        &o.common.bootstrap,
        &o.common.topic,
        o.connections,
        o.from_earliest,
    )?;
    // Gaps only mean something when every record of the runs was read: from the start to
    // the end of every partition.
    let complete = o.from_earliest && o.records.is_none() && o.common.duration.is_none();
    let shared = Arc::new(Consumers {
        stop: AtomicBool::new(false),
        consumed: AtomicU64::new(0),
        target: AtomicU64::new(o.records.unwrap_or(u64::MAX)),
        stop_at_end: o.records.is_none() && o.common.duration.is_none(),
        e2e: false,
    });
    let mut sides = [Side::new("consume")];
    let threads = start_consumers(&o, assignment, &shared, &mut sides[0], 0);
    let secs = super::monitor(&mut sides, o.common.duration, &shared.stop, || {
        threads.iter().all(|t| t.is_finished())
    });
    let found = super::join_all(threads)?;
    let v = verify(found, None, complete);
    super::summarize("consume", &o.common, &sides, secs, Some(&v))
}

/// e2e: consumers from the log end, producers after them; ends when everything produced was
/// consumed, or `quiet` after the producers finished with nothing more arriving.
pub fn e2e(p: ProduceOpts, o: ConsumeOpts, quiet: Duration) -> anyhow::Result<()> {
    let mut admin = Client::connect(&p.common.bootstrap)?;
    let partitions = super::ensure_topic(&mut admin, &p.common.topic, p.common.partitions)?;
    let assignment = assign(&o.common.bootstrap, &o.common.topic, o.connections, false)?;
    let consumers = Arc::new(Consumers {
        stop: AtomicBool::new(false),
        consumed: AtomicU64::new(0),
        target: AtomicU64::new(u64::MAX),
        stop_at_end: false,
        e2e: true,
    });
    let mut sides = [Side::new("produce"), Side::new("e2e")];
    let cthreads = start_consumers(&o, assignment, &consumers, &mut sides[1], p.connections);
    let (pthreads, producers) = produce::start(&p, partitions, &mut sides[0], 0)?;
    let produced_meters = sides[0].meters.clone();
    let mut quiet_since: Option<(Instant, u64)> = None;
    let secs = super::monitor(&mut sides, p.common.duration, &producers.stop, || {
        if pthreads.iter().all(|t| t.is_finished()) {
            let produced: u64 = produced_meters
                .iter()
                .map(|m| m.records.load(Ordering::Relaxed))
                .sum();
            consumers.target.store(produced, Ordering::Relaxed);
            let consumed = consumers.consumed.load(Ordering::Relaxed);
            match quiet_since {
                Some((t, n)) if n == consumed => {
                    if t.elapsed() >= quiet {
                        consumers.stop.store(true, Ordering::Relaxed);
                    }
                }
                _ => quiet_since = Some((Instant::now(), consumed)),
            }
        }
        cthreads.iter().all(|t| t.is_finished())
    });
    // A producer error ends its thread early: report it before the verification.
    let produced_ok = super::join_all(pthreads);
    let found = super::join_all(cthreads)?;
    produced_ok?;
    let produced = sides[0].records();
    let v = verify(found, Some((producers.run, produced)), false);
    super::summarize("e2e", &p.common, &sides, secs, Some(&v))
}
