//! `keel bench produce|consume|e2e` (docs/CLI.md): end-to-end throughput and latency through
//! the SDK against a running cluster. The topic is created if missing.
//!
//! - produce: `--producers` producers (one SDK `Producer` each, one shared client) send
//!   `--messages` messages of `--size` bytes in all; latency is send-to-acknowledgement per
//!   message. `--sync` keeps one message in flight per producer (pure latency).
//! - consume: one consumer reads `--messages` messages from the beginning of every partition
//!   (produce them first); latency is per fetch round trip that returned messages. With
//!   `--group G`, `--consumers` members of group G (one SDK `Consumer` each, one shared client)
//!   share the partitions the group assigns them, starting at the log start; they commit
//!   nothing, so every run reads from the beginning, and the clock starts at the first message
//!   (the group's first join waits its 3 s initial delay).
//! - e2e: a consumer waits at the end of every partition while the producers send; each message
//!   carries its send time, latency is send-to-consume. Needs `--size` >= 8.
//!
//! Percentiles come from an HDR histogram (microseconds, 3 significant digits). Progress goes
//! to stderr: a bar on a terminal, a plain line per second otherwise. `--json FILE` writes one
//! object with msgs_per_s, mb_per_s (decimal MB of message values), p50_us, p99_us, p999_us,
//! max_us, messages, size, producers.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use clap::Args;
use hdrhistogram::Histogram;
use keel_client::limits::MAX_IN_FLIGHT_PER_PARTITION;
use keel_client::wire::ErrorCode;
use keel_client::{
    Admin, AutoOffsetReset, Client, Consumer, Delivery, DeliveryFuture, GroupConfig, ProduceError,
    Producer, ProducerConfig, SeekTo,
};
use serde_json::json;
use tokio::sync::mpsc;

use super::common::{cli_client_config, connect_with, parse_topic, CompressionArg, ConnectArgs};
use super::UsageError;
use crate::limits::{
    BENCH_IDLE_TIMEOUT, BENCH_MAX_LATENCY_US, BENCH_SYNC_WINDOW, PROGRESS_BAR_INTERVAL,
    PROGRESS_LINE_INTERVAL,
};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[arg(long, default_value = "keel-bench", value_parser = parse_topic)]
    topic: String,
    /// Messages in all (split evenly over the producers).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    messages: u64,
    /// Bytes per message value.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Concurrent producers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    producers: u64,
    /// One message in flight per producer (measures latency rather than throughput).
    #[arg(long)]
    sync: bool,
    /// Messages each producer keeps in flight (sent, not yet acknowledged) in pipelined mode.
    /// Bounds the queueing a latency figure includes; the NATS baseline uses the same window.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    window: u64,
    /// Producer batch size in bytes (the SDK's `batch_bytes`; default: the SDK default).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1024..=(16 << 20)))]
    batch_bytes: Option<u64>,
    /// Producer batches in flight per partition (default: the SDK default).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_IN_FLIGHT_PER_PARTITION)))]
    in_flight: Option<u32>,
    /// Producer linger in milliseconds (default: the SDK default; 0 with `--sync`).
    #[arg(long)]
    linger_ms: Option<u64>,
    /// Compress each producer batch's records.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// Partitions of the topic if the bench creates it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    partitions: u32,
    /// Write the results as one JSON object to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// bench consume only: read as members of consumer group G.
    #[arg(long, value_name = "G", value_parser = super::consume::parse_group)]
    group: Option<String>,
    /// bench consume --group only: members of the group in this process.
    #[arg(long, value_name = "C", requires = "group", value_parser = clap::value_parser!(u64).range(1..=1024))]
    consumers: Option<u64>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Produce,
    Consume,
    EndToEnd,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
            Mode::EndToEnd => "e2e",
        }
    }
}

/// What a run measured.
#[derive(Debug)]
pub struct Report {
    pub messages: u64,
    pub size: usize,
    pub producers: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

impl Report {
    pub fn json(&self) -> serde_json::Value {
        let seconds = self.elapsed.as_secs_f64().max(1e-9);
        let messages_per_second = self.messages as f64 / seconds;
        json!({
            "msgs_per_s": round2(messages_per_second),
            "mb_per_s": round2(messages_per_second * self.size as f64 / 1e6),
            "p50_us": self.latency_us.value_at_quantile(0.50),
            "p99_us": self.latency_us.value_at_quantile(0.99),
            "p999_us": self.latency_us.value_at_quantile(0.999),
            "max_us": self.latency_us.max(),
            "messages": self.messages,
            "size": self.size,
            "producers": self.producers,
        })
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

pub async fn run(mode: Mode, args: &BenchArgs) -> anyhow::Result<()> {
    if mode != Mode::Consume && args.group.is_some() {
        return Err(UsageError("--group is for bench consume only".into()).into());
    }
    if mode == Mode::EndToEnd && args.size < 8 {
        return Err(
            UsageError("bench e2e needs --size of at least 8 (the send time)".into()).into(),
        );
    }
    let client = connect_with(&args.connect, cli_client_config()).await?;
    ensure_topic(&client, &args.topic, args.partitions).await?;
    let progress = Progress::start(mode, args.messages);
    let report = match mode {
        Mode::Produce => produce(&client, args, &progress.done).await,
        Mode::Consume => match &args.group {
            Some(group) => consume_group(&client, args, group, &progress.done).await,
            None => consume(&client, args, &progress.done).await,
        },
        Mode::EndToEnd => end_to_end(&client, args, &progress.done).await,
    };
    progress.finish();
    client.close().await;
    let report = report?;
    let object = report.json();
    println!(
        "bench {}: {} messages of {} bytes, {} producers{}: {} msgs/s, {} MB/s; latency us p50 {} p99 {} p99.9 {} max {}",
        mode.name(),
        report.messages,
        report.size,
        report.producers,
        if args.sync { " (sync)" } else { "" },
        object["msgs_per_s"],
        object["mb_per_s"],
        object["p50_us"],
        object["p99_us"],
        object["p999_us"],
        object["max_us"],
    );
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{object}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn ensure_topic(client: &Client, topic: &str, partitions: u32) -> anyhow::Result<()> {
    match Admin::new(client.clone())
        .create_topic(topic, partitions, None)
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if error.error_code() == Some(&ErrorCode::TopicAlreadyExists) => Ok(()),
        Err(error) => Err(anyhow::Error::new(error).context(format!("creating topic {topic}"))),
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, BENCH_MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = (latency.as_micros() as u64).clamp(1, BENCH_MAX_LATENCY_US);
    histogram
        .record(micros)
        .expect("clamped into the histogram's range");
}

/// Messages for producer `index` of `producers`: an even split, the first ones taking the rest.
pub fn share(messages: u64, producers: u64, index: u64) -> u64 {
    messages / producers + u64::from(index < messages % producers)
}

/// A message handed to the producer: still waiting for its acknowledgement (pipelined), or
/// already acknowledged with its latency (`--sync`).
enum Pending {
    Waiting(Instant, DeliveryFuture),
    Done(Result<Delivery, ProduceError>, Duration),
}

/// Runs the producers; each message's value carries its send time (see `make_value`).
async fn run_producers(
    client: &Client,
    args: &BenchArgs,
    done: &Arc<AtomicU64>,
    epoch: Instant,
    record_acks: bool,
    warm_up: bool,
) -> anyhow::Result<(Histogram<u64>, Instant)> {
    let mut producers = Vec::new();
    for _ in 0..args.producers {
        let defaults = ProducerConfig::default();
        let config = ProducerConfig {
            linger_ms: match (args.linger_ms, args.sync) {
                (Some(linger_ms), _) => linger_ms,
                (None, true) => 0,
                (None, false) => defaults.linger_ms,
            },
            batch_bytes: args.batch_bytes.unwrap_or(defaults.batch_bytes),
            max_in_flight_per_partition: args
                .in_flight
                .unwrap_or(defaults.max_in_flight_per_partition),
            compression: args.compression.codec(),
            ..defaults
        };
        producers.push(Producer::with_config(client.clone(), config));
    }
    if warm_up {
        // One untimed message per producer first, so connecting, learning the partition
        // leaders and getting a producer id are not counted as the first messages' latency.
        let sends = producers.iter().map(|producer| {
            producer.send(&args.topic, None, make_value(args.size, Duration::ZERO))
        });
        for delivery in sends.collect::<Vec<_>>() {
            delivery.await.context("warm-up message")?;
        }
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, producer) in (0..args.producers).zip(producers) {
        let count = share(args.messages, args.producers, index);
        let topic = args.topic.clone();
        let size = args.size;
        let sync = args.sync;
        let window = args.window as usize;
        let done = done.clone();
        tasks.spawn(async move {
            let (pending_sender, mut pending) =
                mpsc::channel(if sync { BENCH_SYNC_WINDOW } else { window });
            let sender = async {
                for _ in 0..count {
                    let sent_at = Instant::now();
                    let value = make_value(size, sent_at.duration_since(epoch));
                    producer.wait_for_capacity().await;
                    let delivery = producer.send(&topic, None, value);
                    let pending = if sync {
                        let result = delivery.await;
                        Pending::Done(result, sent_at.elapsed())
                    } else {
                        Pending::Waiting(sent_at, delivery)
                    };
                    if pending_sender.send(pending).await.is_err() {
                        break;
                    }
                }
                drop(pending_sender);
            };
            let collector = async {
                let mut histogram = new_histogram();
                let mut failures = 0u64;
                let mut first_error = None;
                while let Some(delivery) = pending.recv().await {
                    let (result, latency) = match delivery {
                        Pending::Waiting(sent_at, future) => {
                            let result = future.await;
                            (result, sent_at.elapsed())
                        }
                        Pending::Done(result, latency) => (result, latency),
                    };
                    match result {
                        Ok(_) => {
                            if record_acks {
                                record_latency(&mut histogram, latency);
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(error) => {
                            failures += 1;
                            first_error.get_or_insert(error);
                        }
                    }
                }
                (histogram, failures, first_error)
            };
            let ((), outcome) = tokio::join!(sender, collector);
            producer.close().await;
            outcome
        });
    }
    let mut histogram = new_histogram();
    let mut failures = 0;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (part, part_failures, part_error) = joined.context("producer task")?;
        histogram.add(part).context("merging histograms")?;
        failures += part_failures;
        if first_error.is_none() {
            first_error = part_error;
        }
    }
    if let Some(error) = first_error {
        bail!(
            "{failures} of {} messages failed; first: {error}",
            args.messages
        );
    }
    Ok((histogram, start))
}

/// A value of `size` bytes; the first 8 hold the send time (nanoseconds since the run's epoch)
/// when there is room, the rest is a fixed pattern.
fn make_value(size: usize, since_epoch: Duration) -> Bytes {
    // Filling the pattern byte by byte cost the bench client 12% of its CPU (BENCHMARKS.md):
    // repeat a 26-byte alphabet with bulk copies instead.
    const ALPHABET: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";
    let mut value = BytesMut::with_capacity(size);
    while value.len() < size {
        let take = (size - value.len()).min(ALPHABET.len());
        value.extend_from_slice(&ALPHABET[..take]);
    }
    if size >= 8 {
        value[..8].copy_from_slice(&(since_epoch.as_nanos() as u64).to_le_bytes());
    }
    value.freeze()
}

async fn produce(
    client: &Client,
    args: &BenchArgs,
    done: &Arc<AtomicU64>,
) -> anyhow::Result<Report> {
    let (histogram, start) = run_producers(client, args, done, Instant::now(), true, true).await?;
    Ok(Report {
        messages: args.messages,
        size: args.size,
        producers: args.producers,
        elapsed: start.elapsed(),
        latency_us: histogram,
    })
}

async fn consume(
    client: &Client,
    args: &BenchArgs,
    done: &Arc<AtomicU64>,
) -> anyhow::Result<Report> {
    let mut consumer = Consumer::new(client.clone());
    consumer.assign_all(&args.topic).await?;
    consumer.seek_all(SeekTo::Beginning);
    let mut histogram = new_histogram();
    let start = Instant::now();
    let mut received = 0u64;
    let mut bytes = 0u64;
    let mut last_message = Instant::now();
    while received < args.messages {
        if last_message.elapsed() > BENCH_IDLE_TIMEOUT {
            bail!(
                "only {received} of {} messages in {} after {} s without a new one (run bench produce first)",
                args.messages,
                args.topic,
                BENCH_IDLE_TIMEOUT.as_secs()
            );
        }
        let poll_start = Instant::now();
        let records = consumer.poll().await?;
        if records.is_empty() {
            continue;
        }
        last_message = Instant::now();
        record_latency(&mut histogram, poll_start.elapsed());
        let take = records.len().min((args.messages - received) as usize);
        bytes += records[..take]
            .iter()
            .map(|record| record.value.as_ref().map_or(0, |value| value.len() as u64))
            .sum::<u64>();
        received += take as u64;
        done.fetch_add(take as u64, Ordering::Relaxed);
    }
    let size = usize::try_from(bytes / received.max(1)).unwrap_or(usize::MAX);
    Ok(Report {
        messages: received,
        size,
        producers: args.producers,
        elapsed: start.elapsed(),
        latency_us: histogram,
    })
}

/// `bench consume --group G --consumers C`: C members share the topic's partitions and read
/// until `--messages` messages arrived among them. A rebalance in the middle (a member joining
/// late) can make a partition's new owner read it again from the beginning (nothing is
/// committed); such repeats count as messages, as they are work done.
async fn consume_group(
    client: &Client,
    args: &BenchArgs,
    group: &str,
    done: &Arc<AtomicU64>,
) -> anyhow::Result<Report> {
    let consumers = args.consumers.unwrap_or(1);
    let received = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let first_message: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..consumers {
        let client = client.clone();
        let (topic, group, target) = (args.topic.clone(), group.to_string(), args.messages);
        let (received, bytes, done) = (received.clone(), bytes.clone(), done.clone());
        let first_message = first_message.clone();
        tasks.spawn(async move {
            let mut consumer = Consumer::new(client);
            let config = GroupConfig {
                client_id: format!("keel-bench-{index}"),
                auto_commit_interval_ms: None,
                auto_offset_reset: AutoOffsetReset::Earliest,
                ..GroupConfig::default()
            };
            consumer.subscribe_with(&group, &[topic.as_str()], config).await?;
            let mut histogram = new_histogram();
            let mut last_message = Instant::now();
            let outcome: anyhow::Result<()> = async {
                while received.load(Ordering::Relaxed) < target {
                    if last_message.elapsed() > BENCH_IDLE_TIMEOUT {
                        bail!(
                            "only {} of {target} messages in {topic} after {} s without a new one (run bench produce first)",
                            received.load(Ordering::Relaxed),
                            BENCH_IDLE_TIMEOUT.as_secs()
                        );
                    }
                    let poll_start = Instant::now();
                    // No timeout around the poll: one cut short in its join would leave a ghost
                    // member and start over. A joined poll returns within the fetch wait.
                    let records = consumer.poll().await?;
                    if records.is_empty() {
                        if consumer.group_generation().is_none() {
                            last_message = Instant::now();
                        }
                        continue;
                    }
                    first_message.get_or_init(Instant::now);
                    last_message = Instant::now();
                    record_latency(&mut histogram, poll_start.elapsed());
                    let count = records.len() as u64;
                    let taken = received.fetch_add(count, Ordering::Relaxed);
                    let take = count.min(target.saturating_sub(taken));
                    bytes.fetch_add(
                        records[..take as usize]
                            .iter()
                            .map(|record| record.value.as_ref().map_or(0, |value| value.len() as u64))
                            .sum::<u64>(),
                        Ordering::Relaxed,
                    );
                    done.fetch_add(take, Ordering::Relaxed);
                }
                Ok(())
            }
            .await;
            let left = consumer.leave().await;
            outcome?;
            left?;
            Ok::<_, anyhow::Error>(histogram)
        });
    }
    let mut histogram = new_histogram();
    while let Some(joined) = tasks.join_next().await {
        let member = joined.context("a bench consumer task failed")??;
        histogram
            .add(&member)
            .context("merging latency histograms")?;
    }
    let messages = received.load(Ordering::Relaxed).min(args.messages);
    let elapsed = first_message.get().map_or(Duration::ZERO, Instant::elapsed);
    Ok(Report {
        messages,
        size: usize::try_from(bytes.load(Ordering::Relaxed) / messages.max(1))
            .unwrap_or(usize::MAX),
        producers: args.producers,
        elapsed,
        latency_us: histogram,
    })
}

async fn end_to_end(
    client: &Client,
    args: &BenchArgs,
    done: &Arc<AtomicU64>,
) -> anyhow::Result<Report> {
    let mut consumer = Consumer::new(client.clone());
    consumer.assign_all(&args.topic).await?;
    // Start at the current end, resolved before anything is produced.
    let description = Admin::new(client.clone())
        .describe_topic(&args.topic)
        .await?;
    for partition in &description.partitions {
        consumer.seek(
            &args.topic,
            partition.partition,
            SeekTo::Offset(partition.high_watermark),
        );
    }
    let epoch = Instant::now();
    let expected = args.messages;
    let done_consumer = done.clone();
    let consumer_task = tokio::spawn(async move {
        let mut histogram = new_histogram();
        let mut received = 0u64;
        let mut last_message = Instant::now();
        while received < expected {
            if last_message.elapsed() > BENCH_IDLE_TIMEOUT {
                bail!("consumer saw {received} of {expected} messages");
            }
            let records = consumer.poll().await?;
            if !records.is_empty() {
                last_message = Instant::now();
            }
            let now = epoch.elapsed();
            for record in records.iter().take((expected - received) as usize) {
                let sent = record
                    .value
                    .as_deref()
                    .and_then(|value| value.get(..8))
                    .map(|bytes| u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
                    .unwrap_or(0);
                record_latency(
                    &mut histogram,
                    now.saturating_sub(Duration::from_nanos(sent)),
                );
                received += 1;
                done_consumer.fetch_add(1, Ordering::Relaxed);
            }
        }
        anyhow::Ok(histogram)
    });
    run_producers(client, args, done, epoch, false, false).await?;
    let histogram = consumer_task.await.context("consumer task")??;
    Ok(Report {
        messages: args.messages,
        size: args.size,
        producers: args.producers,
        elapsed: epoch.elapsed(),
        latency_us: histogram,
    })
}

/// Progress on stderr: an indicatif bar on a terminal, one plain line per second otherwise.
struct Progress {
    done: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn start(mode: Mode, total: u64) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
                )
                .expect("valid template"),
            );
            bar.set_prefix(format!("bench {}", mode.name()));
            bar
        });
        let task = {
            let done = done.clone();
            let bar = bar.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(if bar.is_some() {
                    PROGRESS_BAR_INTERVAL
                } else {
                    PROGRESS_LINE_INTERVAL
                });
                ticker.tick().await;
                loop {
                    ticker.tick().await;
                    let count = done.load(Ordering::Relaxed);
                    match &bar {
                        Some(bar) => bar.set_position(count),
                        None => eprintln!("bench {}: {count}/{total} messages", mode.name()),
                    }
                }
            })
        };
        Progress { done, task, bar }
    }

    fn finish(self) {
        self.task.abort();
        if let Some(bar) = self.bar {
            bar.set_position(self.done.load(Ordering::Relaxed));
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_evenly_over_producers() {
        let shares: Vec<u64> = (0..3).map(|index| share(10, 3, index)).collect();
        assert_eq!(shares, [4, 3, 3]);
        assert_eq!((0..7).map(|index| share(5, 7, index)).sum::<u64>(), 5);
    }

    #[test]
    fn values_carry_their_send_time_and_have_the_requested_size() {
        let value = make_value(12, Duration::from_nanos(0x0102));
        assert_eq!(value.len(), 12);
        assert_eq!(u64::from_le_bytes(value[..8].try_into().unwrap()), 0x0102);
        assert_eq!(make_value(3, Duration::from_secs(1)).as_ref(), b"abc");
        assert!(make_value(0, Duration::ZERO).is_empty());
    }

    #[test]
    fn json_report_has_exactly_the_documented_keys() {
        let mut latency_us = new_histogram();
        for micros in 1..=1000 {
            latency_us.record(micros).unwrap();
        }
        let report = Report {
            messages: 1000,
            size: 100,
            producers: 2,
            elapsed: Duration::from_secs(2),
            latency_us,
        };
        let json = report.json();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "max_us",
                "mb_per_s",
                "messages",
                "msgs_per_s",
                "p50_us",
                "p999_us",
                "p99_us",
                "producers",
                "size"
            ]
        );
        assert_eq!(json["msgs_per_s"], 500.0);
        assert_eq!(json["mb_per_s"], 0.05);
        assert_eq!(json["max_us"], 1000);
    }
}
