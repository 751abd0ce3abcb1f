//! How a node tracks its configuration along its log (docs/RAFT-CORE.md "Membership"): a
//! configuration takes effect when its entry is appended, committed or not; a truncated suffix
//! takes its configurations with it; a leader keeps one Progress per member incarnation and counts
//! only the voters' own incarnations; a leader that removed itself steps down once that commits.

use crate::config::MEMBERSHIP_SCAN_BATCH_BYTES;
use crate::entry::{Entry, EntryKind, Index, NodeId};
use crate::log::RaftLog;
use crate::membership::{Incarnation, Membership};
use crate::node::{RaftNode, Role};
use crate::progress::Progress;

impl<L: RaftLog> RaftNode<L> {
    /// At start-up: the configuration entries after the one the node was built with.
    pub(crate) fn read_memberships_from_log(&mut self) {
        let mut from = (self.membership_index() + 1).max(self.log.first_index());
        let end = self.log.last_index() + 1;
        while from < end {
            let entries = self.log.entries(from, end, MEMBERSHIP_SCAN_BATCH_BYTES);
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

    /// The configuration as of `index` (at or above the latest snapshot's index).
    pub(crate) fn membership_at(&self, index: Index) -> Membership {
        self.membership_entries
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .map(|(_, membership)| membership.clone())
            .expect("configurations are kept down to the snapshot index")
    }

    /// A snapshot at `index` covers the configurations up to it: keep only the one in effect
    /// there (and every later one).
    pub(crate) fn forget_memberships_through(&mut self, index: Index) {
        let covered = self
            .membership_entries
            .iter()
            .take_while(|(at, _)| *at <= index)
            .count();
        if covered > 1 {
            self.membership_entries.drain(..covered - 1);
        }
    }

    /// An installed snapshot at `index` brings its own configuration as of `index`.
    pub(crate) fn replace_memberships_through(&mut self, index: Index, membership: Membership) {
        self.membership_entries.retain(|(at, _)| *at > index);
        self.membership_entries.insert(0, (index, membership));
        self.adopt_latest_membership();
    }

    /// The commit index rose: a leader whose removal committed steps down. (Configurations
    /// are forgotten only by compaction: they are rare, and a snapshot needs the one in
    /// effect at its index.)
    pub(crate) fn after_commit(&mut self) {
        if self.role == Role::Leader && !self.is_self_voter() && !self.membership_change_pending() {
            tracing::info!(
                id = self.config.id,
                "removed from the voters: stepping down"
            );
            self.become_follower(self.term, None);
        }
    }

    pub(crate) fn adopt_latest_membership(&mut self) {
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

    /// Whether an answer from `(from, incarnation)` is the incarnation the leader replicates to.
    pub(crate) fn counts_answer_of(&self, from: NodeId, incarnation: Option<Incarnation>) -> bool {
        incarnation.is_none_or(|incarnation| {
            self.progress
                .get(&from)
                .is_some_and(|progress| progress.incarnation == incarnation)
        })
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
