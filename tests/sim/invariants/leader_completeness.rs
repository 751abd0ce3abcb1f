//! Safety property, leader completeness: a committed entry is in the log of every
//! leader of a later term. Commits are recorded as nodes' commit indexes rise (with the term
//! the committing node was in); every leader is checked against every commit of an earlier
//! term, and every new commit against the leaders of later terms.

use keel_raft::{Index, RaftNode, Role};

use crate::disk::SimDisk;
use crate::history::{violation, Check, CommittedEntry, History};

pub fn check(history: &mut History, nodes: &[&RaftNode<SimDisk>]) -> Check {
    for node in nodes {
        record_commits(history, node, nodes)?;
    }
    for leader in nodes.iter().filter(|node| node.role() == Role::Leader) {
        let newly_leading = history
            .leader_watch
            .get(&leader.id())
            .is_none_or(|watch| watch.term != leader.term());
        if !newly_leading {
            continue; // checked in full when it took over; new commits are checked as recorded
        }
        for (&index, committed) in &history.committed {
            if committed.commit_term < leader.term() {
                leader_has(leader, index, committed)?;
            }
        }
    }
    Ok(())
}

fn leader_has(leader: &RaftNode<SimDisk>, index: Index, committed: &CommittedEntry) -> Check {
    // Below its first index the leader's snapshot holds the entry (state machine safety
    // compares snapshots with what the nodes applied).
    if leader.term_at(index) == Some(committed.term) || index < leader.first_index() {
        return Ok(());
    }
    violation(
        "leader completeness",
        format!(
            "leader {} of term {} has term {:?} at index {index}, committed with term {} in term {}",
            leader.id(),
            leader.term(),
            leader.term_at(index),
            committed.term,
            committed.commit_term
        ),
    )
}

/// Records entries `node` newly sees committed; a committed entry never changes.
fn record_commits(
    history: &mut History,
    node: &RaftNode<SimDisk>,
    nodes: &[&RaftNode<SimDisk>],
) -> Check {
    let observed = history
        .commit_observed
        .get(&node.id())
        .copied()
        .unwrap_or(0);
    if node.commit_index() <= observed {
        return Ok(());
    }
    let from = (observed + 1).max(node.first_index());
    for entry in node.entries(from, node.commit_index() + 1) {
        match history.committed.get(&entry.index) {
            Some(before) if before.term != entry.term || before.payload != entry.payload => {
                return violation(
                    "leader completeness",
                    format!(
                        "node {} commits ({}, term {}) but ({}, term {}) was committed in term {}",
                        node.id(),
                        entry.index,
                        entry.term,
                        entry.index,
                        before.term,
                        before.commit_term
                    ),
                );
            }
            Some(_) => {}
            None => {
                let committed = CommittedEntry {
                    term: entry.term,
                    payload: entry.payload.clone(),
                    commit_term: node.term(),
                };
                for leader in nodes.iter().filter(|other| other.role() == Role::Leader) {
                    if leader.term() > committed.commit_term {
                        leader_has(leader, entry.index, &committed)?;
                    }
                }
                history.committed.insert(entry.index, committed);
            }
        }
    }
    history
        .commit_observed
        .insert(node.id(), node.commit_index());
    Ok(())
}
