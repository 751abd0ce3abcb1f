//! Leadership transfer (docs/RAFT-CORE.md "Leadership transfer"): the leader brings the target up
//! to date, stops taking proposals, sends TimeoutNow; the target campaigns at once, skipping
//! pre-vote, with a RequestVote that voters answer despite leader stickiness. A transfer the
//! target does not finish within an election timeout is abandoned.
//!
//! ```text
//!  transfer_leadership(target) --target caught up--> TimeoutNow --> target: term+1, votes
//!        |                                                                 (ForcedRequestVote)
//!        +-- election_timeout_min_ticks without a new leader: abandoned
//! ```

use crate::entry::NodeId;
use crate::log::RaftLog;
use crate::message::{Message, MessageBody};
use crate::node::{RaftNode, Role, SendWhen};

/// Why a transfer was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("node {0} is not another voter")]
    NotAVoter(NodeId),
    #[error("a transfer to {0} is already in progress")]
    InProgress(NodeId),
}

impl<L: RaftLog> RaftNode<L> {
    /// Hands leadership to voter `target`. Until it completes or is abandoned, proposals are
    /// refused with `NotLeader { leader_hint: Some(target) }` and no lease read is served for
    /// the rest of this term.
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if target == self.config.id || self.voter_progress(target).is_none() {
            return Err(TransferError::NotAVoter(target));
        }
        if let Some((current, _)) = self.transfer {
            return Err(TransferError::InProgress(current));
        }
        self.transfer = Some((target, 0));
        self.revoke_lease();
        self.maybe_send_timeout_now();
        Ok(())
    }

    /// Sends TimeoutNow once the target holds the whole log.
    pub(crate) fn maybe_send_timeout_now(&mut self) {
        let Some((target, _)) = self.transfer else {
            return;
        };
        let caught_up = self
            .voter_progress(target)
            .is_some_and(|progress| progress.match_index >= self.log.last_index());
        if caught_up {
            let term = self.term;
            let body = MessageBody::TimeoutNow;
            self.send(target, SendWhen::Now, Message { term, body });
        }
    }

    /// Leader tick: a transfer that took an election timeout is abandoned.
    pub(crate) fn tick_transfer(&mut self) {
        if let Some((target, elapsed)) = self.transfer.as_mut() {
            *elapsed += 1;
            if *elapsed >= self.config.election_timeout_min_ticks {
                tracing::info!(target = *target, "leadership transfer abandoned");
                self.transfer = None;
            }
        }
    }

    /// Target side: the leader asks us to campaign now.
    pub(crate) fn handle_timeout_now(&mut self, from: NodeId) {
        if self.role == Role::Leader || !self.is_self_voter() || self.is_abstaining() {
            return;
        }
        tracing::info!(from, "TimeoutNow: campaigning at once");
        self.campaign_forced = true;
        self.become_candidate();
        self.campaign_forced = false;
    }
}
