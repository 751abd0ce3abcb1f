//! Keel's batches against an independent implementation of Kafka's RecordBatch v2, the
//! `kafka-protocol` crate: a batch it encodes, in any codec, is accepted by the leader's checks
//! unchanged and decodes to the same records; a batch Keel builds decodes with it to the same
//! records, offsets, timestamps and producer fields.

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as KafkaCompression, Record as KafkaRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};
use keel_wire::record_batch::{stamp_leader, Compression, Header};
use keel_wire::{Limits, ProducerStamp, Record, RecordBatchBuilder, RecordBatchView};

/// (timestamp, key, value, headers) of one record, owned.
type Shape = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

/// Record shapes the format distinguishes: absent and empty keys, null and empty values, null
/// header values, timestamps that go backwards; long enough that every codec shrinks them.
fn shapes() -> Vec<Shape> {
    (0..40)
        .map(|i: i64| {
            let key = match i % 3 {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some(format!("key-{i}").into_bytes()),
            };
            let value = match i % 4 {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some(format!("value {i} ").repeat(20).into_bytes()),
            };
            let headers = match i % 5 {
                0 => vec![],
                1 => vec![("trace".to_string(), None)],
                _ => vec![
                    ("trace".to_string(), Some(format!("t{i}").into_bytes())),
                    ("empty".to_string(), Some(Vec::new())),
                ],
            };
            (1_700_000_000_000 + (i % 7) * 3 - 9, key, value, headers)
        })
        .collect()
}

fn kafka_codec(codec: Compression) -> KafkaCompression {
    match codec {
        Compression::None => KafkaCompression::None,
        Compression::Gzip => KafkaCompression::Gzip,
        Compression::Snappy => KafkaCompression::Snappy,
        Compression::Lz4 => KafkaCompression::Lz4,
        Compression::Zstd => KafkaCompression::Zstd,
    }
}

fn shape_of_kafka(record: &KafkaRecord) -> Shape {
    (
        record.timestamp,
        record.key.as_ref().map(|key| key.to_vec()),
        record.value.as_ref().map(|value| value.to_vec()),
        record
            .headers
            .iter()
            .map(|(key, value)| (key.to_string(), value.as_ref().map(|value| value.to_vec())))
            .collect(),
    )
}

fn shapes_of_keel(view: &RecordBatchView) -> Vec<Shape> {
    let records = view.decode().expect("decodes");
    records
        .iter()
        .map(|record| {
            (
                record.timestamp_ms,
                record.key.map(<[u8]>::to_vec),
                record.value.map(<[u8]>::to_vec),
                record
                    .headers()
                    .map(|header| {
                        (
                            String::from_utf8(header.key.to_vec()).unwrap(),
                            header.value.map(<[u8]>::to_vec),
                        )
                    })
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn a_batch_kafka_protocol_encodes_is_accepted_unchanged_and_reads_the_same() {
    let shapes = shapes();
    for codec in Compression::ALL {
        let records: Vec<KafkaRecord> = shapes
            .iter()
            .enumerate()
            .map(|(i, (timestamp, key, value, headers))| KafkaRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: 4242,
                producer_epoch: 3,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: 100 + i as i32,
                timestamp: *timestamp,
                key: key.clone().map(Bytes::from),
                value: value.clone().map(Bytes::from),
                headers: headers
                    .iter()
                    .map(|(key, value)| {
                        (
                            StrBytes::from_string(key.clone()),
                            value.clone().map(Bytes::from),
                        )
                    })
                    .collect::<IndexMap<_, _>>(),
            })
            .collect();
        let mut encoded = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut encoded,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: kafka_codec(codec),
            },
        )
        .unwrap();
        let encoded = encoded.freeze();

        let view = RecordBatchView::parse_within(encoded.clone(), &Limits::default())
            .unwrap_or_else(|error| panic!("{codec:?}: refused: {error}"));
        assert_eq!(view.compression(), codec);
        assert_eq!(view.count(), shapes.len() as u32);
        assert_eq!(
            view.producer(),
            ProducerStamp {
                producer_id: 4242,
                producer_epoch: 3,
                base_sequence: 100
            }
        );
        assert_eq!(shapes_of_keel(&view), shapes, "{codec:?}");

        // The leader's stamp leaves the producer's bytes (and CRC) as they were.
        let mut stamped = encoded.to_vec();
        stamp_leader(&mut stamped, 1000, 9).unwrap();
        assert_eq!(&stamped[16..], &encoded[16..]);
        let mut reread = Bytes::from(stamped);
        let set = RecordBatchDecoder::decode(&mut reread).unwrap();
        assert_eq!(set.records[0].offset, 1000);
        assert_eq!(set.records[0].partition_leader_epoch, 9);
    }
}

#[test]
fn a_batch_keel_builds_decodes_with_kafka_protocol() {
    let shapes = shapes();
    for codec in Compression::ALL {
        let stamp = ProducerStamp {
            producer_id: 77,
            producer_epoch: 2,
            base_sequence: 5,
        };
        let mut builder = RecordBatchBuilder::new(&Limits::default(), 1 << 20)
            .with_producer(stamp)
            .with_compression(codec);
        for (timestamp_ms, key, value, headers) in &shapes {
            let headers: Vec<Header<'_>> = headers
                .iter()
                .map(|(key, value)| Header {
                    key: key.as_bytes(),
                    value: value.as_deref(),
                })
                .collect();
            builder
                .append(&Record {
                    timestamp_ms: *timestamp_ms,
                    key: key.as_deref(),
                    value: value.as_deref(),
                    headers: &headers,
                })
                .unwrap();
        }
        let mut batch = builder.finish().unwrap().to_vec();
        stamp_leader(&mut batch, 500, 4).unwrap();

        let mut bytes = Bytes::from(batch);
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap_or_else(|error| {
            panic!("{codec:?}: kafka-protocol refused Keel's batch: {error}")
        });
        assert_eq!(set.version, 2);
        assert_eq!(set.compression, kafka_codec(codec));
        assert_eq!(set.records.len(), shapes.len());
        for (i, record) in set.records.iter().enumerate() {
            assert_eq!(record.offset, 500 + i as i64);
            assert_eq!(record.sequence, 5 + i as i32);
            assert_eq!(record.producer_id, 77);
            assert_eq!(record.producer_epoch, 2);
            assert_eq!(record.partition_leader_epoch, 4);
            assert_eq!(record.timestamp_type, TimestampType::Creation);
            assert!(!record.transactional && !record.control);
            assert_eq!(shape_of_kafka(record), shapes[i], "{codec:?} record {i}");
        }
    }
}
