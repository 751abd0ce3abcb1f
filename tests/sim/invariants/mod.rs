//! The safety properties the simulator checks after every step (docs/RAFT-CORE.md
//! "The simulator"), one per file, plus the commit rule and the core's own `validate()`.

pub mod commit_rule;
pub mod durability;
pub mod election_safety;
pub mod leader_append_only;
pub mod leader_completeness;
pub mod linearizable_reads;
pub mod log_matching;
pub mod membership_rule;
pub mod snapshot_fold;
pub mod state_machine_safety;

use std::panic::{catch_unwind, AssertUnwindSafe};

use keel_raft::RaftNode;

use crate::disk::SimDisk;
use crate::history::{violation, Check, History};

/// Everything checked after every simulation step, over the nodes that are up.
pub fn check_step(history: &mut History, nodes: &[&RaftNode<SimDisk>]) -> Check {
    for node in nodes {
        validate_core(node)?;
    }
    durability::check_claims(nodes)?;
    election_safety::check(history, nodes)?;
    commit_rule::check(history, nodes)?;
    membership_rule::check(history, nodes)?;
    // Completeness first: it recognises new leaders by the watch append-only then updates.
    leader_completeness::check(history, nodes)?;
    leader_append_only::check(history, nodes)
}

/// The core's own invariants (`first <= applied <= committed <= last`, progress bounds...).
fn validate_core(node: &RaftNode<SimDisk>) -> Check {
    match catch_unwind(AssertUnwindSafe(|| node.validate())) {
        Ok(()) => Ok(()),
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_default();
            violation(
                "RaftNode::validate",
                format!("node {}: {detail}", node.id()),
            )
        }
    }
}
