//! Linearizable reads (docs/RAFT-CORE.md "Reads"): reads that must be linearizable (ReadIndex or
//! lease) return a committed state at least as new as every write acknowledged before the read
//! began. A stale leader in a minority, or one whose lease outlived a leadership transfer, would
//! hand out a read index below a write the new leader already acknowledged.

use keel_raft::{Index, NodeId};

use crate::history::{violation, Check, History};

/// A read started at `node` when the highest acknowledged write index was `acknowledged_floor`
/// was released with `read_index`.
pub fn observe_read(
    history: &History,
    node: NodeId,
    request_id: u64,
    read_index: Index,
    acknowledged_floor: Index,
) -> Check {
    if read_index < acknowledged_floor {
        return violation(
            "linearizable reads",
            format!(
                "read {request_id} at node {node} got read index {read_index}, below the write at {acknowledged_floor} acknowledged before it began"
            ),
        );
    }
    let committed = history.committed.keys().next_back().copied().unwrap_or(0);
    if read_index > committed {
        return violation(
            "linearizable reads",
            format!("read {request_id} at node {node} got uncommitted read index {read_index} (committed {committed})"),
        );
    }
    Ok(())
}
