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
use keel_storage::{Log, LogOptions, OffsetKeyFn, StorageError};

use keel_raft::{Entry, EntryKind, HardState, Index, RaftLog, Snapshot, Term};
use keel_storage::{Entry as StorageEntry, PendingSync};
use tokio::task::JoinHandle;

use crate::disk::DiskSpace;
use crate::group::driver::{DriverLog, WriteRefused};

const ABSTAIN_FILE_NAME: &str = "abstain";
const ABSTAIN_MAGIC: [u8; 4] = *b"KABS";

/// The segment log of one group, as the Raft core reads it and the group driver writes it
/// (the product's [`DriverLog`]).
pub struct StorageLog {
    log: Log,
    /// Highest index that is committed, so safe to hand out without copying.
    pinnable_up_to: Cell<Index>,
    /// Where the hard state and the abstain marker live.
    dir: GroupDir,
    /// Partition groups record each Data entry's base offset in the `.offsets` index; this reads
    /// it (the partition module owns the entry layout).
    offset_key: Option<OffsetKeyFn>,
    /// The fdatasync running on the blocking pool, if any.
    sync_task: Option<SyncTask>,
    /// Partition groups: the node's free space, below whose line a follower refuses data
    /// entries (disk.rs). `None` for group 0, which writes into the reserve.
    data_guard: Option<DataGuard>,
}

/// What a partition's log checks before taking data entries.
struct DataGuard {
    disk: std::sync::Arc<DiskSpace>,
    /// A leader takes what it proposed (its produce path refuses new data below the line, and
    /// what it already proposed is bounded by its uncommitted limit), so its control entries
    /// never queue behind refused data of its own.
    leading: bool,
}

/// An fdatasync on the blocking pool; it hands the sync back with its result.
pub type SyncTask = JoinHandle<(PendingSync, keel_storage::Result<()>)>;

impl StorageLog {
    pub fn new(log: Log, dir: GroupDir) -> StorageLog {
        StorageLog {
            log,
            pinnable_up_to: Cell::new(0),
            dir,
            offset_key: None,
            sync_task: None,
            data_guard: None,
        }
    }

    /// A partition's log: data entries wait while the node is below its free-space line, unless
    /// this replica leads (see [`DataGuard`]).
    pub fn guard_data(&mut self, disk: std::sync::Arc<DiskSpace>) {
        self.data_guard = Some(DataGuard {
            disk,
            leading: false,
        });
    }

    /// Whether this replica leads its group (the data guard lets a leader's entries through).
    pub fn set_leading(&mut self, leading: bool) {
        if let Some(guard) = &mut self.data_guard {
            guard.leading = leading;
        }
    }

    fn refuses_data(&self, entries: &[Entry]) -> bool {
        self.data_guard.as_ref().is_some_and(|guard| {
            !guard.leading
                && !guard.disk.accepts_data()
                && entries.iter().any(|entry| entry.kind == EntryKind::Data)
        })
    }

    /// Whether this is a partition's log on a node below its free-space line: its leader should
    /// hand over to a replica that can take data.
    pub fn below_free_space_line(&self) -> bool {
        self.data_guard
            .as_ref()
            .is_some_and(|guard| !guard.disk.accepts_data())
    }

    fn note_full(&self) {
        if let Some(guard) = &self.data_guard {
            guard.disk.note_full();
        }
    }

    /// Index each Data entry's base offset (partition groups), so fetches find offsets.
    pub fn record_offsets(&mut self, offset_key: Option<OffsetKeyFn>) {
        self.offset_key = offset_key;
    }

    /// Waits for the running sync to end. Cancel-safe: the sync keeps running and a later call
    /// picks it up. Pending forever when none runs.
    pub async fn sync_finished(&mut self) -> SyncDone {
        match self.sync_task.as_mut() {
            Some(task) => SyncDone(task.await),
            None => std::future::pending().await,
        }
    }

    /// Hands a finished sync to the log. Fatal on a failed sync: the node stops rather than
    /// acknowledge what may not be on disk.
    fn account_sync(&mut self, done: SyncDone) {
        let (sync, result) = done
            .0
            .unwrap_or_else(|error| fatal_message(&format!("the sync task failed: {error}")));
        let counted = self
            .log
            .finish_sync(sync, result)
            .unwrap_or_else(|error| fatal_storage_error("syncing the log", &error));
        if !counted {
            // The log was rewritten under the sync (the driver settles before truncating, so this
            // is not expected): it proves nothing, so make everything durable here instead of
            // letting an acknowledgement claim what no sync covered.
            debug_assert!(false, "a sync overtaken by a rewrite of the log");
            tokio::task::block_in_place(|| self.log.sync_now())
                .unwrap_or_else(|error| fatal_storage_error("syncing the log", &error));
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

/// A finished sync, from [`StorageLog::sync_finished`] to [`DriverLog::finish_sync`].
pub struct SyncDone(Result<(PendingSync, keel_storage::Result<()>), tokio::task::JoinError>);

/// Storage errors are fatal for the node (see [`fatal_storage_error`]). Calls that may wait on
/// the disk (an fsync, a segment roll) run inside `block_in_place`, so the worker's other tasks
/// move elsewhere meanwhile.
impl DriverLog for StorageLog {
    type SyncDone = SyncDone;

    fn note_committed(&mut self, index: Index) {
        self.set_committed(index);
    }

    fn store_hard_state(&mut self, hard_state: HardState) -> Result<(), WriteRefused> {
        match tokio::task::block_in_place(|| self.dir.store_hard_state(hard_state)) {
            Ok(()) => Ok(()),
            Err(error) if error.is_retriable() => {
                tracing::warn!(%error, "hard state not stored: the disk is full");
                Err(WriteRefused)
            }
            Err(error) => fatal_storage_error("storing hard state", &error),
        }
    }

    fn truncate_suffix(&mut self, from: Index) {
        // The core may cut entries it never handed to storage.
        if from <= self.log.last_index() {
            tokio::task::block_in_place(|| self.log.truncate_suffix(from))
                .unwrap_or_else(|error| fatal_storage_error("truncating the log", &error));
        }
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), WriteRefused> {
        if self.refuses_data(entries) {
            return Err(WriteRefused);
        }
        let offset_key = self.offset_key;
        let entries: Vec<StorageEntry<'_>> = entries
            .iter()
            .map(|entry| StorageEntry {
                index: entry.index,
                term: entry.term,
                kind: entry.kind.as_u8(),
                payload: &entry.payload,
                offset_key: offset_key.and_then(|key| key(entry.kind.as_u8(), &entry.payload)),
            })
            .collect();
        // A positioned write into the page cache runs on this worker: cheaper than handing the
        // worker to another thread. A batch that rolls the segment creates and seals files,
        // with fsyncs: that one goes off the worker.
        let appended = if self.log.fits_in_active(&entries) {
            self.log.append(&entries)
        } else {
            tokio::task::block_in_place(|| self.log.append(&entries))
        };
        match appended {
            Ok(()) => {
                if let Some(guard) = &self.data_guard {
                    let bytes = entries.iter().map(|entry| entry.payload.len() as u64).sum();
                    guard.disk.note_written(bytes);
                }
                Ok(())
            }
            // Nothing was written (the disk is reserved before every write): offered again later.
            Err(error) if error.is_retriable() => {
                self.note_full();
                Err(WriteRefused)
            }
            Err(error) => fatal_storage_error("appending to the log", &error),
        }
    }

    fn begin_sync(&mut self) -> bool {
        debug_assert!(self.sync_task.is_none(), "one sync at a time");
        match self.log.begin_sync() {
            Ok(Some(sync)) => {
                self.sync_task = Some(tokio::task::spawn_blocking(move || {
                    let started = std::time::Instant::now();
                    let result = sync.run();
                    metrics::histogram!("keel_storage_fsync_seconds")
                        .record(started.elapsed().as_secs_f64());
                    (sync, result)
                }));
                true
            }
            Ok(None) => false,
            Err(error) => fatal_storage_error("starting a sync", &error),
        }
    }

    fn finish_sync(&mut self, done: SyncDone) {
        debug_assert!(self.sync_task.is_some(), "a sync was running");
        self.sync_task = None;
        self.account_sync(done);
    }

    fn settle(&mut self, unsynced: bool) {
        if let Some(mut task) = self.sync_task.take() {
            let done = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(&mut task)
            });
            self.account_sync(SyncDone(done));
        }
        // Only when something is unsynced: a sync of a clean log still rewrites the index files.
        // Under `interval` and `never` this syncs only as the policy says.
        if unsynced {
            tokio::task::block_in_place(|| self.log.sync())
                .unwrap_or_else(|error| fatal_storage_error("syncing the log", &error));
        }
    }

    fn clear_abstain(&mut self) {
        tokio::task::block_in_place(|| self.dir.clear_abstain())
            .unwrap_or_else(|error| fatal_storage_error("clearing abstain marker", &error));
    }

    /// A snapshot from the leader: durable first, then the log keeps only what follows it (the
    /// entries after it if the log agrees at its index, else nothing: a reset to the index
    /// after it). A crash in between is finished by [`GroupDir::open`].
    fn write_snapshot(&mut self, snapshot: &Snapshot) {
        tokio::task::block_in_place(|| {
            self.dir.write_snapshot(snapshot)?;
            let through = snapshot.meta.last_included_index;
            if self.term(through) == Some(snapshot.meta.last_included_term) {
                self.drop_through(through)
            } else {
                self.log.reset(through + 1)
            }
        })
        .unwrap_or_else(|error| fatal_storage_error("installing a snapshot", &error));
    }
}

impl StorageLog {
    /// Writes a snapshot this replica took (`RaftNode::compact` made it from the state machine
    /// folded up to its index), durably; the entries it covers go with
    /// [`StorageLog::drop_through`] afterwards. An error leaves the previous snapshot in place.
    pub fn write_snapshot_file(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.dir.write_snapshot(snapshot)
    }

    /// Deletes every segment whose entries are all at or below `through`. An active segment that
    /// ends at or below it is rolled first, so a quiet partition's last segment can go too.
    pub fn drop_through(&mut self, through: Index) -> Result<(), StorageError> {
        if self.log.last_index() <= through {
            self.log.roll()?;
        }
        self.log.compact_prefix(through)
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

/// A storage error the node cannot continue after (docs/OPERATIONS.md "When a disk fails": after a
/// failed write or fsync the page cache state is unknown, and a corrupt committed entry cannot be
/// served). The node stops: a restart recovers from what is durable, and peers carry on without
/// it.
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
    /// The latest snapshot: the state machine restarts from it and the log from the entry
    /// after it.
    pub snapshot: Option<Snapshot>,
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
        let (mut log, report) = Log::open(&self.log_dir(), options)?;
        keel_storage::snapshot::remove_temp_files(&RealIo, &self.dir)?;
        let snapshot = self.load_snapshot()?;
        if let Some(snapshot) = &snapshot {
            // An install that stopped between its snapshot and its log reset left a log that
            // disagrees with the snapshot (or ends before it): finish it.
            let through = snapshot.meta.last_included_index;
            if log.first_index() > through + 1 {
                return Err(StorageError::Corruption {
                    path: self.log_dir(),
                    offset: 0,
                    reason: format!(
                        "the log starts at {} after a snapshot through {through}: entries are missing",
                        log.first_index()
                    ),
                });
            }
            let agrees = log.last_index() >= through
                && (through < log.first_index()
                    || log.term_at(through).ok() == Some(snapshot.meta.last_included_term));
            if !agrees {
                tracing::warn!(dir = %self.dir.display(), through, "finishing an interrupted snapshot install");
                log.reset(through + 1)?;
            }
        }
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
            log: StorageLog::new(log, self.clone()),
            hard_state: HardState {
                term: hard_state.term,
                vote: hard_state.vote,
            },
            snapshot,
            abstain_until_index: abstain,
        })
    }

    /// The newest snapshot file, decoded for the core (its configuration is postcard).
    fn load_snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        let Some(file) = keel_storage::snapshot::latest_snapshot(&RealIo, &self.dir)? else {
            return Ok(None);
        };
        let membership = postcard::from_bytes(&file.meta().configuration).map_err(|error| {
            StorageError::Corruption {
                path: file.path().to_path_buf(),
                offset: 32,
                reason: format!("snapshot configuration does not decode: {error}"),
            }
        })?;
        let data = file.read_all_data()?;
        Ok(Some(Snapshot {
            meta: keel_raft::SnapshotMeta {
                last_included_index: file.meta().last_included_index,
                last_included_term: file.meta().last_included_term,
                membership,
            },
            data: bytes::Bytes::from(data),
        }))
    }

    /// Writes `snapshot` durably under its final name, then removes older ones (docs/FORMAT.md
    /// "Snapshot files").
    pub fn write_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let configuration =
            postcard::to_allocvec(&snapshot.meta.membership).expect("a membership always encodes");
        let meta = keel_storage::snapshot::SnapshotMeta {
            last_included_index: snapshot.meta.last_included_index,
            last_included_term: snapshot.meta.last_included_term,
            configuration,
        };
        let io: std::sync::Arc<dyn keel_storage::io::Io> = std::sync::Arc::new(RealIo);
        let mut writer = keel_storage::snapshot::SnapshotWriter::create(io, &self.dir, meta)?;
        if let Err(error) = writer.write_chunk(&snapshot.data) {
            let _ = writer.abort();
            return Err(error);
        }
        writer.finish()?;
        keel_storage::snapshot::remove_older_than(
            &RealIo,
            &self.dir,
            snapshot.meta.last_included_index,
        )?;
        Ok(())
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
