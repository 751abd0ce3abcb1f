//! The deterministic Raft simulator (docs/RAFT-CORE.md "The simulator"): 3 or 5 Raft cores in one
//! thread, a network that drops, delays, duplicates, reorders and partitions, disks that lose
//! unsynced writes at a crash, random proposals; every safety property checked after
//! every step, liveness checked after healing.
//!
//! - `cargo test --release --test sim` runs the CI budget (2,000 seeds, in four parallel chunks).
//! - `KEEL_SIM_SEEDS=N` runs N seeds from `KEEL_SIM_SEED_START` (default 0).
//! - `KEEL_SIM_SEED=S` replays seed S alone, identically; add `KEEL_SIM_TRACE=1` for its trace.
//!
//! A failing seed is printed with the violated rule.

// The fixture is shared with tests/raft_scenarios.rs; each target uses a part of it.
#![allow(dead_code)]

mod cluster;
mod disk;
mod history;
mod invariants;
mod network;
mod run;
mod trace;
mod workload;

use std::time::Instant;

use keel_broker::group::driver::DriverBugs;
use keel_raft::PlantedBugs;

use crate::run::{run_seed, Bugs, Failure};

const CI_SEEDS: u64 = 2_000;
const CHUNKS: u64 = 4;

fn environment_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {value:?}")),
    )
}

/// The seeds chunk `chunk` of `CHUNKS` runs, honouring the environment.
fn seeds_of_chunk(chunk: u64) -> std::ops::Range<u64> {
    if let Some(seed) = environment_number("KEEL_SIM_SEED") {
        return if chunk == 0 { seed..seed + 1 } else { 0..0 };
    }
    let start = environment_number("KEEL_SIM_SEED_START").unwrap_or(0);
    let count = environment_number("KEEL_SIM_SEEDS").unwrap_or(CI_SEEDS);
    let per_chunk = count.div_ceil(CHUNKS);
    let from = start + (chunk * per_chunk).min(count);
    let to = start + ((chunk + 1) * per_chunk).min(count);
    from..to
}

fn simulate_chunk(chunk: u64) {
    let seeds = seeds_of_chunk(chunk);
    let started = Instant::now();
    let mut failures = Vec::new();
    let (mut messages, mut acknowledged, mut crashes) = (0, 0, 0);
    // Snapshots taken (below the applied index), installed, restarted from.
    let mut snapshots = [0u64; 4];
    for seed in seeds.clone() {
        match run_seed(seed, PlantedBugs::default()) {
            Ok(report) => {
                messages += report.messages_sent;
                acknowledged += report.acknowledged;
                crashes += report.crashes;
                let coverage = &report.coverage;
                snapshots[0] += coverage.snapshots_taken;
                snapshots[1] += coverage.snapshots_below_applied;
                snapshots[2] += coverage.snapshots_installed;
                snapshots[3] += coverage.restarts_from_snapshot;
                if seeds.end - seeds.start == 1 {
                    println!("{report:?}");
                }
            }
            Err(failure) => {
                println!("SIM FAILURE seed {seed}: {failure:?}\n  replay: KEEL_SIM_SEED={seed} KEEL_SIM_TRACE=1 cargo test --release --test sim");
                failures.push(seed);
            }
        }
    }
    println!(
        "sim chunk {chunk}: seeds {seeds:?} in {:.1}s; {messages} messages, {acknowledged} acknowledged proposals, {crashes} crashes; snapshots: {} taken ({} below the applied index), {} installed, {} restarts from one",
        started.elapsed().as_secs_f64(),
        snapshots[0],
        snapshots[1],
        snapshots[2],
        snapshots[3],
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

#[test]
fn simulate_seeds_chunk_0() {
    simulate_chunk(0);
}

#[test]
fn simulate_seeds_chunk_1() {
    simulate_chunk(1);
}

#[test]
fn simulate_seeds_chunk_2() {
    simulate_chunk(2);
}

#[test]
fn simulate_seeds_chunk_3() {
    simulate_chunk(3);
}

#[test]
fn same_seed_replays_an_identical_trace() {
    for seed in [3, 11] {
        let first = run_seed(seed, PlantedBugs::default()).expect("seed passes");
        let second = run_seed(seed, PlantedBugs::default()).expect("seed passes");
        assert_eq!(first, second, "seed {seed} must replay identically");
        assert!(
            first.trace_events > 1_000,
            "a run does real work: {first:?}"
        );
    }
}

#[test]
fn the_simulator_exercises_every_kind_of_fault() {
    // A simulator that never truncates, never abstains or never partitions proves little.
    let mut total = cluster::Coverage::default();
    let (mut leaders, mut crashes) = (0, 0);
    for seed in 0..100 {
        let report = run_seed(seed, PlantedBugs::default()).expect("seed passes");
        leaders += report.leaders_elected;
        crashes += report.crashes;
        let coverage = report.coverage;
        total.conflicting_suffixes_truncated += coverage.conflicting_suffixes_truncated;
        total.writes_during_sync += coverage.writes_during_sync;
        total.syncs_overtaken_by_writes += coverage.syncs_overtaken_by_writes;
        total.batches_checked += coverage.batches_checked;
        total.meta_commands_applied += coverage.meta_commands_applied;
        total.meta_effects += coverage.meta_effects;
        total.restarts_abstaining += coverage.restarts_abstaining;
        total.synced_entries_lost += coverage.synced_entries_lost;
        total.overloaded_proposals += coverage.overloaded_proposals;
        total.redirected_proposals += coverage.redirected_proposals;
        total.symmetric_partitions += coverage.symmetric_partitions;
        total.one_way_cuts += coverage.one_way_cuts;
        total.disks_wiped += coverage.disks_wiped;
        total.replacements_completed += coverage.replacements_completed;
        total.voters_removed += coverage.voters_removed;
        total.leaders_removed_themselves += coverage.leaders_removed_themselves;
        total.snapshots_taken += coverage.snapshots_taken;
        total.snapshots_below_applied += coverage.snapshots_below_applied;
        total.snapshots_installed += coverage.snapshots_installed;
        total.restarts_from_snapshot += coverage.restarts_from_snapshot;
        total.reads_released += coverage.reads_released;
        total.lease_reads_released += coverage.lease_reads_released;
        total.reads_failed += coverage.reads_failed;
        total.transfers_started += coverage.transfers_started;
        total.transfers_completed += coverage.transfers_completed;
        total.disks_filled += coverage.disks_filled;
        total.drives_with_refused_writes += coverage.drives_with_refused_writes;
    }
    println!("100 seeds: {leaders} leaders elected, {crashes} crashes, {total:?}");
    assert!(
        leaders >= 300 && crashes >= 100,
        "{leaders} leaders, {crashes} crashes"
    );
    assert!(total.conflicting_suffixes_truncated > 0, "{total:?}");
    // The product driver's pipelined fdatasync overlaps writes, in both orders.
    assert!(
        total.writes_during_sync > 0 && total.syncs_overtaken_by_writes > 0,
        "{total:?}"
    );
    // The product's partition machine runs on every replica and its offsets are checked.
    assert!(total.batches_checked > 10_000, "{total:?}");
    // And its metadata machine, whose map is folded into the digest every replica must agree on.
    assert!(
        total.meta_commands_applied > 1_000 && total.meta_effects > 0,
        "{total:?}"
    );
    assert!(total.restarts_abstaining > 0, "{total:?}");
    assert!(total.synced_entries_lost > 0, "{total:?}");
    assert!(total.overloaded_proposals > 0, "{total:?}");
    assert!(total.redirected_proposals > 0, "{total:?}");
    assert!(
        total.symmetric_partitions > 0 && total.one_way_cuts > 0,
        "{total:?}"
    );
    assert!(
        total.disks_wiped > 0 && total.replacements_completed > 0,
        "{total:?}"
    );
    assert!(
        total.voters_removed > 0 && total.leaders_removed_themselves > 0,
        "{total:?}"
    );
    assert!(
        total.reads_released > 0 && total.lease_reads_released > 0 && total.reads_failed > 0,
        "{total:?}"
    );
    assert!(
        total.transfers_started > 0 && total.transfers_completed > 0,
        "{total:?}"
    );
    // Full disks: the driver holds what the disk refused and acknowledges none of it.
    assert!(
        total.disks_filled > 0 && total.drives_with_refused_writes > 0,
        "{total:?}"
    );
    // Snapshots are taken at a log start below the applied index (folded, then checked by
    // restoring and replaying), installed on followers the leader's log start has passed, and
    // restarted from.
    assert!(
        total.snapshots_taken > 0
            && total.snapshots_below_applied > 0
            && total.snapshots_installed > 0
            && total.restarts_from_snapshot > 0,
        "{total:?}"
    );
}

/// Runs seeds until one reports a safety violation; returns it, or fails after `max_seeds`.
fn first_violation(bugs: impl Into<Bugs>, max_seeds: u64) -> (u64, Failure) {
    let bugs = bugs.into();
    for seed in 0..max_seeds {
        match run_seed(seed, bugs) {
            Err(failure @ Failure::Safety(_)) => return (seed, failure),
            Err(other) => panic!("seed {seed} failed without a safety violation: {other:?}"),
            Ok(_) => {}
        }
    }
    panic!("no safety violation within {max_seeds} seeds with {bugs:?}");
}

#[test]
fn planted_bug_counting_old_term_entries_is_caught() {
    let bugs = PlantedBugs {
        count_old_term_entries_for_commit: true,
        ..PlantedBugs::default()
    };
    let (seed, failure) = first_violation(bugs, 20);
    println!("old-term commit caught at seed {seed}: {failure:?}");
}

#[test]
fn planted_bug_voting_without_log_check_is_caught() {
    let bugs = PlantedBugs {
        grant_vote_without_log_check: true,
        ..PlantedBugs::default()
    };
    let (seed, failure) = first_violation(bugs, 20);
    println!("vote without log check caught at seed {seed}: {failure:?}");
}

#[test]
fn planted_bug_ignoring_the_abstain_rule_is_caught() {
    let bugs = PlantedBugs {
        ignore_abstain_rule: true,
        ..PlantedBugs::default()
    };
    let (seed, failure) = first_violation(bugs, 500);
    println!("abstain rule ignored caught at seed {seed}: {failure:?}");
}

#[test]
fn planted_bug_two_membership_changes_at_once_is_caught() {
    let bugs = PlantedBugs {
        allow_concurrent_membership_changes: true,
        ..PlantedBugs::default()
    };
    let (seed, failure) = first_violation(bugs, 50);
    println!("concurrent membership changes caught at seed {seed}: {failure:?}");
}

#[test]
fn planted_bug_a_wiped_node_voting_as_its_old_incarnation_is_caught() {
    let bugs = PlantedBugs {
        ignore_incarnations: true,
        ..PlantedBugs::default()
    };
    let (seed, failure) = first_violation(bugs, 300);
    println!("old-incarnation vote caught at seed {seed}: {failure:?}");
}

#[test]
fn planted_bug_lease_reads_ignoring_a_transfer_is_caught() {
    let bugs = PlantedBugs {
        lease_reads_ignore_transfer: true,
        ..PlantedBugs::default()
    };
    let (seed, failure) = first_violation(bugs, 500);
    println!("lease reads ignoring a transfer caught at seed {seed}: {failure:?}");
}

/// A snapshot at log start S that holds the live state at the applied index N instead of the
/// state folded up to S: the snapshot checks (invariants/snapshot_fold.rs) must catch it, or they
/// prove nothing about the fold.
#[test]
fn planted_bug_labelling_the_live_state_as_the_log_start_is_caught() {
    let bugs = Bugs {
        label_live_state_as_log_start: true,
        ..Bugs::default()
    };
    let (seed, failure) = first_violation(bugs, 50);
    assert!(
        matches!(&failure, Failure::Safety(violation) if violation.rule == "snapshot at a log start"),
        "{failure:?}"
    );
    println!("live state labelled as the log start caught at seed {seed}: {failure:?}");
}

/// The product's group driver runs here, so a bug in its pipelined fdatasync is the simulator's
/// to catch: a driver that reports writes durable beyond what its sync covered acknowledges
/// entries that a crash then loses.
#[test]
fn planted_bug_in_the_driver_releasing_unsynced_writes_is_caught() {
    let bugs = DriverBugs {
        release_unsynced: true,
        ..DriverBugs::default()
    };
    let (seed, failure) = first_violation(bugs, 200);
    println!("driver releasing unsynced writes caught at seed {seed}: {failure:?}");
}

/// And for a driver whose replica, its disk full, acknowledges entries it never stored: a crash
/// then loses entries a quorum was counted on.
#[test]
fn planted_bug_in_the_driver_acknowledging_refused_writes_is_caught() {
    let bugs = DriverBugs {
        acknowledge_refused_writes: true,
        ..DriverBugs::default()
    };
    let (seed, failure) = first_violation(bugs, 500);
    println!("driver acknowledging refused writes caught at seed {seed}: {failure:?}");
}

/// The same for a driver that lets acknowledgements out before the sync that covers the writes
/// before them: the per-step check of what followers acknowledge catches it.
#[test]
fn planted_bug_in_the_driver_releasing_acknowledgements_early_is_caught() {
    let bugs = DriverBugs {
        release_messages_early: true,
        ..DriverBugs::default()
    };
    let (seed, failure) = first_violation(bugs, 200);
    println!("driver releasing acknowledgements early caught at seed {seed}: {failure:?}");
}
