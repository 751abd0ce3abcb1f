//! The consumer-group requests of the client protocol (docs/CONSUMER-GROUPS.md, docs/WIRE.md
//! "Consumer groups"): finding a group's coordinator, Kafka's classic membership (join, sync,
//! heartbeat, leave), committed offsets, and the operator's list, describe, reset and delete.
//!
//! They mirror Kafka's requests of the same names field for field where Keel has the concept, so
//! a Kafka-protocol front end can map onto the same coordinator. Protocol metadata and
//! assignments are opaque bytes to the broker; consumers put Kafka's ConsumerProtocol encoding in
//! them ([`crate::consumer_protocol`]).
//!
//! Every group request but `FindCoordinator` and `ListGroups` must reach the group's
//! coordinator, which answers [`crate::ErrorCode::NotCoordinator`] otherwise: the client finds it
//! again and retries.

use serde::{Deserialize, Serialize};

use super::messages::{ErrorCode, NodeId, Request};

/// The protocol type of consumers (Kafka's `ConsumerProtocol.PROTOCOL_TYPE`).
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Which node coordinates `group` (the leader of its offsets partition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindCoordinatorRequest {
    pub group: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindCoordinatorResponse {
    pub node_id: NodeId,
    /// Its advertised client address.
    pub address: String,
}

/// One protocol a member supports, with its metadata (for consumers: the subscription).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupProtocol {
    pub name: String,
    pub metadata: Vec<u8>,
}

/// Kafka's JoinGroup. The answer comes when the join phase ends (up to the rebalance timeout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGroupRequest {
    pub group: String,
    /// `None` for a new member: the coordinator gives it an id in the answer.
    pub member_id: Option<String>,
    pub client_id: String,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    pub protocol_type: String,
    /// In the member's order of preference.
    pub protocols: Vec<GroupProtocol>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGroupResponse {
    pub member_id: String,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    /// Every member's metadata for the chosen protocol; the leader's answer only.
    pub members: Vec<GroupMemberMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMemberMetadata {
    pub member_id: String,
    pub metadata: Vec<u8>,
}

/// Kafka's SyncGroup: the leader sends every member's assignment, the others none. The answer
/// comes once the generation is stored in the group's offsets partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncGroupRequest {
    pub group: String,
    pub member_id: String,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignments: Vec<GroupAssignment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupAssignment {
    pub member_id: String,
    pub assignment: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncGroupResponse {
    pub protocol_type: String,
    pub protocol: String,
    /// This member's assignment.
    pub assignment: Vec<u8>,
}

/// Keeps a member's session; answered RebalanceInProgress when it must rejoin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub group: String,
    pub member_id: String,
    pub generation: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveGroupRequest {
    pub group: String,
    pub member_id: String,
}

/// A committed position: the next offset to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// The leader epoch of the last record read, when known (Kafka's committedLeaderEpoch).
    pub leader_epoch: Option<i32>,
    /// At most 4,096 bytes.
    pub metadata: String,
}

/// Kafka's OffsetCommit. Answered once committed in the offsets partition, with member and
/// generation checked again when it applies. A member's generation and id, or
/// [`NO_GENERATION`] with an empty member id for a commit from outside group management
/// (allowed only while the group has no members).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetCommitRequest {
    pub group: String,
    pub member_id: String,
    pub generation: i32,
    pub offsets: Vec<PartitionOffset>,
}

/// The generation of a commit from outside group management.
pub const NO_GENERATION: i32 = -1;

/// Kafka's OffsetFetch: the committed offsets of `partitions` (every partition the group holds
/// offsets for when `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetFetchRequest {
    pub group: String,
    pub partitions: Option<Vec<TopicPartitionRef>>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicPartitionRef {
    pub topic: String,
    pub partition: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetFetchResponse {
    /// One per requested partition, in the request's order (`offset` `None`: nothing committed);
    /// every committed one when all were asked for.
    pub offsets: Vec<CommittedPartitionOffset>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedPartitionOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: Option<u64>,
    pub leader_epoch: Option<i32>,
    pub metadata: String,
}

/// The groups this node coordinates (Kafka's ListGroups is per broker too: a cluster-wide list
/// asks every node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListGroupsResponse {
    pub groups: Vec<GroupListing>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupListing {
    pub group: String,
    pub state: GroupStateView,
    pub protocol_type: String,
    pub members: u32,
}

/// Kafka's classic group states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupStateView {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupStateView {
    /// Kafka's name for the state, as its tools print it.
    pub fn as_str(&self) -> &'static str {
        match self {
            GroupStateView::Empty => "Empty",
            GroupStateView::PreparingRebalance => "PreparingRebalance",
            GroupStateView::CompletingRebalance => "CompletingRebalance",
            GroupStateView::Stable => "Stable",
            GroupStateView::Dead => "Dead",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeGroupRequest {
    pub group: String,
}

/// A group as its coordinator holds it: membership from memory, offsets from the offsets
/// partition. A group the coordinator knows nothing of is described as `Dead` with no members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDescriptionView {
    pub group: String,
    pub state: GroupStateView,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: Option<String>,
    pub members: Vec<GroupMemberView>,
    pub offsets: Vec<CommittedPartitionOffset>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMemberView {
    pub member_id: String,
    pub client_id: String,
    pub metadata: Vec<u8>,
    pub assignment: Vec<u8>,
}

/// An operator's reset: sets these offsets (resolved by the caller, e.g. from a partition's log
/// start or high watermark). Only while the group has no members ([`crate::ErrorCode::NonEmptyGroup`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetOffsetsRequest {
    pub group: String,
    pub offsets: Vec<PartitionOffset>,
}

/// Deletes a group and its offsets; only while it has no members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteGroupRequest {
    pub group: String,
}

/// The longest group id, member id or client id accepted, in bytes (Kafka sets none; a bound
/// keeps every record the coordinator stores small).
pub const MAX_GROUP_ID_BYTES: usize = 255;

/// The longest metadata string of a committed offset, in bytes (Kafka's
/// `offset.metadata.max.bytes`).
pub const MAX_OFFSET_METADATA_BYTES: usize = 4096;

/// Checks the ids and sizes a group request carries, before it reaches a coordinator: a group id
/// that is empty or too long is [`ErrorCode::InvalidGroupId`], offset metadata too long is
/// [`ErrorCode::OffsetMetadataTooLarge`], a member or client id too long is
/// [`ErrorCode::Malformed`]. Requests that name no group pass.
pub fn check_group_request(request: &Request) -> Result<(), ErrorCode> {
    let Some(group) = request.group() else {
        return Ok(());
    };
    if group.is_empty() || group.len() > MAX_GROUP_ID_BYTES {
        return Err(ErrorCode::InvalidGroupId);
    }
    let id_ok = |id: &str| id.len() <= MAX_GROUP_ID_BYTES;
    let metadata_ok = |offsets: &[PartitionOffset]| {
        offsets
            .iter()
            .all(|o| o.metadata.len() <= MAX_OFFSET_METADATA_BYTES)
    };
    let ids_ok = match request {
        Request::JoinGroup(join) => {
            join.member_id.as_deref().is_none_or(id_ok) && id_ok(&join.client_id)
        }
        Request::SyncGroup(sync) => {
            id_ok(&sync.member_id) && sync.assignments.iter().all(|a| id_ok(&a.member_id))
        }
        Request::Heartbeat(heartbeat) => id_ok(&heartbeat.member_id),
        Request::LeaveGroup(leave) => id_ok(&leave.member_id),
        Request::OffsetCommit(commit) => {
            if !metadata_ok(&commit.offsets) {
                return Err(ErrorCode::OffsetMetadataTooLarge);
            }
            id_ok(&commit.member_id)
        }
        Request::ResetOffsets(reset) => {
            if !metadata_ok(&reset.offsets) {
                return Err(ErrorCode::OffsetMetadataTooLarge);
            }
            true
        }
        _ => true,
    };
    if ids_ok {
        Ok(())
    } else {
        Err(ErrorCode::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Response;

    fn heartbeat(group: &str, member_id: &str) -> Request {
        Request::Heartbeat(HeartbeatRequest {
            group: group.into(),
            member_id: member_id.into(),
            generation: 1,
        })
    }

    #[test]
    fn group_ids_and_sizes_are_checked() {
        assert_eq!(check_group_request(&heartbeat("g", "m")), Ok(()));
        assert_eq!(
            check_group_request(&heartbeat("", "m")),
            Err(ErrorCode::InvalidGroupId)
        );
        let long = "x".repeat(MAX_GROUP_ID_BYTES + 1);
        assert_eq!(
            check_group_request(&heartbeat(&long, "m")),
            Err(ErrorCode::InvalidGroupId)
        );
        assert_eq!(
            check_group_request(&heartbeat("g", &long)),
            Err(ErrorCode::Malformed)
        );
        let commit = |metadata: String| {
            Request::OffsetCommit(OffsetCommitRequest {
                group: "g".into(),
                member_id: String::new(),
                generation: NO_GENERATION,
                offsets: vec![PartitionOffset {
                    topic: "t".into(),
                    partition: 0,
                    offset: 1,
                    leader_epoch: None,
                    metadata,
                }],
            })
        };
        assert_eq!(check_group_request(&commit("m".repeat(4096))), Ok(()));
        assert_eq!(
            check_group_request(&commit("m".repeat(4097))),
            Err(ErrorCode::OffsetMetadataTooLarge)
        );
        assert_eq!(check_group_request(&Request::ListGroups), Ok(()));
    }

    #[test]
    fn group_requests_come_after_every_older_variant() {
        let find = Request::FindCoordinator(FindCoordinatorRequest { group: "g".into() });
        assert_eq!(postcard::to_stdvec(&find).unwrap(), [11, 1, b'g']);
        assert_eq!(postcard::to_stdvec(&Request::ListGroups).unwrap(), [18]);
        assert_eq!(postcard::to_stdvec(&Response::DeleteGroup).unwrap(), [22]);
        let not_coordinator = Response::Error(ErrorCode::NotCoordinator);
        assert_eq!(postcard::to_stdvec(&not_coordinator).unwrap(), [10, 25]);
        assert!(ErrorCode::NotCoordinator.is_retriable());
        assert!(ErrorCode::CoordinatorLoadInProgress.is_retriable());
        assert!(!ErrorCode::IllegalGeneration.is_retriable());
    }
}
