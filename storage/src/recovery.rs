//! Opening a log directory: finishing an interrupted reset, dropping leftovers of interrupted
//! segment creation, checking sealed segments and cutting the active segment's torn tail
//! (docs/FORMAT.md "Segment log").
//!
//! Directory rules:
//! - Only names `<base:020>.log|.index|.offsets|.log.reset` (base >= 1) are ours. Anything
//!   else is ignored (logged at debug level): the directory may hold other files, such as the
//!   hard state. An `.index`/`.offsets` without its `.log` is a leftover and is removed.
//! - Trailing segments holding nothing but zeroes after a valid header (pre-created by an
//!   append or rolled into before a crash) are removed while an older segment remains; a
//!   trailing segment whose header was never written is removed too (or re-created if it is
//!   the only one).
//! - Sealed segments are trusted structurally: their last index is the next segment's base
//!   minus one. Open walks only from the last good `.index` slot to that entry (verifying each
//!   frame), or the whole segment if the index is missing or garbage; a bad frame is
//!   `Corruption`, and so is a frame after that entry (an overlap with the next segment).
//! - The active segment is scanned from its last good slot and cut at the first frame that is
//!   zero-length, truncated, fails its CRC, breaks contiguity or lowers the term. Starting at
//!   the slot is safe because slots reach disk only for fdatasynced frames (index.rs): a power
//!   loss cannot have torn anything before it. Damage there (a bad disk, not a torn write) is
//!   found by reads, as `Corruption`, like in sealed segments.
//! - Only the active segment is fdatasynced on open (it may hold a crashed process's writes
//!   still in the page cache); sealed segments were fdatasynced when sealed.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{Result, StorageError};
use crate::frame::{self, FrameError, FRAME_HEADER_BYTES};
use crate::index::{IndexSlot, OffsetSlot, Slot, SparseIndex};
use crate::io::Io;
use crate::limits::EMPTY_SEGMENT_RESERVED_BYTES;
use crate::log::{finish_reset, Cut, CutReason};
use crate::options::{LogOptions, OffsetKeyFn};
use crate::segment::{
    decode_header, file_path, parse_file_name, remove_segment_files, sync_dir, FileKind,
    HeaderError, Segment, SEGMENT_HEADER_BYTES,
};

/// Our files in the directory, by kind.
#[derive(Debug, Default)]
struct Listing {
    log_bases: BTreeSet<u64>,
    index_bases: BTreeSet<u64>,
    reset_bases: BTreeSet<u64>,
}

impl Listing {
    fn read(io: &dyn Io, dir: &Path) -> Result<Listing> {
        let names = io
            .list(dir)
            .map_err(|source| StorageError::io("list", dir, source))?;
        let mut listing = Listing::default();
        for name in names {
            match parse_file_name(&name) {
                Some((base, FileKind::Log)) => listing.log_bases.insert(base),
                Some((base, FileKind::Index | FileKind::Offsets)) => {
                    listing.index_bases.insert(base)
                }
                Some((base, FileKind::Reset)) => listing.reset_bases.insert(base),
                None => {
                    tracing::debug!(dir = %dir.display(), name, "ignoring a file that is not ours");
                    false
                }
            };
        }
        Ok(listing)
    }
}

/// Recovers the log in `dir`: its segments (the last one active) and the cut made, if any.
pub(crate) fn recover(
    dir: &Path,
    options: &LogOptions,
    io: &dyn Io,
) -> Result<(Vec<Segment>, Option<Cut>)> {
    let mut listing = Listing::read(io, dir)?;
    // Recovery trusts this listing, so make it durable: a crashed process may have left an
    // unlink (truncate_suffix, compact_prefix) or a create not yet fsynced, and a power loss
    // after we build on the listing must not bring back what it does not show.
    sync_dir(io, dir)?;
    if let Some(segment) = finish_interrupted_reset(io, dir, &listing)? {
        return Ok((vec![segment], None));
    }
    remove_orphan_indexes(io, dir, &listing)?;
    if listing.log_bases.is_empty() {
        return Ok((
            vec![Segment::create(
                io,
                dir,
                1,
                options.segment_bytes,
                EMPTY_SEGMENT_RESERVED_BYTES.min(options.segment_bytes),
                0,
            )?],
            None,
        ));
    }
    drop_unwritten_tail(io, dir, options, &mut listing.log_bases)?;
    let bases: Vec<u64> = listing.log_bases.into_iter().collect();
    let mut segments = Vec::with_capacity(bases.len());
    let mut last_term = 0;
    for pair in bases.windows(2) {
        let segment = recover_sealed(io, dir, options, pair[0], pair[1] - 1, last_term)?;
        last_term = segment.last_term;
        segments.push(segment);
    }
    let (active, cut) = recover_active(
        io,
        dir,
        options,
        *bases.last().expect("non-empty"),
        last_term,
    )?;
    segments.push(active);
    Ok((segments, cut))
}

/// A `.reset` file with a valid header means `reset` reached its commit point: finish it.
/// One without a valid header never committed: remove it.
fn finish_interrupted_reset(io: &dyn Io, dir: &Path, listing: &Listing) -> Result<Option<Segment>> {
    let mut committed = None;
    for &base in &listing.reset_bases {
        let path = file_path(dir, base, FileKind::Reset);
        let file = io
            .open(&path)
            .map_err(|source| StorageError::io("open", &path, source))?;
        let mut header = [0; SEGMENT_HEADER_BYTES];
        let valid = file.read_at(&mut header, 0).is_ok() && decode_header(&header) == Ok(base);
        if valid && committed.is_none() {
            committed = Some(base);
            continue;
        }
        tracing::warn!(path = %path.display(), "removing an uncommitted reset file");
        io.remove(&path)
            .map_err(|source| StorageError::io("remove", &path, source))?;
    }
    let Some(next_index) = committed else {
        if !listing.reset_bases.is_empty() {
            sync_dir(io, dir)?;
        }
        return Ok(None);
    };
    tracing::warn!(dir = %dir.display(), next_index, "finishing an interrupted reset");
    let all_bases = listing.log_bases.iter().chain(&listing.index_bases);
    for &base in all_bases.collect::<BTreeSet<_>>() {
        remove_segment_files(io, dir, base)?;
    }
    sync_dir(io, dir)?;
    let reset_path = file_path(dir, next_index, FileKind::Reset);
    finish_reset(io, dir, next_index, &reset_path).map(Some)
}

fn remove_orphan_indexes(io: &dyn Io, dir: &Path, listing: &Listing) -> Result<()> {
    let orphans: Vec<u64> = listing
        .index_bases
        .difference(&listing.log_bases)
        .copied()
        .collect();
    for &base in &orphans {
        tracing::warn!(dir = %dir.display(), base, "removing index files without a segment");
        remove_segment_files(io, dir, base)?;
    }
    if !orphans.is_empty() {
        sync_dir(io, dir)?;
    }
    Ok(())
}

/// Removes trailing segments that never received a durable write (see the module docs).
fn drop_unwritten_tail(
    io: &dyn Io,
    dir: &Path,
    options: &LogOptions,
    bases: &mut BTreeSet<u64>,
) -> Result<()> {
    while let Some(&base) = bases.last() {
        let segment = Segment::open(io, dir, base)?;
        // Cheap test first: a written segment has a non-zero first length field.
        let nothing_after_header = || {
            let header_end = SEGMENT_HEADER_BYTES;
            let first_len = segment
                .map
                .get(header_end..header_end + 4)
                .unwrap_or_default();
            first_len.iter().all(|&byte| byte == 0)
                && segment.nonzero_end(header_end as u64).is_none()
        };
        match decode_header(&segment.map) {
            Ok(found) if found != base => {
                return Err(segment.corruption(0, format!("header names base {found}")))
            }
            Ok(_) if bases.len() == 1 || !nothing_after_header() => return Ok(()),
            Ok(_) => {}
            Err(HeaderError::Unwritten) if nothing_after_header() => {}
            Err(HeaderError::Unwritten) => {
                return Err(segment.corruption(0, "zero header but data after it"))
            }
            Err(HeaderError::Invalid(reason)) => return Err(segment.corruption(0, reason)),
            Err(HeaderError::UnsupportedVersion(found)) => {
                return Err(segment.unsupported_version(found))
            }
        }
        tracing::warn!(path = %segment.path.display(), "removing a segment that was never written");
        drop(segment);
        remove_segment_files(io, dir, base)?;
        sync_dir(io, dir)?;
        bases.pop_last();
        if bases.is_empty() {
            Segment::create(
                io,
                dir,
                base,
                options.segment_bytes,
                EMPTY_SEGMENT_RESERVED_BYTES.min(options.segment_bytes),
                0,
            )?;
            bases.insert(base);
        }
    }
    Ok(())
}

fn check_header(segment: &Segment) -> Result<()> {
    match decode_header(&segment.map) {
        Ok(base) if base == segment.base_index => Ok(()),
        Ok(base) => Err(segment.corruption(0, format!("header names base {base}"))),
        Err(HeaderError::Unwritten) => Err(segment.corruption(0, "header never written")),
        Err(HeaderError::Invalid(reason)) => Err(segment.corruption(0, reason)),
        Err(HeaderError::UnsupportedVersion(found)) => Err(segment.unsupported_version(found)),
    }
}

/// Where a recovery walk starts: a frame known to be entry `index`.
#[derive(Debug, Clone, Copy)]
struct StartPoint {
    position: u64,
    index: u64,
    /// Term of the entry before `index`, when known (walks from the header).
    previous_term: Option<u64>,
}

/// How a recovery walk ended.
#[derive(Debug)]
struct WalkEnd {
    end_position: u64,
    /// Index of the last good frame (start index - 1 if none).
    last_index: u64,
    last_term: Option<u64>,
    /// First bad frame: position, reason, detail.
    stop: Option<(u64, CutReason, String)>,
}

/// Opens a sealed segment holding `[base, last_index]`.
fn recover_sealed(
    io: &dyn Io,
    dir: &Path,
    options: &LogOptions,
    base: u64,
    last_index: u64,
    previous_term: u64,
) -> Result<Segment> {
    let mut segment = Segment::open(io, dir, base)?;
    check_header(&segment)?;
    load_indexes(io, &mut segment, options, Some(last_index));
    let start = choose_start(&segment, options.offset_key, previous_term);
    let walk = walk(&mut segment, start, Some(last_index), options);
    if let Some((position, _, detail)) = walk.stop {
        return Err(segment.corruption(position, format!("sealed segment: {detail}")));
    }
    debug_assert_eq!(walk.last_index, last_index);
    // A sealed segment ends in zeroes (it rolled over, or truncation zeroed its tail). More
    // frames mean it overlaps the next segment: a directory that lost an unlink.
    let after_last = segment
        .map
        .get(walk.end_position as usize..)
        .unwrap_or_default();
    if frame::decode(after_last) != Err(FrameError::ZeroLength) {
        let reason = format!("data after entry {last_index}, where the next segment begins");
        return Err(segment.corruption(walk.end_position, reason));
    }
    segment.end_position = walk.end_position;
    segment.last_index = last_index;
    segment.last_term = walk.last_term.unwrap_or(previous_term);
    finish_segment(io, dir, &mut segment)?;
    segment.index.close();
    segment.offsets.close();
    Ok(segment)
}

/// Opens the active segment, cutting its tail at the first bad frame.
fn recover_active(
    io: &dyn Io,
    dir: &Path,
    options: &LogOptions,
    base: u64,
    previous_term: u64,
) -> Result<(Segment, Option<Cut>)> {
    let mut segment = Segment::open(io, dir, base)?;
    check_header(&segment)?;
    load_indexes(io, &mut segment, options, None);
    let start = choose_start(&segment, options.offset_key, previous_term);
    let walk = walk(&mut segment, start, None, options);
    segment.end_position = walk.end_position;
    segment.last_index = walk.last_index;
    segment.last_term = walk.last_term.unwrap_or(previous_term);
    let cut = match walk.stop {
        Some((position, reason, detail)) => cut_tail(&mut segment, position, reason, &detail)?,
        None => None,
    };
    // Slots past the cut must go (and not come back: persisted durably below).
    let end = segment.end_position;
    let keep_index = segment
        .index
        .slots()
        .partition_point(|slot| u64::from(slot.position) < end);
    let keep_offsets = segment
        .offsets
        .slots()
        .partition_point(|slot| u64::from(slot.position) < end);
    segment.index.truncate(keep_index);
    segment.offsets.truncate(keep_offsets);
    segment.reset_slot_positions();
    segment.dirty = true;
    finish_segment(io, dir, &mut segment)?;
    Ok((segment, cut))
}

/// Makes what recovery kept durable: the log file if it may hold writes a crashed process
/// left in the page cache (the active segment: sealed ones were fdatasynced when sealed,
/// except under `FsyncPolicy::Never`), then rebuilt index files.
fn finish_segment(io: &dyn Io, dir: &Path, segment: &mut Segment) -> Result<()> {
    segment.sync_data()?;
    if segment.index.needs_persist() {
        segment.index.persist_durably_or_remove(io, dir)?;
    }
    if segment.offsets.needs_persist() {
        segment.offsets.persist_durably_or_remove(io, dir)?;
    }
    Ok(())
}

/// Loads both index files, keeping slots only up to the last one that matches its frame
/// (slots are hints). A missing or garbage file is replaced (rebuilt by the walk).
fn load_indexes(io: &dyn Io, segment: &mut Segment, options: &LogOptions, last_index: Option<u64>) {
    let capacity = segment.capacity_bytes;
    segment.index = match SparseIndex::load(io, segment.index.path().to_path_buf(), capacity) {
        Ok(index) => index,
        Err((empty, reason)) => {
            tracing::warn!(path = %empty.path().display(), reason, "rebuilding the entry index");
            empty
        }
    };
    segment.offsets = match SparseIndex::load(io, segment.offsets.path().to_path_buf(), capacity) {
        Ok(offsets) => offsets,
        Err((empty, reason)) => {
            tracing::warn!(path = %empty.path().display(), reason, "rebuilding the offset index");
            empty
        }
    };
    let keep = trusted_slots(segment, segment.index.slots(), last_index, |_, _| true);
    segment.index.truncate(keep);
    let offset_key = options.offset_key;
    let keep = trusted_slots(
        segment,
        segment.offsets.slots(),
        last_index,
        |slot: &OffsetSlot, frame: &frame::Frame<'_>| {
            offset_key.is_none_or(|key| key(frame.kind, frame.payload) == Some(slot.offset))
        },
    );
    segment.offsets.truncate(keep);
    segment.reset_slot_positions();
}

/// How many leading slots to keep: up to the last one whose frame decodes within the file,
/// holds the slot's index (at most `last_index`) and passes `matches`.
fn trusted_slots<S: Slot>(
    segment: &Segment,
    slots: &[S],
    last_index: Option<u64>,
    matches: impl Fn(&S, &frame::Frame<'_>) -> bool,
) -> usize {
    let trusted = slots.iter().rposition(|slot| {
        let index = segment.base_index + u64::from(slot.relative_index());
        let Some(bytes) = segment.map.get(slot.position() as usize..) else {
            return false;
        };
        let in_range = last_index.is_none_or(|last| index <= last);
        in_range
            && frame::decode(bytes).is_ok_and(|frame| frame.index == index && matches(slot, &frame))
    });
    let keep = trusted.map_or(0, |slot_number| slot_number + 1);
    if keep < slots.len() {
        tracing::warn!(path = %segment.path.display(), dropped = slots.len() - keep, "dropping index slots that do not match the log");
    }
    keep
}

/// The walk starts at the last trusted `.index` slot, or earlier at the last `.offsets` slot
/// when offsets can be extended from the log (an `offset_key` function is set).
fn choose_start(
    segment: &Segment,
    offset_key: Option<OffsetKeyFn>,
    previous_term: u64,
) -> StartPoint {
    let header = StartPoint {
        position: SEGMENT_HEADER_BYTES as u64,
        index: segment.base_index,
        previous_term: Some(previous_term),
    };
    let from_slot = |relative_index: u32, position: u32| StartPoint {
        position: u64::from(position),
        index: segment.base_index + u64::from(relative_index),
        previous_term: None,
    };
    let index_start = segment.index.last().map_or(header, |slot: IndexSlot| {
        from_slot(slot.relative_index, slot.position)
    });
    if offset_key.is_none() {
        return index_start;
    }
    let offsets_start = segment
        .offsets
        .last()
        .map_or(header, |slot| from_slot(slot.relative_index, slot.position));
    if offsets_start.position < index_start.position {
        offsets_start
    } else {
        index_start
    }
}

/// Walks frames from `start` (up to `last_index` if given), recording index slots, until the
/// first frame that does not check out.
fn walk(
    segment: &mut Segment,
    start: StartPoint,
    last_index: Option<u64>,
    options: &LogOptions,
) -> WalkEnd {
    let map = segment.map.clone();
    let mut position = start.position;
    let mut expected_index = start.index;
    let mut previous_term = start.previous_term;
    let mut last_term = None;
    let stop = loop {
        if last_index.is_some_and(|last| expected_index > last) {
            break None;
        }
        let bytes = map.get(position as usize..).unwrap_or_default();
        let frame = match frame::decode(bytes) {
            Ok(frame) => frame,
            Err(error) => break Some((position, cut_reason(error), error.to_string())),
        };
        if frame.index != expected_index {
            let detail = format!("index {} where {expected_index} was due", frame.index);
            break Some((position, CutReason::NonContiguous, detail));
        }
        if let Some(previous) = previous_term.filter(|&previous| frame.term < previous) {
            let detail = format!("term {} after term {previous}", frame.term);
            break Some((position, CutReason::TermRegression, detail));
        }
        let offset_key = options
            .offset_key
            .and_then(|key| key(frame.kind, frame.payload));
        segment.note_frame(
            frame.index,
            position,
            offset_key,
            options.index_interval_bytes,
        );
        position += frame.frame_bytes();
        expected_index += 1;
        previous_term = Some(frame.term);
        last_term = Some(frame.term);
    };
    WalkEnd {
        end_position: position,
        last_index: expected_index - 1,
        last_term,
        stop,
    }
}

fn cut_reason(error: FrameError) -> CutReason {
    match error {
        FrameError::ZeroLength => CutReason::ZeroLength,
        FrameError::Truncated { .. } => CutReason::Truncated,
        FrameError::BadLength { .. } | FrameError::BadCrc { .. } => CutReason::BadCrc,
    }
}

/// Cuts the active segment at `position`: if non-zero bytes follow, looks beyond them for
/// valid frames (to report), zeroes them and fdatasyncs. A zero tail is the normal end.
fn cut_tail(
    segment: &mut Segment,
    position: u64,
    reason: CutReason,
    detail: &str,
) -> Result<Option<Cut>> {
    let Some(nonzero_end) = segment.nonzero_end(position) else {
        return Ok(None);
    };
    let highest_index_beyond_cut = highest_index_beyond(segment, position, nonzero_end);
    tracing::warn!(
        path = %segment.path.display(), position, ?reason, detail,
        last_index = segment.last_index, ?highest_index_beyond_cut,
        zeroed_bytes = nonzero_end - position, "cutting the log's torn tail"
    );
    segment.dirty = true;
    segment
        .zero(position, nonzero_end)
        .map_err(|source| StorageError::io("zero", &segment.path, source))?;
    segment.sync_data()?;
    Ok(Some(Cut {
        file: segment.path.clone(),
        byte_offset: position,
        reason,
        highest_index_beyond_cut,
    }))
}

/// Highest index of a CRC-valid frame starting in `[from, to)` with an index above the last
/// kept one. Frame boundaries past a hole are unknown, so every byte position is tried; the
/// index field is checked for plausibility (no more frames than fit) before the CRC, so
/// garbage costs a few loads per byte.
fn highest_index_beyond(segment: &Segment, from: u64, to: u64) -> Option<u64> {
    let last_kept = segment.last_index;
    let most_frames = (to - from) / FRAME_HEADER_BYTES as u64 + 1;
    let map = &segment.map[..];
    let mut highest = None;
    let mut position = from as usize;
    while (position as u64) < to {
        let plausible = frame::peek_header(&map[position..]).is_some_and(|header| {
            header.index > last_kept && header.index - last_kept <= most_frames
        });
        if plausible {
            if let Ok(frame) = frame::decode(&map[position..]) {
                highest = highest.max(Some(frame.index));
                position += frame.frame_bytes() as usize;
                continue;
            }
        }
        position += 1;
    }
    highest
}
