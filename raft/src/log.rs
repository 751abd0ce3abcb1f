//! `RaftLog`: how the core reads the stable (written) part of its log.
//!
//! The trait is read-only: the driver writes, following `Ready`. The node implements it over
//! keel-storage's segment log; the simulator and tests over memory (`MemoryLog`).
//!
//! Contract: the log has no holes; `first_index() <= last_index() + 1`; entries the
//! driver appended are readable as soon as `append` returns, but durable only after the sync
//! it reports through `on_persisted`. The core keeps entries it has not seen persisted in its
//! own memory (`Unstable`) and never reads them back from here.

use crate::entry::{Entry, Index, Term};

pub trait RaftLog {
    /// The first index still held (1 for a log never compacted).
    fn first_index(&self) -> Index;
    /// The last index held; `first_index() - 1` when empty.
    fn last_index(&self) -> Index;
    /// The term of the entry at `index`, `None` outside `first_index()..=last_index()`.
    fn term(&self, index: Index) -> Option<Term>;
    /// Entries in `from..to_exclusive`, stopping once `max_bytes` is reached but always
    /// returning at least one entry of a non-empty range. Asserts the range is held.
    fn entries(&self, from: Index, to_exclusive: Index, max_bytes: u64) -> Vec<Entry>;
}
