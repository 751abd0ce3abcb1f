//! The idempotent producer against real `keel server` processes (docs/DECISIONS.md
//! "Idempotent produce"): a replayed batch is answered with its original offsets and stored once,
//! across a node restart (the table is rebuilt from the log) and across a leader change (every
//! replica applies the same table); a gap in the sequence and an unknown producer starting
//! mid-sequence are refused.

mod common;

use bytes::Bytes;
use common::raw::ask_nodes;
use common::{runtime, TestCluster};
use keel_client::wire::messages::{
    Acks, CreateTopicRequest, DescribeTopicRequest, FetchRequest, ProduceRequest, ProduceResponse,
};
use keel_client::wire::record_batch::RecordBatches;
use keel_client::wire::{
    ErrorCode, Limits, ProducerStamp, Record, RecordBatchBuilder, Request, Response,
};

const TOPIC: &str = "idem";

fn batch(stamp: ProducerStamp, values: &[&str]) -> Bytes {
    let mut builder = RecordBatchBuilder::new(&Limits::default(), 1 << 20).with_producer(stamp);
    for value in values {
        builder
            .append(&Record {
                timestamp_ms: 1,
                key: None,
                value: Some(value.as_bytes()),
                headers: &[],
            })
            .unwrap();
    }
    builder.finish().unwrap()
}

fn produce_request() -> Request {
    Request::Produce(ProduceRequest {
        topic: TOPIC.into(),
        partition: 0,
        acks: Acks::Committed,
        timeout_ms: 10_000,
    })
}

/// Produces through whichever node leads now, following NotLeader answers.
async fn produce(cluster: &TestCluster, payload: Bytes) -> Result<ProduceResponse, ErrorCode> {
    ask_nodes(
        cluster,
        &produce_request(),
        &payload,
        |response, _| match response {
            Response::Produce(ack) => Some(Ok(ack)),
            Response::Error(code) if code.is_retriable() => None,
            Response::Error(code) => Some(Err(code)),
            other => panic!("unexpected answer {other:?}"),
        },
    )
    .await
}

/// The test topic: one partition on all three nodes.
async fn create_topic(cluster: &TestCluster) {
    let create = Request::CreateTopic(CreateTopicRequest {
        name: TOPIC.into(),
        partitions: 1,
        replication_factor: Some(3),
        retention_bytes: None,
        retention_ms: None,
        segment_ms: None,
    });
    ask_nodes(
        cluster,
        &create,
        &Bytes::new(),
        |response, _| match response {
            Response::CreateTopic(_) => Some(()),
            Response::Error(code) if code.is_retriable() => None,
            other => panic!("create topic: {other:?}"),
        },
    )
    .await
}

async fn producer_id(cluster: &TestCluster) -> u64 {
    ask_nodes(
        cluster,
        &Request::InitProducerId,
        &Bytes::new(),
        |response, _| match response {
            Response::InitProducerId(answer) => Some(answer.producer_id),
            _ => None,
        },
    )
    .await
}

/// Every value stored in the partition, in offset order, read from the leader.
async fn stored_values(cluster: &TestCluster) -> Vec<String> {
    let request = Request::Fetch(FetchRequest {
        topic: TOPIC.into(),
        partition: 0,
        offset: 0,
        max_bytes: 1 << 20,
        max_wait_ms: 0,
        min_bytes: 1,
    });
    ask_nodes(
        cluster,
        &request,
        &Bytes::new(),
        |response, payload| match response {
            Response::Fetch(_) => Some(
                RecordBatches::new(payload)
                    .flat_map(|view| {
                        let view = view.expect("valid batch");
                        let records = view.decode().expect("valid records");
                        records
                            .iter()
                            .map(|record| {
                                String::from_utf8(record.value.unwrap().to_vec()).unwrap()
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect(),
            ),
            _ => None,
        },
    )
    .await
}

#[test]
fn replays_are_answered_with_the_original_offsets_across_restarts_and_leader_changes() {
    let mut cluster = TestCluster::start(3);
    let rt = runtime();
    rt.block_on(create_topic(&cluster));
    let (pid, first, second) = rt.block_on(async {
        let pid = producer_id(&cluster).await;
        let stamp = |base_sequence| ProducerStamp {
            producer_id: pid,
            producer_epoch: 0,
            base_sequence,
        };
        let first = batch(stamp(0), &["a", "b"]);
        let second = batch(stamp(2), &["c"]);
        let ack = produce(&cluster, first.clone()).await.expect("first batch");
        assert_eq!((ack.base_offset, ack.last_offset), (0, 1));
        let replay = produce(&cluster, first.clone()).await.expect("replay");
        assert_eq!(
            (replay.base_offset, replay.last_offset),
            (0, 1),
            "a replay gets the original offsets"
        );
        // A gap: sequence 5 when 2 is next.
        assert_eq!(
            produce(&cluster, batch(stamp(5), &["x"])).await,
            Err(ErrorCode::OutOfOrderSequence {
                expected_sequence: 2
            })
        );
        // A producer this partition never saw, starting mid-sequence.
        let stranger = ProducerStamp {
            producer_id: pid + 1000,
            producer_epoch: 0,
            base_sequence: 7,
        };
        assert_eq!(
            produce(&cluster, batch(stranger, &["y"])).await,
            Err(ErrorCode::UnknownProducerId)
        );
        let ack = produce(&cluster, second.clone())
            .await
            .expect("second batch");
        assert_eq!(ack.base_offset, 2);
        assert_eq!(stored_values(&cluster).await, ["a", "b", "c"]);
        (pid, first, second)
    });
    let _ = pid;

    // Every node restarts: the table is rebuilt from the log.
    cluster.restart_all();
    rt.block_on(async {
        let replay = produce(&cluster, second.clone())
            .await
            .expect("replay after restart");
        assert_eq!(replay.base_offset, 2);
        assert_eq!(stored_values(&cluster).await, ["a", "b", "c"]);
    });

    // The leader dies: the new one has the same table.
    let describe = Request::DescribeTopic(DescribeTopicRequest { name: TOPIC.into() });
    let leader = rt.block_on(ask_nodes(
        &cluster,
        &describe,
        &Bytes::new(),
        |response, _| match response {
            Response::DescribeTopic(description) => description.partitions[0].leader,
            _ => None,
        },
    ));
    cluster.kill(leader);
    rt.block_on(async {
        let replay = produce(&cluster, first)
            .await
            .expect("replay at the new leader");
        assert_eq!((replay.base_offset, replay.last_offset), (0, 1));
        let replay = produce(&cluster, second)
            .await
            .expect("replay at the new leader");
        assert_eq!(replay.base_offset, 2);
        assert_eq!(stored_values(&cluster).await, ["a", "b", "c"]);
    });
}

#[test]
fn a_batch_that_overtakes_its_predecessor_waits_for_it() {
    // With two batches in flight (the SDK default) each goes on its own stream, and the second
    // may reach the leader first. The leader holds it until the first arrives, so both land,
    // in sequence order.
    let cluster = TestCluster::start(3);
    let rt = runtime();
    rt.block_on(create_topic(&cluster));
    rt.block_on(async {
        let pid = producer_id(&cluster).await;
        let stamp = |base_sequence| ProducerStamp {
            producer_id: pid,
            producer_epoch: 0,
            base_sequence,
        };
        let cluster = std::sync::Arc::new(cluster);
        let early = tokio::spawn({
            let cluster = cluster.clone();
            let payload = batch(stamp(2), &["c"]);
            async move { produce(&cluster, payload).await }
        });
        // Long enough for the early batch to be waiting at the leader.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !early.is_finished(),
            "the early batch waits for its predecessor"
        );
        let first = produce(&cluster, batch(stamp(0), &["a", "b"]))
            .await
            .expect("first batch");
        assert_eq!((first.base_offset, first.last_offset), (0, 1));
        let second = early.await.expect("task").expect("early batch");
        assert_eq!((second.base_offset, second.last_offset), (2, 2));
        assert_eq!(stored_values(&cluster).await, ["a", "b", "c"]);
    });
}
