//! The membership rule (docs/RAFT-CORE.md "Membership"): change one voter at a time; a second
//! change waits until the first is committed. Seen from outside: a leader's log never holds two
//! configuration entries above its commit index, and two consecutive configurations in any
//! leader's log differ by at most one voter `(node_id, incarnation)`. Breaking this is what lets
//! two disjoint majorities elect two leaders in one term; the random simulator rarely lines that
//! up, so the rule itself is checked (as for the commit rule).

use keel_raft::{EntryKind, Membership, RaftNode, Role};

use crate::disk::SimDisk;
use crate::history::{violation, Check, History};

pub fn check(history: &mut History, nodes: &[&RaftNode<SimDisk>]) -> Check {
    // A new leader's own commit index restarts low (at its applied index); what any node saw
    // committed is committed in every leader's log (leader completeness, checked apart).
    let committed = history.committed.keys().next_back().copied().unwrap_or(0);
    for node in nodes {
        if node.role() != Role::Leader {
            continue;
        }
        let from = node.commit_index().max(committed).min(node.last_index()) + 1;
        let uncommitted = node.entries(from, node.last_index() + 1);
        let configurations: Vec<_> = uncommitted
            .iter()
            .filter(|entry| entry.kind == EntryKind::Config)
            .collect();
        if configurations.len() > 1 {
            let at: Vec<_> = configurations.iter().map(|entry| entry.index).collect();
            return violation(
                "one membership change at a time",
                format!(
                    "leader {} of term {} holds uncommitted configuration entries at {at:?} (commit {}, committed anywhere {committed})",
                    node.id(),
                    node.term(),
                    node.commit_index()
                ),
            );
        }
        if let Some(entry) = configurations.first() {
            let Some(next) = Membership::decode(&entry.payload) else {
                return violation("configuration entries decode", format!("{entry:?}"));
            };
            // The configuration before it: the node's own starting one is not visible here, so
            // only a previous configuration entry in the log is compared.
            let before = node
                .entries(node.first_index(), entry.index)
                .into_iter()
                .rev()
                .find(|previous| previous.kind == EntryKind::Config)
                .and_then(|previous| Membership::decode(&previous.payload));
            if let Some(before) = before {
                if before.voter_changes_to(&next) > 1 {
                    return violation(
                        "one voter change at a time",
                        format!("leader {}: {before:?} -> {next:?}", node.id()),
                    );
                }
            }
        }
    }
    Ok(())
}
