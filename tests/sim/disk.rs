//! The simulated disk of one node: a `RaftLog` in memory that keeps written-but-unsynced
//! entries apart from synced ones, and a crash model for them (docs/ARCHITECTURE.md "Testing").
//! It is the product driver's disk here ([`DriverLog`]): an fdatasync begins when the driver asks
//! and ends when the simulator says, so writes land while it runs.
//!
//! At a crash, unsynced entries of the tail reach the platter in any order: none, a prefix (a
//! torn tail), or an arbitrary subset. Recovery cuts the log at the first missing entry and
//! reports the highest index it saw beyond the cut: the abstain index (docs/RAFT-CORE.md).
//! Sometimes, and only when `may_abstain` allows it, the torn page also damages the last synced
//! entries (an append rewrites the partly filled page they share): the node then lost entries
//! it acknowledged, which the surviving later entry makes detectable.

use keel_broker::group::driver::{DriverLog, WriteRefused};
use keel_raft::{Entry, HardState, Index, MemoryLog, RaftLog, Snapshot, Term};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Default)]
pub struct SimDisk {
    /// Everything written, synced or not; entries up to `synced_index` are durable.
    log: MemoryLog,
    synced_index: Index,
    /// The latest snapshot, written by rename: durable as soon as it is written.
    snapshot: Option<Snapshot>,
    /// Written by rename and fsync, as the node does: durable when stored.
    hard_state: HardState,
    /// The sync in flight covers the log up to here.
    syncing_up_to: Option<Index>,
    /// The abstain index survives further crashes until the node's log reaches it: a second
    /// recovery no longer sees the frames the first one cut (RAFT-CORE.md, abstain rule).
    abstain_until_index: Option<Index>,
    /// The disk has no free block: appends and hard states are refused, nothing written (the
    /// product's segments reserve their extents before writing, so ENOSPC changes nothing).
    /// A property of the disk, so it outlives a crash.
    pub full: bool,
}

/// What a restarted node learns from its recovery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub abstain_until_index: Option<Index>,
    /// Entries that had been synced and were lost (only with `may_abstain`).
    pub synced_entries_lost: u64,
}

impl SimDisk {
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Entries up to here survive any crash (unless `may_abstain` damages the page they share).
    pub fn synced_index(&self) -> Index {
        self.synced_index
    }

    pub fn abstain_until_index(&self) -> Option<Index> {
        self.abstain_until_index
    }

    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// Persists `snapshot` and deletes the entries it covers (a taken or installed snapshot).
    pub fn persist_snapshot(&mut self, snapshot: Snapshot) {
        let through = snapshot.meta.last_included_index;
        self.log.compact(through);
        self.synced_index = self.synced_index.max(through).min(self.log.last_index());
        self.snapshot = Some(snapshot);
    }

    /// The node's log reached its abstain index: the marker is no longer needed.
    pub fn clear_abstain_marker(&mut self) {
        self.abstain_until_index = None;
    }

    /// A power loss: returns the disk as recovery finds it.
    pub fn crash(mut self, rng: &mut ChaCha8Rng, may_abstain: bool) -> (SimDisk, RecoveryReport) {
        // A sync that had not finished proves nothing.
        self.syncing_up_to = None;
        // Positions count from the first entry held (index `first`).
        let first = self.log.first_index();
        let total = self.entry_count();
        let synced_entries = (self.synced_index + 1).saturating_sub(first) as usize;
        let mut survives = vec![true; total];
        let unsynced = synced_entries..total;
        // Without `may_abstain` only prefixes survive: no hole, so no abstain index (the
        // simulator keeps abstaining nodes a minority, or the cluster could never elect).
        match rng.random_range(0..if may_abstain { 3 } else { 2 }) {
            0 => survives[unsynced.clone()]
                .iter_mut()
                .for_each(|s| *s = false),
            1 => {
                let kept = rng.random_range(unsynced.start..=total);
                survives[kept..].iter_mut().for_each(|s| *s = false);
            }
            _ => survives[unsynced.clone()]
                .iter_mut()
                .for_each(|s| *s = rng.random_bool(0.5)),
        }
        let later_survivor = survives[unsynced.clone()].iter().any(|&s| s);
        let mut synced_entries_lost = 0;
        if may_abstain && later_survivor && synced_entries > 0 && rng.random_bool(0.5) {
            let damaged = rng.random_range(1..=synced_entries.min(3));
            let first_damaged = synced_entries - damaged;
            survives[first_damaged..synced_entries]
                .iter_mut()
                .for_each(|s| *s = false);
            synced_entries_lost = damaged as u64;
        }
        let cut = survives.iter().position(|&s| !s).unwrap_or(total);
        let beyond = (cut..total).rev().find(|&position| survives[position]);
        let abstain_until_index = beyond.map(|position| position as Index + first);
        if abstain_until_index.is_none() {
            synced_entries_lost = 0;
        }
        self.log.truncate_suffix(cut as Index + first);
        self.synced_index = self.log.last_index();
        self.abstain_until_index = self.abstain_until_index.max(abstain_until_index);
        let report = RecoveryReport {
            abstain_until_index,
            synced_entries_lost,
        };
        (self, report)
    }
}

impl SimDisk {
    fn entry_count(&self) -> usize {
        (self.log.last_index() + 1 - self.log.first_index()) as usize
    }
}

/// The driver's disk. A sync covers what was written when it began; the simulator decides when
/// it ends (`Cluster::advance_disk`).
impl DriverLog for SimDisk {
    type SyncDone = ();

    fn store_hard_state(&mut self, hard_state: HardState) -> Result<(), WriteRefused> {
        if self.full {
            return Err(WriteRefused);
        }
        self.hard_state = hard_state;
        Ok(())
    }

    fn truncate_suffix(&mut self, from: Index) {
        // A sync running under a truncation would count rewritten entries it never covered.
        assert!(
            self.syncing_up_to.is_none(),
            "the driver settles before truncating"
        );
        if from <= self.log.last_index() {
            // keel-storage zeroes truncated bytes before returning: the cut is durable at once.
            self.log.truncate_suffix(from);
            self.synced_index = self.synced_index.min(self.log.last_index());
        }
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), WriteRefused> {
        if self.full {
            return Err(WriteRefused);
        }
        // Entries a snapshot taken meanwhile already covers are not written; the rest must
        // continue the log (asserted).
        let first_new = entries
            .iter()
            .position(|entry| entry.index > self.log.last_index())
            .unwrap_or(entries.len());
        debug_assert!(entries[..first_new]
            .iter()
            .all(|entry| entry.index < self.log.first_index()
                || self.log.term(entry.index) == Some(entry.term)));
        self.log.append(&entries[first_new..]);
        Ok(())
    }

    fn begin_sync(&mut self) -> bool {
        assert!(self.syncing_up_to.is_none(), "one sync at a time");
        self.syncing_up_to = Some(self.log.last_index());
        true
    }

    fn finish_sync(&mut self, (): ()) {
        let Some(up_to) = self.syncing_up_to.take() else {
            debug_assert!(false, "no sync was running");
            return;
        };
        self.synced_index = self.synced_index.max(up_to.min(self.log.last_index()));
    }

    fn settle(&mut self, _unsynced: bool) {
        self.syncing_up_to = None;
        self.synced_index = self.log.last_index();
    }

    fn clear_abstain(&mut self) {
        self.clear_abstain_marker();
    }

    fn write_snapshot(&mut self, snapshot: &Snapshot) {
        self.persist_snapshot(snapshot.clone());
    }
}

/// Reads see every write at once (as keel-storage's map does); only a crash tells synced from
/// unsynced.
impl RaftLog for SimDisk {
    fn first_index(&self) -> Index {
        self.log.first_index()
    }

    fn last_index(&self) -> Index {
        self.log.last_index()
    }

    fn term(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }

    fn entries(&self, from: Index, to_exclusive: Index, max_bytes: u64) -> Vec<Entry> {
        self.log.entries(from, to_exclusive, max_bytes)
    }
}
