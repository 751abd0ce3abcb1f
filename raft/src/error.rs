//! Errors the core hands to its caller: what a client or driver can act on. Protocol
//! violations that can only be bugs are assertions, not errors.

use crate::entry::NodeId;

/// Why a proposal was refused. `NotLeader` and `Overloaded` are retriable (at the leader named by
/// the hint, or later); `PayloadTooLarge` is not.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node does not lead the group; `leader_hint` is the leader it last heard from.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// The leader's uncommitted entries already hold `uncommitted_bytes`; retry after commits
    /// catch up (docs/RAFT-CORE.md "Backpressure").
    #[error("overloaded: {uncommitted_bytes} uncommitted bytes (limit {max_uncommitted_bytes})")]
    Overloaded {
        uncommitted_bytes: u64,
        max_uncommitted_bytes: u64,
    },
    /// A single entry larger than the leader may ever hold uncommitted: it could never be
    /// accepted, so retrying is pointless (split the payload).
    #[error("entry of {size_bytes} bytes exceeds max_uncommitted_bytes {max_uncommitted_bytes}")]
    PayloadTooLarge {
        size_bytes: u64,
        max_uncommitted_bytes: u64,
    },
}

/// A configuration the core refuses to run with (`Config::validate`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} must be at least {minimum}, got {value}")]
    TooSmall {
        name: &'static str,
        value: u64,
        minimum: u64,
    },
    #[error("{larger} ({larger_value}) must be at least {smaller} ({smaller_value})")]
    Relationship {
        larger: &'static str,
        larger_value: u64,
        smaller: &'static str,
        smaller_value: u64,
    },
    #[error("node {id} is not a voter of the configuration {voters:?}")]
    NotAMember { id: NodeId, voters: Vec<NodeId> },
    #[error("the configuration has no voters")]
    NoVoters,
}
