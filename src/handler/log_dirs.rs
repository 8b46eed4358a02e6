//! DescribeLogDirs: each data directory of this broker with the partitions it holds (leader
//! or follower replicas) and their sizes, and the directory's filesystem capacity (v4).

use super::{decode, Ctx};
use crate::broker::Broker;
use crate::protocol::errors::ErrorCode;
use crate::protocol::Response;
use bytes::Bytes;
use kafka_protocol::messages::describe_log_dirs_request::DescribeLogDirsRequest;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResponse, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub async fn describe(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: DescribeLogDirsRequest = decode(ctx, body)?;
    // DESCRIBE on the cluster (Kafka answers CLUSTER_AUTHORIZATION_FAILED, and before v3,
    // which has no error field, nothing).
    if let Err(e) = ctx.check_cluster(broker, crate::security::acl::Operation::Describe) {
        return Ok(ctx.respond(&DescribeLogDirsResponse::default().with_error_code(e.0)));
    }
    // None: every partition; else only those asked for.
    let wanted: Option<BTreeSet<(String, i32)>> = req.topics.as_ref().map(|ts| {
        ts.iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.to_string(), *p)))
            .collect()
    });
    let mut dirs: BTreeMap<PathBuf, BTreeMap<String, Vec<(i32, u64)>>> = broker
        .config
        .log_dirs()
        .into_iter()
        .map(|d| (d, BTreeMap::new()))
        .collect();
    for shard in 0..broker.shard.nr_shards {
        for (dir, topic, p, size) in broker.partitions.log_dir_usage_on(shard).await {
            if wanted
                .as_ref()
                .is_some_and(|w| !w.contains(&(topic.clone(), p)))
            {
                continue;
            }
            let parts = dirs.entry(dir).or_default().entry(topic).or_default();
            parts.push((p, size));
        }
    }
    let mut results = Vec::with_capacity(dirs.len());
    for (dir, topics) in dirs {
        let (total, usable) = capacity(&dir).await;
        let topics = topics
            .into_iter()
            .map(|(name, mut parts)| {
                parts.sort_unstable();
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(p, size)| {
                                DescribeLogDirsPartition::default()
                                    .with_partition_index(p)
                                    .with_partition_size(size as i64)
                            })
                            .collect(),
                    )
            })
            .collect();
        let mut r = DescribeLogDirsResult::default()
            .with_log_dir(StrBytes::from_string(dir.display().to_string()))
            .with_error_code(ErrorCode::NONE.0)
            .with_topics(topics);
        if ctx.version >= 4 {
            r = r.with_total_bytes(total).with_usable_bytes(usable);
        }
        results.push(r);
    }
    Ok(ctx.respond(&DescribeLogDirsResponse::default().with_results(results)))
}

/// The filesystem's size and the bytes still free to this process under `dir` (-1, -1 when
/// it cannot be asked).
async fn capacity(dir: &Path) -> (i64, i64) {
    let dir = dir.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || {
            let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
                return (-1, -1);
            };
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            // SAFETY: a valid NUL-terminated path and a statvfs to fill.
            if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
                return (-1, -1);
            }
            let block = st.f_frsize as i64;
            (st.f_blocks as i64 * block, st.f_bavail as i64 * block)
        })
        .await
}
