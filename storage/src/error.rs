//! The storage engine's errors, split by what the caller can do about them.
//!
//! - Retriable by the caller: [`StorageError::DiskFull`].
//! - Bad input, log unchanged: `NonContiguous`, `TermRegression`, `EntryTooLarge`,
//!   `OutOfRange`, `InvalidOptions`.
//! - Fatal for the log (stop serving it): `Io` from a write or fsync, `Corruption`, `Poisoned`,
//!   `UnsupportedFormat` (another build's data).

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O call failed. After a failed write or fsync the log is poisoned: the page cache
    /// state is unknown and retrying could silently lose data (docs/OPERATIONS.md
    /// "When a disk fails").
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// No space to create a segment (or another file). Nothing was written; reads continue.
    #[error("disk full creating {path}")]
    DiskFull { path: PathBuf },

    /// A segment of another format version: written by another build of Keel. Nothing is
    /// changed; the node stops rather than guess (docs/DECISIONS.md "One batch format").
    #[error(
        "{path} is segment format version {found}; this build reads version {supported} only \
         (version 1 held Keel's pre-Kafka record batches: start from an empty data directory)"
    )]
    UnsupportedFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    /// Bytes on disk fail their checksum or their framing where no torn tail can explain it.
    #[error("corruption in {path} at byte {offset}: {reason}")]
    Corruption {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// An append did not continue the log: the first entry must have index `expected`.
    #[error("non-contiguous append: expected index {expected}, got {got}")]
    NonContiguous { expected: u64, got: u64 },

    /// An append would lower the term: entry `index` has term `term` below `previous_term`.
    #[error("term regression at index {index}: term {term} after term {previous_term}")]
    TermRegression {
        index: u64,
        term: u64,
        previous_term: u64,
    },

    /// An entry's payload is larger than `max_entry_bytes` allows.
    #[error("entry of {bytes} bytes exceeds max_entry_bytes {max_bytes}")]
    EntryTooLarge { bytes: u64, max_bytes: u64 },

    /// An index outside `[first_index, last_index]` (or a range outside what the call allows).
    #[error("index {index} out of range [{first}, {last}]")]
    OutOfRange { index: u64, first: u64, last: u64 },

    /// Options that cannot work together, or a file name that is not ours.
    #[error("invalid options: {0}")]
    InvalidOptions(String),

    /// A previous write or fsync failed; the log refuses all further writes.
    #[error("log is poisoned by an earlier I/O failure: {0}")]
    Poisoned(String),
}

impl StorageError {
    /// Wraps an I/O error, turning "no space" into the typed [`StorageError::DiskFull`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull {
            return StorageError::DiskFull { path };
        }
        StorageError::Io { op, path, source }
    }

    /// True when the caller may retry later without restarting the node.
    pub fn is_retriable(&self) -> bool {
        matches!(self, StorageError::DiskFull { .. })
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
