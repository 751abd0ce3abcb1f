//! A full disk degrades instead of stopping the node, on real `keel server` processes whose data
//! directories sit on small loop-mounted ext4 file systems (tests/common/loopfs.rs): produce
//! gets `DiskFull` while fetches go on, writes resume by themselves once retention frees space,
//! and in a cluster the nodes with room keep every partition writable. Nothing acknowledged is
//! lost on the way.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_client::{
    Admin, Client, ClientConfig, ClientTls, ConsumeError, Consumer, ProduceError, Producer,
    ProducerRecord, RetryPolicy, SeekTo,
};
use keel_wire::messages::{ErrorCode, TopicSettings};

use common::loopfs::LoopFs;
use common::{runtime, TestCluster};

const MIB: u64 = 1 << 20;
const MESSAGE_BYTES: usize = 16 * 1024;
/// The free-space line of every node here (disk.rs): data stops below it.
const MIN_FREE_BYTES: u64 = 24 * MIB;

/// A cluster of `count` nodes with 1 MiB segments and [`MIN_FREE_BYTES`]; the nodes in
/// `small_disks` keep their data on a loop-mounted file system of that many bytes.
fn cluster_with_small_disks(
    count: u64,
    small_disks: &[(u64, u64)],
) -> Option<(TestCluster, Vec<LoopFs>)> {
    let mut cluster = TestCluster::new(count);
    let mut disks = Vec::new();
    for &(node, bytes) in small_disks {
        let disk = LoopFs::create(cluster.dir.path(), &format!("disk-{node}"), bytes)?;
        cluster.nodes[(node - 1) as usize].data_dir = disk.path().join(format!("node-{node}"));
        disks.push(disk);
    }
    let config = cluster.dir.path().join("keel.toml");
    std::fs::write(
        &config,
        format!(
            "segment_bytes = {MIB}\nmin_free_bytes = {MIN_FREE_BYTES}\n\
             max_message_bytes = 65536\nmax_record_batch_bytes = 262144\n\
             max_request_bytes = 1048576\n"
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
    Some((cluster, disks))
}

/// A client that gives up after `attempts` (1: the first answer is the answer).
async fn client_with_attempts(cluster: &TestCluster, attempts: u32) -> Client {
    let config = ClientConfig {
        retry: RetryPolicy {
            max_attempts: attempts,
            ..RetryPolicy::default()
        },
        ..ClientConfig::default()
    };
    let tls = ClientTls::from_ca_file(&cluster.ca()).expect("CA file");
    Client::connect_with(&cluster.bootstrap(), tls, config)
        .await
        .expect("connecting")
}

async fn create(client: &Client, topic: &str, partitions: u32, replicas: u16) {
    let admin = Admin::new(client.clone());
    let unlimited = TopicSettings {
        retention_bytes: Some(-1),
        retention_ms: Some(-1),
        ..TopicSettings::default()
    };
    admin
        .create_topic_with_settings(topic, partitions, Some(replicas), unlimited)
        .await
        .expect("create");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let description = admin.describe_topic(topic).await.expect("describe");
        if description.partitions.iter().all(|p| p.leader.is_some()) {
            return;
        }
        assert!(Instant::now() < deadline, "no leader for {topic}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn message(seq: u64) -> Bytes {
    let mut text = format!("m{seq}:").into_bytes();
    text.resize(MESSAGE_BYTES, b'.');
    Bytes::from(text)
}

fn seq_of(value: &[u8]) -> u64 {
    let text = std::str::from_utf8(&value[..value.len().min(32)]).expect("utf-8");
    let end = text.find(':').expect("numbered message");
    text[1..end].parse().expect("a number")
}

/// The last lines of the nodes' logs, for assertion messages.
fn tail(logs: &str) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

fn server_code(error: &ProduceError) -> Option<ErrorCode> {
    match error {
        ProduceError::Client(error) => error.error_code().cloned(),
        _ => None,
    }
}

/// What a run of produce got: (partition, offset) -> seq for every ack, and every refusal.
#[derive(Default)]
struct Produced {
    acked: BTreeMap<(u32, u64), u64>,
    refused: Vec<ProduceError>,
}

/// Sends `seqs` to `topic`, round robin over `partitions`, 64 in flight; stops early after the
/// first window with a refusal when `stop_on_refusal`.
async fn produce(
    client: &Client,
    topic: &str,
    partitions: u32,
    seqs: std::ops::Range<u64>,
    stop_on_refusal: bool,
) -> Produced {
    let producer = Producer::new(client.clone());
    let mut produced = Produced::default();
    for window in seqs.collect::<Vec<_>>().chunks(64) {
        let sends: Vec<_> = window
            .iter()
            .map(|&seq| {
                let record = ProducerRecord::new(topic, None, message(seq))
                    .with_partition((seq % u64::from(partitions)) as u32);
                (seq, producer.send_record(record))
            })
            .collect();
        for (seq, delivery) in sends {
            match delivery.await {
                Ok((partition, offset)) => {
                    produced.acked.insert((partition, offset), seq);
                }
                Err(error) => produced.refused.push(error),
            }
        }
        if stop_on_refusal && !produced.refused.is_empty() {
            break;
        }
    }
    produced
}

/// Reads `partition` from its log start to `end` (exclusive): offset -> seq.
async fn read(client: &Client, topic: &str, partition: u32, end: u64) -> BTreeMap<u64, u64> {
    let mut consumer = Consumer::new(client.clone());
    consumer.assign(topic, &[partition]).await.expect("assign");
    consumer.seek_all(SeekTo::Beginning);
    let mut read = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while read
        .keys()
        .next_back()
        .is_none_or(|&offset| offset + 1 < end)
    {
        assert!(
            Instant::now() < deadline,
            "read only {} records of {topic}/{partition} below {end}",
            read.len()
        );
        let records = match consumer.poll().await {
            Ok(records) => records,
            Err(ConsumeError::OffsetOutOfRange { .. }) => {
                consumer.seek_all(SeekTo::Beginning);
                continue;
            }
            Err(error) if error.is_retriable() => continue,
            Err(error) => panic!("consume failed: {error}"),
        };
        for record in records {
            read.insert(record.offset, seq_of(record.value.as_deref().unwrap()));
        }
    }
    read
}

/// One node on a 128 MiB file system, produced to until full: produce is refused with
/// `DiskFull`, the node keeps running and serving fetches of everything acknowledged; once
/// retention frees space, produce succeeds again by itself, and every acknowledged message
/// above the log start is still there.
#[test]
fn a_full_disk_refuses_produce_serves_fetches_and_recovers_when_retention_frees_space() {
    let Some((cluster, disks)) = cluster_with_small_disks(1, &[(1, 128 * MIB)]) else {
        return;
    };
    let disk = &disks[0];
    let rt = runtime();
    rt.block_on(async {
        let client = client_with_attempts(&cluster, 1).await;
        create(&client, "fill", 1, 1).await;
        let started = Instant::now();
        let mut produced = produce(
            &client,
            "fill",
            1,
            0..(256 * MIB) / MESSAGE_BYTES as u64,
            true,
        )
        .await;
        assert!(
            !produced.refused.is_empty(),
            "256 MiB went onto a 128 MiB disk without a refusal"
        );
        for error in &produced.refused {
            assert_eq!(
                server_code(error),
                Some(ErrorCode::DiskFull),
                "{error}\n{}",
                tail(&cluster.logs())
            );
        }
        let full_acked = produced.acked.len();
        eprintln!(
            "refused after {full_acked} acks ({} MiB) in {:?}; {} bytes left on the disk",
            (full_acked * MESSAGE_BYTES) >> 20,
            started.elapsed(),
            disk.available_bytes()
        );
        assert!(cluster.is_running(1), "the node stopped on a full disk");
        assert!(
            disk.available_bytes() > 0 && disk.available_bytes() < MIN_FREE_BYTES + 4 * MIB,
            "refused near the line: {} bytes free",
            disk.available_bytes()
        );

        // Full: still refused, and everything acknowledged reads back.
        let again = produce(&client, "fill", 1, 1_000_000..1_000_001, true).await;
        assert_eq!(again.acked.len(), 0, "a full node took more data");
        let end = produced.acked.keys().next_back().unwrap().1 + 1;
        let read_back = read(&client, "fill", 0, end).await;
        for (&(_, offset), seq) in &produced.acked {
            assert_eq!(
                read_back.get(&offset),
                Some(seq),
                "offset {offset} on a full disk"
            );
        }

        // Retention frees space; produce resumes by itself.
        Admin::new(client.clone())
            .alter_topic(
                "fill",
                TopicSettings {
                    retention_bytes: Some((8 * MIB) as i64),
                    ..TopicSettings::default()
                },
            )
            .await
            .expect("alter");
        let freed = Instant::now();
        let mut seq = 2_000_000;
        let resumed = loop {
            let attempt = produce(&client, "fill", 1, seq..seq + 1, true).await;
            seq += 1;
            if let Some((&key, &value)) = attempt.acked.iter().next() {
                produced.acked.insert(key, value);
                break freed.elapsed();
            }
            for error in &attempt.refused {
                assert_eq!(server_code(error), Some(ErrorCode::DiskFull), "{error}");
            }
            assert!(
                freed.elapsed() < Duration::from_secs(30),
                "produce never resumed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        eprintln!(
            "produce resumed {resumed:?} after retention was lowered; {} bytes free",
            disk.available_bytes()
        );
        let more = produce(&client, "fill", 1, 3_000_000..3_000_256, false).await;
        assert!(more.refused.is_empty(), "refused after space was freed");
        produced.acked.extend(more.acked);

        let end = produced.acked.keys().next_back().unwrap().1 + 1;
        let read_back = read(&client, "fill", 0, end).await;
        // Retention may move the log start on while this reads (the produce above keeps it
        // busy): judge against the log start after the read, which every offset read is above.
        let description = Admin::new(client.clone())
            .describe_topic("fill")
            .await
            .expect("describe");
        let log_start = description.partitions[0].log_start_offset;
        let missing: Vec<u64> = produced
            .acked
            .iter()
            .filter(|(&(_, offset), _)| offset >= log_start)
            .filter(|(&(_, offset), &seq)| read_back.get(&offset) != Some(&seq))
            .map(|(&(_, offset), _)| offset)
            .collect();
        assert!(
            missing.is_empty(),
            "acknowledged and lost above the log start {log_start}: {missing:?}"
        );
        assert!(log_start > 0, "retention moved the log start");
    });
}

/// Three nodes, node 3 on a small disk: it fills, and produce to every partition goes on (the
/// other two form the quorum and leadership moves off node 3); node 3 keeps running, and every
/// acknowledged message reads back.
#[test]
fn one_full_node_in_three_does_not_stop_produce() {
    let Some((cluster, disks)) = cluster_with_small_disks(3, &[(3, 96 * MIB)]) else {
        return;
    };
    let disk = &disks[0];
    let rt = runtime();
    rt.block_on(async {
        let client = cluster.client().await;
        // Three partitions: each node is some partition's preferred leader, node 3 included.
        create(&client, "spread", 3, 3).await;
        let admin = Admin::new(client.clone());
        let leaders = |description: keel_wire::messages::TopicDescription| -> Vec<Option<u64>> {
            description.partitions.iter().map(|p| p.leader).collect()
        };
        let before = leaders(admin.describe_topic("spread").await.expect("describe"));
        assert!(
            before.contains(&Some(3)),
            "node 3 leads no partition to hand over: {before:?}"
        );
        let total = (120 * MIB) / MESSAGE_BYTES as u64;
        let produced = produce(&client, "spread", 3, 0..total, false).await;
        assert!(
            produced.refused.is_empty(),
            "refused with one node full: {:?}\n{}",
            produced.refused.iter().take(3).collect::<Vec<_>>(),
            cluster.logs()
        );
        assert!(
            disk.available_bytes() < MIN_FREE_BYTES + 4 * MIB,
            "node 3 never filled: {} bytes free",
            disk.available_bytes()
        );
        assert!(cluster.is_running(3), "the full node stopped");
        let after = leaders(admin.describe_topic("spread").await.expect("describe"));
        eprintln!(
            "leaders before {before:?}, after {after:?}; node 3 has {} bytes free",
            disk.available_bytes()
        );
        assert!(
            !after.contains(&Some(3)),
            "a full node still leads: {after:?}"
        );
        for partition in 0..3 {
            let acked: BTreeMap<u64, u64> = produced
                .acked
                .iter()
                .filter(|(&(p, _), _)| p == partition)
                .map(|(&(_, offset), &seq)| (offset, seq))
                .collect();
            let end = acked.keys().next_back().unwrap() + 1;
            let read_back = read(&client, "spread", partition, end).await;
            for (offset, seq) in &acked {
                assert_eq!(
                    read_back.get(offset),
                    Some(seq),
                    "{partition}/{offset} lost"
                );
            }
        }
    });
}
