//! `keel-chaos`: Keel's own fault-testing harness against real `keel server` processes
//! (docs/CHAOS.md), in the manner of Jepsen's Kafka, Redpanda and NATS
//! JetStream tests.
//!
//! One run: start 3 or 5 nodes on 127.0.0.1 (relays between them: relay.rs), create topics,
//! run producers and consumers (workload.rs) and consumer-group members (group.rs) while the nemesis (nemesis.rs) injects faults on a
//! seeded schedule; then heal everything, let the cluster settle, stop the clients, read every
//! partition in full, let the group drain and let the checker (checker.rs) judge the history (history.rs). The last
//! stdout line is the summary; the exit status is 0 only for a clean run with faults injected.
//!
//! ```text
//! cargo run --release --bin keel-chaos -- --nodes 5 --duration-s 300 --seed 7
//! keel-chaos --check DIR/history.jsonl      # re-judge a saved history
//! ```

mod checker;
mod cluster;
mod group;
mod history;
mod limits;
mod nemesis;
mod relay;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use keel_client::wire::messages::TopicSettings;
use keel_client::{Admin, Client};
use tokio::sync::watch;

use crate::checker::Report;
use crate::cluster::Cluster;
use crate::history::{Event, History};
use crate::limits::{
    CREATE_TOPIC_RETRIES, CREATE_TOPIC_RETRY_INTERVAL, FINAL_READ_TIMEOUT, GROUP_DRAIN_TIMEOUT,
    HEAL_TIMEOUT, RETAINED_TOPIC, RETAINED_TOPIC_RETENTION_BYTES, RETAINED_TOPIC_SEGMENT_MS,
    RUNTIME_SHUTDOWN_TIMEOUT, RUNTIME_WORKER_THREADS, START_FAILURE_LOG_LINES, START_TIMEOUT,
};
use crate::nemesis::{FaultKind, Nemesis};
use crate::workload::LeaderView;

/// The planted bug of keel-broker this harness must be able to catch (docs/CHAOS.md
/// "Proving the checker can fail").
const ACK_BEFORE_COMMIT_SWITCH: &str = "KEEL_FAULT_ACK_BEFORE_COMMIT";
/// What a node logs when that switch is compiled in and on (broker/src/partition/mod.rs).
const ACK_BEFORE_COMMIT_LOG: &str = "fault switch KEEL_FAULT_ACK_BEFORE_COMMIT on";

#[derive(Parser, Debug)]
#[command(
    name = "keel-chaos",
    about = "Fault tests against real keel server processes"
)]
struct Args {
    /// Nodes in the cluster (3 or 5).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=5))]
    nodes: u64,
    /// How long faults are injected (the run takes longer: start, heal, settle, final read).
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Seed of the fault schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fault kinds to inject (comma-separated): kill, pause, partition, wipe (disk loss, then
    /// `replace-node`, docs/CLI.md).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,pause,partition,wipe"
    )]
    faults: Vec<FaultKind>,
    /// Concurrent producers (each its own client).
    #[arg(long, default_value_t = 3)]
    producers: u32,
    /// Concurrent consumers; partitions are dealt out between them.
    #[arg(long, default_value_t = 2)]
    consumers: u32,
    /// Members of the consumer group `keel-chaos` reading the main topic (each its own client;
    /// 0: no group).
    #[arg(long, default_value_t = 2)]
    group_consumers: u32,
    /// Messages per second per producer.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Partitions of the main topic (a second topic has one partition).
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    /// Replicas of each partition (default: every node). With fewer, a node's metadata names
    /// no leader for partitions it does not replicate and the SDK asks their replicas.
    #[arg(long)]
    replication: Option<u64>,
    /// Healthy time after the last fault before the clients stop.
    #[arg(long, default_value_t = 5)]
    settle_s: u64,
    /// Where node data, logs and the history go (default: `target/keel-chaos/seed-<S>-<pid>` of the
    /// build that holds the `keel` binary, else the system temporary directory). Use a real disk,
    /// not tmpfs: fsync must mean something.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The `keel` binary (default: the one next to this binary, i.e. of the same build).
    #[arg(long)]
    keel: Option<PathBuf>,
    /// Do not fail the run on duplicates (until the idempotent producer lands; still reported).
    #[arg(long)]
    allow_duplicates: bool,
    /// Keep the nodes' data dirs after a clean run (they are always kept after a failure).
    #[arg(long)]
    keep_data: bool,
    /// Judge a saved history file instead of running.
    #[arg(long)]
    check: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.check {
        Some(path) => history::read(path).map(|lines| checker::check(&lines)),
        None => run(&args),
    };
    match result {
        Ok(report) => {
            print_examples(&report);
            println!("{}", summary_line(&report));
            if passed(&args, &report) {
                ExitCode::SUCCESS
            } else {
                eprintln!("keel-chaos: FAILED");
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("keel-chaos: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The run fails on any safety violation, or when no fault was injected at all.
fn passed(args: &Args, report: &Report) -> bool {
    let mut violations = report.violations();
    if args.allow_duplicates {
        violations -= report.duplicated;
    }
    violations == 0 && report.total_faults() > 0
}

fn summary_line(report: &Report) -> String {
    format!(
        "chaos seed={} nodes={} duration_s={} acked={} lost={} duplicated={} reordered={} dirty_reads={} group_reads={} group_commits={} group_lost={} group_gap={} offset_fetch_stale={} group_dirty={} faults=kill:{},pause:{},partition:{},wipe:{}",
        report.seed,
        report.nodes,
        report.duration_s,
        report.acked,
        report.lost,
        report.duplicated,
        report.reordered,
        report.dirty_reads,
        report.group_reads,
        report.group_commits,
        report.group_lost,
        report.group_gap,
        report.offset_fetch_stale,
        report.group_dirty,
        report.fault_count("kill"),
        report.fault_count("pause"),
        report.fault_count("partition"),
        report.fault_count("wipe"),
    )
}

fn print_examples(report: &Report) {
    eprintln!(
        "keel-chaos: sent={} acked={} failed_or_unknown={} unacked_landed={} reads={} expired_by_retention={} lost_elsewhere={} phantoms={} offset_gaps={} final_read_complete={}",
        report.sent,
        report.acked,
        report.failed,
        report.unacked_landed,
        report.reads,
        report.expired,
        report.lost_elsewhere,
        report.phantoms,
        report.offset_gaps,
        report.final_complete
    );
    eprintln!(
        "keel-chaos: group: reads={} duplicate_reads={} commits={} failed_commits={} generations={} offsets_seen={} drained={}",
        report.group_reads,
        report.group_duplicates,
        report.group_commits,
        report.group_commit_failures,
        report.group_generations,
        report.committed_seen,
        match report.group_drained {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        }
    );
    for example in &report.examples {
        eprintln!("keel-chaos: violation: {example}");
    }
}

fn run(args: &Args) -> anyhow::Result<Report> {
    let keel = match &args.keel {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the binary's directory")?
            .join("keel"),
    };
    if !keel.exists() {
        bail!(
            "no keel binary at {} (`cargo build --release` builds both, or pass --keel)",
            keel.display()
        );
    }
    warn_if_older(&keel)?;
    let root = args
        .dir
        .clone()
        .unwrap_or_else(|| default_run_dir(&keel, args.seed));
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let history_path = root.join("history.jsonl");
    eprintln!(
        "keel-chaos: seed {} nodes {} for {} s; data, logs and history in {}",
        args.seed,
        args.nodes,
        args.duration_s,
        root.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_WORKER_THREADS)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let history = Arc::new(History::create(&history_path)?);
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = drive(args, &keel, &root, history.clone()) => outcome,
            signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
        }
    });
    // The cluster (and its processes) is gone once `drive` returned or was dropped.
    history.flush()?;
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    outcome
}

/// `cargo run --bin keel-chaos` builds only this binary, so the `keel` next to it may be from
/// an older build: say so (a newer keel-chaos alone is common and harmless, hence a warning).
fn warn_if_older(keel: &Path) -> anyhow::Result<()> {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|meta| meta.modified());
    let harness = std::env::current_exe()?;
    if let (Ok(keel_time), Ok(harness_time)) = (modified(keel), modified(&harness)) {
        if keel_time < harness_time {
            eprintln!(
                "keel-chaos: warning: {} is older than this binary; if the broker changed, \
                 run `cargo build --release` (both binaries) first",
                keel.display()
            );
        }
    }
    Ok(())
}

/// The run itself; the cluster it starts is dropped (every process killed) when it returns.
async fn drive(
    args: &Args,
    keel: &Path,
    root: &Path,
    history: Arc<History>,
) -> anyhow::Result<Report> {
    let topics = vec![
        ("chaos-a".to_string(), args.partitions),
        ("chaos-b".to_string(), 1),
        (RETAINED_TOPIC.to_string(), 1),
    ];
    history.record(Event::Start {
        seed: args.seed,
        nodes: args.nodes,
        duration_s: args.duration_s,
        topics: topics.clone(),
    });
    let mut cluster = Cluster::new(keel, root, args.nodes).await?;
    for id in cluster.ids() {
        cluster.spawn(id)?;
    }
    for id in cluster.ids() {
        if !cluster.wait_ready(id, START_TIMEOUT).await {
            bail!(
                "node {id} not ready; log:\n{}",
                cluster.log_tail(id, START_FAILURE_LOG_LINES)
            );
        }
    }
    let bootstrap = cluster.bootstrap();
    let ca = cluster.ca();
    let admin_client = workload::connect(&bootstrap, &ca).await?;
    let leader_view = LeaderView::connect(&bootstrap, &ca).await?;
    let replication = args.replication.unwrap_or(args.nodes).clamp(1, args.nodes);
    create_topics(&admin_client, &topics, replication).await?;
    if !leader_view.wait_for_leaders(&topics, START_TIMEOUT).await {
        bail!("partitions without a leader {START_TIMEOUT:?} after creating the topics");
    }
    let partitions: workload::Partitions = Arc::new(
        topics
            .iter()
            .flat_map(|(topic, count)| (0..*count).map(move |p| (topic.clone(), p)))
            .collect(),
    );

    let (stop_sender, stop) = watch::channel(false);
    let mut clients = tokio::task::JoinSet::new();
    for index in 0..args.producers {
        let client = workload::connect(&bootstrap, &ca).await?;
        clients.spawn(workload::run_producer(
            index,
            client,
            partitions.clone(),
            args.rate.max(1),
            stop.clone(),
            history.clone(),
        ));
    }
    for index in 0..args.consumers {
        let assignment: Vec<(String, u32)> = partitions
            .iter()
            .enumerate()
            .filter(|(position, _)| *position as u32 % args.consumers == index)
            .map(|(_, tp)| tp.clone())
            .collect();
        let client = workload::connect(&bootstrap, &ca).await?;
        clients.spawn(workload::run_consumer(
            index,
            client,
            assignment,
            stop.clone(),
            history.clone(),
        ));
    }

    // The consumer group reads the main topic (the retained one deletes what a slow member has
    // not read yet), with its own stop: it drains after the other clients have stopped.
    let (group_stop_sender, group_stop) = watch::channel(false);
    let mut group_tasks = tokio::task::JoinSet::new();
    let (main_topic, main_partitions) = topics[0].clone();
    let watcher = group::OffsetWatcher::new(
        admin_client.clone(),
        main_topic.clone(),
        main_partitions,
        history.clone(),
    );
    if args.group_consumers > 0 {
        let started = Instant::now();
        let leaves = group::leave_schedule(
            args.seed,
            args.group_consumers,
            Duration::from_secs(args.duration_s),
        );
        for member in 0..args.group_consumers {
            let client = workload::connect(&bootstrap, &ca).await?;
            group_tasks.spawn(group::run_member(
                member,
                client,
                main_topic.clone(),
                started,
                leaves
                    .iter()
                    .filter(|leave| leave.member == member)
                    .copied()
                    .collect(),
                group_stop.clone(),
                history.clone(),
            ));
        }
        group_tasks.spawn(watcher.clone().run(group_stop.clone()));
    }

    let mut nemesis = Nemesis::new(
        args.seed,
        args.faults.clone(),
        admin_client.clone(),
        leader_view.clone(),
        partitions.clone(),
        history.clone(),
    );
    let until = Instant::now() + Duration::from_secs(args.duration_s);
    nemesis.run(&mut cluster, until).await;

    heal(&mut cluster, &mut nemesis, &history).await;
    eprintln!("keel-chaos: healed; settling for {} s", args.settle_s);
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
    stop_sender.send_replace(true);
    // Producers wait for their outstanding sends (bounded); consumers stop at once.
    while clients.join_next().await.is_some() {}
    nemesis.reap_crashed(&mut cluster);

    if !leader_view.wait_for_leaders(&topics, HEAL_TIMEOUT).await {
        history.note(format!(
            "partitions without a leader {HEAL_TIMEOUT:?} after the heal"
        ));
    }
    let final_client = workload::connect(&bootstrap, &ca).await?;
    let final_read =
        workload::read_final(final_client, &partitions, &history, FINAL_READ_TIMEOUT).await;
    history.record(Event::FinalDone {
        complete: final_read.complete,
    });
    if args.group_consumers > 0 {
        let high_watermarks = final_read
            .reached
            .iter()
            .filter(|((topic, _), _)| *topic == main_topic)
            .map(|((_, partition), offset)| (*partition, *offset))
            .collect();
        let complete = group::drain(&watcher, &high_watermarks, GROUP_DRAIN_TIMEOUT).await;
        history.record(Event::GroupDone { complete });
    }
    // Members leave the group as they stop.
    group_stop_sender.send_replace(true);
    while group_tasks.join_next().await.is_some() {}
    if std::env::var(ACK_BEFORE_COMMIT_SWITCH).is_ok_and(|value| value == "1") {
        let nodes = cluster.logs_containing(ACK_BEFORE_COMMIT_LOG);
        let text = format!("fault switch {ACK_BEFORE_COMMIT_SWITCH}: active in {nodes} node logs");
        history.note(text);
    }
    history.flush()?;
    let report = checker::check(&history::read(&root.join("history.jsonl"))?);
    if passed(args, &report) && !args.keep_data {
        cluster.remove_data();
    }
    Ok(report)
}

/// Creates the topics, each partition with `replication` replicas.
async fn create_topics(
    client: &Client,
    topics: &[(String, u32)],
    replication: u64,
) -> anyhow::Result<()> {
    let admin = Admin::new(client.clone());
    for (topic, partitions) in topics {
        let mut attempts = 0;
        loop {
            // One topic keeps only a little, so compaction, snapshot install (a wiped or
            // long-stopped replica behind the log start) and the log start's moves all happen
            // under the faults.
            let settings = if topic == RETAINED_TOPIC {
                TopicSettings {
                    retention_bytes: Some(RETAINED_TOPIC_RETENTION_BYTES),
                    segment_ms: Some(RETAINED_TOPIC_SEGMENT_MS),
                    ..TopicSettings::default()
                }
            } else {
                TopicSettings::default()
            };
            match admin
                .create_topic_with_settings(topic, *partitions, Some(replication as u16), settings)
                .await
            {
                Ok(_) => break,
                Err(error) if attempts < CREATE_TOPIC_RETRIES => {
                    attempts += 1;
                    eprintln!("keel-chaos: creating {topic}: {error}; retrying");
                    tokio::time::sleep(CREATE_TOPIC_RETRY_INTERVAL).await;
                }
                Err(error) => return Err(error).context(format!("creating topic {topic}")),
            }
        }
    }
    Ok(())
}

/// Ends every fault: links clear, paused nodes resumed, stopped nodes restarted; waits
/// (bounded) until every node is ready again.
async fn heal(cluster: &mut Cluster, nemesis: &mut Nemesis, history: &History) {
    cluster.network.heal();
    nemesis.reap_crashed(cluster);
    let mut restarted = Vec::new();
    for id in cluster.ids() {
        if cluster.is_paused(id) {
            if let Err(error) = cluster.resume(id) {
                history.note(format!("resuming node {id}: {error:#}"));
            }
        }
        if !cluster.is_running(id) {
            match cluster.spawn(id) {
                Ok(()) => restarted.push(id),
                Err(error) => history.note(format!("restarting node {id}: {error:#}")),
            }
        }
    }
    for id in restarted {
        if !cluster.wait_ready(id, HEAL_TIMEOUT).await {
            history.note(format!(
                "node {id} not ready {HEAL_TIMEOUT:?} after the heal"
            ));
        }
    }
}

/// Ctrl-C or SIGTERM: the run stops and `drive` is dropped, which kills every node it started.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return "Ctrl-C";
    };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
    }
}

/// Run output never lands in the working tree (where it would be committed by accident): it goes
/// beside the build that holds `keel` (`target/<profile>/keel` -> `target/keel-chaos/`), or
/// under the system temporary directory for a `keel` installed elsewhere.
fn default_run_dir(keel: &Path, seed: u64) -> PathBuf {
    let target = keel
        .parent()
        .and_then(Path::parent)
        .filter(|dir| dir.file_name().is_some_and(|name| name == "target"));
    let base = match target {
        Some(target) => target.to_path_buf(),
        None => std::env::temp_dir(),
    };
    base.join("keel-chaos")
        .join(format!("seed-{seed}-{}", std::process::id()))
}
