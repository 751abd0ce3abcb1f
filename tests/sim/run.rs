//! One seeded simulation run. The seed decides everything: cluster size, limits, fault rates,
//! and every fault and proposal. Phase one injects faults and checks safety after every step;
//! phase two heals everything and demands liveness: a leader within a bounded number of ticks,
//! then every new proposal committed on every node (TigerBeetle VOPR).

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use keel_broker::group::driver::DriverBugs;
use keel_broker::meta::MetaCommand;
use keel_raft::{Config, Index, NodeId, PlantedBugs, ProposeError, ReadMode, Term};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cluster::{Cluster, ClusterOptions, Coverage, TICK_UNITS};
use crate::history::Violation;
use crate::invariants::durability;
use crate::network::NetworkFaults;
use crate::workload::{Pending, PROPOSAL_TIMEOUT_UNITS};

pub const FAULT_PHASE_TICKS: u64 = 1_000;
pub const LIVENESS_LEADER_TICKS: u64 = 300;
pub const LIVENESS_COMMIT_TICKS: u64 = 300;
pub const LIVENESS_PROPOSALS: usize = 5;
/// Phase two: ticks for replacements and re-adds to finish after healing. Generous: a learner
/// may have to catch up hundreds of entries one per message with one message in flight.
pub const LIVENESS_MEMBERSHIP_TICKS: u64 = 2_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    Safety(Violation),
    Liveness(String),
    Panic(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    pub seed: u64,
    pub node_count: u64,
    pub trace_hash: u64,
    pub trace_events: u64,
    pub messages_sent: u64,
    pub committed_entries: u64,
    pub acknowledged: u64,
    pub crashes: u64,
    pub leaders_elected: u64,
    pub coverage: Coverage,
}

/// Fault rates drawn from the seed.
struct FaultRates {
    crash_per_tick: f64,
    restart_per_tick: f64,
    partition_per_tick: f64,
    propose_per_unit: f64,
    /// A node loses its disk and is replaced (docs/RAFT-CORE.md "Replace sequence").
    wipe_per_tick: f64,
    /// A random voter is removed and later added back.
    churn_per_tick: f64,
    /// A random node compacts its log at a random log start up to its applied index.
    snapshot_per_tick: f64,
    /// A linearizable read (ReadIndex or lease, at random) at the node a client believes leads.
    read_per_unit: f64,
    /// The leader hands leadership to a random other voter.
    transfer_per_tick: f64,
}

/// Bugs planted for a run: in the consensus core, in the product's group driver, or none.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bugs {
    pub core: PlantedBugs,
    pub driver: DriverBugs,
    /// In the simulator's compaction: the live state goes into the snapshot at the log start
    /// (`ClusterOptions::label_live_state_as_log_start`).
    pub label_live_state_as_log_start: bool,
}

impl From<PlantedBugs> for Bugs {
    fn from(core: PlantedBugs) -> Bugs {
        Bugs {
            core,
            ..Bugs::default()
        }
    }
}

impl From<DriverBugs> for Bugs {
    fn from(driver: DriverBugs) -> Bugs {
        Bugs {
            driver,
            ..Bugs::default()
        }
    }
}

/// Runs one seed; a panic inside the core or the simulator is a failure too.
pub fn run_seed(seed: u64, bugs: impl Into<Bugs>) -> Result<RunReport, Failure> {
    let bugs = bugs.into();
    match catch_unwind(AssertUnwindSafe(|| run_seed_unguarded(seed, bugs))) {
        Ok(result) => result,
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_default();
            Err(Failure::Panic(text))
        }
    }
}

fn run_seed_unguarded(seed: u64, bugs: Bugs) -> Result<RunReport, Failure> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (options, rates) = draw_options(&mut rng, bugs);
    // Drawn apart from the main stream, so seeds without full disks run as they did before
    // full disks were simulated (the planted-bug tests search seeds in order).
    let disk_full_per_tick =
        [0.0, 0.002, 0.01][ChaCha8Rng::seed_from_u64(seed ^ DISK_FULL_STREAM).random_range(0..3)];
    let mut cluster = Cluster::new(options, rng.random());
    let mut crashes = 0;
    let mut partition_ends_at = None;
    let mut full_until = BTreeMap::new();
    for _ in 0..FAULT_PHASE_TICKS {
        inject_faults(&mut cluster, &rates, &mut partition_ends_at, &mut crashes);
        fill_disks(&mut cluster, disk_full_per_tick, &mut full_until);
        change_membership(&mut cluster, &rates, &mut partition_ends_at);
        for _ in 0..TICK_UNITS {
            drive_producers(&mut cluster, rates.propose_per_unit);
            drive_readers(&mut cluster, rates.read_per_unit);
            cluster.step();
            if let Some(violation) = cluster.violation.take() {
                return Err(Failure::Safety(violation));
            }
        }
    }
    check_liveness(&mut cluster)?;
    Ok(RunReport {
        seed,
        node_count: cluster.options.node_count,
        trace_hash: cluster.trace.hash(),
        trace_events: cluster.trace.events,
        messages_sent: cluster.network.messages_sent,
        committed_entries: cluster.history.committed.len() as u64,
        acknowledged: cluster.history.acknowledged.len() as u64,
        crashes,
        leaders_elected: cluster.history.leaders_by_term.len() as u64,
        coverage: cluster.coverage.clone(),
    })
}

fn draw_options(rng: &mut ChaCha8Rng, bugs: Bugs) -> (ClusterOptions, FaultRates) {
    let mut config = Config::new(0, 0);
    config.heartbeat_interval_ticks = rng.random_range(1..=3);
    config.election_timeout_min_ticks = 10;
    // 1 byte: every AppendEntries carries exactly one entry.
    config.max_append_bytes = [1, 64, 256, 4096][rng.random_range(0..4)];
    config.max_inflight_msgs = rng.random_range(1..=8);
    config.max_inflight_bytes = config.max_append_bytes * rng.random_range(1..=8);
    config.max_unapplied_entries = [2, 8, 1_000][rng.random_range(0..3)];
    config.max_uncommitted_bytes =
        [128, 1_024, 1 << 20][rng.random_range(0..3)].max(config.max_append_bytes);
    config.max_apply_bytes = [1, 256, 1 << 20][rng.random_range(0..3)];
    // At least 32 bytes: snapshots carry the partition machine and the metadata map too.
    config.max_snapshot_chunk_bytes = [32, 256, 4096][rng.random_range(0..3)];
    // Ticks drift by up to 20% (`max_tick_skew_units` of 10): a voter's stickiness may end
    // after 9 of its ticks of 8 units (72), so a lease must end before: (10 - 5) * 12 = 60.
    config.lease_drift_margin_ticks = 5;
    config.planted_bugs = bugs.core;
    let network = NetworkFaults {
        drop_probability: rng.random_range(0.0..0.1),
        duplicate_probability: rng.random_range(0.0..0.05),
        max_delay_units: rng.random_range(2..=30),
    };
    let options = ClusterOptions {
        node_count: if rng.random_bool(0.5) { 3 } else { 5 },
        network,
        max_disk_latency_units: rng.random_range(1..=10),
        config,
        producer_count: rng.random_range(1..=6),
        max_tick_skew_units: rng.random_range(0..=2),
        driver_bugs: bugs.driver,
        label_live_state_as_log_start: bugs.label_live_state_as_log_start,
    };
    let rates = FaultRates {
        crash_per_tick: [0.002, 0.01, 0.03][rng.random_range(0..3)],
        restart_per_tick: rng.random_range(0.02..0.2),
        partition_per_tick: rng.random_range(0.0..0.03),
        propose_per_unit: rng.random_range(0.005..0.05),
        wipe_per_tick: [0.0, 0.001, 0.004][rng.random_range(0..3)],
        churn_per_tick: [0.0, 0.002, 0.01][rng.random_range(0..3)],
        snapshot_per_tick: [0.0, 0.01, 0.05][rng.random_range(0..3)],
        read_per_unit: [0.0, 0.02, 0.1][rng.random_range(0..3)],
        transfer_per_tick: [0.0, 0.005, 0.03][rng.random_range(0..3)],
    };
    (options, rates)
}

/// Seeds the RNG that picks a run's rate of full disks.
const DISK_FULL_STREAM: u64 = 0xd15c_f011;

/// Now and then a node's disk fills up for a while (5 to 80 ticks): it refuses appends and hard
/// states, nothing written; it must acknowledge nothing it has not stored, and catch up after.
fn fill_disks(cluster: &mut Cluster, per_tick: f64, full_until: &mut BTreeMap<NodeId, u64>) {
    if per_tick == 0.0 {
        return;
    }
    let now = cluster.now;
    let freed: Vec<NodeId> = full_until
        .iter()
        .filter(|&(_, &until)| until <= now)
        .map(|(&id, _)| id)
        .collect();
    for id in freed {
        full_until.remove(&id);
        cluster.set_disk_full(id, false);
    }
    for id in cluster.ids() {
        if !full_until.contains_key(&id) && cluster.rng.random_bool(per_tick) {
            let until = now + cluster.rng.random_range(5..80) * TICK_UNITS;
            full_until.insert(id, until);
            cluster.set_disk_full(id, true);
        }
    }
}

fn inject_faults(
    cluster: &mut Cluster,
    rates: &FaultRates,
    partition_ends_at: &mut Option<u64>,
    crashes: &mut u64,
) {
    let node_count = cluster.options.node_count as usize;
    for id in cluster.ids() {
        if cluster.is_up(id) {
            if cluster.rng.random_bool(rates.crash_per_tick) {
                // At most a minority may abstain, or no majority could ever vote again; a node
                // being replaced or re-added counts as one that cannot vote.
                // With a voter short (an uncommitted removal in some log counts) one abstaining
                // node may be the majority-breaker: no leader to catch it up, ever.
                let may_abstain = cluster.abstaining_count() + cluster.membership_work()
                    < (node_count - 1) / 2
                    && cluster.every_node_has_the_full_membership();
                cluster.crash(id, may_abstain);
                *crashes += 1;
            }
        } else if cluster.rng.random_bool(rates.restart_per_tick) {
            cluster.restart(id);
        }
    }
    match *partition_ends_at {
        Some(end) if cluster.now >= end => {
            cluster.heal();
            *partition_ends_at = None;
        }
        Some(_) => {}
        None if cluster.rng.random_bool(rates.partition_per_tick) => {
            start_partition(cluster);
            *partition_ends_at = Some(cluster.now + cluster.rng.random_range(5..80) * TICK_UNITS);
        }
        None => {}
    }
}

/// Disk wipes (then the replace sequence) and voluntary voter removals (then re-adding), one
/// at a time and never while a node abstains: a majority of voters must stay able to vote.
fn change_membership(
    cluster: &mut Cluster,
    rates: &FaultRates,
    partition_ends_at: &mut Option<u64>,
) {
    cluster.drive_membership();
    track_transfer(cluster);
    if cluster.transfer.is_none() && cluster.rng.random_bool(rates.transfer_per_tick) {
        start_transfer(cluster, partition_ends_at);
    }
    if cluster.rng.random_bool(rates.snapshot_per_tick) {
        let ids = cluster.ids();
        let node = ids[cluster.rng.random_range(0..ids.len())];
        cluster.snapshot_node(node);
    }
    // A 2-voter configuration cannot survive a wipe: only from a full configuration that every
    // node agrees on (an uncommitted removal may still come back after a leader change).
    let quiet = cluster.membership_work() == 0
        && cluster.abstaining_count() == 0
        && cluster.every_node_has_the_full_membership();
    let ids = cluster.ids();
    // One of the two per tick at most: each leaves the configuration short of a voter.
    if quiet && cluster.rng.random_bool(rates.wipe_per_tick) {
        let victim = ids[cluster.rng.random_range(0..ids.len())];
        cluster.wipe(victim);
    } else if quiet && cluster.rng.random_bool(rates.churn_per_tick) {
        // The churned voter's re-add is tried at once, while its removal is pending: the core
        // must refuse (a planted bug that does not is caught by membership_rule).
        let victim = ids[cluster.rng.random_range(0..ids.len())];
        cluster.churn_voter(victim);
    }
}

/// The leader hands leadership to a random other voter. Half the time the old leader goes deaf
/// for a few ticks once it sends TimeoutNow (it sends but receives nothing): it then learns of
/// the new term late, the window in which a lease read that ignored the transfer is stale.
fn start_transfer(cluster: &mut Cluster, partition_ends_at: &mut Option<u64>) {
    let Some(leader) = cluster.leader() else {
        return;
    };
    let voters: Vec<NodeId> = cluster
        .node(leader)
        .membership()
        .voters
        .keys()
        .copied()
        .filter(|&id| id != leader)
        .collect();
    if voters.is_empty() {
        return;
    }
    let target = voters[cluster.rng.random_range(0..voters.len())];
    if partition_ends_at.is_none() && cluster.heal_at.is_none() && cluster.rng.random_bool(0.5) {
        cluster.deafen_after_timeout_now_units = Some(cluster.rng.random_range(3..15) * TICK_UNITS);
    }
    if !cluster.transfer_leadership(target) {
        cluster.deafen_after_timeout_now_units = None;
    }
}

/// A transfer is over once its target leads, or after two election timeouts.
fn track_transfer(cluster: &mut Cluster) {
    let Some((_, target, started_at)) = cluster.transfer else {
        return;
    };
    if cluster.leader() == Some(target) {
        cluster.coverage.transfers_completed += 1;
        cluster.transfer = None;
    } else if cluster.now > started_at + 20 * TICK_UNITS * 2 {
        cluster.transfer = None;
    }
}

/// Reads go where a client would send them: to a node that believes it leads (perhaps a stale
/// leader), or any up node; lease or ReadIndex at random.
fn drive_readers(cluster: &mut Cluster, read_probability: f64) {
    if read_probability == 0.0 || !cluster.rng.random_bool(read_probability) {
        return;
    }
    let up = cluster.up_ids();
    if up.is_empty() {
        return;
    }
    let leaders: Vec<NodeId> = up
        .iter()
        .copied()
        .filter(|&id| cluster.node(id).role() == keel_raft::Role::Leader)
        .collect();
    let target = if !leaders.is_empty() && cluster.rng.random_bool(0.8) {
        leaders[cluster.rng.random_range(0..leaders.len())]
    } else {
        up[cluster.rng.random_range(0..up.len())]
    };
    let mode = if cluster.rng.random_bool(0.5) {
        ReadMode::Lease
    } else {
        ReadMode::ReadIndex
    };
    cluster.read(target, mode);
}

fn start_partition(cluster: &mut Cluster) {
    let ids = cluster.ids();
    let victim = ids[cluster.rng.random_range(0..ids.len())];
    let others: Vec<NodeId> = ids.iter().copied().filter(|&id| id != victim).collect();
    match cluster.rng.random_range(0..4) {
        0 => {
            let (side_a, side_b): (Vec<NodeId>, Vec<NodeId>) =
                ids.iter().partition(|_| cluster.rng.random_bool(0.5));
            cluster.partition(&side_a, &side_b);
        }
        1 => cluster.isolate(victim),
        2 => {
            // The victim (often the leader) can send but not receive.
            let victim = cluster.leader().unwrap_or(victim);
            for other in ids.iter().copied().filter(|&id| id != victim) {
                cluster.cut(other, victim);
            }
        }
        _ => {
            for other in others {
                cluster.cut(victim, other);
            }
        }
    }
}

fn drive_producers(cluster: &mut Cluster, propose_probability: f64) {
    for producer in 0..cluster.workload.producers.len() {
        let state = &cluster.workload.producers[producer];
        if state.pending.is_some() || state.next_attempt_at > cluster.now {
            continue;
        }
        if !cluster.rng.random_bool(propose_probability) {
            continue;
        }
        let up = cluster.up_ids();
        if up.is_empty() {
            continue;
        }
        let target = match state.leader_guess {
            Some(guess) if cluster.is_up(guess) => guess,
            _ => up[cluster.rng.random_range(0..up.len())],
        };
        propose_for(cluster, producer, target);
    }
}

/// Producer `producer` proposes its next payload at `target`.
fn propose_for(cluster: &mut Cluster, producer: usize, target: NodeId) -> Option<(Index, Term)> {
    let value = cluster.workload.next_payload(producer);
    let now = cluster.now;
    // One proposal in ten is a metadata command, so the product's metadata machine runs too: a
    // topic with a unique name, placed by the proposer's map as the API does, or the deletion
    // of this producer's oldest one (each name deleted at most once, so payloads stay unique
    // and the map stays small enough for snapshots to move).
    let proposal = if cluster.rng.random_bool(0.1) {
        let topics = &mut cluster.workload.producers[producer].topics;
        let command = if topics.len() >= 2 {
            let name = topics.pop_front().expect("checked");
            MetaCommand::DeleteTopic { name }
        } else {
            let name = String::from_utf8_lossy(&value).into_owned();
            topics.push_back(name.clone());
            let replication_factor = cluster.rng.random_range(1..=3u16);
            let partitions = cluster.rng.random_range(1..=3);
            let placement = cluster.meta(target).place(partitions, replication_factor);
            MetaCommand::CreateTopic {
                name,
                replication_factor,
                placement,
            }
        };
        cluster.propose_meta(target, &command)
    } else {
        cluster.produce(target, &value)
    };
    match proposal {
        Ok((index, term, payload)) => {
            cluster.workload.proposals_accepted += 1;
            let state = &mut cluster.workload.producers[producer];
            state.leader_guess = Some(target);
            state.pending = Some(Pending {
                node: target,
                index,
                term,
                payload,
                deadline: now + PROPOSAL_TIMEOUT_UNITS,
            });
            Some((index, term))
        }
        Err(ProposeError::NotLeader { leader_hint }) => {
            cluster.coverage.redirected_proposals += 1;
            cluster.workload.producers[producer].leader_guess = leader_hint;
            None
        }
        Err(ProposeError::Overloaded { .. } | ProposeError::PayloadTooLarge { .. }) => {
            cluster.coverage.overloaded_proposals += 1;
            cluster.workload.producers[producer].next_attempt_at = now + 5 * TICK_UNITS;
            None
        }
    }
}

/// Phase two: heal, restart, then demand a leader and the commit of new proposals everywhere.
fn check_liveness(cluster: &mut Cluster) -> Result<(), Failure> {
    heal_everything(cluster);
    complete_membership(cluster)?;
    wait_for_agreed_leader(cluster)?;
    let proposed = commit_new_proposals(cluster)?;
    let last = proposed.last().map_or(0, |&(index, _)| index);
    let ids = cluster.ids();
    let everywhere = |cluster: &Cluster| {
        ids.iter()
            .all(|&id| cluster.node(id).applied_index() >= last)
    };
    let applied_everywhere = cluster.run_until(LIVENESS_COMMIT_TICKS, everywhere);
    check_safety(cluster)?;
    if !applied_everywhere {
        return Err(liveness(
            cluster,
            format!("proposals up to index {last} not applied everywhere"),
        ));
    }
    let Some(leader) = cluster.leader() else {
        return Err(liveness(
            cluster,
            "no leader after the proposals committed".to_string(),
        ));
    };
    let final_log = cluster.committed_log(leader);
    for (index, payload) in &proposed {
        if final_log
            .get((*index - 1) as usize)
            .is_none_or(|entry| entry.payload != *payload)
        {
            return Err(liveness(
                cluster,
                format!("liveness proposal at {index} was not committed"),
            ));
        }
    }
    durability::check_final(&cluster.history, &final_log).map_err(Failure::Safety)
}

/// No more drops, duplicates, cuts or crashes; every node restarted. Delays stay.
fn heal_everything(cluster: &mut Cluster) {
    cluster.deafen_after_timeout_now_units = None;
    cluster.heal_at = None;
    cluster.heal();
    cluster.network.faults = NetworkFaults {
        drop_probability: 0.0,
        duplicate_probability: 0.0,
        max_delay_units: cluster.network.faults.max_delay_units,
    };
    for id in cluster.ids() {
        cluster.set_disk_full(id, false);
        if !cluster.is_up(id) {
            cluster.restart(id);
        }
    }
}

/// Liveness with the final configuration: every replacement and re-add finishes, so every id
/// is a voter with the incarnation of its disk.
fn complete_membership(cluster: &mut Cluster) -> Result<(), Failure> {
    for _ in 0..LIVENESS_MEMBERSHIP_TICKS {
        if cluster.membership_is_complete() {
            return check_safety(cluster);
        }
        cluster.drive_membership();
        cluster.run_ticks(1);
        check_safety(cluster)?;
    }
    let membership = cluster
        .leader()
        .map(|leader| format!("{:?}", cluster.node(leader).membership()));
    let what = format!(
        "membership not complete within {LIVENESS_MEMBERSHIP_TICKS} ticks: leader's {membership:?}, replacements {:?}",
        cluster.replacements
    );
    Err(liveness(cluster, what))
}

fn wait_for_agreed_leader(cluster: &mut Cluster) -> Result<(), Failure> {
    let ids = cluster.ids();
    let agreed = |cluster: &Cluster| {
        cluster.leader().is_some_and(|leader| {
            let term = cluster.node(leader).term();
            ids.iter().all(|&id| {
                cluster.node(id).leader() == Some(leader) && cluster.node(id).term() == term
            })
        })
    };
    if cluster.run_until(LIVENESS_LEADER_TICKS, agreed) {
        return Ok(());
    }
    let what = format!("no leader all nodes agree on within {LIVENESS_LEADER_TICKS} ticks");
    Err(liveness(cluster, what))
}

/// Proposes until `LIVENESS_PROPOSALS` are applied by the leader that took them (a leader
/// change may drop one: it is proposed again), within `LIVENESS_COMMIT_TICKS`.
fn commit_new_proposals(cluster: &mut Cluster) -> Result<Vec<(Index, Bytes)>, Failure> {
    let mut proposed: Vec<(Index, Bytes)> = Vec::new();
    let deadline = cluster.now + LIVENESS_COMMIT_TICKS * TICK_UNITS;
    while proposed.len() < LIVENESS_PROPOSALS {
        if cluster.now >= deadline {
            let what = format!("only {} proposals committed in time", proposed.len());
            return Err(liveness(cluster, what));
        }
        // Check-quorum may still demote a leader that was cut off just before the heal.
        let Some(leader) = cluster.leader() else {
            cluster.run_ticks(1);
            continue;
        };
        let payload = Bytes::from(format!("liveness-{}", proposed.len()));
        let Ok((index, term)) = cluster.propose(leader, payload.clone()) else {
            cluster.run_ticks(1);
            continue;
        };
        let remaining_ticks = deadline.saturating_sub(cluster.now) / TICK_UNITS;
        let decided = |cluster: &Cluster| {
            let node = cluster.node(leader);
            node.applied_index() >= index || node.term_at(index) != Some(term)
        };
        cluster.run_until(remaining_ticks, decided);
        check_safety(cluster)?;
        let node = cluster.node(leader);
        if node.applied_index() >= index && node.term_at(index) == Some(term) {
            proposed.push((index, payload));
        }
    }
    Ok(proposed)
}

fn check_safety(cluster: &mut Cluster) -> Result<(), Failure> {
    match cluster.violation.take() {
        Some(violation) => Err(Failure::Safety(violation)),
        None => Ok(()),
    }
}

fn liveness(cluster: &Cluster, what: String) -> Failure {
    let states: Vec<String> = cluster
        .up_nodes()
        .iter()
        .map(|node| {
            format!(
                "{}:{:?} t{} lead {:?} last {} persisted {} commit {} applied {} abstain {:?} progress {:?}",
                node.id(),
                node.role(),
                node.term(),
                node.leader(),
                node.last_index(),
                node.persisted_index(),
                node.commit_index(),
                node.applied_index(),
                node.abstain_until_index(),
                cluster
                    .ids()
                    .iter()
                    .filter_map(|&id| node.progress(id).map(|p| (id, p.state, p.match_index, p.next_index, p.probe_sent, p.inflights.count(), p.applied_index)))
                    .collect::<Vec<_>>()
            )
        })
        .collect();
    Failure::Liveness(format!("{what}; nodes: {}", states.join("; ")))
}
