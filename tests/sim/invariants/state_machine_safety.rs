//! RAFT.md safety property 5, state machine safety: no two nodes apply different entries at
//! the same index; and each node applies in index order, each entry once (RAFT.md Replication:
//! "applied, in index order, exactly once per node").

use keel_broker::raft::{Entry, NodeId};

use crate::history::{violation, Check, History};

pub fn observe_applied(history: &mut History, node: NodeId, entry: &Entry) -> Check {
    let previous = history.applied_by_node.get(&node).copied().unwrap_or(0);
    if entry.index != previous + 1 {
        return violation(
            "state machine safety",
            format!("node {node} applied index {} after {previous}", entry.index),
        );
    }
    history.applied_by_node.insert(node, entry.index);
    match history.applied.get(&entry.index) {
        None => {
            history
                .applied
                .insert(entry.index, (entry.term, entry.payload.clone()));
            Ok(())
        }
        Some((term, payload)) if *term == entry.term && *payload == entry.payload => Ok(()),
        Some((term, _)) => violation(
            "state machine safety",
            format!(
                "node {node} applied ({}, term {}) where another node applied term {term}",
                entry.index, entry.term
            ),
        ),
    }
}
