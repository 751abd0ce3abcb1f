//! The request and response headers of the client protocol: what the SDK (docs/CLIENT.md) and the
//! command line (docs/CLI.md) need, as serde types carried in a [`super::frame::Frame`].
//!
//! One request per bidirectional QUIC stream, one response back on the same stream, so there is
//! no correlation id. A request is a [`Request`] header plus a payload (a record batch for
//! produce, empty otherwise); a response is a [`Response`] header plus a payload (the fetched
//! batches for fetch, empty otherwise). Any request can be answered with
//! [`Response::Error`], including one whose frame did not decode.
//!
//! Evolution: postcard encodes an enum variant as its index and a struct as its fields in order,
//! with no names and no tags. So new variants go at the END of an enum, a field is never
//! reordered or removed, and any change to an existing message's fields bumps
//! [`super::frame::PROTOCOL_VERSION`] (and the ALPN `keel/N`).

use serde::{Deserialize, Serialize};

use super::error::WireError;
use super::groups::{
    DeleteGroupRequest, DescribeGroupRequest, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupDescriptionView, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetFetchRequest, OffsetFetchResponse,
    ResetOffsetsRequest, SyncGroupRequest, SyncGroupResponse,
};
use super::topic::validate_topic_name;

/// Node ids as in the cluster map.
pub type NodeId = u64;

/// A request header. The payload rules are on each variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Payload: exactly one record batch.
    Produce(ProduceRequest),
    /// Payload: empty.
    Fetch(FetchRequest),
    Metadata(MetadataRequest),
    CreateTopic(CreateTopicRequest),
    DeleteTopic(DeleteTopicRequest),
    ListTopics,
    DescribeTopic(DescribeTopicRequest),
    ClusterStatus,
    InitProducerId,
    ReplaceNode(ReplaceNodeRequest),
    AlterTopic(AlterTopicRequest),
    // Consumer groups (groups.rs, docs/CONSUMER-GROUPS.md).
    FindCoordinator(FindCoordinatorRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    /// The groups this node coordinates.
    ListGroups,
    DescribeGroup(DescribeGroupRequest),
    ResetOffsets(ResetOffsetsRequest),
    DeleteGroup(DeleteGroupRequest),
}

impl Request {
    /// Checks every topic name the request carries, before any name reaches a lookup or a
    /// path (docs/WIRE.md "Topic names": a bad name is a typed error).
    pub fn validate_topic_names(&self) -> Result<(), WireError> {
        let check = |name: &str| validate_topic_name(name).map_err(WireError::from);
        match self {
            Request::Produce(produce) => check(&produce.topic),
            Request::Fetch(fetch) => check(&fetch.topic),
            Request::Metadata(metadata) => metadata
                .topics
                .iter()
                .flatten()
                .try_for_each(|topic| check(topic)),
            Request::CreateTopic(create) => check(&create.name),
            Request::DeleteTopic(delete) => check(&delete.name),
            Request::DescribeTopic(describe) => check(&describe.name),
            Request::AlterTopic(alter) => check(&alter.name),
            Request::OffsetCommit(commit) => commit
                .offsets
                .iter()
                .try_for_each(|offset| check(&offset.topic)),
            Request::OffsetFetch(fetch) => fetch
                .partitions
                .iter()
                .flatten()
                .try_for_each(|partition| check(&partition.topic)),
            Request::ResetOffsets(reset) => reset
                .offsets
                .iter()
                .try_for_each(|offset| check(&offset.topic)),
            Request::ListTopics
            | Request::ClusterStatus
            | Request::InitProducerId
            | Request::ReplaceNode(_)
            | Request::FindCoordinator(_)
            | Request::JoinGroup(_)
            | Request::SyncGroup(_)
            | Request::Heartbeat(_)
            | Request::LeaveGroup(_)
            | Request::ListGroups
            | Request::DescribeGroup(_)
            | Request::DeleteGroup(_) => Ok(()),
        }
    }

    /// The group id a group request names (`None` for every other request).
    pub fn group(&self) -> Option<&str> {
        match self {
            Request::FindCoordinator(request) => Some(&request.group),
            Request::JoinGroup(request) => Some(&request.group),
            Request::SyncGroup(request) => Some(&request.group),
            Request::Heartbeat(request) => Some(&request.group),
            Request::LeaveGroup(request) => Some(&request.group),
            Request::OffsetCommit(request) => Some(&request.group),
            Request::OffsetFetch(request) => Some(&request.group),
            Request::DescribeGroup(request) => Some(&request.group),
            Request::ResetOffsets(request) => Some(&request.group),
            Request::DeleteGroup(request) => Some(&request.group),
            _ => None,
        }
    }
}

/// A response header. The payload is empty except for [`Response::Fetch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Produce(ProduceResponse),
    /// Payload: whole record batches, concatenated, in offset order.
    Fetch(FetchResponse),
    Metadata(MetadataResponse),
    CreateTopic(TopicSummary),
    DeleteTopic,
    ListTopics(ListTopicsResponse),
    DescribeTopic(TopicDescription),
    ClusterStatus(ClusterStatusResponse),
    InitProducerId(InitProducerIdResponse),
    ReplaceNode(ReplaceNodeResponse),
    /// The request failed as a whole.
    Error(ErrorCode),
    AlterTopic(AlterTopicResponse),
    FindCoordinator(FindCoordinatorResponse),
    JoinGroup(JoinGroupResponse),
    SyncGroup(SyncGroupResponse),
    Heartbeat,
    LeaveGroup,
    OffsetCommit,
    OffsetFetch(OffsetFetchResponse),
    ListGroups(ListGroupsResponse),
    DescribeGroup(GroupDescriptionView),
    ResetOffsets,
    DeleteGroup,
}

/// When the leader answers a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Acks {
    /// After the batch is committed: on a quorum of replicas, durable per their fsync policy.
    /// The only setting with Keel's ordering and durability promise (docs/DECISIONS.md
    /// "Produce and fetch").
    Committed,
    /// After the leader appended the batch to its own log; it can still be lost on failover.
    Leader,
}

/// Append one record batch to a partition. The idempotence fields (producer_id,
/// producer_epoch, base_sequence) travel in the batch header, under its CRC and stored with it,
/// and are not repeated here: two copies could disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceRequest {
    pub topic: String,
    pub partition: u32,
    pub acks: Acks,
    /// How long the leader may wait for the commit before answering [`ErrorCode::Timeout`].
    pub timeout_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceResponse {
    /// Offset the leader gave the batch's first record; the others follow densely.
    pub base_offset: u64,
    /// Offset of the batch's last record: `base_offset + count - 1`.
    pub last_offset: u64,
    pub log_start_offset: u64,
}

/// Read committed batches from `offset`. A fetch at or above the high watermark waits up to
/// `max_wait_ms` for `min_bytes` (long poll); only an offset below the log start is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// Budget for the payload. The first batch is returned whole even if larger, so a consumer
    /// always makes progress (as Kafka does).
    pub max_bytes: u32,
    pub max_wait_ms: u32,
    pub min_bytes: u32,
}

/// Header of a fetch answer; the batches are the payload. The first batch may start before the
/// requested offset (batches are never split): the consumer skips records below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchResponse {
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

/// The cluster map a client needs to route requests: every node and, for the named topics (all
/// topics when `None`), each partition's leader and replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataRequest {
    pub topics: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataResponse {
    pub nodes: Vec<NodeAddress>,
    pub topics: Vec<TopicMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    pub node_id: NodeId,
    /// The `--advertise` address (`host:port`) clients dial.
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    pub name: String,
    /// `Err` for a requested topic that could not be described (e.g. [`ErrorCode::UnknownTopic`]).
    pub partitions: Result<Vec<PartitionMetadata>, ErrorCode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMetadata {
    pub partition: u32,
    /// `None` during an election.
    pub leader: Option<NodeId>,
    pub replicas: Vec<NodeId>,
}

/// Create a topic. An existing topic is [`ErrorCode::TopicAlreadyExists`]; `keel topic create
/// --if-not-exists` treats that as success.
///
/// The retention settings (docs/OPERATIONS.md "Retention"): `None` takes the cluster's default
/// for new topics, [`UNLIMITED`] (-1) is no limit, a positive value is the limit; anything else
/// is [`ErrorCode::InvalidTopicConfig`] ([`TopicSettings::check`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopicRequest {
    pub name: String,
    pub partitions: u32,
    /// `None`: the cluster default, `min(3, nodes)`.
    pub replication_factor: Option<u16>,
    /// Kafka's `retention.bytes`, per partition.
    pub retention_bytes: Option<i64>,
    /// Kafka's `retention.ms`, by the leader's append time.
    pub retention_ms: Option<i64>,
    /// Kafka's `segment.ms`.
    pub segment_ms: Option<i64>,
}

impl CreateTopicRequest {
    pub fn settings(&self) -> TopicSettings {
        TopicSettings {
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
            segment_ms: self.segment_ms,
        }
    }
}

/// Change a topic's retention settings: `None` leaves a setting as it is, [`UNLIMITED`] (-1)
/// removes the limit, a positive value sets it; anything else is
/// [`ErrorCode::InvalidTopicConfig`]. An unknown topic is [`ErrorCode::UnknownTopic`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterTopicRequest {
    pub name: String,
    pub retention_bytes: Option<i64>,
    pub retention_ms: Option<i64>,
    pub segment_ms: Option<i64>,
}

impl AlterTopicRequest {
    pub fn settings(&self) -> TopicSettings {
        TopicSettings {
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
            segment_ms: self.segment_ms,
        }
    }
}

/// The topic's settings after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterTopicResponse {
    pub name: String,
    pub config: TopicConfigView,
}

/// A retention setting's "no limit", in requests and in [`TopicConfigView`].
pub const UNLIMITED: i64 = -1;

/// The three settings of a create or alter request, as one value to check and pass around (not
/// itself on the wire: the requests carry the fields flat). `None` means "the default" in a
/// create and "unchanged" in an alter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TopicSettings {
    pub retention_bytes: Option<i64>,
    pub retention_ms: Option<i64>,
    pub segment_ms: Option<i64>,
}

/// A setting that is neither [`UNLIMITED`] nor positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{setting} must be -1 (unlimited) or a positive number, got {value}")]
pub struct InvalidTopicSetting {
    /// Kafka's name for it: `retention.bytes`, `retention.ms` or `segment.ms`.
    pub setting: &'static str,
    pub value: i64,
}

impl TopicSettings {
    /// Each setting with its Kafka name.
    pub fn named(&self) -> [(&'static str, Option<i64>); 3] {
        [
            ("retention.bytes", self.retention_bytes),
            ("retention.ms", self.retention_ms),
            ("segment.ms", self.segment_ms),
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.named().iter().all(|(_, value)| value.is_none())
    }

    /// Zero is refused along with the other negatives: a zero limit would delete (or roll) on
    /// every check, which is never what an operator typing it meant.
    pub fn check(&self) -> Result<(), InvalidTopicSetting> {
        for (setting, value) in self.named() {
            match value {
                Some(value) if value != UNLIMITED && value <= 0 => {
                    return Err(InvalidTopicSetting { setting, value })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTopicRequest {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeTopicRequest {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListTopicsResponse {
    pub topics: Vec<TopicSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDescription {
    pub name: String,
    pub replication_factor: u16,
    pub partitions: Vec<PartitionDescription>,
    pub config: TopicConfigView,
}

/// A topic's retention settings as clients see them: [`UNLIMITED`] (-1) for no limit, else a
/// positive value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfigView {
    pub retention_bytes: i64,
    pub retention_ms: i64,
    pub segment_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionDescription {
    pub partition: u32,
    pub leader: Option<NodeId>,
    pub replicas: Vec<NodeId>,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    /// Replicas of this partition that their node holds offline (it could not open them), as
    /// the answering node last heard from each replica's node; empty when all are open or
    /// nothing recent was heard (docs/OPERATIONS.md "Offline replicas").
    pub offline: Vec<OfflineReplica>,
}

/// One replica a node could not open and holds offline, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineReplica {
    pub node_id: NodeId,
    /// The node's own words (the storage error); a node with very many offline replicas
    /// reports the reason of the first ones only, and says so here for the rest.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatusResponse {
    pub nodes: Vec<NodeStatus>,
    pub partitions: Vec<PartitionStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: NodeId,
    /// Random id of the node's data directory (docs/FORMAT.md "Small records").
    pub incarnation: u64,
    pub address: String,
    pub up: bool,
    /// Partition replicas the node holds offline; `None` when the answering node has no
    /// recent report from it (a node that is down).
    pub offline_replicas: Option<u32>,
}

/// One Raft group: a topic partition, or the metadata group (`topic: None`, group 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    pub topic: Option<String>,
    pub partition: u32,
    pub leader: Option<NodeId>,
    pub followers: Vec<FollowerLag>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerLag {
    pub node_id: NodeId,
    /// Leader's last log index minus the follower's match index.
    pub lag_entries: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitProducerIdResponse {
    pub producer_id: u64,
    pub producer_epoch: u16,
}

/// When `keel cluster replace-node` returns (docs/OPERATIONS.md "Replacing a node").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplaceNodeWait {
    /// After every group has removed the old incarnation and promoted the new one.
    UntilReplaced,
    /// After the new incarnation was added as a learner everywhere (`--no-wait`).
    UntilLearnersAdded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaceNodeRequest {
    pub node_id: NodeId,
    pub wait: ReplaceNodeWait,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaceNodeResponse {
    /// Raft groups the node was a member of, and so changed.
    pub groups: u32,
}

/// Why a request failed (docs/WIRE.md "Error codes"), as the broker tells the client.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum ErrorCode {
    #[error("unknown topic")]
    UnknownTopic,
    #[error("topic already exists")]
    TopicAlreadyExists,
    #[error("invalid topic name")]
    InvalidTopicName,
    #[error("partition out of range")]
    PartitionOutOfRange,
    /// A partition count, replication factor or retention setting out of range; the broker
    /// logs which.
    #[error("invalid topic config (partitions, replication factor or retention setting)")]
    InvalidTopicConfig,
    /// A record over `max_message_bytes` or a batch over `max_record_batch_bytes`.
    #[error("message too large")]
    MessageTooLarge,
    /// A frame over `max_request_bytes`.
    #[error("request too large")]
    RequestTooLarge,
    /// The node is not the partition's leader; `leader_addr` is the leader's advertised address
    /// when known.
    #[error("not the leader (leader: {leader_addr:?})")]
    NotLeader { leader_addr: Option<String> },
    /// The offset is below the log start (at or above the high watermark is a long poll).
    #[error("offset out of range (log start {log_start_offset}, high watermark {high_watermark})")]
    OffsetOutOfRange {
        log_start_offset: u64,
        high_watermark: u64,
    },
    /// The node sheds load (queues full): back off and retry.
    #[error("overloaded")]
    Overloaded,
    /// No quorum, an election in progress, or the node is shutting down.
    #[error("unavailable")]
    Unavailable,
    /// The request did not complete within its timeout; its outcome is unknown.
    #[error("timed out")]
    Timeout,
    /// The batch was already written: these are its original offsets. An idempotent producer
    /// treats this as its acknowledgement.
    #[error("duplicate sequence (already at offsets {base_offset}..={last_offset})")]
    DuplicateSequence { base_offset: u64, last_offset: u64 },
    /// A gap in the producer's sequence numbers: a batch before this one was lost.
    #[error("out of order sequence (expected {expected_sequence})")]
    OutOfOrderSequence { expected_sequence: u32 },
    /// A newer epoch of this producer id exists: this producer is a zombie.
    #[error("producer fenced")]
    ProducerFenced,
    /// The producer id is unknown or expired (idle over 7 days): get a new one.
    #[error("unknown producer id")]
    UnknownProducerId,
    #[error("corrupt record batch")]
    CorruptBatch,
    #[error("malformed request")]
    Malformed,
    #[error("unsupported protocol version")]
    UnsupportedVersion,
    #[error("unknown node")]
    UnknownNode,
    /// The leader's node is below its free-space line and takes no new data. Retriable: it clears
    /// when retention or an operator frees space, or when leadership moves to a replica whose
    /// disk has room.
    #[error("disk full: the partition's leader has no room for new data")]
    DiskFull,
    #[error("not authorized")]
    NotAuthorized,
    /// A bug on the broker (the request did not cause it); logged there.
    #[error("internal error")]
    Internal,
    /// The batch asks for a feature of Kafka's batch format Keel does not implement
    /// (transactions, control batches, LogAppendTime).
    #[error("unsupported for message format")]
    UnsupportedForMessageFormat,
    /// Group 0's leader refused a topic create before proposing it: a node would go over one of
    /// its capacity limits (partition cap, free disk, inodes, open files, memory maps), or has
    /// not reported its capacity recently (docs/OPERATIONS.md "Capacity admission"). `reason`
    /// names the limit and the numbers.
    #[error("insufficient capacity on node {node_id}: {reason}")]
    InsufficientCapacity { node_id: NodeId, reason: String },
    // Consumer groups: Kafka's errors of the same names (docs/CONSUMER-GROUPS.md).
    /// This node does not coordinate the group (it does not lead the group's offsets
    /// partition): find the coordinator again.
    #[error("not the group's coordinator")]
    NotCoordinator,
    /// This node has just become the coordinator and is loading its groups: retry shortly.
    #[error("the coordinator is loading its groups")]
    CoordinatorLoadInProgress,
    /// No coordinator now (an election, or the group was unloaded or deleted meanwhile).
    #[error("the group's coordinator is not available")]
    CoordinatorNotAvailable,
    /// The group is between generations: rejoin.
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    /// The coordinator does not know this member (it left or its session expired): join anew.
    #[error("unknown member id")]
    UnknownMemberId,
    /// The generation is not the group's current one: rejoin.
    #[error("illegal generation")]
    IllegalGeneration,
    #[error("the protocol type or protocols do not match the group's")]
    InconsistentGroupProtocol,
    #[error("the session timeout is outside the coordinator's range")]
    InvalidSessionTimeout,
    #[error("invalid group id")]
    InvalidGroupId,
    /// Offsets may be reset and a group deleted only while it has no members.
    #[error("the group has members")]
    NonEmptyGroup,
    #[error("the group does not exist")]
    GroupIdNotFound,
    #[error("an offset's metadata is too large")]
    OffsetMetadataTooLarge,
}

impl ErrorCode {
    /// Whether the same request can succeed if sent again after a backoff (possibly to another
    /// node, after refreshing metadata). Everything else is fatal for this request.
    pub fn is_retriable(&self) -> bool {
        match self {
            ErrorCode::NotLeader { .. }
            | ErrorCode::Overloaded
            | ErrorCode::Unavailable
            | ErrorCode::Timeout
            | ErrorCode::DiskFull
            | ErrorCode::NotCoordinator
            | ErrorCode::CoordinatorLoadInProgress
            | ErrorCode::CoordinatorNotAvailable => true,
            ErrorCode::UnknownTopic
            | ErrorCode::TopicAlreadyExists
            | ErrorCode::InvalidTopicName
            | ErrorCode::PartitionOutOfRange
            | ErrorCode::InvalidTopicConfig
            | ErrorCode::MessageTooLarge
            | ErrorCode::RequestTooLarge
            | ErrorCode::OffsetOutOfRange { .. }
            | ErrorCode::DuplicateSequence { .. }
            | ErrorCode::OutOfOrderSequence { .. }
            | ErrorCode::ProducerFenced
            | ErrorCode::UnknownProducerId
            | ErrorCode::CorruptBatch
            | ErrorCode::Malformed
            | ErrorCode::UnsupportedVersion
            | ErrorCode::UnknownNode
            | ErrorCode::NotAuthorized
            | ErrorCode::Internal
            | ErrorCode::UnsupportedForMessageFormat
            | ErrorCode::InsufficientCapacity { .. }
            // A member acts on these (it rejoins); sending the same request again cannot help.
            | ErrorCode::RebalanceInProgress
            | ErrorCode::UnknownMemberId
            | ErrorCode::IllegalGeneration
            | ErrorCode::InconsistentGroupProtocol
            | ErrorCode::InvalidSessionTimeout
            | ErrorCode::InvalidGroupId
            | ErrorCode::NonEmptyGroup
            | ErrorCode::GroupIdNotFound
            | ErrorCode::OffsetMetadataTooLarge => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_codes_are_exactly_the_transient_ones() {
        let retriable = [
            ErrorCode::NotLeader {
                leader_addr: Some("127.0.0.1:7071".into()),
            },
            ErrorCode::NotLeader { leader_addr: None },
            ErrorCode::Overloaded,
            ErrorCode::Unavailable,
            ErrorCode::Timeout,
            ErrorCode::DiskFull,
        ];
        for code in retriable {
            assert!(code.is_retriable(), "{code:?}");
        }
        let fatal = [
            ErrorCode::UnknownTopic,
            ErrorCode::InvalidTopicName,
            ErrorCode::MessageTooLarge,
            ErrorCode::OffsetOutOfRange {
                log_start_offset: 10,
                high_watermark: 20,
            },
            ErrorCode::DuplicateSequence {
                base_offset: 1,
                last_offset: 2,
            },
            ErrorCode::OutOfOrderSequence {
                expected_sequence: 3,
            },
            ErrorCode::CorruptBatch,
            ErrorCode::InsufficientCapacity {
                node_id: 2,
                reason: "partition cap".into(),
            },
        ];
        for code in fatal {
            assert!(!code.is_retriable(), "{code:?}");
        }
    }

    #[test]
    fn requests_with_bad_topic_names_are_refused() {
        let fetch = |topic: &str| {
            Request::Fetch(FetchRequest {
                topic: topic.into(),
                partition: 0,
                offset: 0,
                max_bytes: 1,
                max_wait_ms: 0,
                min_bytes: 0,
            })
        };
        assert_eq!(fetch("orders").validate_topic_names(), Ok(()));
        let error = fetch("..").validate_topic_names().unwrap_err();
        assert_eq!(error.error_code(), ErrorCode::InvalidTopicName);
        let metadata = Request::Metadata(MetadataRequest {
            topics: Some(vec!["ok".into(), "a/b".into()]),
        });
        assert!(metadata.validate_topic_names().is_err());
        assert_eq!(
            Request::Metadata(MetadataRequest { topics: None }).validate_topic_names(),
            Ok(())
        );
        assert_eq!(
            Request::DeleteTopic(DeleteTopicRequest {
                name: String::new()
            })
            .validate_topic_names()
            .map_err(|error| error.error_code()),
            Err(ErrorCode::InvalidTopicName)
        );
    }

    #[test]
    fn topic_settings_take_minus_one_or_positive_only() {
        let ok = TopicSettings {
            retention_bytes: Some(UNLIMITED),
            retention_ms: Some(1),
            segment_ms: None,
        };
        assert_eq!(ok.check(), Ok(()));
        assert!(!ok.is_empty());
        assert!(TopicSettings::default().is_empty());
        for value in [0, -2, -5, i64::MIN] {
            let bad = TopicSettings {
                segment_ms: Some(value),
                ..ok
            };
            let error = bad.check().unwrap_err();
            assert_eq!(
                error,
                InvalidTopicSetting {
                    setting: "segment.ms",
                    value
                }
            );
            assert_eq!(
                error.to_string(),
                format!("segment.ms must be -1 (unlimited) or a positive number, got {value}")
            );
        }
    }

    #[test]
    fn alter_topic_names_are_checked_and_new_variants_come_last() {
        let alter = Request::AlterTopic(AlterTopicRequest {
            name: "a/b".into(),
            retention_bytes: None,
            retention_ms: Some(1),
            segment_ms: None,
        });
        assert_eq!(
            alter
                .validate_topic_names()
                .map_err(|error| error.error_code()),
            Err(ErrorCode::InvalidTopicName)
        );
        assert_eq!(postcard::to_stdvec(&alter).unwrap()[0], 10);
        let answer = Response::AlterTopic(AlterTopicResponse {
            name: "t".into(),
            config: TopicConfigView {
                retention_bytes: UNLIMITED,
                retention_ms: 1,
                segment_ms: 2,
            },
        });
        // -1 is zigzag 1.
        assert_eq!(
            postcard::to_stdvec(&answer).unwrap(),
            [11, 1, b't', 1, 2, 4]
        );
    }

    /// Pins postcard's encoding of a request header: variant index, then fields in order. A
    /// change here is a protocol change and needs a new PROTOCOL_VERSION.
    #[test]
    fn produce_request_header_bytes_are_pinned() {
        let request = Request::Produce(ProduceRequest {
            topic: "t".into(),
            partition: 2,
            acks: Acks::Committed,
            timeout_ms: 300,
        });
        let bytes = postcard::to_stdvec(&request).unwrap();
        assert_eq!(bytes, [0, 1, b't', 2, 0, 0xac, 0x02]);
        assert_eq!(postcard::from_bytes::<Request>(&bytes).unwrap(), request);
        let error = Response::Error(ErrorCode::NotLeader {
            leader_addr: Some("h:1".into()),
        });
        let bytes = postcard::to_stdvec(&error).unwrap();
        assert_eq!(bytes, [10, 7, 1, 3, b'h', b':', b'1']);
        // Appended last: every older code keeps its tag.
        let capacity = Response::Error(ErrorCode::InsufficientCapacity {
            node_id: 3,
            reason: "r".into(),
        });
        assert_eq!(
            postcard::to_stdvec(&capacity).unwrap(),
            [10, 24, 3, 1, b'r']
        );
    }
}
