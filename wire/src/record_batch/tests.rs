//! Record batch unit tests: the pinned worked example (so the format cannot drift silently),
//! the builder's limits, and one test per way `parse` refuses a batch.

use bytes::Bytes;

use super::super::limits::Limits;
use super::*;

/// The worked example of docs/WIRE.md: producer 7 epoch 1 sequence 0; record 0 at t=1000 with
/// key `k`, value `v1` and header `h=x`; record 1 at t=998 with no key and an empty value.
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
        value: b"x",
    }];
    assert_eq!(
        builder.append(&Record {
            timestamp_ms: 1000,
            key: Some(b"k"),
            value: b"v1",
            headers: &headers
        }),
        Ok(0)
    );
    assert_eq!(
        builder.append(&Record {
            timestamp_ms: 998,
            key: None,
            value: b"",
            headers: &[]
        }),
        Ok(1)
    );
    assert_eq!(builder.size_bytes(), 70);
    builder.finish().unwrap()
}

#[rustfmt::skip]
const WORKED_EXAMPLE_BYTES: [u8; 70] = [
    0, 0, 0, 0, 0, 0, 0, 0,             // base_offset 0 (the leader stamps it)
    0x46, 0, 0, 0,                      // batch_len 70: the whole batch
    0x90, 0xea, 0x1f, 0xda,             // crc32 of bytes 16..70
    0x01,                               // magic 1
    0, 0,                               // flags
    2, 0, 0, 0,                         // count 2
    0xe8, 0x03, 0, 0, 0, 0, 0, 0,       // first_timestamp_ms 1000
    0xe8, 0x03, 0, 0, 0, 0, 0, 0,       // max_timestamp_ms 1000
    7, 0, 0, 0, 0, 0, 0, 0,             // producer_id 7
    1, 0,                               // producer_epoch 1
    0, 0, 0, 0,                         // base_sequence 0
    // record 0: len 11 | delta 0 | key_len 1 "k" | value_len 2 "v1" | 1 header: "h" = "x"
    0x0b, 0x00, 0x02, b'k', 0x02, b'v', b'1', 0x01, 0x01, b'h', 0x01, b'x',
    // record 1: len 4 | delta -2 (zigzag 3) | key_len -1 (zigzag 1): no key | value_len 0 | 0 headers
    0x04, 0x03, 0x01, 0x00, 0x00,
];

/// Recomputes the CRC after a test edits covered bytes, so the edit reaches the later checks.
fn with_fresh_crc(mut batch: Vec<u8>) -> Bytes {
    let crc = crc32fast::hash(&batch[CRC_COVERS_FROM..]);
    batch[CRC_AT..MAGIC_AT].copy_from_slice(&crc.to_le_bytes());
    Bytes::from(batch)
}

#[test]
fn worked_example_bytes_are_pinned() {
    let batch = worked_example();
    assert_eq!(&batch[..], &WORKED_EXAMPLE_BYTES[..]);
    let view = RecordBatchView::parse(batch).unwrap();
    assert_eq!(view.count(), 2);
    assert_eq!(view.last_offset_delta(), 1);
    assert_eq!(view.first_timestamp_ms(), 1000);
    assert_eq!(view.max_timestamp_ms(), 1000);
    assert_eq!(view.crc(), 0xda1f_ea90);
    assert_eq!(
        view.producer(),
        ProducerStamp {
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 0
        }
    );
    let records: Vec<RecordView<'_>> = view.records().collect();
    assert_eq!(records.len(), 2);
    assert_eq!(
        (records[0].offset_delta, records[0].timestamp_ms),
        (0, 1000)
    );
    assert_eq!(
        (records[0].key, records[0].value),
        (Some(&b"k"[..]), &b"v1"[..])
    );
    assert_eq!(
        records[0].headers().collect::<Vec<_>>(),
        [Header {
            key: b"h",
            value: b"x"
        }]
    );
    assert_eq!((records[1].offset_delta, records[1].timestamp_ms), (1, 998));
    assert_eq!(
        (records[1].key, records[1].value, records[1].header_count()),
        (None, &b""[..], 0)
    );
}

#[test]
fn restamping_the_producer_recomputes_the_crc() {
    let mut batch = worked_example().to_vec();
    let stamp = ProducerStamp {
        producer_id: 99,
        producer_epoch: 3,
        base_sequence: 1234,
    };
    set_producer_stamp(&mut batch, stamp).unwrap();
    let view = RecordBatchView::parse(Bytes::from(batch.clone())).unwrap();
    assert_eq!(view.producer(), stamp);
    assert_eq!(view.records().count(), 2);
    // Without the CRC update the batch would be refused.
    batch[BASE_SEQUENCE_AT] ^= 1;
    assert!(RecordBatchView::parse(Bytes::from(batch)).is_err());
    assert!(set_producer_stamp(&mut [0u8; 10], stamp).is_err());
}

#[test]
fn stamping_base_offset_keeps_the_producer_crc_valid() {
    let mut batch = worked_example().to_vec();
    set_base_offset(&mut batch, 41).unwrap();
    assert_eq!(&batch[BASE_OFFSET_AT..BATCH_LEN_AT], &41u64.to_le_bytes());
    assert_eq!(
        &batch[BATCH_LEN_AT..],
        &WORKED_EXAMPLE_BYTES[BATCH_LEN_AT..],
        "nothing else changed"
    );
    let view = RecordBatchView::parse(Bytes::from(batch)).unwrap();
    assert_eq!((view.base_offset(), view.last_offset()), (41, Ok(42)));

    let mut at_the_end = WORKED_EXAMPLE_BYTES.to_vec();
    set_base_offset(&mut at_the_end, u64::MAX).unwrap();
    let view = RecordBatchView::parse(Bytes::from(at_the_end)).unwrap();
    assert_eq!(
        view.last_offset(),
        Err(WireError::OffsetOverflow {
            base_offset: u64::MAX,
            count: 2
        })
    );
    assert!(matches!(
        set_base_offset(&mut [0u8; 52], 1),
        Err(WireError::BatchTooShort { .. })
    ));
}

#[test]
fn the_header_reader_agrees_with_the_checked_view() {
    let mut batch = worked_example().to_vec();
    set_base_offset(&mut batch, 40).unwrap();
    let view = RecordBatchView::parse(Bytes::from(batch.clone())).unwrap();
    let header = BatchHeader::read(&batch).unwrap();
    assert_eq!(header.base_offset, view.base_offset());
    assert_eq!(header.count, view.count());
    assert_eq!(header.first_timestamp_ms, view.first_timestamp_ms());
    assert_eq!(header.max_timestamp_ms, view.max_timestamp_ms());
    assert_eq!(header.producer, view.producer());
    assert_eq!(header.end_offset(), Some(42));
    assert_eq!(BatchHeader::read(&batch[..BATCH_HEADER_BYTES - 1]), None);
}

#[test]
fn empty_key_and_absent_key_are_different() {
    let mut builder = RecordBatchBuilder::new(&Limits::default(), 1024);
    builder
        .append(&Record {
            timestamp_ms: 0,
            key: Some(b""),
            value: b"a",
            headers: &[],
        })
        .unwrap();
    builder
        .append(&Record {
            timestamp_ms: 0,
            key: None,
            value: b"b",
            headers: &[],
        })
        .unwrap();
    let view = RecordBatchView::parse(builder.finish().unwrap()).unwrap();
    let keys: Vec<Option<&[u8]>> = view.records().map(|record| record.key).collect();
    assert_eq!(keys, [Some(&b""[..]), None]);
}

#[test]
fn builder_stops_at_its_target_but_a_first_record_may_exceed_it() {
    let limits = Limits::default();
    let value = vec![7u8; 1000];
    let record = Record {
        timestamp_ms: 5,
        key: None,
        value: &value,
        headers: &[],
    };
    let mut builder = RecordBatchBuilder::new(&limits, 1500);
    builder.append(&record).unwrap();
    let full = builder.append(&record).unwrap_err();
    assert!(matches!(full, WireError::BatchFull { .. }), "{full:?}");
    assert_eq!(
        builder.count(),
        1,
        "a refused record leaves the builder unchanged"
    );

    let mut small_target = RecordBatchBuilder::new(&limits, 100);
    assert_eq!(
        small_target.append(&record),
        Ok(0),
        "one big message gets a batch of its own"
    );
    assert!(matches!(
        small_target.append(&record),
        Err(WireError::BatchFull { .. })
    ));
}

#[test]
fn builder_refuses_a_message_over_max_message_bytes() {
    let limits = Limits::default();
    let value = vec![0u8; limits.max_message_bytes as usize];
    let mut builder = RecordBatchBuilder::new(&limits, limits.max_record_batch_bytes);
    let error = builder
        .append(&Record {
            timestamp_ms: 0,
            key: None,
            value: &value,
            headers: &[],
        })
        .unwrap_err();
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
            key: None,
            value: b"",
            headers: &[],
        })
        .unwrap();
    let error = builder.append(&Record {
        timestamp_ms: i64::MAX,
        key: None,
        value: b"",
        headers: &[],
    });
    assert_eq!(error, Err(WireError::TimestampOverflow { index: 1 }));
}

#[test]
fn validate_enforces_the_configured_limits() {
    let view = RecordBatchView::parse(worked_example()).unwrap();
    assert_eq!(view.validate(&Limits::default()), Ok(()));
    let tight = Limits {
        max_message_bytes: 11,
        max_record_batch_bytes: 70,
        max_request_bytes: 1 << 20,
    };
    assert_eq!(
        view.validate(&tight),
        Err(WireError::MessageTooLarge {
            record_bytes: 12,
            max_message_bytes: 11
        })
    );
    let tighter = Limits {
        max_record_batch_bytes: 69,
        ..tight
    };
    assert_eq!(
        RecordBatchView::parse_within(worked_example(), &tighter),
        Err(WireError::RecordBatchTooLarge {
            batch_bytes: 70,
            max_record_batch_bytes: 69
        })
    );
}

#[test]
fn parse_names_each_defect() {
    let good = WORKED_EXAMPLE_BYTES.to_vec();
    let parse = |bytes: Bytes| RecordBatchView::parse(bytes).unwrap_err();

    assert_eq!(
        parse(Bytes::from(good[..52].to_vec())),
        WireError::BatchTooShort {
            available_bytes: 52,
            header_bytes: 53
        }
    );
    assert_eq!(
        parse(Bytes::from(good[..69].to_vec())),
        WireError::BatchLenMismatch {
            batch_len: 70,
            available_bytes: 69
        }
    );

    let mut magic = good.clone();
    magic[MAGIC_AT] = 2;
    assert_eq!(parse(with_fresh_crc(magic)), WireError::UnsupportedMagic(2));

    let mut flipped = good.clone();
    flipped[60] ^= 0x01;
    assert!(matches!(
        parse(Bytes::from(flipped)),
        WireError::CrcMismatch {
            stored: 0xda1f_ea90,
            ..
        }
    ));

    let mut flags = good.clone();
    flags[FLAGS_AT] = 1;
    assert_eq!(parse(with_fresh_crc(flags)), WireError::UnknownFlags(1));

    let mut zero_count = good.clone();
    zero_count[COUNT_AT] = 0;
    assert_eq!(parse(with_fresh_crc(zero_count)), WireError::EmptyBatch);

    let mut one_declared = good.clone();
    one_declared[COUNT_AT] = 1;
    assert_eq!(
        parse(with_fresh_crc(one_declared)),
        WireError::TrailingRecordBytes {
            declared: 1,
            trailing_bytes: 5
        }
    );

    let mut three_declared = good.clone();
    three_declared[COUNT_AT] = 3;
    assert_eq!(
        parse(with_fresh_crc(three_declared)),
        WireError::RecordCountMismatch {
            declared: 3,
            found: 2
        }
    );

    let mut max_timestamp = good.clone();
    max_timestamp[MAX_TIMESTAMP_AT] = 0xe9;
    assert_eq!(
        parse(with_fresh_crc(max_timestamp)),
        WireError::MaxTimestampMismatch {
            declared: 1001,
            found: 1000
        }
    );

    // Record 1's key_len: zigzag 3 is -2, which means nothing.
    let mut key_len = good.clone();
    key_len[67] = 0x03;
    assert_eq!(
        parse(with_fresh_crc(key_len)),
        WireError::InvalidKeyLength {
            index: 1,
            key_len: -2
        }
    );

    // Record 1's len says 5 but only 4 bytes follow in the batch.
    let mut record_len = good.clone();
    record_len[65] = 0x05;
    assert_eq!(
        parse(with_fresh_crc(record_len)),
        WireError::RecordOverrun { index: 1 }
    );

    // Record 0's len says 10: its headers then run past it.
    let mut short_len = good.clone();
    short_len[BATCH_HEADER_BYTES] = 0x0a;
    assert!(matches!(
        parse(with_fresh_crc(short_len)),
        WireError::RecordLenMismatch {
            index: 0,
            record_len: 10,
            ..
        }
    ));

    let mut first_timestamp = good;
    first_timestamp[FIRST_TIMESTAMP_AT..MAX_TIMESTAMP_AT].copy_from_slice(&i64::MIN.to_le_bytes());
    assert_eq!(
        parse(with_fresh_crc(first_timestamp)),
        WireError::TimestampOverflow { index: 1 }
    );
}

#[test]
fn concatenated_batches_are_split_and_a_cut_tail_is_an_error() {
    let mut run = WORKED_EXAMPLE_BYTES.to_vec();
    let mut second = WORKED_EXAMPLE_BYTES.to_vec();
    set_base_offset(&mut second, 2).unwrap();
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
            batch_len: 70,
            available_bytes: 69
        })
    );
}

#[test]
fn max_message_bytes_counts_the_whole_encoded_record() {
    // len (3 bytes for 1 MiB) + delta 0 (1) + no key (1) + value_len (3) + header_count (1) = 9.
    let limits = Limits::default();
    let fits = vec![1u8; limits.max_message_bytes as usize - 9];
    let mut builder = RecordBatchBuilder::new(&limits, limits.max_record_batch_bytes);
    builder
        .append(&Record {
            timestamp_ms: 0,
            key: None,
            value: &fits,
            headers: &[],
        })
        .unwrap();
    let view = RecordBatchView::parse_within(builder.finish().unwrap(), &limits).unwrap();
    assert_eq!(
        view.size_bytes(),
        BATCH_HEADER_BYTES as u64 + limits.max_message_bytes
    );

    let one_over = vec![1u8; limits.max_message_bytes as usize - 8];
    let mut builder = RecordBatchBuilder::new(&limits, limits.max_record_batch_bytes);
    let error = builder.append(&Record {
        timestamp_ms: 0,
        key: None,
        value: &one_over,
        headers: &[],
    });
    assert_eq!(
        error,
        Err(WireError::MessageTooLarge {
            record_bytes: (1 << 20) + 1,
            max_message_bytes: 1 << 20
        })
    );
}
