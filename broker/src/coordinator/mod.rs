//! The consumer-group coordinator's core, pure: no tokio, no I/O, no clock of its own
//! (docs/CONSUMER-GROUPS.md). It owns two things per group, kept apart on purpose:
//!
//! - **Membership** ([`membership`]): the classic group protocol (join, sync, heartbeat, leave,
//!   session and rebalance timeouts), in the coordinator's memory only. Heartbeats never become
//!   Raft writes; a new coordinator rebuilds each group from the last generation stored.
//! - **Offsets and generations** ([`offsets`]): the replicated state machine of one partition of
//!   the internal `__consumer_offsets` topic. Committed offsets, each group's stored generation
//!   (members and assignments), resets, deletes and expiry, applied identically on every replica.
//!
//! Who proposes what: the coordinator (the leader of the group's offsets partition) proposes an
//! [`offsets::OffsetsCommand::GroupGeneration`] when a rebalance completes (the leader's sync) or
//! leaves the group empty, a `RemoveMembers` when members leave or time out (both come out of
//! [`membership::GroupMembership`] as `Effects::proposals`), and the client requests' commits,
//! resets and deletes after the membership's pre-checks. Apply re-checks member and generation,
//! so what a pre-check accepted can still be refused if a rebalance landed first in the log: a
//! commit proposed before a rebalance can never land after it. Expiry is proposed on a timer by
//! the leader with its wall clock in the entry, never read from a replica's clock. Timeouts,
//! delays and the default retention are in `limits.rs` ("Consumer groups").
//!
//! A group maps to one offsets partition by [`offsets_partition_for`] (a stable hash, fixed for
//! the life of a cluster), and that partition's leader is the group's coordinator;
//! [`CoordinatorGate`] says whether this node may answer for a group right now.

pub mod actor;
pub mod membership;
pub mod offsets;

use std::num::NonZeroU32;

use bytes::Bytes;
use keel_raft::{Entry, EntryKind, Term};
use serde::{Deserialize, Serialize};

/// A member's id, handed out by the coordinator on its first join (`client_id-<128 random bits>`).
pub type MemberId = String;

/// A group's generation, Kafka's `generationId`: +1 on every completed join phase.
pub type Generation = i32;

/// One protocol a member supports, with its opaque metadata (for consumers: the subscription).
/// The coordinator never looks inside: it is assignor-agnostic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

/// The generation of a commit from outside group management (Kafka's "simple consumer" and
/// admin commits), sent with an empty member id.
pub const NO_GENERATION: Generation = -1;

/// The internal topic whose partitions hold committed offsets and group generations.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Topics whose names start with this are the cluster's own: clients may not create, delete or
/// produce to them (Kafka reserves the same prefix for `__consumer_offsets` and
/// `__transaction_state`).
pub const RESERVED_TOPIC_PREFIX: &str = "__";

/// Whether `topic` is one of the cluster's internal topics (reserved for the cluster).
pub fn is_reserved_topic(topic: &str) -> bool {
    topic.starts_with(RESERVED_TOPIC_PREFIX)
}

/// Java's `String.hashCode` of `s`: `s[0]*31^(n-1) + ... + s[n-1]` over its UTF-16 code units,
/// wrapping in 32 bits.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// The offsets partition that holds `group`: Kafka's `Utils.abs(groupId.hashCode) % partitions`
/// (with `abs(i32::MIN)` = 0, as Kafka's `Utils.abs`). The same function as Kafka so that Kafka
/// tooling that computes a group's `__consumer_offsets` partition (and a Kafka-protocol front end
/// answering FindCoordinator) agrees with Keel. It must never change once a cluster is founded:
/// a group would silently move to a partition that holds none of its offsets.
pub fn offsets_partition_for(group: &str, partitions: NonZeroU32) -> u32 {
    let hash = java_string_hash(group);
    let abs = if hash == i32::MIN {
        0
    } else {
        hash.unsigned_abs()
    };
    abs % partitions.get()
}

/// A group id a client may use: Kafka refuses only the empty one (INVALID_GROUP_ID).
pub fn check_group_id(group: &str) -> Result<(), GroupError> {
    if group.is_empty() {
        Err(GroupError::InvalidGroupId)
    } else {
        Ok(())
    }
}

/// Why the coordinator refused a request, named as Kafka names it so a Kafka-protocol front end
/// maps them one to one ([`GroupError::kafka_code`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The group is between generations: rejoin.
    #[error("the group is rebalancing (REBALANCE_IN_PROGRESS)")]
    RebalanceInProgress,
    #[error("the coordinator does not know this member (UNKNOWN_MEMBER_ID)")]
    UnknownMemberId,
    #[error("the generation is not the group's current one (ILLEGAL_GENERATION)")]
    IllegalGeneration,
    /// This node does not lead the group's offsets partition.
    #[error("this node is not the group's coordinator (NOT_COORDINATOR)")]
    NotCoordinator,
    /// This node leads the offsets partition but has not applied its term's no-op yet.
    #[error("the coordinator is loading its groups (COORDINATOR_LOAD_IN_PROGRESS)")]
    CoordinatorLoadInProgress,
    /// The group was deleted or unloaded while the request was in flight.
    #[error("the coordinator is not available (COORDINATOR_NOT_AVAILABLE)")]
    CoordinatorNotAvailable,
    #[error(
        "the protocol type or protocols do not match the group's (INCONSISTENT_GROUP_PROTOCOL)"
    )]
    InconsistentGroupProtocol,
    #[error("the session timeout is outside the coordinator's range (INVALID_SESSION_TIMEOUT)")]
    InvalidSessionTimeout,
    #[error("the group id is invalid (INVALID_GROUP_ID)")]
    InvalidGroupId,
    #[error("the group has members (NON_EMPTY_GROUP)")]
    NonEmptyGroup,
    #[error("the group does not exist (GROUP_ID_NOT_FOUND)")]
    GroupIdNotFound,
    #[error(
        "an offset's metadata is longer than {} bytes (OFFSET_METADATA_TOO_LARGE)",
        crate::limits::OFFSET_METADATA_MAX_BYTES
    )]
    OffsetMetadataTooLarge,
    /// An offsets-partition entry that does not decode: every replica refuses it alike.
    #[error("an undecodable offsets command (UNKNOWN_SERVER_ERROR)")]
    CorruptCommand,
}

impl GroupError {
    /// Kafka's error code for this error (`org.apache.kafka.common.protocol.Errors`).
    pub fn kafka_code(&self) -> i16 {
        match self {
            GroupError::RebalanceInProgress => 27,
            GroupError::UnknownMemberId => 25,
            GroupError::IllegalGeneration => 22,
            GroupError::NotCoordinator => 16,
            GroupError::CoordinatorLoadInProgress => 14,
            GroupError::CoordinatorNotAvailable => 15,
            GroupError::InconsistentGroupProtocol => 23,
            GroupError::InvalidSessionTimeout => 26,
            GroupError::InvalidGroupId => 24,
            GroupError::NonEmptyGroup => 68,
            GroupError::GroupIdNotFound => 69,
            GroupError::OffsetMetadataTooLarge => 12,
            GroupError::CorruptCommand => -1,
        }
    }
}

/// This node's standing for one offsets partition, as far as answering group requests goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Another node (or none) leads: NOT_COORDINATOR.
    NotLeader,
    /// Leader of `term`, whose no-op is not applied yet: entries of earlier terms may still
    /// commit and change generations, so nothing can be answered from memory yet.
    Loading { term: Term },
    /// Leader of `term` with everything before its no-op applied: the groups can be rebuilt
    /// from the offsets state and served.
    Active { term: Term },
}

/// Whether this node is a group's coordinator right now, fed by the offsets partition's role
/// changes and applied entries (the shell forwards `Machine::on_role_change` and `apply`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoordinatorGate {
    standing: Standing,
}

impl Default for CoordinatorGate {
    fn default() -> Self {
        CoordinatorGate {
            standing: Standing::NotLeader,
        }
    }
}

impl CoordinatorGate {
    pub fn standing(&self) -> Standing {
        self.standing
    }

    /// The role changed. A leader starts `Loading` even if it led an earlier term: its no-op
    /// must apply before it knows which of the previous term's proposals committed.
    pub fn on_role_change(&mut self, is_leader: bool, term: Term) {
        self.standing = if is_leader {
            Standing::Loading { term }
        } else {
            Standing::NotLeader
        };
    }

    /// A committed entry was applied. Returns true exactly when this completes the load: the
    /// shell then rebuilds every group's membership from the offsets state
    /// ([`membership::GroupMembership::restore`]).
    pub fn on_applied(&mut self, entry: &Entry) -> bool {
        match self.standing {
            Standing::Loading { term } if entry.kind == EntryKind::NoOp && entry.term == term => {
                self.standing = Standing::Active { term };
                true
            }
            _ => false,
        }
    }

    /// Ok with the leader's term when group requests may be served here.
    pub fn check(&self) -> Result<Term, GroupError> {
        match self.standing {
            Standing::NotLeader => Err(GroupError::NotCoordinator),
            Standing::Loading { .. } => Err(GroupError::CoordinatorLoadInProgress),
            Standing::Active { term } => Ok(term),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_javas_string_hash_code() {
        // Values of "...".hashCode() in Java.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("my-group"), -1_906_497_762);
        // Overflow wraps as Java's int does.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        // UTF-16 code units, not bytes or chars: U+1F600 is a surrogate pair.
        assert_eq!(java_string_hash("é"), 233);
        assert_eq!(java_string_hash("\u{1F600}"), 1_772_899);
    }

    #[test]
    fn a_group_maps_to_its_partition_as_kafka_maps_it() {
        let fifty = NonZeroU32::new(50).unwrap();
        // |-1906497762| % 50
        assert_eq!(offsets_partition_for("my-group", fifty), 12);
        // Kafka's Utils.abs maps i32::MIN to 0 instead of overflowing.
        assert_eq!(offsets_partition_for("polygenelubricants", fifty), 0);
        // |-337951494| % 7
        assert_eq!(
            offsets_partition_for("zzzzzzzzzzzzz", NonZeroU32::new(7).unwrap()),
            337_951_494 % 7
        );
        let one = NonZeroU32::new(1).unwrap();
        assert_eq!(offsets_partition_for("anything", one), 0);
    }

    #[test]
    fn names_starting_with_two_underscores_are_reserved() {
        assert!(is_reserved_topic(OFFSETS_TOPIC));
        assert!(is_reserved_topic("__anything"));
        assert!(!is_reserved_topic("_single"));
        assert!(!is_reserved_topic("orders__v2"));
        assert_eq!(check_group_id(""), Err(GroupError::InvalidGroupId));
        assert_eq!(check_group_id("g"), Ok(()));
    }

    fn entry(kind: EntryKind, term: Term) -> Entry {
        Entry {
            index: 1,
            term,
            kind,
            payload: Bytes::new(),
        }
    }

    #[test]
    fn a_new_leader_is_loading_until_its_own_no_op_applies() {
        let mut gate = CoordinatorGate::default();
        assert_eq!(gate.check(), Err(GroupError::NotCoordinator));
        gate.on_role_change(true, 4);
        assert_eq!(gate.check(), Err(GroupError::CoordinatorLoadInProgress));
        assert!(
            !gate.on_applied(&entry(EntryKind::NoOp, 3)),
            "an earlier term's no-op"
        );
        assert!(!gate.on_applied(&entry(EntryKind::Meta, 4)));
        assert_eq!(gate.check(), Err(GroupError::CoordinatorLoadInProgress));
        assert!(gate.on_applied(&entry(EntryKind::NoOp, 4)));
        assert_eq!(gate.check(), Ok(4));
        assert!(!gate.on_applied(&entry(EntryKind::NoOp, 4)), "loads once");
        gate.on_role_change(false, 5);
        assert_eq!(gate.check(), Err(GroupError::NotCoordinator));
    }
}
