//! Scripted interaction tests: one per Raft scenario in scope for the core (the list is in
//! docs/ARCHITECTURE.md "Testing"), named after it, with asserted outcomes: who leads in
//! which term, which entries are committed where, which messages were sent. They run on the
//! simulator's cluster fixture with no random faults (one unit per hop and per disk write); the
//! simulator's invariants are checked after every step here too.
//!
//! Table tests for quorum commit indexes, Progress and Inflights live beside the code
//! (raft/src/{quorum,progress,inflights}.rs).

// The fixture is shared with the simulator (tests/sim); each target uses a part of it.
#![allow(dead_code)]

#[path = "sim/cluster.rs"]
mod cluster;
#[path = "sim/disk.rs"]
mod disk;
#[path = "sim/history.rs"]
mod history;
#[path = "sim/invariants/mod.rs"]
mod invariants;
#[path = "sim/network.rs"]
mod network;
#[path = "sim/trace.rs"]
mod trace;
#[path = "sim/workload.rs"]
mod workload;

use bytes::Bytes;
use keel_raft::{Index, Message, MessageBody, NodeId, PlantedBugs, RaftNode, Role, Term};

use crate::cluster::{Cluster, ClusterOptions};
use crate::disk::SimDisk;

const ELECTION_TIMEOUT_MIN_TICKS: u64 = 10;

fn quiet_cluster(node_count: u64, seed: u64) -> Cluster {
    let mut cluster = Cluster::new(ClusterOptions::quiet(node_count), seed);
    cluster.delivered = Some(Vec::new());
    cluster
}

/// A cluster whose every AppendEntries carries one entry, with planted bugs as given.
fn one_entry_per_message_cluster(node_count: u64, planted_bugs: PlantedBugs) -> Cluster {
    let mut options = ClusterOptions::quiet(node_count);
    options.config.max_append_bytes = 1;
    options.config.planted_bugs = planted_bugs;
    Cluster::new(options, 7)
}

fn assert_no_violation(cluster: &Cluster) {
    assert_eq!(cluster.violation, None, "a safety property broke");
}

fn is_append_with_entries_from(message: &Message, first_forbidden_index: Index) -> bool {
    match &message.body {
        MessageBody::AppendEntries(append) => append
            .entries
            .iter()
            .any(|entry| entry.index >= first_forbidden_index),
        _ => false,
    }
}

fn payloads(entries: &[keel_raft::Entry]) -> Vec<Bytes> {
    entries
        .iter()
        .map(|entry| entry.payload.clone())
        .filter(|payload| !payload.is_empty())
        .collect()
}

fn roles(cluster: &Cluster) -> Vec<(NodeId, Role, Term)> {
    cluster
        .up_nodes()
        .iter()
        .map(|node| (node.id(), node.role(), node.term()))
        .collect()
}

/// All up nodes follow one leader in one term.
fn agreed_leader(cluster: &Cluster) -> Option<(NodeId, Term)> {
    let leader = cluster.leader()?;
    let term = cluster.node(leader).term();
    let nodes: Vec<&RaftNode<SimDisk>> = cluster.up_nodes();
    nodes
        .iter()
        .all(|node| node.leader() == Some(leader) && node.term() == term)
        .then_some((leader, term))
}

#[test]
fn split_vote_of_three_nodes_still_elects_one_leader() {
    // Three nodes time out together: each wins its pre-vote, votes for itself in term 1, gets
    // two rejections and loses. The randomised timeouts then elect exactly one leader.
    let mut cluster = quiet_cluster(3, 1);
    cluster.ticks_enabled = false;
    for id in [1, 2, 3] {
        cluster.campaign(id);
    }
    cluster.settle();
    assert_eq!(
        roles(&cluster),
        vec![
            (1, Role::Follower, 1),
            (2, Role::Follower, 1),
            (3, Role::Follower, 1)
        ],
        "a split vote: everyone lost term 1"
    );
    assert_eq!(cluster.leader(), None);
    let delivered = cluster.delivered.take().expect("recorded");
    let vote_requests = delivered
        .iter()
        .filter(|(_, _, kind, term)| *kind == "RequestVote" && *term == 1)
        .count();
    let granted = delivered
        .iter()
        .filter(|(_, _, kind, _)| *kind == "RequestVoteResponse")
        .count();
    assert_eq!(
        (vote_requests, granted),
        (6, 6),
        "each asked both others and every answer came back"
    );
    for id in [1, 2, 3] {
        assert_eq!(
            cluster.node(id).vote(),
            Some(id),
            "node {id} voted for itself"
        );
    }
    cluster.ticks_enabled = true;
    assert!(
        cluster.run_until(10 * ELECTION_TIMEOUT_MIN_TICKS, |cluster| agreed_leader(
            cluster
        )
        .is_some())
    );
    let (leader, term) = agreed_leader(&cluster).expect("checked");
    assert!(term >= 2, "the split term 1 elected nobody");
    let leaders = roles(&cluster)
        .iter()
        .filter(|(_, role, _)| *role == Role::Leader)
        .count();
    assert_eq!(leaders, 1, "exactly one leader ({leader} in term {term})");
    assert_no_violation(&cluster);
}

#[test]
fn leader_sends_an_entry_to_one_follower_and_crashes() {
    // The entry reached node 2 only. Node 3 cannot win against node 2's longer log, so node 2
    // leads term 2 and commits the entry under its no-op; it is then on every node, the same.
    let mut cluster = quiet_cluster(3, 2);
    cluster.ticks_enabled = false;
    cluster.campaign(1);
    cluster.settle();
    assert_eq!(agreed_leader(&cluster), Some((1, 1)));
    cluster.cut(1, 3);
    let (index, term) = cluster
        .propose(1, Bytes::from_static(b"x"))
        .expect("leader");
    cluster.settle();
    assert_eq!((index, term), (2, 1));
    assert_eq!(cluster.node(2).term_at(2), Some(1), "node 2 has the entry");
    assert_eq!(cluster.node(3).last_index(), 1, "node 3 does not");
    cluster.crash(1, false);
    cluster.heal();
    cluster.reboot(2);
    cluster.reboot(3);
    cluster.campaign(3);
    cluster.settle();
    assert_ne!(
        cluster.node(3).role(),
        Role::Leader,
        "node 3's shorter log loses"
    );
    cluster.campaign(2);
    cluster.settle();
    assert_eq!(agreed_leader(&cluster), Some((2, 2)));
    cluster.restart(1);
    cluster.ticks_enabled = true;
    cluster.run_ticks(5);
    for id in [1, 2, 3] {
        let committed = cluster.committed_log(id);
        assert_eq!(
            payloads(&committed),
            vec![Bytes::from_static(b"x")],
            "node {id}"
        );
        assert_eq!((committed[1].index, committed[1].term), (2, 1), "node {id}");
    }
    assert_no_violation(&cluster);
}

#[test]
fn leader_sends_an_entry_to_one_follower_and_crashes_before_its_own_write() {
    // The other outcome: the leader crashed before writing the entry, so only node 2 holds it.
    // Nodes 1 and 3 form a majority without it, node 3 leads term 2, and node 2's copy is
    // replaced: dropped, but identically everywhere.
    let mut cluster = quiet_cluster(3, 3);
    cluster.ticks_enabled = false;
    cluster.campaign(1);
    cluster.settle();
    cluster.cut(1, 3);
    cluster
        .propose(1, Bytes::from_static(b"x"))
        .expect("leader");
    cluster.crash(1, false); // its write was only queued: lost
    cluster.settle();
    assert_eq!(
        cluster.node(2).term_at(2),
        Some(1),
        "the AppendEntries already sent reached node 2"
    );
    cluster.heal();
    cluster.isolate(2);
    cluster.restart(1);
    assert_eq!(
        cluster.node(1).last_index(),
        1,
        "node 1 lost the unwritten entry"
    );
    cluster.reboot(3);
    cluster.campaign(3);
    cluster.settle();
    assert_eq!(
        (cluster.node(3).role(), cluster.node(3).term()),
        (Role::Leader, 2)
    );
    cluster.heal();
    cluster.ticks_enabled = true;
    assert!(
        cluster.run_until(5 * ELECTION_TIMEOUT_MIN_TICKS, |cluster| {
            (1..=3).all(|id| cluster.node(id).applied_index() == 2)
        })
    );
    for id in [1, 2, 3] {
        assert_eq!(
            cluster.node(id).term_at(2),
            Some(2),
            "node {id} holds node 3's no-op at index 2"
        );
        assert!(
            payloads(&cluster.committed_log(id)).is_empty(),
            "node {id}: the entry is dropped"
        );
    }
    assert_no_violation(&cluster);
}

/// Runs the old-term-entry script (the Raft paper's figure 8) up to S5's election
/// in term 5. Returns the cluster and S1's commit index just before it crashed in term 4.
fn old_term_entry_script(planted_bugs: PlantedBugs) -> (Cluster, Index) {
    let mut cluster = one_entry_per_message_cluster(5, planted_bugs);
    cluster.ticks_enabled = false;
    cluster.campaign(1);
    cluster.settle();
    assert_eq!(
        agreed_leader(&cluster),
        Some((1, 1)),
        "setup: index 1 of term 1 everywhere"
    );
    for id in 1..=5 {
        cluster.reboot(id); // everyone forgets the leader, so no lease stands in the way
    }

    // S1 leads term 2 and replicates its index 2 to S2 only, then crashes.
    cluster.send_filter = Some(Box::new(|from, to, message| {
        !(from == 1 && to != 2 && matches!(message.body, MessageBody::AppendEntries(_)))
    }));
    cluster.campaign(1);
    cluster.settle();
    assert_eq!(
        (cluster.node(1).role(), cluster.node(1).term()),
        (Role::Leader, 2)
    );
    assert_eq!(
        [cluster.node(1).term_at(2), cluster.node(2).term_at(2)],
        [Some(2), Some(2)]
    );
    assert_eq!(cluster.node(3).last_index(), 1);
    cluster.crash(1, false);

    // S5 leads term 3 (votes of S3 and S4) with its own index 2, replicated nowhere; crashes.
    cluster.send_filter = Some(Box::new(|from, _, message| {
        !(from == 5 && matches!(message.body, MessageBody::AppendEntries(_)))
    }));
    cluster.campaign(5);
    cluster.settle();
    assert_eq!(
        (cluster.node(5).role(), cluster.node(5).term()),
        (Role::Leader, 3)
    );
    assert_eq!(cluster.node(5).term_at(2), Some(3));
    cluster.crash(5, false);

    // S1 restarts and leads term 4 (votes of S3 and S4); it copies index 2 to S3 (and S2 already
    // has it), but its own term-4 entry at index 3 reaches nobody. Then it crashes.
    cluster.restart(1);
    cluster.campaign(1); // pre-vote for term 3 fails (S3, S4 voted in term 3) and teaches S1 term 3
    cluster.settle();
    cluster.send_filter = Some(Box::new(|from, to, message| {
        let to_one_of_the_copies = to == 2 || to == 3;
        let is_append = matches!(message.body, MessageBody::AppendEntries(_));
        let blocked =
            is_append && (!to_one_of_the_copies || is_append_with_entries_from(message, 3));
        !(from == 1 && blocked)
    }));
    cluster.campaign(1);
    cluster.settle();
    assert_eq!(
        (cluster.node(1).role(), cluster.node(1).term()),
        (Role::Leader, 4)
    );
    cluster.tick(1); // a heartbeat finds where S2 and S3 stand; S3 then gets index 2
    cluster.settle();
    cluster.tick(1);
    cluster.settle();
    for id in [1, 2, 3] {
        assert_eq!(
            cluster.node(id).term_at(2),
            Some(2),
            "index 2 of term 2 is on S{id}: a majority"
        );
    }
    assert_eq!(
        cluster.node(3).last_index(),
        2,
        "S3 did not get the term-4 entry"
    );
    let s1_commit_before_crash = cluster.node(1).commit_index();
    cluster.crash(1, false);

    // S5 restarts and wins term 5 with S2, S3 and S4: its last entry (term 3) is more
    // up-to-date than their index 2 of term 2. It overwrites index 2 everywhere.
    cluster.send_filter = None;
    for id in [2, 3, 4] {
        cluster.reboot(id);
    }
    cluster.restart(5);
    cluster.campaign(5); // pre-vote for term 4 fails (they voted in term 4) and teaches S5 term 4
    cluster.settle();
    cluster.campaign(5);
    cluster.settle();
    (cluster, s1_commit_before_crash)
}

#[test]
fn old_term_entry_is_not_committed_by_counting() {
    // The "old-term entry" scenario: index 2 of term 2 sat on a majority (S1, S2, S3), but
    // S1 (leader of term 4) must not count it as committed: S5 can still win term 5 and
    // overwrite it, which it does.
    let (cluster, s1_commit_before_crash) = old_term_entry_script(PlantedBugs::default());
    assert!(
        s1_commit_before_crash < 2,
        "S1 counted index 2 of an older term as committed"
    );
    assert_eq!(
        (cluster.node(5).role(), cluster.node(5).term()),
        (Role::Leader, 5)
    );
    for id in [2, 3, 4, 5] {
        assert_eq!(
            cluster.node(id).term_at(2),
            Some(3),
            "S5's index 2 replaced the term-2 entry on S{id}"
        );
        assert!(
            cluster.node(id).commit_index() >= 3,
            "S5's term-5 no-op commits it on S{id}"
        );
    }
    assert_no_violation(&cluster);
}

#[test]
fn old_term_entry_counted_for_commit_is_overwritten_with_the_planted_bug() {
    // The same script with the classic bug planted in every node: S1 counts index 2 of term 2
    // as committed, and S5 overwrites it in term 5. The invariants report the broken rule.
    let bugs = PlantedBugs {
        count_old_term_entries_for_commit: true,
        ..PlantedBugs::default()
    };
    let (cluster, s1_commit_before_crash) = old_term_entry_script(bugs);
    assert!(
        s1_commit_before_crash >= 2,
        "with the bug S1 commits index 2 of term 2"
    );
    assert_eq!(
        cluster.node(3).term_at(2),
        Some(3),
        "and the 'committed' entry is overwritten"
    );
    let violation = cluster
        .violation
        .clone()
        .expect("the simulator's invariants catch it");
    assert_eq!(violation.rule, "commit rule");
}

#[test]
fn five_node_partition_two_three_rolls_back_the_old_leaders_uncommitted_entries() {
    // The old leader on the minority side commits nothing; the majority elects a new leader
    // and commits; on healing, the old leader steps down and its entries are rolled back.
    let mut cluster = quiet_cluster(5, 4);
    cluster.ticks_enabled = false;
    cluster.campaign(1);
    cluster.settle();
    assert_eq!(agreed_leader(&cluster), Some((1, 1)));
    let commit_before = cluster.node(1).commit_index();
    cluster.partition(&[1, 2], &[3, 4, 5]);
    for payload in ["minority-a", "minority-b"] {
        cluster
            .propose(1, Bytes::from(payload))
            .expect("still believes it leads");
    }
    cluster.ticks_enabled = true;
    let majority_leader = |cluster: &Cluster| cluster.leader().filter(|leader| *leader >= 3);
    assert!(
        cluster.run_until(10 * ELECTION_TIMEOUT_MIN_TICKS, |cluster| majority_leader(
            cluster
        )
        .is_some())
    );
    let new_leader = majority_leader(&cluster).expect("checked");
    assert!(cluster.node(new_leader).term() >= 2);
    cluster
        .propose(new_leader, Bytes::from_static(b"majority"))
        .expect("leads");
    cluster.run_ticks(2 * ELECTION_TIMEOUT_MIN_TICKS);
    assert_eq!(
        cluster.node(1).commit_index(),
        commit_before,
        "the minority committed nothing"
    );
    assert_ne!(
        cluster.node(1).role(),
        Role::Leader,
        "check-quorum demoted the old leader"
    );
    cluster.heal();
    assert!(
        cluster.run_until(10 * ELECTION_TIMEOUT_MIN_TICKS, |cluster| {
            agreed_leader(cluster).is_some()
                && (1..=5).all(|id| cluster.node(id).applied_index() >= 3)
        })
    );
    for id in 1..=5 {
        let committed = payloads(&cluster.committed_log(id));
        assert_eq!(
            committed,
            vec![Bytes::from_static(b"majority")],
            "node {id}"
        );
        let whole_log = payloads(
            &cluster
                .node(id)
                .entries(1, cluster.node(id).last_index() + 1),
        );
        assert!(
            !whole_log.contains(&Bytes::from_static(b"minority-a")),
            "rolled back on node {id}"
        );
    }
    assert_no_violation(&cluster);
}

#[test]
fn node_cut_off_for_long_returns_without_disturbing_the_leader() {
    // Pre-vote: the isolated node times out again and again without raising its term, so on
    // its return it neither deposes the leader nor changes the term.
    let mut cluster = quiet_cluster(3, 5);
    cluster.campaign(1);
    cluster.settle();
    assert_eq!(agreed_leader(&cluster), Some((1, 1)));
    cluster.isolate(3);
    cluster.run_ticks(20 * ELECTION_TIMEOUT_MIN_TICKS);
    assert_eq!(
        cluster.node(3).term(),
        1,
        "pre-votes never raised the isolated node's term"
    );
    assert_ne!(cluster.node(3).role(), Role::Leader);
    cluster.heal();
    cluster.run_ticks(5 * ELECTION_TIMEOUT_MIN_TICKS);
    assert_eq!(
        agreed_leader(&cluster),
        Some((1, 1)),
        "the leader was not disturbed"
    );
    let delivered = cluster.delivered.take().expect("recorded");
    assert!(
        !delivered
            .iter()
            .any(|(from, _, kind, _)| *from == 3 && *kind == "RequestVote"),
        "node 3 never ran a real election"
    );
    assert_no_violation(&cluster);
}

#[test]
fn one_way_partition_of_the_leader_steps_it_down_by_check_quorum() {
    // The leader can send but not receive: followers keep hearing heartbeats, but the leader
    // hears no majority within an election timeout and steps down; then a new leader is elected.
    let mut cluster = quiet_cluster(3, 6);
    cluster.campaign(1);
    cluster.settle();
    assert_eq!(agreed_leader(&cluster), Some((1, 1)));
    cluster.cut(2, 1);
    cluster.cut(3, 1);
    let stepped_down = cluster.run_until(2 * ELECTION_TIMEOUT_MIN_TICKS, |cluster| {
        cluster.node(1).role() != Role::Leader
    });
    assert!(stepped_down, "check-quorum within two election timeouts");
    assert_eq!(
        cluster.node(1).term(),
        1,
        "stepping down does not raise the term"
    );
    assert!(
        cluster.run_until(10 * ELECTION_TIMEOUT_MIN_TICKS, |cluster| cluster
            .leader()
            .is_some_and(|id| id != 1))
    );
    let new_leader = cluster.leader().expect("checked");
    assert!(cluster.node(new_leader).term() >= 2);
    assert_no_violation(&cluster);
}

#[test]
fn crash_at_any_point_of_the_write_path_loses_only_unacknowledged_data() {
    // Crash the leader or a follower (a power loss: unsynced writes are lost or torn) at every
    // time unit of one proposal's write path: before the leader's write, between write and
    // sync, with acknowledgements in flight, after commit, after apply. An acknowledged proposal
    // (applied by its leader) survives; an unacknowledged one may go, but identically everywhere.
    for victim in [1, 2] {
        let mut outcomes = (0, 0); // (acknowledged before the crash, not)
        for crash_after_units in 0..14 {
            let mut options = ClusterOptions::quiet(3);
            options.max_disk_latency_units = 2;
            let mut cluster = Cluster::new(options, 100 + crash_after_units);
            cluster.ticks_enabled = false;
            cluster.campaign(1);
            cluster.settle();
            let (index, term) = cluster
                .propose(1, Bytes::from_static(b"payload"))
                .expect("leader");
            let mut acknowledged = false;
            for _ in 0..crash_after_units {
                cluster.step();
                let leader = cluster.node(1);
                acknowledged |=
                    leader.applied_index() >= index && leader.term_at(index) == Some(term);
            }
            cluster.crash(victim, false);
            cluster.restart(victim);
            cluster.ticks_enabled = true;
            let converged = cluster.run_until(20 * ELECTION_TIMEOUT_MIN_TICKS, |cluster| {
                agreed_leader(cluster).is_some_and(|(leader, _)| {
                    let last = cluster.node(leader).last_index();
                    (1..=3).all(|id| cluster.node(id).applied_index() == last)
                })
            });
            let case = format!("victim {victim}, crash after {crash_after_units} units");
            assert!(converged, "{case}: the cluster converges");
            let logs: Vec<Vec<Bytes>> = (1..=3)
                .map(|id| payloads(&cluster.committed_log(id)))
                .collect();
            assert!(
                logs.iter().all(|log| *log == logs[0]),
                "{case}: identical committed logs {logs:?}"
            );
            if acknowledged {
                assert_eq!(
                    logs[0],
                    vec![Bytes::from_static(b"payload")],
                    "{case}: acknowledged survives"
                );
                outcomes.0 += 1;
            } else {
                outcomes.1 += 1;
            }
            assert_no_violation(&cluster);
        }
        assert!(
            outcomes.0 > 0 && outcomes.1 > 0,
            "both kinds of crash point ran: {outcomes:?}"
        );
    }
}

// ---- Snapshots and membership (docs/RAFT-CORE.md "Snapshots", "Membership") ----

use keel_raft::{MembershipChange, MembershipError, ReplaceNode, ReplaceStep};

/// Proposes `count` payloads at `leader` and lets them commit everywhere reachable.
fn propose_many(cluster: &mut Cluster, leader: NodeId, count: usize, tag: &str) -> Index {
    let mut last = 0;
    for number in 0..count {
        let payload = Bytes::from(format!("{tag}-{number}"));
        last = cluster.propose(leader, payload).expect("leader").0;
        cluster.settle();
    }
    last
}

#[test]
fn follower_far_behind_the_compaction_point_catches_up_through_install_snapshot() {
    // Node 3 misses 30 entries; the leader compacts past them; on healing node 3 gets the
    // snapshot in chunks, keeps nothing inconsistent, and the next AppendEntries names the
    // snapshot's last entry as its prev entry.
    let mut options = ClusterOptions::quiet(3);
    options.config.max_snapshot_chunk_bytes = 8;
    let mut cluster = Cluster::new(options, 11);
    cluster.delivered = Some(Vec::new());
    cluster.campaign(1);
    cluster.settle();
    cluster.isolate(3);
    let last = propose_many(&mut cluster, 1, 30, "behind");
    cluster.snapshot_node_at(1, last);
    let snapshot_index = cluster.node(1).first_index() - 1;
    assert_eq!(
        snapshot_index, last,
        "the leader compacted everything it applied"
    );
    let snapshot_term = cluster
        .node(1)
        .term_at(snapshot_index)
        .expect("snapshot term");
    cluster.heal();
    let caught_up = |cluster: &Cluster| cluster.node(3).applied_index() >= last;
    assert!(cluster.run_until(100, caught_up), "node 3 caught up");
    let delivered = cluster.delivered.take().expect("recorded");
    let chunks = delivered
        .iter()
        .filter(|(from, to, kind, _)| (*from, *to, *kind) == (1, 3, "InstallSnapshot"))
        .count();
    assert!(
        chunks > 1,
        "the snapshot went in {chunks} chunks of 8 bytes"
    );
    assert_eq!(cluster.node(3).first_index(), snapshot_index + 1);
    assert_eq!(cluster.node(3).term_at(snapshot_index), Some(snapshot_term));
    assert_eq!(
        cluster.state_machine(3),
        cluster.state_machine(1),
        "node 3's state machine is the leader's"
    );
    let after = propose_many(&mut cluster, 1, 1, "after");
    assert!(cluster.run_until(20, |cluster| cluster.node(3).applied_index() >= after));
    assert_no_violation(&cluster);
}

#[test]
fn a_snapshot_below_the_applied_index_installs_and_restarts_to_the_live_state() {
    // A partition's log start trails what it applied: node 1 compacts at 20 of its 31 applied
    // entries while node 3 is cut off, then again at 36 of 41 (folding 21..=36 into the
    // snapshot at 20). Node 3 installs a snapshot behind the leader's applied index, applies
    // the rest, and after a restart from its snapshot reaches the leader's state again; so
    // does the leader, restarting from its second snapshot. Every snapshot is checked against
    // the replicas' state at its index and restored and replayed to the live state.
    let mut cluster = quiet_cluster(3, 11);
    cluster.campaign(1);
    cluster.settle();
    cluster.isolate(3);
    for number in 0..30 {
        cluster
            .produce(1, format!("record-{number}").as_bytes())
            .expect("leader");
        cluster.settle();
    }
    let applied = cluster.node(1).applied_index();
    assert_eq!(applied, 31, "the no-op and 30 batches");
    cluster.snapshot_node_at(1, 20);
    assert_no_violation(&cluster);
    assert_eq!(cluster.node(1).first_index(), 21, "the log starts after 20");
    assert_eq!(
        cluster.partition_machine(1).log_start_index(),
        20,
        "the partition's log start moved with the snapshot"
    );
    assert_eq!(
        cluster.partition_machine(1).log_start_offset(),
        19,
        "the 19 one-record batches up to index 20 are gone"
    );
    assert_eq!(cluster.partition_machine(1).high_watermark(), 30);

    cluster.heal();
    assert!(cluster.run_until(100, |cluster| cluster.node(3).applied_index() >= applied));
    assert_eq!(
        cluster.coverage.snapshots_installed, 1,
        "node 3 installed it"
    );
    assert_eq!(cluster.node(3).first_index(), 21);
    assert_eq!(
        cluster.partition_machine(3).applied(),
        cluster.partition_machine(1).applied()
    );
    assert_eq!(cluster.state_machine(3), cluster.state_machine(1));

    for number in 30..40 {
        cluster
            .produce(1, format!("record-{number}").as_bytes())
            .expect("leader");
        cluster.settle();
    }
    cluster.snapshot_node_at(1, 36);
    assert_no_violation(&cluster);
    assert_eq!(cluster.partition_machine(1).log_start_offset(), 35);
    for id in [3, 1] {
        cluster.reboot(id);
    }
    assert_eq!(cluster.coverage.restarts_from_snapshot, 2);
    cluster.campaign(1);
    cluster.settle();
    let last = cluster.node(1).applied_index();
    assert!(cluster.run_until(100, |cluster| cluster.node(3).applied_index() >= last));
    assert_eq!(cluster.partition_machine(1).high_watermark(), 40);
    assert_eq!(cluster.partition_machine(3).high_watermark(), 40);
    assert_eq!(cluster.partition_machine(1).log_start_offset(), 35);
    assert_eq!(
        cluster.partition_machine(3).log_start_offset(),
        19,
        "node 3 took no snapshot of its own since the install"
    );
    assert_eq!(cluster.state_machine(3), cluster.state_machine(1));
    assert_no_violation(&cluster);
}

#[test]
fn a_membership_change_before_the_leaders_noop_commits_waits() {
    // A new leader whose no-op is not committed refuses a change (retriable); once the no-op
    // commits the same change is accepted.
    let mut cluster = quiet_cluster(3, 3);
    cluster.partition(&[1], &[2, 3]);
    cluster.campaign(1); // pre-votes cannot arrive: 1 stays a pre-candidate
    cluster.heal();
    cluster.send_filter = Some(Box::new(|_, _, message: &Message| {
        !matches!(message.body, MessageBody::AppendEntriesResponse(_))
    }));
    cluster.campaign(1);
    cluster.settle();
    assert_eq!(cluster.node(1).role(), Role::Leader);
    let change = MembershipChange::RemoveVoter {
        id: 3,
        incarnation: cluster.incarnation(3),
    };
    assert_eq!(
        cluster.propose_membership_change(1, change),
        Err(MembershipError::OwnTermNotCommitted),
        "no acknowledgement reached the leader: its no-op is not committed"
    );
    cluster.send_filter = None;
    cluster.run_ticks(3);
    assert!(cluster.propose_membership_change(1, change).is_ok());
    cluster.settle();
    assert!(!cluster.node(1).membership().voters.contains_key(&3));
    assert_no_violation(&cluster);
}

/// The replacement of `id`'s `old` incarnation by `new`: learner, remove, promote
/// (docs/RAFT-CORE.md "Replace sequence").
fn replace_sequence(id: NodeId, old: u64, new: u64) -> Vec<MembershipChange> {
    vec![
        MembershipChange::AddLearner {
            id,
            incarnation: new,
        },
        MembershipChange::RemoveVoter {
            id,
            incarnation: old,
        },
        MembershipChange::PromoteLearner {
            id,
            incarnation: new,
        },
    ]
}

#[test]
fn a_wiped_node_rejoins_through_replace_as_a_learner_first() {
    // Node 3 loses its disk. Its new incarnation is ignored as a voter; it is added as a
    // learner, catches up, the old incarnation is removed (one voter change), then the learner
    // is promoted (another). At no point are two voter changes uncommitted.
    let mut cluster = quiet_cluster(3, 9);
    cluster.campaign(1);
    cluster.settle();
    let before = propose_many(&mut cluster, 1, 5, "before");
    let old = cluster.incarnation(3);
    cluster.wipe(3);
    cluster.replacements.clear(); // driven by hand below
    cluster.restart(3);
    let new = cluster.incarnation(3);
    assert_ne!(old, new);
    cluster.run_ticks(3);
    assert_eq!(
        cluster.node(3).last_index(),
        0,
        "not a member yet: the leader does not replicate to the new incarnation"
    );
    let replace = ReplaceNode::new(3, old, new);
    let mut steps = Vec::new();
    for _ in 0..50 {
        match replace.next_step(cluster.node(1)) {
            ReplaceStep::Done => break,
            ReplaceStep::Wait => cluster.run_ticks(1),
            ReplaceStep::Propose(change) => {
                steps.push(change);
                cluster
                    .propose_membership_change(1, change)
                    .expect("the helper proposes only what is allowed");
                cluster.settle();
            }
        }
    }
    assert_eq!(steps, replace_sequence(3, old, new));
    assert!(cluster.node(1).membership().is_voter(3, new));
    assert!(cluster.node(3).applied_index() >= before);
    let after = propose_many(&mut cluster, 1, 1, "after");
    cluster.isolate(2);
    let after_2 = propose_many(&mut cluster, 1, 1, "needs node 3");
    assert!(
        cluster.node(1).commit_index() >= after_2 && after_2 > after,
        "the new incarnation counts toward commit"
    );
    assert_no_violation(&cluster);
}

#[test]
fn the_brokers_reconciliation_replaces_a_wiped_node_across_a_leader_change() {
    // The broker drives replacements with `group::replace::next_change`: each leader compares
    // its configuration with the incarnations the metadata map holds and proposes the next
    // single-server change. A leader change halfway must not matter: the next leader carries
    // on from the configuration it finds in its log.
    use keel_broker::group::replace::next_change;
    let mut cluster = quiet_cluster(3, 21);
    cluster.campaign(1);
    cluster.settle();
    let before = propose_many(&mut cluster, 1, 5, "before");
    let desired_now = |cluster: &Cluster| -> std::collections::BTreeMap<NodeId, u64> {
        (1..=3).map(|id| (id, cluster.incarnation(id))).collect()
    };
    assert_eq!(
        next_change(cluster.node(1), &desired_now(&cluster)),
        None,
        "nothing to do while every member runs the incarnation the map holds"
    );
    let old = cluster.incarnation(3);
    cluster.wipe(3);
    cluster.replacements.clear(); // driven by next_change below
    cluster.restart(3);
    let new = cluster.incarnation(3);
    let desired = desired_now(&cluster);
    let mut steps = Vec::new();
    let mut leader = 1;
    for _ in 0..200 {
        let Some(change) = next_change(cluster.node(leader), &desired) else {
            if cluster.node(leader).membership().is_voter(3, new) {
                break;
            }
            cluster.run_ticks(1);
            continue;
        };
        steps.push(change);
        cluster
            .propose_membership_change(leader, change)
            .expect("next_change proposes only what is allowed");
        cluster.settle();
        if steps.len() == 1 {
            // Leadership moves to node 2 right after the learner was added. (Losing node 1
            // instead would stop the group: the old incarnation of 3 is still a voter that
            // cannot answer, which is why a replacement should not wait.)
            assert!(cluster.transfer_leadership(2), "transfer started");
            cluster.settle();
            assert_eq!(cluster.node(2).role(), Role::Leader, "node 2 took over");
            leader = 2;
        }
    }
    assert_eq!(steps, replace_sequence(3, old, new));
    assert_eq!(
        next_change(cluster.node(leader), &desired),
        None,
        "done stays done"
    );
    assert!(cluster.node(3).applied_index() >= before);
    assert_no_violation(&cluster);
}

#[test]
fn a_leader_that_removes_itself_steps_down_and_the_rest_elect_a_leader() {
    let mut cluster = quiet_cluster(3, 4);
    cluster.campaign(1);
    cluster.settle();
    let change = MembershipChange::RemoveVoter {
        id: 1,
        incarnation: cluster.incarnation(1),
    };
    cluster
        .propose_membership_change(1, change)
        .expect("allowed");
    cluster.settle();
    assert_eq!(cluster.node(1).role(), Role::Follower);
    assert!(
        cluster.run_until(10 * ELECTION_TIMEOUT_MIN_TICKS, |cluster| {
            matches!(cluster.leader(), Some(2 | 3))
        })
    );
    cluster.run_ticks(10 * ELECTION_TIMEOUT_MIN_TICKS);
    assert_ne!(
        cluster.node(1).role(),
        Role::Leader,
        "a removed node never campaigns"
    );
    assert_no_violation(&cluster);
}

// ---- Reads and leadership transfer (docs/RAFT-CORE.md "Reads", "Leadership transfer") ----

use keel_raft::ReadMode;

/// Leader 1 of a quiet 3-node cluster with a fresh lease and `count` committed writes.
fn leader_with_a_lease(planted_bugs: PlantedBugs) -> Cluster {
    let mut options = ClusterOptions::quiet(3);
    options.config.planted_bugs = planted_bugs;
    let mut cluster = Cluster::new(options, 21);
    cluster.campaign(1);
    cluster.settle();
    propose_many(&mut cluster, 1, 3, "before");
    cluster.read(1, ReadMode::Lease); // asks for leases: a round per heartbeat from now on
    cluster.run_ticks(3);
    assert!(cluster.node(1).lease_is_valid());
    cluster
}

/// Node 1 goes deaf right after handing leadership to node 2; node 2 wins (its
/// ForcedRequestVote bypasses node 3's stickiness) and commits a write.
fn transfer_while_the_old_leader_is_deaf(cluster: &mut Cluster) -> Index {
    cluster.settle();
    assert!(cluster.transfer_leadership(2)); // TimeoutNow is on its way to node 2
    cluster.cut(2, 1);
    cluster.cut(3, 1);
    cluster.settle(); // node 2 campaigns, node 3 votes despite stickiness
    assert_eq!(cluster.node(2).role(), Role::Leader);
    assert_eq!(
        cluster.node(1).role(),
        Role::Leader,
        "node 1 has not heard yet"
    );
    let written = propose_many(cluster, 2, 1, "new leader");
    assert!(cluster.node(2).commit_index() >= written);
    written
}

#[test]
fn a_leader_serves_no_lease_read_once_it_started_a_transfer() {
    let mut cluster = leader_with_a_lease(PlantedBugs::default());
    let written = transfer_while_the_old_leader_is_deaf(&mut cluster);
    let request = cluster
        .read(1, ReadMode::Lease)
        .expect("accepted, to be confirmed");
    cluster.run_ticks(ELECTION_TIMEOUT_MIN_TICKS);
    assert!(
        !cluster
            .released_reads
            .iter()
            .any(|&(id, index)| id == request && index.is_some()),
        "no read index below the new leader's write at {written} may be handed out"
    );
    assert_no_violation(&cluster);
}

#[test]
fn lease_reads_that_ignore_a_transfer_are_stale_with_the_planted_bug() {
    let bugs = PlantedBugs {
        lease_reads_ignore_transfer: true,
        ..PlantedBugs::default()
    };
    let mut cluster = leader_with_a_lease(bugs);
    let written = transfer_while_the_old_leader_is_deaf(&mut cluster);
    let request = cluster
        .read(1, ReadMode::Lease)
        .expect("served from the lease");
    let released = cluster
        .released_reads
        .iter()
        .find(|&&(id, _)| id == request)
        .and_then(|&(_, index)| index);
    assert!(
        released.is_some_and(|index| index < written),
        "the stale lease read returned {released:?} although {written} was committed"
    );
}

#[test]
fn a_stale_leader_in_a_minority_serves_no_read() {
    // 5 nodes, leader 1 cut off with node 2; the majority elects a new leader and commits;
    // reads at node 1 (ReadIndex or lease) are never confirmed.
    let mut cluster = quiet_cluster(5, 13);
    cluster.campaign(1);
    cluster.settle();
    cluster.read(1, ReadMode::Lease);
    cluster.run_ticks(3);
    cluster.partition(&[1, 2], &[3, 4, 5]);
    assert!(
        cluster.run_until(10 * ELECTION_TIMEOUT_MIN_TICKS, |cluster| {
            matches!(cluster.leader(), Some(3..=5))
        })
    );
    let new_leader = cluster.leader().expect("checked");
    let written = propose_many(&mut cluster, new_leader, 1, "majority");
    assert_eq!(
        cluster.node(1).role(),
        Role::Leader,
        "check-quorum has not fired yet, or..."
    );
    let requests = [
        cluster.read(1, ReadMode::ReadIndex),
        cluster.read(1, ReadMode::Lease),
    ];
    cluster.run_ticks(2 * ELECTION_TIMEOUT_MIN_TICKS);
    for request in requests.into_iter().flatten() {
        assert!(
            !cluster
                .released_reads
                .iter()
                .any(|&(id, index)| id == request && index.is_some_and(|index| index < written)),
            "read {request} at the stale leader was served"
        );
    }
    assert_no_violation(&cluster);
}

#[test]
fn leadership_transfer_hands_over_to_a_caught_up_target() {
    let mut cluster = quiet_cluster(3, 17);
    cluster.campaign(1);
    cluster.settle();
    propose_many(&mut cluster, 1, 3, "before");
    assert!(cluster.transfer_leadership(3));
    assert!(
        cluster.propose(1, Bytes::from_static(b"refused")).is_err(),
        "a leader that is transferring takes no proposals"
    );
    cluster.settle();
    assert_eq!(agreed_leader(&cluster).map(|(leader, _)| leader), Some(3));
    let delivered = cluster.delivered.take().expect("recorded");
    assert!(delivered
        .iter()
        .any(|&(from, to, kind, _)| (from, to, kind) == (1, 3, "TimeoutNow")));
    assert!(
        !delivered
            .iter()
            .any(|&(from, _, kind, _)| from == 3 && kind == "PreVote"),
        "the target skips pre-vote"
    );
    assert_no_violation(&cluster);
}

#[test]
fn an_abandoned_transfer_lets_the_leader_take_proposals_again() {
    let mut cluster = quiet_cluster(3, 19);
    cluster.campaign(1);
    cluster.settle();
    cluster.send_filter = Some(Box::new(|_, _, message: &Message| {
        !matches!(message.body, MessageBody::TimeoutNow)
    }));
    assert!(cluster.transfer_leadership(2));
    cluster.run_ticks(ELECTION_TIMEOUT_MIN_TICKS + 1);
    assert_eq!(cluster.node(1).role(), Role::Leader);
    assert_eq!(
        cluster.node(1).transfer_target(),
        None,
        "abandoned after an election timeout"
    );
    assert!(cluster.propose(1, Bytes::from_static(b"again")).is_ok());
    assert_no_violation(&cluster);
}
