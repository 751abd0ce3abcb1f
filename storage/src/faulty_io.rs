//! A fault-injecting [`Io`]: the real file system, plus a model of what a power loss may undo.
//!
//! [`FaultyIo`] performs every call on the real file system (so memory maps of its files work
//! exactly as in production) and keeps, beside it, what the disk would *not* yet be guaranteed
//! to hold:
//!
//! - per file, the content each 4 KiB page had at the last `sync_data` (recorded the first
//!   time the page is touched after that sync), the length at that sync, and the ordered list
//!   of writes and length changes since;
//! - per directory, the creates, renames and removes not yet covered by a `sync_dir`.
//!
//! [`FaultyIo::power_loss`] (called once every file handle is dropped) rewinds the real files
//! to one state a disk could be in after losing power, chosen by a [`PowerLossMode`] and the
//! caller's seeded RNG, then forgets its records: what is on disk now is the durable state.
//!
//! Simplifications, each chosen because it keeps the model small without hiding a bug class
//! the log can have:
//!
//! - The preallocation done by `create(path, len_bytes)` is durable together with the create
//!   (both are metadata a journaling file system commits with the directory sync); the file's
//!   data starts as `len_bytes` zeros.
//! - Directory creation (`create_dir_all`) is treated as durable at once.
//! - A removed or replaced file's bytes are kept in memory so the removal can be rolled back;
//!   writes to a file after it was removed are not tracked.
//! - After a failed `sync_data` the writes stay unsynced (a later successful sync makes them
//!   durable). Real kernels may drop them silently instead, which is why the log never retries;
//!   the tests check that it does not, rather than relying on the model to punish a retry.
//! - A rename counts as durable once every directory it touched has been synced after it.
//! - `sync_data` and `sync_dir` update the model and, unless built with
//!   [`FaultyIo::with_real_syncs`], skip the real fsync: the test machine never loses power,
//!   and simulations run many times faster without it.
//!
//! Faults besides power loss: [`FaultyIo::fail_next_sync`] (EIO, one shot),
//! [`FaultyIo::fail_writes_after`] (EIO), [`FaultyIo::disk_full`] (ENOSPC on `create` and
//! `allocate`, so `ErrorKind::StorageFull`) and [`FaultyIo::halt_after`] (every mutating call fails from then
//! on: with a power loss or a reopen after it, a crash between any two steps).
//!
//! Paths are compared after canonicalising their parent directory, so `dir/./x` and `dir/x`
//! name the same file.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use rand::Rng;

use crate::io::{Io, IoFile, RealIo};

/// The unit a disk writes back independently in [`PowerLossMode::RandomPages`].
pub const PAGE_BYTES: u64 = 4096;

/// What a power loss does to the writes that were not yet made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerLossMode {
    /// Every unsynced write and length change is lost.
    DropAll,
    /// Every unsynced write is lost except a random strict prefix of the last write to each
    /// file (a torn write; earlier unsynced writes are lost even though they were issued first).
    TornLast,
    /// Each dirty 4 KiB page independently keeps its newest content or its last synced content
    /// (write-back in any order); the length is either the synced or the current one.
    RandomPages,
    /// Writes reach the disk in the order they were issued and power fails part way: a random
    /// number of them survive whole, the next is torn at a random byte, the rest are lost.
    InOrderPrefix,
}

impl PowerLossMode {
    pub const ALL: [PowerLossMode; 4] = [
        PowerLossMode::DropAll,
        PowerLossMode::TornLast,
        PowerLossMode::RandomPages,
        PowerLossMode::InOrderPrefix,
    ];
}

/// What one [`FaultyIo::power_loss`] undid, for test diagnostics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PowerLossReport {
    pub creates_undone: usize,
    pub renames_undone: usize,
    pub removes_undone: usize,
    /// Files whose content or length differed from their last synced state.
    pub files_rewound: usize,
    /// Dirty pages put back to their synced content.
    pub pages_reverted: usize,
    /// Dirty pages that kept their newest content (RandomPages only).
    pub pages_kept: usize,
    /// Writes that survived as a strict prefix.
    pub torn_writes: usize,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct FaultyIo {
    real: RealIo,
    /// Shared with every open [`FaultyFile`], so files and the `FaultyIo` drop in any order.
    state: Arc<Mutex<State>>,
}

type FileId = u64;
type PathPredicate = Box<dyn Fn(&Path) -> bool + Send + Sync>;

#[derive(Default)]
struct State {
    next_file_id: FileId,
    /// Live path -> the file at it, for every file this layer has seen.
    ids_by_path: HashMap<PathBuf, FileId>,
    /// Ordered by id so that the RNG is consumed in a reproducible order.
    files: BTreeMap<FileId, FileRecord>,
    /// Directory operations not yet durable, oldest first.
    pending_dir_ops: Vec<PendingDirOp>,
    open_handles: Vec<Weak<FaultyFile>>,
    faults: Faults,
    /// Whether syncs also call the real fsync (see [`FaultyIo::with_real_syncs`]).
    real_syncs: bool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("files", &self.files.len())
            .field("pending_dir_ops", &self.pending_dir_ops.len())
            .field("faults", &self.faults)
            .field("real_syncs", &self.real_syncs)
            .finish()
    }
}

#[derive(Default)]
struct Faults {
    /// One-shot: the next `sync_data`/`sync_dir` on a matching path fails with EIO.
    fail_next_sync: Option<PathPredicate>,
    /// `Some(n)`: n more `write_at` calls succeed, then every one fails with EIO.
    writes_before_failure: Option<u64>,
    /// Every `create` and `allocate` fails with ENOSPC: the disk has no free block.
    disk_full: bool,
    /// `Some(n)`: n more mutating calls succeed, then every one fails with EIO.
    operations_before_halt: Option<u64>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("fail_next_sync", &self.fail_next_sync.is_some())
            .field("writes_before_failure", &self.writes_before_failure)
            .field("disk_full", &self.disk_full)
            .field("operations_before_halt", &self.operations_before_halt)
            .finish()
    }
}

/// What this layer knows about one file (one inode).
#[derive(Debug)]
struct FileRecord {
    /// Where the file is now; `None` once removed (or replaced by a rename).
    path: Option<PathBuf>,
    /// Set while removed: the bytes it had, so the removal can be rolled back.
    removed_bytes: Option<Vec<u8>>,
    synced_len_bytes: u64,
    /// Page index -> the page's bytes at the last sync, cut at `synced_len_bytes` (so empty for
    /// a page wholly beyond it). Holds exactly the pages touched since that sync.
    synced_pages: BTreeMap<u64, Vec<u8>>,
    unsynced_ops: Vec<FileOp>,
}

#[derive(Debug)]
enum FileOp {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen { len_bytes: u64 },
}

#[derive(Debug)]
struct PendingDirOp {
    op: DirOp,
    /// Directories that still need a `sync_dir` before the operation is durable.
    awaiting_sync: Vec<PathBuf>,
}

#[derive(Debug)]
enum DirOp {
    Create {
        id: FileId,
        path: PathBuf,
    },
    Rename {
        id: FileId,
        from: PathBuf,
        to: PathBuf,
        replaced: Option<FileId>,
    },
    Remove {
        id: FileId,
        path: PathBuf,
    },
}

/// A file opened through [`FaultyIo`]: the real file, plus bookkeeping on every write and sync.
#[derive(Debug)]
pub struct FaultyFile {
    id: FileId,
    inner: Arc<dyn IoFile>,
    state: Arc<Mutex<State>>,
}

impl FaultyIo {
    /// A layer whose `sync_data`/`sync_dir` only update the model and skip the real fsync:
    /// durability is what this layer tracks, and the machine running the tests never loses
    /// power, so real fsyncs would only make simulations slow.
    pub fn new() -> Arc<FaultyIo> {
        Arc::new(FaultyIo::default())
    }

    /// Like [`FaultyIo::new`], but every sync also reaches the real disk (for tests that care
    /// about the real call's cost or errors).
    pub fn with_real_syncs() -> Arc<FaultyIo> {
        let io = FaultyIo::default();
        lock(&io.state).real_syncs = true;
        Arc::new(io)
    }

    /// Arms a one-shot fault: the next `sync_data` of a file, or `sync_dir` of a directory,
    /// whose path (as the caller spelled it) matches fails with EIO and syncs nothing.
    pub fn fail_next_sync(&self, matches: impl Fn(&Path) -> bool + Send + Sync + 'static) {
        lock(&self.state).faults.fail_next_sync = Some(Box::new(matches));
    }

    /// After `successful_writes` more `write_at` calls (on any file) succeed, every further
    /// `write_at` fails with EIO and writes nothing, until [`FaultyIo::clear_faults`].
    pub fn fail_writes_after(&self, successful_writes: u64) {
        lock(&self.state).faults.writes_before_failure = Some(successful_writes);
    }

    /// The disk is full: every `create` and every `allocate` fails with ENOSPC
    /// (`ErrorKind::StorageFull`) and reserves nothing, until [`FaultyIo::clear_faults`]. Writes
    /// into space already reserved still succeed, as on a real full disk. Faults stay armed
    /// across [`FaultyIo::power_loss`].
    pub fn disk_full(&self) {
        lock(&self.state).faults.disk_full = true;
    }

    /// After `operations` more mutating calls (create, rename, remove, sync_dir, write_at,
    /// set_len, sync_data) succeed, every further one fails with EIO and does nothing, until
    /// [`FaultyIo::clear_faults`]. Followed by [`FaultyIo::power_loss`], this crashes a
    /// multi-step operation (an atomic file replace, a segment roll) between any two steps.
    pub fn halt_after(&self, operations: u64) {
        lock(&self.state).faults.operations_before_halt = Some(operations);
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        lock(&self.state).faults = Faults::default();
    }

    /// True when a power loss now could not change anything: no unsynced write or length
    /// change to any file and no directory operation awaiting a `sync_dir`.
    pub fn is_all_durable(&self) -> bool {
        let state = lock(&self.state);
        state.pending_dir_ops.is_empty()
            && state
                .files
                .values()
                .all(|record| record.path.is_none() || record.is_clean())
    }

    /// The kernel's background writeback: every write, length change and directory operation
    /// so far reaches the disk, as it does within seconds without any fsync. Models a node
    /// that has been running a while, whose old unsynced writes (index hints, say) are on disk
    /// even though nobody synced them.
    pub fn writeback_all(&self) {
        let mut state = lock(&self.state);
        state.pending_dir_ops.clear();
        for record in state.files.values_mut() {
            if let Some(path) = &record.path {
                if let Ok(metadata) = std::fs::metadata(path) {
                    record.mark_synced(metadata.len());
                }
            }
        }
    }

    /// Rewinds the real files to a state the disk could be in after losing power now, then
    /// forgets every record (the rewound state is the durable one).
    ///
    /// Panics if a file opened through this layer is still open: drop the log (and anything
    /// else holding files) first, exactly as the machine would have lost the process.
    pub fn power_loss(
        &self,
        mode: PowerLossMode,
        rng: &mut impl Rng,
    ) -> io::Result<PowerLossReport> {
        let mut state = lock(&self.state);
        let still_open: Vec<PathBuf> = state
            .open_handles
            .iter()
            .filter_map(Weak::upgrade)
            .map(|file| file.inner.path().to_path_buf())
            .collect();
        assert!(
            still_open.is_empty(),
            "power_loss while files are open: {still_open:?}"
        );

        let mut report = PowerLossReport::default();
        // Newest first, so each undo sees the directory as it was right after its operation.
        let pending = std::mem::take(&mut state.pending_dir_ops);
        for pending_op in pending.into_iter().rev() {
            state.undo_dir_op(pending_op.op, &mut report)?;
        }
        for record in state.files.values() {
            if let Some(path) = &record.path {
                rewind_file(path, record, mode, rng, &mut report)?;
            }
        }
        state.files.clear();
        state.ids_by_path.clear();
        state.open_handles.clear();
        Ok(report)
    }

    fn wrap(&self, state: &mut State, id: FileId, inner: Arc<dyn IoFile>) -> Arc<dyn IoFile> {
        let file = Arc::new(FaultyFile {
            id,
            inner,
            state: Arc::clone(&self.state),
        });
        state
            .open_handles
            .retain(|handle| handle.strong_count() > 0);
        state.open_handles.push(Arc::downgrade(&file));
        file
    }
}

impl Io for FaultyIo {
    fn create(&self, path: &Path, len_bytes: u64) -> io::Result<Arc<dyn IoFile>> {
        let key = canonical_file_path(path)?;
        let mut state = lock(&self.state);
        state.consume_operation()?;
        if state.faults.disk_full {
            return Err(rustix::io::Errno::NOSPC.into());
        }
        let inner = self.real.create(path, len_bytes)?;
        let id = state.add_record(key.clone(), len_bytes);
        let parent = parent_dir(&key);
        state.pending_dir_ops.push(PendingDirOp {
            op: DirOp::Create { id, path: key },
            awaiting_sync: vec![parent],
        });
        Ok(self.wrap(&mut state, id, inner))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn IoFile>> {
        let key = canonical_file_path(path)?;
        let mut state = lock(&self.state);
        let inner = self.real.open(path)?;
        let id = state.id_of_existing(&key)?;
        Ok(self.wrap(&mut state, id, inner))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let from_key = canonical_file_path(from)?;
        let to_key = canonical_file_path(to)?;
        let mut state = lock(&self.state);
        state.consume_operation()?;
        if from_key == to_key {
            return self.real.rename(from, to);
        }
        let id = state.id_of_existing(&from_key)?;
        // The file a rename replaces is kept so that rolling the rename back can restore it.
        let replaced = match std::fs::read(to) {
            Ok(bytes) => Some((state.id_of_existing(&to_key)?, bytes)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(error),
        };
        self.real.rename(from, to)?;

        state.ids_by_path.remove(&from_key);
        state.ids_by_path.insert(to_key.clone(), id);
        state.record_mut(id).path = Some(to_key.clone());
        let replaced_id = replaced.map(|(replaced_id, bytes)| {
            state.record_mut(replaced_id).mark_removed(bytes);
            replaced_id
        });
        let mut awaiting_sync = vec![parent_dir(&from_key)];
        if parent_dir(&to_key) != awaiting_sync[0] {
            awaiting_sync.push(parent_dir(&to_key));
        }
        state.pending_dir_ops.push(PendingDirOp {
            op: DirOp::Rename {
                id,
                from: from_key,
                to: to_key,
                replaced: replaced_id,
            },
            awaiting_sync,
        });
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let key = canonical_file_path(path)?;
        let mut state = lock(&self.state);
        state.consume_operation()?;
        let id = state.id_of_existing(&key)?;
        let bytes = std::fs::read(path)?;
        self.real.remove(path)?;
        state.ids_by_path.remove(&key);
        state.record_mut(id).mark_removed(bytes);
        let parent = parent_dir(&key);
        state.pending_dir_ops.push(PendingDirOp {
            op: DirOp::Remove { id, path: key },
            awaiting_sync: vec![parent],
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let key = std::fs::canonicalize(dir)?;
        let mut state = lock(&self.state);
        state.consume_operation()?;
        if state.take_sync_failure(dir) {
            return Err(injected_eio());
        }
        if state.real_syncs {
            self.real.sync_dir(dir)?;
        }
        for pending_op in &mut state.pending_dir_ops {
            pending_op.awaiting_sync.retain(|awaiting| *awaiting != key);
        }
        state
            .pending_dir_ops
            .retain(|pending_op| !pending_op.awaiting_sync.is_empty());
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.real.list(dir)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.real.create_dir_all(dir)
    }
}

impl IoFile for FaultyFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.consume_operation()?;
        state.consume_write_budget()?;
        let Some(record) = state.tracked_mut(self.id) else {
            return self.inner.write_at(buf, offset);
        };
        let end = offset.saturating_add(buf.len() as u64);
        record.remember_synced_pages(&*self.inner, offset, end)?;
        record.unsynced_ops.push(FileOp::Write {
            offset,
            bytes: buf.to_vec(),
        });
        let result = self.inner.write_at(buf, offset);
        if result.is_err() {
            // The write did not happen (as far as we can tell), so there is nothing to lose.
            record.unsynced_ops.pop();
        }
        result
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.consume_operation()?;
        if state.take_sync_failure(self.inner.path()) {
            return Err(injected_eio());
        }
        if state.real_syncs {
            self.inner.sync_data()?;
        }
        let len_bytes = self.inner.len_bytes()?;
        if let Some(record) = state.tracked_mut(self.id) {
            record.mark_synced(len_bytes);
        }
        Ok(())
    }

    fn len_bytes(&self) -> io::Result<u64> {
        self.inner.len_bytes()
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.consume_operation()?;
        let Some(record) = state.tracked_mut(self.id) else {
            return self.inner.set_len(len_bytes);
        };
        let old_len_bytes = self.inner.len_bytes()?;
        // Bytes that exist at the last sync and change now: cut off by a shrink, or zeroed by
        // re-extending over an earlier shrink.
        let changed_start = old_len_bytes.min(len_bytes);
        let changed_end = old_len_bytes.max(len_bytes).min(record.synced_len_bytes);
        record.remember_synced_pages(&*self.inner, changed_start, changed_end)?;
        record.unsynced_ops.push(FileOp::SetLen { len_bytes });
        let result = self.inner.set_len(len_bytes);
        if result.is_err() {
            record.unsynced_ops.pop();
        }
        result
    }

    fn allocate(&self, offset: u64, len_bytes: u64) -> io::Result<()> {
        // A reservation changes neither content nor length: nothing for a power loss to undo
        // (a lost one is found again by the next allocate before a write).
        let mut state = lock(&self.state);
        state.consume_operation()?;
        if state.faults.disk_full {
            return Err(rustix::io::Errno::NOSPC.into());
        }
        self.inner.allocate(offset, len_bytes)
    }

    fn file(&self) -> &File {
        self.inner.file()
    }

    fn path(&self) -> &Path {
        self.inner.path()
    }
}

impl State {
    fn add_record(&mut self, key: PathBuf, synced_len_bytes: u64) -> FileId {
        let id = self.next_file_id;
        self.next_file_id += 1;
        // A file removed behind this layer's back may still be mapped at this path: forget it.
        if let Some(stale_id) = self.ids_by_path.insert(key.clone(), id) {
            self.files.remove(&stale_id);
        }
        self.files.insert(
            id,
            FileRecord {
                path: Some(key),
                removed_bytes: None,
                synced_len_bytes,
                synced_pages: BTreeMap::new(),
                unsynced_ops: Vec::new(),
            },
        );
        id
    }

    /// The record of an existing file; a file this layer has not seen yet (made before it, or
    /// left by an earlier power loss) is durable as it stands.
    fn id_of_existing(&mut self, key: &Path) -> io::Result<FileId> {
        if let Some(&id) = self.ids_by_path.get(key) {
            return Ok(id);
        }
        let len_bytes = std::fs::metadata(key)?.len();
        Ok(self.add_record(key.to_path_buf(), len_bytes))
    }

    fn record_mut(&mut self, id: FileId) -> &mut FileRecord {
        self.files.get_mut(&id).expect("file record exists")
    }

    /// The record of a file still reachable by a path (writes to removed files are untracked).
    fn tracked_mut(&mut self, id: FileId) -> Option<&mut FileRecord> {
        self.files
            .get_mut(&id)
            .filter(|record| record.path.is_some())
    }

    fn take_sync_failure(&mut self, path: &Path) -> bool {
        let matches = self
            .faults
            .fail_next_sync
            .as_ref()
            .is_some_and(|predicate| predicate(path));
        if matches {
            self.faults.fail_next_sync = None;
        }
        matches
    }

    fn consume_operation(&mut self) -> io::Result<()> {
        consume(&mut self.faults.operations_before_halt)
    }

    fn consume_write_budget(&mut self) -> io::Result<()> {
        consume(&mut self.faults.writes_before_failure)
    }

    fn undo_dir_op(&mut self, op: DirOp, report: &mut PowerLossReport) -> io::Result<()> {
        match op {
            DirOp::Create { id, path } => {
                std::fs::remove_file(&path)?;
                self.files.remove(&id);
                report.creates_undone += 1;
            }
            DirOp::Rename {
                id,
                from,
                to,
                replaced,
            } => {
                std::fs::rename(&to, &from)?;
                self.record_mut(id).path = Some(from);
                if let Some(replaced_id) = replaced {
                    self.restore_removed(replaced_id, to)?;
                }
                report.renames_undone += 1;
            }
            DirOp::Remove { id, path } => {
                self.restore_removed(id, path)?;
                report.removes_undone += 1;
            }
        }
        Ok(())
    }

    fn restore_removed(&mut self, id: FileId, path: PathBuf) -> io::Result<()> {
        let record = self.record_mut(id);
        let bytes = record
            .removed_bytes
            .take()
            .expect("a removed file keeps its bytes");
        std::fs::write(&path, bytes)?;
        record.path = Some(path);
        Ok(())
    }
}

impl FileRecord {
    fn is_clean(&self) -> bool {
        self.synced_pages.is_empty() && self.unsynced_ops.is_empty()
    }

    fn mark_removed(&mut self, bytes: Vec<u8>) {
        self.path = None;
        self.removed_bytes = Some(bytes);
    }

    fn mark_synced(&mut self, len_bytes: u64) {
        self.synced_len_bytes = len_bytes;
        self.synced_pages.clear();
        self.unsynced_ops.clear();
    }

    /// Records, for every page in `[start, end)` not yet touched since the last sync, the bytes
    /// it holds now, which are the bytes it held at that sync.
    fn remember_synced_pages(&mut self, file: &dyn IoFile, start: u64, end: u64) -> io::Result<()> {
        if start >= end {
            return Ok(());
        }
        let current_len_bytes = file.len_bytes()?;
        for page in start / PAGE_BYTES..=(end - 1) / PAGE_BYTES {
            if self.synced_pages.contains_key(&page) {
                continue;
            }
            let page_start = page * PAGE_BYTES;
            let synced_end = (page_start + PAGE_BYTES)
                .min(self.synced_len_bytes)
                .min(current_len_bytes);
            let mut bytes = vec![0; synced_end.saturating_sub(page_start) as usize];
            file.read_at(&mut bytes, page_start)?;
            self.synced_pages.insert(page, bytes);
        }
        Ok(())
    }
}

/// Puts one file into a state allowed by `mode`, given its records since the last sync.
fn rewind_file(
    path: &Path,
    record: &FileRecord,
    mode: PowerLossMode,
    rng: &mut impl Rng,
    report: &mut PowerLossReport,
) -> io::Result<()> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let current_len_bytes = file.metadata()?.len();
    if record.is_clean() && current_len_bytes == record.synced_len_bytes {
        return Ok(());
    }
    report.files_rewound += 1;
    match mode {
        PowerLossMode::DropAll => restore_synced(&file, record, report),
        PowerLossMode::TornLast => {
            restore_synced(&file, record, report)?;
            let last_write = record.unsynced_ops.iter().rev().find_map(|op| match op {
                FileOp::Write { offset, bytes } => Some((*offset, bytes)),
                FileOp::SetLen { .. } => None,
            });
            match last_write {
                Some((offset, bytes)) => write_torn(&file, offset, bytes, rng, report),
                None => Ok(()),
            }
        }
        PowerLossMode::InOrderPrefix => {
            restore_synced(&file, record, report)?;
            let survivors = rng.random_range(0..=record.unsynced_ops.len());
            for op in &record.unsynced_ops[..survivors] {
                match op {
                    FileOp::Write { offset, bytes } => file.write_all_at(bytes, *offset)?,
                    FileOp::SetLen { len_bytes } => file.set_len(*len_bytes)?,
                }
            }
            match record.unsynced_ops.get(survivors) {
                Some(FileOp::Write { offset, bytes }) => {
                    write_torn(&file, *offset, bytes, rng, report)
                }
                Some(FileOp::SetLen { .. }) | None => Ok(()),
            }
        }
        PowerLossMode::RandomPages => {
            keep_random_pages(&file, record, current_len_bytes, rng, report)
        }
    }
}

/// Makes the file exactly what it was at its last sync.
fn restore_synced(
    file: &File,
    record: &FileRecord,
    report: &mut PowerLossReport,
) -> io::Result<()> {
    for (page, synced_bytes) in &record.synced_pages {
        file.write_all_at(synced_bytes, page * PAGE_BYTES)?;
        report.pages_reverted += 1;
    }
    file.set_len(record.synced_len_bytes)
}

/// Writes a random strict prefix of `bytes` (possibly nothing).
fn write_torn(
    file: &File,
    offset: u64,
    bytes: &[u8],
    rng: &mut impl Rng,
    report: &mut PowerLossReport,
) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let kept_bytes = rng.random_range(0..bytes.len());
    if kept_bytes > 0 {
        file.write_all_at(&bytes[..kept_bytes], offset)?;
        report.torn_writes += 1;
    }
    Ok(())
}

/// Each dirty page keeps its newest or its synced content, independently; bytes past the
/// synced length have no synced content and read as zeros.
fn keep_random_pages(
    file: &File,
    record: &FileRecord,
    current_len_bytes: u64,
    rng: &mut impl Rng,
    report: &mut PowerLossReport,
) -> io::Result<()> {
    let synced_len_bytes = record.synced_len_bytes;
    let final_len_bytes = if current_len_bytes == synced_len_bytes || rng.random_bool(0.5) {
        current_len_bytes
    } else {
        synced_len_bytes
    };
    let work_len_bytes = current_len_bytes.max(synced_len_bytes);
    file.set_len(work_len_bytes)?;
    for (page, synced_bytes) in &record.synced_pages {
        let page_start = page * PAGE_BYTES;
        if page_start >= work_len_bytes {
            continue;
        }
        if rng.random_bool(0.5) {
            report.pages_kept += 1;
            continue;
        }
        let page_end = (page_start + PAGE_BYTES).min(work_len_bytes);
        let mut bytes = synced_bytes.clone();
        bytes.resize((page_end - page_start) as usize, 0);
        file.write_all_at(&bytes, page_start)?;
        report.pages_reverted += 1;
    }
    file.set_len(final_len_bytes)
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A test that panicked while holding the lock leaves consistent-enough records behind;
    // later tests should see their own failure, not a poisoned mutex.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Spends one unit of a fault budget: `None` is unlimited, `Some(0)` is spent (EIO).
fn consume(budget: &mut Option<u64>) -> io::Result<()> {
    match budget {
        None => Ok(()),
        Some(0) => Err(injected_eio()),
        Some(remaining) => {
            *remaining -= 1;
            Ok(())
        }
    }
}

fn injected_eio() -> io::Error {
    rustix::io::Errno::IO.into()
}

/// `path` with its parent directory canonicalised (the file itself may not exist yet).
fn canonical_file_path(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    Ok(std::fs::canonicalize(parent)?.join(name))
}

fn parent_dir(canonical_path: &Path) -> PathBuf {
    canonical_path
        .parent()
        .expect("a canonical file path has a parent")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const PAGE: usize = PAGE_BYTES as usize;

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    /// A file of `pages` pages of `fill`, created, written, synced and dir-synced.
    fn durable_file(io: &FaultyIo, dir: &Path, name: &str, pages: usize, fill: u8) -> PathBuf {
        let path = dir.join(name);
        let file = io.create(&path, (pages * PAGE) as u64).unwrap();
        file.write_at(&vec![fill; pages * PAGE], 0).unwrap();
        file.sync_data().unwrap();
        io.sync_dir(dir).unwrap();
        path
    }

    #[test]
    fn drop_all_keeps_exactly_the_synced_content() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::with_real_syncs();
        let path = dir.path().join("f");
        let file = io.create(&path, 0).unwrap();
        io.sync_dir(dir.path()).unwrap();
        file.write_at(b"synced", 0).unwrap();
        file.sync_data().unwrap();
        file.write_at(b"SYN", 0).unwrap();
        file.write_at(b" and lost", 6).unwrap();
        assert!(!io.is_all_durable());
        assert_eq!(read(&path), b"SYNced and lost");
        drop(file);

        let report = io
            .power_loss(PowerLossMode::DropAll, &mut ChaCha8Rng::seed_from_u64(1))
            .unwrap();
        assert_eq!(read(&path), b"synced");
        assert_eq!(report.files_rewound, 1);
        assert!(io.is_all_durable(), "the rewound state is the durable one");
    }

    #[test]
    fn random_pages_keeps_each_page_whole_old_or_whole_new() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let path = durable_file(&io, dir.path(), "f", 8, b'a');
        let mut outcomes = std::collections::HashSet::new();
        for seed in 0..16 {
            let file = io.open(&path).unwrap();
            file.write_at(&vec![b'b'; 8 * PAGE], 0).unwrap();
            drop(file);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let report = io.power_loss(PowerLossMode::RandomPages, &mut rng).unwrap();
            let bytes = read(&path);
            assert_eq!(bytes.len(), 8 * PAGE);
            let pages: Vec<u8> = bytes
                .chunks(PAGE)
                .map(|page| {
                    assert!(page.iter().all(|&b| b == page[0]), "page is torn");
                    page[0]
                })
                .collect();
            assert_eq!(report.pages_kept + report.pages_reverted, 8);
            assert_eq!(
                report.pages_kept,
                pages.iter().filter(|&&b| b == b'b').count()
            );
            outcomes.insert(pages.clone());
            // Back to all-old for the next round.
            let file = io.open(&path).unwrap();
            file.write_at(&vec![b'a'; 8 * PAGE], 0).unwrap();
            file.sync_data().unwrap();
        }
        assert!(
            outcomes.len() > 8,
            "pages must be kept independently: {outcomes:?}"
        );
    }

    #[test]
    fn random_pages_may_keep_a_page_beyond_a_lost_one() {
        // The case recovery must report: valid data after a hole.
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let path = durable_file(&io, dir.path(), "f", 2, 0);
        let mut saw_hole_then_data = false;
        for seed in 0..32 {
            let file = io.open(&path).unwrap();
            file.write_at(&vec![1; PAGE], 0).unwrap();
            file.write_at(&vec![2; PAGE], PAGE as u64).unwrap();
            drop(file);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            io.power_loss(PowerLossMode::RandomPages, &mut rng).unwrap();
            let bytes = read(&path);
            saw_hole_then_data |= bytes[0] == 0 && bytes[PAGE] == 2;
            let file = io.open(&path).unwrap();
            file.write_at(&vec![0; 2 * PAGE], 0).unwrap();
            file.sync_data().unwrap();
        }
        assert!(saw_hole_then_data);
    }

    #[test]
    fn torn_last_keeps_only_a_strict_prefix_of_the_last_write() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let path = durable_file(&io, dir.path(), "f", 1, b'.');
        let mut kept_lengths = std::collections::HashSet::new();
        for seed in 0..32 {
            let file = io.open(&path).unwrap();
            file.write_at(b"first", 0).unwrap();
            file.write_at(b"0123456789", 100).unwrap();
            drop(file);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            io.power_loss(PowerLossMode::TornLast, &mut rng).unwrap();
            let bytes = read(&path);
            assert_eq!(&bytes[..5], b".....", "earlier unsynced writes are lost");
            let kept = bytes[100..110].iter().take_while(|&&b| b != b'.').count();
            assert!(kept < 10, "a torn write is never whole");
            assert_eq!(&bytes[100..100 + kept], &b"0123456789"[..kept]);
            assert!(bytes[100 + kept..].iter().all(|&b| b == b'.'));
            kept_lengths.insert(kept);
            let file = io.open(&path).unwrap();
            file.write_at(&[b'.'; PAGE], 0).unwrap();
            file.sync_data().unwrap();
        }
        assert!(kept_lengths.len() > 3, "{kept_lengths:?}");
    }

    #[test]
    fn in_order_prefix_keeps_a_prefix_of_the_write_stream() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let path = durable_file(&io, dir.path(), "f", 1, 0);
        let stream: Vec<u8> = (1..=200).collect();
        let mut kept_lengths = std::collections::HashSet::new();
        for seed in 0..32 {
            let file = io.open(&path).unwrap();
            for (chunk_number, chunk) in stream.chunks(20).enumerate() {
                file.write_at(chunk, (chunk_number * 20) as u64).unwrap();
            }
            drop(file);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            io.power_loss(PowerLossMode::InOrderPrefix, &mut rng)
                .unwrap();
            let bytes = read(&path);
            let kept = bytes.iter().take_while(|&&b| b != 0).count();
            assert_eq!(&bytes[..kept], &stream[..kept]);
            assert!(bytes[kept..].iter().all(|&b| b == 0));
            kept_lengths.insert(kept);
            let file = io.open(&path).unwrap();
            file.write_at(&[0; PAGE], 0).unwrap();
            file.sync_data().unwrap();
        }
        assert!(kept_lengths.len() > 8, "{kept_lengths:?}");
    }

    #[test]
    fn create_without_dir_sync_vanishes_and_with_it_survives_as_preallocated_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let lost = io.create(&dir.path().join("lost"), 100).unwrap();
        lost.write_at(b"x", 0).unwrap();
        lost.sync_data().unwrap();
        drop(lost);
        let kept = io.create(&dir.path().join("kept"), 100).unwrap();
        io.sync_dir(dir.path()).unwrap();
        kept.write_at(b"unsynced", 0).unwrap();
        drop(kept);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let report = io.power_loss(PowerLossMode::DropAll, &mut rng).unwrap();
        assert_eq!(
            report.creates_undone, 0,
            "both creates were covered by the sync"
        );

        let lost = io.create(&dir.path().join("lost2"), 0).unwrap();
        lost.sync_data().unwrap();
        drop(lost);
        let report = io.power_loss(PowerLossMode::DropAll, &mut rng).unwrap();
        assert_eq!(report.creates_undone, 1);
        assert!(!dir.path().join("lost2").exists());
        assert_eq!(read(&dir.path().join("kept")), vec![0; 100]);
        assert_eq!(read(&dir.path().join("lost"))[0], b'x');
    }

    #[test]
    fn unsynced_rename_is_rolled_back_and_the_replaced_file_restored() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let target = durable_file(&io, dir.path(), "target", 1, b'o');
        let temp = durable_file(&io, dir.path(), "temp", 1, b'n');
        io.rename(&temp, &target).unwrap();
        assert_eq!(read(&target)[0], b'n');
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let report = io.power_loss(PowerLossMode::DropAll, &mut rng).unwrap();
        assert_eq!(report.renames_undone, 1);
        assert_eq!(read(&target), vec![b'o'; PAGE]);
        assert_eq!(read(&temp), vec![b'n'; PAGE]);

        io.rename(&temp, &target).unwrap();
        io.sync_dir(dir.path()).unwrap();
        io.power_loss(PowerLossMode::DropAll, &mut rng).unwrap();
        assert_eq!(read(&target), vec![b'n'; PAGE]);
        assert!(!temp.exists());
    }

    #[test]
    fn unsynced_remove_is_rolled_back_with_the_durable_content() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let path = durable_file(&io, dir.path(), "f", 1, b'd');
        let file = io.open(&path).unwrap();
        file.write_at(b"unsynced", 0).unwrap();
        drop(file);
        io.remove(&path).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let report = io.power_loss(PowerLossMode::DropAll, &mut rng).unwrap();
        assert_eq!(report.removes_undone, 1);
        assert_eq!(read(&path), vec![b'd'; PAGE]);

        io.remove(&path).unwrap();
        io.sync_dir(dir.path()).unwrap();
        io.power_loss(PowerLossMode::DropAll, &mut rng).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn unsynced_shrink_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let path = durable_file(&io, dir.path(), "f", 3, b's');
        let file = io.open(&path).unwrap();
        file.set_len(10).unwrap();
        file.set_len(5000).unwrap();
        assert_eq!(read(&path)[4999], 0);
        drop(file);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        io.power_loss(PowerLossMode::DropAll, &mut rng).unwrap();
        assert_eq!(read(&path), vec![b's'; 3 * PAGE]);
    }

    #[test]
    fn failed_sync_is_one_shot_eio_on_the_matching_path_and_syncs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let a = io.create(&dir.path().join("a"), 0).unwrap();
        let b = io.create(&dir.path().join("b"), 0).unwrap();
        io.sync_dir(dir.path()).unwrap();
        a.write_at(b"a", 0).unwrap();
        b.write_at(b"b", 0).unwrap();
        io.fail_next_sync(|path| path.ends_with("b"));
        a.sync_data().unwrap();
        let error = b.sync_data().unwrap_err();
        assert_eq!(
            error.raw_os_error(),
            Some(rustix::io::Errno::IO.raw_os_error())
        );
        drop((a, b));
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        io.power_loss(PowerLossMode::DropAll, &mut rng).unwrap();
        assert_eq!(read(&dir.path().join("a")), b"a");
        assert_eq!(
            read(&dir.path().join("b")),
            b"",
            "the failed sync made nothing durable"
        );

        let b = io.open(&dir.path().join("b")).unwrap();
        b.sync_data().unwrap(); // one shot: the fault is spent

        io.fail_next_sync(|path| path.ends_with(dir_name(path)));
        assert!(io.sync_dir(dir.path()).is_err(), "directories can fail too");
    }

    fn dir_name(path: &Path) -> &std::ffi::OsStr {
        path.file_name().unwrap()
    }

    #[test]
    fn writes_fail_with_eio_after_the_budget_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let file = io.create(&dir.path().join("f"), 0).unwrap();
        io.fail_writes_after(2);
        file.write_at(b"1", 0).unwrap();
        file.write_at(b"2", 1).unwrap();
        let error = file.write_at(b"3", 2).unwrap_err();
        assert_eq!(
            error.raw_os_error(),
            Some(rustix::io::Errno::IO.raw_os_error())
        );
        assert!(file.write_at(b"3", 2).is_err(), "stays failed");
        assert_eq!(read(&dir.path().join("f")), b"12");
        io.clear_faults();
        file.write_at(b"3", 2).unwrap();
    }

    #[test]
    fn a_full_disk_refuses_creates_and_reservations_but_not_reserved_writes() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let reserved = io.create(&dir.path().join("reserved"), 8192).unwrap();
        io.disk_full();
        let path = dir.path().join("segment");
        let error = io.create(&path, 4096).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        assert!(!path.exists());
        assert!(crate::StorageError::io("create", &path, error).is_retriable());
        let error = reserved.allocate(8192, 4096).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        reserved.write_at(b"fits", 100).unwrap();
        io.clear_faults();
        io.create(&path, 4096).unwrap();
        reserved.allocate(8192, 4096).unwrap();
    }

    #[test]
    fn writeback_makes_everything_durable_without_a_sync() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let file = io.create(&dir.path().join("f"), 0).unwrap();
        file.write_at(b"written back", 0).unwrap();
        drop(file);
        assert!(!io.is_all_durable());
        io.writeback_all();
        assert!(io.is_all_durable());
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        io.power_loss(PowerLossMode::DropAll, &mut rng).unwrap();
        assert_eq!(read(&dir.path().join("f")), b"written back");
    }

    #[test]
    fn halt_stops_every_mutating_call_after_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        io.halt_after(2);
        let file = io.create(&dir.path().join("f"), 0).unwrap();
        file.write_at(b"1", 0).unwrap();
        assert!(file.sync_data().is_err());
        assert!(file.write_at(b"2", 1).is_err());
        assert!(io.sync_dir(dir.path()).is_err());
        assert!(io.create(&dir.path().join("g"), 0).is_err());
        assert!(!dir.path().join("g").exists());
        let mut buf = [0u8; 1];
        file.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"1", "reads still work");
    }

    #[test]
    #[should_panic(expected = "power_loss while files are open")]
    fn power_loss_with_an_open_file_is_a_test_bug() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let _file = io.create(&dir.path().join("f"), 0).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let _ = io.power_loss(PowerLossMode::DropAll, &mut rng);
    }

    #[test]
    fn memory_maps_see_writes_through_the_layer() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let file = io.create(&dir.path().join("f"), 4096).unwrap();
        file.write_at(b"mapped", 10).unwrap();
        let mut buf = [0u8; 6];
        // read_at goes to the same real file the mmap would map.
        file.read_at(&mut buf, 10).unwrap();
        assert_eq!(&buf, b"mapped");
        let mut through_os = [0u8; 6];
        file.file().read_exact_at(&mut through_os, 10).unwrap();
        assert_eq!(&through_os, b"mapped");
    }
}
