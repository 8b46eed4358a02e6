//! What crosses shards to and from the partition manager: named, `Send` structs.

use crate::protocol::batch::BatchInfo;
use crate::protocol::errors::{ErrorCode, KafkaError};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A produce sub-request for one partition, validated on the connection's shard.
pub struct ProducePart {
    pub topic: String,
    pub partition: i32,
    pub records: Bytes,
    pub infos: Vec<BatchInfo>,
}

/// One shard's share of a produce request.
pub struct ProduceRequest {
    pub acks: i16,
    pub timeout_ms: u64,
    pub parts: Vec<ProducePart>,
}

/// The answer for one produced partition.
pub struct ProduceOut {
    pub error: Option<KafkaError>,
    pub base_offset: i64,
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

impl ProduceOut {
    /// A partition whose batches were not written.
    pub fn failed(code: ErrorCode, message: String) -> ProduceOut {
        ProduceOut {
            error: (!code.is_ok()).then(|| KafkaError::new(code, message)),
            base_offset: -1,
            log_append_time: -1,
            log_start_offset: -1,
        }
    }
}

/// A fetch sub-request for one partition.
pub struct FetchPart {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: usize,
    /// read_committed: stop at the last stable offset.
    pub committed: bool,
    /// The leader epoch the fetcher believes current, -1 when it does not say (KIP-320).
    pub current_leader_epoch: i32,
    /// A follower's broker id (it reads past the high watermark and reports its log end by
    /// the offset it asks for); -1 for a consumer.
    pub replica_id: i32,
    /// A follower's own log start (-1 when not given).
    pub log_start: i64,
}

/// Record bytes that can cross shards: memory, or a file range the receiver opens itself.
pub enum SendChunk {
    Mem(Bytes),
    /// `inode`: the file's, as the owner read it (the cleaner may replace the file under the
    /// same name before the connection's shard opens it).
    File {
        path: PathBuf,
        inode: u64,
        pos: u64,
        len: usize,
        /// Bytes of the file written when it was read: how far a read-ahead may go.
        written: u64,
    },
}

/// The answer for one fetched partition.
pub struct FetchOut {
    pub error: ErrorCode,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub chunks: Vec<SendChunk>,
    pub bytes: usize,
    /// (producer id, first offset) of aborted transactions, for read_committed.
    pub aborted: Vec<(i64, i64)>,
}

impl FetchOut {
    /// An answer with no data.
    pub fn error(error: ErrorCode, high_watermark: i64, log_start_offset: i64) -> FetchOut {
        FetchOut {
            error,
            high_watermark,
            last_stable_offset: high_watermark,
            log_start_offset,
            chunks: Vec::new(),
            bytes: 0,
            aborted: Vec::new(),
        }
    }
}

/// A partition and an offset (a fetch position to watch) or a timestamp (ListOffsets: -2
/// earliest, -1 latest, else a time in ms).
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// A follower's long poll: data durable past `offset` counts, not only past the high
    /// watermark.
    pub follower: bool,
}

/// A ListOffsets answer for one partition.
pub struct ListedOffset {
    pub error: ErrorCode,
    pub timestamp: i64,
    pub offset: i64,
    pub leader_epoch: i32,
}

impl ListedOffset {
    pub fn error(error: ErrorCode) -> ListedOffset {
        ListedOffset {
            error,
            timestamp: -1,
            offset: -1,
            leader_epoch: -1,
        }
    }
}

/// A partition to open on its owner, with its topic's config overrides.
pub struct PartitionSpec {
    pub topic: String,
    /// The topic's id: its partition directories carry it, so a directory left by a deleted
    /// topic of the same name is never taken for the new one's.
    pub topic_id: String,
    pub partition: i32,
    pub configs: BTreeMap<String, String>,
}
