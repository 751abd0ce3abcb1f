//! Property tests of the wire codecs (every decoder has one). What must hold:
//! what the builder writes (in every codec), parse and decode read back exactly, however batches
//! get split; no input makes a decoder panic; every bit flip the CRC covers is caught; a frame
//! survives encode/decode whole or cut at any points of a stream.

use bytes::{Bytes, BytesMut};
use keel_wire::messages::{Acks, ErrorCode, FetchRequest, MetadataRequest, ProduceRequest};
use keel_wire::record_batch::{
    stamp_leader, Compression, Header, RecordBatches, ATTRIBUTES_AT, BATCH_HEADER_BYTES,
    BATCH_LENGTH_AT, BATCH_LENGTH_EXCLUDES, CRC_AT, CRC_COVERS_FROM, LEADER_EPOCH_AT, MAGIC_AT,
};
use keel_wire::{
    Frame, FrameDecoder, Limits, ProducerStamp, Record, RecordBatchBuilder, RecordBatchView,
    Request, Response, WireError,
};
use proptest::prelude::*;

/// A record as the test owns it, to compare against what parse reads back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnedRecord {
    timestamp_ms: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn small_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max_len)
}

/// Values: mostly small (often empty or null), sometimes tens of KiB, rarely right at the 1 MiB
/// message limit (filled with one byte so generating them stays cheap, and compressible).
fn value() -> impl Strategy<Value = Option<Vec<u8>>> {
    let max_message_bytes = Limits::default().max_message_bytes as usize;
    prop_oneof![
        8 => small_bytes(64).prop_map(Some),
        2 => Just(Some(Vec::new())),
        2 => Just(None),
        1 => (1usize..64 * 1024, any::<u8>()).prop_map(|(len, byte)| Some(vec![byte; len])),
        1 => (max_message_bytes - 48..=max_message_bytes, any::<u8>()).prop_map(|(len, byte)| Some(vec![byte; len])),
    ]
}

fn record() -> impl Strategy<Value = OwnedRecord> {
    (
        // Timestamps near "now", plus the occasional extreme to exercise wide zigzag deltas
        // (negative deltas too: records need not be in timestamp order).
        prop_oneof![4 => 1_600_000_000_000i64..1_800_000_000_000, 1 => -(1i64 << 61)..(1i64 << 61)],
        prop::option::of(small_bytes(32)),
        value(),
        prop::collection::vec((small_bytes(16), prop::option::of(small_bytes(16))), 0..4),
    )
        .prop_map(|(timestamp_ms, key, value, headers)| OwnedRecord {
            timestamp_ms,
            key,
            value,
            headers,
        })
}

/// Kafka's rule: all -1, or all non-negative in their signed types.
fn producer() -> impl Strategy<Value = ProducerStamp> {
    prop_oneof![
        Just(ProducerStamp::NONE),
        (
            0..=i64::MAX as u64,
            0..=i16::MAX as u16,
            0..=i32::MAX as u32
        )
            .prop_map(|(producer_id, producer_epoch, base_sequence)| {
                ProducerStamp {
                    producer_id,
                    producer_epoch,
                    base_sequence,
                }
            }),
    ]
}

fn codec() -> impl Strategy<Value = Compression> {
    prop::sample::select(Compression::ALL.to_vec())
}

/// Packs `records` into as many batches as the `batch_bytes` target needs, the way a producer
/// does: on BatchFull, finish the batch and start another. Records over the message limit are
/// dropped (and checked to be really over it).
fn build_batches(
    records: &[OwnedRecord],
    batch_bytes: u64,
    producer: ProducerStamp,
    compression: Compression,
) -> (Vec<Bytes>, Vec<OwnedRecord>) {
    let limits = Limits::default();
    let new_builder = || {
        RecordBatchBuilder::new(&limits, batch_bytes)
            .with_producer(producer)
            .with_compression(compression)
    };
    let mut batches = Vec::new();
    let mut accepted = Vec::new();
    let mut builder = new_builder();
    for owned in records {
        let headers: Vec<Header<'_>> = owned
            .headers
            .iter()
            .map(|(key, value)| Header {
                key,
                value: value.as_deref(),
            })
            .collect();
        let record = Record {
            timestamp_ms: owned.timestamp_ms,
            key: owned.key.as_deref(),
            value: owned.value.as_deref(),
            headers: &headers,
        };
        let mut result = builder.append(&record);
        if let Err(WireError::BatchFull { .. }) = result {
            let full = std::mem::replace(&mut builder, new_builder());
            batches.push(full.finish().expect("a full batch has records"));
            result = builder.append(&record);
        }
        match result {
            Ok(_) => accepted.push(owned.clone()),
            Err(WireError::MessageTooLarge {
                record_bytes,
                max_message_bytes,
            }) => {
                assert!(record_bytes > max_message_bytes);
                // Framing adds at most 32 bytes to a record with up to 4 headers.
                let payload_bytes = owned.value.as_ref().map_or(0, Vec::len)
                    + owned.key.as_ref().map_or(0, Vec::len)
                    + owned
                        .headers
                        .iter()
                        .map(|(key, value)| key.len() + value.as_ref().map_or(0, Vec::len))
                        .sum::<usize>();
                assert!(
                    payload_bytes as u64 + 32 > max_message_bytes,
                    "only near-limit records are refused"
                );
            }
            // A timestamp too far from the batch's first one: the test's extremes can do that.
            Err(WireError::TimestampOverflow { .. }) => {}
            Err(other) => panic!("unexpected append error {other:?}"),
        }
    }
    if !builder.is_empty() {
        batches.push(builder.finish().expect("non-empty"));
    }
    (batches, accepted)
}

fn read_back(batch: &RecordBatchView) -> Vec<OwnedRecord> {
    let records = batch.decode().expect("a checked batch decodes");
    records
        .iter()
        .map(|record| OwnedRecord {
            timestamp_ms: record.timestamp_ms,
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.map(<[u8]>::to_vec),
            headers: record
                .headers()
                .map(|header| (header.key.to_vec(), header.value.map(<[u8]>::to_vec)))
                .collect(),
        })
        .collect()
}

/// A small valid batch for the corruption properties, in any codec.
fn small_batch() -> impl Strategy<Value = Bytes> {
    (prop::collection::vec(record(), 1..6), producer(), codec()).prop_map(
        |(mut records, producer, codec)| {
            for record in &mut records {
                if let Some(value) = &mut record.value {
                    // Long enough to compress, short enough to stay small.
                    value.truncate(64);
                    value.extend_from_slice(&[b'z'; 64]);
                }
                record.timestamp_ms = record.timestamp_ms.clamp(0, 1 << 50);
            }
            let (mut batches, _) = build_batches(&records, 1 << 20, producer, codec);
            batches.remove(0)
        },
    )
}

/// Rewrites `batchLength` and the CRC after a test edited the batch.
fn reseal(bytes: &mut [u8]) {
    let length = (bytes.len() - BATCH_LENGTH_EXCLUDES) as u32;
    bytes[BATCH_LENGTH_AT..LEADER_EPOCH_AT].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[CRC_COVERS_FROM..]);
    bytes[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn builder_then_parse_round_trips(
        records in prop::collection::vec(record(), 1..40),
        batch_bytes in prop_oneof![Just(4u64 << 20), 64u64..4096],
        producer in producer(),
        compression in codec(),
    ) {
        let limits = Limits::default();
        let (batches, accepted) = build_batches(&records, batch_bytes, producer, compression);
        let mut read = Vec::new();
        let mut run = BytesMut::new();
        let mut next_offset = 0u64;
        for batch in &batches {
            let view = RecordBatchView::parse_within(batch.clone(), &limits).expect("built batches are valid");
            prop_assert_eq!(view.producer(), producer);
            prop_assert!(view.compression() == compression || view.compression() == Compression::None);
            prop_assert_eq!(view.last_offset_delta() + 1, view.count());
            let decoded = view.decode().unwrap();
            prop_assert_eq!(decoded.iter().len(), view.count() as usize);
            let timestamps: Vec<i64> = decoded.iter().map(|record| record.timestamp_ms).collect();
            prop_assert_eq!(Some(view.max_timestamp_ms()), timestamps.iter().copied().max());
            prop_assert_eq!(view.base_timestamp_ms(), timestamps[0]);
            read.extend(read_back(&view));
            let mut stamped = batch.to_vec();
            stamp_leader(&mut stamped, next_offset, 7).unwrap();
            next_offset += u64::from(view.count());
            run.extend_from_slice(&stamped);
        }
        prop_assert_eq!(&read, &accepted);

        // The same batches, stamped and concatenated as a segment or fetch payload would hold them.
        let mut expected_base_offset = 0;
        for view in RecordBatches::new(run.freeze()) {
            let view = view.expect("stamped batches stay valid");
            prop_assert_eq!(view.base_offset(), expected_base_offset);
            prop_assert_eq!(view.leader_epoch(), 7);
            expected_base_offset = view.last_offset().unwrap() + 1;
        }
        prop_assert_eq!(expected_base_offset, next_offset);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn parse_of_arbitrary_bytes_never_panics(bytes in small_bytes(256)) {
        let _ = RecordBatchView::parse(Bytes::from(bytes.clone()));
        for batch in RecordBatches::new(Bytes::from(bytes)).flatten() {
            if let Ok(records) = batch.decode() {
                for record in records.iter() {
                    let _ = record.headers().count();
                }
            }
        }
    }

    /// Random bytes almost never pass the CRC, so this one garbles a valid batch and then
    /// re-seals a correct CRC: the record framing checks (and, compressed, the codec's own
    /// checks) are what stand between it and a panic.
    #[test]
    fn garbled_records_with_a_valid_crc_never_panic(
        batch in small_batch(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = batch.to_vec();
        for (position, byte) in edits {
            let position = CRC_COVERS_FROM + position.index(bytes.len() - CRC_COVERS_FROM);
            bytes[position] = byte;
        }
        // Sometimes also shrink the batch so records end early.
        let new_len = CRC_COVERS_FROM + cut.index(bytes.len() - CRC_COVERS_FROM + 1);
        if new_len < bytes.len() && new_len >= BATCH_HEADER_BYTES {
            bytes.truncate(new_len);
        }
        reseal(&mut bytes);
        if let Ok(view) = RecordBatchView::parse(Bytes::from(bytes)) {
            if let Ok(records) = view.decode() {
                prop_assert_eq!(records.iter().count(), view.count() as usize);
                for record in records.iter() {
                    prop_assert_eq!(record.headers().count() as u32, record.header_count());
                }
            }
        }
    }

    /// Every bit the CRC covers is checked, in every codec; `baseOffset` and
    /// `partitionLeaderEpoch` are outside it by design (the leader stamps them), and a flip in
    /// `batchLength`, the magic or the CRC itself is caught by its own check.
    #[test]
    fn any_flipped_bit_outside_the_leader_stamps_is_detected(
        batch in small_batch(),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut bytes = batch.to_vec();
        let position = position.index(bytes.len());
        bytes[position] ^= 1 << bit;
        let parsed = RecordBatchView::parse(Bytes::from(bytes));
        let stamped_by_leader = position < BATCH_LENGTH_AT || (LEADER_EPOCH_AT..MAGIC_AT).contains(&position);
        if stamped_by_leader {
            let view = parsed.expect("the leader's stamps are not covered");
            prop_assert_eq!(view.decode().unwrap().iter().count(), view.count() as usize);
        } else {
            prop_assert!(parsed.is_err(), "bit {bit} of byte {position} flipped unnoticed");
        }
    }

    #[test]
    fn truncated_or_extended_batches_are_rejected(batch in small_batch(), cut in any::<prop::sample::Index>(), extra in small_bytes(8)) {
        let cut = cut.index(batch.len());
        prop_assert!(RecordBatchView::parse(batch.slice(..cut)).is_err());
        if !extra.is_empty() {
            let mut extended = batch.to_vec();
            extended.extend_from_slice(&extra);
            let parsed = RecordBatchView::parse(Bytes::from(extended));
            prop_assert!(matches!(parsed, Err(WireError::BatchLenMismatch { .. })), "{:?}", parsed);
        }
    }
}

#[test]
fn zero_and_ten_thousand_record_batches_in_every_codec() {
    let limits = Limits::default();
    for codec in Compression::ALL {
        assert_eq!(
            RecordBatchBuilder::new(&limits, 1 << 20)
                .with_compression(codec)
                .finish(),
            Err(WireError::EmptyBatch),
            "a batch of 0 records is refused by the builder"
        );
        let mut builder = RecordBatchBuilder::new(&limits, 4 << 20).with_compression(codec);
        for i in 0..10_000u32 {
            let value = format!("message {i}");
            let key = i.to_be_bytes();
            builder
                .append(&Record {
                    timestamp_ms: 1_700_000_000_000 - i64::from(i % 7),
                    key: (i % 3 != 0).then_some(&key[..]),
                    value: (i % 5 != 0).then_some(value.as_bytes()),
                    headers: &[],
                })
                .unwrap();
        }
        let view = RecordBatchView::parse_within(builder.finish().unwrap(), &limits).unwrap();
        assert_eq!(view.count(), 10_000);
        assert_eq!(view.compression(), codec);
        let decoded = view.decode().unwrap();
        for (i, record) in decoded.iter().enumerate() {
            let i = i as u32;
            assert_eq!(record.offset_delta, i);
            assert_eq!(record.key, (i % 3 != 0).then_some(&i.to_be_bytes()[..]));
            let value = format!("message {i}");
            assert_eq!(record.value, (i % 5 != 0).then_some(value.as_bytes()));
        }
    }
}

fn topic() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,40}"
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (topic(), any::<u32>(), any::<bool>(), any::<u32>()).prop_map(
            |(topic, partition, leader_acks, timeout_ms)| {
                let acks = if leader_acks {
                    Acks::Leader
                } else {
                    Acks::Committed
                };
                Request::Produce(ProduceRequest {
                    topic,
                    partition,
                    acks,
                    timeout_ms,
                })
            }
        ),
        (
            topic(),
            any::<u32>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(
                |(topic, partition, offset, max_bytes, max_wait_ms, min_bytes)| {
                    Request::Fetch(FetchRequest {
                        topic,
                        partition,
                        offset,
                        max_bytes,
                        max_wait_ms,
                        min_bytes,
                    })
                }
            ),
        prop::option::of(prop::collection::vec(topic(), 0..4))
            .prop_map(|topics| Request::Metadata(MetadataRequest { topics })),
        Just(Request::ListTopics),
        Just(Request::ClusterStatus),
        Just(Request::InitProducerId),
    ]
}

fn frame() -> impl Strategy<Value = Frame<Request>> {
    (request(), small_bytes(2048))
        .prop_map(|(header, payload)| Frame::new(header, Bytes::from(payload)))
}

const MAX_FRAME_BYTES: u64 = 16 << 20;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn frame_round_trips(frame in frame()) {
        let bytes = frame.to_bytes().unwrap();
        prop_assert_eq!(frame.encoded_bytes(), Ok(bytes.len() as u64));
        let mut input = bytes.clone();
        prop_assert_eq!(Frame::<Request>::decode(&mut input, MAX_FRAME_BYTES), Ok(frame));
        prop_assert!(input.is_empty());
        let over_limit = Frame::<Request>::decode(&mut bytes.clone(), bytes.len() as u64 - 1);
        prop_assert!(matches!(over_limit, Err(WireError::FrameTooLarge { .. })), "{:?}", over_limit);
    }

    #[test]
    fn frame_decode_of_arbitrary_bytes_never_panics(bytes in small_bytes(128)) {
        let _ = Frame::<Request>::decode(&mut &bytes[..], MAX_FRAME_BYTES);
        let _ = Frame::<Response>::decode(&mut &bytes[..], MAX_FRAME_BYTES);
        let mut buffer = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = FrameDecoder::new(MAX_FRAME_BYTES).decode::<Response>(&mut buffer) {}
    }

    /// A well-formed frame around a garbage header: postcard must refuse it, not panic or
    /// allocate what the garbage claims.
    #[test]
    fn garbage_headers_never_panic(header in small_bytes(64), payload in small_bytes(16)) {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&((5 + header.len() + payload.len()) as u32).to_le_bytes());
        bytes.push(keel_wire::PROTOCOL_VERSION);
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&payload);
        let _ = Frame::<Request>::decode(&mut &bytes[..], MAX_FRAME_BYTES);
        let _ = Frame::<Response>::decode(&mut &bytes[..], MAX_FRAME_BYTES);
    }

    #[test]
    fn incremental_decode_survives_any_split_points(
        frames in prop::collection::vec(frame(), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut stream = BytesMut::new();
        for frame in &frames {
            frame.encode(&mut stream).unwrap();
        }
        let stream = stream.freeze();
        let mut cut_points: Vec<usize> = cuts.iter().map(|cut| cut.index(stream.len() + 1)).collect();
        cut_points.push(stream.len());
        cut_points.sort_unstable();
        let decoder = FrameDecoder::new(MAX_FRAME_BYTES);
        let mut buffer = BytesMut::new();
        let mut decoded = Vec::new();
        let mut start = 0;
        for end in cut_points {
            buffer.extend_from_slice(&stream[start..end]);
            start = end;
            while let Some(frame) = decoder.decode::<Request>(&mut buffer).unwrap() {
                decoded.push(frame);
            }
        }
        prop_assert_eq!(decoded, frames);
        prop_assert!(buffer.is_empty());
    }

    #[test]
    fn error_responses_round_trip(code in prop_oneof![
        Just(ErrorCode::UnknownTopic),
        Just(ErrorCode::Overloaded),
        prop::option::of("[a-z0-9.:]{1,30}").prop_map(|leader_addr| ErrorCode::NotLeader { leader_addr }),
        (any::<u64>(), any::<u64>()).prop_map(|(base_offset, last_offset)| ErrorCode::DuplicateSequence { base_offset, last_offset }),
        (any::<u64>(), any::<u64>()).prop_map(|(log_start_offset, high_watermark)| ErrorCode::OffsetOutOfRange { log_start_offset, high_watermark }),
    ]) {
        let frame = Frame::new(Response::Error(code), Bytes::new());
        let bytes = frame.to_bytes().unwrap();
        prop_assert_eq!(Frame::<Response>::decode(&mut bytes.clone(), MAX_FRAME_BYTES), Ok(frame));
    }
}
