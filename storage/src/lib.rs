//! keel-storage: the crash-safe, append-only segment log every Raft group keeps its entries in,
//! plus the two small files beside it (hard state and snapshots).
//!
//! It owns bytes on disk and nothing else: no networking, no async runtime, no consensus
//! logic. All file I/O goes through the [`io::Io`] trait so that tests can swap in a
//! fault-injecting layer that models power loss (docs/DECISIONS.md "What a power loss may do").

pub mod atomic_file;
pub mod error;
pub mod faulty_io;
pub mod frame;
pub mod hard_state;
mod index;
pub mod io;
pub mod limits;
mod log;
mod mmap;
pub mod options;
mod recovery;
pub mod segment;
pub mod snapshot;

pub use error::{Result, StorageError};
pub use log::{Cut, CutReason, Entry, Log, PendingSync, RecoveryReport, SegmentSpan, StoredEntry};
pub use options::{FsyncPolicy, LogOptions, OffsetKeyFn};
