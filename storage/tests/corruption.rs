//! Damaged bytes on disk: corruption in sealed segments is an error naming file and offset,
//! a torn active tail is cut with an accurate `RecoveryReport`, truncated entries stay gone,
//! and lost or garbage index files are rebuilt.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use keel_storage::frame::{self, FRAME_HEADER_BYTES};
use keel_storage::segment::SEGMENT_HEADER_BYTES;
use keel_storage::{CutReason, Entry, Log, LogOptions, StorageError};

const PAYLOAD_BYTES: usize = 100;
const FRAME_BYTES: u64 = (FRAME_HEADER_BYTES + PAYLOAD_BYTES) as u64;
/// Entries that fit one 64 KiB segment: (65536 - 24) / 125.
const ENTRIES_PER_SEGMENT: u64 = 524;

fn offset_key(kind: u8, payload: &[u8]) -> Option<u64> {
    let key = payload.get(..8).filter(|_| kind == 1)?;
    Some(u64::from_le_bytes(key.try_into().expect("8 bytes")))
}

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: 64 << 10,
        max_entry_bytes: 1024,
        index_interval_bytes: 512,
        offset_key: Some(offset_key),
        ..LogOptions::default()
    }
}

/// Entry `index` carries message offset `index * 10` in its first 8 bytes.
fn payload(index: u64) -> Vec<u8> {
    let mut payload: Vec<u8> = (0..PAYLOAD_BYTES)
        .map(|byte| (index as usize + byte) as u8 | 1)
        .collect();
    payload[..8].copy_from_slice(&(index * 10).to_le_bytes());
    payload
}

fn append(log: &mut Log, indexes: std::ops::RangeInclusive<u64>, term: u64) {
    let payloads: Vec<(u64, Vec<u8>)> = indexes.map(|index| (index, payload(index))).collect();
    for chunk in payloads.chunks(50) {
        let batch: Vec<Entry<'_>> = chunk
            .iter()
            .map(|(index, payload)| Entry {
                index: *index,
                term,
                kind: 1,
                payload,
                offset_key: Some(index * 10),
            })
            .collect();
        log.append(&batch).unwrap();
    }
    log.sync_now().unwrap();
}

fn append_unsynced(log: &mut Log, indexes: std::ops::RangeInclusive<u64>, term: u64) {
    for index in indexes {
        let payload = payload(index);
        let entry = Entry {
            index,
            term,
            kind: 1,
            payload: &payload,
            offset_key: Some(index * 10),
        };
        log.append(&[entry]).unwrap();
    }
}

fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// Byte position of entry `index` in the segment starting at `base` (uniform frames).
fn position(base: u64, index: u64) -> u64 {
    SEGMENT_HEADER_BYTES as u64 + (index - base) * FRAME_BYTES
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

fn read_file(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let file = std::fs::File::open(path).unwrap();
    let mut bytes = vec![0; len];
    file.read_exact_at(&mut bytes, offset).unwrap();
    bytes
}

fn assert_entries(log: &Log, from: u64, to_exclusive: u64) {
    let entries = log.read(from, to_exclusive, u64::MAX).unwrap();
    assert_eq!(entries.len() as u64, to_exclusive - from);
    for (entry, index) in entries.iter().zip(from..) {
        assert_eq!(entry.index, index);
        assert_eq!(&entry.payload[..], &payload(index)[..], "entry {index}");
    }
}

/// A log of two full segments and part of a third, closed.
fn three_segment_log(dir: &Path) -> u64 {
    let (mut log, _) = Log::open(dir, options()).unwrap();
    let last = 2 * ENTRIES_PER_SEGMENT + 40;
    append(&mut log, 1..=last, 1);
    assert!(log_path(dir, 2 * ENTRIES_PER_SEGMENT + 1).exists());
    last
}

#[test]
fn flipped_byte_in_sealed_segment_is_corruption_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let last = three_segment_log(dir.path());
    let damaged = 100;
    let file = log_path(dir.path(), 1);
    patch(&file, position(1, damaged) + 60, &[0xEE]);

    // Open trusts sealed segments structurally: it does not read entry 100.
    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!((report.last_index, report.cut), (last, None));
    match log.read(1, last + 1, u64::MAX) {
        Err(StorageError::Corruption { path, offset, .. }) => {
            assert_eq!((path, offset), (file.clone(), position(1, damaged)));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert!(matches!(
        log.term_at(damaged),
        Err(StorageError::Corruption { .. })
    ));
    // Everything around it still reads.
    assert_entries(&log, 1, damaged);
    assert_entries(&log, ENTRIES_PER_SEGMENT + 1, last + 1);
}

#[test]
fn damaged_length_field_in_sealed_segment_is_corruption_at_that_frame() {
    let dir = tempfile::tempdir().unwrap();
    let last = three_segment_log(dir.path());
    let damaged = ENTRIES_PER_SEGMENT + 7;
    let file = log_path(dir.path(), ENTRIES_PER_SEGMENT + 1);
    let frame_at = position(ENTRIES_PER_SEGMENT + 1, damaged);
    patch(&file, frame_at, &200u32.to_le_bytes());
    let (log, _) = Log::open(dir.path(), options()).unwrap();
    match log.read(ENTRIES_PER_SEGMENT + 1, last + 1, u64::MAX) {
        Err(StorageError::Corruption { path, offset, .. }) => {
            assert_eq!((path, offset), (file, frame_at))
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn bad_last_frame_of_sealed_segment_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    three_segment_log(dir.path());
    let file = log_path(dir.path(), 1);
    patch(&file, position(1, ENTRIES_PER_SEGMENT) + 40, &[0x00, 0x11]);
    match Log::open(dir.path(), options()) {
        Err(StorageError::Corruption { path, offset, .. }) => {
            assert_eq!((path, offset), (file, position(1, ENTRIES_PER_SEGMENT)));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

/// Writes entries 1..=20 into a one-segment log, damages it with `damage`, reopens and checks
/// the cut: entries 1..=10 survive, bytes from entry 11 on are zeroed.
fn cut_after_damage(
    damage: impl FnOnce(&Path, u64),
    reason: CutReason,
    highest_index_beyond_cut: Option<u64>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    append(&mut log, 1..=10, 2);
    // 11..=20 are never fdatasynced: a power loss may keep any part of them.
    append_unsynced(&mut log, 11..=20, 2);
    drop(log);
    let file = log_path(dir.path(), 1);
    let cut_at = position(1, 11);
    damage(&file, cut_at);

    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(report.last_index, 10);
    let cut = report.cut.expect("a cut");
    assert_eq!(
        (cut.file, cut.byte_offset, cut.reason),
        (file.clone(), cut_at, reason)
    );
    assert_eq!(cut.highest_index_beyond_cut, highest_index_beyond_cut);
    assert_eq!((log.last_index(), log.last_term()), (10, 2));
    assert_entries(&log, 1, 11);
    let tail = read_file(&file, cut_at, (20 * FRAME_BYTES) as usize);
    assert!(tail.iter().all(|&byte| byte == 0), "the cut tail is zeroed");
    drop(log);

    let (mut log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!((report.last_index, report.cut), (10, None), "cut once");
    append(&mut log, 11..=12, 3);
    assert_entries(&log, 1, 13);
}

#[test]
fn torn_frame_at_the_tail_is_cut() {
    // The last frame's second half never reached the disk.
    cut_after_damage(
        |file, cut_at| {
            let frame_end = position(1, 21);
            patch(
                file,
                cut_at + 60,
                &vec![0; (frame_end - cut_at - 60) as usize],
            );
            // Entries 12..=20 lost too: only entry 11's first 60 bytes remain.
            patch(file, position(1, 12), &vec![0; (9 * FRAME_BYTES) as usize]);
        },
        CutReason::BadCrc,
        None,
    );
}

#[test]
fn lost_page_then_valid_frames_reports_highest_index_beyond_cut() {
    // Entry 11's bytes were lost (zero), 12..=20 survived: cut at 11, report 20.
    cut_after_damage(
        |file, cut_at| patch(file, cut_at, &vec![0; FRAME_BYTES as usize]),
        CutReason::ZeroLength,
        Some(20),
    );
}

#[test]
fn garbage_then_valid_frames_reports_highest_index_beyond_cut() {
    cut_after_damage(
        |file, cut_at| patch(file, cut_at, &[0xAB; 300]),
        CutReason::Truncated,
        Some(20),
    );
}

#[test]
fn garbage_after_the_last_frame_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    append(&mut log, 1..=10, 1);
    drop(log);
    let file = log_path(dir.path(), 1);
    let end = position(1, 11);
    patch(&file, end + 1000, b"not a frame");
    let (log, report) = Log::open(dir.path(), options()).unwrap();
    let cut = report.cut.expect("garbage past the end is reported");
    assert_eq!((cut.byte_offset, cut.reason), (end, CutReason::ZeroLength));
    assert_eq!(cut.highest_index_beyond_cut, None);
    assert_eq!(log.last_index(), 10);
    assert!(read_file(&file, end, 2000).iter().all(|&byte| byte == 0));
}

#[test]
fn frame_with_a_skipped_index_is_cut_as_non_contiguous() {
    cut_after_damage(
        |file, cut_at| {
            let mut frame = Vec::new();
            frame::encode(&mut frame, 12, 2, 1, &payload(11));
            patch(file, cut_at, &frame);
        },
        CutReason::NonContiguous,
        Some(20),
    );
}

#[test]
fn frame_with_a_lower_term_is_cut_as_term_regression() {
    cut_after_damage(
        |file, cut_at| {
            let mut frame = Vec::new();
            frame::encode(&mut frame, 11, 1, 1, &payload(11));
            patch(file, cut_at, &frame);
        },
        CutReason::TermRegression,
        Some(20),
    );
}

#[test]
fn truncated_entries_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let last = three_segment_log(dir.path());
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    let from = ENTRIES_PER_SEGMENT - 20; // inside the first segment
    log.truncate_suffix(from).unwrap();
    assert_eq!(log.last_index(), from - 1);
    drop(log); // no sync after the truncation

    assert!(!log_path(dir.path(), ENTRIES_PER_SEGMENT + 1).exists());
    assert!(!log_path(dir.path(), 2 * ENTRIES_PER_SEGMENT + 1).exists());
    let file = log_path(dir.path(), 1);
    let removed = read_file(&file, position(1, from), (21 * FRAME_BYTES) as usize);
    assert!(
        removed.iter().all(|&byte| byte == 0),
        "removed bytes are zeroed"
    );

    let (mut log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!((report.last_index, report.cut), (from - 1, None));
    assert_entries(&log, 1, from);
    assert!(log.read(from, last + 1, u64::MAX).is_err());
    // The new entries at the same indexes are what reads return.
    append(&mut log, from..=from + 30, 5);
    drop(log);
    let (log, _) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(
        (log.last_index(), log.term_at(from).unwrap()),
        (from + 30, 5)
    );
}

#[test]
fn truncation_to_a_segment_boundary_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    three_segment_log(dir.path());
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    log.truncate_suffix(ENTRIES_PER_SEGMENT + 1).unwrap();
    drop(log);
    let (mut log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(report.last_index, ENTRIES_PER_SEGMENT);
    append(
        &mut log,
        ENTRIES_PER_SEGMENT + 1..=ENTRIES_PER_SEGMENT + 3,
        4,
    );
    assert_entries(&log, 1, ENTRIES_PER_SEGMENT + 4);
}

fn index_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "index" || extension == "offsets")
        })
        .collect();
    files.sort();
    files
}

/// Reads and offset lookups of a log, to compare before and after index damage.
fn observe(dir: &Path, options: LogOptions) -> (Vec<Vec<u8>>, Vec<Option<u64>>) {
    let (log, report) = Log::open(dir, options).unwrap();
    assert_eq!(report.cut, None);
    let entries = log.read(1, log.last_index() + 1, u64::MAX).unwrap();
    let payloads = entries.iter().map(|entry| entry.payload.to_vec()).collect();
    let floors = (0..log.last_index() * 10 + 20)
        .step_by(7)
        .map(|offset| log.find_offset(offset))
        .collect();
    (payloads, floors)
}

/// Entry `i` holds offset `10 * i`: a floor of `offset` must hold an offset `<= offset`.
fn check_floors(floors: &[Option<u64>]) {
    for (offset, floor) in (0u64..).step_by(7).zip(floors) {
        if offset < 10 {
            assert_eq!(*floor, None, "find_offset({offset}) below the first offset");
            continue;
        }
        let index = floor.expect("offsets from 10 on are indexed");
        assert!(index * 10 <= offset, "find_offset({offset}) = {index}");
        assert!(
            offset - index * 10 < 10 * 64,
            "floor {index} of {offset} is too far back"
        );
    }
}

#[test]
fn deleted_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    three_segment_log(dir.path());
    let before = observe(dir.path(), options());
    check_floors(&before.1);
    let files = index_files(dir.path());
    assert_eq!(files.len(), 6);
    for file in &files {
        std::fs::remove_file(file).unwrap();
    }
    assert_eq!(observe(dir.path(), options()), before);
    assert_eq!(index_files(dir.path()), files, "recreated");
    assert!(std::fs::metadata(&files[0]).unwrap().len() > 0);
}

#[test]
fn garbage_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    three_segment_log(dir.path());
    let before = observe(dir.path(), options());
    for file in index_files(dir.path()) {
        let len = std::fs::metadata(&file).unwrap().len() as usize;
        std::fs::write(&file, vec![0x5A; len]).unwrap();
    }
    assert_eq!(observe(dir.path(), options()), before);
}

#[test]
fn index_slot_pointing_at_the_wrong_frame_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    three_segment_log(dir.path());
    let before = observe(dir.path(), options());
    // Shift every slot of the first segment's .index by one byte: well-formed, but wrong.
    let index_file = dir.path().join(format!("{:020}.index", 1));
    let mut bytes = std::fs::read(&index_file).unwrap();
    for slot in bytes.chunks_exact_mut(8) {
        let position = u32::from_le_bytes(slot[4..].try_into().unwrap()) + 1;
        slot[4..].copy_from_slice(&position.to_le_bytes());
    }
    std::fs::write(&index_file, bytes).unwrap();
    assert_eq!(observe(dir.path(), options()), before);
}

#[test]
fn lost_offsets_without_a_key_function_stay_empty_but_reads_work() {
    let dir = tempfile::tempdir().unwrap();
    three_segment_log(dir.path());
    let without_key = LogOptions {
        offset_key: None,
        ..options()
    };
    let (payloads, _) = observe(dir.path(), without_key.clone());
    for file in index_files(dir.path()) {
        std::fs::remove_file(file).unwrap();
    }
    let (log, _) = Log::open(dir.path(), without_key).unwrap();
    assert_eq!(
        log.find_offset(100),
        None,
        "nothing to rebuild offsets from"
    );
    let entries = log.read(1, log.last_index() + 1, u64::MAX).unwrap();
    assert_eq!(entries.len(), payloads.len());
}

#[test]
fn stored_payload_outlives_compaction_reset_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let last = three_segment_log(dir.path());
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    let held = log.read(1, 4, u64::MAX).unwrap();
    log.compact_prefix(ENTRIES_PER_SEGMENT + 5).unwrap();
    assert_eq!(log.first_index(), ENTRIES_PER_SEGMENT + 1);
    assert!(!log_path(dir.path(), 1).exists(), "segment deleted");
    assert_eq!(&held[2].payload[..], &payload(3)[..]);
    let held_later = log.read(last - 2, last + 1, u64::MAX).unwrap();
    log.reset(last + 100).unwrap();
    assert_eq!(
        (log.first_index(), log.last_index()),
        (last + 100, last + 99)
    );
    drop(log);
    drop(dir);
    assert_eq!(&held[0].payload[..], &payload(1)[..]);
    assert_eq!(&held_later[2].payload[..], &payload(last)[..]);
}

#[test]
fn unwritten_trailing_segment_is_dropped_on_open() {
    // A crash right after an append pre-created the next segment leaves it empty.
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    append(&mut log, 1..=30, 1);
    drop(log);
    let spare = log_path(dir.path(), 31);
    let file = std::fs::File::create_new(&spare).unwrap();
    file.set_len(64 << 10).unwrap();
    file.write_all_at(&keel_storage::segment::encode_header(31), 0)
        .unwrap();
    let (mut log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(
        (report.segments, report.last_index, report.cut),
        (1, 30, None)
    );
    assert!(!spare.exists());
    append(&mut log, 31..=40, 1);
    assert_entries(&log, 1, 41);
}

#[test]
fn reset_file_with_valid_header_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    three_segment_log(dir.path());
    // A reset that reached its commit point (durable .reset file) and then crashed.
    let reset = dir.path().join(format!("{:020}.log.reset", 5000));
    let file = std::fs::File::create_new(&reset).unwrap();
    file.set_len(64 << 10).unwrap();
    file.write_all_at(&keel_storage::segment::encode_header(5000), 0)
        .unwrap();
    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!((log.first_index(), log.last_index()), (5000, 4999));
    assert_eq!(report.segments, 1);
    assert!(!reset.exists() && !log_path(dir.path(), 1).exists());
}

#[test]
fn reset_file_without_valid_header_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let last = three_segment_log(dir.path());
    let reset = dir.path().join(format!("{:020}.log.reset", 5000));
    std::fs::write(&reset, vec![0; 4096]).unwrap();
    let (log, _) = Log::open(dir.path(), options()).unwrap();
    assert_eq!((log.first_index(), log.last_index()), (1, last));
    assert!(!reset.exists());
}

#[test]
fn damage_behind_the_last_durable_slot_of_the_active_segment_is_found_by_reads() {
    // Synced frames are not rescanned on open (a power loss cannot tear them); a flipped byte
    // there is disk corruption, reported when read.
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    append(&mut log, 1..=40, 1);
    drop(log);
    let file = log_path(dir.path(), 1);
    patch(&file, position(1, 3) + 50, &[0xFF]);
    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!((report.last_index, report.cut), (40, None));
    assert!(matches!(
        log.read(1, 41, u64::MAX),
        Err(StorageError::Corruption { offset, .. }) if offset == position(1, 3)
    ));
}

mod torn_tails {
    //! Any damage past the last fdatasynced frame of the active segment: open never fails or
    //! panics, keeps every synced entry, and keeps only entries that read back intact.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Damage {
        Zero { at: u16, len: u16 },
        Garbage { at: u16, bytes: Vec<u8> },
    }

    fn damage_strategy() -> impl Strategy<Value = Damage> {
        prop_oneof![
            (any::<u16>(), 1u16..600).prop_map(|(at, len)| Damage::Zero { at, len }),
            (any::<u16>(), proptest::collection::vec(any::<u8>(), 1..64))
                .prop_map(|(at, bytes)| Damage::Garbage { at, bytes }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn damage_past_the_durable_point_is_cut_cleanly(
            synced in 1u64..30,
            unsynced in 0u64..30,
            damages in proptest::collection::vec(damage_strategy(), 1..6),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (mut log, _) = Log::open(dir.path(), options()).unwrap();
            append(&mut log, 1..=synced, 1);
            append_unsynced(&mut log, synced + 1..=synced + unsynced, 1);
            drop(log);
            let file = log_path(dir.path(), 1);
            let durable_end = position(1, synced + 1);
            let span = (unsynced + 2) * FRAME_BYTES;
            for damage in &damages {
                match damage {
                    Damage::Zero { at, len } => {
                        let at = durable_end + u64::from(*at) % span;
                        patch(&file, at, &vec![0; usize::from(*len)]);
                    }
                    Damage::Garbage { at, bytes } => {
                        patch(&file, durable_end + u64::from(*at) % span, bytes);
                    }
                }
            }
            let (log, report) = Log::open(dir.path(), options()).unwrap();
            let last = log.last_index();
            prop_assert!(last >= synced && last <= synced + unsynced, "last {last}");
            if let Some(cut) = &report.cut {
                prop_assert_eq!(cut.byte_offset, position(1, last + 1));
            }
            let entries = log.read(1, last + 1, u64::MAX).unwrap();
            for entry in &entries {
                prop_assert_eq!(&entry.payload[..], &payload(entry.index)[..]);
            }
            drop(log);
            let (log, report) = Log::open(dir.path(), options()).unwrap();
            prop_assert_eq!((log.last_index(), report.cut), (last, None));
        }
    }
}

#[test]
fn sealed_segment_overlapping_the_next_one_is_corruption() {
    // As if an unlink of later segments was lost: a newer segment starts inside an older one.
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options()).unwrap();
    append(&mut log, 1..=20, 1);
    drop(log);
    let newer = log_path(dir.path(), 11);
    let file = std::fs::File::create_new(&newer).unwrap();
    file.set_len(64 << 10).unwrap();
    file.write_all_at(&keel_storage::segment::encode_header(11), 0)
        .unwrap();
    let mut frame = Vec::new();
    frame::encode(&mut frame, 11, 1, 1, &payload(11));
    file.write_all_at(&frame, SEGMENT_HEADER_BYTES as u64)
        .unwrap();
    match Log::open(dir.path(), options()) {
        Err(StorageError::Corruption { path, offset, .. }) => {
            assert_eq!((path, offset), (log_path(dir.path(), 1), position(1, 11)));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}
