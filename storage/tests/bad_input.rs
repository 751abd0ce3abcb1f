//! Bad input gets a typed error and leaves the log unchanged; I/O failures poison writes but
//! not reads; a full disk is retriable. Nothing here may panic (except the watermark assert).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use keel_storage::io::{Io, IoFile, RealIo};
use keel_storage::{Entry, FsyncPolicy, Log, LogOptions, StorageError};

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: 64 << 10,
        max_entry_bytes: 1000,
        index_interval_bytes: 256,
        ..LogOptions::default()
    }
}

fn payload(index: u64) -> Vec<u8> {
    vec![index as u8; 100 + (index % 7) as usize]
}

fn entry(index: u64, term: u64, payload: &[u8]) -> Entry<'_> {
    Entry {
        index,
        term,
        kind: 0,
        payload,
        offset_key: None,
    }
}

/// A log holding entries 1..=10 in term 3.
fn ten_entries(dir: &Path) -> Log {
    let (mut log, _) = Log::open(dir, options()).unwrap();
    let payloads: Vec<Vec<u8>> = (1..=10).map(payload).collect();
    let batch: Vec<Entry<'_>> = (1..=10)
        .map(|index| entry(index, 3, &payloads[index as usize - 1]))
        .collect();
    log.append(&batch).unwrap();
    log.sync_now().unwrap();
    log
}

/// The log still holds exactly entries 1..=10 in term 3.
fn assert_unchanged(log: &Log) {
    assert_eq!(
        (log.first_index(), log.last_index(), log.last_term()),
        (1, 10, 3)
    );
    let entries = log.read(1, 11, u64::MAX).unwrap();
    assert_eq!(entries.len(), 10);
    for entry in entries {
        assert_eq!(&entry.payload[..], &payload(entry.index)[..]);
    }
}

#[test]
fn non_contiguous_appends_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = ten_entries(dir.path());
    let bytes = payload(11);
    for (batch, expected, got) in [
        (vec![entry(12, 3, &bytes)], 11, 12),
        (vec![entry(10, 3, &bytes)], 11, 10),
        (vec![entry(11, 3, &bytes), entry(13, 3, &bytes)], 12, 13),
        (vec![entry(11, 3, &bytes), entry(11, 3, &bytes)], 12, 11),
    ] {
        match log.append(&batch) {
            Err(StorageError::NonContiguous {
                expected: e,
                got: g,
            }) => assert_eq!((e, g), (expected, got)),
            other => panic!("expected NonContiguous, got {other:?}"),
        }
        assert_unchanged(&log);
    }
}

#[test]
fn term_regressions_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = ten_entries(dir.path());
    let bytes = payload(11);
    let in_batch = [entry(11, 4, &bytes), entry(12, 3, &bytes)];
    assert!(matches!(
        log.append(&[entry(11, 2, &bytes)]),
        Err(StorageError::TermRegression {
            index: 11,
            term: 2,
            previous_term: 3
        })
    ));
    assert!(matches!(
        log.append(&in_batch),
        Err(StorageError::TermRegression { index: 12, .. })
    ));
    assert_unchanged(&log);
}

#[test]
fn oversized_payload_rejects_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = ten_entries(dir.path());
    let small = payload(11);
    let large = vec![1u8; 1001];
    let batch = [
        entry(11, 3, &small),
        entry(12, 3, &small),
        entry(13, 3, &large),
    ];
    assert!(matches!(
        log.append(&batch),
        Err(StorageError::EntryTooLarge {
            bytes: 1001,
            max_bytes: 1000
        })
    ));
    assert_unchanged(&log);
    let exactly = vec![2u8; 1000];
    log.append(&[entry(11, 3, &exactly)]).unwrap();
}

#[test]
fn reads_and_terms_outside_the_log_are_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = ten_entries(dir.path());
    for (from, to) in [(0, 5), (1, 12), (11, 12), (12, 12), (6, 5)] {
        assert!(
            matches!(
                log.read(from, to, u64::MAX),
                Err(StorageError::OutOfRange { .. })
            ),
            "read({from}, {to})"
        );
    }
    assert!(log.read(11, 11, u64::MAX).unwrap().is_empty());
    assert_eq!(
        log.read(3, 11, 0).unwrap().len(),
        1,
        "one entry even over budget"
    );
    for index in [0, 11, u64::MAX] {
        assert!(matches!(
            log.term_at(index),
            Err(StorageError::OutOfRange { .. })
        ));
    }
    assert_unchanged(&log);
}

#[test]
fn truncate_compact_and_reset_reject_impossible_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = ten_entries(dir.path());
    assert!(matches!(
        log.truncate_suffix(12),
        Err(StorageError::OutOfRange { .. })
    ));
    for next_index in [0, u64::MAX] {
        assert!(matches!(
            log.reset(next_index),
            Err(StorageError::OutOfRange { .. })
        ));
    }
    log.truncate_suffix(11).unwrap(); // nothing to remove
    log.compact_prefix(u64::MAX).unwrap(); // never removes the active segment
    assert_unchanged(&log);
}

#[test]
#[should_panic(expected = "handed out")]
fn truncating_bytes_handed_out_by_read_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = ten_entries(dir.path());
    let _held = log.read(1, 8, u64::MAX).unwrap();
    log.truncate_suffix(8).unwrap(); // above the watermark: fine
    log.truncate_suffix(7).unwrap(); // entry 7 was handed out
}

#[test]
fn options_that_do_not_fit_are_rejected_before_touching_disk() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let too_small = LogOptions {
        segment_bytes: 1024,
        max_entry_bytes: 1000,
        ..LogOptions::default()
    };
    assert!(matches!(
        too_small.validate(),
        Err(StorageError::InvalidOptions(_))
    ));
    assert!(matches!(
        Log::open(&log_dir, too_small),
        Err(StorageError::InvalidOptions(_))
    ));
    assert!(!log_dir.exists());
}

#[test]
fn data_dir_that_is_a_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    for path in [file.clone(), file.join("below")] {
        assert!(
            matches!(Log::open(&path, options()), Err(StorageError::Io { .. })),
            "{path:?}"
        );
    }
}

#[test]
fn stray_files_are_ignored_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    drop(ten_entries(dir.path()));
    for stray in [
        "hard_state",
        "123.log",
        "notes.txt",
        "00000000000000000000.log",
    ] {
        std::fs::write(dir.path().join(stray), b"not ours").unwrap();
    }
    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!(report.cut, None);
    assert_unchanged(&log);
    assert!(dir.path().join("123.log").exists());
}

/// Real I/O with switches to make calls fail.
#[derive(Debug, Default)]
struct SwitchedIo {
    disk_full: Arc<AtomicBool>,
    fail_sync: Arc<AtomicBool>,
    fail_list: AtomicBool,
    fail_index_writes: Arc<AtomicBool>,
}

#[derive(Debug)]
struct SwitchedFile {
    inner: Arc<dyn IoFile>,
    disk_full: Arc<AtomicBool>,
    fail_sync: Arc<AtomicBool>,
    fail_index_writes: Arc<AtomicBool>,
}

impl Io for SwitchedIo {
    fn create(&self, path: &Path, len_bytes: u64) -> io::Result<Arc<dyn IoFile>> {
        if self.disk_full.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::StorageFull.into());
        }
        self.wrap(RealIo.create(path, len_bytes))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn IoFile>> {
        self.wrap(RealIo.open(path))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealIo.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        RealIo.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealIo.sync_dir(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        if self.fail_list.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        RealIo.list(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        RealIo.create_dir_all(dir)
    }
}

impl SwitchedIo {
    fn wrap(&self, file: io::Result<Arc<dyn IoFile>>) -> io::Result<Arc<dyn IoFile>> {
        Ok(Arc::new(SwitchedFile {
            inner: file?,
            disk_full: self.disk_full.clone(),
            fail_sync: self.fail_sync.clone(),
            fail_index_writes: self.fail_index_writes.clone(),
        }))
    }
}

impl IoFile for SwitchedFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let is_index = self
            .path()
            .extension()
            .is_some_and(|extension| extension == "index" || extension == "offsets");
        if is_index && self.fail_index_writes.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::StorageFull.into());
        }
        self.inner.write_at(buf, offset)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected EIO"));
        }
        self.inner.sync_data()
    }
    fn len_bytes(&self) -> io::Result<u64> {
        self.inner.len_bytes()
    }
    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.inner.set_len(len_bytes)
    }
    fn allocate(&self, offset: u64, len_bytes: u64) -> io::Result<()> {
        if self.disk_full.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::StorageFull.into());
        }
        self.inner.allocate(offset, len_bytes)
    }
    fn file(&self) -> &std::fs::File {
        self.inner.file()
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

#[test]
fn unreadable_data_dir_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(SwitchedIo::default());
    io.fail_list.store(true, Ordering::SeqCst);
    assert!(matches!(
        Log::open_with_io(dir.path(), options(), io),
        Err(StorageError::Io { op: "list", .. })
    ));
}

#[test]
fn failed_fsync_poisons_writes_but_not_reads() {
    let dir = tempfile::tempdir().unwrap();
    drop(ten_entries(dir.path()));
    let io = Arc::new(SwitchedIo::default());
    let (mut log, _) = Log::open_with_io(dir.path(), options(), io.clone()).unwrap();
    let bytes = payload(11);
    log.append(&[entry(11, 3, &bytes)]).unwrap();
    io.fail_sync.store(true, Ordering::SeqCst);
    assert!(matches!(log.sync_now(), Err(StorageError::Io { .. })));
    io.fail_sync.store(false, Ordering::SeqCst);
    assert_eq!(
        log.durable_index(),
        10,
        "the failed sync made nothing durable"
    );
    assert!(matches!(
        log.append(&[entry(12, 3, &bytes)]),
        Err(StorageError::Poisoned(_))
    ));
    assert!(matches!(log.sync_now(), Err(StorageError::Poisoned(_))));
    assert!(matches!(
        log.truncate_suffix(11),
        Err(StorageError::Poisoned(_))
    ));
    assert_eq!(
        log.read(1, 12, u64::MAX).unwrap().len(),
        11,
        "reads continue"
    );
}

#[test]
fn disk_full_on_roll_over_is_retriable_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(SwitchedIo::default());
    let (mut log, _) = Log::open_with_io(dir.path(), options(), io.clone()).unwrap();
    let bytes = vec![7u8; 1000];
    // 63 frames of 1025 bytes fill the 64 KiB segment; the batch below needs a new one.
    let first: Vec<Entry<'_>> = (1..=60).map(|index| entry(index, 1, &bytes)).collect();
    log.append(&first).unwrap();
    let second: Vec<Entry<'_>> = (61..=70).map(|index| entry(index, 1, &bytes)).collect();
    io.disk_full.store(true, Ordering::SeqCst);
    let error = log.append(&second).unwrap_err();
    assert!(matches!(error, StorageError::DiskFull { .. }), "{error:?}");
    assert!(error.is_retriable());
    assert_eq!(log.last_index(), 60, "nothing of the batch was written");
    io.disk_full.store(false, Ordering::SeqCst);
    log.append(&second).unwrap();
    log.sync_now().unwrap();
    assert_eq!(log.read(1, 71, u64::MAX).unwrap().len(), 70);
    drop(log);
    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!((report.segments, report.last_index), (2, 70));
    assert_eq!(log.term_at(61).unwrap(), 1);
}

#[test]
fn interval_policy_syncs_only_after_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        fsync: FsyncPolicy::Interval { ms: 60_000 },
        ..options()
    };
    let (mut log, _) = Log::open(dir.path(), options).unwrap();
    let bytes = payload(1);
    log.append(&[entry(1, 1, &bytes)]).unwrap();
    log.sync().unwrap();
    assert_eq!(log.durable_index(), 0, "interval not elapsed");
    log.sync_now().unwrap();
    assert_eq!(log.durable_index(), 1);
}

#[test]
fn failing_index_writes_do_not_poison_the_log() {
    // The index files are hints over durable frames: losing them costs a rebuild, not the log.
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(SwitchedIo::default());
    let (mut log, _) = Log::open_with_io(dir.path(), options(), io.clone()).unwrap();
    io.fail_index_writes.store(true, Ordering::SeqCst);
    let payloads: Vec<Vec<u8>> = (1..=40).map(payload).collect();
    for index in 1..=40u64 {
        log.append(&[entry(index, 1, &payloads[index as usize - 1])])
            .unwrap();
        log.sync_now().unwrap();
    }
    assert_eq!(log.durable_index(), 40);
    io.fail_index_writes.store(false, Ordering::SeqCst);
    log.sync_now().unwrap(); // the retry rewrites the index files in full
    drop(log);
    let (log, report) = Log::open(dir.path(), options()).unwrap();
    assert_eq!((report.last_index, report.cut), (40, None));
    let entries = log.read(1, 41, u64::MAX).unwrap();
    assert!(entries
        .iter()
        .all(|entry| entry.payload[..] == payload(entry.index)[..]));
}
