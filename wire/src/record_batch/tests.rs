//! Record batch unit tests: the pinned worked example (so the format cannot drift silently),
//! the builder's limits, the codecs, and one test per way `parse` refuses a batch.

use bytes::Bytes;

use super::super::limits::Limits;
use super::*;

/// The worked example of docs/WIRE.md: producer 7 epoch 1 sequence 0; record 0 at t=1000 with
/// key `k`, value `v1` and header `h=x`; record 1 at t=998 with no key and a null value.
fn worked_example() -> Bytes {
    let limits = Limits::default();
    let producer = ProducerStamp {
        producer_id: 7,
        producer_epoch: 1,
        base_sequence: 0,
    };
    let mut builder = RecordBatchBuilder::new(&limits, 1024).with_producer(producer);
    let headers = [Header {
        key: b"h",
        value: Some(b"x"),
    }];
    assert_eq!(
        builder.append(&Record {
            timestamp_ms: 1000,
            key: Some(b"k"),
            value: Some(b"v1"),
            headers: &headers
        }),
        Ok(0)
    );
    assert_eq!(
        builder.append(&Record {
            timestamp_ms: 998,
            key: None,
            value: None,
            headers: &[]
        }),
        Ok(1)
    );
    assert_eq!(builder.size_bytes(), 82);
    builder.finish().unwrap()
}

#[rustfmt::skip]
const WORKED_EXAMPLE_BYTES: [u8; 82] = [
    0, 0, 0, 0, 0, 0, 0, 0,             // baseOffset 0 (the leader stamps it)
    0, 0, 0, 0x46,                      // batchLength 70: the 82 bytes after these 12
    0xff, 0xff, 0xff, 0xff,             // partitionLeaderEpoch -1 (the leader stamps it)
    0x02,                               // magic 2
    0xc1, 0xed, 0x31, 0x23,             // crc: CRC-32C of bytes 21..82
    0, 0,                               // attributes: no codec, CreateTime
    0, 0, 0, 1,                         // lastOffsetDelta 1
    0, 0, 0, 0, 0, 0, 0x03, 0xe8,       // baseTimestamp 1000
    0, 0, 0, 0, 0, 0, 0x03, 0xe8,       // maxTimestamp 1000
    0, 0, 0, 0, 0, 0, 0, 7,             // producerId 7
    0, 1,                               // producerEpoch 1
    0, 0, 0, 0,                         // baseSequence 0
    0, 0, 0, 2,                         // recordsCount 2
    // record 0: length 13 (zigzag 26) | attributes 0 | timestampDelta 0 | offsetDelta 0 |
    // key length 1 "k" | value length 2 "v1" | 1 header: key length 1 "h", value length 1 "x"
    0x1a, 0x00, 0x00, 0x00, 0x02, b'k', 0x04, b'v', b'1', 0x02, 0x02, b'h', 0x02, b'x',
    // record 1: length 6 | attributes 0 | timestampDelta -2 (zigzag 3) | offsetDelta 1 |
    // key length -1 (null) | value length -1 (null) | 0 headers
    0x0c, 0x00, 0x03, 0x02, 0x01, 0x01, 0x00,
];

/// Recomputes the CRC after a test edits covered bytes, so the edit reaches the later checks.
fn with_fresh_crc(mut batch: Vec<u8>) -> Bytes {
    let crc = crc32c::crc32c(&batch[CRC_COVERS_FROM..]);
    batch[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(batch)
}

fn record(value: &[u8]) -> Record<'_> {
    Record {
        timestamp_ms: 5,
        key: None,
        value: Some(value),
        headers: &[],
    }
}

fn build(records: &[Record<'_>], compression: Compression) -> Bytes {
    let mut builder =
        RecordBatchBuilder::new(&Limits::default(), 1 << 20).with_compression(compression);
    for record in records {
        builder.append(record).unwrap();
    }
    builder.finish().unwrap()
}

#[test]
fn worked_example_bytes_are_pinned() {
    let batch = worked_example();
    assert_eq!(&batch[..], &WORKED_EXAMPLE_BYTES[..]);
    let view = RecordBatchView::parse(batch).unwrap();
    assert_eq!(view.count(), 2);
    assert_eq!(view.base_offset(), 0);
    assert_eq!(view.leader_epoch(), NO_LEADER_EPOCH);
    assert_eq!(view.compression(), Compression::None);
    assert_eq!(view.base_timestamp_ms(), 1000);
    assert_eq!(view.max_timestamp_ms(), 1000);
    assert_eq!(
        view.producer(),
        ProducerStamp {
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 0
        }
    );
    let decoded = view.decode().unwrap();
    let records: Vec<RecordView<'_>> = decoded.iter().collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].offset_delta, 0);
    assert_eq!(records[0].timestamp_ms, 1000);
    assert_eq!(records[0].key, Some(&b"k"[..]));
    assert_eq!(records[0].value, Some(&b"v1"[..]));
    let headers: Vec<Header<'_>> = records[0].headers().collect();
    assert_eq!(
        headers,
        [Header {
            key: b"h",
            value: Some(b"x")
        }]
    );
    assert_eq!(records[1].offset_delta, 1);
    assert_eq!(records[1].timestamp_ms, 998);
    assert_eq!(records[1].key, None);
    assert_eq!(records[1].value, None);
    assert_eq!(records[1].header_count(), 0);
}

#[test]
fn restamping_the_producer_recomputes_the_crc() {
    let mut batch = worked_example().to_vec();
    let stamp = ProducerStamp {
        producer_id: 9,
        producer_epoch: 2,
        base_sequence: 40,
    };
    set_producer_stamp(&mut batch, stamp).unwrap();
    let view = RecordBatchView::parse(Bytes::from(batch.clone())).unwrap();
    assert_eq!(view.producer(), stamp);
    // Without the CRC update the batch would be refused.
    batch[PRODUCER_ID_AT + 7] ^= 1;
    assert!(matches!(
        RecordBatchView::parse(Bytes::from(batch)),
        Err(WireError::CrcMismatch { .. })
    ));
}

#[test]
fn the_leader_stamp_keeps_the_producer_crc_valid() {
    let mut batch = worked_example().to_vec();
    stamp_leader(&mut batch, 42, 3).unwrap();
    let view = RecordBatchView::parse(Bytes::from(batch.clone())).unwrap();
    assert_eq!(view.base_offset(), 42);
    assert_eq!(view.leader_epoch(), 3);
    assert_eq!(view.last_offset(), Ok(43));
    assert_eq!(view.crc(), 0xc1ed_3123, "the producer's CRC, untouched");
    assert_eq!(&batch[..8], &42u64.to_be_bytes());
    assert_eq!(&batch[12..16], &3u32.to_be_bytes());

    // A term past Kafka's i32 saturates; an offset with no room for the batch is refused.
    stamp_leader(&mut batch, 0, u64::MAX).unwrap();
    assert_eq!(
        BatchHeader::read(&batch).unwrap().leader_epoch,
        i32::MAX as u32
    );
    assert_eq!(
        stamp_leader(&mut batch, i64::MAX as u64 - 1, 1),
        Err(WireError::OffsetOverflow {
            base_offset: i64::MAX as u64 - 1,
            count: 2
        })
    );
    assert!(stamp_leader(&mut batch[..60], 0, 1).is_err());
}

#[test]
fn the_header_reader_agrees_with_the_checked_view() {
    let mut batch = worked_example().to_vec();
    stamp_leader(&mut batch, 7, 5).unwrap();
    let header = BatchHeader::read(&batch).unwrap();
    let view = RecordBatchView::parse(Bytes::from(batch.clone())).unwrap();
    assert_eq!(&header, view.header());
    assert_eq!(header.end_offset(), Some(9));
    assert_eq!(header.compression(), Some(Compression::None));
    assert_eq!(BatchHeader::read(&batch[..BATCH_HEADER_BYTES - 1]), None);
}

#[test]
fn absent_and_empty_keys_values_and_header_values_are_different() {
    let headers = [
        Header {
            key: b"null",
            value: None,
        },
        Header {
            key: b"empty",
            value: Some(b""),
        },
    ];
    let records = [
        Record {
            timestamp_ms: 1,
            key: None,
            value: None,
            headers: &headers,
        },
        Record {
            timestamp_ms: 1,
            key: Some(b""),
            value: Some(b""),
            headers: &[],
        },
    ];
    let view = RecordBatchView::parse(build(&records, Compression::None)).unwrap();
    let decoded = view.decode().unwrap();
    let read: Vec<_> = decoded.iter().collect();
    assert_eq!((read[0].key, read[0].value), (None, None));
    assert_eq!(read[0].headers().collect::<Vec<_>>(), headers);
    assert_eq!(
        (read[1].key, read[1].value),
        (Some(&b""[..]), Some(&b""[..]))
    );
}

#[test]
fn every_codec_round_trips_and_shrinks_compressible_records() {
    let value = b"the same forty bytes, over and over again".repeat(20);
    let records: Vec<Record<'_>> = (0..50).map(|_| record(&value)).collect();
    let plain = build(&records, Compression::None);
    for codec in Compression::ALL {
        let batch = build(&records, codec);
        let view = RecordBatchView::parse(batch.clone()).unwrap();
        assert_eq!(view.compression(), codec);
        if codec != Compression::None {
            assert!(
                batch.len() * 5 < plain.len(),
                "{codec:?}: {} bytes vs {}",
                batch.len(),
                plain.len()
            );
        }
        let decoded = view.decode().unwrap();
        assert_eq!(decoded.iter().count(), 50);
        assert!(decoded.iter().all(|r| r.value == Some(&value[..])));
    }
}

#[test]
fn incompressible_records_are_sent_uncompressed() {
    // A short record does not shrink under any codec's framing overhead.
    let batch = build(&[record(b"x")], Compression::Zstd);
    let view = RecordBatchView::parse(batch).unwrap();
    assert_eq!(view.compression(), Compression::None);
}

#[test]
fn raw_snappy_without_the_xerial_header_is_read_too() {
    let plain = build(&[record(b"abcabcabcabcabcabcabc")], Compression::None);
    let records = &plain[BATCH_HEADER_BYTES..];
    let raw = snap::raw::Encoder::new().compress_vec(records).unwrap();
    let mut batch = plain[..BATCH_HEADER_BYTES].to_vec();
    batch.extend_from_slice(&raw);
    let length = (batch.len() - BATCH_LENGTH_EXCLUDES) as u32;
    batch[BATCH_LENGTH_AT..LEADER_EPOCH_AT].copy_from_slice(&length.to_be_bytes());
    batch[ATTRIBUTES_AT + 1] = Compression::Snappy as u8;
    let view = RecordBatchView::parse(with_fresh_crc(batch)).unwrap();
    let decoded = view.decode().unwrap();
    let values: Vec<_> = decoded.iter().map(|r| r.value).collect();
    assert_eq!(values, [Some(&b"abcabcabcabcabcabcabc"[..])]);
}

/// Decompression stops at the bound (gzip, lz4 and zstd stream into a buffer that never grows
/// past it; snappy's claimed lengths are checked before anything is allocated).
#[test]
fn a_decompression_bomb_is_refused_at_the_bound() {
    let zeros = vec![0u8; (MAX_DECOMPRESSED + 1) as usize];
    let plain = build(&[record(b"")], Compression::None);
    for codec in [
        Compression::Zstd,
        Compression::Lz4,
        Compression::Gzip,
        Compression::Snappy,
    ] {
        let mut batch = plain[..BATCH_HEADER_BYTES].to_vec();
        batch.extend_from_slice(&codec.compress(&zeros).unwrap());
        let length = (batch.len() - BATCH_LENGTH_EXCLUDES) as u32;
        batch[BATCH_LENGTH_AT..LEADER_EPOCH_AT].copy_from_slice(&length.to_be_bytes());
        batch[ATTRIBUTES_AT + 1] = codec as u8;
        let view = RecordBatchView::parse(with_fresh_crc(batch)).unwrap();
        assert_eq!(
            view.decode().unwrap_err(),
            WireError::DecompressedTooLarge {
                codec: codec.name(),
                max_bytes: MAX_DECOMPRESSED
            }
        );
    }
}
const MAX_DECOMPRESSED: u64 = super::super::limits::MAX_DECOMPRESSED_BATCH_BYTES;

#[test]
fn builder_stops_at_its_target_but_a_first_record_may_exceed_it() {
    let limits = Limits::default();
    let value = vec![7u8; 1000];
    let mut builder = RecordBatchBuilder::new(&limits, 1500);
    builder.append(&record(&value)).unwrap();
    let full = builder.append(&record(&value)).unwrap_err();
    assert!(matches!(full, WireError::BatchFull { .. }), "{full:?}");
    assert_eq!(
        builder.count(),
        1,
        "a refused record leaves the builder unchanged"
    );

    let mut small_target = RecordBatchBuilder::new(&limits, 100);
    assert_eq!(
        small_target.append(&record(&value)),
        Ok(0),
        "one big message gets a batch of its own"
    );
    assert!(matches!(
        small_target.append(&record(&value)),
        Err(WireError::BatchFull { .. })
    ));
}

#[test]
fn builder_refuses_a_message_over_max_message_bytes() {
    let limits = Limits::default();
    let value = vec![0u8; limits.max_message_bytes as usize];
    let mut builder = RecordBatchBuilder::new(&limits, limits.max_record_batch_bytes);
    let error = builder.append(&record(&value)).unwrap_err();
    assert!(
        matches!(error, WireError::MessageTooLarge { record_bytes, max_message_bytes }
            if record_bytes > max_message_bytes && max_message_bytes == 1 << 20),
        "{error:?}"
    );
    assert!(builder.is_empty());
    assert_eq!(builder.finish(), Err(WireError::EmptyBatch));
}

#[test]
fn builder_refuses_a_timestamp_too_far_from_the_first() {
    let mut builder = RecordBatchBuilder::new(&Limits::default(), 1024);
    builder
        .append(&Record {
            timestamp_ms: i64::MIN,
            ..record(b"")
        })
        .unwrap();
    let error = builder.append(&Record {
        timestamp_ms: i64::MAX,
        ..record(b"")
    });
    assert_eq!(error, Err(WireError::TimestampOverflow { index: 1 }));
}

#[test]
fn validate_enforces_the_configured_limits() {
    let view = RecordBatchView::parse(worked_example()).unwrap();
    assert_eq!(view.validate(&Limits::default()), Ok(()));
    let tight = Limits {
        max_message_bytes: 13,
        max_record_batch_bytes: 82,
        max_request_bytes: 1 << 20,
    };
    assert_eq!(
        view.validate(&tight),
        Err(WireError::MessageTooLarge {
            record_bytes: 14,
            max_message_bytes: 13
        })
    );
    let tighter = Limits {
        max_record_batch_bytes: 81,
        ..tight
    };
    assert_eq!(
        RecordBatchView::parse_within(worked_example(), &tighter),
        Err(WireError::RecordBatchTooLarge {
            batch_bytes: 82,
            max_record_batch_bytes: 81
        })
    );
}

/// The worked example with `edit` applied and the CRC made valid again.
fn edited(edit: impl FnOnce(&mut Vec<u8>)) -> Result<RecordBatchView, WireError> {
    let mut batch = WORKED_EXAMPLE_BYTES.to_vec();
    edit(&mut batch);
    RecordBatchView::parse(with_fresh_crc(batch))
}

#[test]
fn parse_names_each_defect() {
    let example = Bytes::from_static(&WORKED_EXAMPLE_BYTES);
    assert!(matches!(
        RecordBatchView::parse(example.slice(..60)),
        Err(WireError::BatchTooShort { .. })
    ));
    assert_eq!(
        RecordBatchView::parse(example.slice(..81)),
        Err(WireError::BatchLenMismatch {
            batch_len: 82,
            available_bytes: 81
        })
    );
    // Keel's own format before this one had its magic at the same byte.
    let mut old = WORKED_EXAMPLE_BYTES;
    old[MAGIC_AT] = 1;
    assert_eq!(
        RecordBatchView::parse(Bytes::copy_from_slice(&old)),
        Err(WireError::UnsupportedMagic(1))
    );
    let mut flipped = WORKED_EXAMPLE_BYTES;
    flipped[70] ^= 0x10;
    assert!(matches!(
        RecordBatchView::parse(Bytes::copy_from_slice(&flipped)),
        Err(WireError::CrcMismatch { .. })
    ));

    let attributes = |bits: u16| edited(|b| b[21..23].copy_from_slice(&bits.to_be_bytes()));
    assert_eq!(attributes(5).unwrap_err(), WireError::UnknownCompression(5));
    assert_eq!(
        attributes(ATTR_LOG_APPEND_TIME).unwrap_err(),
        WireError::LogAppendTimeUnsupported
    );
    assert_eq!(
        attributes(ATTR_TRANSACTIONAL).unwrap_err(),
        WireError::TransactionalUnsupported
    );
    assert_eq!(
        attributes(ATTR_CONTROL).unwrap_err(),
        WireError::ControlBatchUnsupported
    );
    assert_eq!(
        attributes(0x40).unwrap_err(),
        WireError::UnknownAttributes(0x40)
    );
    assert_eq!(
        attributes(Compression::Lz4 as u16).unwrap_err(),
        WireError::CompressedFraming { codec: "lz4" }
    );

    assert_eq!(
        edited(|b| b[57..61].copy_from_slice(&0u32.to_be_bytes())).unwrap_err(),
        WireError::EmptyBatch
    );
    assert_eq!(
        edited(|b| b[23..27].copy_from_slice(&0u32.to_be_bytes())).unwrap_err(),
        WireError::LastOffsetDeltaMismatch {
            last_offset_delta: 0,
            count: 2
        }
    );
    // An idempotent producer id with sequence -1.
    assert!(matches!(
        edited(|b| b[53..57].copy_from_slice(&u32::MAX.to_be_bytes())).unwrap_err(),
        WireError::InvalidProducerStamp { .. }
    ));
    // Record 1 claims offset delta 0 (zigzag 0).
    assert_eq!(
        edited(|b| b[78] = 0x00).unwrap_err(),
        WireError::OffsetDeltaMismatch {
            index: 1,
            offset_delta: 0
        }
    );
    // Record 1's key length: zigzag 3 is -2, which means nothing.
    assert_eq!(
        edited(|b| b[79] = 0x03).unwrap_err(),
        WireError::InvalidLength {
            index: 1,
            field: "key",
            length: -2
        }
    );
    // Record 1's length says 7 but only 6 bytes follow in the batch.
    assert_eq!(
        edited(|b| b[75] = 0x0e).unwrap_err(),
        WireError::RecordOverrun { index: 1 }
    );
    // Record 0's length says 12: its headers then run past it.
    assert!(matches!(
        edited(|b| b[61] = 0x18).unwrap_err(),
        WireError::RecordLenMismatch { index: 0, .. }
    ));
    // The header declares one record: the second is left over.
    assert!(matches!(
        edited(|b| {
            b[57..61].copy_from_slice(&1u32.to_be_bytes());
            b[23..27].copy_from_slice(&0u32.to_be_bytes());
        })
        .unwrap_err(),
        WireError::TrailingRecordBytes { declared: 1, .. }
    ));
    assert_eq!(
        edited(|b| b[42] = 0xe9).unwrap_err(),
        WireError::MaxTimestampMismatch {
            declared: 1001,
            found: 1000
        }
    );
}

#[test]
fn concatenated_batches_are_split_and_a_cut_tail_is_an_error() {
    let mut run = WORKED_EXAMPLE_BYTES.to_vec();
    let mut second = WORKED_EXAMPLE_BYTES.to_vec();
    stamp_leader(&mut second, 2, 1).unwrap();
    run.extend_from_slice(&second);
    let offsets: Vec<u64> = RecordBatches::new(Bytes::from(run.clone()))
        .map(|batch| batch.unwrap().base_offset())
        .collect();
    assert_eq!(offsets, [0, 2]);

    run.truncate(run.len() - 1);
    let results: Vec<_> = RecordBatches::new(Bytes::from(run)).collect();
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok());
    assert_eq!(
        results[1],
        Err(WireError::BatchLenMismatch {
            batch_len: 82,
            available_bytes: 81
        })
    );
}

#[test]
fn max_message_bytes_counts_the_whole_encoded_record() {
    // length (3 bytes for 1 MiB) + attributes (1) + timestamp delta (1) + offset delta (1) +
    // null key (1) + value length (3) + header count (1) = 11.
    let limits = Limits::default();
    let fits = vec![1u8; limits.max_message_bytes as usize - 11];
    let mut builder = RecordBatchBuilder::new(&limits, limits.max_record_batch_bytes);
    builder.append(&record(&fits)).unwrap();
    let view = RecordBatchView::parse_within(builder.finish().unwrap(), &limits).unwrap();
    assert_eq!(
        view.size_bytes(),
        BATCH_HEADER_BYTES as u64 + limits.max_message_bytes
    );

    let one_over = vec![1u8; limits.max_message_bytes as usize - 10];
    let mut builder = RecordBatchBuilder::new(&limits, limits.max_record_batch_bytes);
    assert_eq!(
        builder.append(&record(&one_over)),
        Err(WireError::MessageTooLarge {
            record_bytes: (1 << 20) + 1,
            max_message_bytes: 1 << 20
        })
    );
}

#[test]
fn sequences_wrap_at_i32_max_as_kafkas_do() {
    assert_eq!(next_sequence(0, 5), 5);
    assert_eq!(next_sequence(i32::MAX as u32, 1), 0);
    assert_eq!(next_sequence(i32::MAX as u32 - 1, 3), 1);
}

#[test]
fn without_a_producer_id_epoch_and_sequence_are_not_looked_at() {
    // Some Kafka clients send producer id -1 with sequence 0: Kafka's broker takes that.
    let mut batch = WORKED_EXAMPLE_BYTES.to_vec();
    set_producer_stamp(
        &mut batch,
        ProducerStamp {
            base_sequence: 0,
            producer_epoch: 0,
            ..ProducerStamp::NONE
        },
    )
    .unwrap();
    let view = RecordBatchView::parse(Bytes::from(batch)).unwrap();
    assert!(!view.producer().is_idempotent());
}
