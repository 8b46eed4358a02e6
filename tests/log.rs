//! The log on its own, on real files under glommio: append, read back, restart, torn tails,
//! lost indexes, segment roll and retention, and the simulated disk: torn writes, failed
//! writes and fdatasyncs, a full disk.

use bytes::Bytes;
use flumen::config::{FlushPolicy, TimestampType};
use flumen::log::{Chunk, Faults, LogConfig, Partition, TailCache};
use flumen::protocol::batch::{self, validate_produce};
use flumen::protocol::errors::{ErrorCode, KafkaError};
use glommio::LocalExecutorBuilder;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

fn cfg(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: i64::MAX / 2,
        retention_ms: -1,
        retention_bytes: -1,
        index_interval_bytes: 256,
        flush: FlushPolicy::EveryWrite,
        timestamp_type: TimestampType::CreateTime,
        write_buffer_bytes: 1 << 20,
        producer_id_expiration_ms: 86_400_000,
        faults: None,
    }
}

fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A valid magic-2 batch of `n` uncompressed records, all at timestamp `ts`, each with `body`
/// as its value.
fn make_batch(n: i32, ts: i64, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; batch::HEADER_BYTES];
    for i in 0..n {
        let mut r = vec![0u8]; // attributes
        varint(&mut r, 0); // timestamp delta
        varint(&mut r, i as i64); // offset delta
        varint(&mut r, -1); // null key
        varint(&mut r, body.len() as i64);
        r.extend_from_slice(body);
        varint(&mut r, 0); // no headers
        varint(&mut b, r.len() as i64);
        b.extend_from_slice(&r);
    }
    let len = (b.len() - batch::LOG_OVERHEAD) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[batch::OFF_MAGIC] = 2;
    b[23..27].copy_from_slice(&(n - 1).to_be_bytes());
    b[27..35].copy_from_slice(&ts.to_be_bytes());
    b[35..43].copy_from_slice(&ts.to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    b[57..61].copy_from_slice(&n.to_be_bytes());
    batch::restamp_crc(&mut b);
    b
}

/// Appends one batch and waits until it is acknowledged; its base offset, or the error the
/// producer would get.
async fn try_append(p: &Partition, n: i32, ts: i64, body: &[u8]) -> Result<i64, KafkaError> {
    let bytes = Bytes::from(make_batch(n, ts, body));
    let infos = validate_produce(&bytes, 1 << 20).unwrap();
    let appended = p.append(&bytes, &infos).await?;
    let (base, target) = (appended.base_offset, appended.durable_target);
    p.wait_durable(target).await?;
    Ok(base)
}

async fn append(p: &Partition, n: i32, ts: i64, body: &[u8]) -> i64 {
    try_append(p, n, ts, body).await.unwrap()
}

/// All batches readable from `offset`, as (base offset, body) pairs, walking the whole log.
async fn read_all(p: &Partition, mut offset: i64) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let r = p.read(offset, 1 << 20).await.unwrap();
        if r.chunks.is_empty() {
            return out;
        }
        let mut bytes = Vec::new();
        for c in r.chunks {
            match c {
                Chunk::Mem(b) => bytes.extend_from_slice(&b),
                Chunk::File { seg, pos, len } => {
                    let f = seg.reader().await.unwrap();
                    bytes.extend_from_slice(&f.read_at(pos, len).await.unwrap());
                }
            }
        }
        let mut at = 0;
        while at < bytes.len() {
            let pre = batch::BatchPrefix::parse(&bytes[at..]).expect("whole batches");
            let whole = &bytes[at..at + pre.len];
            assert!(batch::crc_ok(whole), "stored batch keeps its CRC");
            out.push((
                pre.base_offset,
                whole[whole.len() - body_len(whole)..].to_vec(),
            ));
            offset = pre.next_offset();
            at += pre.len;
        }
    }
}

/// Length of the last record's value in a batch made by `make_batch` (value, then one
/// byte for the empty header count).
fn body_len(whole: &[u8]) -> usize {
    let mut set = Bytes::copy_from_slice(whole);
    let records = kafka_protocol::records::RecordBatchDecoder::decode(&mut set).unwrap();
    records
        .records
        .last()
        .unwrap()
        .value
        .as_ref()
        .unwrap()
        .len()
        + 1
}

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    LocalExecutorBuilder::default()
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

async fn open(dir: &Path, c: LogConfig, cache_bytes: usize) -> Rc<Partition> {
    Partition::open(dir, "t", 0, c, TailCache::new(cache_bytes))
        .await
        .unwrap()
}

#[test]
fn append_read_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let p = open(&d, cfg(1 << 20), 0).await;
        let mut bases = Vec::new();
        for i in 0..50 {
            bases.push(append(&p, 3, 1000 + i, format!("body-{i}").as_bytes()).await);
        }
        assert_eq!(bases, (0..50).map(|i| i * 3).collect::<Vec<_>>());
        assert_eq!(p.durable_offset(), 150);
        // A fetch in the middle of a batch returns the batch that contains it.
        let r = read_all(&p, 4).await;
        assert_eq!(r[0].0, 3);
        assert_eq!(r.len(), 49);
        p.close().await.unwrap();
        drop(p);
        let p = open(&d, cfg(1 << 20), 0).await;
        assert_eq!(p.durable_offset(), 150);
        let all = read_all(&p, 0).await;
        assert_eq!(all.len(), 50);
        for (i, (base, body)) in all.iter().enumerate() {
            assert_eq!(*base, i as i64 * 3);
            assert_eq!(&body[..body.len() - 1], format!("body-{i}").as_bytes());
        }
        // Appends continue after the recovered end, across the partial block.
        assert_eq!(append(&p, 1, 5000, b"after").await, 150);
        assert_eq!(read_all(&p, 150).await, vec![(150, b"after\0".to_vec())]);
        p.close().await.unwrap();
    });
}

#[test]
fn tail_cache_and_file_reads_agree() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        // A cache big enough for everything, and one too small for anything.
        let cached = open(&d.join("a"), cfg(1 << 20), 1 << 20).await;
        let uncached = open(&d.join("b"), cfg(1 << 20), 0).await;
        for i in 0..20 {
            append(&cached, 2, i, &[i as u8; 100]).await;
            append(&uncached, 2, i, &[i as u8; 100]).await;
        }
        let r = cached.read(0, 1 << 20).await.unwrap();
        assert!(r.chunks.iter().all(|c| matches!(c, Chunk::Mem(_))));
        let r = uncached.read(0, 1 << 20).await.unwrap();
        assert!(r.chunks.iter().all(|c| matches!(c, Chunk::File { .. })));
        assert_eq!(read_all(&cached, 0).await, read_all(&uncached, 0).await);
        // max_bytes: always at least one batch, then whole batches only.
        let one = uncached.read(0, 1).await.unwrap();
        assert_eq!(one.bytes, make_batch(2, 0, &[0u8; 100]).len());
        cached.close().await.unwrap();
        uncached.close().await.unwrap();
    });
}

#[test]
fn torn_tail_is_cut_and_lost_index_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let p = open(&d, cfg(1 << 20), 0).await;
        for i in 0..30 {
            append(&p, 1, i, &[7u8; 300]).await;
        }
        p.close().await.unwrap();
    });
    let seg = dir.path().join("t-0/00000000000000000000.log");
    let good_len = std::fs::metadata(&seg).unwrap().len();
    // A torn write: the first half of a valid next batch.
    let mut next = make_batch(1, 99, &[9u8; 300]);
    next[..8].copy_from_slice(&30i64.to_be_bytes());
    let mut data = std::fs::read(&seg).unwrap();
    data.extend_from_slice(&next[..next.len() / 2]);
    std::fs::write(&seg, &data).unwrap();
    std::fs::remove_file(dir.path().join("t-0/00000000000000000000.index")).unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let p = open(&d, cfg(1 << 20), 0).await;
        assert_eq!(p.durable_offset(), 30, "torn batch is not data");
        assert_eq!(read_all(&p, 0).await.len(), 30);
        assert_eq!(append(&p, 1, 100, b"x").await, 30);
        p.close().await.unwrap();
    });
    assert!(std::fs::metadata(&seg).unwrap().len() > good_len);
    assert!(dir.path().join("t-0/00000000000000000000.index").exists());
}

#[test]
fn corrupt_batch_in_the_middle_ends_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let p = open(&d, cfg(1 << 20), 0).await;
        for i in 0..10 {
            append(&p, 1, i, &[1u8; 100]).await;
        }
        p.close().await.unwrap();
    });
    let seg = dir.path().join("t-0/00000000000000000000.log");
    let mut data = std::fs::read(&seg).unwrap();
    let batch_len = make_batch(1, 0, &[1u8; 100]).len();
    data[6 * batch_len + batch::HEADER_BYTES + 20] ^= 0xff; // flip a payload byte of batch 6
    std::fs::write(&seg, &data).unwrap();
    for ext in ["index", "timeindex"] {
        std::fs::remove_file(dir.path().join(format!("t-0/00000000000000000000.{ext}"))).unwrap();
    }
    let d = dir.path().to_path_buf();
    run(move || async move {
        let p = open(&d, cfg(1 << 20), 0).await;
        assert_eq!(p.durable_offset(), 6);
        p.close().await.unwrap();
    });
}

#[test]
fn roll_retention_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let mut c = cfg(64 * 1024);
        c.retention_bytes = 128 * 1024;
        let p = open(&d, c.clone(), 0).await;
        for i in 0..100 {
            append(&p, 1, 10_000 + i, &[3u8; 4000]).await;
        }
        assert!(
            p.segment_count() >= 6,
            "rolled into {} segments",
            p.segment_count()
        );
        // Timestamps: the first record at or after a time, across segments.
        assert_eq!(
            p.offset_for_timestamp(10_050).await.unwrap(),
            Some((50, 10_050))
        );
        assert_eq!(
            p.offset_for_timestamp(1).await.unwrap().map(|x| x.0),
            Some(0)
        );
        assert_eq!(p.offset_for_timestamp(99_999).await.unwrap(), None);
        p.enforce_retention().await.unwrap();
        let start = p.log_start_offset();
        assert!(start > 0, "retention moved the start");
        assert!(
            p.read(0, 1000).await.is_err(),
            "below the start is out of range"
        );
        let rest = read_all(&p, start).await;
        assert_eq!(rest.first().unwrap().0, start);
        assert_eq!(rest.last().unwrap().0, 99);
        p.close().await.unwrap();
        drop(p);
        // Restart: old segments open lazily and still serve reads.
        let p = open(&d, c, 0).await;
        assert_eq!(p.log_start_offset(), start);
        assert_eq!(read_all(&p, start).await.len(), rest.len());
        p.close().await.unwrap();
    });
}

/// `cfg` over the simulated disk `faults`.
fn faulty(segment_bytes: u64, faults: &Arc<Faults>) -> LogConfig {
    let mut c = cfg(segment_bytes);
    c.faults = Some(faults.clone());
    c
}

fn assert_storage_error(r: Result<i64, KafkaError>, what: &str) {
    match r {
        Err(e) => assert_eq!(e.code, ErrorCode::KAFKA_STORAGE_ERROR, "{what}: {e}"),
        Ok(base) => panic!("{what}: acknowledged at offset {base}"),
    }
}

#[test]
fn torn_write_at_every_byte_of_the_last_batch_recovers_to_the_batch_before() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(move || async move {
        let body = [0x5au8; 40];
        let mut last = make_batch(2, 3, &body);
        last[..8].copy_from_slice(&6i64.to_be_bytes()); // as the broker writes it
                                                        // What a torn write leaves after the tear: preallocated zeros, or garbage.
        for fill in [0x00u8, 0xa5] {
            for k in 0..last.len() {
                let d = root.join(format!("{fill}-{k}"));
                let faults = Arc::new(Faults::default());
                let p = open(&d, faulty(1 << 20, &faults), 0).await;
                for i in 0..3 {
                    append(&p, 2, i, &body).await;
                }
                let start = 3 * last.len() as u64;
                faults.tear_at(start + k as u64, fill);
                assert_storage_error(
                    try_append(&p, 2, 3, &body).await,
                    &format!("write torn at byte {k}"),
                );
                assert_eq!(p.durable_offset(), 6);
                drop(p); // the crash: no close
                let p = open(&d, cfg(1 << 20), 0).await;
                // Bytes past the tear that happen to equal the fill complete the batch: it
                // is then whole on disk (never acknowledged, but valid, as after any crash
                // between the write and the answer).
                let complete = last[k..].iter().all(|&b| b == fill);
                let want = if complete { 8 } else { 6 };
                assert_eq!(p.durable_offset(), want, "fill {fill:#x}, torn at byte {k}");
                let all = read_all(&p, 0).await;
                assert_eq!(all.len(), want as usize / 2);
                assert!(all.iter().all(|(_, b)| b[..body.len()] == body));
                assert_eq!(append(&p, 1, 9, b"next").await, want);
                assert_eq!(read_all(&p, want).await, vec![(want, b"next\0".to_vec())]);
                p.close().await.unwrap();
                std::fs::remove_dir_all(&d).unwrap();
            }
        }
    });
}

#[test]
fn failed_write_or_fdatasync_takes_only_its_partition_offline() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(move || async move {
        for kind in ["write", "fdatasync"] {
            let faults = Arc::new(Faults::default());
            let da = root.join(format!("{kind}-a"));
            let a = open(&da, faulty(1 << 20, &faults), 0).await;
            let b = open(&root.join(format!("{kind}-b")), cfg(1 << 20), 0).await;
            for i in 0..5 {
                append(&a, 1, i, b"acked").await;
                append(&b, 1, i, b"acked").await;
            }
            match kind {
                "write" => faults.fail_writes_after(0),
                _ => faults.fail_syncs_after(0),
            }
            assert_storage_error(try_append(&a, 1, 5, b"doubtful").await, kind);
            assert_eq!(
                a.durable_offset(),
                5,
                "{kind}: nothing unacknowledged is visible"
            );
            assert!(a.failure().is_some(), "{kind}: the partition is offline");
            // The disk answers again, but what the failed call left is unknown: the
            // partition stays offline rather than acknowledge on top of it (fsyncgate).
            faults.heal();
            assert_storage_error(try_append(&a, 1, 6, b"after").await, kind);
            assert_eq!(a.durable_offset(), 5);
            // Offline as in Kafka: reads are refused too until a restart has checked the log.
            let read = a
                .read(0, 1 << 20)
                .await
                .err()
                .expect("an offline partition serves nothing");
            assert_eq!(read.code, ErrorCode::KAFKA_STORAGE_ERROR);
            // The other partition of the same shard carries on.
            for i in 5..10 {
                assert_eq!(append(&b, 1, i, b"more").await, i);
            }
            assert_eq!(read_all(&b, 0).await.len(), 10);
            assert!(
                a.close().await.is_err(),
                "{kind}: closing reports the failure"
            );
            b.close().await.unwrap();
            drop(a);
            // A restart recovers a valid log holding at least every acknowledged record.
            let a = open(&da, cfg(1 << 20), 0).await;
            let all = read_all(&a, 0).await;
            assert!(
                all.len() >= 5,
                "{kind}: {} batches after restart",
                all.len()
            );
            assert!(all[..5].iter().all(|(_, v)| v == b"acked\0"));
            let next = a.durable_offset();
            assert_eq!(append(&a, 1, 7, b"restarted").await, next);
            a.close().await.unwrap();
        }
    });
}

#[test]
fn failed_background_fdatasync_takes_the_partition_offline() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let faults = Arc::new(Faults::default());
        let mut c = faulty(1 << 20, &faults);
        c.flush = FlushPolicy::IntervalMs(1000);
        let p = open(&d, c, 0).await;
        append(&p, 1, 0, b"written").await;
        faults.fail_syncs_after(0);
        p.sync_if_dirty().await;
        assert!(p.failure().is_some());
        assert_storage_error(
            try_append(&p, 1, 1, b"refused").await,
            "after a failed sync",
        );
        assert!(p.read(0, 1 << 20).await.is_err());
        assert!(p.close().await.is_err());
        drop(p);
        let p = open(&d, cfg(1 << 20), 0).await;
        assert_eq!(read_all(&p, 0).await.len(), 1);
        p.close().await.unwrap();
    });
}

#[test]
fn full_disk_refuses_appends_without_taking_the_partition_offline() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let faults = Arc::new(Faults::default());
        let p = open(&d, faulty(256 * 1024, &faults), 0).await;
        append(&p, 1, 0, b"first").await;
        faults.fail_allocs_after(0);
        // Appends go on while the allocated space lasts (the segment's first step), then the
        // roll to a new segment finds no space.
        let mut acked = 1;
        let refused = loop {
            match try_append(&p, 1, acked, &[1u8; 4000]).await {
                Ok(base) => {
                    assert_eq!(base, acked);
                    acked += 1;
                    assert!(acked < 1000, "the disk never filled");
                }
                Err(e) => break e,
            }
        };
        assert_eq!(refused.code, ErrorCode::KAFKA_STORAGE_ERROR, "{refused}");
        assert!(
            p.failure().is_none(),
            "a full disk is retriable, not a failure"
        );
        assert_eq!(p.durable_offset(), acked);
        assert_eq!(read_all(&p, 0).await.len(), acked as usize);
        faults.heal();
        assert_eq!(append(&p, 1, 0, b"space again").await, acked);
        p.close().await.unwrap();
        drop(p);
        let p = open(&d, cfg(256 * 1024), 0).await;
        assert_eq!(p.durable_offset(), acked + 1);
        p.close().await.unwrap();
    });
}
