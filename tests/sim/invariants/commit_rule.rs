//! The commit rule (docs/ARCHITECTURE.md "Consensus rules"): a leader advances its commit index
//! only to an entry of its current term (older-term entries are committed only indirectly). Seen
//! from outside: whenever a leader's commit index rises while it leads a term, the entry at the
//! new commit index has that term. Breaking this rule is what lets a later leader overwrite a
//! "committed" entry (the old-term scenario); the random simulator rarely lines up the three
//! elections that turn it into a leader-completeness violation, so the rule is checked itself.

use keel_raft::{RaftNode, Role};

use crate::disk::SimDisk;
use crate::history::{violation, Check, History};

pub fn check(history: &mut History, nodes: &[&RaftNode<SimDisk>]) -> Check {
    for node in nodes {
        if node.role() != Role::Leader {
            history.leader_commit_watch.remove(&node.id());
            continue;
        }
        let now = (node.term(), node.commit_index());
        let before = history.leader_commit_watch.insert(node.id(), now);
        let Some((term, commit_before)) = before else {
            continue;
        };
        if term == now.0 && now.1 > commit_before && node.term_at(now.1) != Some(now.0) {
            return violation(
                "commit rule",
                format!(
                    "leader {} of term {} advanced its commit index from {commit_before} to {} whose entry has term {:?}",
                    node.id(),
                    now.0,
                    now.1,
                    node.term_at(now.1)
                ),
            );
        }
    }
    Ok(())
}
