//! The log on its own, on real files under glommio: append, read back, restart, torn tails,
//! lost indexes, segment roll and retention, and the simulated disk: torn writes, failed
//! writes and fdatasyncs, a full disk.

mod common;

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
        ..LogConfig::unlimited()
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
        let bytes = common::chunk_bytes(r.chunks).await;
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
fn flush_messages_syncs_once_that_many_records_wait() {
    // flush.messages 5 under an interval policy that never fires: the append that brings the
    // unsynced records to 5 fdatasyncs before it is acknowledged. A failing sync shows when.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let faults = Arc::new(Faults::default());
        let mut c = faulty(1 << 20, &faults);
        c.flush = FlushPolicy::IntervalMs(u64::MAX / 4);
        c.flush_messages = Some(5);
        let p = open(&d, c, 0).await;
        faults.fail_syncs_after(0);
        assert_eq!(append(&p, 2, 0, b"two").await, 0);
        assert_eq!(append(&p, 2, 0, b"four").await, 2);
        assert!(p.failure().is_none(), "4 records wait: no sync yet");
        assert_storage_error(
            try_append(&p, 1, 0, b"fifth").await,
            "the fifth record's sync",
        );
        drop(p);
        // Without flush.messages the same appends never sync.
        let d2 = d.join("plain");
        std::fs::create_dir_all(&d2).unwrap();
        let faults = Arc::new(Faults::default());
        let mut c = faulty(1 << 20, &faults);
        c.flush = FlushPolicy::IntervalMs(u64::MAX / 4);
        let p = open(&d2, c, 0).await;
        faults.fail_syncs_after(0);
        for i in 0..5 {
            assert_eq!(append(&p, 1, 0, b"r").await, i);
        }
        assert!(p.failure().is_none());
        let _ = p.close().await;
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

// ---- Follower primitives: replicated appends, truncation, the leader-epoch cache. ----

/// Every stored byte of `p` from `offset` to its high watermark: whole batches back to back.
async fn log_bytes(p: &Partition, mut offset: i64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let r = p.read(offset, 64 * 1024).await.unwrap();
        if r.chunks.is_empty() {
            return out;
        }
        out.extend(common::chunk_bytes(r.chunks).await);
        offset = r.next_offset;
    }
}

/// Copies `leader`'s log past `follower`'s end into it, as a fetcher would: sets of at most
/// `fetch_bytes` (whole batches), each appended as it came.
async fn replicate(leader: &Partition, follower: &Partition, fetch_bytes: usize) {
    loop {
        let from = follower.log_end_offset();
        let r = leader.read(from, fetch_bytes).await.unwrap();
        if r.chunks.is_empty() {
            return;
        }
        let set = common::chunk_bytes(r.chunks).await;
        let a = follower.append_replicated(Bytes::from(set)).await.unwrap();
        assert_eq!(a.base_offset, from);
        assert_eq!(a.log_end_offset, r.next_offset);
        assert_eq!(
            follower.durable_offset(),
            a.log_end_offset,
            "durable when answered"
        );
    }
}

/// `make_batch` of producer `pid`/`epoch` starting at sequence `seq`, transactional or not.
fn producer_batch(
    n: i32,
    ts: i64,
    body: &[u8],
    pid: i64,
    epoch: i16,
    seq: i32,
    txn: bool,
) -> Bytes {
    let mut b = make_batch(n, ts, body);
    b[batch::OFF_PRODUCER_ID..batch::OFF_PRODUCER_ID + 8].copy_from_slice(&pid.to_be_bytes());
    b[batch::OFF_PRODUCER_EPOCH..batch::OFF_PRODUCER_EPOCH + 2]
        .copy_from_slice(&epoch.to_be_bytes());
    b[batch::OFF_BASE_SEQUENCE..batch::OFF_BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
    if txn {
        b[batch::OFF_ATTRIBUTES..batch::OFF_ATTRIBUTES + 2]
            .copy_from_slice(&batch::ATTR_TRANSACTIONAL.to_be_bytes());
    }
    batch::restamp_crc(&mut b);
    Bytes::from(b)
}

/// Produces `bytes` (one batch) as a client would; the appended base offset or the error.
async fn produce(p: &Partition, bytes: &Bytes) -> Result<i64, KafkaError> {
    let infos = validate_produce(bytes, 1 << 20).unwrap();
    let a = p.append(bytes, &infos).await?;
    p.wait_durable(a.durable_target).await?;
    Ok(a.base_offset)
}

/// What a client can see of a partition's producer state: the answer to a retried batch, the
/// answer to a batch out of sequence, the last stable offset and the aborted transactions.
async fn producer_view(p: &Partition, probes: &[Bytes]) -> Vec<String> {
    let mut out = Vec::new();
    for probe in probes {
        let infos = validate_produce(probe, 1 << 20).unwrap();
        // Only duplicates and refusals are probed: neither writes anything.
        out.push(match p.append(probe, &infos).await {
            Ok(a) => format!("duplicate at {}", a.base_offset),
            Err(e) if e.code == ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER => "out of order".into(),
            Err(e) => format!("{e}"),
        });
    }
    let r = p.read_isolated(0, 1 << 20, true).await.unwrap();
    out.push(format!(
        "lso {} aborted {:?}",
        p.last_stable_offset(),
        r.aborted
    ));
    out
}

/// A leader's log with what a follower must reproduce: plain batches over several leader
/// epochs, an idempotent producer, a committed, an aborted and an open transaction, segment
/// rolls. LogAppendTime, so the leader rewrote timestamps and CRCs.
async fn leader_log(p: &Partition) {
    p.set_leader_epoch(1);
    for i in 0..10 {
        append(p, 2, 100 + i, &[1u8; 300]).await;
    }
    p.set_leader_epoch(3);
    for seq in 0..6 {
        produce(
            p,
            &producer_batch(2, 200, &[2u8; 200], 7, 0, seq * 2, false),
        )
        .await
        .unwrap();
    }
    produce(p, &producer_batch(1, 300, b"t9", 9, 0, 0, true))
        .await
        .unwrap();
    produce(p, &producer_batch(1, 300, b"t8", 8, 0, 0, true))
        .await
        .unwrap();
    let t = p.append_marker(9, 0, false, 1).await.unwrap();
    p.wait_durable(t).await.unwrap();
    let t = p.append_marker(8, 0, true, 1).await.unwrap();
    p.wait_durable(t).await.unwrap();
    p.set_leader_epoch(4);
    for i in 0..10 {
        append(p, 1, 400 + i, &[4u8; 500]).await;
    }
    produce(p, &producer_batch(1, 500, b"open", 10, 0, 0, true))
        .await
        .unwrap();
    append(p, 1, 600, b"last").await;
}

fn lat_cfg(segment_bytes: u64) -> LogConfig {
    let mut c = cfg(segment_bytes);
    c.timestamp_type = TimestampType::LogAppendTime;
    c
}

/// Probes of producer 7's state: a retry of its last batch, one of a batch gone from the
/// last five, one past the next sequence.
fn probes() -> Vec<Bytes> {
    vec![
        producer_batch(2, 200, &[2u8; 200], 7, 0, 10, false),
        producer_batch(2, 200, &[2u8; 200], 7, 0, 0, false),
        producer_batch(2, 200, &[2u8; 200], 7, 0, 14, false),
        producer_batch(1, 0, b"z", 10, 0, 5, true),
    ]
}

#[test]
fn replicated_append_keeps_the_leaders_bytes_offsets_and_producer_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let leader = open(&d.join("leader"), lat_cfg(8 * 1024), 1 << 20).await;
        leader_log(&leader).await;
        // A follower with different settings: other segment size, no tail cache, and
        // LogAppendTime too (it must not rewrite the leader's times).
        let fd = d.join("follower");
        let follower = open(&fd, lat_cfg(5 * 1024), 0).await;
        replicate(&leader, &follower, 3000).await;
        let want = log_bytes(&leader, 0).await;
        assert_eq!(log_bytes(&follower, 0).await, want, "byte for byte");
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        assert_eq!(read_all(&follower, 0).await, read_all(&leader, 0).await);
        assert!(follower.segment_count() > 1, "rolled");
        assert_eq!(
            follower.leader_epoch_entries(),
            leader.leader_epoch_entries()
        );
        assert_eq!(
            leader.leader_epoch_entries(),
            vec![(1, 0), (3, 20), (4, 36)]
        );
        // Producer state: a follower that becomes leader answers producers as the leader.
        let expect = producer_view(&leader, &probes()).await;
        assert_eq!(expect[0], "duplicate at 30");
        assert_eq!(expect[2], "out of order");
        assert_eq!(producer_view(&follower, &probes()).await, expect);
        // And so after a restart, from its own files.
        follower.close().await.unwrap();
        drop(follower);
        let follower = open(&fd, lat_cfg(5 * 1024), 0).await;
        assert_eq!(log_bytes(&follower, 0).await, want);
        assert_eq!(producer_view(&follower, &probes()).await, expect);
        assert_eq!(
            follower.leader_epoch_entries(),
            leader.leader_epoch_entries()
        );
        // Taking over: it appends as a leader from where the leader was.
        follower.set_leader_epoch(5);
        let end = leader.log_end_offset();
        assert_eq!(append(&follower, 1, 700, b"new leader").await, end);
        assert_eq!(follower.end_offset_for_epoch(4), (4, end));
        follower.close().await.unwrap();
        leader.close().await.unwrap();
    });
}

#[test]
fn replicated_gap_overlap_or_damage_is_refused_with_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let leader = open(&d.join("leader"), cfg(1 << 20), 0).await;
        for i in 0..6 {
            append(&leader, 2, i, &[5u8; 100]).await;
        }
        let follower = open(&d.join("follower"), cfg(1 << 20), 1 << 20).await;
        let all = log_bytes(&leader, 0).await;
        let one = make_batch(2, 0, &[5u8; 100]).len();
        // The first two batches replicate.
        follower
            .append_replicated(Bytes::copy_from_slice(&all[..2 * one]))
            .await
            .unwrap();
        assert_eq!(follower.log_end_offset(), 4);
        let before = log_bytes(&follower, 0).await;
        let batch_at = |k: usize| all[k * one..(k + 1) * one].to_vec();
        let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
            ("gap", batch_at(3), ErrorCode::OFFSET_OUT_OF_RANGE),
            ("overlap", batch_at(1), ErrorCode::OFFSET_OUT_OF_RANGE),
            (
                "gap inside the set",
                [batch_at(2), batch_at(4)].concat(),
                ErrorCode::CORRUPT_MESSAGE,
            ),
            (
                "overlap inside the set",
                [batch_at(2), batch_at(2)].concat(),
                ErrorCode::CORRUPT_MESSAGE,
            ),
            (
                "a cut last batch",
                all[2 * one..4 * one - 1].to_vec(),
                ErrorCode::CORRUPT_MESSAGE,
            ),
            (
                "a bad CRC in the second batch",
                {
                    let mut b = [batch_at(2), batch_at(3)].concat();
                    b[one + batch::HEADER_BYTES + 3] ^= 0x40;
                    b
                },
                ErrorCode::CORRUPT_MESSAGE,
            ),
            (
                "magic 1",
                {
                    let mut b = batch_at(2);
                    b[batch::OFF_MAGIC] = 1;
                    b
                },
                ErrorCode::CORRUPT_MESSAGE,
            ),
        ];
        for (what, set, code) in cases {
            let e = follower
                .append_replicated(Bytes::from(set))
                .await
                .err()
                .unwrap_or_else(|| panic!("{what}: accepted"));
            assert_eq!(e.code, code, "{what}: {e}");
            assert_eq!(follower.log_end_offset(), 4, "{what}");
            assert_eq!(follower.durable_offset(), 4, "{what}");
            assert_eq!(log_bytes(&follower, 0).await, before, "{what}");
            assert!(
                follower.failure().is_none(),
                "{what}: a refusal, not a failure"
            );
        }
        // An empty set appends nothing; the rest of the log still follows.
        let a = follower.append_replicated(Bytes::new()).await.unwrap();
        assert_eq!((a.base_offset, a.log_end_offset), (4, 4));
        replicate(&leader, &follower, 1 << 20).await;
        assert_eq!(log_bytes(&follower, 0).await, all);
        follower.close().await.unwrap();
        leader.close().await.unwrap();
    });
}

#[test]
fn truncate_mid_segment_and_across_segments_then_append_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let leader = open(&d.join("leader"), cfg(8 * 1024), 0).await;
        leader_log(&leader).await;
        let full = log_bytes(&leader, 0).await;
        let fd = d.join("follower");
        let follower = open(&fd, cfg(4 * 1024), 1 << 20).await;
        replicate(&leader, &follower, 2500).await;
        let segments = follower.segment_count();
        assert!(segments >= 4, "{segments} segments");
        // Byte offsets in `full` of each batch start, by base offset.
        let starts: Vec<(i64, usize)> = {
            let mut v = Vec::new();
            let mut at = 0;
            while at < full.len() {
                let pre = batch::BatchPrefix::parse(&full[at..]).unwrap();
                v.push((pre.base_offset, at));
                at += pre.len;
            }
            v
        };
        let bytes_below = |o: i64| starts.iter().find(|s| s.0 == o).unwrap().1;

        // Refused: inside a batch, below the log start; nothing changes.
        let end = follower.log_end_offset();
        let e = follower.truncate_to(1).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_REQUEST, "{e}");
        let e = follower.truncate_to(-1).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::OFFSET_OUT_OF_RANGE, "{e}");
        assert_eq!(follower.log_end_offset(), end);
        assert_eq!(log_bytes(&follower, 0).await, full);
        // At or past the end: nothing to cut.
        follower.truncate_to(end + 5).await.unwrap();
        assert_eq!(follower.log_end_offset(), end);

        // Mid-segment, in the newest segment: after the open transaction (offset 46), which
        // goes with it.
        assert_eq!(leader.last_stable_offset(), 46);
        follower.truncate_to(46).await.unwrap();
        assert_eq!(
            (follower.log_end_offset(), follower.durable_offset()),
            (46, 46)
        );
        assert_eq!(log_bytes(&follower, 0).await, full[..bytes_below(46)]);
        assert_eq!(
            follower.last_stable_offset(),
            46,
            "the open transaction is gone"
        );
        assert!(follower.segment_count() <= segments);

        // Into the transactions: producer 8's commit marker (offset 35) cut, its
        // transaction (from 33) is open again; then producer 9's abort marker (34) too, and
        // the aborted transaction is no longer one.
        follower.truncate_to(35).await.unwrap();
        assert_eq!(follower.last_stable_offset(), 33);
        let aborted = follower
            .read_isolated(0, 1 << 20, true)
            .await
            .unwrap()
            .aborted;
        assert_eq!(aborted, vec![(9, 32)]);
        follower.truncate_to(34).await.unwrap();
        assert_eq!(follower.last_stable_offset(), 32);
        let aborted = follower
            .read_isolated(0, 1 << 20, true)
            .await
            .unwrap()
            .aborted;
        assert_eq!(aborted, vec![]);

        // Across segments: both transactions and producer 7's last batch (offset 30, sequence
        // 10) are gone from the producer state.
        follower.truncate_to(30).await.unwrap();
        assert_eq!(
            (follower.log_end_offset(), follower.durable_offset()),
            (30, 30)
        );
        assert!(follower.segment_count() < segments);
        assert_eq!(log_bytes(&follower, 0).await, full[..bytes_below(30)]);
        assert_eq!(follower.last_stable_offset(), 30);
        // (A probe that would be appended is not sent: sequence 10 is now the next one.)
        let after_cut = vec![
            producer_batch(2, 200, &[2u8; 200], 7, 0, 8, false), // the last kept: a retry
            producer_batch(2, 200, &[2u8; 200], 7, 0, 12, false), // past the next sequence
        ];
        let view = producer_view(&follower, &after_cut).await;
        assert_eq!(
            view,
            vec![
                "duplicate at 28".to_string(),
                "out of order".into(),
                "lso 30 aborted []".into(),
            ]
        );
        assert_eq!(follower.leader_epoch_entries(), vec![(1, 0), (3, 20)]);
        // Files: no segment starts at or past the cut any more, and the epoch checkpoint
        // says so too.
        for entry in std::fs::read_dir(fd.join("t-0")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if let Some(stem) = name.split('.').next().and_then(|s| s.parse::<i64>().ok()) {
                assert!(stem <= 30, "{name} survived a cut at 30");
            }
        }
        assert_eq!(
            std::fs::read_to_string(fd.join("t-0/leader-epoch-checkpoint")).unwrap(),
            "0\n2\n1 0\n3 20\n"
        );

        // Replication resumes: the follower becomes the leader's copy again.
        replicate(&leader, &follower, 1500).await;
        assert_eq!(log_bytes(&follower, 0).await, full);
        assert_eq!(
            producer_view(&follower, &probes()).await,
            producer_view(&leader, &probes()).await
        );

        // A divergent tail of its own (it led epoch 5 for a moment), cut back to the leader's
        // end, then a crash: the cut was durable, recovery finds it.
        follower.set_leader_epoch(5);
        for i in 0..8 {
            append(&follower, 1, 900 + i, &[9u8; 700]).await;
        }
        assert_eq!(follower.end_offset_for_epoch(4), (4, end));
        follower.truncate_to(end).await.unwrap();
        assert_eq!(follower.end_offset_for_epoch(5), (4, end));
        drop(follower); // no close
        let follower = open(&fd, cfg(4 * 1024), 0).await;
        assert_eq!(
            (follower.log_end_offset(), follower.durable_offset()),
            (end, end)
        );
        assert_eq!(log_bytes(&follower, 0).await, full);
        assert_eq!(
            producer_view(&follower, &probes()).await,
            producer_view(&leader, &probes()).await
        );
        assert_eq!(
            follower.leader_epoch_entries(),
            leader.leader_epoch_entries()
        );
        // Truncate to the very start, append, reopen after a clean close.
        follower.truncate_to(0).await.unwrap();
        assert_eq!(follower.segment_count(), 1);
        assert_eq!(follower.leader_epoch_entries(), vec![]);
        assert_eq!(follower.last_stable_offset(), 0);
        replicate(&leader, &follower, 4000).await;
        follower.close().await.unwrap();
        drop(follower);
        let follower = open(&fd, cfg(4 * 1024), 0).await;
        assert_eq!(log_bytes(&follower, 0).await, full);
        assert_eq!(
            producer_view(&follower, &probes()).await,
            producer_view(&leader, &probes()).await
        );
        follower.close().await.unwrap();
        leader.close().await.unwrap();
    });
}

#[test]
fn truncate_below_the_log_start_is_refused_and_retention_moves_the_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let mut c = cfg(16 * 1024);
        c.retention_bytes = 32 * 1024;
        let p = open(&d, c.clone(), 0).await;
        p.set_leader_epoch(2);
        for i in 0..20 {
            append(&p, 1, i, &[1u8; 3000]).await;
        }
        p.set_leader_epoch(6);
        for i in 20..40 {
            append(&p, 1, i, &[1u8; 3000]).await;
        }
        p.enforce_retention().await.unwrap();
        let start = p.log_start_offset();
        assert!(start > 20, "retention passed epoch 2 ({start})");
        assert_eq!(p.leader_epoch_entries(), vec![(6, start)]);
        // Older than the earliest epoch left: Kafka's (epoch, earliest start).
        assert_eq!(p.end_offset_for_epoch(2), (2, start));
        let e = p.truncate_to(start - 1).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::OFFSET_OUT_OF_RANGE);
        p.truncate_to(start).await.unwrap();
        assert_eq!(p.log_end_offset(), start);
        assert_eq!(read_all(&p, start).await, vec![]);
        assert_eq!(append(&p, 1, 99, b"again").await, start);
        p.close().await.unwrap();
        drop(p);
        let p = open(&d, c, 0).await;
        assert_eq!(p.log_start_offset(), start);
        assert_eq!(p.log_end_offset(), start + 1);
        assert_eq!(p.leader_epoch_entries(), vec![(6, start)]);
        p.close().await.unwrap();
    });
}

#[test]
fn leader_epoch_cache_answers_across_epochs_survives_reopen_and_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let checkpoint = d.join("t-0/leader-epoch-checkpoint");
    run(move || async move {
        let p = open(&d, cfg(8 * 1024), 0).await;
        assert_eq!(p.end_offset_for_epoch(0), (-1, -1), "empty log");
        p.set_leader_epoch(2);
        for i in 0..10 {
            append(&p, 1, i, &[0u8; 500]).await;
        }
        p.set_leader_epoch(3); // a term that wrote nothing
        p.set_leader_epoch(5);
        for i in 0..15 {
            append(&p, 1, i, &[0u8; 500]).await;
        }
        p.set_leader_epoch(7);
        for i in 0..5 {
            append(&p, 1, i, &[0u8; 500]).await;
        }
        let answers = |p: &Partition| {
            (0..10)
                .map(|e| p.end_offset_for_epoch(e))
                .collect::<Vec<_>>()
        };
        let want = vec![
            (0, 0), // older than the earliest: (epoch, earliest start)
            (1, 0),
            (2, 10),
            (2, 10), // 3 wrote nothing: its floor is 2
            (2, 10),
            (5, 25),
            (5, 25),
            (7, 30), // the latest: the log end
            (7, 30),
            (7, 30),
        ];
        assert_eq!(answers(&p), want);
        assert_eq!(p.end_offset_for_epoch(-1), (-1, -1));
        p.close().await.unwrap();
        drop(p);
        assert_eq!(
            std::fs::read_to_string(&checkpoint).unwrap(),
            "0\n3\n2 0\n5 10\n7 25\n"
        );
        // Reopen: from the checkpoint. Missing, corrupt, running past the log (a crash after
        // a new epoch's entry and before its batch), or behind it: rebuilt from the log.
        let p = open(&d, cfg(8 * 1024), 0).await;
        assert_eq!(answers(&p), want);
        p.close().await.unwrap();
        drop(p);
        for damage in [
            None,
            Some("0\n3\n2 0\n5 10\n"),
            Some("0\n9\n2 0\n"),
            Some("garbage"),
            Some("0\n4\n2 0\n5 10\n7 25\n8 30\n"),
            Some("0\n3\n2 0\n4 10\n7 25\n"),
        ] {
            match damage {
                None => std::fs::remove_file(&checkpoint).unwrap(),
                Some(text) => std::fs::write(&checkpoint, text).unwrap(),
            }
            let p = open(&d, cfg(8 * 1024), 0).await;
            let got = answers(&p);
            // A checkpoint that agrees with the last batch is trusted as it is (epoch 4 for
            // 5 above): only what the log can refute is rebuilt.
            if damage == Some("0\n3\n2 0\n4 10\n7 25\n") {
                assert_eq!(got[4], (4, 25), "trusted");
            } else {
                assert_eq!(got, want, "{damage:?}");
                assert_eq!(
                    std::fs::read_to_string(&checkpoint).unwrap(),
                    "0\n3\n2 0\n5 10\n7 25\n",
                    "{damage:?}: rewritten"
                );
            }
            p.close().await.unwrap();
        }
        // Truncation cuts the cache, in memory and on disk.
        let p = open(&d, cfg(8 * 1024), 0).await;
        std::fs::remove_file(&checkpoint).unwrap();
        drop(p);
        let p = open(&d, cfg(8 * 1024), 0).await;
        p.truncate_to(27).await.unwrap();
        assert_eq!(p.end_offset_for_epoch(7), (7, 27));
        p.truncate_to(12).await.unwrap();
        assert_eq!(p.end_offset_for_epoch(7), (5, 12));
        assert_eq!(p.end_offset_for_epoch(2), (2, 10));
        assert_eq!(
            std::fs::read_to_string(&checkpoint).unwrap(),
            "0\n2\n2 0\n5 10\n"
        );
        p.truncate_to(10).await.unwrap();
        assert_eq!(p.end_offset_for_epoch(7), (2, 10));
        drop(p);
        let p = open(&d, cfg(8 * 1024), 0).await;
        assert_eq!(p.leader_epoch_entries(), vec![(2, 0)]);
        p.set_leader_epoch(8);
        append(&p, 1, 0, b"x").await;
        assert_eq!(p.leader_epoch_entries(), vec![(2, 0), (8, 10)]);
        p.close().await.unwrap();
    });
}

#[test]
fn torn_replicated_write_recovers_to_a_prefix_and_replication_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let leader = open(&d.join("leader"), cfg(1 << 20), 0).await;
        leader_log(&leader).await;
        let full = log_bytes(&leader, 0).await;
        let fd = d.join("follower");
        let faults = Arc::new(Faults::default());
        let follower = open(&fd, faulty(1 << 20, &faults), 0).await;
        replicate(&leader, &follower, 2000).await;
        // A full disk refuses the next set without taking the follower offline.
        follower.truncate_to(20).await.unwrap();
        faults.fail_allocs_after(0);
        let r = leader.read(20, 1 << 20).await.unwrap();
        let mut set = Vec::new();
        for c in r.chunks {
            if let Chunk::File { seg, pos, len } = c {
                set.extend_from_slice(
                    &seg.reader().await.unwrap().read_at(pos, len).await.unwrap(),
                );
            }
        }
        // The truncation freed the preallocated space: the next append needs more.
        let big = Bytes::from(set);
        match follower.append_replicated(big.clone()).await {
            Err(e) => assert_eq!(e.code, ErrorCode::KAFKA_STORAGE_ERROR, "{e}"),
            Ok(a) => panic!("appended on a full disk: {a:?}"),
        }
        assert!(follower.failure().is_none());
        assert_eq!(follower.log_end_offset(), 20);
        faults.heal();
        // Now a write torn half-way through the set: the crash.
        let file_end = bytes_len_below(&full, 20) as u64;
        faults.tear_at(file_end + 3000, 0);
        assert!(follower.append_replicated(big).await.is_err());
        drop(follower);
        let follower = open(&fd, cfg(1 << 20), 0).await;
        let kept = follower.log_end_offset();
        assert!((20..leader.log_end_offset()).contains(&kept), "{kept}");
        let got = log_bytes(&follower, 0).await;
        assert_eq!(got, full[..got.len()], "a prefix of the leader's log");
        replicate(&leader, &follower, 1 << 20).await;
        assert_eq!(log_bytes(&follower, 0).await, full);
        assert_eq!(
            producer_view(&follower, &probes()).await,
            producer_view(&leader, &probes()).await
        );
        assert_eq!(
            follower.leader_epoch_entries(),
            leader.leader_epoch_entries()
        );
        follower.close().await.unwrap();
        leader.close().await.unwrap();
    });
}

/// Bytes of the whole batches below offset `o` in a log's bytes.
fn bytes_len_below(log: &[u8], o: i64) -> usize {
    let mut at = 0;
    while at < log.len() {
        let pre = batch::BatchPrefix::parse(&log[at..]).unwrap();
        if pre.base_offset >= o {
            break;
        }
        at += pre.len;
    }
    at
}

#[test]
fn truncate_waits_for_writes_still_queued_and_interleaves_with_appends() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let mut c = cfg(16 * 1024);
        c.flush = FlushPolicy::IntervalMs(1000);
        let p = open(&d, c.clone(), 1 << 20).await;
        let mut targets = Vec::new();
        for i in 0..40 {
            let bytes = Bytes::from(make_batch(1, i, &[i as u8; 900]));
            let infos = validate_produce(&bytes, 1 << 20).unwrap();
            targets.push(p.append(&bytes, &infos).await.unwrap().durable_target);
        }
        // Not waited for: the cut drains the queue (writes and segment seals) first.
        p.truncate_to(25).await.unwrap();
        assert_eq!((p.log_end_offset(), p.durable_offset()), (25, 25));
        let kept = read_all(&p, 0).await;
        assert_eq!(kept.len(), 25);
        assert!(kept
            .iter()
            .enumerate()
            .all(|(i, (o, b))| *o == i as i64 && b[..900] == [i as u8; 900]));
        // Appends after the cut land at it, also before anything of them is durable.
        let bytes = Bytes::from(make_batch(1, 99, b"after"));
        let infos = validate_produce(&bytes, 1 << 20).unwrap();
        let a = p.append(&bytes, &infos).await.unwrap();
        assert_eq!(a.base_offset, 25);
        p.truncate_to(26).await.unwrap(); // at the end: only drains
        assert_eq!(p.durable_offset(), 26);
        p.close().await.unwrap();
        drop(p);
        let p = open(&d, c, 0).await;
        assert_eq!(p.log_end_offset(), 26);
        assert_eq!(read_all(&p, 25).await, vec![(25, b"after\0".to_vec())]);
        p.close().await.unwrap();
    });
}
