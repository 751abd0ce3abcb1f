//! Safety property, state machine safety: no two nodes apply different entries at
//! the same index; and each node applies in index order, each entry once (docs/ARCHITECTURE.md
//! "Consensus rules": apply only committed entries, in order, once). Snapshots: a state machine
//! replaced by a snapshot at index N must equal every other node's state after applying up to N
//! (compared by digest), and the node then continues at N + 1.

use keel_raft::{Entry, Index, NodeId};

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

/// Node `node`'s state machine digest after applying `index`.
pub fn observe_digest(history: &mut History, node: NodeId, index: Index, digest: u64) -> Check {
    match history.digest_at.get(&index) {
        None => {
            history.digest_at.insert(index, digest);
            Ok(())
        }
        Some(&before) if before == digest => Ok(()),
        Some(_) => violation(
            "state machine safety",
            format!("node {node}'s state after index {index} differs from another node's"),
        ),
    }
}

/// Node `node` replaced its state machine with a snapshot at `index` holding `state`
/// (`(applied index, digest)` decoded from its data).
pub fn observe_snapshot(
    history: &mut History,
    node: NodeId,
    index: Index,
    state: Option<(Index, u64)>,
) -> Check {
    let Some((applied_index, digest)) = state else {
        return violation(
            "snapshot content",
            format!("node {node}: undecodable snapshot at {index}"),
        );
    };
    if applied_index != index {
        return violation(
            "snapshot content",
            format!("node {node}: snapshot of index {index} holds state at {applied_index}"),
        );
    }
    let previous = history.applied_by_node.get(&node).copied().unwrap_or(0);
    if index <= previous {
        return violation(
            "state machine safety",
            format!("node {node} installed a snapshot at {index} after applying {previous}"),
        );
    }
    history.applied_by_node.insert(node, index);
    observe_digest(history, node, index, digest)
}
