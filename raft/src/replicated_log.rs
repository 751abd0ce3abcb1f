//! `ReplicatedLog`: the core's view of its whole log (stable `RaftLog` + `Unstable`) and the
//! positions along it (etcd `log.go`).
//!
//! ```text
//!  first-1 <= applied <= apply_handed_out <= commit <= last
//!             persisted <= written_handed_out <= last
//! ```
//!
//! `persisted` is what the driver reported durable; `written_handed_out` is the last entry given
//! to the driver to write. A truncation below either pulls them back and records
//! `pending_truncate_from` for the next `Ready`.
//!
//! Compaction: entries at or below `snapshot_index` are covered by a snapshot; the core knows
//! only the term of the snapshot's last entry (the prev entry of the first AppendEntries after
//! it) and never reads below `snapshot_index + 1`, whether or not the driver has deleted them
//! yet. An installed snapshot (from the leader) moves every position up to its index at once;
//! `applied` follows when the driver reports the state machine replaced (`on_snapshot_done`).

use crate::entry::{Entry, Index, Term};
use crate::log::RaftLog;
use crate::unstable::Unstable;

/// What an installed snapshot left of the log after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InstalledSuffix {
    /// The log held the snapshot's last entry: the entries after it stay.
    Kept,
    /// The log disagreed (or was shorter): it is empty after the snapshot.
    Discarded,
}

pub(crate) struct ReplicatedLog<L: RaftLog> {
    storage: L,
    unstable: Unstable,
    commit_index: Index,
    applied_index: Index,
    apply_handed_out_index: Index,
    persisted_index: Index,
    written_handed_out_index: Index,
    pending_truncate_from: Option<Index>,
    /// The last entry a snapshot covers, and its term (0, 0 without a snapshot).
    snapshot_index: Index,
    snapshot_term: Term,
    /// A snapshot handed to the driver to install, until `on_snapshot_done`.
    installing_snapshot: Option<Index>,
}

impl<L: RaftLog> ReplicatedLog<L> {
    /// Everything in `storage` is durable (the driver only builds a node over a recovered log).
    /// `snapshot` is the `(index, term)` of the last entry the node's snapshot covers
    /// (`(0, 0)` without one); the state machine holds at least that much.
    pub(crate) fn new(
        storage: L,
        applied_index: Index,
        snapshot: (Index, Term),
    ) -> ReplicatedLog<L> {
        let (snapshot_index, snapshot_term) = snapshot;
        assert!(storage.first_index() >= 1 && storage.first_index() <= storage.last_index() + 1);
        assert!(
            storage.first_index() <= snapshot_index + 1,
            "a hole between the snapshot and the log"
        );
        let last = storage.last_index().max(snapshot_index);
        let applied_index = applied_index.max(snapshot_index);
        assert!(applied_index <= last, "applied beyond the log");
        ReplicatedLog {
            unstable: Unstable::new(last + 1),
            storage,
            commit_index: applied_index,
            applied_index,
            apply_handed_out_index: applied_index,
            persisted_index: last,
            written_handed_out_index: last,
            pending_truncate_from: None,
            snapshot_index,
            snapshot_term,
            installing_snapshot: None,
        }
    }

    pub(crate) fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    /// The node took a snapshot of its state machine at `index` (applied): entries up to it
    /// may go. Returns the term of `index`.
    pub(crate) fn compact(&mut self, index: Index) -> Term {
        assert!(index <= self.applied_index, "compacting unapplied entries");
        assert!(
            index >= self.snapshot_index,
            "compacting below the snapshot"
        );
        let term = self.term(index).expect("an applied entry is held");
        self.snapshot_index = index;
        self.snapshot_term = term;
        term
    }

    /// A snapshot of the leader's state machine up to `(index, term)`, beyond the commit index,
    /// replaces the log up to it. A suffix that agrees with it (the log holds `(index, term)`)
    /// is kept; otherwise the whole log goes (docs/RAFT-CORE.md "Snapshots").
    pub(crate) fn install_snapshot(&mut self, index: Index, term: Term) -> InstalledSuffix {
        assert!(
            index > self.commit_index,
            "installing a snapshot already committed"
        );
        let consistent = self.matches(index, term);
        if consistent {
            self.unstable.drop_through(index);
        } else {
            let stored_above = self.written_handed_out_index.max(self.storage.last_index()) > index;
            if stored_above {
                self.pending_truncate_from = Some(
                    self.pending_truncate_from
                        .map_or(index + 1, |old| old.min(index + 1)),
                );
            }
            self.unstable.drop_through(index);
            self.unstable.truncate_from(index + 1);
            self.persisted_index = self.persisted_index.min(index);
        }
        self.written_handed_out_index = self.written_handed_out_index.max(index);
        if !consistent {
            self.written_handed_out_index = index;
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.commit_index = index;
        self.apply_handed_out_index = self.apply_handed_out_index.max(index);
        self.installing_snapshot = Some(index);
        if consistent {
            InstalledSuffix::Kept
        } else {
            InstalledSuffix::Discarded
        }
    }

    /// The driver persisted the installed snapshot and replaced its state machine with it.
    pub(crate) fn snapshot_installed(&mut self, index: Index) -> bool {
        if self.installing_snapshot != Some(index) {
            return false;
        }
        self.installing_snapshot = None;
        self.applied_index = self.applied_index.max(index);
        self.persisted_index = self.persisted_index.max(index);
        true
    }

    pub(crate) fn installing_snapshot(&self) -> Option<Index> {
        self.installing_snapshot
    }

    pub(crate) fn storage(&self) -> &L {
        &self.storage
    }

    pub(crate) fn storage_mut(&mut self) -> &mut L {
        &mut self.storage
    }

    pub(crate) fn into_storage(self) -> L {
        self.storage
    }

    pub(crate) fn first_index(&self) -> Index {
        self.storage.first_index().max(self.snapshot_index + 1)
    }

    pub(crate) fn last_index(&self) -> Index {
        self.unstable.last_index()
    }

    pub(crate) fn commit_index(&self) -> Index {
        self.commit_index
    }

    pub(crate) fn applied_index(&self) -> Index {
        self.applied_index
    }

    pub(crate) fn persisted_index(&self) -> Index {
        self.persisted_index
    }

    /// Term of the entry at `index`; index 0 has term 0, the snapshot's last entry its term;
    /// `None` when not held (compacted, or beyond the last entry).
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        if index < self.snapshot_index {
            return None;
        }
        if index >= self.unstable.offset() {
            return self.unstable.term(index);
        }
        self.storage.term(index)
    }

    pub(crate) fn last_term(&self) -> Term {
        self.term(self.last_index())
            .expect("the last entry is held")
    }

    pub(crate) fn matches(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Entries in `from..to_exclusive` within `max_bytes` (at least one of a non-empty range).
    pub(crate) fn entries(&self, from: Index, to_exclusive: Index, max_bytes: u64) -> Vec<Entry> {
        assert!(from >= self.first_index() && to_exclusive <= self.last_index() + 1);
        if from >= to_exclusive {
            return Vec::new();
        }
        let offset = self.unstable.offset();
        let mut taken = if from < offset {
            self.storage
                .entries(from, to_exclusive.min(offset), max_bytes)
        } else {
            Vec::new()
        };
        let mut used_bytes: u64 = taken.iter().map(Entry::size_bytes).sum();
        let next = from + taken.len() as Index;
        // Continue into the unstable part only when the stable part was read to its end.
        if next >= offset && next < to_exclusive {
            for entry in self.unstable.slice(next, to_exclusive) {
                if !taken.is_empty() && used_bytes + entry.size_bytes() > max_bytes {
                    break;
                }
                used_bytes += entry.size_bytes();
                taken.push(entry.clone());
            }
        }
        taken
    }

    /// The leader appends its own new entries.
    pub(crate) fn append(&mut self, entries: &[Entry]) {
        self.unstable.append(entries);
    }

    /// A follower accepted `entries` after a matching prev entry: skip those it already has,
    /// truncate at the first conflict, append the rest. Returns the first index written.
    pub(crate) fn append_after_match(&mut self, entries: &[Entry]) -> Option<Index> {
        let conflict = entries
            .iter()
            .position(|entry| !self.matches(entry.index, entry.term))?;
        let first_new = entries[conflict].index;
        if first_new <= self.last_index() {
            self.truncate_from(first_new);
        }
        self.unstable.append(&entries[conflict..]);
        Some(first_new)
    }

    fn truncate_from(&mut self, from: Index) {
        assert!(
            from > self.commit_index,
            "truncating committed entry {from}"
        );
        let written = self.written_handed_out_index.max(self.storage.last_index());
        if from <= written {
            self.pending_truncate_from =
                Some(self.pending_truncate_from.map_or(from, |old| old.min(from)));
        }
        self.unstable.truncate_from(from);
        self.persisted_index = self.persisted_index.min(from - 1);
        self.written_handed_out_index = self.written_handed_out_index.min(from - 1);
    }

    /// Raises the commit index (never lowers it).
    pub(crate) fn commit_to(&mut self, index: Index) -> bool {
        if index <= self.commit_index {
            return false;
        }
        assert!(
            index <= self.last_index(),
            "commit {index} beyond last {}",
            self.last_index()
        );
        self.commit_index = index;
        true
    }

    /// The driver made everything up to `(index, term)` durable. Ignored when that entry has
    /// since been replaced (the write it reports is stale).
    pub(crate) fn persisted_to(&mut self, index: Index, term: Term) -> bool {
        if !self.matches(index, term) || index > self.written_handed_out_index {
            return false;
        }
        if index >= self.unstable.offset() {
            self.unstable.persisted_to(index);
        }
        if index > self.persisted_index {
            self.persisted_index = index;
            return true;
        }
        false
    }

    pub(crate) fn applied_to(&mut self, index: Index) {
        if index <= self.applied_index {
            return; // entries handed out before an installed snapshot that covers them
        }
        assert!(
            index <= self.apply_handed_out_index,
            "applied {index} beyond what was handed out ({})",
            self.apply_handed_out_index
        );
        self.applied_index = self.applied_index.max(index);
    }

    /// Entries to write and the truncation before them, handed out once.
    pub(crate) fn take_entries_to_write(&mut self) -> (Option<Index>, Vec<Entry>) {
        let truncate = self.pending_truncate_from.take();
        let from = self.written_handed_out_index + 1;
        let last = self.last_index();
        if from > last {
            return (truncate, Vec::new());
        }
        let entries = self.unstable.slice(from, last + 1).to_vec();
        self.written_handed_out_index = last;
        (truncate, entries)
    }

    /// Committed entries not yet handed out, up to `max_bytes`.
    pub(crate) fn take_committed_to_apply(&mut self, max_bytes: u64) -> Vec<Entry> {
        let from = self.apply_handed_out_index + 1;
        if from > self.commit_index {
            return Vec::new();
        }
        let entries = self.entries(from, self.commit_index + 1, max_bytes);
        self.apply_handed_out_index += entries.len() as Index;
        entries
    }

    pub(crate) fn has_work(&self) -> bool {
        self.pending_truncate_from.is_some()
            || self.written_handed_out_index < self.last_index()
            || self.apply_handed_out_index < self.commit_index
    }

    /// The first index of the run of entries with the same term as `index`, not looking at or
    /// below the commit index (those never conflict with a leader).
    pub(crate) fn first_index_of_term_at(&self, index: Index) -> Index {
        let term = self.term(index);
        let mut first = index;
        while first > self.commit_index + 1
            && first > self.first_index()
            && self.term(first - 1) == term
        {
            first -= 1;
        }
        first
    }

    /// The last index at or below `at_most` whose term is at most `term` (leader side of the
    /// conflict hint).
    pub(crate) fn last_index_with_term_at_most(&self, term: Term, at_most: Index) -> Index {
        let mut index = at_most.min(self.last_index());
        while index > 0 {
            match self.term(index) {
                Some(found) if found <= term => return index,
                Some(_) => index -= 1,
                None => return index,
            }
        }
        0
    }

    /// The O(1) invariants of the positions; panics with a description on violation.
    pub(crate) fn validate(&self) {
        let first = self.first_index();
        assert!(
            first - 1 <= self.applied_index || self.installing_snapshot.is_some(),
            "applied below first"
        );
        assert!(
            self.snapshot_index <= self.commit_index,
            "snapshot beyond commit"
        );
        assert!(self.applied_index <= self.apply_handed_out_index);
        assert!(self.apply_handed_out_index <= self.commit_index);
        assert!(self.commit_index <= self.last_index(), "commit beyond last");
        assert!(self.persisted_index <= self.written_handed_out_index);
        assert!(self.written_handed_out_index <= self.last_index());
        assert!(
            self.unstable.offset() - 1 <= self.storage.last_index()
                || self.installing_snapshot.is_some(),
            "the driver reported entries persisted that the RaftLog does not hold"
        );
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::entry::EntryKind;
    use crate::memory_log::MemoryLog;

    fn entry(index: Index, term: Term, payload_bytes: usize) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Data,
            payload: Bytes::from(vec![0u8; payload_bytes]),
        }
    }

    proptest::proptest! {
        /// Reads spanning the stable and unstable parts return a non-empty, contiguous prefix of
        /// the range within `max_bytes` (one entry may exceed it alone).
        #[test]
        fn entries_across_stable_and_unstable_are_a_bounded_prefix(
            sizes in proptest::collection::vec(0usize..50, 2..30),
            stable_count in 0usize..30,
            from_offset in 0usize..30,
            max_bytes in 1u64..400,
        ) {
            let stable_count = stable_count.min(sizes.len());
            let all: Vec<Entry> = sizes.iter().enumerate().map(|(i, &size)| entry(i as Index + 1, 1, size)).collect();
            let mut storage = MemoryLog::new();
            storage.append(&all[..stable_count]);
            let mut log = ReplicatedLog::new(storage, 0, (0, 0));
            log.append(&all[stable_count..]);
            let from = (from_offset % sizes.len()) as Index + 1;
            let taken = log.entries(from, all.len() as Index + 1, max_bytes);
            proptest::prop_assert!(!taken.is_empty());
            for (position, entry) in taken.iter().enumerate() {
                proptest::prop_assert_eq!(entry, &all[from as usize - 1 + position]);
            }
            let bytes: u64 = taken.iter().map(Entry::size_bytes).sum();
            proptest::prop_assert!(taken.len() == 1 || bytes <= max_bytes);
            let next = from as usize - 1 + taken.len();
            if next < all.len() {
                proptest::prop_assert!(bytes + all[next].size_bytes() > max_bytes, "stopped early");
            }
        }
    }

    #[test]
    fn a_truncation_below_what_was_written_is_handed_out_first() {
        let mut storage = MemoryLog::new();
        storage.append(&[entry(1, 1, 0), entry(2, 1, 0), entry(3, 1, 0)]);
        let mut log = ReplicatedLog::new(storage, 0, (0, 0));
        assert_eq!(
            log.append_after_match(&[entry(2, 1, 0), entry(3, 2, 0)]),
            Some(3)
        );
        let (truncate, entries) = log.take_entries_to_write();
        assert_eq!((truncate, entries.len(), entries[0].term), (Some(3), 1, 2));
        assert_eq!(
            log.persisted_index(),
            2,
            "the replaced entry is no longer durable"
        );
        assert!(
            !log.persisted_to(3, 1),
            "a stale report of the replaced entry is ignored"
        );
        log.storage_mut().write(truncate, &entries);
        assert!(log.persisted_to(3, 2));
        assert_eq!(log.persisted_index(), 3);
        log.validate();
    }
}
