//! Safety property, leader append-only: a leader never overwrites or deletes an
//! entry of its own log. Checked cheaply: while a node leads a term, the last entry seen at the
//! previous check is still there with the same term, and the log did not shrink (with log
//! matching, an unchanged entry implies an unchanged prefix).

use keel_raft::{RaftNode, Role};

use crate::disk::SimDisk;
use crate::history::{violation, Check, History, LeaderWatch};

pub fn check(history: &mut History, nodes: &[&RaftNode<SimDisk>]) -> Check {
    for node in nodes {
        if node.role() != Role::Leader {
            history.leader_watch.remove(&node.id());
            continue;
        }
        let now = LeaderWatch {
            term: node.term(),
            last_index: node.last_index(),
            last_term: node.term_at(node.last_index()).expect("last entry"),
        };
        if let Some(before) = history.leader_watch.insert(node.id(), now) {
            if before.term != now.term {
                continue;
            }
            let still_there = node.term_at(before.last_index) == Some(before.last_term)
                || before.last_index < node.first_index();
            if now.last_index < before.last_index || !still_there {
                return violation(
                    "leader append-only",
                    format!(
                        "leader {} of term {} had ({}, term {}) and now has last index {} with term {:?} there",
                        node.id(),
                        now.term,
                        before.last_index,
                        before.last_term,
                        now.last_index,
                        node.term_at(before.last_index)
                    ),
                );
            }
        }
    }
    Ok(())
}
