//! The append path against the disk's own limit, measured in the same run:
//! - `raw_odirect`: sequential O_DIRECT writes of the batch size, one at a time (what the
//!   device gives a single writer with no broker in the way);
//! - `flumen_append`: Partition::append + wait for the write, one batch at a time (acks=1
//!   latency-bound path: copy into the DMA buffer, offset assignment, index, group commit);
//! - `raw_odirect_qd16`: the same with 16 writes in flight (the device's parallel limit);
//! - `flumen_append_pipelined`: 16 batches in flight, as a producer with max.in.flight does
//!   (group commit merges them into fewer, larger writes).
//!
//! Plus batch validation (framing + CRC32C) in memory.
//!
//! Run: `cargo bench --bench append` (set FLUMEN_BENCH_DIR to put files on the disk to test).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flumen::config::{FlushPolicy, TimestampType};
use flumen::log::{LogConfig, Partition, TailCache};
use flumen::protocol::batch::{self, validate_produce};
use glommio::io::{DmaFile, OpenOptions};
use glommio::LocalExecutorBuilder;
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [16 * 1024, 256 * 1024, 1024 * 1024];

fn bench_dir() -> tempfile::TempDir {
    match std::env::var("FLUMEN_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).expect("bench dir"),
        Err(_) => tempfile::Builder::new()
            .prefix("flumen-bench")
            .tempdir_in(".")
            .expect("bench dir"),
    }
}

/// One batch of a single record whose value fills `size` bytes in all.
fn make_batch(size: usize) -> Vec<u8> {
    let mut b = vec![0u8; size];
    let len = (size - batch::LOG_OVERHEAD) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[batch::OFF_MAGIC] = 2;
    b[57..61].copy_from_slice(&1i32.to_be_bytes());
    for (i, x) in b[batch::HEADER_BYTES..].iter_mut().enumerate() {
        *x = (i * 31) as u8;
    }
    batch::restamp_crc(&mut b);
    b
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 30,
        segment_ms: i64::MAX / 2,
        retention_ms: -1,
        retention_bytes: -1,
        index_interval_bytes: 4096,
        // Acknowledge on device write completion, like the raw writes below (no fsync in either).
        flush: FlushPolicy::IntervalMs(u64::MAX / 4),
        timestamp_type: TimestampType::CreateTime,
        write_buffer_bytes: 4 << 20,
        producer_id_expiration_ms: 86_400_000,
        faults: None,
        ..LogConfig::unlimited()
    }
}

fn append_run(iters: u64, size: usize, in_flight: usize) -> Duration {
    LocalExecutorBuilder::default()
        .spawn(move || async move {
            let dir = bench_dir();
            let p = Partition::open(dir.path(), "bench", 0, log_config(), TailCache::new(0))
                .await
                .expect("open");
            let records = Bytes::from(make_batch(size));
            let infos = validate_produce(&records, usize::MAX).expect("valid");
            let start = Instant::now();
            let mut done = 0u64;
            while done < iters {
                let n = (iters - done).min(in_flight as u64);
                let mut last = 0;
                for _ in 0..n {
                    last = p
                        .append(&records, &infos)
                        .await
                        .expect("append")
                        .durable_target;
                }
                p.wait_durable(last).await.expect("durable");
                done += n;
            }
            let t = start.elapsed();
            p.close().await.expect("close");
            t
        })
        .expect("executor")
        .join()
        .expect("bench thread")
}

fn raw_run(iters: u64, size: usize, depth: usize) -> Duration {
    LocalExecutorBuilder::default()
        .spawn(move || async move {
            let dir = bench_dir();
            let f: DmaFile = OpenOptions::new()
                .write(true)
                .create(true)
                .dma_open(dir.path().join("raw"))
                .await
                .expect("open");
            f.pre_allocate(1 << 30, false).await.expect("prealloc");
            let aligned = size.div_ceil(4096) * 4096;
            let src = make_batch(size);
            let f = std::rc::Rc::new(f);
            let start = Instant::now();
            let mut pos = 0u64;
            let mut done = 0u64;
            while done < iters {
                // Same work a writer must do: get the bytes into an aligned buffer, then write;
                // `depth` writes in flight at once.
                let n = (iters - done).min(depth as u64);
                let mut writes = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let mut buf = f.alloc_dma_buffer(aligned);
                    buf.as_bytes_mut()[..size].copy_from_slice(&src);
                    let f = f.clone();
                    let at = pos;
                    writes.push(glommio::spawn_local(
                        async move { f.write_at(buf, at).await },
                    ));
                    pos = (pos + aligned as u64) % (1 << 30);
                }
                for w in writes {
                    w.await.expect("write");
                }
                done += n;
            }
            let Ok(f) = std::rc::Rc::try_unwrap(f) else {
                panic!("every write finished, so the file has one owner");
            };
            let t = start.elapsed();
            f.close().await.expect("close");
            t
        })
        .expect("executor")
        .join()
        .expect("bench thread")
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("raw_odirect", size), &size, |b, &s| {
            b.iter_custom(|iters| raw_run(iters, s, 1))
        });
        g.bench_with_input(
            BenchmarkId::new("raw_odirect_qd16", size),
            &size,
            |b, &s| b.iter_custom(|iters| raw_run(iters, s, 16)),
        );
        g.bench_with_input(BenchmarkId::new("flumen_append", size), &size, |b, &s| {
            b.iter_custom(|iters| append_run(iters, s, 1))
        });
        g.bench_with_input(
            BenchmarkId::new("flumen_append_pipelined", size),
            &size,
            |b, &s| b.iter_custom(|iters| append_run(iters, s, 16)),
        );
    }
    g.finish();
}

fn validation(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate");
    for size in [1024usize, 16 * 1024, 1024 * 1024] {
        let set: Vec<u8> = make_batch(size);
        g.throughput(Throughput::Bytes(set.len() as u64));
        g.bench_with_input(BenchmarkId::new("validate_produce", size), &set, |b, s| {
            b.iter(|| validate_produce(std::hint::black_box(s), usize::MAX).expect("valid"))
        });
    }
    // The memory limit the CRC pass is held against: a memcpy of the same bytes.
    let src = make_batch(1024 * 1024);
    let mut dst = vec![0u8; src.len()];
    g.throughput(Throughput::Bytes(src.len() as u64));
    g.bench_function("memcpy/1048576", |b| {
        b.iter(|| dst.copy_from_slice(std::hint::black_box(&src)))
    });
    g.finish();
}

criterion_group!(benches, append, validation);
criterion_main!(benches);
