//! The record batch: Kafka's RecordBatch v2 (magic 2), the one batch format Keel has. A producer
//! builds it, the leader stamps two fields in place, Raft carries it, the segment stores it and a
//! fetch returns it: the same bytes all the way, never re-encoded, never decompressed by the
//! broker. docs/WIRE.md specifies every byte (with a worked example); this module owns the layout
//! constants and the operations that touch a batch in place.
//!
//! ```text
//! byte 0             8                12                       16        17        21
//!      | baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 | crc u32 |
//!   21                 23                   27                 35                43
//!      | attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//!   43                51                  53                 57                61
//!      | producerId i64 | producerEpoch i16 | baseSequence i32 | recordsCount i32 | records...
//! ```
//!
//! Fixed-width integers are big-endian (Kafka's byte order). `batchLength` counts the bytes
//! AFTER its own field, so a batch takes `12 + batchLength` bytes and in a run of batches the
//! next starts there. The CRC is CRC-32C (Castagnoli) over bytes `21..end` (attributes to the
//! end): `baseOffset` and `partitionLeaderEpoch` are outside it, which is what lets the leader
//! stamp them without recomputing it, and lets the consumer check the producer's own checksum.
//!
//! `attributes`: bits 0-2 the codec of the records area ([`Compression`]), bit 3 the timestamp
//! type (1 = LogAppendTime), bit 4 transactional, bit 5 control, bit 6 delete horizon. Keel
//! takes only codec bits; any other set bit is refused with its own typed error.
//!
//! Each record (varints are zigzag, as in Kafka; `-1` lengths mean null):
//!
//! ```text
//! length varint | attributes i8 | timestampDelta varlong | offsetDelta varint |
//! keyLength varint | key | valueLength varint | value |
//! headerCount varint | (headerKeyLength varint | headerKey | headerValueLength varint | headerValue)*
//! ```
//!
//! With a codec set, everything after `recordsCount` is the compressed form of those records.

mod builder;
mod compression;
mod view;

pub use builder::{Header, Record, RecordBatchBuilder};
pub use compression::Compression;
pub use view::{
    DecodedRecords, HeaderIter, RecordBatchView, RecordBatches, RecordIter, RecordView,
};

use super::error::WireError;

pub const BASE_OFFSET_AT: usize = 0;
pub const BATCH_LENGTH_AT: usize = 8;
pub const LEADER_EPOCH_AT: usize = 12;
pub const MAGIC_AT: usize = 16;
pub const CRC_AT: usize = 17;
pub const ATTRIBUTES_AT: usize = 21;
pub const LAST_OFFSET_DELTA_AT: usize = 23;
pub const BASE_TIMESTAMP_AT: usize = 27;
pub const MAX_TIMESTAMP_AT: usize = 35;
pub const PRODUCER_ID_AT: usize = 43;
pub const PRODUCER_EPOCH_AT: usize = 51;
pub const BASE_SEQUENCE_AT: usize = 53;
pub const RECORDS_COUNT_AT: usize = 57;
/// Bytes of a batch before its first record.
pub const BATCH_HEADER_BYTES: usize = 61;
/// The CRC covers the batch from here (the attributes) to its end.
pub const CRC_COVERS_FROM: usize = ATTRIBUTES_AT;
/// Bytes of a batch not counted by `batchLength`: `baseOffset` and `batchLength` itself.
pub const BATCH_LENGTH_EXCLUDES: usize = 12;

const _: () = assert!(BASE_OFFSET_AT + 8 == BATCH_LENGTH_AT);
const _: () = assert!(BATCH_LENGTH_AT + 4 == LEADER_EPOCH_AT && LEADER_EPOCH_AT + 4 == MAGIC_AT);
const _: () = assert!(MAGIC_AT + 1 == CRC_AT && CRC_AT + 4 == ATTRIBUTES_AT);
const _: () = assert!(ATTRIBUTES_AT + 2 == LAST_OFFSET_DELTA_AT);
const _: () = assert!(LAST_OFFSET_DELTA_AT + 4 == BASE_TIMESTAMP_AT);
const _: () = assert!(BASE_TIMESTAMP_AT + 8 == MAX_TIMESTAMP_AT);
const _: () = assert!(MAX_TIMESTAMP_AT + 8 == PRODUCER_ID_AT);
const _: () = assert!(PRODUCER_ID_AT + 8 == PRODUCER_EPOCH_AT);
const _: () = assert!(PRODUCER_EPOCH_AT + 2 == BASE_SEQUENCE_AT);
const _: () = assert!(BASE_SEQUENCE_AT + 4 == RECORDS_COUNT_AT);
const _: () = assert!(RECORDS_COUNT_AT + 4 == BATCH_HEADER_BYTES);
const _: () = assert!(BATCH_LENGTH_AT + 4 == BATCH_LENGTH_EXCLUDES);

/// The batch format this code writes and reads. Any other value is
/// [`WireError::UnsupportedMagic`]; Keel's own pre-Kafka format was magic 1 at the same byte.
pub const MAGIC: u8 = 2;

/// Attribute bits (Kafka's). Only [`ATTR_COMPRESSION_MASK`] is accepted; the others are refused,
/// each with its own error, because Keel does not implement what they mean yet.
pub const ATTR_COMPRESSION_MASK: u16 = 0x07;
pub const ATTR_LOG_APPEND_TIME: u16 = 0x08;
pub const ATTR_TRANSACTIONAL: u16 = 0x10;
pub const ATTR_CONTROL: u16 = 0x20;

/// `partitionLeaderEpoch` of a batch no leader has stamped yet (Kafka's -1).
pub const NO_LEADER_EPOCH: u32 = u32::MAX;

/// The length of an absent key, value or header value (Kafka's null).
pub const NULL_LENGTH: i64 = -1;

/// The sequence number `increment` records after `sequence`, wrapping from `i32::MAX` to 0 as
/// Kafka's does (sequence numbers are non-negative `i32`s on the wire).
pub fn next_sequence(sequence: u32, increment: u32) -> u32 {
    debug_assert!(sequence <= i32::MAX as u32 && increment <= i32::MAX as u32);
    ((u64::from(sequence) + u64::from(increment)) % (i32::MAX as u64 + 1)) as u32
}

/// The idempotence fields of a batch (docs/WIRE.md "Record batch"). Kafka's signed fields are
/// carried as their two's-complement bits, so [`ProducerStamp::NONE`] is Kafka's -1, -1, -1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerStamp {
    pub producer_id: u64,
    pub producer_epoch: u16,
    /// Sequence number of the batch's first record; record `i` has `base_sequence + i`
    /// (wrapping, as Kafka's does).
    pub base_sequence: u32,
}

impl ProducerStamp {
    /// All ones, Kafka's -1: "no producer id, no epoch, no sequence".
    pub const NONE: ProducerStamp = ProducerStamp {
        producer_id: u64::MAX,
        producer_epoch: u16::MAX,
        base_sequence: u32::MAX,
    };

    pub fn is_idempotent(&self) -> bool {
        self.producer_id != ProducerStamp::NONE.producer_id
    }
}

/// The header fields of a batch that was checked once ([`RecordBatchView::parse`]) and then
/// stored or stamped: read straight from the bytes, without walking the records or checking the
/// CRC again. The one reader of a stored batch's header, so nothing else re-parses it by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub leader_epoch: u32,
    pub attributes: u16,
    pub count: u32,
    pub base_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub producer: ProducerStamp,
}

impl BatchHeader {
    /// `None` if `batch` is too short to hold a header.
    pub fn read(batch: &[u8]) -> Option<BatchHeader> {
        if batch.len() < BATCH_HEADER_BYTES {
            return None;
        }
        Some(BatchHeader {
            base_offset: read_u64(batch, BASE_OFFSET_AT)?,
            leader_epoch: read_u32(batch, LEADER_EPOCH_AT)?,
            attributes: read_u16(batch, ATTRIBUTES_AT)?,
            count: read_u32(batch, RECORDS_COUNT_AT)?,
            base_timestamp_ms: read_i64(batch, BASE_TIMESTAMP_AT)?,
            max_timestamp_ms: read_i64(batch, MAX_TIMESTAMP_AT)?,
            producer: ProducerStamp {
                producer_id: read_u64(batch, PRODUCER_ID_AT)?,
                producer_epoch: read_u16(batch, PRODUCER_EPOCH_AT)?,
                base_sequence: read_u32(batch, BASE_SEQUENCE_AT)?,
            },
        })
    }

    /// The offset after the batch's last record (`base_offset + count`); `None` on overflow,
    /// which a batch a leader stamped cannot reach.
    pub fn end_offset(&self) -> Option<u64> {
        self.base_offset.checked_add(u64::from(self.count))
    }

    /// The codec of the records area; `None` for a codec number Kafka does not define.
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_attributes(self.attributes)
    }
}

/// The whole size of the batch at the front of `bytes` (`12 + batchLength`), if its first twelve
/// bytes are there and `batchLength` is not negative. Lets a reader of concatenated batches (a
/// segment, a fetch payload) find where the next one starts.
pub fn peek_batch_bytes(bytes: &[u8]) -> Option<usize> {
    let batch_length = i32::from_be_bytes(read_array(bytes, BATCH_LENGTH_AT)?);
    usize::try_from(batch_length)
        .ok()?
        .checked_add(BATCH_LENGTH_EXCLUDES)
}

/// What the leader writes into a checked batch as it appends it to its log: the batch's base
/// offset and its own epoch (the partition's Raft term, saturated to Kafka's `i32`). Both are
/// outside the CRC, so the batch stays valid. Refuses a base offset that leaves no room for the
/// batch's records below Kafka's `i64::MAX`.
pub fn stamp_leader(
    batch: &mut [u8],
    base_offset: u64,
    leader_epoch: u64,
) -> Result<(), WireError> {
    let header = BatchHeader::read(batch).ok_or(WireError::BatchTooShort {
        available_bytes: batch.len(),
        header_bytes: BATCH_HEADER_BYTES,
    })?;
    let fits = base_offset
        .checked_add(u64::from(header.count))
        .is_some_and(|end| end <= i64::MAX as u64);
    if !fits {
        return Err(WireError::OffsetOverflow {
            base_offset,
            count: header.count,
        });
    }
    let leader_epoch = u32::try_from(leader_epoch.min(i32::MAX as u64)).unwrap_or(i32::MAX as u32);
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
    Ok(())
}

/// Writes a producer stamp into a finished batch and recomputes its CRC (the stamp is under
/// it). The idempotent producer stamps a batch when it dispatches it, so sequence numbers follow
/// dispatch order and a producer that had to start over with a new id can restamp.
pub fn set_producer_stamp(batch: &mut [u8], stamp: ProducerStamp) -> Result<(), WireError> {
    if batch.len() < BATCH_HEADER_BYTES {
        return Err(WireError::BatchTooShort {
            available_bytes: batch.len(),
            header_bytes: BATCH_HEADER_BYTES,
        });
    }
    batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&stamp.producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2]
        .copy_from_slice(&stamp.producer_epoch.to_be_bytes());
    batch[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4]
        .copy_from_slice(&stamp.base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_COVERS_FROM..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

// Big-endian readers that return None instead of panicking when `bytes` is too short.
fn read_array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}
fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    read_array(bytes, at).map(u16::from_be_bytes)
}
fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    read_array(bytes, at).map(u32::from_be_bytes)
}
fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    read_array(bytes, at).map(u64::from_be_bytes)
}
fn read_i64(bytes: &[u8], at: usize) -> Option<i64> {
    read_array(bytes, at).map(i64::from_be_bytes)
}

#[cfg(test)]
mod tests;
