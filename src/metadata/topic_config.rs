//! Topic configs: which Kafka topic configs Flumen honours, and how a topic's overrides map
//! onto the broker defaults to give its log's settings.

use crate::config::Config;
use crate::log::LogConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Maps a topic's config overrides onto the broker defaults.
pub fn log_config(cfg: &Config, overrides: &BTreeMap<String, String>) -> LogConfig {
    let num = |k: &str, d: i64| {
        overrides
            .get(k)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(d)
    };
    LogConfig {
        segment_bytes: num("segment.bytes", cfg.segment_bytes as i64).max(64 * 1024) as u64,
        segment_ms: num("segment.ms", cfg.segment_ms),
        retention_ms: num("retention.ms", cfg.retention_ms),
        retention_bytes: num("retention.bytes", cfg.retention_bytes),
        index_interval_bytes: num("index.interval.bytes", cfg.index_interval_bytes as i64).max(1)
            as u64,
        flush: cfg.flush_policy(),
        timestamp_type: match overrides.get("message.timestamp.type").map(String::as_str) {
            Some("LogAppendTime") => crate::config::TimestampType::LogAppendTime,
            Some("CreateTime") => crate::config::TimestampType::CreateTime,
            _ => cfg.message_timestamp_type,
        },
        write_buffer_bytes: cfg.write_buffer_bytes,
        producer_id_expiration_ms: cfg.producer_id_expiration_ms,
        faults: None,
    }
}

/// The topic's `min.insync.replicas`, else the broker's.
pub fn min_insync_replicas(cfg: &Config, overrides: &BTreeMap<String, String>) -> usize {
    overrides
        .get("min.insync.replicas")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(cfg.min_insync_replicas.max(1) as usize)
}

/// Checks a topic config override: known key and a value Flumen honours.
pub fn check_topic_config(key: &str, value: &str) -> Result<(), String> {
    let int = |min: i64| match value.parse::<i64>() {
        Ok(v) if v >= min => Ok(()),
        _ => Err(format!("{key} must be an integer >= {min}, got {value:?}")),
    };
    match key {
        "retention.ms" | "retention.bytes" => int(-1),
        "segment.bytes" => int(64 * 1024).and_then(|_| {
            if value.parse::<u64>().unwrap_or(u64::MAX) > u32::MAX as u64 {
                Err("segment.bytes must be below 4 GiB".into())
            } else {
                Ok(())
            }
        }),
        "segment.ms" => int(1),
        "index.interval.bytes" => int(1),
        "min.insync.replicas" => int(1),
        "unclean.leader.election.enable" => match value {
            "true" | "false" => Ok(()),
            _ => Err(format!("{key} must be true or false, got {value:?}")),
        },
        "message.timestamp.type" => match value {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err(format!(
                "message.timestamp.type {value:?} is not CreateTime or LogAppendTime"
            )),
        },
        "cleanup.policy" => match value {
            "delete" => Ok(()),
            _ => Err(format!(
                "cleanup.policy={value} is not supported yet (only delete)"
            )),
        },
        "compression.type" => match value {
            "producer" => Ok(()),
            _ => Err("compression.type: batches are stored as produced (only 'producer')".into()),
        },
        _ => Err(format!("unknown or unsupported topic config {key}")),
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
    key == "cleanup.policy"
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

/// Every topic config Flumen honours, with the broker's value for it (what a topic without
/// an override gets).
pub fn topic_defaults(cfg: &Config) -> BTreeMap<&'static str, String> {
    describe_topic(cfg, &BTreeMap::new())
        .into_iter()
        .filter(|c| !c.read_only)
        .map(|c| (c.name, c.value))
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
    pub doc: &'static str,
}

/// Every topic config Flumen honours, with the topic's value (its override, else the broker's).
pub fn describe_topic(cfg: &Config, overrides: &BTreeMap<String, String>) -> Vec<DescribedConfig> {
    let ts = match cfg.message_timestamp_type {
        crate::config::TimestampType::CreateTime => "CreateTime",
        crate::config::TimestampType::LogAppendTime => "LogAppendTime",
    };
    let table: [(&'static str, String, bool, ConfigType, &'static str); 11] = [
        (
            "cleanup.policy",
            "delete".into(),
            false,
            ConfigType::List,
            "delete: whole segments past retention go (compaction is not built yet)",
        ),
        (
            "compression.type",
            "producer".into(),
            false,
            ConfigType::String,
            "batches are stored as produced",
        ),
        (
            "index.interval.bytes",
            cfg.index_interval_bytes.to_string(),
            false,
            ConfigType::Int,
            "one offset-index entry per this many log bytes",
        ),
        (
            "max.message.bytes",
            cfg.max_batch_bytes.to_string(),
            true,
            ConfigType::Int,
            "largest record batch (the broker's max_batch_bytes)",
        ),
        (
            "message.timestamp.type",
            ts.into(),
            false,
            ConfigType::String,
            "CreateTime or LogAppendTime",
        ),
        (
            "min.insync.replicas",
            cfg.min_insync_replicas.to_string(),
            false,
            ConfigType::Int,
            "fewest in-sync replicas an acks=all write needs (NOT_ENOUGH_REPLICAS below)",
        ),
        (
            "retention.bytes",
            cfg.retention_bytes.to_string(),
            false,
            ConfigType::Long,
            "oldest segments go while the partition is larger; -1 keeps all",
        ),
        (
            "retention.ms",
            cfg.retention_ms.to_string(),
            false,
            ConfigType::Long,
            "segments older than this go; -1 keeps forever",
        ),
        (
            "segment.bytes",
            cfg.segment_bytes.to_string(),
            false,
            ConfigType::Int,
            "segment roll by size",
        ),
        (
            "segment.ms",
            cfg.segment_ms.to_string(),
            false,
            ConfigType::Long,
            "segment roll by age",
        ),
        (
            "unclean.leader.election.enable",
            cfg.unclean_leader_election_enable.to_string(),
            false,
            ConfigType::Boolean,
            "an out-of-sync replica may lead when no in-sync one is left, losing what only the ISR held",
        ),
    ];
    table
        .into_iter()
        .map(|(name, default, read_only, kind, doc)| {
            let (value, source) = match overrides.get(name) {
                Some(v) if !read_only => (v.clone(), ConfigSource::DynamicTopic),
                _ => (default, ConfigSource::StaticBroker),
            };
            DescribedConfig {
                name,
                value,
                source,
                read_only,
                kind,
                doc,
            }
        })
        .collect()
}

/// The broker's configs under Kafka's names (all read-only: Flumen has no dynamic broker
/// configs yet; they change with a restart).
pub fn describe_broker(cfg: &Config) -> Vec<DescribedConfig> {
    let entry = |name, value: String, kind, doc| DescribedConfig {
        name,
        value,
        source: ConfigSource::StaticBroker,
        read_only: true,
        kind,
        doc,
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
