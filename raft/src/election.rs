//! Elections (rules: docs/ARCHITECTURE.md "Consensus rules"; decisions: docs/RAFT-CORE.md): terms,
//! pre-vote, votes, leader stickiness, the up-to-date check, the abstain rule, and the role
//! transitions.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::entry::{Entry, EntryKind, NodeId, Term};
use crate::log::RaftLog;
use crate::message::{
    AppendEntriesResponse, AppendResult, ConflictHint, InstallSnapshotResponse, Message,
    MessageBody, VoteRequest, VoteResponse,
};
use crate::node::{RaftNode, Role, SendWhen};
use crate::quorum::VoteResult;

impl<L: RaftLog> RaftNode<L> {
    /// Followers and candidates count toward an election timeout.
    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.randomized_election_timeout_ticks {
            self.reset_election_timer();
            self.start_pre_vote();
        }
    }

    /// Applies the term rules common to every message. Returns false when the message is
    /// consumed here (stale, or ignored by leader stickiness).
    pub(crate) fn step_term(&mut self, from: NodeId, message: &Message) -> bool {
        if message.term > self.term {
            match &message.body {
                // Pre-votes raise nobody's term; a granted pre-vote carries the future term.
                MessageBody::PreVote(_) => return !self.in_lease(),
                MessageBody::PreVoteResponse(response) if response.granted => return true,
                MessageBody::RequestVote(_) if self.in_lease() => return false,
                // TimeoutNow's candidate: the old leader handed over, stickiness does not hold.
                MessageBody::ForcedRequestVote(_) => self.become_follower(message.term, None),
                MessageBody::AppendEntries(_) => self.become_follower(message.term, Some(from)),
                _ => self.become_follower(message.term, None),
            }
            return true;
        }
        if message.term < self.term {
            self.reply_to_stale_term(from, message);
            return false;
        }
        true
    }

    /// A message of an older term: tell the sender our term so it learns it is stale. Every
    /// request a leader sends gets such an answer: a leader that streamed InstallSnapshot
    /// chunks to a follower of a higher term, unanswered, never stepped down and the follower
    /// never caught up (found by the 100,000-seed run).
    fn reply_to_stale_term(&mut self, from: NodeId, message: &Message) {
        let body = match &message.body {
            MessageBody::PreVote(_) => {
                MessageBody::PreVoteResponse(VoteResponse { granted: false })
            }
            MessageBody::RequestVote(_) => {
                MessageBody::RequestVoteResponse(VoteResponse { granted: false })
            }
            MessageBody::InstallSnapshot(chunk) => {
                MessageBody::InstallSnapshotResponse(InstallSnapshotResponse {
                    last_included_index: chunk.meta.last_included_index,
                    received_bytes: 0,
                    done: false,
                })
            }
            MessageBody::ReadIndexCheck(check) => MessageBody::ReadIndexCheckResponse(*check),
            MessageBody::AppendEntries(append) => {
                MessageBody::AppendEntriesResponse(AppendEntriesResponse {
                    result: AppendResult::Rejected {
                        rejected_index: append.prev_log_index,
                        hint: ConflictHint {
                            last_index: self.log.last_index(),
                            conflict_term: None,
                            conflict_term_first_index: 0,
                        },
                    },
                    applied_index: self.log.applied_index(),
                })
            }
            _ => return,
        };
        let term = self.term;
        self.send(from, SendWhen::AfterPersist, Message { term, body });
    }

    /// Leader stickiness: heard from a live leader within `election_timeout_min_ticks`. A
    /// leader is its own live leader (check-quorum demotes it when that stops being true).
    pub(crate) fn in_lease(&self) -> bool {
        let minimum = self.config.election_timeout_min_ticks;
        match self.role {
            Role::Leader => true,
            _ => {
                (self.leader.is_some() && self.election_elapsed_ticks < minimum)
                    || (self.restarted && self.ticks_since_start < minimum)
            }
        }
    }

    /// Election timeout: ask the voters whether they would vote, without raising the term.
    pub(crate) fn start_pre_vote(&mut self) {
        if !self.is_self_voter() || self.is_abstaining() {
            return;
        }
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes = BTreeMap::from([(self.config.id, true)]);
        self.progress.clear();
        let request = self.vote_request();
        let term = self.term + 1;
        for voter in self.other_voters() {
            let body = MessageBody::PreVote(request);
            self.send(voter, SendWhen::Now, Message { term, body });
        }
        if self.configuration.vote_result(&self.votes) == VoteResult::Won {
            self.become_candidate();
        }
    }

    /// A majority of pre-votes: raise the term, vote for ourselves, and ask for votes once
    /// that vote is durable.
    pub(crate) fn become_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader);
        self.term += 1;
        self.vote = Some(self.config.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes = BTreeMap::from([(self.config.id, true)]);
        self.reset_election_timer();
        let request = self.vote_request();
        let term = self.term;
        for voter in self.other_voters() {
            let body = if self.campaign_forced {
                MessageBody::ForcedRequestVote(request)
            } else {
                MessageBody::RequestVote(request)
            };
            self.send(voter, SendWhen::AfterPersist, Message { term, body });
        }
        if self.configuration.vote_result(&self.votes) == VoteResult::Won {
            self.become_leader();
        }
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(term >= self.term);
        if term > self.term {
            self.term = term;
            self.vote = None;
            // Answers still queued for an older term go to a leader or candidate that is now
            // stale, and an acknowledgement among them can describe entries this term's leader
            // is about to truncate before the queue is handed out: sent after that Ready's
            // writes, it would claim entries the log no longer holds. Dropping them is a
            // message loss, which Raft tolerates. (The simulator found it: seed 37529.)
            for queued in self.messages_after_persist.values_mut() {
                queued.retain(|message| message.term >= term);
            }
            self.messages_after_persist
                .retain(|_, queued| !queued.is_empty());
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.uncommitted.clear();
        self.uncommitted_bytes = 0;
        self.transfer = None;
        if self.reads.has_state() {
            self.reset_reads();
        }
        self.reset_election_timer();
    }

    /// Won the election: every follower starts in Probe just past our log, and the no-op of
    /// the new term goes out at once (that is how the others learn there is a leader).
    pub(crate) fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate);
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        self.heartbeat_elapsed_ticks = 0;
        self.election_elapsed_ticks = 0;
        self.progress.clear();
        self.sync_progress_with_membership();
        self.transfer = None;
        self.reset_reads();
        self.uncommitted.clear();
        self.uncommitted_bytes = 0;
        let no_op = Entry {
            index: self.log.last_index() + 1,
            term: self.term,
            kind: EntryKind::NoOp,
            payload: Bytes::new(),
        };
        self.append_own_entry(no_op);
    }

    pub(crate) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        request: VoteRequest,
        pre_vote: bool,
    ) {
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && term > self.term);
        let granted = can_vote && !self.is_abstaining() && self.is_up_to_date(request);
        if granted && !pre_vote {
            self.vote = Some(from);
            self.reset_election_timer();
        }
        let response = VoteResponse { granted };
        let (body, reply_term, when) = if pre_vote {
            // A granted pre-vote answers in the future term so the candidate can count it.
            let reply_term = if granted { term } else { self.term };
            (
                MessageBody::PreVoteResponse(response),
                reply_term,
                SendWhen::Now,
            )
        } else {
            (
                MessageBody::RequestVoteResponse(response),
                self.term,
                SendWhen::AfterPersist,
            )
        };
        self.send(
            from,
            when,
            Message {
                term: reply_term,
                body,
            },
        );
    }

    /// The candidate's log is at least as up-to-date as ours: higher last term wins, then the
    /// longer log.
    fn is_up_to_date(&self, request: VoteRequest) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.config.planted_bugs.grant_vote_without_log_check {
            return true;
        }
        let (our_index, our_term) = (self.log.last_index(), self.log.last_term());
        request.last_log_term > our_term
            || (request.last_log_term == our_term && request.last_log_index >= our_index)
    }

    pub(crate) fn handle_pre_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        response: VoteResponse,
    ) {
        let current_round = if response.granted {
            term == self.term + 1
        } else {
            term == self.term
        };
        if self.role != Role::PreCandidate || !current_round {
            return;
        }
        self.votes.insert(from, response.granted);
        match self.configuration.vote_result(&self.votes) {
            VoteResult::Won => self.become_candidate(),
            VoteResult::Lost => self.become_follower(self.term, None),
            VoteResult::Pending => {}
        }
    }

    pub(crate) fn handle_vote_response(&mut self, from: NodeId, response: VoteResponse) {
        if self.role != Role::Candidate {
            return;
        }
        self.votes.insert(from, response.granted);
        match self.configuration.vote_result(&self.votes) {
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, None),
            VoteResult::Pending => {}
        }
    }

    fn vote_request(&self) -> VoteRequest {
        VoteRequest {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
        }
    }

    pub(crate) fn other_voters(&self) -> Vec<NodeId> {
        self.configuration
            .voters
            .iter()
            .copied()
            .filter(|&id| id != self.config.id)
            .collect()
    }
}
