//! What crosses shards to and from a group coordinator: each request as the coordinator needs
//! it (decoded on the connection's shard) and its own answer type. Plain `Send` data.

use crate::protocol::errors::ErrorCode;
use bytes::Bytes;

/// JoinGroup as the coordinator needs it.
pub struct JoinRequest {
    pub group: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member must first get its id (MEMBER_ID_REQUIRED).
    pub require_member_id: bool,
    /// JoinGroup v9+: a static leader may be told to keep the current assignment.
    pub can_skip_assignment: bool,
}

/// A member of a generation, as SyncGroup, Heartbeat and OffsetCommit name it.
pub struct MemberRef {
    pub group: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
}

/// SyncGroup: the leader's assignments (empty from followers).
pub struct SyncRequest {
    pub member: MemberRef,
    pub assignments: Vec<(String, Bytes)>,
}

/// SyncGroup's answer.
pub struct SyncOut {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl SyncOut {
    pub fn error(error: ErrorCode) -> SyncOut {
        SyncOut {
            error,
            protocol_type: None,
            protocol: None,
            assignment: Bytes::new(),
        }
    }
}

/// OffsetCommit, or TxnOffsetCommit when `producer` (id, epoch) is set: then the offsets
/// become committed when the producer's transaction does.
pub struct CommitRequest {
    pub member: MemberRef,
    pub offsets: Vec<OffsetCommitEntry>,
    pub producer: Option<(i64, i16)>,
}

/// OffsetFetch for one group.
pub struct FetchOffsetsRequest {
    pub group: String,
    /// OffsetFetch v7+ (read_committed consumers): partitions with offsets of an open
    /// transaction answer UNSTABLE_OFFSET_COMMIT instead of the older commit.
    pub require_stable: bool,
    /// None: every partition the group committed.
    pub partitions: Option<Vec<(String, i32)>>,
}

/// LeaveGroup's answer: the top-level error and one per member.
pub struct LeaveOut {
    pub error: ErrorCode,
    pub members: Vec<ErrorCode>,
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
    pub fn error(error: ErrorCode, member_id: String) -> JoinOut {
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
