//! Kafka's RecordBatch v2 end to end (docs/WIRE.md, docs/FORMAT.md "Partition entries"):
//! every record shape in every codec goes producer -> leader (checked, stamped) -> Raft ->
//! segment -> fetch -> consumer and comes back the same, on a real 3-node cluster and, as a
//! property, through the storage engine directly; a batch from an independent Kafka encoder is
//! accepted unchanged; a damaged or unsupported batch is refused at produce with a typed error.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::raw::connect_client;
use common::{runtime, TestCluster};
use keel_broker::partition::entry::{self, DataEntry};
use keel_client::wire::messages::{Acks, ProduceRequest};
use keel_client::wire::record_batch::{Compression, Header, RecordBatches, ATTRIBUTES_AT, CRC_AT};
use keel_client::wire::{
    ErrorCode, Limits, ProducerStamp, Record, RecordBatchBuilder, RecordBatchView, Request,
    Response,
};
use keel_client::{
    Admin, Consumer, ConsumerRecord, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use proptest::prelude::*;

/// (timestamp, key, value, headers) of one record, owned.
type Shape = (
    i64,
    Option<Bytes>,
    Option<Bytes>,
    Vec<(Bytes, Option<Bytes>)>,
);

/// Absent and empty keys, null and empty values, null header values, timestamps that go
/// backwards, and values long enough that every codec shrinks them.
fn shapes(count: i64) -> Vec<Shape> {
    (0..count)
        .map(|i| {
            let key = match i % 3 {
                0 => None,
                1 => Some(Bytes::new()),
                _ => Some(Bytes::from(format!("key-{i}"))),
            };
            let value = match i % 4 {
                0 => None,
                1 => Some(Bytes::new()),
                _ => Some(Bytes::from(format!("value {i} ").repeat(30))),
            };
            let headers = match i % 5 {
                0 => vec![],
                1 => vec![(Bytes::from("trace"), None)],
                _ => vec![
                    (Bytes::from("trace"), Some(Bytes::from(format!("t{i}")))),
                    (Bytes::from("empty"), Some(Bytes::new())),
                ],
            };
            (1_700_000_000_000 + (i % 7) * 5 - 15, key, value, headers)
        })
        .collect()
}

fn shape_of(record: &ConsumerRecord) -> Shape {
    (
        record.timestamp_ms,
        record.key.clone(),
        record.value.clone(),
        record.headers.clone(),
    )
}

async fn create(admin: &Admin, topic: &str) {
    admin
        .create_topic(topic, 1, Some(3))
        .await
        .expect("create topic");
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin
        .describe_topic(topic)
        .await
        .map_or(true, |d| d.partitions[0].leader.is_none())
    {
        assert!(Instant::now() < deadline, "no leader for {topic}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn consume(client: &keel_client::Client, topic: &str, count: usize) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::new(client.clone());
    consumer.assign(topic, &[0]).await.expect("assign");
    consumer.seek(topic, 0, SeekTo::Beginning);
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while records.len() < count && Instant::now() < deadline {
        records.extend(consumer.poll().await.expect("poll"));
    }
    records
}

fn raw_produce(topic: &str) -> Request {
    Request::Produce(ProduceRequest {
        topic: topic.into(),
        partition: 0,
        acks: Acks::Committed,
        timeout_ms: 10_000,
    })
}

#[test]
fn every_codec_and_record_shape_round_trips_through_a_real_cluster() {
    let cluster = TestCluster::start(3);
    let rt = runtime();
    rt.block_on(async {
        let client = cluster.client().await;
        let admin = Admin::new(client.clone());
        let shapes = shapes(120);
        for codec in Compression::ALL {
            let topic = format!("shapes-{}", codec.name());
            create(&admin, &topic).await;
            let producer = Producer::with_config(
                client.clone(),
                ProducerConfig {
                    compression: codec,
                    // Several records per batch, so the codec has something to work on.
                    linger_ms: 20,
                    ..ProducerConfig::default()
                },
            );
            let sends: Vec<_> = shapes
                .iter()
                .map(|(timestamp_ms, key, value, headers)| {
                    let mut record = ProducerRecord::new(topic.clone(), key.clone(), value.clone())
                        .with_partition(0)
                        .with_timestamp_ms(*timestamp_ms);
                    for (header_key, header_value) in headers {
                        record = record.with_header(header_key.clone(), header_value.clone());
                    }
                    producer.send_record(record)
                })
                .collect();
            for (i, send) in sends.into_iter().enumerate() {
                let (partition, offset) = send.await.expect("acknowledged");
                assert_eq!((partition, offset), (0, i as u64), "{codec:?}");
            }
            let records = consume(&client, &topic, shapes.len()).await;
            let read: Vec<Shape> = records.iter().map(shape_of).collect();
            assert_eq!(read, shapes, "{codec:?}: what came back differs");
            let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, (0..shapes.len() as u64).collect::<Vec<_>>());
        }
        client.close().await;
    });
}

/// A batch built by the `kafka-protocol` crate (an independent implementation of Kafka's format)
/// is accepted by a real leader unchanged and consumed back; a bit flip under its CRC, Keel's old
/// magic, and the attributes Keel does not implement are each refused with a typed error, and
/// the log holds only what was acknowledged.
#[test]
fn a_kafka_encoded_batch_is_accepted_and_bad_batches_are_refused() {
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression as KafkaCompression, Record as KafkaRecord, RecordBatchEncoder,
        RecordEncodeOptions, TimestampType,
    };

    let cluster = TestCluster::start(3);
    let rt = runtime();
    rt.block_on(async {
        let client = cluster.client().await;
        let admin = Admin::new(client.clone());
        create(&admin, "kafka").await;
        let records: Vec<KafkaRecord> = (0..10)
            .map(|i: i64| KafkaRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                // Without a producer id Kafka's base sequence is -1: record i "has" i - 1.
                sequence: i as i32 - 1,
                timestamp: 1_700_000_000_000 + i,
                key: Some(Bytes::from(format!("k{i}"))),
                value: (i != 3).then(|| Bytes::from(format!("kafka value {i} ").repeat(10))),
                headers: [(StrBytes::from_static_str("h"), Some(Bytes::from("x")))]
                    .into_iter()
                    .collect(),
            })
            .collect();
        let mut encoded = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut encoded,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: KafkaCompression::Gzip,
            },
        )
        .unwrap();
        let encoded = encoded.freeze();
        assert_eq!(
            RecordBatchView::parse(encoded.clone()).unwrap().count(),
            10,
            "one batch"
        );

        let leader = loop {
            let description = admin.describe_topic("kafka").await.expect("describe");
            if let Some(leader) = description.partitions[0].leader {
                break leader;
            }
        };
        let address: SocketAddr = cluster.bootstrap()[leader as usize - 1].parse().unwrap();
        let raw = connect_client(&cluster, address).await.expect("connect");

        let (response, _) = raw.request(raw_produce("kafka"), encoded.clone()).await;
        let Response::Produce(produced) = response else {
            panic!(
                "the Kafka batch was refused: {response:?}\n{}",
                cluster.logs()
            );
        };
        assert_eq!((produced.base_offset, produced.last_offset), (0, 9));

        let mut refused = Vec::new();
        let mut flipped = encoded.to_vec();
        flipped[encoded.len() / 2] ^= 0x04;
        refused.push(("a flipped bit", flipped, ErrorCode::CorruptBatch));
        let mut old_magic = encoded.to_vec();
        old_magic[16] = 1;
        refused.push(("magic 1", old_magic, ErrorCode::CorruptBatch));
        for (name, bit) in [
            ("transactional", 0x10u8),
            ("control", 0x20),
            ("LogAppendTime", 0x08),
        ] {
            let mut batch = encoded.to_vec();
            batch[ATTRIBUTES_AT + 1] |= bit;
            let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
            batch[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
            refused.push((name, batch, ErrorCode::UnsupportedForMessageFormat));
        }
        for (name, batch, expected) in refused {
            let (response, _) = raw.request(raw_produce("kafka"), Bytes::from(batch)).await;
            assert_eq!(response, Response::Error(expected), "{name}");
        }

        let read = consume(&client, "kafka", 10).await;
        assert_eq!(read.len(), 10, "only the acknowledged batch is in the log");
        for (i, record) in read.iter().enumerate() {
            let kafka = &records[i];
            assert_eq!(record.offset, i as u64);
            assert_eq!(record.timestamp_ms, kafka.timestamp);
            assert_eq!(record.key, kafka.key);
            assert_eq!(record.value, kafka.value);
            assert_eq!(
                record.headers,
                vec![(Bytes::from("h"), Some(Bytes::from("x")))]
            );
        }
        // Nothing refused took an offset: the next record lands right after the Kafka batch.
        let producer = Producer::new(client.clone());
        let next = producer.send("kafka", None, Bytes::from("after")).await;
        assert_eq!(next.expect("acknowledged"), (0, 10));
        client.close().await;
    });
    let logs = cluster.logs();
    assert!(logs.contains("produce refused"), "each refusal is logged");
}

/// The record shapes the property draws from.
fn owned_record() -> impl Strategy<Value = Shape> {
    let bytes = |max: usize| prop::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from);
    (
        -(1i64 << 40)..(1i64 << 40),
        prop::option::of(bytes(16)),
        prop::option::of(prop_oneof![
            bytes(64),
            (0usize..4096).prop_map(|n| Bytes::from(vec![b'q'; n]))
        ]),
        prop::collection::vec((bytes(8), prop::option::of(bytes(8))), 0..3),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The path of a batch inside a node: the leader's check (`parse_within`), its stamps
    /// (`entry::stamp`) and the segment log are the product's; the fetch's strip-and-concatenate
    /// is redone here in three lines (the real one runs in the cluster test above), then
    /// keel-wire's batch decode as the consumer runs it.
    #[test]
    fn batches_read_back_from_the_segment_log_as_produced(
        batches in prop::collection::vec(
            (prop::collection::vec(owned_record(), 1..30), prop::sample::select(Compression::ALL.to_vec())),
            1..6,
        ),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let options = keel_storage::LogOptions {
            offset_key: Some(entry::offset_key),
            ..keel_storage::LogOptions::default()
        };
        let (mut log, _) = keel_storage::Log::open(dir.path(), options).unwrap();
        let limits = Limits::default();
        let mut next_offset = 0u64;
        let mut expected = Vec::new();
        for (index, (records, codec)) in batches.iter().enumerate() {
            let mut builder = RecordBatchBuilder::new(&limits, 4 << 20)
                .with_compression(*codec)
                .with_producer(ProducerStamp::NONE);
            for (timestamp_ms, key, value, headers) in records {
                let headers: Vec<Header<'_>> = headers
                    .iter()
                    .map(|(key, value)| Header { key, value: value.as_deref() })
                    .collect();
                builder.append(&Record {
                    timestamp_ms: *timestamp_ms,
                    key: key.as_deref(),
                    value: value.as_deref(),
                    headers: &headers,
                }).unwrap();
            }
            let view = RecordBatchView::parse_within(builder.finish().unwrap(), &limits).unwrap();
            let mut payload = entry::unstamped(view.bytes());
            entry::stamp(&mut payload, 1_000 + index as i64, next_offset, 5).unwrap();
            log.append(&[keel_storage::Entry {
                index: index as u64 + 1,
                term: 5,
                kind: keel_raft::EntryKind::Data.as_u8(),
                payload: &payload,
                offset_key: entry::offset_key(keel_raft::EntryKind::Data.as_u8(), &payload),
            }]).unwrap();
            next_offset += records.len() as u64;
            expected.extend(records.iter().cloned());
        }
        log.sync().unwrap();
        drop(log);

        let (log, _) = keel_storage::Log::open(dir.path(), keel_storage::LogOptions {
            offset_key: Some(entry::offset_key),
            ..keel_storage::LogOptions::default()
        }).unwrap();
        let mut fetched = BytesMut::new();
        for (i, stored) in log.read(1, log.last_index() + 1, u64::MAX).unwrap().iter().enumerate() {
            let data = DataEntry::read(&stored.payload).unwrap();
            prop_assert_eq!(data.append_time_ms, 1_000 + i as i64);
            fetched.extend_from_slice(data.batch);
        }
        let mut read = Vec::new();
        let mut offset = 0;
        for view in RecordBatches::new(fetched.freeze()) {
            let view = view.unwrap();
            prop_assert_eq!(view.base_offset(), offset);
            prop_assert_eq!(view.leader_epoch(), 5);
            let records = view.decode().unwrap();
            for record in records.iter() {
                read.push((
                    record.timestamp_ms,
                    record.key.map(|key| records.slice_ref(key)),
                    record.value.map(|value| records.slice_ref(value)),
                    record.headers().map(|header| (
                        records.slice_ref(header.key),
                        header.value.map(|value| records.slice_ref(value)),
                    )).collect::<Vec<_>>(),
                ));
            }
            offset = view.last_offset().unwrap() + 1;
        }
        prop_assert_eq!(read, expected);
        prop_assert_eq!(log.find_offset(0), Some(1));
    }
}
