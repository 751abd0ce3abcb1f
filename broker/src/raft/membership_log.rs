//! How a node tracks its configuration along its log (RAFT.md Membership): a configuration
//! takes effect when its entry is appended, committed or not; a truncated suffix takes its
//! configurations with it; a leader keeps one Progress per member incarnation and counts only
//! the voters' own incarnations; a leader that removed itself steps down once that commits.

use crate::raft::entry::{Entry, EntryKind, Index, NodeId};
use crate::raft::log::RaftLog;
use crate::raft::membership::{Incarnation, Membership};
use crate::raft::node::{RaftNode, Role};
use crate::raft::progress::Progress;

/// Bytes read per batch when scanning the log for configuration entries at start-up.
const SCAN_BATCH_BYTES: u64 = 1024 * 1024;

impl<L: RaftLog> RaftNode<L> {
    /// At start-up: the configuration entries after the one the node was built with.
    pub(crate) fn read_memberships_from_log(&mut self) {
        let mut from = (self.log.applied_index() + 1).max(self.log.first_index());
        let end = self.log.last_index() + 1;
        while from < end {
            let entries = self.log.entries(from, end, SCAN_BATCH_BYTES);
            from += entries.len() as Index;
            self.observe_appended(&entries);
        }
    }

    /// Entries were appended to the log (by this leader, or by a follower after a match and a
    /// truncation already reported through `truncate_memberships_from`).
    pub(crate) fn observe_appended(&mut self, entries: &[Entry]) {
        for entry in entries
            .iter()
            .filter(|entry| entry.kind == EntryKind::Config)
        {
            match Membership::decode(&entry.payload) {
                Some(membership) => {
                    self.membership_entries.push((entry.index, membership));
                }
                // A leader only ever writes encoded configurations; a bad one is a bug or
                // corruption elsewhere, and ignoring it keeps the previous configuration.
                None => tracing::error!(
                    index = entry.index,
                    term = entry.term,
                    "undecodable configuration entry ignored"
                ),
            }
        }
        self.adopt_latest_membership();
    }

    /// The log lost every entry at `from` and above: so did the configurations among them.
    pub(crate) fn truncate_memberships_from(&mut self, from: Index) {
        while self.membership_entries.len() > 1
            && self
                .membership_entries
                .last()
                .is_some_and(|(index, _)| *index >= from)
        {
            self.membership_entries.pop();
        }
        self.adopt_latest_membership();
    }

    /// The commit index rose: forget configurations no truncation can bring back, and a
    /// leader whose removal committed steps down.
    pub(crate) fn after_commit(&mut self) {
        let commit = self.log.commit_index();
        let committed_count = self
            .membership_entries
            .iter()
            .take_while(|(index, _)| *index <= commit)
            .count();
        if committed_count > 1 {
            self.membership_entries.drain(..committed_count - 1);
        }
        if self.role == Role::Leader && !self.is_self_voter() && !self.membership_change_pending() {
            tracing::info!(
                id = self.config.id,
                "removed from the voters: stepping down"
            );
            self.become_follower(self.term, None);
        }
    }

    fn adopt_latest_membership(&mut self) {
        let latest = &self.membership_entries.last().expect("never empty").1;
        if *latest == self.membership {
            return;
        }
        self.membership = latest.clone();
        self.configuration = self.membership.configuration();
        if self.role == Role::Leader {
            self.sync_progress_with_membership();
        }
    }

    /// Leader: one Progress per member id other than itself, for the incarnation it replicates
    /// to; a new incarnation behind a known id starts from scratch.
    pub(crate) fn sync_progress_with_membership(&mut self) {
        let ids = self.membership.member_ids();
        self.progress.retain(|id, _| ids.contains(id));
        let next_index = self.log.last_index() + 1;
        for id in ids {
            if id == self.config.id {
                continue;
            }
            let incarnation = self
                .membership
                .replication_incarnation(id)
                .expect("a member id");
            let current = self.progress.get(&id).map(|progress| progress.incarnation);
            if current != Some(incarnation) {
                let mut progress = Progress::new(
                    next_index,
                    self.config.max_inflight_msgs,
                    self.config.max_inflight_bytes,
                );
                progress.incarnation = incarnation;
                progress.recent_active = true;
                self.progress.insert(id, progress);
            }
        }
    }

    /// Whether a vote from `(from, incarnation)` counts: only a voter's own incarnation
    /// (`None`: the driver did not say, see `step`).
    pub(crate) fn counts_vote_of(&self, from: NodeId, incarnation: Option<Incarnation>) -> bool {
        incarnation.is_none_or(|incarnation| self.membership.is_voter(from, incarnation))
    }

    /// The progress of voter `id` if it tracks the voter's own incarnation: what counts toward
    /// commit and check-quorum (a replacement learner behind the same id does not).
    pub(crate) fn voter_progress(&self, id: NodeId) -> Option<&Progress> {
        let incarnation = self.membership.voters.get(&id)?;
        self.progress
            .get(&id)
            .filter(|progress| progress.incarnation == *incarnation)
    }

    pub(crate) fn is_self_voter(&self) -> bool {
        self.membership
            .is_voter(self.config.id, self.config.incarnation)
    }

    /// Index of the latest configuration entry (or of the starting configuration).
    pub fn membership_index(&self) -> Index {
        self.membership_entries.last().expect("never empty").0
    }

    /// True while the latest configuration entry is not committed: the next change waits.
    pub fn membership_change_pending(&self) -> bool {
        self.membership_index() > self.log.commit_index()
    }

    /// Leader: member `id`'s replicated incarnation holds everything committed so far, so
    /// promoting it (or removing the voter it replaces) cannot stall commits.
    pub fn is_caught_up(&self, id: NodeId) -> bool {
        let Some(progress) = self.progress.get(&id) else {
            return false;
        };
        self.role == Role::Leader
            && Some(progress.incarnation) == self.membership.replication_incarnation(id)
            && progress.match_index >= self.log.commit_index()
    }
}
