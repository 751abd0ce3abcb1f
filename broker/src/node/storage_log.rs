//! A Raft group's durable state on disk: its segment log (keel-storage) seen through the core's
//! [`RaftLog`] trait, its hard state, and the abstain marker the core needs across restarts.
//!
//! Layout of a group directory (docs/FORMAT.md "Node data directory"):
//! `hard_state`, `abstain` (a small record), and `log/` with the segments.
//!
//! Zero-copy reads are only safe for entries that can never be truncated: a `Log` refuses to
//! rewrite bytes it handed out. The core reads both committed entries (to apply them) and
//! uncommitted ones (to replicate them), so the driver tells this log the commit index before
//! each `ready()`, and only entries at or below it are handed out as slices of the map; the rest
//! are copied.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use keel_storage::atomic_file::{load_record, store_record};
use keel_storage::hard_state::HardState as StoredHardState;
use keel_storage::io::RealIo;
use keel_storage::{Log, LogOptions, StorageError};

use keel_raft::{Entry, EntryKind, HardState, Index, RaftLog, Term};

const ABSTAIN_FILE_NAME: &str = "abstain";
const ABSTAIN_MAGIC: [u8; 4] = *b"KABS";

/// The segment log of one group, as the Raft core reads it.
pub struct StorageLog {
    log: Log,
    /// Highest index that is committed, so safe to hand out without copying.
    pinnable_up_to: Cell<Index>,
}

impl StorageLog {
    pub fn new(log: Log) -> StorageLog {
        StorageLog {
            log,
            pinnable_up_to: Cell::new(0),
        }
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn log_mut(&mut self) -> &mut Log {
        &mut self.log
    }

    /// Entries at or below `index` are committed and may be handed out zero-copy.
    pub fn set_committed(&self, index: Index) {
        self.pinnable_up_to.set(index);
    }
}

impl RaftLog for StorageLog {
    fn first_index(&self) -> Index {
        self.log.first_index()
    }

    fn last_index(&self) -> Index {
        self.log.last_index()
    }

    fn term(&self, index: Index) -> Option<Term> {
        if index < self.log.first_index() || index > self.log.last_index() {
            return None;
        }
        match self.log.term_at(index) {
            Ok(term) => Some(term),
            Err(error) => fatal_storage_error("reading a term", &error),
        }
    }

    fn entries(&self, from: Index, to_exclusive: Index, max_bytes: u64) -> Vec<Entry> {
        let pinnable_end = self.pinnable_up_to.get().saturating_add(1);
        let result = if to_exclusive <= pinnable_end {
            self.log.read(from, to_exclusive, max_bytes)
        } else if from >= pinnable_end {
            self.log.read_copied(from, to_exclusive, max_bytes)
        } else {
            // Straddles the commit index: the committed part zero-copy, the rest copied.
            self.log
                .read(from, pinnable_end, max_bytes)
                .and_then(|mut head| {
                    let head_bytes: u64 = head.iter().map(|entry| entry.payload.len() as u64).sum();
                    if head.len() as u64 == pinnable_end - from && head_bytes < max_bytes {
                        head.extend(self.log.read_copied(
                            pinnable_end,
                            to_exclusive,
                            max_bytes - head_bytes,
                        )?);
                    }
                    Ok(head)
                })
        };
        match result {
            Ok(stored) => stored
                .into_iter()
                .map(|entry| Entry {
                    index: entry.index,
                    term: entry.term,
                    // Storage keeps whatever byte it was given; a byte no Keel writes is
                    // corruption that passed the CRC, which only a bug can produce.
                    kind: EntryKind::from_u8(entry.kind).unwrap_or_else(|| {
                        fatal_message(&format!(
                            "entry {} has unknown kind byte {}",
                            entry.index, entry.kind
                        ))
                    }),
                    payload: entry.payload,
                })
                .collect(),
            Err(error) => fatal_storage_error("reading entries", &error),
        }
    }
}

/// A storage error the node cannot continue after (DESIGN.md 3: after a failed write or fsync
/// the page cache state is unknown, and a corrupt committed entry cannot be served). The node
/// stops: a restart recovers from what is durable, and peers carry on without it.
pub fn fatal_storage_error(context: &str, error: &StorageError) -> ! {
    fatal_message(&format!("storage error while {context}: {error}"))
}

pub fn fatal_message(message: &str) -> ! {
    tracing::error!("fatal: {message}; the node stops");
    eprintln!("fatal: {message}");
    std::process::exit(70)
}

/// Paths of one group's files.
#[derive(Debug, Clone)]
pub struct GroupDir {
    pub dir: PathBuf,
}

/// What opening a group's directory found.
pub struct OpenedGroup {
    pub log: StorageLog,
    pub hard_state: HardState,
    /// Stored and freshly reported abstain index, the larger of the two (docs/DECISIONS.md).
    pub abstain_until_index: Option<Index>,
}

impl GroupDir {
    pub fn new(dir: PathBuf) -> GroupDir {
        GroupDir { dir }
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// Opens (creating if needed) the group's log, hard state and abstain marker. A recovery
    /// cut that may have lost acknowledged entries is stored as the abstain marker before the
    /// group runs, so a second crash cannot hide it.
    pub fn open(&self, options: LogOptions) -> Result<OpenedGroup, StorageError> {
        std::fs::create_dir_all(self.log_dir())
            .map_err(|error| StorageError::io("create dir", self.log_dir(), error))?;
        let (log, report) = Log::open(&self.log_dir(), options)?;
        let hard_state = StoredHardState::load(&RealIo, &self.dir)?.unwrap_or_default();
        let stored_abstain = load_abstain(&self.dir)?;
        let reported = report.cut.and_then(|cut| cut.highest_index_beyond_cut);
        let abstain = match (stored_abstain, reported) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if abstain != stored_abstain {
            if let Some(index) = abstain {
                store_abstain(&self.dir, Some(index))?;
            }
        }
        // Reached already: the marker is spent.
        let abstain = abstain.filter(|&index| index > log.last_index());
        if abstain.is_none() && stored_abstain.is_some() {
            store_abstain(&self.dir, None)?;
        }
        Ok(OpenedGroup {
            log: StorageLog::new(log),
            hard_state: HardState {
                term: hard_state.term,
                vote: hard_state.vote,
            },
            abstain_until_index: abstain,
        })
    }

    pub fn store_hard_state(&self, hard_state: HardState) -> Result<(), StorageError> {
        StoredHardState {
            term: hard_state.term,
            vote: hard_state.vote,
        }
        .store(&RealIo, &self.dir)
    }

    /// Clears the abstain marker once the core no longer abstains.
    pub fn clear_abstain(&self) -> Result<(), StorageError> {
        store_abstain(&self.dir, None)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

fn load_abstain(dir: &Path) -> Result<Option<Index>, StorageError> {
    let Some(body) = load_record(&RealIo, dir, ABSTAIN_FILE_NAME, ABSTAIN_MAGIC)? else {
        return Ok(None);
    };
    match body.as_slice() {
        [] => Ok(None),
        bytes if bytes.len() == 8 => {
            let index = u64::from_le_bytes(bytes.try_into().expect("eight bytes"));
            Ok(Some(index))
        }
        _ => Err(StorageError::Corruption {
            path: dir.join(ABSTAIN_FILE_NAME),
            offset: 8,
            reason: format!("abstain record body of {} bytes", body.len()),
        }),
    }
}

fn store_abstain(dir: &Path, index: Option<Index>) -> Result<(), StorageError> {
    let body = index.map(u64::to_le_bytes);
    store_record(
        &RealIo,
        dir,
        ABSTAIN_FILE_NAME,
        ABSTAIN_MAGIC,
        body.as_ref().map_or(&[][..], |bytes| &bytes[..]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_storage::Entry as StorageEntry;

    fn append(log: &mut StorageLog, index: u64, payload: &[u8]) {
        log.log_mut()
            .append(&[StorageEntry {
                index,
                term: 1,
                kind: EntryKind::Data.as_u8(),
                payload,
                offset_key: None,
            }])
            .unwrap();
    }

    #[test]
    fn uncommitted_reads_are_copies_so_truncation_stays_legal() {
        let dir = tempfile::tempdir().unwrap();
        let group = GroupDir::new(dir.path().to_path_buf());
        let mut opened = group.open(LogOptions::default()).unwrap();
        for index in 1..=4 {
            append(&mut opened.log, index, b"entry");
        }
        opened.log.set_committed(2);
        let read = opened.log.entries(1, 5, u64::MAX);
        assert_eq!(read.len(), 4);
        // Entries 3 and 4 were copied, so cutting them is allowed (Log panics otherwise).
        opened.log.log_mut().truncate_suffix(3).unwrap();
        assert_eq!(opened.log.last_index(), 2);
    }

    #[test]
    fn abstain_marker_survives_until_the_log_reaches_it() {
        let dir = tempfile::tempdir().unwrap();
        store_abstain(dir.path(), Some(7)).unwrap();
        let group = GroupDir::new(dir.path().to_path_buf());
        let opened = group.open(LogOptions::default()).unwrap();
        assert_eq!(opened.abstain_until_index, Some(7));
        drop(opened);
        let opened = group.open(LogOptions::default()).unwrap();
        assert_eq!(
            opened.abstain_until_index,
            Some(7),
            "a reopen must not forget it"
        );
    }
}
