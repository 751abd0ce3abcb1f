//! The messages Raft nodes exchange (docs/RAFT-CORE.md "API in one screen"). Every message carries
//! the sender's term; the sender's id and incarnation travel beside it
//! (`RaftNode::step_from(from, incarnation, message)`). New variants go at the END of
//! `MessageBody`: encoders that number variants (postcard) keep the old numbers.

use bytes::Bytes;

use crate::entry::{Entry, Index, Term};
use crate::snapshot::SnapshotMeta;

/// One message with the sender's term. For a `PreVote` the term is the one the sender would
/// campaign in (its term + 1) and it raises nobody's term.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MessageBody {
    /// "Would you vote for me at `term`?" Sent before raising the term.
    PreVote(VoteRequest),
    PreVoteResponse(VoteResponse),
    RequestVote(VoteRequest),
    RequestVoteResponse(VoteResponse),
    /// Entries (possibly none: a heartbeat or a commit notice) after `prev_log_index`.
    AppendEntries(AppendEntries),
    AppendEntriesResponse(AppendEntriesResponse),
    /// One chunk of the leader's snapshot, for a follower behind the leader's first index.
    InstallSnapshot(InstallSnapshot),
    InstallSnapshotResponse(InstallSnapshotResponse),
    /// The leader confirms it still leads, for ReadIndex and leases (docs/RAFT-CORE.md "Reads");
    /// answered with the same round in the responder's term.
    ReadIndexCheck(ReadIndexCheck),
    ReadIndexCheckResponse(ReadIndexCheck),
    /// Leadership transfer: the target campaigns at once, skipping pre-vote.
    TimeoutNow,
    /// A RequestVote from a candidate told to run by TimeoutNow: voters answer it despite
    /// leader stickiness (docs/RAFT-CORE.md "Leadership transfer").
    ForcedRequestVote(VoteRequest),
}

/// One round of leadership confirmation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadIndexCheck {
    pub round: u64,
}

/// Chunk `data` at byte `offset` of the snapshot described by `meta`; `done` on the last one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstallSnapshot {
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub data: Bytes,
    pub done: bool,
}

/// The follower's position in the transfer of the snapshot ending at `last_included_index`:
/// `received_bytes` held so far (the leader sends from there), or `done` once the follower
/// holds everything up to that index (installed, or already committed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstallSnapshotResponse {
    pub last_included_index: Index,
    pub received_bytes: u64,
    pub done: bool,
}

/// The candidate's last log entry, for the up-to-date check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VoteRequest {
    pub last_log_index: Index,
    pub last_log_term: Term,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VoteResponse {
    pub granted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppendEntries {
    pub prev_log_index: Index,
    pub prev_log_term: Term,
    pub entries: Vec<Entry>,
    pub leader_commit: Index,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppendEntriesResponse {
    pub result: AppendResult,
    /// The follower's applied index, for the leader's unapplied-backlog limit.
    pub applied_index: Index,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AppendResult {
    /// The follower's log matches the leader's up to `match_index`, durably.
    Accepted { match_index: Index },
    /// The follower has no entry `(prev_log_index, prev_log_term)`; `rejected_index` is that
    /// `prev_log_index`.
    Rejected {
        rejected_index: Index,
        hint: ConflictHint,
    },
}

/// What a rejecting follower tells the leader so it can skip back a whole term per round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConflictHint {
    /// The follower's last log index.
    pub last_index: Index,
    /// The term of the follower's entry at the rejected index, if it has one.
    pub conflict_term: Option<Term>,
    /// The first index the follower holds of `conflict_term` (0 without a conflict term).
    pub conflict_term_first_index: Index,
}

impl MessageBody {
    /// A short name for traces and counters.
    pub fn kind_name(&self) -> &'static str {
        match self {
            MessageBody::PreVote(_) => "PreVote",
            MessageBody::PreVoteResponse(_) => "PreVoteResponse",
            MessageBody::RequestVote(_) => "RequestVote",
            MessageBody::RequestVoteResponse(_) => "RequestVoteResponse",
            MessageBody::AppendEntries(_) => "AppendEntries",
            MessageBody::AppendEntriesResponse(_) => "AppendEntriesResponse",
            MessageBody::InstallSnapshot(_) => "InstallSnapshot",
            MessageBody::InstallSnapshotResponse(_) => "InstallSnapshotResponse",
            MessageBody::ReadIndexCheck(_) => "ReadIndexCheck",
            MessageBody::ReadIndexCheckResponse(_) => "ReadIndexCheckResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ForcedRequestVote(_) => "ForcedRequestVote",
        }
    }
}
