//! Topic configs: which Kafka topic configs Flumen honours, and how a topic's overrides map
//! onto the broker defaults to give its log's settings.

use crate::config::Config;
use crate::log::LogConfig;
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
        "min.insync.replicas" => match value {
            "1" => Ok(()),
            _ => Err("min.insync.replicas must be 1 on a single broker".into()),
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
