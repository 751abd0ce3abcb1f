//! A partition's Data entry: the leader's append time, then one record batch exactly as the
//! producer sent it (with the base offset and leader epoch the leader stamped). The append time
//! is the leader's clock, never the client's, so retention by age and producer expiry agree on
//! every replica whatever the producers' clocks say; it sits outside the batch so the batch's
//! CRC stays the producer's (docs/FORMAT.md "Partition entries").
//!
//! ```text
//! byte 0                  8
//!      | append_time_ms i64 | record batch (RecordBatch v2, docs/WIRE.md) ... |
//! ```
//!
//! `append_time_ms` is little-endian like the rest of Keel's storage formats; the batch keeps
//! Kafka's big-endian fields.

use bytes::{BufMut, BytesMut};
use keel_wire::record_batch::{stamp_leader, BatchHeader};
use keel_wire::WireError;

/// Bytes before the batch.
pub const APPEND_TIME_BYTES: usize = 8;
// The storage entry limit leaves this much room beyond the largest batch (node/mod.rs).
const _: () = assert!(APPEND_TIME_BYTES as u64 <= crate::limits::ENTRY_ENVELOPE_BYTES);

/// A Data entry's parts, borrowed from its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataEntry<'a> {
    pub append_time_ms: i64,
    pub batch: &'a [u8],
}

impl<'a> DataEntry<'a> {
    /// `None` if `payload` is too short to hold the append time and a batch header. Payloads are
    /// checked before they are proposed and CRC-checked in storage, so `None` is unreachable for
    /// an entry this code wrote.
    pub fn read(payload: &'a [u8]) -> Option<DataEntry<'a>> {
        let (append_time, batch) = payload.split_first_chunk::<APPEND_TIME_BYTES>()?;
        BatchHeader::read(batch)?;
        Some(DataEntry {
            append_time_ms: i64::from_le_bytes(*append_time),
            batch,
        })
    }

    /// The batch's header (present: [`DataEntry::read`] checked it).
    pub fn header(&self) -> Option<BatchHeader> {
        BatchHeader::read(self.batch)
    }
}

/// The payload for `batch` with room for the append time in front; one copy of the batch, which
/// the leader makes anyway to stamp it in a buffer of its own.
pub fn unstamped(batch: &[u8]) -> BytesMut {
    let mut payload = BytesMut::with_capacity(APPEND_TIME_BYTES + batch.len());
    payload.put_i64_le(0);
    payload.put_slice(batch);
    payload
}

/// The batch inside a payload made by [`unstamped`].
pub fn batch_of(payload: &[u8]) -> &[u8] {
    payload.get(APPEND_TIME_BYTES..).unwrap_or_default()
}

/// What the leader writes as it proposes an entry: its append time, the batch's base offset and
/// its own epoch (the partition's Raft term).
pub fn stamp(
    payload: &mut [u8],
    append_time_ms: i64,
    base_offset: u64,
    leader_epoch: u64,
) -> Result<(), WireError> {
    let Some((append_time, batch)) = payload.split_first_chunk_mut::<APPEND_TIME_BYTES>() else {
        return Err(WireError::BatchTooShort {
            available_bytes: payload.len(),
            header_bytes: APPEND_TIME_BYTES,
        });
    };
    stamp_leader(batch, base_offset, leader_epoch)?;
    *append_time = append_time_ms.to_le_bytes();
    Ok(())
}

/// The storage option that rebuilds a lost `.offsets` file from the log: a Data entry's base
/// offset.
pub fn offset_key(kind: u8, payload: &[u8]) -> Option<u64> {
    if kind == keel_raft::EntryKind::Data.as_u8() {
        DataEntry::read(payload)?
            .header()
            .map(|header| header.base_offset)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use keel_wire::{Limits, ProducerStamp, Record, RecordBatchBuilder, RecordBatchView};

    /// The worked example of docs/FORMAT.md "Partition entries": docs/WIRE.md's example batch
    /// appended at offset 42 by the leader of term 3 at 1,700,000,000,000 ms, stored as the
    /// segment entry at index 9 of term 3.
    #[test]
    fn the_worked_example_of_a_stored_entry_is_pinned() {
        let mut builder =
            RecordBatchBuilder::new(&Limits::default(), 1024).with_producer(ProducerStamp {
                producer_id: 7,
                producer_epoch: 1,
                base_sequence: 0,
            });
        let headers = [keel_wire::record_batch::Header {
            key: b"h",
            value: Some(b"x"),
        }];
        for (timestamp_ms, key, value, headers) in [
            (1000, Some(&b"k"[..]), Some(&b"v1"[..]), &headers[..]),
            (998, None, None, &[][..]),
        ] {
            builder
                .append(&Record {
                    timestamp_ms,
                    key,
                    value,
                    headers,
                })
                .unwrap();
        }
        let batch = builder.finish().unwrap();
        let mut payload = unstamped(&batch);
        stamp(&mut payload, 1_700_000_000_000, 42, 3).unwrap();

        let mut frame = Vec::new();
        keel_storage::frame::encode(
            &mut frame,
            9,
            3,
            keel_raft::EntryKind::Data.as_u8(),
            &payload,
        );
        let hex: String = frame.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(hex, WORKED_EXAMPLE_FRAME_HEX);
        let entry = DataEntry::read(&frame[25..]).unwrap();
        assert_eq!(entry.append_time_ms, 1_700_000_000_000);
        let view = RecordBatchView::parse(Bytes::copy_from_slice(entry.batch)).unwrap();
        assert_eq!((view.base_offset(), view.leader_epoch()), (42, 3));
        assert_eq!(
            &entry.batch[16..],
            &batch[16..],
            "the producer's bytes from the magic on"
        );
        assert_eq!(offset_key(1, &frame[25..]), Some(42));
    }

    /// docs/FORMAT.md prints these bytes, commented field by field.
    const WORKED_EXAMPLE_FRAME_HEX: &str = concat!(
        // storage frame: len 115 | crc | index 9 | term 3 | kind 1 (Data)
        "73000000",
        "f73e6b96",
        "0900000000000000",
        "0300000000000000",
        "01",
        // append_time_ms 1,700,000,000,000, little-endian
        "0068e5cf8b010000",
        // batch: baseOffset 42 | batchLength 70 | partitionLeaderEpoch 3 | magic 2 | crc
        "000000000000002a",
        "00000046",
        "00000003",
        "02",
        "c1ed3123",
        // attributes | lastOffsetDelta 1 | baseTimestamp 1000 | maxTimestamp 1000
        "0000",
        "00000001",
        "00000000000003e8",
        "00000000000003e8",
        // producerId 7 | producerEpoch 1 | baseSequence 0 | recordsCount 2
        "0000000000000007",
        "0001",
        "00000000",
        "00000002",
        // record 0 and record 1, as in docs/WIRE.md
        "1a000000026b04763102026802780c000302010100",
    );

    #[test]
    fn short_payloads_are_none_not_a_panic() {
        assert_eq!(DataEntry::read(&[0; 8]), None);
        assert_eq!(DataEntry::read(&[]), None);
        assert!(stamp(&mut [0; 4], 1, 0, 1).is_err());
        assert!(stamp(&mut [0; 20], 1, 0, 1).is_err());
    }
}
