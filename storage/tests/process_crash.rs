//! Process crashes (kill -9) against the real log on a real disk.
//!
//! A child process (this test binary re-executed in child mode) appends entries with
//! deterministic content forever, fsync policy `Always`, calling `sync_now` after each batch
//! and printing every durable index. The parent SIGKILLs it at random moments, reopens the
//! log, checks that every reported index is there with the right bytes, and restarts the child
//! on the same directory, which must continue at `last_index() + 1`.
//!
//! A kill keeps the page cache, so this tests the process-crash path (torn batches, recovery
//! scans, restart), not fsync; the power-loss tests cover that.
//!
//! `KEEL_CRASH_SEED=<seed>` replays one run's kill schedule.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keel_storage::{Entry, FsyncPolicy, Log, LogOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Environment variable that turns the re-executed test binary into the appending child.
const CHILD_DIR_VARIABLE: &str = "KEEL_CRASH_CHILD_DIR";
const SEED_VARIABLE: &str = "KEEL_CRASH_SEED";
/// The only stdout lines the parent trusts: `OPENED <last_index>` once the child has opened
/// the log, then `DURABLE <index>` after each synced batch.
const OPENED_PREFIX: &str = "OPENED ";
const DURABLE_PREFIX: &str = "DURABLE ";
const ROUNDS: usize = 10;
const MIN_RUN_MS: u64 = 200;
const MAX_RUN_MS: u64 = 1000;
/// How long a child may take to print its first durable index before the run is a failure.
const CHILD_START_TIMEOUT_MS: u64 = 20_000;

fn options() -> LogOptions {
    LogOptions {
        // Small segments so that kills land during roll-overs too.
        segment_bytes: 64 * 1024,
        max_entry_bytes: 4096,
        index_interval_bytes: 1024,
        fsync: FsyncPolicy::Always,
        offset_key: None,
    }
}

/// The payload of entry `index`: its length and bytes depend only on the index, so the parent
/// can check any entry without hearing about it.
fn payload_of(index: u64) -> Vec<u8> {
    let len_bytes = (index.wrapping_mul(7919) % 700) as usize;
    (0..len_bytes)
        .map(|position| (index.wrapping_mul(31).wrapping_add(position as u64) % 251) as u8)
        .collect()
}

fn kind_of(index: u64) -> u8 {
    (index % 3) as u8
}

const TERM: u64 = 1;

/// Child mode: never returns; appends and reports until killed.
fn run_child(dir: &Path) -> ! {
    use std::io::Write;
    let (mut log, _report) = Log::open(dir, options()).expect("child opens the log");
    let stdout = std::io::stdout();
    {
        let mut out = stdout.lock();
        writeln!(out, "{OPENED_PREFIX}{}", log.last_index()).expect("stdout");
        out.flush().expect("stdout");
    }
    let mut batch_number: u64 = 0;
    loop {
        batch_number += 1;
        let first = log.last_index() + 1;
        let batch_len = 1 + batch_number % 8;
        let payloads: Vec<Vec<u8>> = (first..first + batch_len).map(payload_of).collect();
        let entries: Vec<Entry<'_>> = payloads
            .iter()
            .zip(first..)
            .map(|(payload, index)| Entry {
                index,
                term: TERM,
                kind: kind_of(index),
                payload,
                offset_key: None,
            })
            .collect();
        log.append(&entries).expect("child appends");
        log.sync_now().expect("child syncs");
        let mut out = stdout.lock();
        writeln!(out, "{DURABLE_PREFIX}{}", log.durable_index()).expect("stdout");
        out.flush().expect("stdout");
    }
}

/// The child's entry point: the parent runs this binary with `--ignored --exact` on it.
#[test]
#[ignore = "child process of killed_child_keeps_every_reported_entry; it runs this itself"]
fn crash_child() {
    // Run by hand (`--include-ignored`) it has no directory and nothing to do.
    let Some(dir) = std::env::var_os(CHILD_DIR_VARIABLE) else {
        eprintln!("crash_child only runs as the child of killed_child_keeps_every_reported_entry");
        return;
    };
    run_child(Path::new(&dir));
}

/// What the child reports.
enum Report {
    Opened { last_index: u64 },
    Durable { index: u64 },
}

/// A running child, SIGKILLed and reaped when dropped (so a failing parent leaves none).
struct ChildGuard(std::process::Child);

impl ChildGuard {
    fn kill(&mut self) {
        // SIGKILL on Unix. Err means it already exited, which the checks then catch.
        let _ = self.0.kill();
        self.0.wait().expect("reap the child");
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a child on `dir`; returns it and a channel of what it reports.
fn spawn_child(dir: &Path) -> (ChildGuard, mpsc::Receiver<Report>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_DIR_VARIABLE, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let child = ChildGuard(child);
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest prints `test crash_child ... ` without a newline, so a report may
            // share its line.
            let after = |prefix: &str| line.split_once(prefix).map(|(_, rest)| rest.to_string());
            let report = if let Some(index) = after(DURABLE_PREFIX) {
                Report::Durable {
                    index: index.trim().parse().expect("a durable index"),
                }
            } else if let Some(index) = after(OPENED_PREFIX) {
                Report::Opened {
                    last_index: index.trim().parse().expect("a last index"),
                }
            } else {
                continue;
            };
            if sender.send(report).is_err() {
                break;
            }
        }
    });
    (child, receiver)
}

/// Opens the log as a restarted node would and checks every entry's bytes. Returns the last
/// index and whether recovery cut a torn tail.
fn check_log(dir: &Path, reported_durable_index: u64, context: &str) -> (u64, bool) {
    let (log, report) =
        Log::open(dir, options()).unwrap_or_else(|error| panic!("{context}: reopen: {error}"));
    // The page cache survives a kill and writes land in order, so a tail can be torn (a
    // multi-page write stopped by the signal) but there is never a hole with frames after it.
    if let Some(cut) = &report.cut {
        assert_eq!(
            cut.highest_index_beyond_cut, None,
            "{context}: frames beyond a cut after a process crash: {cut:?}"
        );
    }
    let last_index = log.last_index();
    assert!(
        last_index >= reported_durable_index,
        "{context}: reported durable index {reported_durable_index} but the log ends at \
         {last_index} ({report:?})"
    );
    assert_eq!(report.last_index, last_index, "{context}");
    if last_index == 0 {
        return (0, report.cut.is_some());
    }
    assert_eq!(log.first_index(), 1, "{context}: nothing was compacted");
    let entries = log
        .read(1, last_index + 1, u64::MAX)
        .unwrap_or_else(|error| panic!("{context}: read: {error}"));
    assert_eq!(
        entries.len() as u64,
        last_index,
        "{context}: read everything"
    );
    for (entry, index) in entries.iter().zip(1..) {
        assert_eq!(entry.index, index, "{context}");
        assert_eq!(entry.term, TERM, "{context}: index {index}");
        assert_eq!(entry.kind, kind_of(index), "{context}: index {index}");
        assert_eq!(
            &entry.payload[..],
            &payload_of(index)[..],
            "{context}: payload of index {index}"
        );
    }
    drop(entries);
    drop(log);
    // Recovery made its repair durable: opening again finds the same log and nothing to cut.
    let (log, second) = Log::open(dir, options()).unwrap();
    assert!(
        second.cut.is_none(),
        "{context}: second open cut again: {second:?}"
    );
    assert_eq!(log.last_index(), last_index, "{context}: second open");
    (last_index, report.cut.is_some())
}

/// A directory on the disk the workspace builds on: never tmpfs, where fsync does nothing and
/// a crash test proves little.
fn real_disk_temp_dir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

#[test]
fn killed_child_keeps_every_reported_entry() {
    let seed = std::env::var(SEED_VARIABLE)
        .ok()
        .map(|seed| seed.parse().expect("KEEL_CRASH_SEED is a u64"))
        .unwrap_or_else(rand::random);
    println!("process crash seed {seed} (replay with {SEED_VARIABLE}={seed})");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let temp_dir = real_disk_temp_dir();
    let dir = temp_dir.path().join("log");

    let mut last_index = 0;
    let mut cuts = 0;
    for round in 0..ROUNDS {
        let context = format!("seed {seed} round {round}");
        let (mut child, reports) = spawn_child(&dir);
        // The restarted child sees the log the parent checked, and appends right after it.
        let timeout = Duration::from_millis(CHILD_START_TIMEOUT_MS);
        match reports.recv_timeout(timeout) {
            Ok(Report::Opened { last_index: opened }) => {
                assert_eq!(
                    opened, last_index,
                    "{context}: the child opened another log"
                )
            }
            _ => panic!("{context}: the child did not report opening the log"),
        }
        // Wait for it to be appending (its first report), then let it run a random while so
        // that the kill lands at a random point of its loop.
        let first_durable_index = match reports.recv_timeout(timeout) {
            Ok(Report::Durable { index }) => index,
            _ => panic!("{context}: the child reported no durable index"),
        };
        assert!(
            first_durable_index > last_index,
            "{context}: the child continues after index {last_index}, reported \
             {first_durable_index}"
        );
        let run_until =
            Instant::now() + Duration::from_millis(rng.random_range(MIN_RUN_MS..=MAX_RUN_MS));
        std::thread::sleep(run_until.saturating_duration_since(Instant::now()));
        child.kill();
        // Every line the child printed before it died is in the pipe; drain it.
        let reported_durable_index = reports
            .iter()
            .filter_map(|report| match report {
                Report::Durable { index } => Some(index),
                Report::Opened { .. } => None,
            })
            .fold(first_durable_index, u64::max);

        let (new_last_index, cut) = check_log(&dir, reported_durable_index, &context);
        cuts += usize::from(cut);
        assert!(new_last_index > last_index, "{context}: the log grew");
        last_index = new_last_index;
    }
    println!(
        "process crash seed {seed}: {ROUNDS} kills, {cuts} torn tails cut, log ends at index \
         {last_index}"
    );
}
