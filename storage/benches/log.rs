//! Segment log micro-benchmarks: appends of 1 KiB entries in 64 KiB and 1 MiB batches, with and
//! without an fdatasync per batch, and sequential reads of a filled log.
//!
//! Files live under cargo's target tmp dir (the real disk, never tmpfs: fdatasync must mean
//! something) and are removed afterwards. Throughput counts payload bytes.
//!
//! The no-fsync appends measure the append path (encode, CRC, one positioned write per batch
//! into the page cache, segment roll-over every 128 MiB). To keep them from turning into a
//! measure of the disk's writeback speed once dirty pages pile up, the log is reset (untimed)
//! every `RESET_EVERY_BYTES`; deleting the files drops their dirty pages.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use keel_storage::{Entry, FsyncPolicy, Log, LogOptions};

const ENTRY_BYTES: usize = 1024;
const RESET_EVERY_BYTES: u64 = 256 << 20;

fn bench_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("bench dir on the real disk")
}

fn options(fsync: FsyncPolicy) -> LogOptions {
    LogOptions {
        fsync,
        ..LogOptions::default()
    }
}

/// Appends one batch of `entries` 1 KiB entries after the log's last index.
fn append_batch(log: &mut Log, payload: &[u8], entries: usize) {
    let first = log.last_index() + 1;
    let batch: Vec<Entry<'_>> = (first..first + entries as u64)
        .map(|index| Entry {
            index,
            term: 1,
            kind: 1,
            payload,
            offset_key: Some(index),
        })
        .collect();
    log.append(&batch).expect("append");
}

fn run_appends(log: &mut Log, iters: u64, batch_entries: usize, sync: bool) -> Duration {
    let payload = vec![0x5A; ENTRY_BYTES];
    let mut elapsed = Duration::ZERO;
    let mut bytes_since_reset = 0;
    for _ in 0..iters {
        if bytes_since_reset >= RESET_EVERY_BYTES {
            log.reset(log.last_index() + 1).expect("reset");
            bytes_since_reset = 0;
        }
        let start = Instant::now();
        append_batch(log, &payload, batch_entries);
        if sync {
            log.sync_now().expect("fdatasync");
        }
        elapsed += start.elapsed();
        bytes_since_reset += (batch_entries * ENTRY_BYTES) as u64;
    }
    elapsed
}

fn appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_1KiB_entries");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(10);
    for (batch_bytes, batch_name) in [(64usize << 10, "batch_64KiB"), (1 << 20, "batch_1MiB")] {
        group.throughput(Throughput::Bytes(batch_bytes as u64));
        for (sync, policy, sync_name) in [
            (false, FsyncPolicy::Never, "no_fsync"),
            (true, FsyncPolicy::Always, "fsync_per_batch"),
        ] {
            let dir = bench_dir();
            let (mut log, _) = Log::open(dir.path(), options(policy)).expect("open");
            let batch_entries = batch_bytes / ENTRY_BYTES;
            group.bench_function(BenchmarkId::new(sync_name, batch_name), |bencher| {
                bencher.iter_custom(|iters| run_appends(&mut log, iters, batch_entries, sync))
            });
        }
    }
    group.finish();
}

/// Fills a log with `total_bytes` of 1 KiB entries.
fn filled_log(dir: &Path, total_bytes: u64) -> Log {
    let (mut log, _) = Log::open(dir, options(FsyncPolicy::Never)).expect("open");
    let payload = vec![0xA5; ENTRY_BYTES];
    while log.last_index() * (ENTRY_BYTES as u64) < total_bytes {
        append_batch(&mut log, &payload, 1024);
    }
    log.sync_now().expect("fdatasync");
    log
}

fn sequential_reads(c: &mut Criterion) {
    const READ_BYTES: u64 = 1 << 20;
    let dir = bench_dir();
    let log = filled_log(dir.path(), 512 << 20);
    let mut group = c.benchmark_group("read_1KiB_entries");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .throughput(Throughput::Bytes(READ_BYTES));
    let mut next = log.first_index();
    group.bench_function("sequential_1MiB_reads", |bencher| {
        bencher.iter(|| {
            if next > log.last_index() {
                next = log.first_index();
            }
            let entries = log
                .read(next, log.last_index() + 1, READ_BYTES)
                .expect("read");
            next = entries.last().expect("at least one").index + 1;
            entries
        })
    });
    group.finish();
}

/// Baselines in the same run: 1 MiB positioned writes each followed by fdatasync, into a file
/// that grows (what `dd bs=1M oflag=dsync` does) and into a preallocated one (what the log
/// does), recycling the file every `RESET_EVERY_BYTES` like the log benchmarks.
fn raw_fdatasync_baselines(c: &mut Criterion) {
    use std::os::unix::fs::FileExt;
    const WRITE_BYTES: usize = 1 << 20;
    let mut group = c.benchmark_group("baseline_1MiB_write_fdatasync");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(10)
        .throughput(Throughput::Bytes(WRITE_BYTES as u64));
    for preallocate in [false, true] {
        let dir = bench_dir();
        let path = dir.path().join("baseline");
        let buffer = vec![0x5Au8; WRITE_BYTES];
        let name = if preallocate {
            "preallocated"
        } else {
            "growing_like_dd"
        };
        let new_file = || {
            let _ = std::fs::remove_file(&path);
            let file = std::fs::File::create_new(&path).expect("create");
            if preallocate {
                let allocated = rustix::fs::fallocate(
                    &file,
                    rustix::fs::FallocateFlags::empty(),
                    0,
                    RESET_EVERY_BYTES,
                );
                allocated.expect("fallocate");
            }
            file
        };
        let mut file = new_file();
        let mut position = 0;
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    if position >= RESET_EVERY_BYTES {
                        file = new_file();
                        position = 0;
                    }
                    let start = Instant::now();
                    file.write_all_at(&buffer, position).expect("write");
                    file.sync_data().expect("fdatasync");
                    elapsed += start.elapsed();
                    position += WRITE_BYTES as u64;
                }
                elapsed
            })
        });
    }
    group.finish();
}

/// The disk is shared and its speed drifts by 5x within minutes, so the fsync bar ("log with
/// an fdatasync per 1 MiB batch >= 80% of `dd bs=1M oflag=dsync`") is also checked by
/// interleaving: each round does one log batch + `sync_now` and one dd-like 1 MiB write +
/// fdatasync to a growing file, so both see the same disk. Prints both rates and the ratio.
fn interleaved_fsync_comparison() {
    use std::os::unix::fs::FileExt;
    const ROUNDS: usize = 200;
    const WRITE_BYTES: usize = 1 << 20;
    let dir = bench_dir();
    let (mut log, _) =
        Log::open(&dir.path().join("log"), options(FsyncPolicy::Always)).expect("open");
    let dd_path = dir.path().join("dd");
    let dd_file = std::fs::File::create_new(&dd_path).expect("create");
    let buffer = vec![0x5Au8; WRITE_BYTES];
    let payload = vec![0x5Au8; ENTRY_BYTES];
    let (mut log_time, mut dd_time) = (Duration::ZERO, Duration::ZERO);
    for round in 0..ROUNDS {
        let start = Instant::now();
        append_batch(&mut log, &payload, WRITE_BYTES / ENTRY_BYTES);
        log.sync_now().expect("fdatasync");
        log_time += start.elapsed();
        let start = Instant::now();
        dd_file
            .write_all_at(&buffer, (round * WRITE_BYTES) as u64)
            .expect("write");
        dd_file.sync_data().expect("fdatasync");
        dd_time += start.elapsed();
    }
    let rate = |time: Duration| ROUNDS as f64 / time.as_secs_f64();
    println!(
        "interleaved 1 MiB batches + fdatasync, {ROUNDS} rounds: log {:.0} MiB/s, dd-like {:.0} \
         MiB/s, ratio {:.2}",
        rate(log_time),
        rate(dd_time),
        dd_time.as_secs_f64() / log_time.as_secs_f64()
    );
}

criterion_group!(benches, appends, raw_fdatasync_baselines, sequential_reads);

fn main() {
    benches();
    // `cargo bench` passes --bench; `cargo test --benches` (a smoke run) does not.
    if std::env::args().any(|arg| arg == "--bench") {
        interleaved_fsync_comparison();
    }
    Criterion::default().configure_from_args().final_summary();
}
