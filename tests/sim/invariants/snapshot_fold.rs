//! Safety property, snapshots at a log start (the partition's retention, docs/ARCHITECTURE.md
//! "Snapshots"): a snapshot at log start S is the state after applying exactly the entries up to
//! S, built from the previous snapshot by folding those entries in; never the live state at the
//! applied index N labelled S, which every replica restoring it would then apply S+1..=N over a
//! second time. Checked on every snapshot taken: its digest, partition state and log start are
//! what the replicas had after applying S, and restoring it and replaying S+1..=N through the
//! product's partition machine gives the taking node's live state at N. A snapshot installed
//! from a leader must hold the partition state at its index too.

use keel_broker::partition::machine::Applied;
use keel_raft::{Index, NodeId};

use crate::cluster::Machines;
use crate::history::{violation, Check, History};

/// The part of a partition's applied state every replica shares at an index: each moves its log
/// start on its own.
fn shared(mut partition: Applied) -> Applied {
    partition.log_start_index = 0;
    partition.log_start_offset = 0;
    partition
}

/// Node `node`'s partition machine after applying `index`: every replica's must be the same
/// there (they applied the same entries), and a snapshot at `index` must hold it.
pub fn observe_partition(
    history: &mut History,
    node: NodeId,
    index: Index,
    partition: Applied,
) -> Check {
    let partition = shared(partition);
    match history.partition_at.get(&index) {
        None => {
            history.partition_at.insert(index, partition);
            Ok(())
        }
        Some(before) if *before == partition => Ok(()),
        Some(before) => violation(
            "partition state safety",
            format!(
                "node {node}'s partition state after index {index} is {partition:?}, another \
                 node's was {before:?}"
            ),
        ),
    }
}

/// A snapshot at `index` (taken or installed by `node`) holds `partition`: the state the
/// replicas had after applying `index`, with the log start there.
pub fn observe_snapshot_partition(
    history: &History,
    node: NodeId,
    index: Index,
    partition: &Applied,
) -> Check {
    if partition.applied_index != index {
        return violation(
            "snapshot at a log start",
            format!(
                "node {node}: the snapshot at {index} holds the partition state after index {} \
                 (a later state labelled as the log start?)",
                partition.applied_index
            ),
        );
    }
    if partition.log_start_index != index || partition.log_start_offset != partition.high_watermark
    {
        return violation(
            "snapshot at a log start",
            format!(
                "node {node}: the snapshot at {index} starts the log at index {} offset {}, \
                 not after the entries it replaces (offset {})",
                partition.log_start_index, partition.log_start_offset, partition.high_watermark
            ),
        );
    }
    let Some(expected) = history.partition_at.get(&index) else {
        return violation(
            "snapshot at a log start",
            format!("node {node}: a snapshot at {index}, which no replica applied"),
        );
    };
    let held = shared(partition.clone());
    if held != *expected {
        return violation(
            "snapshot at a log start",
            format!(
                "node {node}: the snapshot at {index} holds the partition state {held:?}, the \
                 replicas had {expected:?} after applying it"
            ),
        );
    }
    Ok(())
}

/// Node `node` took the snapshot `taken` at log start `through`; `replayed` is that snapshot
/// restored with the node's entries after `through` replayed up to its applied index, `live`
/// the node's machines at that index.
pub fn observe_taken(
    history: &mut History,
    node: NodeId,
    through: Index,
    taken: &Machines,
    replayed: &Machines,
    live: &Machines,
) -> Check {
    if taken.state.applied_index != through {
        return violation(
            "snapshot at a log start",
            format!(
                "node {node}: the snapshot at {through} holds the state machine after index {} \
                 (a later state labelled as the log start?)",
                taken.state.applied_index
            ),
        );
    }
    observe_snapshot_partition(history, node, through, &taken.partition)?;
    match history.digest_at.get(&through) {
        Some(&digest) if digest == taken.state.digest => {}
        other => {
            return violation(
                "snapshot at a log start",
                format!(
                    "node {node}: the snapshot at {through} holds digest {:#x}, the replicas had \
                     {other:x?} after applying it (the map or the digest folded wrongly)",
                    taken.state.digest
                ),
            )
        }
    }
    if replayed == live {
        return Ok(());
    }
    let mut differences = Vec::new();
    if replayed.state != live.state {
        differences.push(format!(
            "state machine {:?} instead of {:?}",
            replayed.state, live.state
        ));
    }
    if replayed.partition != live.partition {
        differences.push(format!(
            "partition {:?} instead of {:?}",
            replayed.partition, live.partition
        ));
    }
    if replayed.meta != live.meta {
        differences.push("a different metadata map".to_string());
    }
    violation(
        "snapshot restore and replay",
        format!(
            "node {node}: its snapshot at {through} restored and replayed to index {} gives {}",
            live.state.applied_index,
            differences.join("; ")
        ),
    )
}
