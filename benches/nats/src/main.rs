//! NATS JetStream produce benchmark: the baseline beside `keel bench produce`
//! (scripts/bench-nats.sh starts the cluster and runs this).
//!
//! It measures what `keel bench produce` measures, the same way, so the two lines can be set
//! side by side:
//! - `--messages` messages of `--size` bytes in all, split evenly over `--producers` producers
//!   that share one connection (Keel's producers share one client too);
//! - every message is a JetStream publish whose acknowledgement is awaited: the ack means the
//!   stream leader stored it and a majority of the replicas have it;
//! - latency is send-to-ack per message, from just before the publish is handed to the client
//!   to the moment its ack is taken; pipelined mode keeps up to `--window` publishes in flight
//!   per producer, `--sync` one;
//! - the output line and `--json FILE` carry the keys of `keel bench produce`: msgs_per_s,
//!   mb_per_s (decimal MB of payload), p50_us, p99_us, p999_us, max_us, messages, size,
//!   producers.
//!
//! The bench (re)creates the stream itself, so every run starts from an empty stream, then
//! connects to the stream's leader: a Keel producer talks to its partition leader directly, and
//! going through a follower would add a route hop that Keel does not pay.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};

/// Highest latency the histogram records (longer ones are clamped): 10 minutes, as in Keel.
const MAX_LATENCY_US: u64 = 600_000_000;
/// Bound on each wait for the cluster to be usable (stream creation, leader election).
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one ack may take before the run fails rather than hangs.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Parser, Debug)]
#[command(about = "JetStream produce benchmark with the output of `keel bench produce`")]
struct Args {
    /// Client URLs of the cluster's servers, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    servers: Vec<String>,
    /// Stream to (re)create; any previous stream of that name is deleted first.
    #[arg(long, default_value = "KEELBENCH")]
    stream: String,
    /// Subject the stream captures and the producers publish to.
    #[arg(long, default_value = "keel.bench")]
    subject: String,
    /// Replicas of the stream (file storage).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Messages in all (split evenly over the producers).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    messages: u64,
    /// Bytes per message payload.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Concurrent producers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    producers: u64,
    /// Publishes each producer keeps in flight in pipelined mode.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    window: u64,
    /// One message in flight per producer (measures latency rather than throughput).
    #[arg(long)]
    sync: bool,
    /// Write the results as one JSON object to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let window = if args.sync { 1 } else { args.window as usize };

    let admin = connect(&args.servers).await?;
    let leader = recreate_stream(&admin, &args).await?;
    let leader_url = find_server(&args.servers, &leader).await?;
    eprintln!(
        "nats-bench: stream {} (R{}, file) led by {leader} at {leader_url}; server {}; {} in flight per producer",
        args.stream,
        args.replicas,
        admin.server_info().version,
        window
    );
    let client = connect(std::slice::from_ref(&leader_url)).await?;

    // The context-wide cap must never be what limits a run: each producer bounds itself.
    let context = jetstream::context::ContextBuilder::new()
        .timeout(ACK_TIMEOUT)
        .max_ack_inflight(window * args.producers as usize + 1)
        .build(client.clone());
    let payload = make_payload(args.size);

    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..args.producers {
        let count = share(args.messages, args.producers, index);
        tasks.spawn(produce(
            context.clone(),
            args.subject.clone(),
            payload.clone(),
            count,
            window,
        ));
    }
    let mut histogram = new_histogram();
    while let Some(joined) = tasks.join_next().await {
        histogram
            .add(joined.context("producer task")??)
            .context("merging histograms")?;
    }
    let elapsed = start.elapsed();

    // Every acknowledged message must be in the stream, or the figures mean nothing.
    let stored = context
        .get_stream(&args.stream)
        .await?
        .info()
        .await?
        .state
        .messages;
    if stored != args.messages {
        bail!(
            "stream holds {stored} messages, {} were acknowledged",
            args.messages
        );
    }
    client.drain().await.ok();
    admin.drain().await.ok();

    let object = report(&args, elapsed, &histogram);
    println!(
        "bench produce (nats jetstream): {} messages of {} bytes, {} producers{}: {} msgs/s, {} MB/s; latency us p50 {} p99 {} p99.9 {} max {}",
        args.messages,
        args.size,
        args.producers,
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

async fn connect(servers: &[String]) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(SETUP_TIMEOUT))
        // A run that loses its connection is a failed run, not one to resume elsewhere.
        .max_reconnects(0)
        .connect(servers)
        .await
        .with_context(|| format!("connecting to {}", servers.join(",")))
}

/// Deletes and creates the stream, then waits for its leader; returns the leader's name.
/// Both steps retry until SETUP_TIMEOUT: right after the servers start, the JetStream meta
/// group may still be electing, and a new stream's group elects its own leader after creation.
async fn recreate_stream(client: &async_nats::Client, args: &Args) -> anyhow::Result<String> {
    let context = jetstream::new(client.clone());
    let config = stream::Config {
        name: args.stream.clone(),
        subjects: vec![args.subject.clone()],
        storage: stream::StorageType::File,
        num_replicas: args.replicas,
        ..Default::default()
    };
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut created = loop {
        // Absent is fine; anything else surfaces through create_stream below.
        let _ = context.delete_stream(&args.stream).await;
        match context.create_stream(config.clone()).await {
            Ok(created) => break created,
            Err(error) if Instant::now() < deadline => {
                eprintln!(
                    "nats-bench: creating stream {}: {error}; retrying",
                    args.stream
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("creating stream {}", args.stream))
            }
        }
    };
    loop {
        let info = created.info().await.context("stream info")?;
        let leader = info
            .cluster
            .as_ref()
            .and_then(|cluster| cluster.leader.clone());
        let replicas_current = info
            .cluster
            .as_ref()
            .map(|cluster| cluster.replicas.iter().filter(|peer| peer.current).count())
            .unwrap_or(0);
        match leader {
            Some(leader) if replicas_current + 1 >= args.replicas => return Ok(leader),
            _ if Instant::now() >= deadline => {
                bail!("stream {} has no leader with current replicas", args.stream)
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The URL, among `servers`, of the server named `name`.
async fn find_server(servers: &[String], name: &str) -> anyhow::Result<String> {
    for url in servers {
        let client = connect(std::slice::from_ref(url)).await?;
        let found = client.server_info().server_name == name;
        client.drain().await.ok();
        if found {
            return Ok(url.clone());
        }
    }
    bail!("no server named {name} among {}", servers.join(","))
}

/// One producer: `count` publishes, at most `window` of them awaiting their ack. A sender
/// publishes and a collector takes the acks in order (JetStream acks one stream's messages
/// in order), so each ack is timed the moment it arrives rather than when the sender is
/// next idle.
async fn produce(
    context: jetstream::Context,
    subject: String,
    payload: Bytes,
    count: u64,
    window: usize,
) -> anyhow::Result<Histogram<u64>> {
    let slots = Arc::new(Semaphore::new(window));
    let (pending_tx, mut pending_rx) = mpsc::channel(window);
    let sender = async {
        for _ in 0..count {
            let slot = slots.clone().acquire_owned().await?;
            let sent_at = Instant::now();
            let ack = context.publish(subject.clone(), payload.clone()).await?;
            if pending_tx.send((sent_at, ack, slot)).await.is_err() {
                break; // The collector failed; its error is the one to report.
            }
        }
        drop(pending_tx);
        anyhow::Ok(())
    };
    let collector = async {
        let mut histogram = new_histogram();
        while let Some((sent_at, ack, slot)) = pending_rx.recv().await {
            ack.await.context("publish ack")?;
            record_latency(&mut histogram, sent_at.elapsed());
            drop(slot);
        }
        anyhow::Ok(histogram)
    };
    let (sent, collected) = tokio::join!(sender, collector);
    let histogram = collected?;
    sent.context("publish")?;
    Ok(histogram)
}

fn report(args: &Args, elapsed: Duration, histogram: &Histogram<u64>) -> serde_json::Value {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let messages_per_second = args.messages as f64 / seconds;
    json!({
        "msgs_per_s": round2(messages_per_second),
        "mb_per_s": round2(messages_per_second * args.size as f64 / 1e6),
        "p50_us": histogram.value_at_quantile(0.50),
        "p99_us": histogram.value_at_quantile(0.99),
        "p999_us": histogram.value_at_quantile(0.999),
        "max_us": histogram.max(),
        "messages": args.messages,
        "size": args.size,
        "producers": args.producers,
    })
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Messages for producer `index` of `producers`: an even split, the first ones taking the rest
/// (as in Keel).
fn share(messages: u64, producers: u64, index: u64) -> u64 {
    messages / producers + u64::from(index < messages % producers)
}

/// The same fixed pattern as Keel's values; one buffer shared by every publish.
fn make_payload(size: usize) -> Bytes {
    (0..size)
        .map(|index| b'a' + (index % 26) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
    histogram
        .record(micros)
        .expect("clamped into the histogram's range");
}
