//! The sparse indexes beside each segment: `.index` (entry index -> byte position) and
//! `.offsets` (message offset -> byte position), one slot per ~`index_interval_bytes` of frames
//! (docs/FORMAT.md "Entry index", "Offset index").
//!
//! They are hints, never the truth: every slot is checked against the frame it points at before
//! it is used, and a missing or garbage file is rebuilt from the log. Both files are small
//! (8 or 16 bytes per 4 KiB of log: 256 or 512 KiB for a full 128 MiB segment), so they are
//! read fully into a `Vec` on open rather than memory-mapped: the slots must be validated
//! anyway, a `Vec` can grow and shrink without remapping, and new slots reach the file by
//! positioned writes like everything else.
//!
//! Slots reach the file only for frames already fdatasynced (the log persists them after a
//! sync), so after a power loss a slot never points past a hole in the log; recovery may then
//! start its scan at the last slot without skipping a torn region.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Result, StorageError};
use crate::frame::FRAME_HEADER_BYTES;
use crate::io::{Io, IoFile};
use crate::segment::SEGMENT_HEADER_BYTES;

/// A fixed-size slot of one of the two index files.
pub(crate) trait Slot: Copy + std::fmt::Debug {
    /// Bytes of one slot on disk.
    const BYTES: usize;
    /// What lookups search by: relative entry index for `.index`, message offset for `.offsets`.
    fn key(&self) -> u64;
    fn relative_index(&self) -> u32;
    fn position(&self) -> u32;
    fn encode(&self, out: &mut Vec<u8>);
    /// `bytes.len() == Self::BYTES`.
    fn decode(bytes: &[u8]) -> Self;
}

/// `.index` slot: `relative_index u32 | position u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexSlot {
    pub relative_index: u32,
    pub position: u32,
}

/// `.offsets` slot: `offset u64 | relative_index u32 | position u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetSlot {
    pub offset: u64,
    pub relative_index: u32,
    pub position: u32,
}

impl Slot for IndexSlot {
    const BYTES: usize = 8;

    fn key(&self) -> u64 {
        u64::from(self.relative_index)
    }
    fn relative_index(&self) -> u32 {
        self.relative_index
    }
    fn position(&self) -> u32 {
        self.position
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_index.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Self {
        IndexSlot {
            relative_index: u32_at(bytes, 0),
            position: u32_at(bytes, 4),
        }
    }
}

impl Slot for OffsetSlot {
    const BYTES: usize = 16;

    fn key(&self) -> u64 {
        self.offset
    }
    fn relative_index(&self) -> u32 {
        self.relative_index
    }
    fn position(&self) -> u32 {
        self.position
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.relative_index.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Self {
        let mut offset = [0; 8];
        offset.copy_from_slice(&bytes[..8]);
        OffsetSlot {
            offset: u64::from_le_bytes(offset),
            relative_index: u32_at(bytes, 8),
            position: u32_at(bytes, 12),
        }
    }
}

const _: () = assert!(IndexSlot::BYTES == 4 + 4);
const _: () = assert!(OffsetSlot::BYTES == 8 + 4 + 4);

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut field = [0; 4];
    field.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(field)
}

/// The slots of one index file, in memory, plus how much of them the file holds.
#[derive(Debug)]
pub(crate) struct SparseIndex<S: Slot> {
    path: PathBuf,
    slots: Vec<S>,
    /// `slots[..persisted_slots]` are in the file (unless `file_stale`).
    persisted_slots: usize,
    /// The file holds something other than `slots[..persisted_slots]` (stale slots, garbage):
    /// the next persist rewrites it from scratch.
    file_stale: bool,
    /// Open only while the segment is active; sealed segments' index files are closed.
    file: Option<Arc<dyn IoFile>>,
}

impl<S: Slot> SparseIndex<S> {
    /// An index with no slots whose file (if any) will be overwritten.
    pub fn new_empty(path: PathBuf) -> Self {
        SparseIndex {
            path,
            slots: Vec::new(),
            persisted_slots: 0,
            file_stale: true,
            file: None,
        }
    }

    /// Reads the file. `Err(reason)` when it is missing or fails the structural checks (the
    /// caller rebuilds); slots are checked against the log by the caller.
    pub fn load(io: &dyn Io, path: PathBuf, capacity_bytes: u64) -> Result<Self, (Self, String)> {
        match read_slots::<S>(io, &path, capacity_bytes) {
            Ok(slots) => Ok(SparseIndex {
                persisted_slots: slots.len(),
                slots,
                file_stale: false,
                file: None,
                path,
            }),
            Err(reason) => Err((SparseIndex::new_empty(path), reason)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn slots(&self) -> &[S] {
        &self.slots
    }

    pub fn last(&self) -> Option<S> {
        self.slots.last().copied()
    }

    pub fn push(&mut self, slot: S) {
        debug_assert!(self.slots.last().is_none_or(|last| {
            last.key() < slot.key()
                && last.position() < slot.position()
                && last.relative_index() < slot.relative_index()
        }));
        self.slots.push(slot);
    }

    /// How many slots have `key() <= key` (slots are sorted by key).
    pub fn floor_count(&self, key: u64) -> usize {
        self.slots.partition_point(|slot| slot.key() <= key)
    }

    /// The last slot with `key() <= key`.
    pub fn floor(&self, key: u64) -> Option<S> {
        self.floor_count(key)
            .checked_sub(1)
            .map(|slot_number| self.slots[slot_number])
    }

    /// Keeps only the first `slot_count` slots.
    pub fn truncate(&mut self, slot_count: usize) {
        if slot_count >= self.slots.len() {
            return;
        }
        self.slots.truncate(slot_count);
        if slot_count < self.persisted_slots {
            // The file holds slots we just dropped; they must not come back after a crash.
            self.file_stale = true;
        }
    }

    /// Drops slots for relative indexes `>= relative_index`.
    pub fn truncate_from_relative_index(&mut self, relative_index: u32) {
        let keep = self
            .slots
            .partition_point(|slot| slot.relative_index() < relative_index);
        self.truncate(keep);
    }

    /// True if the file does not hold exactly the in-memory slots.
    pub fn needs_persist(&self) -> bool {
        self.file_stale || self.persisted_slots < self.slots.len()
    }

    /// Writes the slots the file lacks (or rewrites the file if stale). No fsync: the file is a
    /// hint; `sync` makes a rewrite durable where stale slots must not come back.
    pub fn persist(&mut self, io: &dyn Io, dir: &Path) -> Result<()> {
        if !self.needs_persist() {
            return Ok(());
        }
        let first_slot = if self.file_stale {
            0
        } else {
            self.persisted_slots
        };
        let mut buffer = Vec::with_capacity((self.slots.len() - first_slot) * S::BYTES);
        for slot in &self.slots[first_slot..] {
            slot.encode(&mut buffer);
        }
        let file = self.open_file(io, dir)?;
        let error = |op, source| StorageError::io(op, file.path(), source);
        file.write_at(&buffer, (first_slot * S::BYTES) as u64)
            .map_err(|source| error("write index", source))?;
        if self.file_stale {
            file.set_len((self.slots.len() * S::BYTES) as u64)
                .map_err(|source| error("truncate index", source))?;
        }
        self.persisted_slots = self.slots.len();
        self.file_stale = false;
        Ok(())
    }

    /// Persists and fdatasyncs, so that dropped slots cannot come back after a power loss.
    pub fn persist_durably(&mut self, io: &dyn Io, dir: &Path) -> Result<()> {
        self.persist(io, dir)?;
        let file = self.open_file(io, dir)?;
        file.sync_data()
            .map_err(|source| StorageError::io("fdatasync index", &self.path, source))
    }

    /// Rewrites the file durably, or if that fails removes it (a missing index is rebuilt on
    /// open): either way no dropped slot survives a crash. An error only if both fail.
    pub fn persist_durably_or_remove(&mut self, io: &dyn Io, dir: &Path) -> Result<()> {
        let Err(error) = self.persist_durably(io, dir) else {
            return Ok(());
        };
        tracing::warn!(path = %self.path.display(), %error, "cannot rewrite an index file; removing it");
        self.file = None;
        self.file_stale = true;
        match io.remove(&self.path) {
            Ok(()) => {}
            Err(missing) if missing.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(StorageError::io("remove index", &self.path, source)),
        }
        io.sync_dir(dir)
            .map_err(|source| StorageError::io("fsync dir", dir, source))
    }

    /// Persists if possible. The file is a hint over frames that are already durable, so a
    /// failure (a full disk, an I/O error) is logged, not fatal: the file is rewritten in full
    /// at the next try, and recovery rebuilds whatever it lacks.
    pub fn persist_best_effort(&mut self, io: &dyn Io, dir: &Path) {
        if let Err(error) = self.persist(io, dir) {
            tracing::warn!(path = %self.path.display(), %error, "cannot write an index file; will retry");
            self.file_stale = true;
        }
    }

    /// Creates the (empty) file of a new segment's index, so a full disk shows up with the
    /// segment's creation (retriable) rather than at a later sync. The caller fsyncs the
    /// directory.
    pub fn create_file(&mut self, io: &dyn Io) -> Result<()> {
        let file = io
            .create(&self.path, 0)
            .map_err(|source| StorageError::io("create index", &self.path, source))?;
        self.file = Some(file);
        self.slots.clear();
        self.persisted_slots = 0;
        self.file_stale = false;
        Ok(())
    }

    /// Closes the file handle (sealed segments keep no index file open).
    pub fn close(&mut self) {
        self.file = None;
    }

    fn open_file(&mut self, io: &dyn Io, dir: &Path) -> Result<Arc<dyn IoFile>> {
        if let Some(file) = &self.file {
            return Ok(file.clone());
        }
        let file = match io.open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let file = io
                    .create(&self.path, 0)
                    .map_err(|source| StorageError::io("create index", &self.path, source))?;
                io.sync_dir(dir)
                    .map_err(|source| StorageError::io("fsync dir", dir, source))?;
                file
            }
            Err(source) => return Err(StorageError::io("open index", &self.path, source)),
        };
        self.file = Some(file.clone());
        Ok(file)
    }
}

/// Reads and structurally checks an index file.
fn read_slots<S: Slot>(io: &dyn Io, path: &Path, capacity_bytes: u64) -> Result<Vec<S>, String> {
    let file = io
        .open(path)
        .map_err(|error| format!("cannot open: {error}"))?;
    let len_bytes = file
        .len_bytes()
        .map_err(|error| format!("cannot stat: {error}"))?;
    // No more slots than frames fit the segment (each frame is at least 25 bytes).
    let max_slots = capacity_bytes / FRAME_HEADER_BYTES as u64 + 1;
    if len_bytes % S::BYTES as u64 != 0 || len_bytes / S::BYTES as u64 > max_slots {
        return Err(format!("length {len_bytes} is not a whole number of slots"));
    }
    let mut bytes = vec![0; len_bytes as usize];
    file.read_at(&mut bytes, 0)
        .map_err(|error| format!("cannot read: {error}"))?;
    let slots: Vec<S> = bytes.chunks_exact(S::BYTES).map(S::decode).collect();
    check_slots(&slots, capacity_bytes)?;
    Ok(slots)
}

/// Slots must increase strictly in key, index and position, and each position must be able to
/// hold the frame its relative index names: frame `r` starts at least `24 + 25 * r` bytes in.
pub(crate) fn check_slots<S: Slot>(slots: &[S], capacity_bytes: u64) -> Result<(), String> {
    let header_bytes = SEGMENT_HEADER_BYTES as u64;
    for (slot_number, slot) in slots.iter().enumerate() {
        let position = u64::from(slot.position());
        let earliest_position =
            header_bytes + u64::from(slot.relative_index()) * FRAME_HEADER_BYTES as u64;
        if position < earliest_position || position + FRAME_HEADER_BYTES as u64 > capacity_bytes {
            return Err(format!(
                "slot {slot_number} position {position} out of range"
            ));
        }
        if let Some(previous) = slot_number.checked_sub(1).map(|number| slots[number]) {
            let increasing = previous.key() < slot.key()
                && previous.relative_index() < slot.relative_index()
                && previous.position() < slot.position();
            if !increasing {
                return Err(format!("slot {slot_number} does not increase"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::RealIo;

    fn slot(relative_index: u32, position: u32) -> IndexSlot {
        IndexSlot {
            relative_index,
            position,
        }
    }

    #[test]
    fn floor_finds_the_last_slot_at_or_before_a_key() {
        let mut index = SparseIndex::new_empty(PathBuf::from("x.index"));
        index.push(slot(10, 4000));
        index.push(slot(20, 8000));
        assert_eq!(index.floor(9), None);
        assert_eq!(index.floor(10), Some(slot(10, 4000)));
        assert_eq!(index.floor(19), Some(slot(10, 4000)));
        assert_eq!(index.floor(1000), Some(slot(20, 8000)));
        index.truncate_from_relative_index(20);
        assert_eq!(index.slots(), &[slot(10, 4000)]);
    }

    #[test]
    fn check_slots_rejects_what_cannot_be() {
        assert!(check_slots(&[slot(1, 49), slot(2, 4096)], 1 << 20).is_ok());
        // Frame 1 cannot start before byte 24 + 25.
        assert!(check_slots(&[slot(1, 48)], 1 << 20).is_err());
        assert!(check_slots(&[slot(2, 4096), slot(2, 8192)], 1 << 20).is_err());
        assert!(check_slots(&[slot(1, 4096), slot(2, 100)], 1 << 20).is_err());
        assert!(check_slots(&[slot(1, (1 << 20) - 10)], 1 << 20).is_err());
    }

    #[test]
    fn persist_appends_and_rewrites_after_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.offsets");
        let mut index = SparseIndex::<OffsetSlot>::new_empty(path.clone());
        for number in 1..=3u32 {
            index.push(OffsetSlot {
                offset: u64::from(number) * 100,
                relative_index: number,
                position: number * 4096,
            });
        }
        index.persist(&RealIo, dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 48);
        index.truncate_from_relative_index(2);
        index.persist_durably(&RealIo, dir.path()).unwrap();
        let loaded = SparseIndex::<OffsetSlot>::load(&RealIo, path.clone(), 1 << 20).unwrap();
        assert_eq!(loaded.slots(), index.slots());
        std::fs::write(&path, b"garbage!garbage!garbage!").unwrap();
        assert!(SparseIndex::<OffsetSlot>::load(&RealIo, path, 1 << 20).is_err());
    }
}
