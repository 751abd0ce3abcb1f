//! `Unstable`: entries the core has appended but not yet seen persisted (etcd `log_unstable.go`).
//!
//! ```text
//!   stable (RaftLog)        unstable
//!   [first ..= offset-1]    [offset ..= offset+len-1]
//!                           |-- handed out --|-- not yet handed to the driver --|
//! ```
//!
//! Entries leave when the driver reports them persisted; until then reads come from here, even
//! for entries the driver has already written, so a later truncation is always visible.

use crate::entry::{Entry, Index, Term};

#[derive(Debug)]
pub(crate) struct Unstable {
    /// Index of `entries[0]` (or of the next entry when empty).
    offset: Index,
    entries: Vec<Entry>,
}

impl Unstable {
    pub(crate) fn new(offset: Index) -> Unstable {
        assert!(offset >= 1);
        Unstable {
            offset,
            entries: Vec::new(),
        }
    }

    pub(crate) fn offset(&self) -> Index {
        self.offset
    }

    pub(crate) fn last_index(&self) -> Index {
        self.offset + self.entries.len() as Index - 1
    }

    pub(crate) fn entry(&self, index: Index) -> Option<&Entry> {
        if index < self.offset {
            return None;
        }
        self.entries.get((index - self.offset) as usize)
    }

    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        self.entry(index).map(|entry| entry.term)
    }

    /// Entries in `from..to_exclusive`; the range must lie inside the unstable part.
    pub(crate) fn slice(&self, from: Index, to_exclusive: Index) -> &[Entry] {
        assert!(
            self.offset <= from && from <= to_exclusive && to_exclusive <= self.last_index() + 1
        );
        &self.entries[(from - self.offset) as usize..(to_exclusive - self.offset) as usize]
    }

    /// Appends entries that directly follow the last one.
    pub(crate) fn append(&mut self, entries: &[Entry]) {
        if let Some(first) = entries.first() {
            assert_eq!(
                first.index,
                self.last_index() + 1,
                "unstable appends must be contiguous"
            );
        }
        self.entries.extend_from_slice(entries);
    }

    /// Drops every entry at `from` and above. If `from` is below the offset the stable part is
    /// being replaced too: the unstable part restarts at `from`.
    pub(crate) fn truncate_from(&mut self, from: Index) {
        if from <= self.offset {
            self.offset = from;
            self.entries.clear();
        } else {
            self.entries.truncate((from - self.offset) as usize);
        }
    }

    /// Forgets entries up to `index` inclusive, held or not: a snapshot covers them. The
    /// unstable part then starts at `index + 1` at the earliest.
    pub(crate) fn drop_through(&mut self, index: Index) {
        if index < self.offset {
            return;
        }
        let drop = ((index + 1 - self.offset) as usize).min(self.entries.len());
        self.entries.drain(..drop);
        self.offset = index + 1;
    }

    /// Forgets entries up to `index` inclusive: the driver made them durable in the RaftLog.
    pub(crate) fn persisted_to(&mut self, index: Index) {
        assert!(index >= self.offset && index <= self.last_index());
        self.entries.drain(..=(index - self.offset) as usize);
        self.offset = index + 1;
    }
}
