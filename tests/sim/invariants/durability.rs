//! Durability: every proposal acknowledged to a client is in the final committed log, once, in
//! acknowledgement order per producer. Checked at the end of a run against the committed log
//! every node converged on. And after every step, its precondition: no node's core believes more
//! of its log durable than its disk has synced (the driver's pipelined fdatasync must never
//! report a write that its sync did not cover).

use std::collections::HashMap;

use bytes::Bytes;
use keel_raft::{Entry, Index, RaftNode};

use crate::disk::SimDisk;
use crate::history::{violation, Check, History};

/// The driver reported durable only what a finished sync covered.
pub fn check_claims(nodes: &[&RaftNode<SimDisk>]) -> Check {
    for node in nodes {
        let claimed = node.persisted_index();
        let synced = node.storage().synced_index();
        if claimed > synced {
            return violation(
                "durability claim",
                format!(
                    "node {} reported entries up to {claimed} durable, its disk synced {synced}",
                    node.id()
                ),
            );
        }
    }
    Ok(())
}

pub fn check_final(history: &History, final_committed_log: &[Entry]) -> Check {
    let mut position: HashMap<&Bytes, (Index, usize)> = HashMap::new();
    for entry in final_committed_log {
        let counted = position.entry(&entry.payload).or_insert((entry.index, 0));
        counted.1 += 1;
    }
    let mut last_index_per_producer: HashMap<usize, Index> = HashMap::new();
    for acknowledged in &history.acknowledged {
        let Some(&(index, copies)) = position.get(&acknowledged.payload) else {
            return violation(
                "durability",
                format!(
                    "acknowledged proposal {:?} at index {} is lost",
                    acknowledged.payload, acknowledged.index
                ),
            );
        };
        if copies != 1 || index != acknowledged.index {
            return violation(
                "durability",
                format!(
                    "acknowledged proposal {:?} at index {} is in the final log {copies} times, first at {index}",
                    acknowledged.payload, acknowledged.index
                ),
            );
        }
        let previous = last_index_per_producer
            .insert(acknowledged.producer, index)
            .unwrap_or(0);
        if index <= previous {
            return violation(
                "durability",
                format!(
                    "producer {} acknowledged index {index} after index {previous}",
                    acknowledged.producer
                ),
            );
        }
    }
    Ok(())
}
