//! Property tests of the wire codecs (every decoder has one). What must hold:
//! what the builder writes, parse reads back exactly, however batches get split; no input
//! makes a decoder panic; every single-byte corruption of a batch outside base_offset is
//! caught; a frame survives encode/decode whole or cut at any points of a stream.

use bytes::{Bytes, BytesMut};
use keel_wire::messages::{Acks, ErrorCode, FetchRequest, MetadataRequest, ProduceRequest};
use keel_wire::record_batch::{
    set_base_offset, Header, RecordBatches, CRC_AT, CRC_COVERS_FROM, MAGIC_AT,
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
    value: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

fn small_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max_len)
}

/// Values: mostly small (often empty), sometimes tens of KiB, rarely right at the 1 MiB
/// message limit (filled with one byte so generating them stays cheap).
fn value() -> impl Strategy<Value = Vec<u8>> {
    let max_message_bytes = Limits::default().max_message_bytes as usize;
    prop_oneof![
        8 => small_bytes(64),
        2 => Just(Vec::new()),
        1 => (1usize..64 * 1024, any::<u8>()).prop_map(|(len, byte)| vec![byte; len]),
        1 => (max_message_bytes - 48..=max_message_bytes, any::<u8>()).prop_map(|(len, byte)| vec![byte; len]),
    ]
}

fn record() -> impl Strategy<Value = OwnedRecord> {
    (
        // Timestamps near "now", plus the occasional extreme to exercise wide zigzag deltas.
        prop_oneof![4 => 1_600_000_000_000i64..1_800_000_000_000, 1 => -(1i64 << 61)..(1i64 << 61)],
        prop::option::of(small_bytes(32)),
        value(),
        prop::collection::vec((small_bytes(16), small_bytes(16)), 0..4),
    )
        .prop_map(|(timestamp_ms, key, value, headers)| OwnedRecord {
            timestamp_ms,
            key,
            value,
            headers,
        })
}

fn producer() -> impl Strategy<Value = ProducerStamp> {
    prop_oneof![
        Just(ProducerStamp::NONE),
        (any::<u64>(), any::<u16>(), any::<u32>()).prop_map(
            |(producer_id, producer_epoch, base_sequence)| {
                ProducerStamp {
                    producer_id,
                    producer_epoch,
                    base_sequence,
                }
            }
        ),
    ]
}

/// Packs `records` into as many batches as the `batch_bytes` target needs, the way a producer
/// does: on BatchFull, finish the batch and start another. Records over the message limit are
/// dropped (and checked to be really over it).
fn build_batches(
    records: &[OwnedRecord],
    batch_bytes: u64,
    producer: ProducerStamp,
) -> (Vec<Bytes>, Vec<OwnedRecord>) {
    let limits = Limits::default();
    let mut batches = Vec::new();
    let mut accepted = Vec::new();
    let mut builder = RecordBatchBuilder::new(&limits, batch_bytes).with_producer(producer);
    for owned in records {
        let headers: Vec<Header<'_>> = owned
            .headers
            .iter()
            .map(|(key, value)| Header { key, value })
            .collect();
        let record = Record {
            timestamp_ms: owned.timestamp_ms,
            key: owned.key.as_deref(),
            value: &owned.value,
            headers: &headers,
        };
        let mut result = builder.append(&record);
        if let Err(WireError::BatchFull { .. }) = result {
            let full = std::mem::replace(
                &mut builder,
                RecordBatchBuilder::new(&limits, batch_bytes).with_producer(producer),
            );
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
                // Framing adds at most 26 bytes to a record with up to 4 headers.
                let payload_bytes = owned.value.len()
                    + owned.key.as_ref().map_or(0, Vec::len)
                    + owned
                        .headers
                        .iter()
                        .map(|(key, value)| key.len() + value.len())
                        .sum::<usize>();
                assert!(
                    payload_bytes as u64 + 26 > max_message_bytes,
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
    batch
        .records()
        .map(|record| OwnedRecord {
            timestamp_ms: record.timestamp_ms,
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.to_vec(),
            headers: record
                .headers()
                .map(|header| (header.key.to_vec(), header.value.to_vec()))
                .collect(),
        })
        .collect()
}

/// A small valid batch for the corruption properties.
fn small_batch() -> impl Strategy<Value = Bytes> {
    (prop::collection::vec(record(), 1..6), producer()).prop_map(|(mut records, producer)| {
        for record in &mut records {
            record.value.truncate(64);
            record.timestamp_ms = record.timestamp_ms.clamp(0, 1 << 50);
        }
        let (mut batches, _) = build_batches(&records, 1 << 20, producer);
        batches.remove(0)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn builder_then_parse_round_trips(
        records in prop::collection::vec(record(), 1..40),
        batch_bytes in prop_oneof![Just(4u64 << 20), 64u64..4096],
        producer in producer(),
    ) {
        let limits = Limits::default();
        let (batches, accepted) = build_batches(&records, batch_bytes, producer);
        let mut read = Vec::new();
        let mut run = BytesMut::new();
        let mut next_offset = 0u64;
        for batch in &batches {
            let view = RecordBatchView::parse_within(batch.clone(), &limits).expect("built batches are valid");
            prop_assert_eq!(view.producer(), producer);
            prop_assert_eq!(view.last_offset_delta() + 1, view.count());
            prop_assert_eq!(view.records().len(), view.count() as usize);
            let timestamps: Vec<i64> = view.records().map(|record| record.timestamp_ms).collect();
            prop_assert_eq!(Some(view.max_timestamp_ms()), timestamps.iter().copied().max());
            prop_assert_eq!(view.first_timestamp_ms(), timestamps[0]);
            read.extend(read_back(&view));
            let mut stamped = batch.to_vec();
            set_base_offset(&mut stamped, next_offset).unwrap();
            next_offset += u64::from(view.count());
            run.extend_from_slice(&stamped);
        }
        prop_assert_eq!(&read, &accepted);

        // The same batches, stamped and concatenated as a segment or fetch payload would hold them.
        let mut expected_base_offset = 0;
        for view in RecordBatches::new(run.freeze()) {
            let view = view.expect("stamped batches stay valid");
            prop_assert_eq!(view.base_offset(), expected_base_offset);
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
            for record in batch.records() {
                let _ = record.headers().count();
            }
        }
    }

    /// Random bytes almost never pass the CRC, so this one garbles a valid batch and then
    /// re-stamps a correct CRC: the record framing checks are what stand between it and a panic.
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
        // Sometimes also shrink the batch (fixing batch_len) so records end early.
        let new_len = CRC_COVERS_FROM + cut.index(bytes.len() - CRC_COVERS_FROM + 1);
        if new_len < bytes.len() && new_len >= 53 {
            bytes.truncate(new_len);
            bytes[8..12].copy_from_slice(&(new_len as u32).to_le_bytes());
        }
        let crc = crc32fast::hash(&bytes[CRC_COVERS_FROM..]);
        bytes[CRC_AT..MAGIC_AT].copy_from_slice(&crc.to_le_bytes());
        if let Ok(view) = RecordBatchView::parse(Bytes::from(bytes)) {
            prop_assert_eq!(view.records().count(), view.count() as usize);
            for record in view.records() {
                prop_assert_eq!(record.headers().count() as u64, record.header_count());
            }
        }
    }

    #[test]
    fn any_flipped_byte_outside_base_offset_is_detected(
        batch in small_batch(),
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut bytes = batch.to_vec();
        let position = position.index(bytes.len());
        bytes[position] ^= flip;
        let parsed = RecordBatchView::parse(Bytes::from(bytes));
        if position < 8 {
            // base_offset is outside the CRC by design: the leader stamps it.
            let view = parsed.expect("base_offset is not covered");
            prop_assert_eq!(view.records().count(), view.count() as usize);
        } else {
            prop_assert!(parsed.is_err(), "flip {flip:#04x} at byte {position} went unnoticed");
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
