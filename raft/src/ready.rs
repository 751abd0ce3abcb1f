//! `Ready`: everything the core asks its driver to do, with the order it must be done in.
//!
//! The driver takes one `Ready` at a time (`RaftNode::ready`) and handles its fields in this
//! order (docs/ARCHITECTURE.md "The driver contract", etcd `rawnode.go`):
//!
//! ```text
//!   1. truncate_from, snapshot, entries,    -> write to storage in this order (entries
//!      hard_state                              readable on return); install the snapshot
//!   2. messages                            -> send now, in parallel with the writes
//!   3. sync storage; then on_persisted(last entry index, term)
//!   4. messages_after_persist              -> send only once steps 1+3 are durable for this
//!                                             Ready and every earlier one
//!   5. committed_entries                   -> apply in order; then on_applied(last index)
//! ```
//!
//! There is no separate `advance`: taking a `Ready` hands its contents over, and the two
//! acknowledgements `on_persisted` and `on_applied` tell the core what became true.

use crate::entry::{Entry, HardState, Index, NodeId, Term};
use crate::message::Message;
use crate::read_index::ReadState;
use crate::snapshot::Snapshot;

/// The messages for one peer, in the order the core produced them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerMessages {
    pub to: NodeId,
    pub messages: Vec<Message>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Persist (atomically) before sending `messages_after_persist`. `Some` only when the term
    /// or vote changed since the last `Ready`.
    pub hard_state: Option<HardState>,
    /// Delete every stored entry at this index and above BEFORE appending `entries` (a
    /// follower replacing a conflicting suffix). Never at or below the commit index.
    pub truncate_from: Option<Index>,
    /// A snapshot from the leader, after `truncate_from` and before `entries`: persist it,
    /// delete every stored entry at or below `meta.last_included_index`, replace the state
    /// machine with `data` (before applying `committed_entries`), then report
    /// `on_snapshot_done(meta.last_included_index)`. Its acknowledgement is in
    /// `messages_after_persist`, so the snapshot must be durable with this Ready's writes.
    pub snapshot: Option<Snapshot>,
    /// Append to storage after the truncation. Contiguous, following the stored log. Once
    /// durable, report `on_persisted(last.index, last.term)`.
    pub entries: Vec<Entry>,
    /// Safe to send at once, even before `entries` are durable: the leader's AppendEntries
    /// (it counts itself only after its own write) and pre-vote traffic.
    pub messages: Vec<PeerMessages>,
    /// Send only after `hard_state` and `entries` of this Ready AND of every earlier Ready
    /// are durable: vote grants, RequestVote (the candidate's own vote must be durable) and
    /// append acknowledgements (etcd `msgsAfterAppend`).
    pub messages_after_persist: Vec<PeerMessages>,
    /// Committed entries to apply, in index order, each exactly once. Then `on_applied`.
    pub committed_entries: Vec<Entry>,
    /// Reads confirmed (or failed) since the last Ready: serve each once the state machine has
    /// applied its `read_index` (docs/RAFT-CORE.md "Reads").
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// True when the driver has nothing to do.
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.truncate_from.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.messages_after_persist.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
    }

    /// The `(index, term)` to report with `on_persisted` once `entries` are durable.
    pub fn last_entry(&self) -> Option<(Index, Term)> {
        self.entries.last().map(|entry| (entry.index, entry.term))
    }

    /// How many messages this Ready sends, both lists together.
    pub fn message_count(&self) -> usize {
        self.messages
            .iter()
            .chain(&self.messages_after_persist)
            .map(|batch| batch.messages.len())
            .sum()
    }
}
