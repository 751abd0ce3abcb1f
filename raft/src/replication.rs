//! Replication and commit (rules: docs/ARCHITECTURE.md "Consensus rules"):
//! the leader's sending side with its flow control, the follower's consistency check, the
//! commit rule, heartbeats and check-quorum.

use crate::entry::{entries_size_bytes, Index, NodeId};
use crate::log::RaftLog;
use crate::membership::Incarnation;
use crate::message::{
    AppendEntries, AppendEntriesResponse, AppendResult, ConflictHint, Message, MessageBody,
};
use crate::node::{RaftNode, Role, SendWhen};
use crate::progress::{Progress, ProgressState};

/// Whether `send_append` may send a message without entries (to carry the commit index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Empty {
    Allowed,
    Skip,
}

impl<L: RaftLog> RaftNode<L> {
    pub(crate) fn tick_leader(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        let heartbeat = self.heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks;
        if heartbeat {
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
        }
        self.tick_reads(heartbeat);
        self.tick_transfer();
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.config.election_timeout_min_ticks {
            self.election_elapsed_ticks = 0;
            self.check_quorum();
        }
    }

    /// Check-quorum: a leader that heard from no majority within an election timeout steps
    /// down, which also ends a leader that can send but not receive.
    fn check_quorum(&mut self) {
        let id = self.config.id;
        let active = self.configuration.has_quorum(|voter| {
            (voter == id && self.is_self_voter())
                || self.voter_progress(voter).is_some_and(|p| p.recent_active)
        });
        for progress in self.progress.values_mut() {
            progress.recent_active = false;
        }
        if !active {
            self.become_follower(self.term, None);
        }
    }

    /// Heartbeats prove leadership and carry the commit index. Each names the entry before
    /// the follower's next index as its prev entry: accepted, it acknowledges everything sent
    /// so far (so lost acknowledgements cannot stall a pipeline); rejected, it reveals lost
    /// AppendEntries or a follower that lost entries it acknowledged, and the leader probes.
    fn broadcast_heartbeat(&mut self) {
        let ids: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in ids {
            let next_index = self.progress[&to].next_index;
            if self.progress[&to].state == ProgressState::Snapshot
                || self.needs_snapshot(next_index)
            {
                // The chunk in flight may be lost: a heartbeat sends it again.
                self.maybe_send_snapshot_chunk(to, true);
                continue;
            }
            let prev_log_index = next_index - 1;
            let prev_log_term = self
                .log
                .term(prev_log_index)
                .expect("a leader holds its log from its snapshot on");
            let append = AppendEntries {
                prev_log_index,
                prev_log_term,
                entries: Vec::new(),
                leader_commit: self.log.commit_index(),
            };
            let term = self.term;
            self.send(
                to,
                SendWhen::Now,
                Message {
                    term,
                    body: MessageBody::AppendEntries(append),
                },
            );
        }
    }

    /// Called when the driver takes a Ready: one batched AppendEntries per follower that has
    /// entries waiting or has not heard the latest commit index, as flow control allows.
    pub(crate) fn send_appends_to_all(&mut self) {
        let ids: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in ids {
            let progress = &self.progress[&to];
            if progress.state == ProgressState::Snapshot || self.needs_snapshot(progress.next_index)
            {
                self.maybe_send_snapshot_chunk(to, false);
                continue;
            }
            while self.send_append(to, Empty::Skip) {}
            if self.progress[&to].commit_sent < self.log.commit_index() {
                self.send_append(to, Empty::Allowed);
            }
        }
    }

    pub(crate) fn has_appends_to_send(&self) -> bool {
        self.progress
            .values()
            .any(|progress| self.wants_to_send(progress))
    }

    /// Mirrors `send_appends_to_all`: entries wait and flow control allows, or the follower has
    /// not heard the latest commit index.
    fn wants_to_send(&self, progress: &Progress) -> bool {
        if progress.state == ProgressState::Snapshot || self.needs_snapshot(progress.next_index) {
            return progress.state != ProgressState::Snapshot || !progress.probe_sent;
        }
        if progress.is_paused() {
            return false;
        }
        let backlog_full =
            progress.unapplied_entries(self.log.commit_index()) > self.config.max_unapplied_entries;
        let entries_waiting = progress.next_index <= self.log.last_index() && !backlog_full;
        entries_waiting || progress.commit_sent < self.log.commit_index()
    }

    /// Sends one AppendEntries to `to` if flow control allows. Returns true if it carried
    /// entries (so the caller may try again to fill the pipeline).
    fn send_append(&mut self, to: NodeId, empty: Empty) -> bool {
        let last = self.log.last_index();
        let progress = &self.progress[&to];
        if progress.is_paused() {
            return false;
        }
        let backlog_full =
            progress.unapplied_entries(self.log.commit_index()) > self.config.max_unapplied_entries;
        let entries = if backlog_full || progress.next_index > last {
            Vec::new()
        } else {
            self.log
                .entries(progress.next_index, last + 1, self.config.max_append_bytes)
        };
        if entries.is_empty() && empty == Empty::Skip {
            return false;
        }
        let prev_log_index = progress.next_index - 1;
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            return false; // compacted meanwhile: the next round sends the snapshot
        };
        let bytes = entries_size_bytes(&entries);
        let last_sent = entries.last().map(|entry| entry.index);
        let leader_commit = self.log.commit_index();
        let progress = self.progress.get_mut(&to).expect("progress of a member");
        progress.sent_append(last_sent, bytes);
        progress.commit_sent = leader_commit;
        let append = AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        };
        let term = self.term;
        self.send(
            to,
            SendWhen::Now,
            Message {
                term,
                body: MessageBody::AppendEntries(append),
            },
        );
        last_sent.is_some() && progress_state_is_replicate(self, to)
    }

    /// Follower side: the consistency check on `(prev_log_index, prev_log_term)`, then append.
    pub(crate) fn handle_append_entries(&mut self, from: NodeId, append: AppendEntries) {
        match self.role {
            Role::Leader => panic!(
                "two leaders in term {}: {} and {from}",
                self.term, self.config.id
            ),
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                self.become_follower(self.term, Some(from))
            }
        }
        let result = match self.well_formed(&append) {
            true => self.accept_or_reject(append),
            false => return,
        };
        let response = AppendEntriesResponse {
            result,
            applied_index: self.log.applied_index(),
        };
        let term = self.term;
        let body = MessageBody::AppendEntriesResponse(response);
        self.send(from, SendWhen::AfterPersist, Message { term, body });
    }

    /// Entries must follow the prev entry one by one with terms that never go down, or the
    /// log would get a hole: a malformed message is ignored (bad network input is never a panic).
    fn well_formed(&self, append: &AppendEntries) -> bool {
        let mut previous = (append.prev_log_index, append.prev_log_term);
        for entry in &append.entries {
            if entry.index != previous.0 + 1 || entry.term < previous.1 || entry.term > self.term {
                tracing::warn!(
                    prev_log_index = append.prev_log_index,
                    index = entry.index,
                    "ignoring a malformed AppendEntries"
                );
                return false;
            }
            previous = (entry.index, entry.term);
        }
        true
    }

    fn accept_or_reject(&mut self, append: AppendEntries) -> AppendResult {
        let commit = self.log.commit_index();
        if append.prev_log_index < commit {
            // Everything up to our commit index already matches the leader.
            return AppendResult::Accepted {
                match_index: commit,
            };
        }
        if !self
            .log
            .matches(append.prev_log_index, append.prev_log_term)
        {
            return AppendResult::Rejected {
                rejected_index: append.prev_log_index,
                hint: self.conflict_hint(append.prev_log_index),
            };
        }
        let last_new_index = append.prev_log_index + append.entries.len() as Index;
        if let Some(first_new) = self.log.append_after_match(&append.entries) {
            self.truncate_memberships_from(first_new);
            let skipped = (first_new - append.prev_log_index - 1) as usize;
            self.observe_appended(&append.entries[skipped..]);
        }
        if self.log.commit_to(append.leader_commit.min(last_new_index)) {
            self.after_commit();
        }
        AppendResult::Accepted {
            match_index: last_new_index,
        }
    }

    fn conflict_hint(&self, rejected_index: Index) -> ConflictHint {
        let last_index = self.log.last_index();
        if rejected_index > last_index {
            return ConflictHint {
                last_index,
                conflict_term: None,
                conflict_term_first_index: 0,
            };
        }
        ConflictHint {
            last_index,
            conflict_term: self.log.term(rejected_index),
            conflict_term_first_index: self.log.first_index_of_term_at(rejected_index),
        }
    }

    /// Leader side of a follower's answer.
    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        incarnation: Option<Incarnation>,
        response: AppendEntriesResponse,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        if incarnation.is_some_and(|incarnation| incarnation != progress.incarnation) {
            return; // another incarnation behind the same address: not the one we track
        }
        progress.recent_active = true;
        progress.applied_index = progress.applied_index.max(response.applied_index);
        let first_index = self.log.first_index();
        let progress = self.progress.get_mut(&from).expect("checked above");
        match response.result {
            AppendResult::Accepted { match_index } => {
                if progress.maybe_update(match_index) {
                    match progress.state {
                        ProgressState::Probe => progress.become_replicate(),
                        ProgressState::Replicate => progress.inflights.free_to(match_index),
                        // An answer to an append sent before the transfer: if it reaches the
                        // log the leader still holds, the snapshot is no longer needed.
                        ProgressState::Snapshot if match_index + 1 >= first_index => {
                            progress.become_probe()
                        }
                        ProgressState::Snapshot => {}
                    }
                    self.maybe_commit();
                    if self.transfer.is_some_and(|(target, _)| target == from) {
                        self.maybe_send_timeout_now();
                    }
                } else if progress.state == ProgressState::Probe {
                    progress.probe_sent = false;
                } else if progress.inflights.is_full() {
                    // A full pipeline and an answer (typically to a heartbeat, sent after
                    // everything in flight) that acknowledges nothing new: the messages in
                    // flight were lost. Probe again from the match instead of stalling.
                    progress.become_probe();
                }
            }
            AppendResult::Rejected {
                rejected_index,
                hint,
            } => {
                let next_hint = self.next_index_hint(rejected_index, hint);
                let progress = self.progress.get_mut(&from).expect("checked above");
                progress.maybe_decrease_to(rejected_index, next_hint, hint.last_index);
            }
        }
    }

    /// Where the leader should try next after a rejection, skipping a whole term per round
    /// trip: past the follower's log end, past the leader's last entry of the conflicting
    /// term, or to the follower's first entry of a term the leader does not have.
    fn next_index_hint(&self, rejected_index: Index, hint: ConflictHint) -> Index {
        let Some(conflict_term) = hint.conflict_term else {
            return hint.last_index + 1;
        };
        let candidate = self
            .log
            .last_index_with_term_at_most(conflict_term, rejected_index);
        if self.log.term(candidate) == Some(conflict_term) {
            candidate + 1
        } else {
            hint.conflict_term_first_index.max(1)
        }
    }

    /// The commit rule: a majority has the entry durably AND it is of the current term.
    pub(crate) fn maybe_commit(&mut self) {
        let id = self.config.id;
        let persisted = self.log.persisted_index();
        let quorum_index = self.configuration.committed_index(|voter| {
            if voter == id && self.is_self_voter() {
                persisted
            } else {
                self.voter_progress(voter).map_or(0, |p| p.match_index)
            }
        });
        if quorum_index <= self.log.commit_index() {
            return;
        }
        if self.log.term(quorum_index) != Some(self.term) && !self.counts_old_term_entries() {
            return; // older-term entries commit only under a current-term entry
        }
        self.log.commit_to(quorum_index);
        while let Some(&(index, bytes)) = self.uncommitted.front() {
            if index > quorum_index {
                break;
            }
            self.uncommitted.pop_front();
            self.uncommitted_bytes -= bytes;
        }
        self.after_commit();
    }

    fn counts_old_term_entries(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.config.planted_bugs.count_old_term_entries_for_commit {
            return true;
        }
        false
    }
}

fn progress_state_is_replicate<L: RaftLog>(node: &RaftNode<L>, id: NodeId) -> bool {
    node.progress[&id].state == ProgressState::Replicate
}
