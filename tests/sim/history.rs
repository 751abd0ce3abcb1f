//! What the simulator has observed so far, for the invariants to check against: leaders per
//! term, every entry ever seen, the committed and applied entries, acknowledged proposals.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use keel_broker::partition::machine::Applied;
use keel_raft::{EntryKind, Index, NodeId, Term};

/// A broken safety property: which rule, and what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static str,
    pub detail: String,
}

pub type Check = Result<(), Violation>;

pub fn violation(rule: &'static str, detail: String) -> Check {
    Err(Violation { rule, detail })
}

#[derive(Clone, Debug)]
pub struct SeenEntry {
    pub kind: EntryKind,
    pub payload: Bytes,
    pub previous_term: Term,
}

#[derive(Clone, Debug)]
pub struct CommittedEntry {
    pub term: Term,
    pub payload: Bytes,
    /// The term of the node that first observed the commit (the committing leader's term).
    pub commit_term: Term,
}

/// A proposal the client was told succeeded.
#[derive(Clone, Debug)]
pub struct Acknowledgement {
    pub producer: usize,
    pub index: Index,
    pub term: Term,
    pub payload: Bytes,
}

/// What a leader's log looked like at the last check: `(term led, last index, its term)`.
#[derive(Clone, Copy, Debug)]
pub struct LeaderWatch {
    pub term: Term,
    pub last_index: Index,
    pub last_term: Term,
}

#[derive(Default)]
pub struct History {
    pub leaders_by_term: BTreeMap<Term, NodeId>,
    pub leader_watch: BTreeMap<NodeId, LeaderWatch>,
    /// `(term, commit index)` of each leader at the last check.
    pub leader_commit_watch: BTreeMap<NodeId, (Term, Index)>,
    pub entries_seen: HashMap<(Index, Term), SeenEntry>,
    pub committed: BTreeMap<Index, CommittedEntry>,
    pub commit_observed: BTreeMap<NodeId, Index>,
    pub applied: BTreeMap<Index, (Term, Bytes)>,
    pub applied_by_node: BTreeMap<NodeId, Index>,
    /// The state machine's digest after applying each index (the first node to get there).
    pub digest_at: BTreeMap<Index, u64>,
    /// The partition machine's applied state after each index, its log start cleared (each
    /// replica moves its own): what a snapshot at that index must hold.
    pub partition_at: BTreeMap<Index, Applied>,
    pub acknowledged: Vec<Acknowledgement>,
}

impl History {
    /// A node restarted: it knows only its disk, so it re-learns commits and re-applies.
    pub fn forget_volatile_state(&mut self, id: NodeId) {
        self.commit_observed.insert(id, 0);
        self.applied_by_node.insert(id, 0);
        self.leader_watch.remove(&id);
        self.leader_commit_watch.remove(&id);
    }
}
