//! What crosses shards to and from a group coordinator: the requests as the coordinator needs
//! them (decoded on the connection's shard) and its answers. Plain `Send` data, no state.

use crate::protocol::errors::ErrorCode;
use bytes::Bytes;

/// Group requests as the coordinator needs them (decoded on the connection's shard).
pub enum GroupReq {
    Join {
        group: String,
        member_id: String,
        instance_id: Option<String>,
        client_id: String,
        client_host: String,
        session_timeout_ms: i32,
        rebalance_timeout_ms: i32,
        protocol_type: String,
        protocols: Vec<(String, Bytes)>,
        /// JoinGroup v4+: a new member must first get its id (MEMBER_ID_REQUIRED).
        require_member_id: bool,
        /// JoinGroup v9+: a static leader may be told to keep the current assignment.
        can_skip_assignment: bool,
    },
    Sync {
        group: String,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        assignments: Vec<(String, Bytes)>,
    },
    Heartbeat {
        group: String,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
    },
    Leave {
        group: String,
        members: Vec<(String, Option<String>)>,
    },
    /// OffsetCommit, or TxnOffsetCommit when `producer` (id, epoch) is set: then the offsets
    /// become committed when the producer's transaction does.
    Commit {
        group: String,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        offsets: Vec<OffsetCommitEntry>,
        producer: Option<(i64, i16)>,
    },
    FetchOffsets {
        group: String,
        /// OffsetFetch v7+ (read_committed consumers): partitions with offsets of an open
        /// transaction answer UNSTABLE_OFFSET_COMMIT instead of the older commit.
        require_stable: bool,
        /// None: every partition the group committed.
        partitions: Option<Vec<(String, i32)>>,
    },
    List,
    Describe(Vec<String>),
    Delete(Vec<String>),
    DeleteOffsets {
        group: String,
        partitions: Vec<(String, i32)>,
    },
}

pub struct JoinOut {
    pub error: ErrorCode,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub skip_assignment: bool,
    /// (member id, instance id, metadata): for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinOut {
    pub(super) fn error(error: ErrorCode, member_id: String) -> JoinOut {
        JoinOut {
            error,
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id,
            skip_assignment: false,
            members: Vec::new(),
        }
    }
}

pub struct DescribeOut {
    pub group: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// One member as DescribeGroups shows it.
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The member's subscription in the group's selected protocol.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// One partition of an OffsetCommit or TxnOffsetCommit.
pub struct OffsetCommitEntry {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    /// The topic exists (a commit for an unknown topic answers UNKNOWN_TOPIC_OR_PARTITION).
    pub topic_exists: bool,
}

/// An OffsetFetch answer for one partition; offset -1 when the group committed none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetRow {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub error: ErrorCode,
}

pub enum GroupResp {
    Join(JoinOut),
    Sync {
        error: ErrorCode,
        protocol_type: Option<String>,
        protocol: Option<String>,
        assignment: Bytes,
    },
    Error(ErrorCode),
    Leave(ErrorCode, Vec<ErrorCode>),
    Commit(Vec<ErrorCode>),
    Offsets(ErrorCode, Vec<OffsetRow>),
    /// (group, protocol type, state)
    List(Vec<(String, String, &'static str)>),
    Describe(Vec<DescribeOut>),
    Deleted(Vec<ErrorCode>),
    OffsetsDeleted(ErrorCode, Vec<ErrorCode>),
}
