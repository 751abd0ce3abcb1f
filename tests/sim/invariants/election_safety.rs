//! Safety property, election safety: at most one leader per term.

use keel_raft::{RaftNode, Role};

use crate::disk::SimDisk;
use crate::history::{violation, Check, History};

pub fn check(history: &mut History, nodes: &[&RaftNode<SimDisk>]) -> Check {
    for node in nodes.iter().filter(|node| node.role() == Role::Leader) {
        let leader = *history
            .leaders_by_term
            .entry(node.term())
            .or_insert(node.id());
        if leader != node.id() {
            return violation(
                "election safety",
                format!(
                    "nodes {leader} and {} both lead term {}",
                    node.id(),
                    node.term()
                ),
            );
        }
    }
    Ok(())
}
