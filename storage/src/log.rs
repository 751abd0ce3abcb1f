//! [`Log`]: the append-only, crash-safe segment log of one Raft group (docs/FORMAT.md
//! "Segment log").
//!
//! A log is a directory of segments `<base:020>.log`, each with sparse `.index` and `.offsets`
//! files. Entries are appended by positioned writes (one per segment a batch touches), read as
//! zero-copy slices of read-only maps, made durable by `sync`/`sync_now`, removed from the end
//! by `truncate_suffix` (Raft conflicts), from the front by `compact_prefix` (after a snapshot)
//! or all at once by `reset` (InstallSnapshot). Opening a log recovers it (recovery.rs).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{Result, StorageError};
use crate::frame::{self, encoded_frame_bytes};
use crate::io::{Io, IoFile, RealIo};
use crate::limits::{EMPTY_SEGMENT_RESERVED_BYTES, MAX_INDEX};
use crate::options::{FsyncPolicy, LogOptions};
use crate::recovery;
use crate::segment::{
    create_segment_file, file_path, remove_segment_files, reservation_end, sync_dir, FileKind,
    Segment, SEGMENT_HEADER_BYTES,
};

/// Bytes `entries` take as frames.
fn frames_bytes(entries: &[Entry<'_>]) -> u64 {
    entries
        .iter()
        .map(|entry| encoded_frame_bytes(entry.payload.len()) as u64)
        .sum()
}

/// One entry to append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub index: u64,
    pub term: u64,
    pub kind: u8,
    pub payload: &'a [u8],
    /// Message offset of the entry's first message (Data entries), recorded in `.offsets`.
    /// Keys must increase with the index for `find_offset` to be a floor.
    pub offset_key: Option<u64>,
}

/// One entry read back. `payload` is a zero-copy slice of the segment's map and stays valid
/// (and unchanged) after compaction, segment deletion or dropping the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub index: u64,
    pub term: u64,
    pub kind: u8,
    pub payload: Bytes,
}

/// What `open` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments in the log after recovery.
    pub segments: usize,
    pub last_index: u64,
    /// Where the active segment was cut, if it held bytes past its last valid frame.
    pub cut: Option<Cut>,
}

/// A torn or damaged tail cut off the active segment on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub file: PathBuf,
    /// Position of the first frame that did not check out: everything from here was zeroed.
    pub byte_offset: u64,
    pub reason: CutReason,
    /// Highest index of a frame with a valid CRC found beyond the cut: entries up to it may
    /// have been acknowledged before the crash (Raft abstains from voting until it has them
    /// again: the abstain rule, docs/RAFT-CORE.md).
    pub highest_index_beyond_cut: Option<u64>,
}

/// Why the active segment was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    /// A zero `len` field with non-zero bytes after it (a lost page).
    ZeroLength,
    /// A frame running past the end of the file.
    Truncated,
    /// A checksum failure (or a `len` too small to be a frame).
    BadCrc,
    /// A valid frame with the wrong index.
    NonContiguous,
    /// A valid frame with a lower term than its predecessor.
    TermRegression,
}

/// The segment log. Not safe to open twice on one directory; nothing else may write its files.
///
/// ```
/// use keel_storage::{Entry, FsyncPolicy, Log, LogOptions};
///
/// let dir = tempfile::tempdir()?;
/// let options = LogOptions { fsync: FsyncPolicy::Always, ..LogOptions::default() };
/// let (mut log, report) = Log::open(dir.path(), options.clone())?;
/// assert_eq!((log.first_index(), log.last_index(), report.cut), (1, 0, None));
///
/// let entry = |index, payload: &'static [u8]| Entry { index, term: 1, kind: 0, payload, offset_key: None };
/// log.append(&[entry(1, b"hello"), entry(2, b"world")])?;
/// log.sync()?; // under FsyncPolicy::Always: durable before we acknowledge
/// assert_eq!(log.durable_index(), 2);
///
/// let entries = log.read(1, 3, u64::MAX)?;
/// assert_eq!(&entries[1].payload[..], b"world");
/// drop(log);
///
/// let (log, report) = Log::open(dir.path(), options)?;
/// assert_eq!((log.last_index(), log.last_term(), report.cut), (2, 1, None));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    options: LogOptions,
    io: Arc<dyn Io>,
    /// Ascending by base index, contiguous, never empty; the last one is active (appended to).
    segments: Vec<Segment>,
    /// Reused for each append's frames.
    write_buffer: Vec<u8>,
    durable_index: u64,
    last_sync: Instant,
    /// Highest index `read` has handed out: bytes at or below it are never rewritten.
    handed_out_watermark: AtomicU64,
    /// Set by the first failed write or fsync; all later writes fail with `Poisoned`.
    poisoned: Option<String>,
    /// Positioned writes so far: a [`PendingSync`] that finishes with no write after it began
    /// leaves every segment clean.
    writes: u64,
    /// Bumped whenever written entries are rewritten or dropped (truncation, reset): a
    /// [`PendingSync`] begun before then proves nothing about the entries now held.
    generation: u64,
}

/// One segment as [`Log::segment_spans`] shows it. An empty segment has
/// `last_index == base_index - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSpan {
    pub base_index: u64,
    pub last_index: u64,
    pub bytes: u64,
}

/// An fdatasync of everything the log had written when [`Log::begin_sync`] made it, to run on
/// another thread while the log takes more appends (a pipelined group commit: the writer does
/// not stop for the disk). Its result goes back through [`Log::finish_sync`].
#[derive(Debug)]
pub struct PendingSync {
    files: Vec<(Arc<dyn IoFile>, PathBuf)>,
    upto: u64,
    writes: u64,
    generation: u64,
    /// When it began: what `interval` counts from (writes after this are not covered).
    began: Instant,
}

impl PendingSync {
    /// The last index this sync makes durable.
    pub fn upto(&self) -> u64 {
        self.upto
    }

    /// The fdatasyncs themselves. Blocking: run it off the async runtime.
    pub fn run(&self) -> Result<()> {
        for (file, path) in &self.files {
            file.sync_data()
                .map_err(|source| StorageError::io("fdatasync", path, source))?;
        }
        Ok(())
    }
}

impl Log {
    /// Opens (creating if needed) the log in `dir` on the real file system and recovers it.
    pub fn open(dir: &Path, options: LogOptions) -> Result<(Log, RecoveryReport)> {
        Log::open_with_io(dir, options, Arc::new(RealIo))
    }

    /// Opens the log through `io` (a fault-injecting layer in tests).
    pub fn open_with_io(
        dir: &Path,
        options: LogOptions,
        io: Arc<dyn Io>,
    ) -> Result<(Log, RecoveryReport)> {
        options.validate()?;
        io.create_dir_all(dir)
            .map_err(|source| StorageError::io("create dir", dir, source))?;
        // A log directory just created must itself survive a power loss.
        let parent = dir
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(io.as_ref(), parent)?;
        let (segments, cut) =
            recovery::recover(dir, &options, io.as_ref()).inspect_err(log_corruption)?;
        let last_index = segments
            .last()
            .expect("recovery keeps a segment")
            .last_index;
        let log = Log {
            dir: dir.to_path_buf(),
            options,
            io,
            segments,
            write_buffer: Vec::new(),
            // Recovery fdatasynced the active segment; sealed ones were synced when sealed
            // (except under `FsyncPolicy::Never`, which promises nothing).
            durable_index: last_index,
            last_sync: Instant::now(),
            handed_out_watermark: AtomicU64::new(0),
            poisoned: None,
            writes: 0,
            generation: 0,
        };
        log.debug_check();
        let report = RecoveryReport {
            segments: log.segments.len(),
            last_index,
            cut,
        };
        Ok((log, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// First index held (an empty new log: 1).
    pub fn first_index(&self) -> u64 {
        self.segments[0].base_index
    }

    /// Last index held; `first_index() - 1` when empty.
    pub fn last_index(&self) -> u64 {
        self.active().last_index
    }

    /// Term of the last entry; 0 when empty.
    pub fn last_term(&self) -> u64 {
        if self.last_index() < self.first_index() {
            0
        } else {
            self.active().last_term
        }
    }

    /// Highest index known to be fdatasynced.
    pub fn durable_index(&self) -> u64 {
        self.durable_index
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has a segment")
    }

    /// Whether `entries` go into the active segment's reserved space with room to spare: then
    /// `append` is one positioned write, with no disk to reserve and no segment to create or
    /// seal (each of which may wait on the file system's journal or fsync). A caller on an async
    /// runtime writes inline only then.
    pub fn fits_in_active(&self, entries: &[Entry<'_>]) -> bool {
        let bytes = frames_bytes(entries);
        let active = self.active();
        bytes < active.remaining_bytes() && active.end_position + bytes <= active.reserved_end
    }

    /// Appends `entries`, visible to `read` on return (durable after a sync). All checks
    /// (contiguity, terms, sizes) happen before anything is written: on error the log is
    /// unchanged.
    pub fn append(&mut self, entries: &[Entry<'_>]) -> Result<()> {
        self.check_writable()?;
        if entries.is_empty() {
            return Ok(());
        }
        self.check_batch(entries)?;
        self.make_room_in_empty_active(entries[0].payload.len())?;
        let chunks = self.plan_chunks(entries);
        // Disk for every byte about to be written is reserved first, so a full disk fails the
        // append here, with nothing written (retriable), and never a write.
        let active_through = self.active().end_position + frames_bytes(&entries[..chunks[0]]);
        let reserved = self.active_mut().reserve_through(active_through);
        self.fail_unless_retriable(reserved)?;
        let new_segments = self.create_segments_for(&chunks, entries)?;
        let mut next = 0;
        for (chunk_number, (&count, new_segment)) in chunks
            .iter()
            .zip(std::iter::once(None).chain(new_segments.into_iter().map(Some)))
            .enumerate()
        {
            if let Some(segment) = new_segment {
                debug_assert!(chunk_number > 0);
                self.seal_active()?;
                self.segments.push(segment);
            }
            self.write_chunk(&entries[next..next + count])?;
            next += count;
        }
        debug_assert_eq!(next, entries.len());
        self.debug_check();
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        match &self.poisoned {
            Some(reason) => Err(StorageError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Passes a retriable error (a full disk) back with the log unchanged and usable; poisons
    /// the log on any other.
    fn fail_unless_retriable<T>(&mut self, result: Result<T>) -> Result<T> {
        match result {
            Err(error) if error.is_retriable() => {
                // Debug: a caller retrying on a full disk would repeat this many times a second;
                // the broker logs when its writes stall and when they land again.
                tracing::debug!(dir = %self.dir.display(), %error, "cannot reserve disk for an append");
                Err(error)
            }
            other => self.poison(other),
        }
    }

    /// Records the first write/fsync failure; the error itself goes back to the caller.
    fn poison<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(error) = &result {
            if self.poisoned.is_none() {
                tracing::error!(dir = %self.dir.display(), %error, "log poisoned");
                self.poisoned = Some(error.to_string());
            }
        }
        result
    }

    fn check_batch(&self, entries: &[Entry<'_>]) -> Result<()> {
        let mut previous_term = self.last_term();
        for (expected_index, entry) in (self.last_index() + 1..).zip(entries) {
            if entry.index != expected_index {
                return Err(StorageError::NonContiguous {
                    expected: expected_index,
                    got: entry.index,
                });
            }
            if entry.term < previous_term {
                return Err(StorageError::TermRegression {
                    index: entry.index,
                    term: entry.term,
                    previous_term,
                });
            }
            if entry.payload.len() as u64 > u64::from(self.options.max_entry_bytes) {
                return Err(StorageError::EntryTooLarge {
                    bytes: entry.payload.len() as u64,
                    max_bytes: u64::from(self.options.max_entry_bytes),
                });
            }
            previous_term = entry.term;
        }
        Ok(())
    }

    /// An empty active segment too small for the next frame (made under a smaller
    /// `segment_bytes`) cannot be rolled past: a new segment would take its name. Drop it if
    /// a previous segment can take over, else replace it by a reset to the same index.
    fn make_room_in_empty_active(&mut self, first_payload_bytes: usize) -> Result<()> {
        let active = self.active();
        let frame_bytes = encoded_frame_bytes(first_payload_bytes) as u64;
        if !active.is_empty() || frame_bytes <= active.remaining_bytes() {
            return Ok(());
        }
        let base_index = active.base_index;
        if self.segments.len() == 1 {
            return self.reset(base_index);
        }
        let removed = remove_segment_files(self.io.as_ref(), &self.dir, base_index)
            .and_then(|()| sync_dir(self.io.as_ref(), &self.dir));
        self.poison(removed)?;
        self.segments.pop();
        Ok(())
    }

    /// Splits a batch into runs of entries per segment: `chunks[0]` entries go into the active
    /// segment (maybe none), each later chunk fills one new segment.
    fn plan_chunks(&self, entries: &[Entry<'_>]) -> Vec<usize> {
        let fresh_room_bytes = self.options.segment_bytes - SEGMENT_HEADER_BYTES as u64;
        let mut room_bytes = self.active().remaining_bytes();
        let mut chunks = vec![0];
        for entry in entries {
            let frame_bytes = encoded_frame_bytes(entry.payload.len()) as u64;
            if frame_bytes > room_bytes {
                debug_assert!(
                    frame_bytes <= fresh_room_bytes,
                    "validate() guarantees a fit"
                );
                chunks.push(0);
                room_bytes = fresh_room_bytes;
            }
            room_bytes -= frame_bytes;
            *chunks.last_mut().expect("non-empty") += 1;
        }
        chunks
    }

    /// Creates the new segments a batch needs before anything is written, so a full disk
    /// leaves the log unchanged. A crash after this leaves empty trailing segments, which
    /// recovery removes.
    fn create_segments_for(
        &mut self,
        chunks: &[usize],
        entries: &[Entry<'_>],
    ) -> Result<Vec<Segment>> {
        let mut created: Vec<Segment> = Vec::new();
        let mut base_index = self.last_index() + 1 + chunks[0] as u64;
        let mut next = chunks[0];
        for &count in &chunks[1..] {
            let through = SEGMENT_HEADER_BYTES as u64 + frames_bytes(&entries[next..next + count]);
            let made = Segment::create(
                self.io.as_ref(),
                &self.dir,
                base_index,
                self.options.segment_bytes,
                reservation_end(0, through, self.options.segment_bytes),
                0,
            );
            match made {
                Ok(segment) => created.push(segment),
                Err(error) => return self.undo_created_segments(created, error),
            }
            base_index += count as u64;
            next += count;
        }
        Ok(created)
    }

    fn undo_created_segments(
        &mut self,
        created: Vec<Segment>,
        error: StorageError,
    ) -> Result<Vec<Segment>> {
        let retriable = error.is_retriable();
        for segment in created.iter().rev() {
            let removed = remove_segment_files(self.io.as_ref(), &self.dir, segment.base_index);
            self.poison(removed)?;
        }
        if !created.is_empty() {
            let synced = sync_dir(self.io.as_ref(), &self.dir);
            self.poison(synced)?;
        }
        if retriable {
            // Debug, as for a refused reservation: a caller retrying would repeat it.
            tracing::debug!(dir = %self.dir.display(), %error, "cannot create a segment");
            Err(error)
        } else {
            self.poison(Err(error))
        }
    }

    /// Seals the active segment before the next one receives writes: under `always` and
    /// `interval` its data is fdatasynced first, so a sealed segment is never torn by a power
    /// loss (recovery trusts sealed segments). Its index files are then written in full and
    /// closed.
    fn seal_active(&mut self) -> Result<()> {
        let policy = self.options.fsync;
        let io = self.io.clone();
        let dir = self.dir.clone();
        let active = self.active_mut();
        let mut sealed = Ok(());
        if policy != FsyncPolicy::Never {
            sealed = active.sync_data();
        }
        if sealed.is_ok() {
            active.persist_indexes(io.as_ref(), &dir);
        }
        active.index.close();
        active.offsets.close();
        let last_index = active.last_index;
        let all_clean = !active.dirty;
        self.poison(sealed)?;
        if all_clean && self.segments.iter().all(|segment| !segment.dirty) {
            self.durable_index = last_index;
        }
        Ok(())
    }

    /// Encodes `entries` into the reusable buffer and writes them to the active segment with
    /// one positioned write.
    fn write_chunk(&mut self, entries: &[Entry<'_>]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buffer = std::mem::take(&mut self.write_buffer);
        buffer.clear();
        for entry in entries {
            frame::encode(
                &mut buffer,
                entry.index,
                entry.term,
                entry.kind,
                entry.payload,
            );
        }
        self.writes += 1;
        let active = self.active_mut();
        debug_assert!(buffer.len() as u64 <= active.remaining_bytes());
        debug_assert_eq!(entries[0].index, active.last_index + 1);
        let start_position = active.end_position;
        active.dirty = true;
        let written = active
            .file
            .write_at(&buffer, start_position)
            .map_err(|source| StorageError::io("write", &active.path, source));
        self.write_buffer = buffer;
        self.poison(written)?;
        let interval_bytes = self.options.index_interval_bytes;
        let active = self.active_mut();
        let mut position = start_position;
        for entry in entries {
            active.note_frame(entry.index, position, entry.offset_key, interval_bytes);
            position += encoded_frame_bytes(entry.payload.len()) as u64;
        }
        let last = entries.last().expect("non-empty");
        active.end_position = position;
        active.last_index = last.index;
        active.last_term = last.term;
        Ok(())
    }

    /// Applies the fsync policy: `always` fdatasyncs now, `interval` only if the interval has
    /// passed since the last fdatasync, `never` does nothing. There is no background timer:
    /// under `interval` the caller (the node driver) calls this after each batch and on its
    /// ticks, so an idle log still gets its last writes synced.
    pub fn sync(&mut self) -> Result<()> {
        match self.options.fsync {
            FsyncPolicy::Always => self.sync_now(),
            FsyncPolicy::Interval { ms } => {
                if self.last_sync.elapsed() >= Duration::from_millis(ms) {
                    self.sync_now()
                } else {
                    self.check_writable()
                }
            }
            FsyncPolicy::Never => self.check_writable(),
        }
    }

    /// Starts a sync the fsync policy asks for now (`always`: whenever something is unsynced;
    /// `interval`: once the interval has passed; `never`: never), to run with
    /// [`PendingSync::run`] on any thread while appends go on. `None`: nothing to wait for,
    /// the writes so far count as acknowledged under the policy (as after [`Log::sync`]).
    pub fn begin_sync(&mut self) -> Result<Option<PendingSync>> {
        self.check_writable()?;
        match self.options.fsync {
            FsyncPolicy::Always => {}
            FsyncPolicy::Interval { ms } => {
                if self.last_sync.elapsed() < Duration::from_millis(ms) {
                    return Ok(None);
                }
            }
            FsyncPolicy::Never => return Ok(None),
        }
        let files: Vec<_> = self
            .segments
            .iter()
            .filter(|segment| segment.dirty)
            .map(|segment| (segment.file.clone(), segment.path.clone()))
            .collect();
        if files.is_empty() {
            return Ok(None);
        }
        Ok(Some(PendingSync {
            files,
            upto: self.last_index(),
            writes: self.writes,
            generation: self.generation,
            began: Instant::now(),
        }))
    }

    /// Takes back a finished [`PendingSync`]: `Ok(true)` when everything up to its `upto` is
    /// now durable, `Ok(false)` when the entries it covered were rewritten since it began (the
    /// caller learns nothing from it). A failed fdatasync poisons the log like any other.
    ///
    /// Index slots are written only when nothing was written after the sync began: slots must
    /// point at durable frames only (index.rs), and under steady load the next idle moment, a
    /// seal or a shutdown writes them; until then recovery scans the active segment from its
    /// last durable slot.
    pub fn finish_sync(&mut self, sync: PendingSync, result: Result<()>) -> Result<bool> {
        self.check_writable()?;
        self.poison(result)?;
        if sync.generation != self.generation {
            return Ok(false);
        }
        self.last_sync = self.last_sync.max(sync.began);
        debug_assert!(sync.upto <= self.last_index());
        self.durable_index = self.durable_index.max(sync.upto);
        if sync.writes == self.writes {
            for segment in &mut self.segments {
                segment.dirty = false;
            }
            let (io, dir) = (self.io.clone(), self.dir.clone());
            self.active_mut().persist_indexes(io.as_ref(), &dir);
        }
        Ok(true)
    }

    /// fdatasyncs every segment with unsynced writes, whatever the policy; then writes the
    /// index slots of the now durable frames (see index.rs for why only durable ones; a
    /// failure to write those hints is logged and retried, it does not poison the log).
    pub fn sync_now(&mut self) -> Result<()> {
        self.check_writable()?;
        // Unsynced segments are always a suffix: sealing syncs (except under `never`).
        let dirty_from = self
            .segments
            .iter()
            .rposition(|segment| !segment.dirty)
            .map_or(0, |clean| clean + 1);
        debug_assert!(self.segments[..dirty_from]
            .iter()
            .all(|segment| !segment.dirty));
        for segment_number in dirty_from..self.segments.len() {
            let synced = self.segments[segment_number].sync_data();
            self.poison(synced)?;
        }
        self.durable_index = self.last_index();
        self.last_sync = Instant::now();
        let (io, dir) = (self.io.clone(), self.dir.clone());
        self.active_mut().persist_indexes(io.as_ref(), &dir);
        Ok(())
    }

    fn segment_number_for(&self, index: u64) -> usize {
        debug_assert!(self.first_index() <= index);
        self.segments
            .partition_point(|segment| segment.base_index <= index)
            - 1
    }

    fn out_of_range(&self, index: u64) -> StorageError {
        StorageError::OutOfRange {
            index,
            first: self.first_index(),
            last: self.last_index(),
        }
    }

    /// Reads entries `[from, to_exclusive)`, stopping once their payloads would exceed
    /// `max_bytes` (but always at least one entry when `from < to_exclusive`). Both bounds
    /// must lie in `[first_index, last_index + 1]`. Every frame's CRC is verified; a bad one is
    /// `Corruption` naming the file and byte offset.
    pub fn read(&self, from: u64, to_exclusive: u64, max_bytes: u64) -> Result<Vec<StoredEntry>> {
        let entries = self
            .read_entries(from, to_exclusive, max_bytes)
            .inspect_err(log_corruption)?;
        if let Some(last) = entries.last() {
            self.handed_out_watermark
                .fetch_max(last.index, Ordering::Relaxed);
        }
        Ok(entries)
    }

    /// [`Log::read`] for entries that may still be truncated (Raft's uncommitted suffix, read
    /// to replicate it): the payloads are copied out of the map, so the read does not raise
    /// the handed-out watermark and a later `truncate_suffix` over them stays legal.
    pub fn read_copied(
        &self,
        from: u64,
        to_exclusive: u64,
        max_bytes: u64,
    ) -> Result<Vec<StoredEntry>> {
        let mut entries = self
            .read_entries(from, to_exclusive, max_bytes)
            .inspect_err(log_corruption)?;
        for entry in &mut entries {
            entry.payload = Bytes::copy_from_slice(&entry.payload);
        }
        Ok(entries)
    }

    fn read_entries(
        &self,
        from: u64,
        to_exclusive: u64,
        max_bytes: u64,
    ) -> Result<Vec<StoredEntry>> {
        let end = self.last_index() + 1;
        if from < self.first_index() || from > end {
            return Err(self.out_of_range(from));
        }
        if to_exclusive < from || to_exclusive > end {
            return Err(self.out_of_range(to_exclusive));
        }
        let mut entries = Vec::new();
        let mut payload_bytes = 0;
        let mut index = from;
        let mut segment_number = if from < to_exclusive {
            self.segment_number_for(from)
        } else {
            self.segments.len()
        };
        while index < to_exclusive {
            let segment = &self.segments[segment_number];
            let segment_end = to_exclusive.min(segment.last_index + 1);
            if index < segment_end {
                let more = segment.read_into(
                    index,
                    segment_end,
                    max_bytes,
                    &mut entries,
                    &mut payload_bytes,
                )?;
                if !more {
                    break;
                }
                index = segment_end;
            }
            segment_number += 1;
        }
        Ok(entries)
    }

    /// Term of entry `index` in `[first_index, last_index]`.
    pub fn term_at(&self, index: u64) -> Result<u64> {
        if index < self.first_index() || index > self.last_index() {
            return Err(self.out_of_range(index));
        }
        if index == self.last_index() {
            return Ok(self.last_term());
        }
        self.segments[self.segment_number_for(index)]
            .term_at(index)
            .inspect_err(log_corruption)
    }

    /// An entry index at or before the entry holding message `offset`: the floor in the sparse
    /// `.offsets` (the caller scans forward from it). `None` if `offset` is below the first
    /// indexed offset or nothing is indexed.
    pub fn find_offset(&self, offset: u64) -> Option<u64> {
        self.segments.iter().rev().find_map(|segment| {
            segment
                .offsets
                .floor(offset)
                .map(|slot| segment.base_index + u64::from(slot.relative_index))
        })
    }

    /// Removes entries `[from_index, last_index]` (Raft conflict resolution). Later segments
    /// are deleted (newest first, directory fsynced after each) before the removed bytes of the
    /// remaining segment are zeroed and fdatasynced, so a crash at any point leaves a prefix of
    /// the old log and removed entries never reappear.
    ///
    /// # Panics
    /// If `from_index` is at or below an index `read` handed out: those bytes are being read
    /// (docs/ARCHITECTURE.md "The driver contract"; Raft only truncates above its commit index).
    /// The watermark belongs to this `Log` value: payloads read through an earlier `Log` of the
    /// same directory must be dropped before a reopened log truncates below them.
    pub fn truncate_suffix(&mut self, from_index: u64) -> Result<()> {
        self.check_writable()?;
        if from_index < self.first_index() || from_index > self.last_index() + 1 {
            return Err(self.out_of_range(from_index));
        }
        let watermark = self.handed_out_watermark.load(Ordering::Relaxed);
        assert!(
            from_index > watermark,
            "truncate_suffix({from_index}) would rewrite bytes handed out up to index {watermark}"
        );
        if from_index == self.last_index() + 1 {
            return Ok(());
        }
        let keep_segment = self.segment_number_for(from_index);
        let position = self.segments[keep_segment].locate(from_index)?;
        let term_before = match from_index - 1 {
            0 => 0,
            index if index < self.first_index() => 0,
            index => self.term_at(index)?,
        };
        self.generation += 1;
        let truncated = self.truncate_from(keep_segment, from_index, position, term_before);
        self.poison(truncated)?;
        self.debug_check();
        Ok(())
    }

    fn truncate_from(
        &mut self,
        keep_segment: usize,
        from_index: u64,
        position: u64,
        term_before: u64,
    ) -> Result<()> {
        let (io, dir) = (self.io.clone(), self.dir.clone());
        while self.segments.len() > keep_segment + 1 {
            let segment = self.segments.pop().expect("more than one");
            remove_segment_files(io.as_ref(), &dir, segment.base_index)?;
            sync_dir(io.as_ref(), &dir)?;
        }
        let segment = self.active_mut();
        let relative_index = u32::try_from(from_index - segment.base_index).expect("in segment");
        segment.index.truncate_from_relative_index(relative_index);
        segment.offsets.truncate_from_relative_index(relative_index);
        segment.reset_slot_positions();
        // Index files first, durably: once no slot points at or past `position`, recovery
        // starts its scan below the truncation point whatever part of the zeroing survives a
        // power loss, so a torn zeroing is found as a cut instead of skipped as a hole. (Zeroing
        // first would leave old slots past a torn hole on disk.) A crash before the zeroes are
        // durable may bring the old suffix back: that is the state before this call, which
        // acknowledged nothing new.
        // The kept slots may point at frames appended since the last fdatasync: make those
        // durable before the slots are (index.rs: slots only ever point at durable frames), or
        // a power loss could lose an earlier unsynced frame below a durable slot, a hole
        // recovery would start its scan past.
        segment.sync_data()?;
        segment.index.persist_durably_or_remove(io.as_ref(), &dir)?;
        segment
            .offsets
            .persist_durably_or_remove(io.as_ref(), &dir)?;
        let segment = self.active_mut();
        let old_end = segment.end_position;
        segment.dirty = true;
        segment
            .zero(position, old_end)
            .map_err(|source| StorageError::io("zero", &segment.path, source))?;
        segment.end_position = position;
        segment.last_index = from_index - 1;
        segment.last_term = term_before;
        // Truncated entries must never come back once this returns.
        self.sync_now()
    }

    /// Each segment's span and size, oldest first; the last is the active one. What retention
    /// judges (a segment goes whole or not at all).
    pub fn segment_spans(&self) -> Vec<SegmentSpan> {
        self.segments
            .iter()
            .map(|segment| SegmentSpan {
                base_index: segment.base_index,
                last_index: segment.last_index,
                bytes: segment.end_position,
            })
            .collect()
    }

    /// Bytes the segments hold (headers and frames; not the reserved space past them).
    pub fn size_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|segment| segment.end_position)
            .sum()
    }

    /// Seals the active segment and starts an empty one after it, so everything written so far
    /// can be deleted as whole segments (Kafka's `segment.ms` roll, and a compaction point at the
    /// end of the active segment). Nothing happens to an empty active segment. On a retriable
    /// error (a full disk) the log is unchanged and usable.
    pub fn roll(&mut self) -> Result<()> {
        self.check_writable()?;
        if self.active().is_empty() {
            return Ok(());
        }
        let made = Segment::create(
            self.io.as_ref(),
            &self.dir,
            self.last_index() + 1,
            self.options.segment_bytes,
            EMPTY_SEGMENT_RESERVED_BYTES.min(self.options.segment_bytes),
            // An empty active segment answers `last_term` for the whole log.
            self.last_term(),
        );
        let segment = match made {
            Ok(segment) => segment,
            Err(error) => return self.undo_created_segments(Vec::new(), error).map(drop),
        };
        self.seal_active()?;
        self.segments.push(segment);
        self.debug_check();
        Ok(())
    }

    /// Deletes whole segments whose entries are all `<= up_to_index`, oldest first (directory
    /// fsynced after each, so a crash leaves a contiguous log). Never deletes the active
    /// segment. `first_index()` becomes the first kept segment's base.
    pub fn compact_prefix(&mut self, up_to_index: u64) -> Result<()> {
        self.check_writable()?;
        let io = self.io.clone();
        let mut removed = 0;
        let mut result = Ok(());
        while removed + 1 < self.segments.len() && self.segments[removed].last_index <= up_to_index
        {
            let base_index = self.segments[removed].base_index;
            result = remove_segment_files(io.as_ref(), &self.dir, base_index)
                .and_then(|()| sync_dir(io.as_ref(), &self.dir));
            if result.is_err() {
                break;
            }
            removed += 1;
        }
        self.segments.drain(..removed);
        self.poison(result)?;
        self.debug_check();
        Ok(())
    }

    /// Drops every entry and restarts the log empty with `first_index() == next_index`
    /// (InstallSnapshot). Durable on return.
    ///
    /// The new segment is first made durable as `<next:020>.log.reset`: that is the commit
    /// point. Then the old segments go, the directory is fsynced, and the file is renamed into
    /// place. Recovery finishes a reset whose `.reset` file has a valid header.
    pub fn reset(&mut self, next_index: u64) -> Result<()> {
        self.check_writable()?;
        if next_index == 0 || next_index > MAX_INDEX {
            return Err(self.out_of_range(next_index));
        }
        let io = self.io.clone();
        let reset_path = file_path(&self.dir, next_index, FileKind::Reset);
        // A stale `.reset` (from a failed reset) would make create fail: clear it.
        let _ = io.remove(&reset_path);
        let file = match create_segment_file(
            io.as_ref(),
            &reset_path,
            next_index,
            self.options.segment_bytes,
            EMPTY_SEGMENT_RESERVED_BYTES.min(self.options.segment_bytes),
        ) {
            Ok(file) => file,
            Err(error) if error.is_retriable() => return Err(error),
            Err(error) => return self.poison(Err(error)),
        };
        drop(file);
        self.generation += 1;
        let installed = self.install_reset(next_index, &reset_path);
        let segment = self.poison(installed)?;
        self.segments = vec![segment];
        self.durable_index = next_index - 1;
        // The new file holds no handed-out bytes (old maps live on unchanged).
        self.handed_out_watermark.store(0, Ordering::Relaxed);
        self.debug_check();
        Ok(())
    }

    fn install_reset(&mut self, next_index: u64, reset_path: &Path) -> Result<Segment> {
        let io = self.io.as_ref();
        sync_dir(io, &self.dir)?;
        for segment in self.segments.iter().rev() {
            remove_segment_files(io, &self.dir, segment.base_index)?;
        }
        remove_segment_files(io, &self.dir, next_index)?;
        sync_dir(io, &self.dir)?;
        finish_reset(io, &self.dir, next_index, reset_path)
    }

    /// Checks the log's invariants (debug builds): contiguous segments, positions in range.
    fn debug_check(&self) {
        if cfg!(debug_assertions) {
            for pair in self.segments.windows(2) {
                debug_assert_eq!(pair[0].last_index + 1, pair[1].base_index);
            }
            for segment in &self.segments {
                debug_assert!(segment.end_position <= segment.capacity_bytes);
                debug_assert!(segment.last_index + 1 >= segment.base_index);
            }
            debug_assert!(self.durable_index <= self.last_index());
        }
    }
}

/// Renames a durable `.reset` file into place and opens it as the only, empty segment.
/// The caller removed every other segment and fsynced the directory.
pub(crate) fn finish_reset(
    io: &dyn Io,
    dir: &Path,
    next_index: u64,
    reset_path: &Path,
) -> Result<Segment> {
    let log_path = file_path(dir, next_index, FileKind::Log);
    io.rename(reset_path, &log_path)
        .map_err(|source| StorageError::io("rename", reset_path, source))?;
    sync_dir(io, dir)?;
    Segment::open(io, dir, next_index)
}

fn log_corruption(error: &StorageError) {
    if let StorageError::Corruption {
        path,
        offset,
        reason,
    } = error
    {
        tracing::error!(path = %path.display(), offset, reason, "corrupt frame in the log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Log>();
        assert_send_sync::<StoredEntry>();
    }
}
