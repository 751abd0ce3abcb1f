//! Linearizable reads (docs/RAFT-CORE.md "Reads"): ReadIndex and leases.
//!
//! ReadIndex: the leader records its commit index when the read arrives, confirms it still
//! leads with a round of `ReadIndexCheck` messages to the voters (a quorum, itself included,
//! must answer in its term), then hands the read out with that index; the driver serves it
//! once its state machine has applied the index.
//!
//! Lease: a quorum answered round `r`, sent at leader tick `t`. Those voters reset their
//! election timers when `r` arrived (after `t`), and leader stickiness makes them ignore
//! elections for `election_timeout_min_ticks` after that; so until `t + lease_ticks` (lease =
//! election_min minus a drift margin) no other leader can exist and the commit index can be
//! read without a round trip. TimeoutNow bypasses stickiness, so a leader that started a
//! leadership transfer serves no lease read for the rest of its term.
//!
//! Neither kind is served before the leader's no-op of its term is committed (its commit index
//! may be behind the previous leader's until then).

use std::collections::{BTreeMap, VecDeque};

use crate::entry::{Index, NodeId};
use crate::log::RaftLog;
use crate::membership::Incarnation;
use crate::message::{Message, MessageBody, ReadIndexCheck};
use crate::node::{RaftNode, Role, SendWhen};

/// How a read is confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadMode {
    /// A round of messages to a quorum per read (batched).
    ReadIndex,
    /// No round trip while the leader's lease holds; falls back to ReadIndex otherwise.
    Lease,
}

/// A read the driver may serve once `applied_index >= read_index`; `read_index: None` means
/// the node lost its leadership before confirming it: retry at the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub request_id: u64,
    pub read_index: Option<Index>,
}

/// Why a read was refused at once (all retriable).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// The leader's no-op of its term is not committed yet.
    #[error("the leader has not committed an entry of its term yet")]
    LeaderNotReady,
}

/// Leader-side bookkeeping of read rounds, reset with every term.
#[derive(Debug, Default)]
pub(crate) struct ReadTracker {
    /// The leader's clock for leases: ticks since it took office.
    ticks: u64,
    /// The last round number queued or sent (rounds start at 1).
    last_round: u64,
    /// The tick at which each unconfirmed round was queued.
    round_sent_at: VecDeque<(u64, u64)>,
    /// A round queued in this Ready-cycle (not yet handed to the driver): later reads may
    /// join it, since it leaves after they arrived.
    round_queued: bool,
    /// Highest round each voter answered.
    answered: BTreeMap<NodeId, u64>,
    /// Highest round a quorum answered, and the tick it was sent at.
    confirmed_round: u64,
    confirmed_sent_at: Option<u64>,
    /// Reads waiting for their round: `(round, request id, read index)`.
    pending: VecDeque<(u64, u64, Index)>,
    /// Until this tick the leader keeps leases fresh with a round per heartbeat.
    lease_wanted_until: u64,
    /// A transfer was started in this term: no lease any more (see the module doc).
    lease_revoked: bool,
}

impl ReadTracker {
    /// Anything to reset (a term's rounds or reads).
    pub(crate) fn has_state(&self) -> bool {
        self.last_round > 0 || !self.pending.is_empty() || self.ticks > 0 || self.lease_revoked
    }
}

/// Ticks a lease lasts, counted from when its round was sent.
pub(crate) fn lease_ticks(election_timeout_min_ticks: u32, drift_margin_ticks: u32) -> u64 {
    u64::from(election_timeout_min_ticks.saturating_sub(drift_margin_ticks))
}

impl<L: RaftLog> RaftNode<L> {
    /// Asks for a linearizable read; the answer comes in `Ready::read_states` (at once, in the
    /// next Ready, for a valid lease).
    pub fn request_read(&mut self, request_id: u64, mode: ReadMode) -> Result<(), ReadError> {
        if self.role != Role::Leader {
            return Err(ReadError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.log.term(self.log.commit_index()) != Some(self.term) {
            return Err(ReadError::LeaderNotReady);
        }
        let read_index = self.log.commit_index();
        if mode == ReadMode::Lease {
            self.reads.lease_wanted_until =
                self.reads.ticks + u64::from(self.config.election_timeout_min_ticks);
            if self.lease_is_valid() {
                self.read_states.push(ReadState {
                    request_id,
                    read_index: Some(read_index),
                });
                return Ok(());
            }
        }
        let round = self.queue_read_round();
        self.reads
            .pending
            .push_back((round, request_id, read_index));
        self.maybe_confirm_reads();
        Ok(())
    }

    /// True while a lease read needs no round trip.
    pub fn lease_is_valid(&self) -> bool {
        if self.role != Role::Leader || self.lease_ended_by_transfer() {
            return false;
        }
        let lease = lease_ticks(
            self.config.election_timeout_min_ticks,
            self.config.lease_drift_margin_ticks,
        );
        self.reads
            .confirmed_sent_at
            .is_some_and(|sent_at| self.reads.ticks < sent_at + lease)
    }

    /// A transfer in progress, or one started earlier in this term.
    fn lease_ended_by_transfer(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.config.planted_bugs.lease_reads_ignore_transfer {
            return false;
        }
        self.transfer.is_some() || self.reads.lease_revoked
    }

    /// A round for reads that arrive now: the one queued in this cycle, or a new one.
    fn queue_read_round(&mut self) -> u64 {
        if !self.reads.round_queued {
            self.send_read_round();
        }
        self.reads.last_round
    }

    /// Sends a new round to every other voter.
    pub(crate) fn send_read_round(&mut self) {
        self.reads.last_round += 1;
        self.reads.round_queued = true;
        let round = self.reads.last_round;
        self.reads
            .round_sent_at
            .push_back((round, self.reads.ticks));
        let term = self.term;
        for voter in self.other_voters() {
            let body = MessageBody::ReadIndexCheck(ReadIndexCheck { round });
            self.send(voter, SendWhen::Now, Message { term, body });
        }
        self.maybe_confirm_reads();
    }

    /// Leader tick: the lease clock, and a round per heartbeat while leases are wanted.
    pub(crate) fn tick_reads(&mut self, heartbeat: bool) {
        self.reads.ticks += 1;
        if heartbeat && self.reads.ticks < self.reads.lease_wanted_until {
            self.send_read_round();
        }
    }

    /// Taking a Ready hands the queued round to the driver: later reads need a new one.
    pub(crate) fn read_round_handed_out(&mut self) {
        self.reads.round_queued = false;
    }

    /// Follower side: the leader checks it still leads. Proof enough that it does, in this term.
    pub(crate) fn handle_read_index_check(&mut self, from: NodeId, check: ReadIndexCheck) {
        if self.role == Role::Leader {
            tracing::error!(
                from,
                term = self.term,
                "ReadIndexCheck from another leader of our term"
            );
            return;
        }
        self.become_follower(self.term, Some(from));
        let term = self.term;
        let body = MessageBody::ReadIndexCheckResponse(check);
        // After persistence: the answer promises stickiness in this term, and only a term that
        // is durable makes a restart keep that promise (the vote hold applies to nodes that
        // restart with a term above 0).
        self.send(from, SendWhen::AfterPersist, Message { term, body });
    }

    /// Leader side: a voter answered `round` in our term.
    pub(crate) fn handle_read_index_check_response(
        &mut self,
        from: NodeId,
        incarnation: Option<Incarnation>,
        check: ReadIndexCheck,
    ) {
        if self.role != Role::Leader || !self.counts_vote_of(from, incarnation) {
            return;
        }
        if !self.configuration.is_voter(from) || check.round > self.reads.last_round {
            return;
        }
        if let Some(progress) = self.progress.get_mut(&from) {
            progress.recent_active = true;
        }
        let answered = self.reads.answered.entry(from).or_default();
        *answered = (*answered).max(check.round);
        self.maybe_confirm_reads();
    }

    /// The highest round a quorum of voters (this leader answers every round it sends, if it
    /// is a voter) has answered releases every read waiting for it or an earlier round.
    fn maybe_confirm_reads(&mut self) {
        let id = self.config.id;
        let self_voter = self.is_self_voter();
        let last_round = self.reads.last_round;
        let answered = &self.reads.answered;
        let confirmed = self.configuration.committed_index(|voter| {
            if voter == id && self_voter {
                last_round
            } else {
                answered.get(&voter).copied().unwrap_or(0)
            }
        });
        if confirmed <= self.reads.confirmed_round {
            return;
        }
        self.reads.confirmed_round = confirmed;
        while let Some(&(round, sent_at)) = self.reads.round_sent_at.front() {
            if round > confirmed {
                break;
            }
            self.reads.round_sent_at.pop_front();
            if round == confirmed {
                self.reads.confirmed_sent_at = Some(sent_at);
            }
        }
        while let Some(&(round, request_id, read_index)) = self.reads.pending.front() {
            if round > confirmed {
                break;
            }
            self.reads.pending.pop_front();
            self.read_states.push(ReadState {
                request_id,
                read_index: Some(read_index),
            });
        }
    }

    /// Leadership lost or gained: reads waiting for confirmation fail (the driver retries at
    /// the new leader), and the rounds start over.
    pub(crate) fn reset_reads(&mut self) {
        for (_, request_id, _) in std::mem::take(&mut self.reads.pending) {
            self.read_states.push(ReadState {
                request_id,
                read_index: None,
            });
        }
        self.reads = ReadTracker::default();
    }

    /// A transfer started: leases end for this term.
    pub(crate) fn revoke_lease(&mut self) {
        self.reads.lease_revoked = true;
    }
}
