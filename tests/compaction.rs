//! Log compaction on its own, on real files under glommio: a keyed log cleaned to the latest
//! record of each key (tombstones, transactions, offsets kept), the result surviving a
//! restart, and a crash at each step of the segment swap simulated from the files a real pass
//! leaves: the log comes back either as it was or as cleaned, never both, never neither.

mod common;

use bytes::Bytes;
use flumen::config::{FlushPolicy, TimestampType};
use flumen::log::{CleanStats, LogConfig, Partition, TailCache, Throttle};
use flumen::protocol::batch::{self, encode_records, validate_produce};
use glommio::LocalExecutorBuilder;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

fn cfg(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 256,
        flush: FlushPolicy::EveryWrite,
        timestamp_type: TimestampType::CreateTime,
        compact: true,
        delete_old_segments: false,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: 0,
        ..LogConfig::unlimited()
    }
}

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    LocalExecutorBuilder::default()
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

async fn open(dir: &Path, c: LogConfig) -> Rc<Partition> {
    Partition::open(dir, "t", 0, c, TailCache::new(0))
        .await
        .unwrap()
}

/// Appends one batch of (key, value) records (None value: a tombstone).
async fn put(p: &Partition, kvs: &[(&str, Option<String>)], ts: i64) {
    let kvs: Vec<(Option<Bytes>, Option<Bytes>)> = kvs
        .iter()
        .map(|(k, v)| {
            (
                Some(Bytes::copy_from_slice(k.as_bytes())),
                v.as_ref().map(|v| Bytes::copy_from_slice(v.as_bytes())),
            )
        })
        .collect();
    let bytes = encode_records(&kvs, ts, None);
    let infos = validate_produce(&bytes, 1 << 20).unwrap();
    let a = p.append(&bytes, &infos).await.unwrap();
    p.wait_durable(a.durable_target).await.unwrap();
}

/// Every record in the log: (offset, key, value).
async fn records(p: &Partition) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut offset = p.log_start_offset();
    loop {
        let r = p.read(offset, 1 << 20).await.unwrap();
        if r.chunks.is_empty() {
            return out;
        }
        let bytes = common::chunk_bytes(r.chunks).await;
        let mut buf = Bytes::from(bytes);
        while !buf.is_empty() {
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).unwrap();
            for rec in set.records {
                let s = |b: Option<Bytes>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
                out.push((rec.offset, s(rec.key).unwrap(), s(rec.value)));
            }
        }
        offset = r.next_offset;
    }
}

/// The latest value of each key as a reader of `recs` sees it (tombstones remove keys).
fn state(recs: &[(i64, String, Option<String>)]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (_, k, v) in recs {
        match v {
            Some(v) => m.insert(k.clone(), v.clone()),
            None => m.remove(k),
        };
    }
    m
}

/// 20 keys, 30 rounds of updates in batches of 5, key 0..4 deleted in the last round.
async fn keyed_workload(p: &Partition) {
    for round in 0..30 {
        for chunk in 0..4 {
            let kvs: Vec<(String, Option<String>)> = (chunk * 5..chunk * 5 + 5)
                .map(|k| {
                    let v = if round == 29 && k < 5 {
                        None
                    } else {
                        Some(format!("v{round}-{}", "x".repeat(40)))
                    };
                    (format!("k{k}"), v)
                })
                .collect();
            let refs: Vec<(&str, Option<String>)> =
                kvs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            put(p, &refs, 1_000).await;
        }
    }
    // Enough of another key to roll the tombstones' segment.
    for i in 0..40 {
        put(
            p,
            &[("filler", Some(format!("f{i}-{}", "y".repeat(40))))],
            1_000,
        )
        .await;
    }
}

fn throttle() -> Throttle {
    Throttle::new(f64::MAX)
}

/// A pass over everything below `hw`, unthrottled, at a clock far past every record.
async fn clean_below(p: &Partition, hw: i64) -> Option<CleanStats> {
    p.clean(i64::MAX / 2, hw, &throttle(), 1 << 20)
        .await
        .unwrap()
}

#[test]
fn cleaning_keeps_the_latest_record_of_each_key_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let p = open(&d, cfg(4096)).await;
        keyed_workload(&p).await;
        let before = records(&p).await;
        let segments = p.segment_count();
        assert!(segments > 10, "{segments} segments");
        let hw = p.log_end_offset();
        let stats = clean_below(&p, hw).await.expect("a pass");
        let after = records(&p).await;
        // Same visible state, each key once, offsets kept, tombstones (0 ms retention) gone.
        assert_eq!(state(&after), state(&before));
        let sealed: Vec<_> = after.iter().filter(|r| r.1 != "filler").collect();
        let keys: std::collections::BTreeSet<_> = sealed.iter().map(|r| &r.1).collect();
        assert_eq!(sealed.len(), keys.len(), "a key twice: {sealed:?}");
        assert!(sealed.iter().all(|r| r.2.is_some()), "a tombstone stayed");
        for r in &after {
            assert!(
                before.contains(r),
                "{r:?} is not a record of the log as written"
            );
        }
        assert!(stats.size_after < stats.size_before / 5, "{stats:?}");
        assert_eq!(p.log_end_offset(), hw);
        // Nothing dirty left: another pass has nothing to do.
        assert!(clean_below(&p, hw).await.is_none());
        p.close().await.unwrap();
        let p = open(&d, cfg(4096)).await;
        assert_eq!(records(&p).await, after);
        // Appends continue at the end.
        put(&p, &[("k7", Some("new".into()))], 2_000).await;
        assert_eq!(state(&records(&p).await)["k7"], "new");
    });
}

#[test]
fn records_newer_than_the_high_watermark_or_the_compaction_lag_stay() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let p = open(&d, cfg(4096)).await;
        keyed_workload(&p).await;
        let before = records(&p).await;
        // Below offset 0 nothing is cleanable.
        assert!(clean_below(&p, 0).await.is_none());
        // min.compaction.lag.ms: every record is at timestamp 1000, the clock at 1500.
        p.set_config(LogConfig {
            min_compaction_lag_ms: 1_000,
            ..cfg(4096)
        });
        let hw = p.log_end_offset();
        assert!(p
            .clean(1_500, hw, &throttle(), 1 << 20)
            .await
            .unwrap()
            .is_none());
        assert_eq!(records(&p).await, before);
        assert!(p
            .clean(5_000, hw, &throttle(), 1 << 20)
            .await
            .unwrap()
            .is_some());
    });
}

type Records = Vec<(i64, String, Option<String>)>;
/// What a crash left: its name, how to make its files over the old log, the log it must read.
type CrashCase<'a> = (&'a str, Box<dyn Fn(&Path) + 'a>, &'a Records);

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn files(dir: &Path, ext: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(ext))
        .collect();
    v.sort();
    v
}

#[test]
fn a_crash_at_each_step_of_the_swap_leaves_the_old_log_or_the_new() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        // The log as written, closed: the "before" state on disk.
        let live = d.join("live");
        let p = open(&live, cfg(4096)).await;
        keyed_workload(&p).await;
        let before = records(&p).await;
        p.close().await.unwrap();
        let old = d.join("old");
        copy_dir(&live.join("t-0"), &old);
        // One pass with segments merged into one (segment.bytes now large): group [0, end).
        let p = open(&live, cfg(4096)).await;
        p.set_config(cfg(1 << 20));
        let hw = p.log_end_offset();
        clean_below(&p, hw).await.expect("a pass");
        let after = records(&p).await;
        p.close().await.unwrap();
        let new_logs = files(&live.join("t-0"), ".log");
        assert_eq!(
            new_logs.len(),
            2,
            "one cleaned segment and the active one: {new_logs:?}"
        );
        let end: i64 = new_logs[1]
            .trim_end_matches(".log")
            .parse()
            .expect(&new_logs[1]);
        let cleaned = std::fs::read(live.join("t-0").join(&new_logs[0])).unwrap();
        let old_logs = files(&old, ".log");
        assert!(old_logs.len() > 3);

        // Each crash point: the files it leaves, and the log recovery must make of them.
        let stem = format!("{:020}-{end}", 0);
        let cases: Vec<CrashCase> = vec![
            (
                "writing the cleaned file",
                Box::new(|dir: &Path| {
                    std::fs::write(
                        dir.join(format!("{stem}.cleaned")),
                        &cleaned[..cleaned.len() / 2],
                    )
                    .unwrap();
                }),
                &before,
            ),
            (
                "the cleaned file whole, not yet renamed",
                Box::new(|dir: &Path| {
                    std::fs::write(dir.join(format!("{stem}.cleaned")), &cleaned).unwrap();
                }),
                &before,
            ),
            (
                "renamed to .swap, nothing deleted yet",
                Box::new(|dir: &Path| {
                    std::fs::write(dir.join(format!("{stem}.swap")), &cleaned).unwrap();
                }),
                &after,
            ),
            (
                "half of the old segments deleted",
                Box::new(|dir: &Path| {
                    std::fs::write(dir.join(format!("{stem}.swap")), &cleaned).unwrap();
                    for name in &old_logs[1..old_logs.len() / 2] {
                        std::fs::remove_file(dir.join(name)).unwrap();
                    }
                }),
                &after,
            ),
            (
                "all old segments and the first one's indexes deleted",
                Box::new(|dir: &Path| {
                    std::fs::write(dir.join(format!("{stem}.swap")), &cleaned).unwrap();
                    for name in &old_logs[1..old_logs.len() - 1] {
                        std::fs::remove_file(dir.join(name)).unwrap();
                    }
                    let _ = std::fs::remove_file(dir.join(format!("{:020}.index", 0)));
                }),
                &after,
            ),
        ];
        for (i, (what, make, want)) in cases.into_iter().enumerate() {
            let data = d.join(format!("case{i}"));
            let dir = data.join("t-0");
            copy_dir(&old, &dir);
            make(&dir);
            let p = open(&data, cfg(4096)).await;
            assert_eq!(&records(&p).await, want, "crash while {what}");
            p.close().await.unwrap();
            let left: Vec<String> = [files(&dir, ".cleaned"), files(&dir, ".swap")].concat();
            assert!(left.is_empty(), "crash while {what}: {left:?} left");
        }
    });
}

#[test]
fn aborted_transactions_go_and_their_markers_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        let p = open(&d, cfg(4096)).await;
        // An aborted transaction writing k1..k3, then plain writes, rolled into sealed
        // segments.
        let (pid, epoch) = (7i64, 0i16);
        let kvs: Vec<(Option<Bytes>, Option<Bytes>)> = (1..4)
            .map(|k| {
                (
                    Some(Bytes::from(format!("k{k}"))),
                    Some(Bytes::from("aborted")),
                )
            })
            .collect();
        let mut txn = encode_records(&kvs, 1_000, Some((pid, epoch))).to_vec();
        txn[batch::OFF_BASE_SEQUENCE..batch::OFF_BASE_SEQUENCE + 4]
            .copy_from_slice(&0i32.to_be_bytes());
        batch::restamp_crc(&mut txn);
        let txn = Bytes::from(txn);
        let infos = validate_produce(&txn, 1 << 20).unwrap();
        let a = p.append(&txn, &infos).await.unwrap();
        p.wait_durable(a.durable_target).await.unwrap();
        p.append_marker(pid, epoch, false, 0).await.unwrap();
        keyed_workload(&p).await;
        let hw = p.log_end_offset();
        clean_below(&p, hw).await.expect("a pass");
        let after = records(&p).await;
        assert!(
            !after.iter().any(|r| r.2.as_deref() == Some("aborted")),
            "aborted records stayed"
        );
        // The marker (retention 0 ms, no record of its transaction left) is gone too: the
        // log starts with the first plain batch's records.
        assert!(after[0].0 >= 4, "{:?}", &after[..2]);
        let committed = p.read_isolated(0, 1 << 20, true).await.unwrap();
        assert!(committed.aborted.is_empty(), "{:?}", committed.aborted);
    });
}

#[test]
fn a_read_that_finds_only_an_emptied_producer_batch_goes_on_to_records() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    run(move || async move {
        // segment.ms 1: every append rolls, so each batch is a segment of its own; and
        // segment.bytes 100 keeps the cleaner from merging them.
        let c = LogConfig {
            segment_ms: 1,
            ..cfg(100)
        };
        let p = open(&d, c).await;
        // Producer 9's only batch (k1=old), then k1=new from a plain batch: cleaning empties
        // producer 9's batch but keeps it (its last sequence), alone in its segment.
        let kvs = vec![(Some(Bytes::from("k1")), Some(Bytes::from("old")))];
        let mut idem = encode_records(&kvs, 1_000, None).to_vec();
        idem[batch::OFF_PRODUCER_ID..batch::OFF_PRODUCER_ID + 8]
            .copy_from_slice(&9i64.to_be_bytes());
        idem[batch::OFF_PRODUCER_EPOCH..batch::OFF_PRODUCER_EPOCH + 2]
            .copy_from_slice(&0i16.to_be_bytes());
        idem[batch::OFF_BASE_SEQUENCE..batch::OFF_BASE_SEQUENCE + 4]
            .copy_from_slice(&0i32.to_be_bytes());
        batch::restamp_crc(&mut idem);
        let idem = Bytes::from(idem);
        let infos = validate_produce(&idem, 1 << 20).unwrap();
        let a = p.append(&idem, &infos).await.unwrap();
        p.wait_durable(a.durable_target).await.unwrap();
        for (k, v) in [("k1", "new"), ("k2", "x"), ("k3", "y")] {
            glommio::timer::sleep(std::time::Duration::from_millis(3)).await;
            put(&p, &[(k, Some(v.to_string()))], 1_000).await;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(3)).await;
        put(&p, &[("k4", Some("z".to_string()))], 1_000).await;
        assert!(p.segment_count() >= 5, "{} segments", p.segment_count());
        let hw = p.log_end_offset();
        clean_below(&p, hw).await.expect("a pass");
        // The batch at offset 0 is kept without records; a read from 0 returns it and the
        // next segment's records, so a client moves on.
        let r = p.read(0, 1 << 20).await.unwrap();
        assert!(r.chunks.len() >= 2, "{} chunks", r.chunks.len());
        let recs = records(&p).await;
        assert_eq!(recs[0].1, "k1");
        assert_eq!(recs[0].2.as_deref(), Some("new"));
        // And a restart rebuilds producer 9's state from the kept batch: its next sequence
        // is 1, a duplicate of sequence 0 answers the original offset.
        p.close().await.unwrap();
        let p = open(&d, cfg(1 << 20)).await;
        let dup = p.append(&idem, &infos).await.unwrap();
        assert_eq!(
            dup.base_offset, 0,
            "the retried batch is a duplicate of offset 0"
        );
    });
}
