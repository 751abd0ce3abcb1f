//! `keel bench storage`: the storage engine alone. Appends fixed-size entries in batches to a
//! fresh log on a real directory, with the fsync policy asked for (an fdatasync per batch under
//! `always`), then reads everything back sequentially and checks it. Until the broker exists
//! this is Keel's "main job" in the quick start: it shows what the log does durably on this disk.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use keel_storage::{Entry, FsyncPolicy, Log, LogOptions};

use crate::limits::{STORAGE_BENCH_MAX_LATENCY_US, STORAGE_BENCH_READ_CHUNK_BYTES};

/// Entry kind used for benchmark payloads (opaque to the storage engine).
const BENCH_ENTRY_KIND: u8 = 1;

#[derive(Debug, clap::Args)]
pub struct StorageBenchArgs {
    /// Directory for the benchmark log; emptied first and removed afterwards.
    #[arg(long, default_value = "./keel-data/bench-storage")]
    pub dir: PathBuf,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 1024)]
    pub size: u32,
    /// Bytes of payload per append call (one fdatasync per batch under `--fsync always`).
    #[arg(long, default_value_t = 1 << 20)]
    pub batch_bytes: u64,
    /// Total payload bytes to write.
    #[arg(long, default_value_t = 1 << 30)]
    pub total_bytes: u64,
    /// always | interval:<ms> | never
    #[arg(long, default_value = "always")]
    pub fsync: FsyncPolicy,
    /// Keep the log directory afterwards instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

pub fn run(args: &StorageBenchArgs) -> anyhow::Result<()> {
    if args.size == 0
        || u64::from(args.size) > args.batch_bytes
        || args.batch_bytes > args.total_bytes
    {
        bail!("need 0 < --size <= --batch-bytes <= --total-bytes");
    }
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("clearing {}", args.dir.display()))?;
    }
    let options = LogOptions {
        fsync: args.fsync,
        ..LogOptions::default()
    };
    options.validate()?;
    let (mut log, _) = Log::open(&args.dir, options)
        .with_context(|| format!("opening log in {}", args.dir.display()))?;

    let entries_per_batch = (args.batch_bytes / u64::from(args.size)).max(1) as usize;
    let batches = (args.total_bytes / (entries_per_batch as u64 * u64::from(args.size))).max(1);
    let payload: Vec<u8> = (0..args.size).map(|i| (i % 251) as u8).collect();
    // 1 us .. 60 s at 3 significant digits; anything slower is clamped to 60 s.
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, STORAGE_BENCH_MAX_LATENCY_US, 3)?;
    let progress = progress_bar(batches);

    let started = Instant::now();
    let mut next_index = log.last_index() + 1;
    let mut batch = Vec::with_capacity(entries_per_batch);
    for _ in 0..batches {
        batch.clear();
        batch.extend((0..entries_per_batch as u64).map(|i| Entry {
            index: next_index + i,
            term: 1,
            kind: BENCH_ENTRY_KIND,
            payload: &payload,
            offset_key: None,
        }));
        let batch_started = Instant::now();
        log.append(&batch)?;
        log.sync()?;
        latency_us.saturating_record(batch_started.elapsed().as_micros() as u64);
        next_index += entries_per_batch as u64;
        progress.inc(1);
    }
    log.sync_now()?;
    let write_elapsed = started.elapsed();
    progress.finish_and_clear();

    let entries = next_index - 1;
    let bytes = entries * u64::from(args.size);
    let read_elapsed = read_back(&log, entries, &payload)?;
    println!(
        "bench storage: {entries} entries of {size} B in batches of {batch} B, fsync {fsync}: \
         write {write_mb:.1} MB/s ({write_rate:.0} entries/s), batch latency p50 {p50} us \
         p99 {p99} us max {max} us; sequential read {read_mb:.1} MB/s",
        size = args.size,
        batch = entries_per_batch as u64 * u64::from(args.size),
        fsync = args.fsync,
        write_mb = mb_per_s(bytes, write_elapsed),
        write_rate = entries as f64 / write_elapsed.as_secs_f64(),
        p50 = latency_us.value_at_quantile(0.50),
        p99 = latency_us.value_at_quantile(0.99),
        max = latency_us.max(),
        read_mb = mb_per_s(bytes, read_elapsed),
    );
    drop(log);
    if !args.keep {
        std::fs::remove_dir_all(&args.dir)?;
    }
    Ok(())
}

/// Reads the whole log back in 4 MiB chunks, checking every payload, and returns the time taken.
fn read_back(log: &Log, entries: u64, payload: &[u8]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut next = log.first_index();
    while next <= entries {
        let chunk = log.read(next, entries + 1, STORAGE_BENCH_READ_CHUNK_BYTES)?;
        for entry in &chunk {
            if entry.index != next || entry.payload.as_ref() != payload {
                bail!(
                    "read back entry {} does not match what was written",
                    entry.index
                );
            }
            next += 1;
        }
    }
    Ok(started.elapsed())
}

fn progress_bar(batches: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(batches);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} appending [{bar:40}] {pos}/{len} batches {per_sec}",
        )
        .expect("static template is valid"),
    );
    bar
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}
