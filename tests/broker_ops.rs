//! Operating a real cluster: Prometheus metrics under the names in docs/OPERATIONS.md "Watching",
//! and a clean shutdown on SIGTERM (exit 0, nothing acknowledged lost on restart).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::ask_nodes;
use common::{free_tcp_port, runtime, scrape, TestCluster};
use keel_client::wire::{Request, Response};
use keel_client::{Admin, Consumer, Producer, SeekTo};

#[test]
fn metrics_are_served_under_the_documented_names() {
    let mut cluster = TestCluster::new(3);
    for node in &mut cluster.nodes {
        node.metrics_port = Some(free_tcp_port());
    }
    for id in 1..=3 {
        cluster.spawn(id);
    }
    for id in 1..=3 {
        cluster.wait_ready(id);
    }
    let rt = runtime();
    let _entered = rt.enter();
    rt.block_on(async {
        let client = cluster.client().await;
        Admin::new(client.clone())
            .create_topic("m", 1, Some(3))
            .await
            .expect("create");
        let producer = Producer::new(client.clone());
        for i in 0..50 {
            producer
                .send("m", None, Bytes::from(format!("v{i}")))
                .await
                .expect("produce");
        }
    });
    // Gauges refresh on ticks; give them a moment.
    let names = [
        "keel_raft_term",
        "keel_raft_commit_index",
        "keel_raft_append_entries_sent_total",
        "keel_partition_high_watermark",
        "keel_produce_latency_seconds",
        "keel_storage_fsync_seconds",
        "keel_follower_lag_entries",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all: String = cluster
            .nodes
            .iter()
            .map(|node| scrape(node.metrics_port.unwrap()))
            .collect();
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|name| !all.contains(name))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics missing: {missing:?}\n{all}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sigterm_shuts_down_cleanly_and_keeps_the_data() {
    let mut cluster = TestCluster::start(3);
    let rt = runtime();
    let _entered = rt.enter();
    let (mut acked, leader) = rt.block_on(async {
        let client = cluster.client().await;
        let admin = Admin::new(client.clone());
        admin.create_topic("s", 1, Some(3)).await.expect("create");
        let producer = Producer::new(client.clone());
        let mut acked = Vec::new();
        for i in 0..200 {
            acked.push(
                producer
                    .send("s", None, Bytes::from(format!("v{i}")))
                    .await
                    .expect("produce"),
            );
        }
        let leader = admin
            .describe_topic("s")
            .await
            .expect("describe")
            .partitions[0]
            .leader
            .expect("a leader");
        client.close().await;
        (acked, leader)
    });
    // The partition leader goes first: it hands leadership over before it exits, so the other
    // two serve the next message at once.
    let status = cluster.terminate(leader);
    assert!(
        status.success(),
        "leader {leader} exited with {status}:\n{}",
        cluster.logs()
    );
    let log = std::fs::read_to_string(&cluster.node(leader).log).unwrap();
    assert!(log.contains("handing leadership over"), "{log}");
    rt.block_on(async {
        let client = cluster.client().await;
        let producer = Producer::new(client.clone());
        acked.push(
            producer
                .send("s", None, Bytes::from("v200"))
                .await
                .expect("produce after the handover"),
        );
        client.close().await;
    });
    for id in (1..=3).filter(|&id| id != leader) {
        let status = cluster.terminate(id);
        assert!(
            status.success(),
            "node {id} exited with {status} on SIGTERM:\n{}",
            cluster.logs()
        );
    }
    for id in 1..=3 {
        cluster.spawn(id);
    }
    for id in 1..=3 {
        cluster.wait_ready(id);
    }
    let values = rt.block_on(async {
        let client = cluster.client().await;
        let mut consumer = Consumer::new(client);
        consumer.assign("s", &[0]).await.expect("assign");
        consumer.seek("s", 0, SeekTo::Beginning);
        let mut values = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while values.len() < acked.len() && Instant::now() < deadline {
            if let Ok(records) = consumer.poll().await {
                values.extend(
                    records
                        .into_iter()
                        .map(|record| (record.offset, record.value.unwrap_or_default())),
                );
            }
        }
        values
    });
    assert_eq!(values.len(), acked.len());
    for (i, (offset, value)) in values.iter().enumerate() {
        assert_eq!(*offset, acked[i].1);
        assert_eq!(value, &Bytes::from(format!("v{i}")));
    }
}

#[test]
fn a_wiped_node_waits_to_be_replaced_instead_of_founding_a_cluster() {
    let mut cluster = TestCluster::start(3);
    let rt = runtime();
    let _entered = rt.enter();
    cluster.kill(3);
    std::fs::remove_dir_all(&cluster.node(3).data_dir).expect("wiping node 3");
    cluster.spawn(3);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(&cluster.node(3).log).unwrap_or_default();
        if log.contains("waiting to be added") {
            // Its first start founded (or joined the founding); the wiped restart must not.
            let founded = log
                .matches("every peer is empty: founding the cluster")
                .count()
                + log
                    .matches("joining the cluster founded with this node")
                    .count();
            assert_eq!(founded, 1, "the wiped node must not found again:\n{log}");
            break;
        }
        assert!(Instant::now() < deadline, "no waiting line:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The other two still form the cluster and serve.
    rt.block_on(async {
        let client = cluster.client().await;
        let admin = Admin::new(client.clone());
        admin
            .create_topic("w", 3, Some(2))
            .await
            .expect("create with two live nodes");
        // Placement rotates over every node of the map, the wiped one too: write to a
        // partition both of whose replicas are up.
        let description = admin.describe_topic("w").await.expect("describe");
        let live = (description.partitions.iter())
            .find(|p| !p.replicas.contains(&3))
            .expect("a partition on nodes 1 and 2")
            .partition;
        Producer::new(client.clone())
            .send_record(keel_client::ProducerRecord {
                topic: "w".into(),
                partition: Some(live),
                key: None,
                value: Some(Bytes::from("x")),
                headers: Vec::new(),
                timestamp_ms: None,
            })
            .await
            .expect("produce with two live nodes");
        client.close().await;
    });
}

/// A replica whose log cannot be opened (here its group directory is a plain file) is held
/// offline: the node keeps running and serving, a restart that re-applies the topic's creation
/// comes up again instead of stopping, the other two replicas take the writes, and once the
/// obstacle is gone the node opens the replica on its own and it catches up.
#[test]
fn a_replica_that_cannot_be_opened_is_held_offline_and_retried() {
    let mut cluster = TestCluster::start(3);
    // The first topic's partition is the first client group.
    let blocker = cluster
        .node(3)
        .data_dir
        .join("groups")
        .join(format!("{:020}", common::FIRST_CLIENT_GROUP));
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, b"not a directory").unwrap();
    let rt = runtime();
    // Node 3's lag as the partition's leader sees it: only the leader's status lists follower
    // lags, so every node is asked until one answers as the leader.
    let lag_of_node_3 = |rt: &tokio::runtime::Runtime, cluster: &TestCluster| {
        rt.block_on(ask_nodes(
            cluster,
            &Request::ClusterStatus,
            &Bytes::new(),
            |response, _| {
                let Response::ClusterStatus(status) = response else {
                    return None;
                };
                let partition = status
                    .partitions
                    .into_iter()
                    .find(|p| p.topic.as_deref() == Some("held"))?;
                if partition.followers.is_empty() {
                    return None; // not the leader's view
                }
                match partition.leader? {
                    3 => Some(0),
                    _ => partition
                        .followers
                        .iter()
                        .find(|f| f.node_id == 3)
                        .map(|f| f.lag_entries),
                }
            },
        ))
    };
    rt.block_on(async {
        let client = cluster.client().await;
        Admin::new(client.clone())
            .create_topic("held", 1, Some(3))
            .await
            .expect("create");
        let producer = Producer::new(client.clone());
        for i in 0..20 {
            producer
                .send("held", None, Bytes::from(format!("v{i}")))
                .await
                .expect("two replicas of three take writes");
        }
        client.close().await;
    });
    assert!(cluster.is_running(3), "{}", cluster.logs());
    let log = std::fs::read_to_string(&cluster.node(3).log).unwrap();
    assert!(log.contains("held offline"), "{log}");
    let lag = lag_of_node_3(&rt, &cluster);
    assert!(lag >= 20, "node 3 is {lag} entries behind while offline");

    cluster.kill(3);
    cluster.spawn(3);
    cluster.wait_ready(3);
    assert!(
        cluster.is_running(3),
        "a restart must not stop on the same replica"
    );

    std::fs::remove_file(&blocker).unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while lag_of_node_3(&rt, &cluster) != 0 {
        assert!(
            Instant::now() < deadline,
            "node 3 never caught up after the retry:\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
