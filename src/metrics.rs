//! Prometheus metrics on `--metrics-listen` (`metrics_listen` in the config).
//!
//! Shared-nothing like the rest: each shard counts in plain cells of its own (`ShardMetrics`,
//! per-partition `PartitionStats`) and once a second publishes a snapshot of its samples to
//! the `Registry`; the HTTP thread only reads the snapshots, merges the families and serves
//! them as Prometheus text (version 0.0.4). Figures are therefore up to a second old.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// (name, type, help) of every family, in output order.
pub const FAMILIES: &[(&str, &str, &str)] = &[
    ("flumen_partition_bytes_in_total", "counter", "Record batch bytes appended to a partition."),
    ("flumen_partition_records_in_total", "counter", "Offsets assigned by appends to a partition (records and control records)."),
    ("flumen_partition_bytes_out_total", "counter", "Record batch bytes read from a partition for fetches."),
    ("flumen_partition_records_out_total", "counter", "Offsets returned by reads of a partition."),
    ("flumen_partition_high_watermark", "gauge", "Offset after the last durable record."),
    ("flumen_partition_log_start_offset", "gauge", "First offset still in the log."),
    ("flumen_partition_segments", "gauge", "Segment files of a partition."),
    ("flumen_partition_offline", "gauge", "1 when an I/O error took the partition offline."),
    ("flumen_shard_partitions", "gauge", "Partitions a shard owns."),
    ("flumen_requests_total", "counter", "Requests handled, by API."),
    ("flumen_request_duration_seconds", "histogram", "Time from a request's frame being read to its response being ready, by API (Produce includes the durability wait, Fetch the long poll)."),
    ("flumen_connections_open", "gauge", "Client connections a shard serves."),
    ("flumen_connections_accepted_total", "counter", "Connections accepted by a shard."),
    ("flumen_connections_refused_total", "counter", "Connections closed at accept over max_connections or max_connections_per_ip."),
    ("flumen_request_memory_used_bytes", "gauge", "Request bytes read or being handled, of request_memory_bytes."),
    ("flumen_request_memory_limit_bytes", "gauge", "request_memory_bytes: the per-shard budget before reading stops."),
    ("flumen_tail_cache_used_bytes", "gauge", "Bytes of recently appended batches held for tail consumers."),
    ("flumen_tail_cache_hits_total", "counter", "Partition reads served from the tail cache."),
    ("flumen_tail_cache_misses_total", "counter", "Partition reads served from segment files."),
    ("flumen_fetch_file_bytes_total", "counter", "Segment file bytes sent to fetching connections, by how (sendfile: from the page cache, nothing copied through the broker; copy: read, then written)."),
    ("flumen_log_cleaner_passes_total", "counter", "Cleaning passes of compacted partitions that rewrote segments."),
    ("flumen_log_cleaner_read_bytes_total", "counter", "Log bytes the cleaner read."),
    ("flumen_log_cleaner_written_bytes_total", "counter", "Cleaned log bytes the cleaner wrote."),
    ("flumen_uring_file_ops_total", "counter", "File operations completed through the shard's io_uring rings, by op (read, write)."),
    ("flumen_uring_file_bytes_total", "counter", "Bytes moved by those file operations, by op."),
    ("flumen_uring_io_latency_seconds", "summary", "io_uring file operation latency (device time) over the last interval, by quantile."),
];

/// Upper bounds of the request latency buckets, in seconds.
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A sample: family, labels (`a="b",c="d"`), value.
pub type Sample = (&'static str, String, f64);

/// The shards' latest snapshots, read by the HTTP thread.
pub struct Registry {
    shards: Vec<Mutex<Vec<Sample>>>,
}

impl Registry {
    pub fn new(shards: usize) -> Arc<Registry> {
        Arc::new(Registry {
            shards: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
        })
    }

    pub fn publish(&self, shard: usize, samples: Vec<Sample>) {
        if let Some(slot) = self.shards.get(shard) {
            *slot.lock().expect("metrics slot") = samples;
        }
    }

    /// Prometheus text: each family once, with its HELP and TYPE, samples of all shards.
    pub fn render(&self) -> String {
        let mut by_family: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for slot in &self.shards {
            for (name, labels, value) in slot.lock().expect("metrics slot").iter() {
                let family = FAMILIES
                    .iter()
                    .map(|f| f.0)
                    .find(|f| name.starts_with(f))
                    .unwrap_or(name);
                by_family
                    .entry(family)
                    .or_default()
                    .push(format!("{name}{{{labels}}} {value}"));
            }
        }
        let mut out = String::new();
        for (name, kind, help) in FAMILIES {
            if let Some(lines) = by_family.get(name) {
                out += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
                for l in lines {
                    out += l;
                    out.push('\n');
                }
            }
        }
        out
    }
}

#[derive(Default)]
struct ApiStats {
    count: u64,
    sum_us: u64,
    buckets: [u64; BUCKETS.len()],
}

/// One shard's own counters: written only by the shard, so plain cells.
#[derive(Default)]
pub struct ShardMetrics {
    apis: RefCell<BTreeMap<i16, ApiStats>>,
    pub connections_open: Cell<i64>,
    pub connections_accepted: Cell<u64>,
    pub connections_refused: Cell<u64>,
    /// Segment file bytes sent by sendfile(2), and read then written.
    pub file_bytes_sendfile: Cell<u64>,
    pub file_bytes_copied: Cell<u64>,
    uring: RefCell<UringTotals>,
}

#[derive(Default)]
struct UringTotals {
    reads: u64,
    read_bytes: u64,
    writes: u64,
    written_bytes: u64,
}

/// A shard's log cleaner work.
#[derive(Default)]
pub struct CleanerStats {
    pub passes: Cell<u64>,
    pub bytes_read: Cell<u64>,
    pub bytes_written: Cell<u64>,
}

/// Adds `n` to a counter cell.
pub fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

impl ShardMetrics {
    pub fn observe(&self, api: i16, elapsed: Duration) {
        let mut apis = self.apis.borrow_mut();
        let s = apis.entry(api).or_default();
        s.count += 1;
        let us = elapsed.as_micros() as u64;
        s.sum_us += us;
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            s.buckets[i] += 1;
        }
    }

    /// This shard's samples (partitions are added by the caller).
    pub fn samples(&self, shard: usize, out: &mut Vec<Sample>) {
        let sl = format!("shard=\"{shard}\"");
        for (key, s) in self.apis.borrow().iter() {
            let api = kafka_protocol::messages::ApiKey::try_from(*key)
                .map(|k| format!("{k:?}"))
                .unwrap_or_else(|_| key.to_string());
            let l = format!("{sl},api=\"{api}\"");
            out.push(("flumen_requests_total", l.clone(), s.count as f64));
            let mut cumulative = 0;
            for (b, n) in BUCKETS.iter().zip(s.buckets) {
                cumulative += n;
                out.push((
                    "flumen_request_duration_seconds_bucket",
                    format!("{l},le=\"{b}\""),
                    cumulative as f64,
                ));
            }
            out.push((
                "flumen_request_duration_seconds_bucket",
                format!("{l},le=\"+Inf\""),
                s.count as f64,
            ));
            out.push((
                "flumen_request_duration_seconds_sum",
                l.clone(),
                s.sum_us as f64 / 1e6,
            ));
            out.push(("flumen_request_duration_seconds_count", l, s.count as f64));
        }
        out.push((
            "flumen_connections_open",
            sl.clone(),
            self.connections_open.get() as f64,
        ));
        for (name, c) in [
            (
                "flumen_connections_accepted_total",
                &self.connections_accepted,
            ),
            (
                "flumen_connections_refused_total",
                &self.connections_refused,
            ),
        ] {
            out.push((name, sl.clone(), c.get() as f64));
        }
        for (how, c) in [
            ("sendfile", &self.file_bytes_sendfile),
            ("copy", &self.file_bytes_copied),
        ] {
            out.push((
                "flumen_fetch_file_bytes_total",
                format!("{sl},how=\"{how}\""),
                c.get() as f64,
            ));
        }
        // glommio hands its counters over and starts again at zero: keep the totals here.
        let io = glommio::executor().io_stats();
        let mut u = self.uring.borrow_mut();
        let mut latency: Vec<(f64, f64)> = Vec::new();
        for ring in [&io.main_ring, &io.latency_ring, &io.poll_ring] {
            let (n, b) = ring.file_reads();
            let (bn, bb) = ring.file_buffered_reads();
            u.reads += n + bn;
            u.read_bytes += b + bb;
            let (n, b) = ring.file_writes();
            let (bn, bb) = ring.file_buffered_writes();
            u.writes += n + bn;
            u.written_bytes += b + bb;
            let sketch = ring.io_latency_us();
            if sketch.count() > 0 {
                for q in [0.5, 0.99, 0.999] {
                    if let Ok(Some(v)) = sketch.quantile(q) {
                        latency.push((q, v));
                    }
                }
            }
        }
        for (op, n, b) in [
            ("read", u.reads, u.read_bytes),
            ("write", u.writes, u.written_bytes),
        ] {
            let l = format!("{sl},op=\"{op}\"");
            out.push(("flumen_uring_file_ops_total", l.clone(), n as f64));
            out.push(("flumen_uring_file_bytes_total", l, b as f64));
        }
        // Quantiles per ring: keep the worst of the rings for each.
        let mut worst: BTreeMap<String, f64> = BTreeMap::new();
        for (q, v) in latency {
            let e = worst.entry(q.to_string()).or_insert(0.0);
            *e = e.max(v / 1e6);
        }
        for (q, v) in worst {
            out.push((
                "flumen_uring_io_latency_seconds",
                format!("{sl},quantile=\"{q}\""),
                v,
            ));
        }
    }
}

/// Per-partition traffic, counted by the partition's shard.
#[derive(Default)]
pub struct PartitionStats {
    pub bytes_in: Cell<u64>,
    pub records_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
    pub records_out: Cell<u64>,
    /// Reads answered from the tail cache, and from segment files.
    pub cache_hits: Cell<u64>,
    pub cache_misses: Cell<u64>,
}

/// Serves `registry` as Prometheus text on `addr` from a thread of its own (GET /metrics; any
/// other path is 404). One connection at a time: scrapes are rare and small.
pub fn serve(addr: &str, registry: Arc<Registry>) -> anyhow::Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("metrics listen {addr}: {e}"))?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("flumen-metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(stream, &registry) {
                    tracing::debug!("metrics request: {e}");
                }
            }
        })?;
    Ok(local)
}

fn answer(mut s: std::net::TcpStream, registry: &Registry) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&req);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = if method == "GET" && (path == "/metrics" || path == "/") {
        (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            registry.render(),
        )
    } else {
        ("404 Not Found", "text/plain", "GET /metrics\n".to_string())
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_once_with_samples_of_every_shard() {
        let r = Registry::new(2);
        r.publish(
            0,
            vec![("flumen_connections_open", "shard=\"0\"".into(), 3.0)],
        );
        r.publish(
            1,
            vec![
                ("flumen_connections_open", "shard=\"1\"".into(), 4.0),
                (
                    "flumen_request_duration_seconds_bucket",
                    "shard=\"1\",api=\"Produce\",le=\"+Inf\"".into(),
                    7.0,
                ),
            ],
        );
        let text = r.render();
        assert_eq!(
            text.matches("# TYPE flumen_connections_open gauge").count(),
            1
        );
        assert!(text.contains("flumen_connections_open{shard=\"0\"} 3\n"));
        assert!(text.contains("flumen_connections_open{shard=\"1\"} 4\n"));
        assert!(text.contains("# TYPE flumen_request_duration_seconds histogram\n"));
        assert!(text.contains(
            "flumen_request_duration_seconds_bucket{shard=\"1\",api=\"Produce\",le=\"+Inf\"} 7\n"
        ));
    }

    #[test]
    fn latency_buckets_are_cumulative() {
        let m = ShardMetrics::default();
        for ms in [0.05, 0.3, 3.0, 3.0, 20_000.0] {
            m.observe(0, Duration::from_secs_f64(ms / 1000.0));
        }
        let apis = m.apis.borrow();
        let s = &apis[&0];
        assert_eq!(s.count, 5);
        assert_eq!(s.buckets.iter().sum::<u64>(), 4, "20 s is only in +Inf");
        assert_eq!(s.buckets[0], 1);
    }
}
