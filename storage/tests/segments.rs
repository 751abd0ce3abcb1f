//! Segment life cycle: roll-over, index files written only for durable frames, segment files
//! from older (smaller) options, and reads across segment boundaries.

use std::path::Path;

use keel_storage::{Entry, FsyncPolicy, Log, LogOptions, StorageError};

fn options(segment_bytes: u64, max_entry_bytes: u32) -> LogOptions {
    LogOptions {
        segment_bytes,
        max_entry_bytes,
        index_interval_bytes: 512,
        fsync: FsyncPolicy::Never,
        offset_key: None,
    }
}

fn append(log: &mut Log, count: u64, payload_bytes: usize, term: u64) {
    let first = log.last_index() + 1;
    let payloads: Vec<Vec<u8>> = (first..first + count)
        .map(|index| vec![index as u8; payload_bytes])
        .collect();
    let batch: Vec<Entry<'_>> = payloads
        .iter()
        .zip(first..)
        .map(|(payload, index)| Entry {
            index,
            term,
            kind: 0,
            payload,
            offset_key: Some(index * 3),
        })
        .collect();
    log.append(&batch).unwrap();
}

fn log_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".log"))
        .collect();
    names.sort();
    names
}

#[test]
fn batch_larger_than_a_segment_rolls_over_and_reads_back_across_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options(64 << 10, 4000)).unwrap();
    // 100 frames of 2025 bytes: 32 fit a 64 KiB segment, so 4 segments.
    append(&mut log, 100, 2000, 1);
    assert_eq!(
        log_files(dir.path()),
        [1, 33, 65, 97].map(|base| format!("{base:020}.log"))
    );
    let entries = log.read(30, 70, u64::MAX).unwrap();
    assert_eq!(entries.len(), 40);
    for (entry, index) in entries.iter().zip(30..) {
        assert_eq!((entry.index, entry.payload[0]), (index, index as u8));
    }
    // The byte budget holds across segment boundaries: 5 payloads of 2000 fit 10_000.
    assert_eq!(log.read(30, 70, 10_000).unwrap().len(), 5);
    log.compact_prefix(64).unwrap();
    assert_eq!(log.first_index(), 65);
}

#[test]
fn index_slots_reach_the_file_only_after_fdatasync() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options(1 << 20, 4000)).unwrap();
    let index_file = dir.path().join(format!("{:020}.index", 1));
    let size = || std::fs::metadata(&index_file).map_or(0, |metadata| metadata.len());
    append(&mut log, 20, 1000, 1);
    assert_eq!(size(), 0, "frames not durable yet: no slots on disk");
    log.sync_now().unwrap();
    assert!(size() > 0 && size() % 8 == 0);
    assert_eq!(log.durable_index(), 20);
}

#[test]
fn empty_active_segment_too_small_for_new_options_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options(16 << 10, 1000)).unwrap();
    append(&mut log, 3, 500, 1);
    log.reset(10).unwrap();
    drop(log);
    // Reopen with segments and entries larger than the 16 KiB active segment can hold.
    let (mut log, _) = Log::open(dir.path(), options(1 << 20, 100_000)).unwrap();
    append(&mut log, 1, 50_000, 2);
    assert_eq!((log.first_index(), log.last_index()), (10, 10));
    assert_eq!(log.read(10, 11, 0).unwrap()[0].payload.len(), 50_000);
    drop(log);
    let (log, report) = Log::open(dir.path(), options(1 << 20, 100_000)).unwrap();
    assert_eq!((report.last_index, report.segments), (10, 1));
    assert_eq!(log.term_at(10).unwrap(), 2);
}

#[test]
fn empty_small_segment_after_truncation_gives_way_to_its_predecessor() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options(16 << 10, 1000)).unwrap();
    append(&mut log, 40, 900, 1); // 925-byte frames: 17 per 16 KiB segment
    assert_eq!(log_files(dir.path()).len(), 3);
    drop(log);
    let (mut log, _) = Log::open(dir.path(), options(1 << 20, 100_000)).unwrap();
    log.truncate_suffix(18).unwrap(); // the 16 KiB segment 18 becomes empty and active
    assert_eq!(log.last_index(), 17);
    append(&mut log, 1, 50_000, 2);
    assert_eq!(log.read(18, 19, 0).unwrap()[0].payload.len(), 50_000);
    assert_eq!(log.read(1, 19, u64::MAX).unwrap().len(), 18);
}

#[test]
fn reset_to_a_lower_index_replaces_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), options(16 << 10, 1000)).unwrap();
    append(&mut log, 40, 900, 3);
    log.reset(5).unwrap();
    assert_eq!(
        (log.first_index(), log.last_index(), log.last_term()),
        (5, 4, 0)
    );
    assert!(matches!(
        log.read(5, 6, 0),
        Err(StorageError::OutOfRange { .. })
    ));
    append(&mut log, 2, 10, 1);
    drop(log);
    assert_eq!(log_files(dir.path()), [format!("{:020}.log", 5)]);
    let (log, _) = Log::open(dir.path(), options(16 << 10, 1000)).unwrap();
    assert_eq!(
        (log.first_index(), log.last_index(), log.last_term()),
        (5, 6, 1)
    );
}

#[test]
fn default_sized_segment_reopens_clean() {
    // A clean 128 MiB preallocated tail is found to be zero without reading it (SEEK_HOLE).
    let dir = tempfile::tempdir().unwrap();
    let default_options = LogOptions::default();
    let (mut log, _) = Log::open(dir.path(), default_options.clone()).unwrap();
    append(&mut log, 10, 100, 1);
    log.sync_now().unwrap();
    drop(log);
    let (log, report) = Log::open(dir.path(), default_options).unwrap();
    assert_eq!((report.last_index, report.cut), (10, None));
    assert_eq!(log.read(1, 11, u64::MAX).unwrap().len(), 10);
}

/// A data directory from a build that wrote segment format version 1 (Keel's own batches, before
/// Kafka's RecordBatch v2): opening it is refused with the version named, and nothing on disk
/// is changed, repaired or cut.
#[test]
fn a_log_of_the_previous_format_version_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = Log::open(dir.path(), options(1 << 20, 4096)).unwrap();
        append(&mut log, 10, 100, 1);
        log.sync().unwrap();
    }
    let segment = dir.path().join(
        log_files(dir.path())
            .into_iter()
            .find(|name| name.ends_with(".log"))
            .expect("a segment"),
    );
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..20]);
    bytes[20..24].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&segment, &bytes).unwrap();
    let files_before = log_files(dir.path());

    let error = Log::open(dir.path(), options(1 << 20, 4096)).unwrap_err();
    match &error {
        StorageError::UnsupportedFormat {
            found, supported, ..
        } => assert_eq!((*found, *supported), (1, 2)),
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("version 1") && message.contains("version 2"),
        "{message}"
    );
    assert_eq!(log_files(dir.path()), files_before);
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        bytes,
        "the segment is left as it was"
    );
}

/// Bytes of disk a file occupies (its allocated blocks), as opposed to its length.
fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// A segment is as long as `segment_bytes` from its creation but takes disk only as it fills:
/// an idle log holds a page, a written one what it holds plus at most one extent ahead.
#[test]
fn segments_take_disk_as_they_fill_not_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = 64 << 20;
    let (mut log, _) = Log::open(dir.path(), options(segment_bytes, 64 << 10)).unwrap();
    let segment = dir.path().join("00000000000000000001.log");
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), segment_bytes);
    assert!(
        disk_bytes(&segment) <= 8 << 10,
        "an empty segment holds {} bytes of disk",
        disk_bytes(&segment)
    );
    // 3 MiB of frames: reserved in 1 MiB extents as they come.
    append(&mut log, 96, 32 << 10, 1);
    log.sync().unwrap();
    let held = disk_bytes(&segment);
    assert!(
        (3 << 20..=(4 << 20) + (8 << 10)).contains(&held),
        "3 MiB written, {held} bytes of disk held"
    );
    drop(log);
    let (log, report) = Log::open(dir.path(), options(segment_bytes, 64 << 10)).unwrap();
    assert_eq!(report.cut, None);
    assert_eq!(log.last_index(), 96);
}
