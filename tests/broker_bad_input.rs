//! Bad input against a real `keel server` (docs/WIRE.md "Error codes", docs/TRANSPORT.md
//! "Peer admission"): each gets a typed error or a refused connection and a log line; the node
//! keeps serving and its log stays exactly what was acknowledged. Requests are written by hand
//! over QUIC so they can be wrong in every way the SDK would never be.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::raw::{connect, connect_client, Raw};
use common::{runtime, TestCluster};
use keel_client::wire::messages::{
    Acks, CreateTopicRequest, FetchRequest, MetadataRequest, ProduceRequest,
};
use keel_client::wire::{ErrorCode, Frame, Limits, Record, RecordBatchBuilder, Request, Response};

const TOPIC: &str = "t";

fn batch(values: &[&[u8]], limits: &Limits) -> Bytes {
    let mut builder = RecordBatchBuilder::new(limits, 8 << 20);
    for value in values {
        builder
            .append(&Record {
                timestamp_ms: 1,
                key: None,
                value: Some(value),
                headers: &[],
            })
            .expect("append");
    }
    builder.finish().expect("finish")
}

fn produce(topic: &str, partition: u32) -> Request {
    Request::Produce(ProduceRequest {
        topic: topic.into(),
        partition,
        acks: Acks::Committed,
        timeout_ms: 10_000,
    })
}

/// A single node with topic `t` (one partition) and a connection to it.
async fn setup() -> (TestCluster, Raw) {
    let cluster = TestCluster::start(1);
    let address: SocketAddr = cluster.bootstrap()[0].parse().unwrap();
    let raw = connect_client(&cluster, address).await.expect("connect");
    let (response, _) = raw
        .request(
            Request::CreateTopic(CreateTopicRequest {
                name: TOPIC.into(),
                partitions: 1,
                replication_factor: None,
                retention_bytes: None,
                retention_ms: None,
                segment_ms: None,
            }),
            Bytes::new(),
        )
        .await;
    assert!(matches!(response, Response::CreateTopic(_)), "{response:?}");
    (cluster, raw)
}

/// Produces one good message and reads the partition back: the node still serves and the log
/// holds exactly the good messages.
async fn assert_healthy(raw: &Raw, expected_messages: u64) {
    let (response, _) = raw
        .request(produce(TOPIC, 0), batch(&[b"good"], &Limits::default()))
        .await;
    let Response::Produce(ack) = response else {
        panic!("a good produce after bad input failed: {response:?}");
    };
    assert_eq!(ack.base_offset, expected_messages);
    let (response, payload) = raw
        .request(
            Request::Fetch(FetchRequest {
                topic: TOPIC.into(),
                partition: 0,
                offset: 0,
                max_bytes: 1 << 20,
                max_wait_ms: 0,
                min_bytes: 1,
            }),
            Bytes::new(),
        )
        .await;
    let Response::Fetch(header) = response else {
        panic!("fetch failed: {response:?}");
    };
    assert_eq!(header.high_watermark, expected_messages + 1);
    let batches = keel_client::wire::record_batch::RecordBatches::new(payload);
    let mut values = Vec::new();
    for view in batches {
        let view = view.expect("every stored batch is valid");
        let records = view.decode().expect("valid records");
        values.extend(records.iter().map(|record| record.value.unwrap().to_vec()));
    }
    assert_eq!(values.len() as u64, expected_messages + 1);
    assert!(values.iter().all(|value| value == b"good"), "{values:?}");
}

fn error_of(response: Response) -> ErrorCode {
    match response {
        Response::Error(code) => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn log_mentions(cluster: &TestCluster, needle: &str) -> bool {
    std::fs::read_to_string(&cluster.node(1).log)
        .map(|log| log.contains(needle))
        .unwrap_or(false)
}

#[test]
fn a_message_over_max_message_bytes_is_refused() {
    let rt = runtime();
    rt.block_on(async {
        let (cluster, raw) = setup().await;
        let big_limits = Limits {
            max_message_bytes: 2 << 20,
            max_record_batch_bytes: 4 << 20,
            max_request_bytes: 16 << 20,
        };
        let value = vec![7u8; (1 << 20) + 1];
        let (response, _) = raw
            .request(produce(TOPIC, 0), batch(&[&value], &big_limits))
            .await;
        assert_eq!(error_of(response), ErrorCode::MessageTooLarge);
        assert!(log_mentions(&cluster, "produce refused"));
        assert_healthy(&raw, 0).await;
    });
}

#[test]
fn an_unknown_topic_is_a_typed_error() {
    let rt = runtime();
    rt.block_on(async {
        let (_cluster, raw) = setup().await;
        let (response, _) = raw
            .request(produce("nope", 0), batch(&[b"x"], &Limits::default()))
            .await;
        assert_eq!(error_of(response), ErrorCode::UnknownTopic);
        assert_healthy(&raw, 0).await;
    });
}

#[test]
fn a_bad_topic_name_is_a_typed_error() {
    let rt = runtime();
    rt.block_on(async {
        let (cluster, raw) = setup().await;
        for name in ["../etc", "", ".", "a/b", &"x".repeat(201)] {
            let (response, _) = raw
                .request(produce(name, 0), batch(&[b"x"], &Limits::default()))
                .await;
            assert_eq!(error_of(response), ErrorCode::InvalidTopicName, "{name:?}");
        }
        let (response, _) = raw
            .request(
                Request::CreateTopic(CreateTopicRequest {
                    name: "..".into(),
                    partitions: 1,
                    replication_factor: None,
                    retention_bytes: None,
                    retention_ms: None,
                    segment_ms: None,
                }),
                Bytes::new(),
            )
            .await;
        assert_eq!(error_of(response), ErrorCode::InvalidTopicName);
        assert!(log_mentions(&cluster, "invalid topic name"));
        assert_healthy(&raw, 0).await;
    });
}

#[test]
fn a_partition_out_of_range_is_a_typed_error() {
    let rt = runtime();
    rt.block_on(async {
        let (_cluster, raw) = setup().await;
        let (response, _) = raw
            .request(produce(TOPIC, 1), batch(&[b"x"], &Limits::default()))
            .await;
        assert_eq!(error_of(response), ErrorCode::PartitionOutOfRange);
        let (response, _) = raw
            .request(produce(TOPIC, u32::MAX), batch(&[b"x"], &Limits::default()))
            .await;
        assert_eq!(error_of(response), ErrorCode::PartitionOutOfRange);
        assert_healthy(&raw, 0).await;
    });
}

#[test]
fn malformed_truncated_and_random_frames_get_errors_and_the_node_keeps_serving() {
    let rt = runtime();
    rt.block_on(async {
        let (cluster, raw) = setup().await;
        let good = Frame::new(produce(TOPIC, 0), batch(&[b"x"], &Limits::default()))
            .to_bytes()
            .unwrap();
        // Truncated: the frame's length prefix promises more than arrives.
        let (response, _) = raw.send_bytes(&good[..good.len() / 2]).await;
        assert_eq!(error_of(response), ErrorCode::Malformed);
        // A corrupted batch: the CRC catches one flipped payload byte.
        let mut corrupt = BytesMut::from(&good[..]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let (response, _) = raw.send_bytes(&corrupt).await;
        assert_eq!(error_of(response), ErrorCode::CorruptBatch);
        // Random bytes, seeded.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..20 {
            let len = 1 + (round * 37) % 300;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let (response, _) = raw.send_bytes(&bytes).await;
            assert!(
                matches!(response, Response::Error(_)),
                "random bytes: {response:?}"
            );
        }
        // A header of the wrong protocol version.
        let mut wrong_version = BytesMut::from(&good[..]);
        wrong_version[4] = 99;
        let (response, _) = raw.send_bytes(&wrong_version).await;
        assert_eq!(error_of(response), ErrorCode::UnsupportedVersion);
        assert!(log_mentions(&cluster, "malformed request frame"));
        assert_healthy(&raw, 0).await;
    });
}

#[test]
fn a_request_over_max_request_bytes_is_refused() {
    let rt = runtime();
    rt.block_on(async {
        let (_cluster, raw) = setup().await;
        let (response, _) = raw.send_bytes(&vec![0u8; (16 << 20) + 4096]).await;
        assert_eq!(error_of(response), ErrorCode::RequestTooLarge);
        assert_healthy(&raw, 0).await;
    });
}

#[test]
fn a_wrong_alpn_is_refused() {
    let rt = runtime();
    rt.block_on(async {
        let (cluster, raw) = setup().await;
        let address: SocketAddr = cluster.bootstrap()[0].parse().unwrap();
        let result = connect(&cluster, address, b"http/1.1", None, None).await;
        assert!(
            result.is_err(),
            "a connection with an unknown ALPN must fail"
        );
        assert_healthy(&raw, 0).await;
    });
}

#[test]
fn a_peer_without_a_valid_node_certificate_is_refused() {
    let rt = runtime();
    rt.block_on(async {
        let (cluster, raw) = setup().await;
        let address: SocketAddr = cluster.bootstrap()[0].parse().unwrap();
        // No certificate at all on the peer ALPN.
        let refused = match connect(&cluster, address, b"keel-peer/1", None, None).await {
            Err(_) => true,
            Ok(peer) => closed_soon(&peer.connection).await,
        };
        assert!(refused, "a peer without a certificate must be refused");
        // A valid client certificate of the same CA is not a node certificate.
        let refused = match connect(
            &cluster,
            address,
            b"keel-peer/1",
            Some(("client.pem", "client.key")),
            None,
        )
        .await
        {
            Err(_) => true,
            Ok(peer) => closed_soon(&peer.connection).await,
        };
        assert!(refused, "a client certificate must not pass as a node's");
        // A node certificate from another CA fails the TLS handshake.
        let other = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(common::KEEL)
            .args(["certs", "init", "--dir"])
            .arg(other.path())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let foreign_ca = connect(
            &cluster,
            address,
            b"keel-peer/1",
            Some(("node-2.pem", "node-2.key")),
            Some(other.path()),
        )
        .await;
        // Our side does not trust the node's CA either, so the handshake cannot complete.
        match foreign_ca {
            Err(_) => {}
            Ok(peer) => assert!(closed_soon(&peer.connection).await),
        }
        assert_healthy(&raw, 0).await;
    });
}

/// Whether the server closes `connection` within a few seconds (a refused peer is closed right
/// after the handshake, once its certificate or hello is checked).
async fn closed_soon(connection: &quinn::Connection) -> bool {
    // Open a stream so the server's peer path has something to judge.
    if let Ok(mut stream) = connection.open_uni().await {
        let _ = stream.write_all(&[0u8; 64]).await;
    }
    tokio::time::timeout(Duration::from_secs(5), connection.closed())
        .await
        .is_ok()
}

#[test]
fn metadata_for_an_unknown_topic_names_the_error() {
    let rt = runtime();
    rt.block_on(async {
        let (_cluster, raw) = setup().await;
        let (response, _) = raw
            .request(
                Request::Metadata(MetadataRequest {
                    topics: Some(vec!["missing".into(), TOPIC.into()]),
                }),
                Bytes::new(),
            )
            .await;
        let Response::Metadata(metadata) = response else {
            panic!("{response:?}");
        };
        assert_eq!(metadata.topics[0].partitions, Err(ErrorCode::UnknownTopic));
        assert!(metadata.topics[1].partitions.is_ok());
        assert_healthy(&raw, 0).await;
    });
}
