//! One segment: a `<base:020>.log` file of `segment_bytes` holding a header and the frames of a
//! run of consecutive entries, its read-only map, and its two sparse indexes. The file is sparse:
//! disk is reserved in extents ahead of the frames ([`Segment::reserve_through`]).
//!
//! Layout (docs/FORMAT.md "Segment log"):
//!
//! ```text
//! byte 0     4         8            16         20          24
//!      | KEEL | version | base_index | reserved | header_crc | frame | frame | ... | zeroes
//! ```
//!
//! Worked example of the arithmetic: segment `00000000000000000101.log` has base index 101. Its
//! first frame starts at byte 24. If entries 101 and 102 carry 1000-byte payloads, their frames
//! are 1025 bytes each: 101 at bytes 24..1049, 102 at 1049..2074, so `end_position` is 2074
//! and entry 103 will go at byte 2074. With `index_interval_bytes` 4096 the first `.index` slot
//! is taken by the first frame starting at or after byte 24 + 4096 = 4120: entry 105 at byte
//! 4124 gets slot `(relative_index 4, position 4124)`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Result, StorageError};
use crate::frame::{self, Frame, FRAME_HEADER_BYTES};
use crate::index::{IndexSlot, OffsetSlot, Slot, SparseIndex};
use crate::io::{Io, IoFile};
use crate::limits::{
    MAX_INDEX, NONZERO_SCAN_BLOCK_BYTES, SEGMENT_EXTENT_BYTES, ZERO_FILL_CHUNK_BYTES,
};
use crate::log::StoredEntry;
use crate::mmap::map_read_only;

/// Bytes of the segment header; the first frame starts here.
pub const SEGMENT_HEADER_BYTES: usize = 24;
/// First four bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 4] = *b"KEEL";
/// Version of the segment and frame layout, and of what partition entries hold. Version 1 held
/// Keel's own record batches (magic 1); version 2 holds Kafka's RecordBatch v2 after the leader's
/// append time. A node refuses to open a version it does not write (docs/DECISIONS.md "One batch
/// format").
pub const SEGMENT_FORMAT_VERSION: u32 = 2;
const HEADER_CRC_AT: usize = 20;
const _: () = assert!(SEGMENT_HEADER_BYTES == 4 + 4 + 8 + 4 + 4);
const _: () = assert!(HEADER_CRC_AT + 4 == SEGMENT_HEADER_BYTES);

/// Encodes the header of a segment whose first entry is `base_index`.
pub fn encode_header(base_index: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0; SEGMENT_HEADER_BYTES];
    header[..4].copy_from_slice(&SEGMENT_MAGIC);
    header[4..8].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    header[8..16].copy_from_slice(&base_index.to_le_bytes());
    // bytes 16..20 reserved, zero
    let crc = crc32fast::hash(&header[..HEADER_CRC_AT]);
    header[HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Why a segment header is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// All zero (or the file is shorter than a header and zero): creation never finished.
    Unwritten,
    /// A well-formed header of a format version this build does not read: not corruption, and
    /// never to be repaired by cutting the log.
    UnsupportedVersion(u32),
    /// Anything else: corruption.
    Invalid(String),
}

/// Decodes a header, returning its base index.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<u64, HeaderError> {
    let header = &bytes[..bytes.len().min(SEGMENT_HEADER_BYTES)];
    if header.iter().all(|&byte| byte == 0) {
        return Err(HeaderError::Unwritten);
    }
    if header.len() < SEGMENT_HEADER_BYTES {
        return Err(HeaderError::Invalid(format!(
            "file of {} bytes is shorter than a header",
            header.len()
        )));
    }
    let crc = u32::from_le_bytes(header[HEADER_CRC_AT..].try_into().expect("4 bytes"));
    if crc != crc32fast::hash(&header[..HEADER_CRC_AT]) {
        return Err(HeaderError::Invalid("header crc mismatch".into()));
    }
    if header[..4] != SEGMENT_MAGIC {
        return Err(HeaderError::Invalid("bad magic".into()));
    }
    let version = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if version != SEGMENT_FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    Ok(u64::from_le_bytes(
        header[8..16].try_into().expect("8 bytes"),
    ))
}

/// What a file in the log directory is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Log,
    Index,
    Offsets,
    /// A new segment being installed by `reset` (see log.rs).
    Reset,
}

impl FileKind {
    fn extension(self) -> &'static str {
        match self {
            FileKind::Log => "log",
            FileKind::Index => "index",
            FileKind::Offsets => "offsets",
            FileKind::Reset => "log.reset",
        }
    }
}

/// `<base:020>.<extension>`, e.g. `00000000000000000101.log`.
pub(crate) fn file_name(base_index: u64, kind: FileKind) -> String {
    format!("{base_index:020}.{}", kind.extension())
}

pub(crate) fn file_path(dir: &Path, base_index: u64, kind: FileKind) -> PathBuf {
    dir.join(file_name(base_index, kind))
}

/// Parses one of our file names; `None` for anything else (base 0 is not ours either:
/// indexes start at 1; nor is a base above [`MAX_INDEX`]).
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, FileKind)> {
    let (stem, extension) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let base_index: u64 = stem
        .parse()
        .ok()
        .filter(|&base| base > 0 && base <= MAX_INDEX)?;
    let kind = [
        FileKind::Log,
        FileKind::Index,
        FileKind::Offsets,
        FileKind::Reset,
    ]
    .into_iter()
    .find(|kind| kind.extension() == extension)?;
    Some((base_index, kind))
}

/// Removes a segment's index files, then its log file (NotFound is fine). Index files go
/// first so that a crash leaves at worst a log without index (rebuilt), never an orphan index.
pub(crate) fn remove_segment_files(io: &dyn Io, dir: &Path, base_index: u64) -> Result<()> {
    for kind in [FileKind::Index, FileKind::Offsets, FileKind::Log] {
        let path = file_path(dir, base_index, kind);
        match io.remove(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(StorageError::io("remove", path, source)),
        }
    }
    Ok(())
}

pub(crate) fn sync_dir(io: &dyn Io, dir: &Path) -> Result<()> {
    io.sync_dir(dir)
        .map_err(|source| StorageError::io("fsync dir", dir, source))
}

/// Creates a file of `capacity_bytes` at `path` holding only a durable header for `base_index`,
/// with disk reserved for its first `reserved_bytes` (the rest is a hole until
/// [`Segment::reserve_through`] reserves it). A full disk is [`StorageError::DiskFull`]. On any
/// error no file is left behind (best effort: a leftover would be an unwritten segment, which
/// open removes).
pub(crate) fn create_segment_file(
    io: &dyn Io,
    path: &Path,
    base_index: u64,
    capacity_bytes: u64,
    reserved_bytes: u64,
) -> Result<Arc<dyn IoFile>> {
    debug_assert!(
        reserved_bytes >= SEGMENT_HEADER_BYTES as u64 && reserved_bytes <= capacity_bytes
    );
    let file = io
        .create(path, reserved_bytes)
        .map_err(|source| StorageError::io("create", path, source))?;
    let written = file
        .set_len(capacity_bytes)
        .and_then(|()| file.write_at(&encode_header(base_index), 0))
        .and_then(|()| file.sync_data());
    if let Err(source) = written {
        drop(file);
        let _ = io.remove(path);
        return Err(StorageError::io("write header", path, source));
    }
    Ok(file)
}

/// Where a reservation that must cover `needed_end` ends: whole extents from `start`, but never
/// past the segment's capacity.
pub(crate) fn reservation_end(start: u64, needed_end: u64, capacity_bytes: u64) -> u64 {
    let extents = needed_end
        .saturating_sub(start)
        .div_ceil(SEGMENT_EXTENT_BYTES)
        .max(1);
    start
        .saturating_add(extents.saturating_mul(SEGMENT_EXTENT_BYTES))
        .min(capacity_bytes)
}

/// A segment open for reading (all) and appending (the last one).
#[derive(Debug)]
pub(crate) struct Segment {
    pub base_index: u64,
    pub path: PathBuf,
    pub file: Arc<dyn IoFile>,
    /// Read-only map of the whole file; payloads are slices of it.
    pub map: Bytes,
    pub capacity_bytes: u64,
    /// Disk is reserved for bytes `0..reserved_end` (at least; a segment opened from disk starts
    /// at 0 and reserves from its end on). Writes never go past it.
    pub reserved_end: u64,
    /// Byte position just after the last frame (24 when empty).
    pub end_position: u64,
    /// `base_index - 1` when empty.
    pub last_index: u64,
    /// Term of the last entry at or before this segment's end (inherited from the previous
    /// segment when this one is empty; 0 if the whole log is empty).
    pub last_term: u64,
    pub index: SparseIndex<IndexSlot>,
    pub offsets: SparseIndex<OffsetSlot>,
    /// Position of the last `.index` slot (or the header end): the next slot goes at least
    /// `index_interval_bytes` after it.
    pub index_slot_position: u64,
    pub offsets_slot_position: u64,
    /// Holds writes not yet fdatasynced.
    pub dirty: bool,
}

impl Segment {
    /// Creates a new empty segment with its (empty) index files, durably: header
    /// fdatasynced, directory fsynced. A full disk is [`StorageError::DiskFull`] and, like any
    /// error here, leaves none of the three files behind (best effort; open removes leftovers).
    pub fn create(
        io: &dyn Io,
        dir: &Path,
        base_index: u64,
        capacity_bytes: u64,
        reserved_bytes: u64,
        last_term: u64,
    ) -> Result<Segment> {
        // Leftover index files of an earlier segment with this base would block creation.
        for kind in [FileKind::Index, FileKind::Offsets] {
            let path = file_path(dir, base_index, kind);
            match io.remove(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(StorageError::io("remove", path, source)),
            }
        }
        let path = file_path(dir, base_index, FileKind::Log);
        let file = create_segment_file(io, &path, base_index, capacity_bytes, reserved_bytes)?;
        let created = Segment::finish_create(io, dir, base_index, capacity_bytes, file, last_term)
            .map(|mut segment| {
                segment.reserved_end = reserved_bytes;
                segment
            });
        if created.is_err() {
            // All three files are ours: the .log was just created (create_new).
            let _ = remove_segment_files(io, dir, base_index);
        }
        created
    }

    fn finish_create(
        io: &dyn Io,
        dir: &Path,
        base_index: u64,
        capacity_bytes: u64,
        file: Arc<dyn IoFile>,
        last_term: u64,
    ) -> Result<Segment> {
        let mut segment = Segment::from_file(dir, base_index, file, last_term)?;
        if segment.capacity_bytes < capacity_bytes {
            let source = io::Error::other(format!(
                "created with {} bytes instead of {capacity_bytes}",
                segment.capacity_bytes
            ));
            return Err(StorageError::io("create", &segment.path, source));
        }
        segment.index.create_file(io)?;
        segment.offsets.create_file(io)?;
        sync_dir(io, dir)?;
        Ok(segment)
    }

    /// Opens an existing segment file; the caller recovers its state.
    pub fn open(io: &dyn Io, dir: &Path, base_index: u64) -> Result<Segment> {
        let path = file_path(dir, base_index, FileKind::Log);
        let file = io
            .open(&path)
            .map_err(|source| StorageError::io("open", &path, source))?;
        Segment::from_file(dir, base_index, file, 0)
    }

    /// An empty segment over `file` (whose header is already written).
    pub fn from_file(
        dir: &Path,
        base_index: u64,
        file: Arc<dyn IoFile>,
        last_term: u64,
    ) -> Result<Segment> {
        let path = file_path(dir, base_index, FileKind::Log);
        let capacity_bytes = file
            .len_bytes()
            .map_err(|source| StorageError::io("stat", &path, source))?;
        if capacity_bytes > u64::from(u32::MAX) {
            return Err(StorageError::Corruption {
                path,
                offset: 0,
                reason: format!("segment of {capacity_bytes} bytes exceeds 4 GiB"),
            });
        }
        let map = map_read_only(file.file(), capacity_bytes)
            .map_err(|source| StorageError::io("mmap", &path, source))?;
        Ok(Segment {
            index: SparseIndex::new_empty(file_path(dir, base_index, FileKind::Index)),
            offsets: SparseIndex::new_empty(file_path(dir, base_index, FileKind::Offsets)),
            base_index,
            path,
            file,
            map,
            capacity_bytes,
            reserved_end: 0,
            end_position: SEGMENT_HEADER_BYTES as u64,
            last_index: base_index - 1,
            last_term,
            index_slot_position: SEGMENT_HEADER_BYTES as u64,
            offsets_slot_position: SEGMENT_HEADER_BYTES as u64,
            dirty: false,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.last_index < self.base_index
    }

    pub fn remaining_bytes(&self) -> u64 {
        self.capacity_bytes.saturating_sub(self.end_position)
    }

    /// Reserves disk through byte `end` (in whole extents, within the capacity) unless it is
    /// already, so a write ending there cannot run out of space. A full disk is
    /// [`StorageError::DiskFull`], and nothing was written.
    pub fn reserve_through(&mut self, through: u64) -> Result<()> {
        // Written bytes hold their blocks; nothing to write needs none.
        if through <= self.reserved_end || through <= self.end_position {
            return Ok(());
        }
        debug_assert!(
            through <= self.capacity_bytes,
            "frames never pass the capacity"
        );
        // What is written is reserved already; a segment opened from disk starts there.
        let start = self.reserved_end.max(self.end_position);
        let end = reservation_end(start, through, self.capacity_bytes);
        if end > start {
            self.file
                .allocate(start, end - start)
                .map_err(|source| StorageError::io("allocate", &self.path, source))?;
        }
        self.reserved_end = end;
        Ok(())
    }

    /// The error for a header of another format version, logged here: the node stops on it.
    pub fn unsupported_version(&self, found: u32) -> StorageError {
        let error = StorageError::UnsupportedFormat {
            path: self.path.clone(),
            found,
            supported: SEGMENT_FORMAT_VERSION,
        };
        tracing::error!(%error, "refusing to open a log written by another format version");
        error
    }

    /// A corruption error for this file; logged where it is returned to a caller.
    pub fn corruption(&self, position: u64, reason: impl Into<String>) -> StorageError {
        StorageError::Corruption {
            path: self.path.clone(),
            offset: position,
            reason: reason.into(),
        }
    }

    /// Records a frame written (or found) at `position` in the sparse indexes, taking a slot
    /// once `interval_bytes` have passed since the previous one. `.offsets` also takes the
    /// first keyed frame of the segment, so every segment's first offset is findable, and
    /// only offsets above the previous slot's (keys must increase).
    pub fn note_frame(
        &mut self,
        index: u64,
        position: u64,
        offset_key: Option<u64>,
        interval_bytes: u32,
    ) {
        let interval_bytes = u64::from(interval_bytes);
        let relative_index = u32::try_from(index - self.base_index).expect("fits a segment");
        let position_u32 = u32::try_from(position).expect("segments are below 4 GiB");
        if position >= self.index_slot_position + interval_bytes {
            self.index.push(IndexSlot {
                relative_index,
                position: position_u32,
            });
            self.index_slot_position = position;
        }
        let Some(offset) = offset_key else { return };
        let take = match self.offsets.last() {
            None => true,
            Some(last) => {
                offset > last.offset
                    && relative_index > last.relative_index
                    && position >= self.offsets_slot_position + interval_bytes
            }
        };
        if take {
            self.offsets.push(OffsetSlot {
                offset,
                relative_index,
                position: position_u32,
            });
            self.offsets_slot_position = position;
        }
    }

    /// Re-derives the "last slot" positions after slots were dropped or loaded.
    pub fn reset_slot_positions(&mut self) {
        let header = SEGMENT_HEADER_BYTES as u64;
        self.index_slot_position = self
            .index
            .last()
            .map_or(header, |slot| u64::from(slot.position()));
        self.offsets_slot_position = self
            .offsets
            .last()
            .map_or(header, |slot| u64::from(slot.position()));
    }

    /// Decodes the frame at `position` and checks it is entry `expected_index`, within the
    /// written part of the segment. Any failure is corruption of this file at `position`.
    pub fn checked_frame(&self, position: u64, expected_index: u64) -> Result<Frame<'_>> {
        let Some(bytes) = self.map.get(position as usize..self.end_position as usize) else {
            return Err(self.corruption(position, "frame position beyond the written end"));
        };
        let frame =
            frame::decode(bytes).map_err(|error| self.corruption(position, error.to_string()))?;
        if frame.index != expected_index {
            return Err(self.corruption(
                position,
                format!(
                    "frame holds index {} instead of {expected_index}",
                    frame.index
                ),
            ));
        }
        Ok(frame)
    }

    /// Byte position of entry `index` (which this segment holds): from the nearest `.index`
    /// slot at or before it, verifying every frame on the way. A slot whose frame does not
    /// check out is skipped (it is a hint); a bad frame on the walk is corruption.
    pub fn locate(&self, index: u64) -> Result<u64> {
        debug_assert!(self.base_index <= index && index <= self.last_index);
        let relative_index = index - self.base_index;
        let candidates = self.index.floor_count(relative_index);
        for slot in self.index.slots()[..candidates].iter().rev() {
            let slot_index = self.base_index + u64::from(slot.relative_index);
            let slot_position = u64::from(slot.position);
            let matches = self
                .map
                .get(slot_position as usize..self.end_position as usize)
                .and_then(|bytes| frame::decode(bytes).ok())
                .is_some_and(|frame| frame.index == slot_index);
            if matches {
                return self.walk_to(slot_position, slot_index, index);
            }
            tracing::warn!(path = %self.index.path().display(), ?slot, "index slot does not match the log; skipping it");
        }
        self.walk_to(SEGMENT_HEADER_BYTES as u64, self.base_index, index)
    }

    fn walk_to(&self, mut position: u64, mut at_index: u64, target_index: u64) -> Result<u64> {
        while at_index < target_index {
            position += self.checked_frame(position, at_index)?.frame_bytes();
            at_index += 1;
        }
        Ok(position)
    }

    /// Term of entry `index` (which this segment holds).
    pub fn term_at(&self, index: u64) -> Result<u64> {
        let position = self.locate(index)?;
        Ok(self.checked_frame(position, index)?.term)
    }

    /// Appends entries `[from, to_exclusive)` (all in this segment) to `out`, stopping before
    /// an entry that would take `payload_bytes` over `max_bytes` unless `out` is empty.
    /// Returns false when it stopped for the byte budget.
    pub fn read_into(
        &self,
        from: u64,
        to_exclusive: u64,
        max_bytes: u64,
        out: &mut Vec<StoredEntry>,
        payload_bytes: &mut u64,
    ) -> Result<bool> {
        debug_assert!(to_exclusive <= self.last_index + 1);
        let mut position = self.locate(from)?;
        for index in from..to_exclusive {
            let frame = self.checked_frame(position, index)?;
            let size_bytes = frame.payload.len() as u64;
            if !out.is_empty() && *payload_bytes + size_bytes > max_bytes {
                return Ok(false);
            }
            let payload_start = position as usize + FRAME_HEADER_BYTES;
            out.push(StoredEntry {
                index,
                term: frame.term,
                kind: frame.kind,
                payload: self
                    .map
                    .slice(payload_start..payload_start + frame.payload.len()),
            });
            *payload_bytes += size_bytes;
            position += frame.frame_bytes();
        }
        Ok(true)
    }

    /// Writes zeroes over `[from, to)` (positioned writes, not through the map).
    pub fn zero(&self, from: u64, to: u64) -> io::Result<()> {
        static ZEROES: [u8; ZERO_FILL_CHUNK_BYTES] = [0; ZERO_FILL_CHUNK_BYTES];
        let mut position = from;
        while position < to {
            let chunk_bytes = (to - position).min(ZEROES.len() as u64);
            self.file
                .write_at(&ZEROES[..chunk_bytes as usize], position)?;
            position += chunk_bytes;
        }
        Ok(())
    }

    /// Position just past the last non-zero byte at or after `from`, if any: how far a torn
    /// tail reaches into the preallocated (zero) area. Only the file's data regions are read
    /// (SEEK_DATA/SEEK_HOLE: the never-written preallocated space is a hole, so a clean
    /// 128 MiB segment costs a few pages, not a pass over 128 MiB of page cache), through the
    /// map, from the end.
    pub fn nonzero_end(&self, from: u64) -> Option<u64> {
        let end = self.capacity_bytes.min(self.map.len() as u64);
        for (region_start, region_end) in self.data_regions(from, end).into_iter().rev() {
            let bytes = &self.map[region_start as usize..region_end as usize];
            if let Some(last) = last_nonzero(bytes) {
                return Some(region_start + last as u64 + 1);
            }
        }
        None
    }

    /// `[start, end)` ranges within `[from, end)` that may hold data. If the file system
    /// cannot tell, the whole range.
    fn data_regions(&self, from: u64, end: u64) -> Vec<(u64, u64)> {
        use rustix::fs::{seek, SeekFrom};
        let file = self.file.file();
        let mut regions = Vec::new();
        let mut position = from;
        while position < end {
            let data_start = match seek(file, SeekFrom::Data(position)) {
                Ok(data_start) => data_start,
                Err(rustix::io::Errno::NXIO) => break, // only a hole up to the end of file
                Err(_) => {
                    regions.push((position, end));
                    break;
                }
            };
            if data_start >= end {
                break;
            }
            let data_end = seek(file, SeekFrom::Hole(data_start)).map_or(end, |hole| hole.min(end));
            regions.push((data_start, data_end.max(data_start + 1).min(end)));
            position = data_end.max(data_start + 1);
        }
        regions
    }

    /// fdatasyncs the log file if it holds unsynced writes.
    pub fn sync_data(&mut self) -> Result<()> {
        if self.dirty {
            self.file
                .sync_data()
                .map_err(|source| StorageError::io("fdatasync", &self.path, source))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Writes both index files' missing slots (no fsync; see index.rs). Never fails: the
    /// files are hints over durable frames (see `SparseIndex::persist_best_effort`).
    pub fn persist_indexes(&mut self, io: &dyn Io, dir: &Path) {
        self.index.persist_best_effort(io, dir);
        self.offsets.persist_best_effort(io, dir);
    }
}

/// Index of the last non-zero byte, checking [`NONZERO_SCAN_BLOCK_BYTES`] blocks from the end
/// with an OR-fold (which vectorises) before searching a block byte by byte.
fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    let mut block_end = bytes.len();
    while block_end > 0 {
        let block_start = block_end.saturating_sub(NONZERO_SCAN_BLOCK_BYTES);
        let block = &bytes[block_start..block_end];
        if block.iter().fold(0u8, |acc, &byte| acc | byte) != 0 {
            return block
                .iter()
                .rposition(|&byte| byte != 0)
                .map(|last| block_start + last);
        }
        block_end = block_start;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::RealIo;

    #[test]
    fn last_nonzero_finds_the_last_set_byte() {
        let mut bytes = vec![0u8; 200_000];
        assert_eq!(last_nonzero(&bytes), None);
        bytes[5] = 1;
        assert_eq!(last_nonzero(&bytes), Some(5));
        bytes[150_001] = 9;
        assert_eq!(last_nonzero(&bytes), Some(150_001));
    }

    #[test]
    fn nonzero_end_sees_data_in_a_preallocated_hole() {
        let dir = tempfile::tempdir().unwrap();
        let segment = Segment::create(&RealIo, dir.path(), 1, 1 << 20, 4096, 0).unwrap();
        assert_eq!(segment.nonzero_end(24), None);
        segment.file.write_at(b"x", 700_000).unwrap();
        assert_eq!(segment.nonzero_end(24), Some(700_001));
        segment.file.write_at(b"y", 30).unwrap();
        assert_eq!(segment.nonzero_end(24), Some(700_001));
        assert_eq!(segment.nonzero_end(700_001), None);
        segment.zero(700_000, 700_001).unwrap();
        assert_eq!(segment.nonzero_end(24), Some(31));
    }

    #[test]
    fn bytes_match_the_worked_example_in_format_md() {
        let header = "4b 45 45 4c 02 00 00 00 65 00 00 00 00 00 00 00 00 00 00 00 28 e3 a5 da";
        assert_eq!(hex(&encode_header(101)), header);
        let mut frame_bytes = Vec::new();
        frame::encode(&mut frame_bytes, 101, 2, 1, b"hello");
        let frame_hex = "1e 00 00 00 b7 b1 71 7b 65 00 00 00 00 00 00 00 \
                         02 00 00 00 00 00 00 00 01 68 65 6c 6c 6f";
        assert_eq!(
            hex(&frame_bytes),
            frame_hex.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }

    fn hex(bytes: &[u8]) -> String {
        let parts: Vec<String> = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        parts.join(" ")
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let header = encode_header(101);
        assert_eq!(decode_header(&header), Ok(101));
        assert_eq!(decode_header(&[0; 24]), Err(HeaderError::Unwritten));
        assert_eq!(decode_header(&[]), Err(HeaderError::Unwritten));
        for byte in 0..SEGMENT_HEADER_BYTES {
            let mut damaged = header;
            damaged[byte] ^= 0x10;
            assert!(matches!(
                decode_header(&damaged),
                Err(HeaderError::Invalid(_))
            ));
        }
        assert!(matches!(
            decode_header(&header[..10]),
            Err(HeaderError::Invalid(_))
        ));
        let mut version_1 = header;
        version_1[4] = 1;
        let crc = crc32fast::hash(&version_1[..HEADER_CRC_AT]);
        version_1[HEADER_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_header(&version_1),
            Err(HeaderError::UnsupportedVersion(1))
        );
    }

    #[test]
    fn file_names_round_trip_and_strays_are_not_ours() {
        for kind in [
            FileKind::Log,
            FileKind::Index,
            FileKind::Offsets,
            FileKind::Reset,
        ] {
            assert_eq!(
                parse_file_name(&file_name(101, kind)),
                Some((101, kind)),
                "{kind:?}"
            );
        }
        assert_eq!(file_name(101, FileKind::Log), "00000000000000000101.log");
        for stray in [
            "101.log",
            "0000000000000000010a.log",
            "00000000000000000000.log",
            "00000000000000000101.txt",
            "hard_state",
            "99999999999999999999.log",
            "18446744073709551615.log",
        ] {
            assert_eq!(parse_file_name(stray), None, "{stray}");
        }
    }

    #[test]
    fn worked_example_positions_and_first_slot() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(&RealIo, dir.path(), 101, 64 << 10, 64 << 10, 0).unwrap();
        let mut buffer = Vec::new();
        let payload = [7u8; 1000];
        let mut position = SEGMENT_HEADER_BYTES as u64;
        for index in 101..=110 {
            let frame_start = buffer.len();
            frame::encode(&mut buffer, index, 1, 0, &payload);
            // docs/FORMAT.md: each entry carries 10 messages, entry 101 starts at offset 5000.
            let offset_key = 5000 + (index - 101) * 10;
            segment.note_frame(index, position, Some(offset_key), 4096);
            position += (buffer.len() - frame_start) as u64;
        }
        segment.file.write_at(&buffer, 24).unwrap();
        segment.end_position = position;
        segment.last_index = 110;
        assert_eq!(segment.locate(102).unwrap(), 1049);
        assert_eq!(segment.locate(103).unwrap(), 2074);
        let slot = |relative_index, position| IndexSlot {
            relative_index,
            position,
        };
        assert_eq!(segment.index.slots(), &[slot(4, 4124), slot(8, 8224)]);
        assert_eq!(segment.locate(106).unwrap(), 4124 + 1025);
        assert_eq!(segment.locate(107).unwrap(), 6174);
        let offsets: Vec<(u64, u32, u32)> = segment
            .offsets
            .slots()
            .iter()
            .map(|slot| (slot.offset, slot.relative_index, slot.position))
            .collect();
        assert_eq!(offsets[..2], [(5000, 0, 24), (5040, 4, 4124)]);
        assert_eq!(segment.offsets.floor(5047).unwrap().relative_index, 4);
        assert_eq!(segment.term_at(105).unwrap(), 1);
        assert_eq!(segment.nonzero_end(24), Some(position));
        assert_eq!(segment.nonzero_end(position), None);
    }
}
