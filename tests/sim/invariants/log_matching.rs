//! Safety property, log matching: two logs with an entry of the same index and term
//! are identical up to it. Checked by induction on every entry any node writes: the same
//! (index, term) must carry the same kind and payload and follow an entry of the same term.

use keel_raft::{Entry, NodeId, Term};

use crate::history::{violation, Check, History, SeenEntry};

/// `previous_term` is the term the writing node holds at `entry.index - 1`.
pub fn observe_written(
    history: &mut History,
    node: NodeId,
    entry: &Entry,
    previous_term: Term,
) -> Check {
    let seen = SeenEntry {
        kind: entry.kind,
        payload: entry.payload.clone(),
        previous_term,
    };
    match history.entries_seen.get(&(entry.index, entry.term)) {
        None => {
            history.entries_seen.insert((entry.index, entry.term), seen);
            Ok(())
        }
        Some(before) => {
            if before.kind == seen.kind
                && before.payload == seen.payload
                && before.previous_term == previous_term
            {
                return Ok(());
            }
            violation(
                "log matching",
                format!(
                    "node {node} wrote ({}, term {}) as {:?}/{:?} after term {previous_term}; seen before as {:?}/{:?} after term {}",
                    entry.index, entry.term, seen.kind, seen.payload, before.kind, before.payload, before.previous_term
                ),
            )
        }
    }
}
