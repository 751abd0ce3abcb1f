//! Retention and snapshots on real `keel server` processes: whole segments deleted below the
//! log start the leader picks, consumers starting there, a follower behind the log start caught
//! up by snapshot, and group 0 restarting from its snapshot instead of replaying its whole log.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_client::{Admin, Client, ConsumeError, Consumer, ConsumerConfig, Producer, SeekTo};
use keel_storage::{Log, LogOptions};
use keel_wire::messages::{Request, Response, TopicSettings};

use common::raw::ask_nodes;
use common::{runtime, TestCluster};

const MIB: u64 = 1 << 20;
/// Small segments so that retention has whole segments to delete after a few MiB.
const SEGMENT_BYTES: u64 = MIB;
const MESSAGE_BYTES: usize = 1024;

/// A cluster of `count` nodes with 1 MiB segments (and batch limits that fit them).
fn small_segment_cluster(count: u64) -> TestCluster {
    let mut cluster = TestCluster::new(count);
    let config = cluster.dir.path().join("keel.toml");
    std::fs::write(
        &config,
        format!(
            "segment_bytes = {SEGMENT_BYTES}\nmax_message_bytes = 65536\n\
             max_record_batch_bytes = 262144\nmax_request_bytes = 1048576\n"
        ),
    )
    .unwrap();
    cluster.extra_args = vec!["--config".into(), config.display().to_string()];
    for id in 1..=count {
        cluster.spawn(id);
    }
    for id in 1..=count {
        cluster.wait_ready(id);
    }
    cluster
}

async fn create(client: &Client, topic: &str, retention_bytes: u64) {
    let settings = TopicSettings {
        retention_bytes: Some(retention_bytes as i64),
        ..TopicSettings::default()
    };
    create_with(client, topic, settings).await;
}

async fn create_with(client: &Client, topic: &str, settings: TopicSettings) {
    create_replicated(client, topic, 3, settings).await;
}

async fn create_replicated(client: &Client, topic: &str, replicas: u16, settings: TopicSettings) {
    let admin = Admin::new(client.clone());
    admin
        .create_topic_with_settings(topic, 1, Some(replicas), settings)
        .await
        .expect("create");
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin
        .describe_topic(topic)
        .await
        .expect("describe")
        .partitions[0]
        .leader
        .is_none()
    {
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Message `seq`: "m<seq>:" padded to [`MESSAGE_BYTES`].
fn message(seq: u64) -> Bytes {
    let mut text = format!("m{seq}:").into_bytes();
    text.resize(MESSAGE_BYTES, b'.');
    Bytes::from(text)
}

fn seq_of(value: &[u8]) -> u64 {
    let text = std::str::from_utf8(value).expect("utf-8");
    let end = text.find(':').expect("numbered message");
    text[1..end].parse().expect("a number")
}

/// Produces `count` numbered messages, pipelined; returns offset -> seq for every ack.
async fn produce(client: &Client, topic: &str, count: u64) -> BTreeMap<u64, u64> {
    let producer = Producer::new(client.clone());
    let mut acked = BTreeMap::new();
    for window in (0..count).collect::<Vec<_>>().chunks(512) {
        let sends: Vec<_> = window
            .iter()
            .map(|&seq| (seq, producer.send(topic, None, message(seq))))
            .collect();
        for (seq, delivery) in sends {
            let (_, offset) = delivery.await.expect("acknowledged");
            acked.insert(offset, seq);
        }
    }
    acked
}

/// Disk blocks held by a group's segment files on one node (segments are sparse files that
/// grow by fallocate, so their length says nothing: their blocks do).
fn segment_blocks_bytes(cluster: &TestCluster, node: u64, group: u64) -> u64 {
    let dir = group_dir(cluster, node, group).join("log");
    // Retention may delete a segment between the listing and its metadata: it holds nothing.
    std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.blocks() * 512)
        .sum()
}

fn group_dir(cluster: &TestCluster, node: u64, group: u64) -> std::path::PathBuf {
    cluster
        .node(node)
        .data_dir
        .join("groups")
        .join(format!("{group:020}"))
}

async fn log_start_offset(client: &Client, topic: &str) -> u64 {
    let description = Admin::new(client.clone())
        .describe_topic(topic)
        .await
        .expect("describe");
    description.partitions[0].log_start_offset
}

/// Reads partition 0 from the beginning to `high_watermark`: (offset, seq) in order.
async fn read_from_beginning(client: &Client, topic: &str, high_watermark: u64) -> Vec<(u64, u64)> {
    let mut consumer = Consumer::new(client.clone());
    consumer.assign(topic, &[0]).await.expect("assign");
    consumer.seek_all(SeekTo::Beginning);
    let mut read = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while read
        .last()
        .is_none_or(|&(offset, _)| offset + 1 < high_watermark)
    {
        assert!(
            Instant::now() < deadline,
            "read only {} records",
            read.len()
        );
        let records = match consumer.poll().await {
            Ok(records) => records,
            Err(error) if error.is_retriable() => continue,
            Err(error) => panic!("consume failed: {error}"),
        };
        for record in records {
            read.push((record.offset, seq_of(record.value.as_deref().unwrap())));
        }
    }
    read
}

/// Retention by bytes on three nodes: after 40 MiB, each node holds at most the retention plus
/// two segments, the log start is above 0, `--from-beginning` starts there and reads every
/// acknowledged message above it in order, and a fetch below it is `OffsetOutOfRange`.
#[test]
fn retention_deletes_whole_segments_and_consumers_start_at_the_log_start() {
    const RETENTION: u64 = 4 * MIB;
    let cluster = small_segment_cluster(3);
    let rt = runtime();
    rt.block_on(async {
        let client = cluster.client().await;
        create(&client, "logs", RETENTION).await;
        let acked = produce(&client, "logs", 40 * MIB / MESSAGE_BYTES as u64).await;
        let high_watermark = acked.keys().last().unwrap() + 1;
        // Every node compacts once it applies the leader's log start (checked once a second).
        let deadline = Instant::now() + Duration::from_secs(30);
        let bound = RETENTION + 2 * SEGMENT_BYTES;
        loop {
            let held: Vec<u64> = (1..=3)
                .map(|node| segment_blocks_bytes(&cluster, node, common::FIRST_CLIENT_GROUP))
                .collect();
            if held.iter().all(|&bytes| bytes <= bound) {
                eprintln!("segment bytes held per node: {held:?} (bound {bound})");
                break;
            }
            assert!(Instant::now() < deadline, "still held {held:?} > {bound}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log_start = log_start_offset(&client, "logs").await;
        assert!(log_start > 0, "the log start moved");
        let read = read_from_beginning(&client, "logs", high_watermark).await;
        assert!(
            read[0].0 >= log_start,
            "read from {} below the log start {log_start}",
            read[0].0
        );
        for (expected, &(offset, _)) in (read[0].0..).zip(&read) {
            assert_eq!(offset, expected, "offsets dense from the log start");
        }
        let read: BTreeMap<u64, u64> = read.into_iter().collect();
        let first_read = *read.keys().next().unwrap();
        for (offset, seq) in acked.range(first_read..) {
            assert_eq!(read.get(offset), Some(seq), "acked m{seq} at {offset}");
        }
        // The acks above the log start are all there; below it, retention took them.
        assert!(first_read <= log_start.max(first_read));

        let mut consumer = Consumer::new(client.clone());
        consumer.assign("logs", &[0]).await.unwrap();
        consumer.seek_all(SeekTo::Offset(0));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match consumer.poll().await {
                Err(ConsumeError::OffsetOutOfRange {
                    offset,
                    log_start_offset,
                    ..
                }) => {
                    assert_eq!(offset, 0);
                    assert!(log_start_offset >= log_start);
                    break;
                }
                Err(error) if error.is_retriable() => {}
                other => panic!("a fetch below the log start answered {other:?}"),
            }
            assert!(Instant::now() < deadline);
        }
    });
}

/// A poll applies every fetch answer it collects, also those after one that failed: here one
/// partition's `OffsetOutOfRange` and another partition's record arrive for the same poll, the
/// error first. The record must still come back and that partition must still be fetched.
/// keel-chaos seed 1104 lost two whole partitions from its final read this way: the consumer
/// returned the error and dropped the answers behind it, leaving their partitions marked in
/// flight, so they were never fetched again.
#[test]
fn an_out_of_range_answer_does_not_drop_the_other_answers_of_its_poll() {
    let cluster = small_segment_cluster(1);
    let rt = runtime();
    rt.block_on(async {
        let client = cluster.client().await;
        let expiring = TopicSettings {
            retention_ms: Some(2_000),
            segment_ms: Some(1_000),
            ..TopicSettings::default()
        };
        create_replicated(&client, "expired", 1, expiring).await;
        create_replicated(&client, "live", 1, TopicSettings::default()).await;
        produce(&client, "expired", 10).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while log_start_offset(&client, "expired").await == 0 {
            assert!(
                Instant::now() < deadline,
                "retention never moved the log start"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }

        // A long poll wait, so that the fetch of "live" is still waiting for data when its
        // record is produced, and so that a partition never fetched again shows as a timeout.
        // A poll dropped after its first step (poll is cancel-safe) leaves both fetches in
        // flight: the one below the log start is answered at once, the other once "live" has
        // a record. Both answers then wait for the next poll, the error first. On a loaded
        // machine the first step may already see the error alone, which tests nothing: start
        // over with a new consumer then.
        let mut attempts = 0;
        let mut consumer = loop {
            attempts += 1;
            assert!(
                attempts <= 10,
                "the first poll step never left both fetches in flight"
            );
            let mut consumer = Consumer::with_config(
                client.clone(),
                ConsumerConfig {
                    max_wait_ms: 5_000,
                    ..ConsumerConfig::default()
                },
            );
            for topic in ["expired", "live"] {
                consumer.assign(topic, &[0]).await.expect("assign");
                consumer.seek(topic, 0, SeekTo::Offset(0));
            }
            let pending = {
                let mut poll = std::pin::pin!(consumer.poll());
                let once = std::future::poll_fn(|cx| Poll::Ready(poll.as_mut().poll(cx))).await;
                match once {
                    Poll::Pending => true,
                    Poll::Ready(Err(ConsumeError::OffsetOutOfRange { .. })) => false,
                    Poll::Ready(other) => panic!("a first poll step answered {other:?}"),
                }
            };
            if pending {
                break consumer;
            }
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let acked = produce(&client, "live", 1).await;
        assert_eq!(acked.keys().copied().collect::<Vec<_>>(), [0]);
        tokio::time::sleep(Duration::from_millis(200)).await;

        let mut live = Vec::new();
        let mut out_of_range = false;
        let deadline = Instant::now() + Duration::from_secs(12);
        while live.is_empty() || !out_of_range {
            assert!(
                Instant::now() < deadline,
                "out of range reported: {out_of_range}; \"live\" read: {live:?}"
            );
            match consumer.poll().await {
                Ok(records) => live.extend(
                    records
                        .iter()
                        .filter(|record| &*record.topic == "live")
                        .map(|record| (record.offset, seq_of(record.value.as_deref().unwrap()))),
                ),
                Err(ConsumeError::OffsetOutOfRange {
                    topic,
                    partition,
                    offset,
                    log_start_offset,
                }) => {
                    assert_eq!((topic.as_str(), offset), ("expired", 0));
                    out_of_range = true;
                    consumer.seek(&topic, partition, SeekTo::Offset(log_start_offset));
                }
                Err(error) if error.is_retriable() => {}
                Err(error) => panic!("consume failed: {error}"),
            }
        }
        assert_eq!(live, [(0, 0)], "the record of \"live\", once");
    });
}

/// Retention by age on a partition that went quiet: once its data is older than
/// `retention.ms`, every replica deletes all of it (the leader rolls its active segment; the
/// followers, whose segments end elsewhere, drop theirs up to the commands after the log
/// start), and the log start reaches the high watermark.
#[test]
fn a_quiet_partition_expires_on_every_replica() {
    let cluster = small_segment_cluster(3);
    let rt = runtime();
    rt.block_on(async {
        let client = cluster.client().await;
        let settings = TopicSettings {
            retention_ms: Some(2_000),
            segment_ms: Some(1_000),
            ..TopicSettings::default()
        };
        create_with(&client, "quiet", settings).await;
        let acked = produce(&client, "quiet", 3 * MIB / MESSAGE_BYTES as u64).await;
        let high_watermark = acked.keys().last().unwrap() + 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let held: Vec<u64> = (1..=3)
                .map(|node| segment_blocks_bytes(&cluster, node, common::FIRST_CLIENT_GROUP))
                .collect();
            let log_start = log_start_offset(&client, "quiet").await;
            // What is left is at most the empty active segment and the small one holding the
            // last commands.
            if log_start == high_watermark && held.iter().all(|&bytes| bytes <= 256 * 1024) {
                eprintln!("after expiry: segment bytes held per node {held:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "log start {log_start} of {high_watermark}, held {held:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
}

/// A follower stopped while the leader compacts past its position catches up by snapshot
/// after its restart: its log from there holds exactly the leader's entries, and it restarts
/// from its snapshot afterwards.
#[test]
fn a_follower_behind_the_log_start_catches_up_by_snapshot() {
    const RETENTION: u64 = 2 * MIB;
    let mut cluster = small_segment_cluster(3);
    let rt = runtime();
    let leader = rt.block_on(async {
        let client = cluster.client().await;
        create(&client, "behind", RETENTION).await;
        let description = Admin::new(client.clone())
            .describe_topic("behind")
            .await
            .unwrap();
        description.partitions[0].leader.unwrap()
    });
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    cluster.kill(follower);
    rt.block_on(async {
        let client = cluster.client().await;
        produce(&client, "behind", 12 * MIB / MESSAGE_BYTES as u64).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while log_start_offset(&client, "behind").await == 0 {
            assert!(Instant::now() < deadline, "the leader never compacted");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    cluster.spawn(follower);
    cluster.wait_ready(follower);
    // Caught up: the leader sees no lag.
    rt.block_on(ask_nodes(
        &cluster,
        &Request::ClusterStatus,
        &Bytes::new(),
        |response, _| {
            let Response::ClusterStatus(status) = response else {
                return None;
            };
            let partition = status
                .partitions
                .into_iter()
                .find(|p| p.topic.as_deref() == Some("behind"))?;
            if partition.leader == Some(follower) {
                return Some(()); // it took over as preferred leader: it had caught up
            }
            let lag = partition
                .followers
                .iter()
                .find(|f| f.node_id == follower)?
                .lag_entries;
            (lag == 0).then_some(())
        },
    ));
    let logs = std::fs::read_to_string(&cluster.node(follower).log).unwrap();
    assert!(logs.contains("snapshot installed"), "{logs}");
    // It restarts from its snapshot too.
    cluster.kill(follower);
    cluster.spawn(follower);
    cluster.wait_ready(follower);
    for id in 1..=3 {
        cluster.kill(id);
    }
    let leader_log = open_log(&group_dir(&cluster, leader, common::FIRST_CLIENT_GROUP));
    let follower_log = open_log(&group_dir(&cluster, follower, common::FIRST_CLIENT_GROUP));
    assert!(
        follower_log.first_index() > 1,
        "the follower's old entries are gone"
    );
    // A retention decision may have reached one log and not the other before the stop.
    let last = leader_log.last_index().min(follower_log.last_index());
    assert!(last + 2 >= leader_log.last_index().max(follower_log.last_index()));
    let from = leader_log.first_index().max(follower_log.first_index());
    let to = last + 1;
    assert!(from < to, "entries to compare");
    let ours = leader_log.read(from, to, u64::MAX).unwrap();
    let theirs = follower_log.read(from, to, u64::MAX).unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!((a.index, a.term, a.kind), (b.index, b.term, b.kind));
        assert_eq!(a.payload, b.payload, "entry {} differs", a.index);
    }
}

fn open_log(group_dir: &Path) -> Log {
    let options = LogOptions {
        segment_bytes: SEGMENT_BYTES,
        max_entry_bytes: 262_144 + 4096,
        ..LogOptions::default()
    };
    Log::open(&group_dir.join("log"), options).unwrap().0
}

/// Group 0 with more applied commands than one snapshot interval restarts from its snapshot:
/// the map comes back whole (producer ids continue), the log holds only the tail, and the
/// restart is quick.
#[test]
fn the_metadata_group_restarts_from_its_snapshot() {
    const COMMANDS: u64 = 100_000;
    let mut cluster = TestCluster::start(1);
    let rt = runtime();
    let last_id = rt.block_on(async {
        let client = cluster.client().await;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let client = client.clone();
            tasks.spawn(async move {
                let mut highest = 0;
                for _ in 0..COMMANDS / 32 {
                    let frame = client.request(&Request::InitProducerId).await.unwrap();
                    let Response::InitProducerId(response) = frame.header else {
                        panic!("unexpected answer {:?}", frame.header);
                    };
                    highest = highest.max(response.producer_id);
                }
                highest
            });
        }
        let mut highest = 0;
        while let Some(result) = tasks.join_next().await {
            highest = highest.max(result.unwrap());
        }
        client.close().await;
        highest
    });
    assert!(
        last_id + 1 >= COMMANDS / 32 * 32,
        "ids handed out: {last_id}"
    );
    let group_dir = cluster
        .node(1)
        .data_dir
        .join("groups")
        .join(format!("{:020}", 0));
    let snapshots = std::fs::read_dir(&group_dir)
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("snapshot-") && name.ends_with(".snap")
        })
        .count();
    assert_eq!(snapshots, 1, "one snapshot kept in {}", group_dir.display());

    cluster.kill(1);
    let started = Instant::now();
    cluster.spawn(1);
    cluster.wait_ready(1);
    let restart = started.elapsed();
    eprintln!("group 0 with {COMMANDS} commands restarted in {restart:?}");
    let logs = cluster.logs();
    assert!(
        logs.contains("metadata map restored from a snapshot"),
        "{logs}"
    );
    // Generous for a shared CI machine; BENCHMARKS.md has the measured figure.
    assert!(
        restart < Duration::from_secs(10),
        "restart took {restart:?}"
    );

    let next = rt.block_on(async {
        let client = cluster.client().await;
        let frame = client.request(&Request::InitProducerId).await.unwrap();
        let Response::InitProducerId(response) = frame.header else {
            panic!("unexpected answer {:?}", frame.header);
        };
        response.producer_id
    });
    assert!(
        next > last_id,
        "ids continue after the restart: {next} after {last_id}"
    );
}

/// A group's committed offset that retention has since deleted (below the log start) is no
/// position to resume at: the member starts per `auto_offset_reset` instead, at the log start
/// for Earliest and at the high watermark for Latest, as a Kafka consumer does.
#[test]
fn a_committed_offset_below_the_log_start_falls_back_to_auto_offset_reset() {
    use keel_client::wire::groups::PartitionOffset;
    use keel_client::{AutoOffsetReset, GroupConfig};
    const RETENTION: u64 = 2 * MIB;
    let cluster = small_segment_cluster(1);
    runtime().block_on(async {
        let client = cluster.client().await;
        let settings = TopicSettings {
            retention_bytes: Some(RETENTION as i64),
            ..TopicSettings::default()
        };
        create_replicated(&client, "expired", 1, settings).await;
        let admin = Admin::new(client.clone());
        for group in ["early", "late"] {
            // Offset 0 committed while it was still there.
            admin
                .reset_group_offsets(
                    group,
                    vec![PartitionOffset {
                        topic: "expired".into(),
                        partition: 0,
                        offset: 0,
                        leader_epoch: None,
                        metadata: String::new(),
                    }],
                )
                .await
                .expect("reset to 0");
        }
        let acked = produce(&client, "expired", 12 * MIB / MESSAGE_BYTES as u64).await;
        let high_watermark = acked.keys().last().unwrap() + 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        while log_start_offset(&client, "expired").await == 0 {
            assert!(
                Instant::now() < deadline,
                "retention never moved the log start"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log_start = log_start_offset(&client, "expired").await;

        let first_read = |group: &'static str, reset: AutoOffsetReset| {
            let client = client.clone();
            async move {
                let mut consumer = Consumer::new(client);
                let config = GroupConfig {
                    auto_offset_reset: reset,
                    auto_commit_interval_ms: None,
                    ..GroupConfig::default()
                };
                consumer
                    .subscribe_with(group, &["expired"], config)
                    .await
                    .expect("subscribe");
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let records = consumer.poll().await.expect("poll");
                    if let Some(record) = records.first() {
                        let offset = record.offset;
                        consumer.leave().await.expect("leave");
                        return offset;
                    }
                    assert!(Instant::now() < deadline, "{group} read nothing");
                }
            }
        };
        let earliest = first_read("early", AutoOffsetReset::Earliest).await;
        assert!(
            earliest >= log_start && earliest < high_watermark,
            "Earliest starts at the log start {log_start}, not at the deleted 0: read {earliest}"
        );
        // Latest: nothing old; the first record read is one produced after the member joined.
        let late = tokio::spawn(first_read("late", AutoOffsetReset::Latest));
        // Produced only once the member holds the partition (Stable), so its start is the high
        // watermark as it was before this record.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let described = admin.describe_group("late").await.expect("describe group");
            if described.state == keel_client::wire::groups::GroupStateView::Stable {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "late never became Stable: {described:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The member positions itself after its sync, on its next poll: give it that poll.
        tokio::time::sleep(Duration::from_secs(1)).await;
        produce(&client, "expired", 1).await;
        let latest = late.await.expect("late member");
        assert_eq!(
            latest, high_watermark,
            "Latest starts at the high watermark"
        );
    });
}
