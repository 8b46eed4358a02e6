//! Topic configs: which Kafka topic configs Flumen honours, and how a topic's overrides map
//! onto the broker defaults to give its log's settings.

use crate::config::{Config, FlushPolicy};
use crate::log::LogConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a topic config does in Flumen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Honoured: the log, the produce path or the controller uses it.
    Honoured,
    /// Accepted and kept (tools set it, and describe shows it) without effect here; the text
    /// says why.
    NoOp(&'static str),
}

/// The values a topic config may take.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// An integer in [min, max].
    Int(i64, i64),
    /// A number in [min, max].
    Double(f64, f64),
    Bool,
    /// One of these (with the reason others are refused, if they are Kafka values).
    OneOf(&'static [&'static str], &'static str),
    /// A comma-separated list of these.
    ListOf(&'static [&'static str], &'static str),
}

/// One topic config as Kafka documents it (3.9), and what Flumen makes of it.
struct Spec {
    name: &'static str,
    kind: ConfigType,
    check: Check,
    effect: Effect,
    doc: &'static str,
}

const LONG_MAX: i64 = i64::MAX;
const INT_MAX: i64 = i32::MAX as i64;

/// Every topic config Kafka documents, in name order.
const SPECS: &[Spec] = &[
    Spec {
        name: "cleanup.policy",
        kind: ConfigType::List,
        check: Check::ListOf(&["delete", "compact"], ""),
        effect: Effect::Honoured,
        doc:
            "delete: whole segments past retention go; compact: the latest record of each key stays",
    },
    Spec {
        name: "compression.type",
        kind: ConfigType::String,
        check: Check::OneOf(
            &["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"],
            "",
        ),
        effect: Effect::Honoured,
        doc: "producer: batches are stored as produced; a codec: batches in another are recompressed with it",
    },
    Spec {
        name: "delete.retention.ms",
        kind: ConfigType::Long,
        check: Check::Int(0, LONG_MAX),
        effect: Effect::Honoured,
        doc: "how long tombstones stay in a compacted topic",
    },
    Spec {
        name: "file.delete.delay.ms",
        kind: ConfigType::Long,
        check: Check::Int(0, LONG_MAX),
        effect: Effect::NoOp("a segment past retention is deleted at once"),
        doc: "wait before a deleted segment's file goes",
    },
    Spec {
        name: "flush.messages",
        kind: ConfigType::Long,
        check: Check::Int(1, LONG_MAX),
        effect: Effect::Honoured,
        doc: "fdatasync once this many records are written and not yet synced (1: before \
              every acknowledgement)",
    },
    Spec {
        name: "flush.ms",
        kind: ConfigType::Long,
        check: Check::Int(0, LONG_MAX),
        effect: Effect::Honoured,
        doc: "fdatasync at most this long after a write (0: before every acknowledgement)",
    },
    Spec {
        name: "follower.replication.throttled.replicas",
        kind: ConfigType::List,
        check: Check::ListOf(&[], "replication throttling is not built"),
        effect: Effect::NoOp("only the empty list: replication throttling is not built"),
        doc: "replicas whose follower fetches are throttled",
    },
    Spec {
        name: "index.interval.bytes",
        kind: ConfigType::Int,
        check: Check::Int(1, INT_MAX),
        effect: Effect::Honoured,
        doc: "one offset-index entry per this many log bytes",
    },
    Spec {
        name: "leader.replication.throttled.replicas",
        kind: ConfigType::List,
        check: Check::ListOf(&[], "replication throttling is not built"),
        effect: Effect::NoOp("only the empty list: replication throttling is not built"),
        doc: "replicas whose leader-side replication is throttled",
    },
    Spec {
        name: "local.retention.bytes",
        kind: ConfigType::Long,
        check: Check::Int(-2, LONG_MAX),
        effect: Effect::NoOp("tiered storage only (Flumen keeps every segment local)"),
        doc: "local part of a tiered topic by size",
    },
    Spec {
        name: "local.retention.ms",
        kind: ConfigType::Long,
        check: Check::Int(-2, LONG_MAX),
        effect: Effect::NoOp("tiered storage only (Flumen keeps every segment local)"),
        doc: "local part of a tiered topic by age",
    },
    Spec {
        name: "max.compaction.lag.ms",
        kind: ConfigType::Long,
        check: Check::Int(1, LONG_MAX),
        effect: Effect::Honoured,
        doc: "longest a record stays uncompacted",
    },
    Spec {
        name: "max.message.bytes",
        kind: ConfigType::Int,
        check: Check::Int(0, INT_MAX),
        effect: Effect::Honoured,
        doc: "largest record batch a producer may write (MESSAGE_TOO_LARGE past it)",
    },
    Spec {
        name: "message.downconversion.enable",
        kind: ConfigType::Boolean,
        check: Check::Bool,
        effect: Effect::NoOp("Flumen stores and serves record batch v2 only: nothing to convert"),
        doc: "down-conversion for old fetch versions",
    },
    Spec {
        name: "message.format.version",
        kind: ConfigType::String,
        check: Check::OneOf(
            &["3.0", "3.0-IV1", "3.9", "3.9-IV0"],
            "Flumen writes record batch v2 (message format 3.0 and later) only",
        ),
        effect: Effect::NoOp("deprecated in Kafka 3.0; batches are always v2"),
        doc: "on-disk message format",
    },
    Spec {
        name: "message.timestamp.after.max.ms",
        kind: ConfigType::Long,
        check: Check::Int(0, LONG_MAX),
        effect: Effect::Honoured,
        doc: "with CreateTime: a batch timestamped more than this after the broker's clock is \
              refused (INVALID_TIMESTAMP; the batch's first and largest timestamps are checked)",
    },
    Spec {
        name: "message.timestamp.before.max.ms",
        kind: ConfigType::Long,
        check: Check::Int(0, LONG_MAX),
        effect: Effect::Honoured,
        doc: "with CreateTime: a batch timestamped more than this before the broker's clock is \
              refused (INVALID_TIMESTAMP; the batch's first and largest timestamps are checked)",
    },
    Spec {
        name: "message.timestamp.difference.max.ms",
        kind: ConfigType::Long,
        check: Check::Int(0, LONG_MAX),
        effect: Effect::Honoured,
        doc: "deprecated: both of the two above at once, where they are not set",
    },
    Spec {
        name: "message.timestamp.type",
        kind: ConfigType::String,
        check: Check::OneOf(&["CreateTime", "LogAppendTime"], ""),
        effect: Effect::Honoured,
        doc: "CreateTime or LogAppendTime",
    },
    Spec {
        name: "min.cleanable.dirty.ratio",
        kind: ConfigType::Double,
        check: Check::Double(0.0, 1.0),
        effect: Effect::Honoured,
        doc: "share of a compacted log that must be dirty before it is cleaned",
    },
    Spec {
        name: "min.compaction.lag.ms",
        kind: ConfigType::Long,
        check: Check::Int(0, LONG_MAX),
        effect: Effect::Honoured,
        doc: "shortest a record stays uncompacted",
    },
    Spec {
        name: "min.insync.replicas",
        kind: ConfigType::Int,
        check: Check::Int(1, INT_MAX),
        effect: Effect::Honoured,
        doc: "fewest in-sync replicas an acks=all write needs (NOT_ENOUGH_REPLICAS below)",
    },
    Spec {
        name: "preallocate",
        kind: ConfigType::Boolean,
        check: Check::Bool,
        effect: Effect::NoOp("segments are always preallocated, in steps, as they fill"),
        doc: "preallocate segment files",
    },
    Spec {
        name: "remote.log.copy.disable",
        kind: ConfigType::Boolean,
        check: Check::Bool,
        effect: Effect::NoOp("tiered storage only"),
        doc: "stop copying segments to remote storage",
    },
    Spec {
        name: "remote.log.delete.on.disable",
        kind: ConfigType::Boolean,
        check: Check::Bool,
        effect: Effect::NoOp("tiered storage only"),
        doc: "delete remote segments when tiered storage is turned off",
    },
    Spec {
        name: "remote.storage.enable",
        kind: ConfigType::Boolean,
        check: Check::OneOf(&["false"], "tiered storage is not part of Flumen"),
        effect: Effect::NoOp("only false: tiered storage is not part of Flumen"),
        doc: "tiered storage for this topic",
    },
    Spec {
        name: "retention.bytes",
        kind: ConfigType::Long,
        check: Check::Int(-1, LONG_MAX),
        effect: Effect::Honoured,
        doc: "oldest segments go while the partition is larger; -1 keeps all",
    },
    Spec {
        name: "retention.ms",
        kind: ConfigType::Long,
        check: Check::Int(-1, LONG_MAX),
        effect: Effect::Honoured,
        doc: "segments older than this go; -1 keeps forever",
    },
    Spec {
        name: "segment.bytes",
        kind: ConfigType::Int,
        check: Check::Int(64 * 1024, INT_MAX),
        effect: Effect::Honoured,
        doc: "segment roll by size",
    },
    Spec {
        name: "segment.index.bytes",
        kind: ConfigType::Int,
        check: Check::Int(4, INT_MAX),
        effect: Effect::NoOp("Flumen's indexes grow with their segment; segment.bytes bounds both"),
        doc: "largest offset index of a segment",
    },
    Spec {
        name: "segment.jitter.ms",
        kind: ConfigType::Long,
        check: Check::Int(0, LONG_MAX),
        effect: Effect::Honoured,
        doc: "each segment rolls up to this much before segment.ms (spread per segment), so \
              partitions created together do not all roll at once",
    },
    Spec {
        name: "segment.ms",
        kind: ConfigType::Long,
        check: Check::Int(1, LONG_MAX),
        effect: Effect::Honoured,
        doc: "segment roll by age",
    },
    Spec {
        name: "unclean.leader.election.enable",
        kind: ConfigType::Boolean,
        check: Check::Bool,
        effect: Effect::Honoured,
        doc: "an out-of-sync replica may lead when no in-sync one is left, losing what only \
              the ISR held",
    },
];

fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// What the broker gives a topic that does not set `name` (Kafka's defaults where Flumen
/// has no broker setting of its own).
fn broker_value(cfg: &Config, name: &str) -> String {
    let ts = match cfg.message_timestamp_type {
        crate::config::TimestampType::CreateTime => "CreateTime",
        crate::config::TimestampType::LogAppendTime => "LogAppendTime",
    };
    match name {
        "cleanup.policy" => cfg.cleanup_policy.clone(),
        "compression.type" => "producer".into(),
        "delete.retention.ms" => "86400000".into(),
        "file.delete.delay.ms" => "60000".into(),
        "flush.messages" => LONG_MAX.to_string(),
        "flush.ms" => match cfg.flush_policy() {
            crate::config::FlushPolicy::EveryWrite => "0".into(),
            crate::config::FlushPolicy::IntervalMs(ms) => ms.to_string(),
        },
        "follower.replication.throttled.replicas" | "leader.replication.throttled.replicas" => {
            String::new()
        }
        "index.interval.bytes" => cfg.index_interval_bytes.to_string(),
        "local.retention.bytes" | "local.retention.ms" => "-2".into(),
        "max.compaction.lag.ms" => LONG_MAX.to_string(),
        "max.message.bytes" => cfg.max_batch_bytes.to_string(),
        "message.downconversion.enable" => "true".into(),
        "message.format.version" => "3.0-IV1".into(),
        "message.timestamp.after.max.ms"
        | "message.timestamp.before.max.ms"
        | "message.timestamp.difference.max.ms" => LONG_MAX.to_string(),
        "message.timestamp.type" => ts.into(),
        "min.cleanable.dirty.ratio" => "0.5".into(),
        "min.compaction.lag.ms" => "0".into(),
        "min.insync.replicas" => cfg.min_insync_replicas.to_string(),
        "preallocate" => "false".into(),
        "remote.log.copy.disable" | "remote.log.delete.on.disable" | "remote.storage.enable" => {
            "false".into()
        }
        "retention.bytes" => cfg.retention_bytes.to_string(),
        "retention.ms" => cfg.retention_ms.to_string(),
        "segment.bytes" => cfg.segment_bytes.to_string(),
        "segment.index.bytes" => "10485760".into(),
        "segment.jitter.ms" => "0".into(),
        "segment.ms" => cfg.segment_ms.to_string(),
        "unclean.leader.election.enable" => cfg.unclean_leader_election_enable.to_string(),
        _ => String::new(),
    }
}

/// Maps a topic's config overrides onto the broker defaults.
/// The internal topics are always compacted (their records are keyed state, and a tombstone
/// forgets a key), whatever their stored configs say: topics created before compaction
/// existed have none.
pub fn log_config(cfg: &Config, topic: &str, overrides: &BTreeMap<String, String>) -> LogConfig {
    // Values are checked trimmed (check_topic_config), so they are read trimmed.
    let num = |k: &str, d: i64| {
        overrides
            .get(k)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(d)
    };
    // flush.ms 0 or flush.messages 1: fdatasync before every acknowledgement; else the
    // topic's interval, or the broker's.
    let flush_ms = overrides
        .get("flush.ms")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let flush_messages = num("flush.messages", LONG_MAX);
    let flush = match flush_ms {
        _ if flush_messages == 1 => FlushPolicy::EveryWrite,
        Some(0) => FlushPolicy::EveryWrite,
        Some(ms) => FlushPolicy::IntervalMs(ms),
        None => cfg.flush_policy(),
    };
    let policy = overrides
        .get("cleanup.policy")
        .map(String::as_str)
        .unwrap_or(&cfg.cleanup_policy);
    let internal = crate::metadata::is_internal(topic);
    let ratio = overrides
        .get("min.cleanable.dirty.ratio")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.5);
    // message.timestamp.difference.max.ms stands for both bounds where they are not set.
    let diff = num("message.timestamp.difference.max.ms", LONG_MAX);
    LogConfig {
        segment_bytes: num("segment.bytes", cfg.segment_bytes as i64).max(64 * 1024) as u64,
        segment_ms: num("segment.ms", cfg.segment_ms),
        segment_jitter_ms: num("segment.jitter.ms", 0).max(0),
        retention_ms: num("retention.ms", cfg.retention_ms),
        retention_bytes: num("retention.bytes", cfg.retention_bytes),
        index_interval_bytes: num("index.interval.bytes", cfg.index_interval_bytes as i64).max(1)
            as u64,
        flush,
        flush_messages: (flush_messages > 1 && flush_messages < LONG_MAX)
            .then_some(flush_messages as u64),
        timestamp_type: match overrides.get("message.timestamp.type").map(String::as_str) {
            Some("LogAppendTime") => crate::config::TimestampType::LogAppendTime,
            Some("CreateTime") => crate::config::TimestampType::CreateTime,
            _ => cfg.message_timestamp_type,
        },
        timestamp_before_max_ms: num("message.timestamp.before.max.ms", diff),
        timestamp_after_max_ms: num("message.timestamp.after.max.ms", diff),
        max_message_bytes: num("max.message.bytes", cfg.max_batch_bytes as i64)
            .clamp(0, cfg.max_batch_bytes as i64) as usize,
        write_buffer_bytes: cfg.write_buffer_bytes,
        producer_id_expiration_ms: cfg.producer_id_expiration_ms,
        faults: None,
        delete_old_segments: policy_has(policy, "delete") && !internal,
        compact: policy_has(policy, "compact") || internal,
        min_cleanable_dirty_ratio: ratio,
        min_compaction_lag_ms: num("min.compaction.lag.ms", 0).max(0),
        max_compaction_lag_ms: num("max.compaction.lag.ms", LONG_MAX).max(1),
        delete_retention_ms: num("delete.retention.ms", 86_400_000).max(0),
    }
}

/// Whether a `cleanup.policy` value (a comma-separated list) names `which`.
pub fn policy_has(policy: &str, which: &str) -> bool {
    policy.split(',').any(|p| p.trim() == which)
}

/// The topic's `min.insync.replicas`, else the broker's.
pub fn min_insync_replicas(cfg: &Config, overrides: &BTreeMap<String, String>) -> usize {
    overrides
        .get("min.insync.replicas")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(cfg.min_insync_replicas.max(1) as usize)
}

/// Checks a topic config override: a config Kafka documents, with a value Flumen accepts.
/// Err says why (the config's name first).
pub fn check_topic_config(key: &str, value: &str) -> Result<(), String> {
    let Some(sp) = spec(key) else {
        return Err(format!("unknown topic config {key}"));
    };
    match sp.check {
        Check::Int(min, max) => match value.trim().parse::<i64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(()),
            _ if max == LONG_MAX => {
                Err(format!("{key} must be an integer >= {min}, got {value:?}"))
            }
            _ => Err(format!(
                "{key} must be an integer in [{min}, {max}], got {value:?}"
            )),
        },
        Check::Double(min, max) => match value.trim().parse::<f64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(()),
            _ => Err(format!(
                "{key} must be a number in [{min}, {max}], got {value:?}"
            )),
        },
        Check::Bool => match value {
            "true" | "false" => Ok(()),
            _ => Err(format!("{key} must be true or false, got {value:?}")),
        },
        Check::OneOf(allowed, why) => {
            if allowed.contains(&value) {
                Ok(())
            } else if why.is_empty() {
                Err(format!("{key} must be one of {allowed:?}, got {value:?}"))
            } else {
                Err(format!("{key}={value}: {why}"))
            }
        }
        Check::ListOf(allowed, why) => {
            let items: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .collect();
            if allowed.is_empty() && items.is_empty() {
                return Ok(());
            }
            if items.is_empty() {
                return Err(format!("{key} must name at least one of {allowed:?}"));
            }
            match items.iter().find(|x| !allowed.contains(x)) {
                None => Ok(()),
                Some(x) if why.is_empty() => Err(format!("{key}: {x:?} is not one of {allowed:?}")),
                Some(x) => Err(format!("{key}={x}: {why}")),
            }
        }
    }
}

/// One change to a topic's config overrides: IncrementalAlterConfigs' operations (SET,
/// DELETE, APPEND, SUBTRACT); AlterConfigs is a SET of each key it names over no overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConfigOp {
    Set(String),
    /// Back to the broker's value.
    Delete,
    /// Adds items to a list config (cleanup.policy).
    Append(String),
    /// Removes items from a list config.
    Subtract(String),
}

/// Topic configs whose value is a comma-separated list (APPEND and SUBTRACT apply).
fn is_list(key: &str) -> bool {
    spec(key).is_some_and(|s| s.kind == ConfigType::List)
}

/// The overrides after `ops` (applied in order to `current`, or to no overrides when
/// `replace`, as AlterConfigs does), every resulting value checked; Err names the config
/// and why (Kafka's INVALID_CONFIG).
pub fn altered_configs(
    current: &BTreeMap<String, String>,
    ops: &[(String, ConfigOp)],
    replace: bool,
    defaults: &BTreeMap<&'static str, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = if replace {
        BTreeMap::new()
    } else {
        current.clone()
    };
    for (key, op) in ops {
        if !defaults.contains_key(key.as_str()) {
            return Err(format!("unknown or unsupported topic config {key}"));
        }
        let items = |out: &BTreeMap<String, String>| -> Vec<String> {
            let v = out.get(key).or(defaults.get(key.as_str()));
            v.map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
        };
        match op {
            ConfigOp::Set(v) => {
                check_topic_config(key, v)?;
                out.insert(key.clone(), v.clone());
            }
            ConfigOp::Delete => {
                out.remove(key);
            }
            ConfigOp::Append(v) | ConfigOp::Subtract(v) => {
                if !is_list(key) {
                    return Err(format!(
                        "{key} is not a list: APPEND and SUBTRACT apply to list configs only"
                    ));
                }
                let mut list = items(&out);
                for x in v.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                    if matches!(op, ConfigOp::Append(_)) {
                        if !list.iter().any(|y| y == x) {
                            list.push(x.to_string());
                        }
                    } else {
                        list.retain(|y| y != x);
                    }
                }
                let joined = list.join(",");
                check_topic_config(key, &joined)?;
                out.insert(key.clone(), joined);
            }
        }
    }
    Ok(out)
}

/// Every topic config, with the broker's value for it (what a topic without an override
/// gets).
pub fn topic_defaults(cfg: &Config) -> BTreeMap<&'static str, String> {
    SPECS
        .iter()
        .map(|s| (s.name, broker_value(cfg, s.name)))
        .collect()
}

/// Where a described config's value comes from (Kafka's ConfigSource codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic.
    DynamicTopic = 1,
    /// From the broker's configuration (file, flags or its defaults).
    StaticBroker = 4,
}

/// Kafka's ConfigType codes, as DescribeConfigs v3+ reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
}

/// One config as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct DescribedConfig {
    pub name: &'static str,
    pub value: String,
    pub source: ConfigSource,
    pub read_only: bool,
    pub kind: ConfigType,
    pub doc: String,
}

/// Every topic config, with the topic's value (its override, else the broker's); the
/// documentation says when Flumen accepts a config without acting on it.
pub fn describe_topic(cfg: &Config, overrides: &BTreeMap<String, String>) -> Vec<DescribedConfig> {
    SPECS
        .iter()
        .map(|sp| {
            let (value, source) = match overrides.get(sp.name) {
                Some(v) => (v.clone(), ConfigSource::DynamicTopic),
                None => (broker_value(cfg, sp.name), ConfigSource::StaticBroker),
            };
            let doc = match sp.effect {
                Effect::Honoured => sp.doc.to_string(),
                Effect::NoOp(why) => format!("{} (accepted, no effect here: {why})", sp.doc),
            };
            DescribedConfig {
                name: sp.name,
                value,
                source,
                read_only: false,
                kind: sp.kind,
                doc,
            }
        })
        .collect()
}

/// The broker's configs under Kafka's names (all read-only: Flumen has no dynamic broker
/// configs yet; they change with a restart).
pub fn describe_broker(cfg: &Config) -> Vec<DescribedConfig> {
    let entry = |name, value: String, kind, doc: &str| DescribedConfig {
        name,
        value,
        source: ConfigSource::StaticBroker,
        read_only: true,
        kind,
        doc: doc.to_string(),
    };
    vec![
        entry(
            "node.id",
            cfg.node_id.to_string(),
            ConfigType::Int,
            "this broker's id",
        ),
        entry(
            "broker.rack",
            cfg.broker_rack.clone().unwrap_or_default(),
            ConfigType::String,
            "rack of this broker",
        ),
        entry(
            "auto.create.topics.enable",
            cfg.auto_create_topics.to_string(),
            ConfigType::Boolean,
            "Metadata creates unknown topics",
        ),
        entry(
            "num.partitions",
            cfg.default_partitions.to_string(),
            ConfigType::Int,
            "partitions of a new topic by default",
        ),
        entry(
            "default.replication.factor",
            cfg.default_replication_factor.to_string(),
            ConfigType::Short,
            "replicas of a new topic by default",
        ),
        entry(
            "message.max.bytes",
            cfg.max_batch_bytes.to_string(),
            ConfigType::Int,
            "largest record batch",
        ),
        entry(
            "log.retention.ms",
            cfg.retention_ms.to_string(),
            ConfigType::Long,
            "retention by age",
        ),
        entry(
            "log.retention.bytes",
            cfg.retention_bytes.to_string(),
            ConfigType::Long,
            "retention by size",
        ),
        entry(
            "log.segment.bytes",
            cfg.segment_bytes.to_string(),
            ConfigType::Int,
            "segment roll by size",
        ),
        entry(
            "log.flush.interval.ms",
            cfg.flush_interval_ms.to_string(),
            ConfigType::Long,
            "0: fdatasync before every acknowledgement",
        ),
        entry(
            "offsets.topic.num.partitions",
            cfg.offsets_topic_partitions.to_string(),
            ConfigType::Int,
            "partitions of __consumer_offsets",
        ),
        entry(
            "transaction.state.log.num.partitions",
            cfg.transaction_state_partitions.to_string(),
            ConfigType::Int,
            "partitions of __transaction_state",
        ),
        entry(
            "broker.session.timeout.ms",
            cfg.broker_session_timeout_ms.to_string(),
            ConfigType::Int,
            "a silent broker is fenced after this",
        ),
        entry(
            "socket.request.max.bytes",
            cfg.max_request_bytes.to_string(),
            ConfigType::Int,
            "largest request frame",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_config_is_described_and_no_ops_say_so() {
        let cfg = Config::default();
        let all = describe_topic(&cfg, &BTreeMap::new());
        assert_eq!(all.len(), SPECS.len());
        for c in &all {
            assert!(
                check_topic_config(c.name, &c.value).is_ok(),
                "{}={}",
                c.name,
                c.value
            );
        }
        let doc = |n: &str| all.iter().find(|c| c.name == n).unwrap().doc.clone();
        assert!(doc("preallocate").contains("no effect here"));
        assert!(!doc("retention.ms").contains("no effect"));
        // flush.ms 0 and flush.messages 1 both mean fdatasync before every acknowledgement.
        for kv in [("flush.ms", "0"), ("flush.messages", "1")] {
            let c = log_config(&cfg, "t", &map(&[kv]));
            assert_eq!(c.flush, FlushPolicy::EveryWrite, "{kv:?}");
        }
        let c = log_config(
            &cfg,
            "t",
            &map(&[("flush.ms", "50"), ("flush.messages", "100")]),
        );
        assert_eq!(
            (c.flush, c.flush_messages),
            (FlushPolicy::IntervalMs(50), Some(100))
        );
        // The deprecated difference bound stands in for both where they are not set.
        let c = log_config(
            &cfg,
            "t",
            &map(&[
                ("message.timestamp.difference.max.ms", "10"),
                ("message.timestamp.after.max.ms", "20"),
            ]),
        );
        assert_eq!(
            (c.timestamp_before_max_ms, c.timestamp_after_max_ms),
            (10, 20)
        );
    }

    #[test]
    fn config_operations_set_delete_append_subtract_and_replace() {
        let defaults = topic_defaults(&Config::default());
        let cur = map(&[("retention.ms", "5"), ("segment.ms", "60000")]);
        let set = |k: &str, v: &str| (k.to_string(), ConfigOp::Set(v.to_string()));
        let after = altered_configs(
            &cur,
            &[
                set("retention.ms", "7"),
                ("segment.ms".into(), ConfigOp::Delete),
            ],
            false,
            &defaults,
        )
        .unwrap();
        assert_eq!(after, map(&[("retention.ms", "7")]));
        // AlterConfigs: what is not named goes back to the broker's value.
        let after = altered_configs(&cur, &[set("retention.bytes", "1024")], true, &defaults);
        assert_eq!(after.unwrap(), map(&[("retention.bytes", "1024")]));
        // A list config: APPEND of what is there already changes nothing, SUBTRACT of the only
        // supported policy leaves an empty (refused) list.
        let append = (
            "cleanup.policy".to_string(),
            ConfigOp::Append("delete".into()),
        );
        let after = altered_configs(&cur, &[append], false, &defaults).unwrap();
        assert_eq!(after["cleanup.policy"], "delete");
        let sub = (
            "cleanup.policy".to_string(),
            ConfigOp::Subtract("delete".into()),
        );
        assert!(altered_configs(&cur, &[sub], false, &defaults).is_err());
        // Refused, each naming its config: unknown, bad value, APPEND to a non-list.
        for (op, name) in [
            (set("no.such", "1"), "no.such"),
            (set("retention.ms", "x"), "retention.ms"),
            (
                ("retention.ms".to_string(), ConfigOp::Append("1".into())),
                "retention.ms",
            ),
        ] {
            let e = altered_configs(&cur, &[op], false, &defaults).unwrap_err();
            assert!(e.contains(name), "{e}");
        }
    }
}
