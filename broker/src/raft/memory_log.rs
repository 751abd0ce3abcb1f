//! `MemoryLog`: a `RaftLog` in memory, for interaction tests and benchmarks. Writes are durable
//! at once (there is no crash to lose them); the simulator has its own disk model.

use crate::raft::entry::{Entry, Index, Term};
use crate::raft::log::RaftLog;

#[derive(Clone, Debug, Default)]
pub struct MemoryLog {
    /// `entries[0]` has index 1 (no compaction yet).
    entries: Vec<Entry>,
}

impl MemoryLog {
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    /// Appends entries that follow the last one (asserted).
    pub fn append(&mut self, entries: &[Entry]) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.last_index() + 1,
                "appends must be contiguous"
            );
            self.entries.push(entry.clone());
        }
    }

    /// Deletes every entry at `from` and above.
    pub fn truncate_suffix(&mut self, from: Index) {
        assert!(from >= 1);
        self.entries.truncate((from - 1) as usize);
    }

    /// Applies a Ready's log writes: the truncation, then the new entries.
    pub fn write(&mut self, truncate_from: Option<Index>, entries: &[Entry]) {
        if let Some(from) = truncate_from {
            self.truncate_suffix(from);
        }
        if let Some(first) = entries.first() {
            if first.index <= self.last_index() {
                self.truncate_suffix(first.index);
            }
        }
        self.append(entries);
    }
}

impl RaftLog for MemoryLog {
    fn first_index(&self) -> Index {
        1
    }

    fn last_index(&self) -> Index {
        self.entries.len() as Index
    }

    fn term(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return None;
        }
        self.entries
            .get((index - 1) as usize)
            .map(|entry| entry.term)
    }

    fn entries(&self, from: Index, to_exclusive: Index, max_bytes: u64) -> Vec<Entry> {
        assert!(from >= 1 && from <= to_exclusive && to_exclusive <= self.last_index() + 1);
        take_within_bytes(
            &self.entries[(from - 1) as usize..(to_exclusive - 1) as usize],
            max_bytes,
        )
    }
}

/// The longest prefix of `entries` within `max_bytes`, but at least one entry.
pub fn take_within_bytes(entries: &[Entry], max_bytes: u64) -> Vec<Entry> {
    let mut taken = Vec::new();
    let mut bytes = 0u64;
    for entry in entries {
        bytes += entry.size_bytes();
        if !taken.is_empty() && bytes > max_bytes {
            break;
        }
        taken.push(entry.clone());
    }
    taken
}
