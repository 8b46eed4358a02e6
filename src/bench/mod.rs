//! `flumen bench produce|consume|e2e`: a Kafka-protocol load generator that works against any
//! broker.
//!
//! Thread-per-core like the broker: one thread per connection, pinned to a core in turn, each
//! with its own connection, histogram and counters; nothing is shared on the hot path but
//! relaxed counters and a per-thread histogram the monitor swaps once a second. The monitor
//! prints a progress line each second on stderr (records/s, MB/s, p99 of that second) and keeps
//! the series for `--report`; the summary goes to stdout (text, or `--json`).
//!
//! Records carry a run id, a record number, the send time and a checksum (`payload`), so
//! consume and e2e check every record: no gaps, no duplicates, no corruption.

pub mod consume;
pub mod payload;
pub mod produce;
mod report;

use crate::admin::Client;
use anyhow::bail;
use hdrhistogram::Histogram;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use consume::{consume, ConsumeOpts};
pub use produce::{produce, ProduceOpts};

/// Options every mode has.
#[derive(Clone)]
pub struct Common {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub duration: Option<Duration>,
    pub json: bool,
    pub report: Option<std::path::PathBuf>,
}

/// Latency histogram in µs, 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// One load thread's counters; the monitor reads them and swaps the histogram each second.
pub struct Meter {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub requests: AtomicU64,
    pub interval: Mutex<Histogram<u64>>,
}

impl Meter {
    pub fn new() -> Arc<Meter> {
        Arc::new(Meter {
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            interval: Mutex::new(histogram()),
        })
    }

    pub fn count(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A group of meters for one direction (produce or consume) and what the monitor made of
/// them.
pub struct Side {
    pub name: &'static str,
    pub meters: Vec<Arc<Meter>>,
    pub total: Histogram<u64>,
    pub series: Vec<Sample>,
    last: (u64, u64),
}

#[derive(Clone, Copy)]
pub struct Sample {
    pub t: f64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Side {
    pub fn new(name: &'static str) -> Side {
        Side {
            name,
            meters: Vec::new(),
            total: histogram(),
            series: Vec::new(),
            last: (0, 0),
        }
    }

    pub fn meter(&mut self) -> Arc<Meter> {
        let m = Meter::new();
        self.meters.push(m.clone());
        m
    }

    pub fn records(&self) -> u64 {
        self.meters
            .iter()
            .map(|m| m.records.load(Ordering::Relaxed))
            .sum()
    }

    pub fn bytes(&self) -> u64 {
        self.meters
            .iter()
            .map(|m| m.bytes.load(Ordering::Relaxed))
            .sum()
    }

    /// Takes this interval's latencies into the total; one sample of the series.
    fn sample(&mut self, t: f64, secs: f64) -> Sample {
        let mut h = histogram();
        for m in &self.meters {
            let mut i = m.interval.lock().expect("meter lock");
            h.add(&*i).expect("same bounds");
            i.reset();
        }
        self.total.add(&h).expect("same bounds");
        let (r, b) = (self.records(), self.bytes());
        let s = Sample {
            t,
            records_per_sec: (r - self.last.0) as f64 / secs,
            mb_per_sec: (b - self.last.1) as f64 / secs / 1e6,
            p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        };
        self.last = (r, b);
        // The last interval of a run is cut short when the load ends: too short to be a rate.
        if secs >= 0.5 {
            self.series.push(s);
        }
        s
    }
}

/// Runs the progress loop until `done()`; stops the load (`stop`) when the duration is over.
pub fn monitor(
    sides: &mut [Side],
    duration: Option<Duration>,
    stop: &AtomicBool,
    mut done: impl FnMut() -> bool,
) -> f64 {
    let start = Instant::now();
    let mut last = Instant::now();
    loop {
        let finished = done();
        std::thread::sleep(Duration::from_millis(if finished { 0 } else { 50 }));
        if duration.is_some_and(|d| start.elapsed() >= d) {
            stop.store(true, Ordering::Relaxed);
        }
        if last.elapsed() >= Duration::from_secs(1) || finished {
            let secs = last.elapsed().as_secs_f64();
            last = Instant::now();
            let t = start.elapsed().as_secs_f64();
            let mut line = format!("{t:6.1}s");
            for s in sides.iter_mut() {
                let x = s.sample(t, secs);
                line += &format!(
                    "  {}: {:>10.0} rec/s {:>8.1} MB/s p99 {:>7.2} ms",
                    s.name, x.records_per_sec, x.mb_per_sec, x.p99_ms
                );
            }
            if !finished {
                eprintln!("{line}");
            }
        }
        if finished {
            return start.elapsed().as_secs_f64();
        }
    }
}

/// What the checks of consume and e2e found.
#[derive(Default, Clone)]
pub struct Verification {
    pub verified: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub corrupt: u64,
    pub foreign: u64,
    pub runs: usize,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.corrupt == 0
    }
}

/// Prints the summary of a run (text or JSON) and writes the report if asked.
pub fn summarize(
    mode: &str,
    common: &Common,
    sides: &[Side],
    secs: f64,
    verification: Option<&Verification>,
) -> anyhow::Result<()> {
    let mut json = format!("{{\"mode\":\"{mode}\",\"seconds\":{secs:.3}");
    for s in sides {
        let records = s.records();
        let bytes = s.bytes();
        let requests: u64 = s
            .meters
            .iter()
            .map(|m| m.requests.load(Ordering::Relaxed))
            .sum();
        let h = &s.total;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let lat = [
            ms(0.5),
            ms(0.99),
            ms(0.999),
            ms(0.9999),
            h.max() as f64 / 1000.0,
        ];
        let fields = format!(
            "\"records\":{records},\"bytes\":{bytes},\"records_per_sec\":{:.0},\"mb_per_sec\":{:.2},\"requests\":{requests},\"latency_ms\":{{\"p50\":{:.3},\"p99\":{:.3},\"p99_9\":{:.3},\"p99_99\":{:.3},\"max\":{:.3}}}",
            records as f64 / secs,
            bytes as f64 / secs / 1e6,
            lat[0], lat[1], lat[2], lat[3], lat[4]
        );
        // produce alone keeps its fields at the top level (scripts read them there).
        if sides.len() == 1 {
            json += &format!(",{fields}");
        } else {
            json += &format!(",\"{}\":{{{fields}}}", s.name);
        }
        if !common.json {
            println!(
                "{}: {records} records in {secs:.2} s: {:.0} records/s, {:.1} MB/s (record batches)",
                s.name,
                records as f64 / secs,
                bytes as f64 / secs / 1e6
            );
            println!(
                "{} latency ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  p99.99 {:.2}  max {:.2}  ({} samples)",
                s.name,
                lat[0],
                lat[1],
                lat[2],
                lat[3],
                lat[4],
                h.len()
            );
        }
    }
    if let Some(v) = verification {
        json += &format!(
            ",\"verification\":{{\"ok\":{},\"verified\":{},\"missing\":{},\"duplicates\":{},\"corrupt\":{},\"foreign\":{},\"runs\":{}}}",
            v.ok(), v.verified, v.missing, v.duplicates, v.corrupt, v.foreign, v.runs
        );
        if !common.json {
            println!(
                "verification: {} ({} records checked, {} missing, {} duplicated, {} corrupt, {} not from the bench, {} run(s))",
                if v.ok() { "OK" } else { "FAILED" },
                v.verified,
                v.missing,
                v.duplicates,
                v.corrupt,
                v.foreign,
                v.runs
            );
        }
    }
    json += "}";
    if common.json {
        println!("{json}");
    }
    if let Some(path) = &common.report {
        report::write(path, mode, common, sides, secs, verification)?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(v) = verification {
        if !v.ok() {
            bail!("verification failed");
        }
    }
    Ok(())
}

/// The topic exists with at least `partitions` partitions (created when missing); answers
/// its partition count.
pub fn ensure_topic(c: &mut Client, topic: &str, partitions: i32) -> anyhow::Result<i32> {
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

/// Load threads, each ending with its result.
pub type Threads<T> = Vec<std::thread::JoinHandle<anyhow::Result<T>>>;

/// Runs `f(i)` on `n` threads pinned to the cores in turn.
pub fn spawn_pinned<T: Send + 'static>(
    n: usize,
    first_core: usize,
    f: impl Fn(usize) -> anyhow::Result<T> + Send + Sync + 'static,
) -> Threads<T> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let f = Arc::new(f);
    (0..n)
        .map(|i| {
            let f = f.clone();
            let core = (!cores.is_empty()).then(|| cores[(first_core + i) % cores.len()]);
            std::thread::spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                f(i)
            })
        })
        .collect()
}

/// Joins load threads, turning a panic into an error.
pub fn join_all<T>(
    threads: Vec<std::thread::JoinHandle<anyhow::Result<T>>>,
) -> anyhow::Result<Vec<T>> {
    threads
        .into_iter()
        .map(|t| {
            t.join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
        })
        .collect()
}

pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
