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

/// A broker config that changes at run time (Kafka's dynamic broker configs): set for the
/// whole cluster (resource name "") or for one broker (its id), kept in the cluster metadata
/// and in force without a restart, in the place of the config file's value.
struct DynamicSpec {
    /// Kafka's broker config name.
    name: &'static str,
    /// The topic config it is the default of (Kafka's synonym), or its own kind, values and
    /// meaning when it is a broker setting alone.
    of: Dynamic,
}

#[derive(Clone, Copy)]
enum Dynamic {
    /// The broker's default for this topic config: checked as the topic config is.
    Topic(&'static str),
    Own(ConfigType, Check, &'static str),
}

const DOUBLE_MAX: f64 = f64::MAX;

/// Every dynamic broker config, in name order.
const DYNAMIC_SPECS: &[DynamicSpec] = &[
    DynamicSpec {
        name: "compression.type",
        of: Dynamic::Topic("compression.type"),
    },
    DynamicSpec {
        name: "log.cleaner.backoff.ms",
        of: Dynamic::Own(
            ConfigType::Long,
            Check::Int(10, LONG_MAX),
            "how long a shard's cleaner sleeps when no partition needs cleaning",
        ),
    },
    DynamicSpec {
        name: "log.cleaner.dedupe.buffer.size",
        of: Dynamic::Own(
            ConfigType::Long,
            Check::Int(1 << 20, LONG_MAX),
            "per shard: memory for the key map of one cleaning pass",
        ),
    },
    DynamicSpec {
        name: "log.cleaner.delete.retention.ms",
        of: Dynamic::Topic("delete.retention.ms"),
    },
    DynamicSpec {
        name: "log.cleaner.io.max.bytes.per.second",
        of: Dynamic::Own(
            ConfigType::Double,
            Check::Double(1.0, DOUBLE_MAX),
            "per shard (Kafka: per broker): bytes per second the cleaner reads and writes at most",
        ),
    },
    DynamicSpec {
        name: "log.cleaner.max.compaction.lag.ms",
        of: Dynamic::Topic("max.compaction.lag.ms"),
    },
    DynamicSpec {
        name: "log.cleaner.min.cleanable.ratio",
        of: Dynamic::Topic("min.cleanable.dirty.ratio"),
    },
    DynamicSpec {
        name: "log.cleaner.min.compaction.lag.ms",
        of: Dynamic::Topic("min.compaction.lag.ms"),
    },
    DynamicSpec {
        name: "log.cleanup.policy",
        of: Dynamic::Topic("cleanup.policy"),
    },
    DynamicSpec {
        name: "log.flush.interval.messages",
        of: Dynamic::Topic("flush.messages"),
    },
    DynamicSpec {
        name: "log.flush.interval.ms",
        of: Dynamic::Topic("flush.ms"),
    },
    DynamicSpec {
        name: "log.index.interval.bytes",
        of: Dynamic::Topic("index.interval.bytes"),
    },
    DynamicSpec {
        name: "log.message.timestamp.after.max.ms",
        of: Dynamic::Topic("message.timestamp.after.max.ms"),
    },
    DynamicSpec {
        name: "log.message.timestamp.before.max.ms",
        of: Dynamic::Topic("message.timestamp.before.max.ms"),
    },
    DynamicSpec {
        name: "log.message.timestamp.difference.max.ms",
        of: Dynamic::Topic("message.timestamp.difference.max.ms"),
    },
    DynamicSpec {
        name: "log.message.timestamp.type",
        of: Dynamic::Topic("message.timestamp.type"),
    },
    DynamicSpec {
        name: "log.preallocate",
        of: Dynamic::Topic("preallocate"),
    },
    DynamicSpec {
        name: "log.retention.bytes",
        of: Dynamic::Topic("retention.bytes"),
    },
    DynamicSpec {
        name: "log.retention.ms",
        of: Dynamic::Topic("retention.ms"),
    },
    DynamicSpec {
        name: "log.roll.jitter.ms",
        of: Dynamic::Topic("segment.jitter.ms"),
    },
    DynamicSpec {
        name: "log.roll.ms",
        of: Dynamic::Topic("segment.ms"),
    },
    DynamicSpec {
        name: "log.segment.bytes",
        of: Dynamic::Topic("segment.bytes"),
    },
    DynamicSpec {
        name: "message.max.bytes",
        of: Dynamic::Topic("max.message.bytes"),
    },
    DynamicSpec {
        name: "min.insync.replicas",
        of: Dynamic::Topic("min.insync.replicas"),
    },
    DynamicSpec {
        name: "unclean.leader.election.enable",
        of: Dynamic::Topic("unclean.leader.election.enable"),
    },
];

fn dynamic_spec(name: &str) -> Option<&'static DynamicSpec> {
    DYNAMIC_SPECS.iter().find(|s| s.name == name)
}

/// The dynamic broker config that is the default of topic config `topic_key`.
fn broker_synonym(topic_key: &str) -> Option<&'static str> {
    DYNAMIC_SPECS
        .iter()
        .find(|s| matches!(s.of, Dynamic::Topic(t) if t == topic_key))
        .map(|s| s.name)
}

/// Dynamic broker configs as the cluster metadata keeps them: by resource name ("" for the
/// cluster-wide default, a broker's id for its own), each a map of config name to value.
pub type BrokerConfigs = BTreeMap<String, BTreeMap<String, String>>;

/// The dynamic value of broker config `key` in force on broker `node`: its own, else the
/// cluster's default, with where it comes from.
pub fn dynamic_value<'a>(
    all: &'a BrokerConfigs,
    node: i32,
    key: &str,
) -> Option<(&'a str, ConfigSource)> {
    let own = all
        .get(&node.to_string())
        .and_then(|m| m.get(key))
        .map(|v| (v.as_str(), ConfigSource::DynamicBroker));
    own.or_else(|| {
        all.get("")
            .and_then(|m| m.get(key))
            .map(|v| (v.as_str(), ConfigSource::DynamicDefaultBroker))
    })
}

/// Broker `node`'s dynamic defaults of topic configs, under the topic configs' names: what a
/// topic without its own override gets in the place of the config file's value.
pub fn dynamic_topic_defaults(all: &BrokerConfigs, node: i32) -> BTreeMap<String, String> {
    if all.is_empty() {
        return BTreeMap::new();
    }
    DYNAMIC_SPECS
        .iter()
        .filter_map(|s| match s.of {
            Dynamic::Topic(t) => {
                dynamic_value(all, node, s.name).map(|(v, _)| (t.to_string(), v.to_string()))
            }
            Dynamic::Own(..) => None,
        })
        .collect()
}

/// A topic's overrides over the broker's dynamic defaults (`dynamic_topic_defaults`): the
/// map `log_config` and `min_insync_replicas` read.
pub fn layered(
    dynamic: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = dynamic.clone();
    out.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

/// A topic config's value where it is not the config file's: the topic's override, else the
/// broker's dynamic default.
pub fn topic_value<'a>(
    all: &'a BrokerConfigs,
    node: i32,
    overrides: &'a BTreeMap<String, String>,
    topic_key: &str,
) -> Option<&'a str> {
    // Read per produce request: with no dynamic broker configs (the usual case) the search
    // for the synonym is skipped.
    overrides.get(topic_key).map(String::as_str).or_else(|| {
        if all.is_empty() {
            return None;
        }
        broker_synonym(topic_key).and_then(|b| dynamic_value(all, node, b).map(|(v, _)| v))
    })
}

/// The log cleaner's settings on broker `node`: (bytes per second, backoff ms, key-map
/// bytes), dynamic values over the config file's.
pub fn cleaner_settings(cfg: &Config, all: &BrokerConfigs, node: i32) -> (f64, u64, u64) {
    let get = |k| dynamic_value(all, node, k).map(|(v, _)| v.trim());
    (
        get("log.cleaner.io.max.bytes.per.second")
            .and_then(|v| v.parse().ok())
            .unwrap_or(cfg.log_cleaner_io_max_bytes_per_second),
        get("log.cleaner.backoff.ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(cfg.log_cleaner_backoff_ms),
        get("log.cleaner.dedupe.buffer.size")
            .and_then(|v| v.parse().ok())
            .unwrap_or(cfg.log_cleaner_dedupe_buffer_bytes),
    )
}

/// The config file's value of a dynamic broker config (its built-in default if not set).
fn static_broker_value(cfg: &Config, sp: &DynamicSpec) -> String {
    match sp.of {
        Dynamic::Topic(t) => broker_value(cfg, t),
        Dynamic::Own(..) => match sp.name {
            "log.cleaner.backoff.ms" => cfg.log_cleaner_backoff_ms.to_string(),
            "log.cleaner.dedupe.buffer.size" => cfg.log_cleaner_dedupe_buffer_bytes.to_string(),
            "log.cleaner.io.max.bytes.per.second" => {
                format_double(cfg.log_cleaner_io_max_bytes_per_second)
            }
            _ => String::new(),
        },
    }
}

/// A double as Kafka prints one (1.7976931348623157E308 for the largest).
fn format_double(v: f64) -> String {
    if v == f64::MAX {
        "1.7976931348623157E308".into()
    } else {
        v.to_string()
    }
}

/// Checks a dynamic broker config's value: a dynamic broker config, with a value its topic
/// config (or its own kind) accepts; `message.max.bytes` also within the config file's
/// `max_batch_bytes`, which sizes the broker's buffers. Err says why (the name first).
pub fn check_broker_config(cfg: &Config, key: &str, value: &str) -> Result<(), String> {
    let Some(sp) = dynamic_spec(key) else {
        return Err(format!("unknown or unsupported broker config {key}"));
    };
    match sp.of {
        Dynamic::Topic(t) => check_topic_config(t, value).map_err(|e| e.replacen(t, key, 1))?,
        Dynamic::Own(_, check, _) => check_value(key, check, value)?,
    }
    if key == "message.max.bytes"
        && value.trim().parse::<u64>().unwrap_or(0) > cfg.max_batch_bytes as u64
    {
        return Err(format!(
            "message.max.bytes may not pass the config file's max_batch_bytes ({}), which \
             sizes the broker's buffers",
            cfg.max_batch_bytes
        ));
    }
    Ok(())
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
    check_value(key, sp.check, value)
}

/// Checks `value` against the values config `key` may take.
fn check_value(key: &str, check: Check, value: &str) -> Result<(), String> {
    match check {
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

/// Checks a config's value (name, value); Err says why.
type ValueCheck<'a> = dyn Fn(&str, &str) -> Result<(), String> + 'a;

/// The configs of one kind of resource (a topic, or a broker's dynamic configs): the value of
/// each where the resource does not set it (APPEND and SUBTRACT start from it), which are
/// lists, and how a value is checked.
pub struct ConfigSchema<'a> {
    defaults: BTreeMap<&'static str, String>,
    is_list: fn(&str) -> bool,
    check: Box<ValueCheck<'a>>,
    what: &'static str,
}

/// Topic configs: the broker's values (`dynamic`: its dynamic defaults, by topic config).
pub fn topic_schema(cfg: &Config, dynamic: &BTreeMap<String, String>) -> ConfigSchema<'static> {
    ConfigSchema {
        defaults: SPECS
            .iter()
            .map(|s| {
                let v = dynamic.get(s.name).cloned();
                (s.name, v.unwrap_or_else(|| broker_value(cfg, s.name)))
            })
            .collect(),
        is_list: |k| spec(k).is_some_and(|s| s.kind == ConfigType::List),
        check: Box::new(check_topic_config),
        what: "topic",
    }
}

/// Dynamic broker configs of `resource` ("" for the cluster's defaults, else a broker's id):
/// where it sets none, a broker takes the cluster's, and the cluster the config file's.
pub fn broker_schema<'a>(cfg: &'a Config, all: &BrokerConfigs, resource: &str) -> ConfigSchema<'a> {
    let cluster = all.get("");
    ConfigSchema {
        defaults: DYNAMIC_SPECS
            .iter()
            .map(|s| {
                let v = cluster
                    .filter(|_| !resource.is_empty())
                    .and_then(|m| m.get(s.name));
                (
                    s.name,
                    v.cloned().unwrap_or_else(|| static_broker_value(cfg, s)),
                )
            })
            .collect(),
        is_list: |k| {
            dynamic_spec(k).is_some_and(|s| match s.of {
                Dynamic::Topic(t) => spec(t).is_some_and(|s| s.kind == ConfigType::List),
                Dynamic::Own(kind, ..) => kind == ConfigType::List,
            })
        },
        check: Box::new(move |k, v| check_broker_config(cfg, k, v)),
        what: "broker",
    }
}

/// The configs after `ops` (applied in order to `current`, or to no configs when `replace`,
/// as AlterConfigs does), every resulting value checked; Err names the config and why
/// (Kafka's INVALID_CONFIG).
pub fn altered_configs(
    current: &BTreeMap<String, String>,
    ops: &[(String, ConfigOp)],
    replace: bool,
    schema: &ConfigSchema,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = if replace {
        BTreeMap::new()
    } else {
        current.clone()
    };
    for (key, op) in ops {
        if !schema.defaults.contains_key(key.as_str()) {
            return Err(format!(
                "unknown or unsupported {} config {key}",
                schema.what
            ));
        }
        let items = |out: &BTreeMap<String, String>| -> Vec<String> {
            let v = out.get(key).or(schema.defaults.get(key.as_str()));
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
                (schema.check)(key, v)?;
                out.insert(key.clone(), v.clone());
            }
            ConfigOp::Delete => {
                out.remove(key);
            }
            ConfigOp::Append(v) | ConfigOp::Subtract(v) => {
                if !(schema.is_list)(key) {
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
                (schema.check)(key, &joined)?;
                out.insert(key.clone(), joined);
            }
        }
    }
    Ok(out)
}

/// Where a described config's value comes from (Kafka's ConfigSource codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic.
    DynamicTopic = 1,
    /// A dynamic config of this broker.
    DynamicBroker = 2,
    /// A dynamic config of the whole cluster.
    DynamicDefaultBroker = 3,
    /// Set in the broker's config file (or flags).
    StaticBroker = 4,
    /// Nobody set it: the built-in default.
    Default = 5,
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
    /// Where the value could come from, in precedence order from the one in force (Kafka's
    /// synonyms): the topic's, this broker's, the cluster's, the config file's, the default.
    pub synonyms: Vec<(&'static str, String, ConfigSource)>,
}

/// The config file's layers of a value: StaticBroker when the file sets it to something
/// other than the default, then the built-in default.
fn static_layers(
    name: &'static str,
    value: String,
    default: String,
) -> Vec<(&'static str, String, ConfigSource)> {
    let mut out = Vec::with_capacity(2);
    if value != default {
        out.push((name, value, ConfigSource::StaticBroker));
    }
    out.push((name, default, ConfigSource::Default));
    out
}

/// A dynamic broker config's layers on broker `node`, then the config file's.
fn broker_layers(
    cfg: &Config,
    all: &BrokerConfigs,
    node: i32,
    sp: &DynamicSpec,
) -> Vec<(&'static str, String, ConfigSource)> {
    let mut out = Vec::new();
    for (resource, source) in [
        (node.to_string(), ConfigSource::DynamicBroker),
        (String::new(), ConfigSource::DynamicDefaultBroker),
    ] {
        if let Some(v) = all.get(&resource).and_then(|m| m.get(sp.name)) {
            out.push((sp.name, v.clone(), source));
        }
    }
    let default = static_broker_value(&Config::default(), sp);
    out.extend(static_layers(
        sp.name,
        static_broker_value(cfg, sp),
        default,
    ));
    out
}

fn described(
    name: &'static str,
    kind: ConfigType,
    read_only: bool,
    doc: String,
    synonyms: Vec<(&'static str, String, ConfigSource)>,
) -> DescribedConfig {
    let (_, value, source) = synonyms[0].clone();
    DescribedConfig {
        name,
        value,
        source,
        read_only,
        kind,
        doc,
        synonyms,
    }
}

/// Every topic config, with the topic's value (its override, else broker `node`'s dynamic
/// default, else the config file's) and where it comes from; the documentation says when
/// Flumen accepts a config without acting on it.
pub fn describe_topic(
    cfg: &Config,
    all: &BrokerConfigs,
    node: i32,
    overrides: &BTreeMap<String, String>,
) -> Vec<DescribedConfig> {
    SPECS
        .iter()
        .map(|sp| {
            let mut layers = Vec::new();
            if let Some(v) = overrides.get(sp.name) {
                layers.push((sp.name, v.clone(), ConfigSource::DynamicTopic));
            }
            match broker_synonym(sp.name).and_then(dynamic_spec) {
                Some(b) => layers.extend(broker_layers(cfg, all, node, b)),
                None => layers.extend(static_layers(
                    sp.name,
                    broker_value(cfg, sp.name),
                    broker_value(&Config::default(), sp.name),
                )),
            }
            let doc = match sp.effect {
                Effect::Honoured => sp.doc.to_string(),
                Effect::NoOp(why) => format!("{} (accepted, no effect here: {why})", sp.doc),
            };
            described(sp.name, sp.kind, false, doc, layers)
        })
        .collect()
}

/// Broker `node`'s configs under Kafka's names: the dynamic ones (changed at run time with
/// AlterConfigs, for this broker or the cluster) and those only a restart changes
/// (read-only).
pub fn describe_broker(cfg: &Config, all: &BrokerConfigs, node: i32) -> Vec<DescribedConfig> {
    let defaults = static_broker(&Config::default());
    let mut out: Vec<DescribedConfig> = static_broker(cfg)
        .into_iter()
        .zip(defaults)
        .map(|((name, value, kind, doc), (_, default, ..))| {
            described(
                name,
                kind,
                true,
                doc.into(),
                static_layers(name, value, default),
            )
        })
        .collect();
    out.extend(DYNAMIC_SPECS.iter().map(|sp| {
        let (kind, doc) = dynamic_kind_doc(sp);
        described(sp.name, kind, false, doc, broker_layers(cfg, all, node, sp))
    }));
    out.sort_by_key(|c| c.name);
    out
}

/// The cluster-wide dynamic broker configs that are set (Kafka's answer for the broker
/// resource "").
pub fn describe_cluster_defaults(all: &BrokerConfigs) -> Vec<DescribedConfig> {
    let Some(set) = all.get("") else {
        return Vec::new();
    };
    DYNAMIC_SPECS
        .iter()
        .filter_map(|sp| {
            let v = set.get(sp.name)?;
            let (kind, doc) = dynamic_kind_doc(sp);
            let layer = vec![(sp.name, v.clone(), ConfigSource::DynamicDefaultBroker)];
            Some(described(sp.name, kind, false, doc, layer))
        })
        .collect()
}

fn dynamic_kind_doc(sp: &DynamicSpec) -> (ConfigType, String) {
    match sp.of {
        Dynamic::Topic(t) => {
            let tsp = spec(t).expect("a dynamic broker config's topic config exists");
            (
                tsp.kind,
                format!("default of topic config {t}: {}", tsp.doc),
            )
        }
        Dynamic::Own(kind, _, doc) => (kind, doc.to_string()),
    }
}

/// Broker configs only a restart changes (Kafka: read-only), with their values in `cfg`.
fn static_broker(cfg: &Config) -> Vec<(&'static str, String, ConfigType, &'static str)> {
    vec![
        (
            "node.id",
            cfg.node_id.to_string(),
            ConfigType::Int,
            "this broker's id",
        ),
        (
            "broker.rack",
            cfg.broker_rack.clone().unwrap_or_default(),
            ConfigType::String,
            "rack of this broker",
        ),
        (
            "auto.create.topics.enable",
            cfg.auto_create_topics.to_string(),
            ConfigType::Boolean,
            "Metadata creates unknown topics",
        ),
        (
            "num.partitions",
            cfg.default_partitions.to_string(),
            ConfigType::Int,
            "partitions of a new topic by default",
        ),
        (
            "default.replication.factor",
            cfg.default_replication_factor.to_string(),
            ConfigType::Short,
            "replicas of a new topic by default",
        ),
        (
            "offsets.topic.num.partitions",
            cfg.offsets_topic_partitions.to_string(),
            ConfigType::Int,
            "partitions of __consumer_offsets",
        ),
        (
            "transaction.state.log.num.partitions",
            cfg.transaction_state_partitions.to_string(),
            ConfigType::Int,
            "partitions of __transaction_state",
        ),
        (
            "broker.session.timeout.ms",
            cfg.broker_session_timeout_ms.to_string(),
            ConfigType::Int,
            "a silent broker is fenced after this",
        ),
        (
            "socket.request.max.bytes",
            cfg.max_request_bytes.to_string(),
            ConfigType::Int,
            "largest request frame",
        ),
        (
            "log.cleaner.enable",
            cfg.log_cleaner_enable.to_string(),
            ConfigType::Boolean,
            "compacted partitions are cleaned in the background",
        ),
    ]
}

/// Broker configs Flumen reports and only a restart changes (Kafka: read-only): changing one
/// is refused with INVALID_REQUEST.
pub fn is_static_broker_config(key: &str) -> bool {
    static_broker(&Config::default())
        .iter()
        .any(|(name, ..)| *name == key)
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
        let all = describe_topic(&cfg, &BrokerConfigs::new(), 0, &BTreeMap::new());
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
        let cfg = Config::default();
        let defaults = topic_schema(&cfg, &BTreeMap::new());
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

    #[test]
    fn dynamic_broker_configs_layer_between_the_topic_and_the_config_file() {
        let cfg = Config {
            retention_ms: 1000,
            ..Config::default()
        };
        let mut all = BrokerConfigs::new();
        all.insert(
            String::new(),
            map(&[("log.retention.ms", "2000"), ("log.segment.bytes", "70000")]),
        );
        all.insert("1".into(), map(&[("log.retention.ms", "3000")]));
        let by = |node: i32, overrides: &BTreeMap<String, String>| {
            let l = layered(&dynamic_topic_defaults(&all, node), overrides);
            log_config(&cfg, "t", &l)
        };
        // Broker 1's own value, broker 2 the cluster's, a topic's override over both.
        assert_eq!(by(1, &BTreeMap::new()).retention_ms, 3000);
        assert_eq!(by(2, &BTreeMap::new()).retention_ms, 2000);
        assert_eq!(by(2, &map(&[("retention.ms", "5")])).retention_ms, 5);
        assert_eq!(by(2, &BTreeMap::new()).segment_bytes, 70000);
        // Described with where each value comes from, and every layer below it.
        let d = describe_topic(&cfg, &all, 1, &BTreeMap::new());
        let r = d.iter().find(|c| c.name == "retention.ms").unwrap();
        assert_eq!(
            (r.value.as_str(), r.source),
            ("3000", ConfigSource::DynamicBroker)
        );
        let layers: Vec<_> = r
            .synonyms
            .iter()
            .map(|s| (s.0, s.1.as_str(), s.2))
            .collect();
        assert_eq!(
            layers,
            [
                ("log.retention.ms", "3000", ConfigSource::DynamicBroker),
                (
                    "log.retention.ms",
                    "2000",
                    ConfigSource::DynamicDefaultBroker
                ),
                ("log.retention.ms", "1000", ConfigSource::StaticBroker),
                ("log.retention.ms", "604800000", ConfigSource::Default),
            ]
        );
        let src = |n: &str| d.iter().find(|c| c.name == n).unwrap().source;
        assert_eq!(src("segment.bytes"), ConfigSource::DynamicDefaultBroker);
        // Not set anywhere: Kafka's DEFAULT_CONFIG, not STATIC_BROKER_CONFIG.
        assert_eq!(src("retention.bytes"), ConfigSource::Default);
        let b = describe_broker(&cfg, &all, 2);
        let get = |n: &str| b.iter().find(|c| c.name == n).unwrap();
        assert_eq!(get("log.retention.ms").value, "2000");
        assert!(!get("log.retention.ms").read_only && get("num.partitions").read_only);
        assert_eq!(describe_cluster_defaults(&all).len(), 2);
        // The cleaner's own settings.
        all.insert(
            String::new(),
            map(&[("log.cleaner.io.max.bytes.per.second", "1048576")]),
        );
        let (rate, backoff, _) = cleaner_settings(&cfg, &all, 1);
        assert_eq!((rate, backoff), (1048576.0, cfg.log_cleaner_backoff_ms));
    }

    #[test]
    fn broker_config_changes_are_checked_as_their_topic_configs() {
        let cfg = Config::default();
        let mut all = BrokerConfigs::new();
        all.insert(String::new(), map(&[("log.cleanup.policy", "compact")]));
        let set = |k: &str, v: &str| (k.to_string(), ConfigOp::Set(v.to_string()));
        // A broker's APPEND starts from the cluster's value; the cluster's from the file's.
        let append = (
            "log.cleanup.policy".to_string(),
            ConfigOp::Append("delete".into()),
        );
        let broker = broker_schema(&cfg, &all, "1");
        let after = altered_configs(
            &BTreeMap::new(),
            std::slice::from_ref(&append),
            false,
            &broker,
        );
        assert_eq!(after.unwrap()["log.cleanup.policy"], "compact,delete");
        let cluster = broker_schema(&cfg, &all, "");
        let after = altered_configs(&BTreeMap::new(), &[append], false, &cluster);
        assert_eq!(after.unwrap()["log.cleanup.policy"], "delete");
        // Refused, each naming its config: unknown, a topic config's name, a bad value, a
        // value the file's buffers cannot hold.
        for (op, name) in [
            (set("no.such", "1"), "no.such"),
            (set("retention.ms", "1"), "retention.ms"),
            (set("log.retention.ms", "soon"), "log.retention.ms"),
            (set("log.segment.bytes", "100"), "log.segment.bytes"),
            (set("message.max.bytes", "999999999"), "message.max.bytes"),
            (set("log.cleaner.backoff.ms", "1"), "log.cleaner.backoff.ms"),
        ] {
            let e = altered_configs(&BTreeMap::new(), &[op], false, &cluster).unwrap_err();
            assert!(
                e.starts_with(name) || e.contains(&format!(" {name}")),
                "{e}"
            );
        }
        assert!(is_static_broker_config("num.partitions"));
        assert!(!is_static_broker_config("log.retention.ms"));
    }
}
