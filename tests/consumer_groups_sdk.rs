//! The SDK's consumer-group member (docs/CLIENT.md "Consumer groups") against a real `keel
//! server`: a lone member gets every partition; a second member's join makes the first one's
//! heartbeat see the rebalance, its next poll revoke (listener), rejoin and take half; the new
//! member starts at the committed offsets; commits (sync and async) work under the current
//! generation and an outsider reads them (`Admin::committed_offsets`), and a member that closes hands its partitions back. A member whose coordinator's
//! node is killed finds the new coordinator and goes on reading and committing.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::ask_nodes;
use common::{runtime, TestCluster};
use keel_client::wire::groups::{FindCoordinatorRequest, TopicPartitionRef};
use keel_client::wire::{Request, Response};
use keel_client::{
    Admin, AutoOffsetReset, ConsumeError, Consumer, GroupConfig, Producer, ProducerRecord,
    RebalanceListener,
};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Revoked(Vec<(String, u32)>),
    Assigned(Vec<(String, u32)>),
}

struct Recorder(Arc<Mutex<Vec<Event>>>);

impl RebalanceListener for Recorder {
    fn on_partitions_revoked(&mut self, partitions: &[(String, u32)]) {
        self.0
            .lock()
            .unwrap()
            .push(Event::Revoked(partitions.to_vec()));
    }

    fn on_partitions_assigned(&mut self, partitions: &[(String, u32)]) {
        self.0
            .lock()
            .unwrap()
            .push(Event::Assigned(partitions.to_vec()));
    }
}

fn config() -> GroupConfig {
    GroupConfig {
        client_id: "sdk-test".into(),
        session_timeout_ms: 6_000,
        auto_commit_interval_ms: None,
        auto_offset_reset: AutoOffsetReset::Earliest,
        ..GroupConfig::default()
    }
}

async fn produce_per_partition(producer: &Producer, topic: &str, partitions: u32, each: u32) {
    let mut deliveries = Vec::new();
    for partition in 0..partitions {
        for i in 0..each {
            let value = Bytes::from(format!("p{partition}-{i}"));
            deliveries
                .push(producer.send_record(
                    ProducerRecord::new(topic, None, value).with_partition(partition),
                ));
        }
    }
    for delivery in deliveries {
        delivery.await.expect("acknowledged");
    }
}

/// Polls until `count` records arrived (or 30 s passed).
async fn read(consumer: &mut Consumer, count: usize) -> Vec<(u32, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while seen.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} records",
            seen.len()
        );
        for record in consumer.poll().await.expect("poll") {
            seen.push((record.partition, record.offset));
        }
    }
    seen
}

fn partitions(consumer: &Consumer) -> BTreeSet<u32> {
    consumer.assignment().into_iter().map(|(_, p)| p).collect()
}

#[test]
fn a_second_member_rebalances_the_first_and_starts_at_its_commits() {
    let cluster = TestCluster::start(1);
    runtime().block_on(async {
        let client = cluster.client().await;
        Admin::new(client.clone())
            .create_topic("r", 4, None)
            .await
            .expect("create");
        let producer = Producer::new(client.clone());
        produce_per_partition(&producer, "r", 4, 10).await;

        let mut first = Consumer::new(client.clone());
        assert!(matches!(
            first.commit().await,
            Err(ConsumeError::NotInGroup)
        ));
        first
            .subscribe_with("sdk", &["r"], config())
            .await
            .expect("subscribe");
        assert!(matches!(
            first.assign("r", &[0]).await,
            Err(ConsumeError::InvalidState(_))
        ));
        let events = Arc::new(Mutex::new(Vec::new()));
        first.set_rebalance_listener(Box::new(Recorder(events.clone())));
        let records = read(&mut first, 40).await;
        assert_eq!(records.len(), 40);
        assert_eq!(partitions(&first), (0..4).collect());
        let (_, generation) = first.group_generation().expect("joined");
        first.commit().await.expect("commit");
        first
            .commit_async()
            .expect("in a group")
            .await
            .expect("async commit");
        // An outsider reads the commits without joining: each partition at 10, and a partition
        // (or a group) with none is answered `None`.
        let admin = Admin::new(client.clone());
        let refs = |partitions: &[u32]| {
            Some(
                partitions
                    .iter()
                    .map(|&partition| TopicPartitionRef {
                        topic: "r".into(),
                        partition,
                    })
                    .collect(),
            )
        };
        let committed = admin
            .committed_offsets("sdk", refs(&[0, 1, 2, 3, 7]))
            .await
            .expect("committed offsets");
        let offsets: Vec<(u32, Option<u64>)> =
            committed.iter().map(|c| (c.partition, c.offset)).collect();
        assert_eq!(
            offsets,
            [
                (0, Some(10)),
                (1, Some(10)),
                (2, Some(10)),
                (3, Some(10)),
                (7, None)
            ]
        );
        let every = admin
            .committed_offsets("sdk", None)
            .await
            .expect("every committed offset");
        assert_eq!(every.len(), 4, "{every:?}");
        let unknown = admin
            .committed_offsets("no-such-group", refs(&[0]))
            .await
            .expect("an unknown group's offsets");
        assert_eq!(unknown[0].offset, None, "{unknown:?}");

        // A second member: its join waits until the first rejoins, which the first's heartbeat
        // (every 2 s) tells its next poll to do.
        let mut second = Consumer::new(client.clone());
        second
            .subscribe_with("sdk", &["r"], config())
            .await
            .expect("subscribe");
        let joiner = tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while second.assignment().is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "the second member never got partitions"
                );
                let records = second.poll().await.expect("second poll");
                assert!(
                    records.is_empty(),
                    "committed offsets are at the end: {records:?}"
                );
            }
            second
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while first
            .group_generation()
            .is_none_or(|(_, g)| g == generation)
            || partitions(&first).len() == 4
        {
            assert!(
                Instant::now() < deadline,
                "the first member never rebalanced"
            );
            let records = first.poll().await.expect("first poll");
            assert!(records.is_empty(), "nothing new was produced: {records:?}");
        }
        let mut second = joiner.await.expect("joiner");
        let (mine, theirs) = (partitions(&first), partitions(&second));
        assert_eq!(mine.len(), 2, "{mine:?} {theirs:?}");
        assert!(mine.is_disjoint(&theirs), "{mine:?} {theirs:?}");
        assert_eq!(mine.union(&theirs).count(), 4);
        {
            let events = events.lock().unwrap();
            let all: Vec<(String, u32)> = (0..4).map(|p| ("r".to_string(), p)).collect();
            assert_eq!(events[0], Event::Assigned(all.clone()));
            assert_eq!(events[1], Event::Revoked(all));
            assert!(
                matches!(&events[2], Event::Assigned(p) if p.len() == 2),
                "{events:?}"
            );
        }

        // New records go to whichever member holds their partition, each once.
        produce_per_partition(&producer, "r", 4, 1).await;
        let mut fresh = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while fresh.len() < 4 {
            assert!(Instant::now() < deadline, "new records: {fresh:?}");
            for record in first
                .poll()
                .await
                .expect("poll")
                .into_iter()
                .chain(second.poll().await.expect("poll"))
            {
                assert_eq!(record.offset, 10, "{record:?}");
                fresh.push(record.partition);
            }
        }
        fresh.sort_unstable();
        assert_eq!(fresh, [0, 1, 2, 3]);

        // The first leaves; the second's next rebalance gives it everything, at the commits
        // (none were made for offset 10 by the first after its rejoin: it re-reads only those).
        first.close().await.expect("close");
        let deadline = Instant::now() + Duration::from_secs(60);
        while partitions(&second).len() < 4 {
            assert!(
                Instant::now() < deadline,
                "the second member never took over"
            );
            second.poll().await.expect("poll");
        }
        second.close().await.expect("close");
        let description = Admin::new(client.clone())
            .describe_group("sdk")
            .await
            .expect("describe");
        assert!(description.members.is_empty(), "{description:?}");
        client.close().await;
    });
}

#[test]
fn a_member_follows_its_coordinator_to_another_node() {
    let mut cluster = TestCluster::start(3);
    let runtime = runtime();
    // The producer's task and the consumer's heartbeats live on this runtime between the
    // blocks below, while the test kills a node from outside it.
    let _context = runtime.enter();
    let client = runtime.block_on(cluster.client());
    let producer = Producer::new(client.clone());
    let mut consumer = Consumer::new(client.clone());
    let mut seen = BTreeSet::new();
    runtime.block_on(async {
        Admin::new(client.clone())
            .create_topic("f", 2, Some(3))
            .await
            .expect("create");
        produce_per_partition(&producer, "f", 2, 10).await;
        let config = GroupConfig {
            auto_commit_interval_ms: Some(100),
            ..config()
        };
        consumer
            .subscribe_with("failover", &["f"], config)
            .await
            .expect("subscribe");
        seen.extend(read(&mut consumer, 20).await);
        consumer.commit().await.expect("commit");
    });
    let request = Request::FindCoordinator(FindCoordinatorRequest {
        group: "failover".into(),
    });
    let coordinator = runtime.block_on(ask_nodes(
        &cluster,
        &request,
        &Default::default(),
        |response, _| match response {
            Response::FindCoordinator(found) => Some(found.node_id),
            _ => None,
        },
    ));
    cluster.kill(coordinator);
    runtime.block_on(async {
        produce_per_partition(&producer, "f", 2, 10).await;
        // Reads go on; a poll may fail while leaders and the coordinator move (a caller
        // retries), and a rejoin may re-read from the last commit (at least once).
        let deadline = Instant::now() + Duration::from_secs(90);
        while seen.len() < 40 {
            assert!(
                Instant::now() < deadline,
                "read {} of 40 after the kill",
                seen.len()
            );
            match consumer.poll().await {
                Ok(records) => seen.extend(records.iter().map(|r| (r.partition, r.offset))),
                Err(error) => eprintln!("poll during the failover: {error}"),
            }
        }
        let expected: BTreeSet<(u32, u64)> =
            (0..2).flat_map(|p| (0..20).map(move |o| (p, o))).collect();
        assert_eq!(seen, expected);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match consumer.commit().await {
                Ok(()) => break,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "no commit after the kill: {error}"
                    );
                    // A refused commit means a rebalance: the next poll rejoins.
                    let _ = consumer.poll().await;
                }
            }
        }
        let description = Admin::new(client.clone())
            .describe_group("failover")
            .await
            .expect("describe");
        let committed: Vec<Option<u64>> = description.offsets.iter().map(|o| o.offset).collect();
        assert_eq!(committed, [Some(20), Some(20)], "{description:?}");
        consumer.close().await.expect("close");
    });
}
