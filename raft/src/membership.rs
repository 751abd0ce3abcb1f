//! Membership (docs/RAFT-CORE.md "Membership"): who votes and who receives the log, as
//! `(node_id, incarnation)` pairs; the single-server changes between configurations; the
//! encoding of a configuration in a `Config` log entry; and `ReplaceNode`, the driver-level
//! sequence that brings a wiped node back (add learner, remove old voter, promote).
//!
//! A node id is an address; an incarnation is one life of the disk behind it. A node that lost
//! its disk comes back under the same id with a new incarnation and is a different server: it
//! must never vote or acknowledge as the old member. Voters and learners are therefore maps
//! from id to incarnation, and the same id may appear as a voter (the lost incarnation) and a
//! learner (its replacement) at once, which is exactly the middle of a replacement.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::entry::{Index, NodeId};
use crate::error::ProposeError;
use crate::log::RaftLog;
use crate::quorum::Configuration;

/// One life of a node's storage: drawn at random the first time a node starts on an empty data
/// directory and stored there (docs/FORMAT.md "Small records"). `RaftNode::new` (ids only) uses 0
/// for everyone.
pub type Incarnation = u64;

/// The members of a group with their incarnations. The configuration a node uses is the latest
/// one in its log, committed or not (docs/RAFT-CORE.md "Membership").
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Membership {
    /// Vote, and count toward commit and check-quorum.
    pub voters: BTreeMap<NodeId, Incarnation>,
    /// Receive the log; neither vote nor count.
    pub learners: BTreeMap<NodeId, Incarnation>,
}

/// One single-server change. Each names the incarnation it acts on, so a change meant for a
/// lost incarnation can never hit its replacement (or the other way round).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MembershipChange {
    /// A new server (or a new incarnation of a known id) starts receiving the log.
    AddLearner {
        id: NodeId,
        incarnation: Incarnation,
    },
    /// A caught-up learner becomes a voter: one voter change. Its id must not be a voter.
    PromoteLearner {
        id: NodeId,
        incarnation: Incarnation,
    },
    /// One voter change. The last voter cannot be removed.
    RemoveVoter {
        id: NodeId,
        incarnation: Incarnation,
    },
    RemoveLearner {
        id: NodeId,
        incarnation: Incarnation,
    },
}

/// Why a membership change was refused. Every variant but `Invalid` is retriable later.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// The leader has not yet committed an entry of its own term (its no-op): single-server
    /// changes are unsafe across leader changes until it has (docs/RAFT-CORE.md "Membership").
    #[error("the leader has not committed an entry of its term yet")]
    OwnTermNotCommitted,
    /// The previous configuration entry (at `index`) is not committed yet.
    #[error("the configuration change at index {index} is not committed yet")]
    ChangePending { index: Index },
    /// A leadership transfer is in progress: the leader takes no proposals.
    #[error("a leadership transfer is in progress")]
    TransferInProgress,
    /// The change does not apply to the current configuration (never retriable as is).
    #[error("invalid membership change: {0}")]
    Invalid(&'static str),
}

/// Version byte of the encoded configuration (part of the log format).
const ENCODING_VERSION: u8 = 1;
/// Bytes of one encoded member: id and incarnation, little-endian.
const MEMBER_BYTES: usize = 16;

impl Membership {
    /// Voters with their incarnations, no learners (a founding configuration).
    pub fn with_voters(voters: impl IntoIterator<Item = (NodeId, Incarnation)>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            learners: BTreeMap::new(),
        }
    }

    /// An id-only configuration as a membership where every incarnation is 0 (what
    /// `RaftNode::new` runs with).
    pub fn from_configuration(configuration: &Configuration) -> Membership {
        Membership {
            voters: configuration.voters.iter().map(|&id| (id, 0)).collect(),
            learners: configuration.learners.iter().map(|&id| (id, 0)).collect(),
        }
    }

    /// The ids, for the quorum code and for `RaftNode::configuration()`. An id that is both a
    /// voter and a learner (a replacement in progress) appears in both sets.
    pub fn configuration(&self) -> Configuration {
        Configuration {
            voters: self.voters.keys().copied().collect(),
            learners: self.learners.keys().copied().collect(),
        }
    }

    pub fn is_voter(&self, id: NodeId, incarnation: Incarnation) -> bool {
        self.voters.get(&id) == Some(&incarnation)
    }

    pub fn is_member(&self, id: NodeId, incarnation: Incarnation) -> bool {
        self.is_voter(id, incarnation) || self.learners.get(&id) == Some(&incarnation)
    }

    /// Whether messages from `(id, incarnation)` are heard: an id this configuration knows
    /// only under other incarnations is a lost or foreign server and is ignored. Unknown ids
    /// are heard (a leader this node has not learned of yet, a server being added).
    pub fn admits(&self, id: NodeId, incarnation: Incarnation) -> bool {
        let known = self.voters.contains_key(&id) || self.learners.contains_key(&id);
        !known || self.is_member(id, incarnation)
    }

    /// The incarnation the leader replicates to at address `id`: the learner's when both exist
    /// (the voter of a replacement in progress is the lost one).
    pub fn replication_incarnation(&self, id: NodeId) -> Option<Incarnation> {
        self.learners
            .get(&id)
            .or_else(|| self.voters.get(&id))
            .copied()
    }

    /// Every id that receives the log.
    pub fn member_ids(&self) -> BTreeSet<NodeId> {
        self.voters
            .keys()
            .chain(self.learners.keys())
            .copied()
            .collect()
    }

    /// The configuration after `change`, or why it does not apply.
    pub fn apply(&self, change: MembershipChange) -> Result<Membership, MembershipError> {
        let mut next = self.clone();
        match change {
            MembershipChange::AddLearner { id, incarnation } => {
                if self.learners.contains_key(&id) {
                    return Err(MembershipError::Invalid("the id already has a learner"));
                }
                if self.voters.get(&id) == Some(&incarnation) {
                    return Err(MembershipError::Invalid("already a voter"));
                }
                next.learners.insert(id, incarnation);
            }
            MembershipChange::PromoteLearner { id, incarnation } => {
                if self.learners.get(&id) != Some(&incarnation) {
                    return Err(MembershipError::Invalid("not a learner"));
                }
                if self.voters.contains_key(&id) {
                    return Err(MembershipError::Invalid(
                        "remove the old incarnation's voter first",
                    ));
                }
                next.learners.remove(&id);
                next.voters.insert(id, incarnation);
            }
            MembershipChange::RemoveVoter { id, incarnation } => {
                if self.voters.get(&id) != Some(&incarnation) {
                    return Err(MembershipError::Invalid("not a voter"));
                }
                if self.voters.len() == 1 {
                    return Err(MembershipError::Invalid("cannot remove the last voter"));
                }
                next.voters.remove(&id);
            }
            MembershipChange::RemoveLearner { id, incarnation } => {
                if self.learners.get(&id) != Some(&incarnation) {
                    return Err(MembershipError::Invalid("not a learner"));
                }
                next.learners.remove(&id);
            }
        }
        debug_assert!(self.voter_changes_to(&next) <= 1);
        Ok(next)
    }

    /// How many voters (as `(id, incarnation)`) differ between the two configurations.
    pub fn voter_changes_to(&self, other: &Membership) -> usize {
        let ours: BTreeSet<(NodeId, Incarnation)> =
            self.voters.iter().map(|(&id, &inc)| (id, inc)).collect();
        let theirs: BTreeSet<(NodeId, Incarnation)> =
            other.voters.iter().map(|(&id, &inc)| (id, inc)).collect();
        ours.symmetric_difference(&theirs).count()
    }

    /// The payload of a `Config` entry:
    /// `version u8 | voters u32 | (id u64, incarnation u64)* | learners u32 | (id, inc)*`,
    /// little-endian.
    pub fn encode(&self) -> Bytes {
        let mut buffer =
            BytesMut::with_capacity(9 + MEMBER_BYTES * (self.voters.len() + self.learners.len()));
        buffer.put_u8(ENCODING_VERSION);
        for members in [&self.voters, &self.learners] {
            buffer.put_u32_le(members.len() as u32);
            for (&id, &incarnation) in members {
                buffer.put_u64_le(id);
                buffer.put_u64_le(incarnation);
            }
        }
        buffer.freeze()
    }

    /// Decodes a `Config` payload; `None` for bytes `encode` never writes (total: never
    /// panics, whatever the bytes).
    pub fn decode(mut bytes: &[u8]) -> Option<Membership> {
        if bytes.remaining() < 1 || bytes.get_u8() != ENCODING_VERSION {
            return None;
        }
        let decode_members = |bytes: &mut &[u8]| -> Option<BTreeMap<NodeId, Incarnation>> {
            if bytes.remaining() < 4 {
                return None;
            }
            let count = bytes.get_u32_le() as usize;
            if bytes.remaining() < count.checked_mul(MEMBER_BYTES)? {
                return None;
            }
            let mut members = BTreeMap::new();
            for _ in 0..count {
                let id = bytes.get_u64_le();
                let incarnation = bytes.get_u64_le();
                if members.insert(id, incarnation).is_some() {
                    return None; // a duplicate id
                }
            }
            Some(members)
        };
        let voters = decode_members(&mut bytes)?;
        let learners = decode_members(&mut bytes)?;
        if bytes.has_remaining() {
            return None;
        }
        Some(Membership { voters, learners })
    }
}

/// What the driver should do next for a replacement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplaceStep {
    /// Propose this change at the leader (`RaftNode::propose_membership_change`); a retriable
    /// refusal means: ask again later.
    Propose(MembershipChange),
    /// Nothing to propose now: the learner is catching up, or a change is not committed yet.
    Wait,
    /// The new incarnation is a voter and the old one is gone.
    Done,
}

/// The replace sequence (docs/RAFT-CORE.md "Replace sequence") for one group, as a small state
/// machine the driver polls at the leader:
///
/// ```text
///   AddLearner(id, new) --caught up--> RemoveVoter(id, old) --committed--> PromoteLearner(id, new)
/// ```
///
/// Never two voter changes at once: the old incarnation is removed (one change, committed)
/// before the learner is promoted (another). The state is derived from the leader's
/// configuration each time, so the helper survives leader changes and lost proposals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplaceNode {
    pub id: NodeId,
    pub old_incarnation: Incarnation,
    pub new_incarnation: Incarnation,
}

impl ReplaceNode {
    /// `old_incarnation == new_incarnation` re-adds a voter that was removed with its disk
    /// intact: the same sequence, without a voter to remove.
    pub fn new(
        id: NodeId,
        old_incarnation: Incarnation,
        new_incarnation: Incarnation,
    ) -> ReplaceNode {
        ReplaceNode {
            id,
            old_incarnation,
            new_incarnation,
        }
    }

    /// The next step, judged from `leader`'s state (call it on the leader).
    pub fn next_step<L: RaftLog>(&self, leader: &crate::RaftNode<L>) -> ReplaceStep {
        let membership = leader.membership();
        let (id, new) = (self.id, self.new_incarnation);
        if membership.is_voter(id, new) {
            // A learner left behind the id (another incarnation) is removed too.
            return if membership.learners.contains_key(&id) {
                ReplaceStep::Propose(MembershipChange::RemoveLearner {
                    id,
                    incarnation: membership.learners[&id],
                })
            } else {
                ReplaceStep::Done
            };
        }
        if leader.membership_change_pending() {
            return ReplaceStep::Wait;
        }
        if membership.learners.get(&id) != Some(&new) {
            if membership.learners.contains_key(&id) {
                // A learner of yet another incarnation: it is lost too.
                return ReplaceStep::Propose(MembershipChange::RemoveLearner {
                    id,
                    incarnation: membership.learners[&id],
                });
            }
            return ReplaceStep::Propose(MembershipChange::AddLearner {
                id,
                incarnation: new,
            });
        }
        if !leader.is_caught_up(id) {
            return ReplaceStep::Wait;
        }
        match membership.voters.get(&id) {
            Some(&old) => ReplaceStep::Propose(MembershipChange::RemoveVoter {
                id,
                incarnation: old,
            }),
            None => ReplaceStep::Propose(MembershipChange::PromoteLearner {
                id,
                incarnation: new,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Membership {
        Membership::with_voters([(1, 10), (2, 20), (3, 30)])
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let mut membership = three();
        membership.learners.insert(3, 31);
        let bytes = membership.encode();
        assert_eq!(Membership::decode(&bytes), Some(membership));
        for cut in 0..bytes.len() {
            assert_eq!(Membership::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(Membership::decode(&longer), None);
        assert_eq!(
            Membership::decode(&[1, 255, 255, 255, 255]),
            None,
            "a huge count"
        );
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let _ = Membership::decode(&bytes);
        }
    }

    #[test]
    fn changes_are_single_server_and_name_their_incarnation() {
        let membership = three();
        let with_learner = membership
            .apply(MembershipChange::AddLearner {
                id: 3,
                incarnation: 31,
            })
            .expect("a new incarnation joins as a learner");
        assert!(with_learner.is_voter(3, 30) && with_learner.is_member(3, 31));
        assert!(
            !with_learner.admits(3, 32),
            "a third incarnation is ignored"
        );
        assert!(with_learner.admits(9, 1), "an unknown id is heard");
        assert_eq!(with_learner.replication_incarnation(3), Some(31));
        assert!(matches!(
            with_learner.apply(MembershipChange::PromoteLearner {
                id: 3,
                incarnation: 31
            }),
            Err(MembershipError::Invalid(_))
        ));
        assert!(matches!(
            with_learner.apply(MembershipChange::RemoveVoter {
                id: 3,
                incarnation: 31
            }),
            Err(MembershipError::Invalid(_))
        ));
        let removed = with_learner
            .apply(MembershipChange::RemoveVoter {
                id: 3,
                incarnation: 30,
            })
            .expect("the old incarnation goes");
        let promoted = removed
            .apply(MembershipChange::PromoteLearner {
                id: 3,
                incarnation: 31,
            })
            .expect("then the learner is promoted");
        assert!(promoted.is_voter(3, 31) && promoted.learners.is_empty());
        assert_eq!(membership.voter_changes_to(&removed), 1);
        assert_eq!(removed.voter_changes_to(&promoted), 1);
        assert_eq!(membership.voter_changes_to(&promoted), 2);
    }

    #[test]
    fn the_last_voter_stays() {
        let one = Membership::with_voters([(1, 0)]);
        assert!(one
            .apply(MembershipChange::RemoveVoter {
                id: 1,
                incarnation: 0
            })
            .is_err());
    }
}
