//! Node replacement as the driver runs it (docs/OPERATIONS.md "Replacing a node"): group 0's map
//! says which incarnation of each node id should be a member; every group's leader moves its
//! configuration there one single-server change at a time, and every node reports how far each of
//! its own groups got.
//!
//! The map is the desired state and a configuration the actual one, so the work is a
//! reconciliation: nothing is remembered between steps, a new leader simply carries on, and a
//! lost proposal is proposed again on a later tick. `keel cluster replace-node` only records the
//! new incarnation in the map, then watches the replaced node's own reports.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::transport::{GroupId, NodeId};
use keel_raft::{Incarnation, MembershipChange, RaftLog, RaftNode, ReplaceNode, ReplaceStep};

/// How a node stands in one of its groups, as it reports itself to its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// Not in the configuration under this node's incarnation: a wiped node waiting to be
    /// added, or a group it is about to leave.
    Outside,
    /// Receiving the log: a learner, or a voter whose promotion is not committed yet.
    Learner,
    /// A voter under this node's incarnation, with no change about this id pending and the
    /// configuration committed: the replacement is over for this group.
    Voter,
}

/// This node's state in `node`'s group.
pub fn member_state<L: RaftLog>(node: &RaftNode<L>) -> MemberState {
    let membership = node.membership();
    let (id, incarnation) = (node.id(), node.incarnation());
    let settled =
        !membership.learners.contains_key(&id) && node.commit_index() >= node.membership_index();
    if membership.is_voter(id, incarnation) && settled {
        MemberState::Voter
    } else if membership.is_member(id, incarnation) {
        MemberState::Learner
    } else {
        MemberState::Outside
    }
}

/// The next change a leader should propose so that every member id of its group runs under the
/// incarnation the map holds for it (`desired`), or `None` when there is nothing to do now.
/// Ids the map does not know are left alone.
pub fn next_change<L: RaftLog>(
    leader: &RaftNode<L>,
    desired: &BTreeMap<NodeId, Incarnation>,
) -> Option<MembershipChange> {
    let membership = leader.membership();
    for id in membership.member_ids() {
        let Some(&wanted) = desired.get(&id) else {
            continue;
        };
        let voter = membership.voters.get(&id).copied();
        let settled = voter == Some(wanted) && !membership.learners.contains_key(&id);
        // Only ids that were voters take part: learners are added by this very sequence.
        let Some(old) = voter.or_else(|| membership.learners.contains_key(&id).then_some(wanted))
        else {
            continue;
        };
        if settled {
            continue;
        }
        match ReplaceNode::new(id, old, wanted).next_step(leader) {
            ReplaceStep::Propose(change) => return Some(change),
            // One replacement at a time per group: the next id waits for this one.
            ReplaceStep::Wait => return None,
            ReplaceStep::Done => continue,
        }
    }
    None
}

/// What one node last said of itself: its incarnation and its standing in each of its groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub incarnation: Incarnation,
    pub groups: BTreeMap<GroupId, MemberState>,
    /// When it was heard. A node killed a moment ago leaves its last announcement behind, so a
    /// caller that must know who runs *now* waits for one heard after it asked.
    pub heard_at: Instant,
}

/// This node's own member states (written by its groups) and the latest announcement heard
/// from each peer (written by the control task that receives hellos).
#[derive(Debug, Default)]
pub struct Reports {
    local: Mutex<BTreeMap<GroupId, MemberState>>,
    peers: Mutex<HashMap<NodeId, Announcement>>,
}

impl Reports {
    pub fn set_local(&self, group: GroupId, state: Option<MemberState>) {
        let mut local = self.local.lock().expect("reports lock");
        match state {
            Some(state) => local.insert(group, state),
            None => local.remove(&group),
        };
    }

    pub fn local_state(&self, group: GroupId) -> Option<MemberState> {
        self.local
            .lock()
            .expect("reports lock")
            .get(&group)
            .copied()
    }

    pub fn local(&self) -> BTreeMap<GroupId, MemberState> {
        self.local.lock().expect("reports lock").clone()
    }

    pub fn record(&self, node: NodeId, announcement: Announcement) {
        self.peers
            .lock()
            .expect("reports lock")
            .insert(node, announcement);
    }

    pub fn heard_from(&self, node: NodeId) -> Option<Announcement> {
        self.peers.lock().expect("reports lock").get(&node).cloned()
    }
}

/// Whether `reported` (a node's own report of its groups) shows it done in every group of
/// `expected`: promoted everywhere, or with `learners_enough` at least receiving the log.
pub fn replacement_done(
    expected: &[GroupId],
    reported: &BTreeMap<GroupId, MemberState>,
    learners_enough: bool,
) -> bool {
    expected.iter().all(|group| match reported.get(group) {
        Some(MemberState::Voter) => true,
        Some(MemberState::Learner) => learners_enough,
        Some(MemberState::Outside) | None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_means_every_expected_group_reported_promoted() {
        let reported = BTreeMap::from([
            (0, MemberState::Voter),
            (1, MemberState::Learner),
            (2, MemberState::Voter),
        ]);
        assert!(!replacement_done(&[0, 1, 2], &reported, false));
        assert!(replacement_done(&[0, 1, 2], &reported, true));
        assert!(replacement_done(&[0, 2], &reported, false));
        // A group the node has not reported yet is not done, even for --no-wait.
        assert!(!replacement_done(&[0, 3], &reported, true));
        let outside = BTreeMap::from([(0, MemberState::Outside)]);
        assert!(!replacement_done(&[0], &outside, true));
    }
}
