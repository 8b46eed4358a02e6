//! Recovery of a segment whose bytes are arbitrary (torn writes, garbage, a valid prefix then
//! noise): opening the partition must not panic, and what it then serves must be whole
//! batches with good CRCs and contiguous offsets.
#![no_main]
use flumen::config::{FlushPolicy, TimestampType};
use flumen::log::{Chunk, LogConfig, Partition, TailCache};
use flumen::protocol::batch::{self, BatchPrefix};
use glommio::{LocalExecutor, LocalExecutorBuilder};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

thread_local! {
    static EX: LocalExecutor = LocalExecutorBuilder::default().make().expect("executor");
}

fn data_dir() -> PathBuf {
    std::env::temp_dir().join(format!("flumen-fuzz-recovery-{}", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let dir = data_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let part_dir = dir.join(Partition::dir_name("f", 0));
    std::fs::create_dir_all(&part_dir).unwrap();
    std::fs::write(part_dir.join("00000000000000000000.log"), data).unwrap();
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        segment_ms: i64::MAX / 2,
        retention_ms: -1,
        retention_bytes: -1,
        index_interval_bytes: 256,
        flush: FlushPolicy::IntervalMs(1000),
        timestamp_type: TimestampType::CreateTime,
        write_buffer_bytes: 1 << 20,
        producer_id_expiration_ms: 86_400_000,
        faults: None,
        ..LogConfig::unlimited()
    };
    EX.with(|ex| {
        ex.run(async {
            let p = Partition::open(&dir, "f", 0, cfg, TailCache::new(1 << 20))
                .await
                .expect("recovery cuts what it cannot use; it does not fail");
            let mut next = p.log_start_offset();
            let hw = p.durable_offset();
            while next < hw {
                let r = p
                    .read(next, 1 << 20)
                    .await
                    .expect("a recovered range reads");
                assert!(!r.chunks.is_empty(), "nothing served at {next} below {hw}");
                for c in r.chunks {
                    let bytes = match c {
                        Chunk::Mem(b) => b.to_vec(),
                        Chunk::File { seg, pos, len } => {
                            let f = seg.reader().await.unwrap();
                            f.read_at(pos, len).await.unwrap().to_vec()
                        }
                    };
                    let mut at = 0;
                    while at < bytes.len() {
                        let pre = BatchPrefix::parse(&bytes[at..]).expect("whole batches");
                        let b = &bytes[at..at + pre.len];
                        assert!(batch::crc_ok(b), "a served batch has a bad CRC");
                        assert_eq!(pre.base_offset, next, "offsets are contiguous");
                        next = pre.next_offset();
                        at += pre.len;
                    }
                }
            }
            p.close().await.expect("close");
        })
    });
});
