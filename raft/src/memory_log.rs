//! `MemoryLog`: a `RaftLog` in memory, for interaction tests and benchmarks. Writes are durable
//! at once (there is no crash to lose them); the simulator has its own disk model.

use crate::entry::{Entry, Index, Term};
use crate::log::RaftLog;

#[derive(Clone, Debug)]
pub struct MemoryLog {
    /// Index of `entries[0]` (of the next entry when empty): 1 until a compaction.
    first_index: Index,
    entries: Vec<Entry>,
}

impl Default for MemoryLog {
    fn default() -> MemoryLog {
        MemoryLog {
            first_index: 1,
            entries: Vec::new(),
        }
    }
}

impl MemoryLog {
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    /// Discards every entry at or below `through` (a snapshot covers them). Past the last
    /// entry, the log becomes empty and continues at `through + 1` (an installed snapshot).
    pub fn compact(&mut self, through: Index) {
        if through < self.first_index {
            return;
        }
        let drop = ((through + 1 - self.first_index) as usize).min(self.entries.len());
        self.entries.drain(..drop);
        self.first_index = through + 1;
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
        let keep = from.saturating_sub(self.first_index) as usize;
        self.entries.truncate(keep);
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
        self.first_index
    }

    fn last_index(&self) -> Index {
        self.first_index + self.entries.len() as Index - 1
    }

    fn term(&self, index: Index) -> Option<Term> {
        if index < self.first_index {
            return None;
        }
        self.entries
            .get((index - self.first_index) as usize)
            .map(|entry| entry.term)
    }

    fn entries(&self, from: Index, to_exclusive: Index, max_bytes: u64) -> Vec<Entry> {
        assert!(
            from >= self.first_index
                && from <= to_exclusive
                && to_exclusive <= self.last_index() + 1
        );
        let offset = self.first_index;
        take_within_bytes(
            &self.entries[(from - offset) as usize..(to_exclusive - offset) as usize],
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
