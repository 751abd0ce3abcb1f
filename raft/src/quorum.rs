//! Majorities: the commit index a configuration has acknowledged and the outcome of a vote
//! (etcd `quorum/majority.go`).
//!
//! `Configuration { voters, learners }` is what every quorum question is asked of. This issue
//! has static voters only; membership changes (next issue) swap the configuration, and a member
//! becomes `(node_id, incarnation)` by changing the element type, not these functions.

use std::collections::{BTreeMap, BTreeSet};

use crate::entry::{Index, NodeId};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Configuration {
    /// Members that vote and count toward commit.
    pub voters: BTreeSet<NodeId>,
    /// Members that receive the log but neither vote nor count (next issue).
    pub learners: BTreeSet<NodeId>,
}

/// Outcome of an election as far as the votes received tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

impl Configuration {
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Configuration {
        Configuration {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// The size of a majority of the voters.
    pub fn quorum_size(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// Every member that receives the log, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// The highest index a majority of voters has acknowledged: sort the voters' indexes
    /// descending and take the quorum-th. Worked example, five voters with acknowledged
    /// indexes 9, 7, 7, 4, 2: the third highest is 7, and three voters hold 7 or more.
    pub fn committed_index(&self, acknowledged: impl Fn(NodeId) -> Index) -> Index {
        assert!(
            !self.voters.is_empty(),
            "a configuration without voters commits nothing"
        );
        let mut indexes: Vec<Index> = self.voters.iter().map(|&id| acknowledged(id)).collect();
        indexes.sort_unstable_by(|a, b| b.cmp(a));
        indexes[self.quorum_size() - 1]
    }

    /// Tallies votes (`true` granted) from voters; other senders do not count.
    pub fn vote_result(&self, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        let mut granted = 0;
        let mut rejected = 0;
        for voter in &self.voters {
            match votes.get(voter) {
                Some(true) => granted += 1,
                Some(false) => rejected += 1,
                None => {}
            }
        }
        if granted >= self.quorum_size() {
            VoteResult::Won
        } else if rejected > self.voters.len() - self.quorum_size() {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }

    /// True when the voters for which `active` holds form a majority.
    pub fn has_quorum(&self, active: impl Fn(NodeId) -> bool) -> bool {
        self.voters.iter().filter(|&&id| active(id)).count() >= self.quorum_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_index_is_the_quorum_th_highest_acknowledgement() {
        // (acknowledged index per voter, expected committed index)
        let table: &[(&[Index], Index)] = &[
            (&[5], 5),
            (&[5, 3], 3),
            (&[5, 3, 1], 3),
            (&[1, 3, 5], 3),
            (&[0, 0, 7], 0),
            (&[2, 2, 2], 2),
            (&[9, 7, 7, 4, 2], 7),
            (&[9, 8, 1, 1, 1], 1),
            (&[4, 4, 3, 3], 3),
            (&[10, 10, 10, 0, 0], 10),
        ];
        for (acknowledged, expected) in table {
            let configuration = Configuration::with_voters(1..=acknowledged.len() as NodeId);
            let committed = configuration.committed_index(|id| acknowledged[(id - 1) as usize]);
            assert_eq!(committed, *expected, "acknowledged {acknowledged:?}");
        }
    }

    #[test]
    fn vote_result_needs_a_majority_either_way() {
        let five = Configuration::with_voters(1..=5);
        let tally = |votes: &[(NodeId, bool)]| five.vote_result(&votes.iter().copied().collect());
        assert_eq!(tally(&[(1, true)]), VoteResult::Pending);
        assert_eq!(tally(&[(1, true), (2, true)]), VoteResult::Pending);
        assert_eq!(tally(&[(1, true), (2, true), (3, true)]), VoteResult::Won);
        assert_eq!(
            tally(&[(1, true), (2, false), (3, false)]),
            VoteResult::Pending
        );
        assert_eq!(
            tally(&[(1, true), (2, false), (3, false), (4, false)]),
            VoteResult::Lost
        );
        assert_eq!(
            tally(&[(1, true), (6, true), (7, true)]),
            VoteResult::Pending,
            "non-voters do not count"
        );
    }

    proptest::proptest! {
        /// The committed index is the largest N that a majority of voters has acknowledged.
        #[test]
        fn committed_index_is_the_largest_index_a_majority_holds(acknowledged in proptest::collection::vec(0u64..20, 1..8)) {
            let configuration = Configuration::with_voters(1..=acknowledged.len() as NodeId);
            let committed = configuration.committed_index(|id| acknowledged[(id - 1) as usize]);
            let holding = |index: Index| acknowledged.iter().filter(|&&a| a >= index).count();
            proptest::prop_assert!(holding(committed) >= configuration.quorum_size());
            proptest::prop_assert!(holding(committed + 1) < configuration.quorum_size());
        }
    }

    #[test]
    fn quorum_sizes() {
        let sizes: Vec<usize> = (1..=6)
            .map(|n| Configuration::with_voters(1..=n).quorum_size())
            .collect();
        assert_eq!(sizes, vec![1, 2, 2, 3, 3, 4]);
    }
}
