//! The record batch: the unit a producer sends, a Raft `Data` entry carries, the
//! segment stores and a fetch returns, always the same bytes, never re-encoded. docs/WIRE.md has
//! the byte-level specification; this module owns the layout constants and the two operations
//! that touch a batch in place (reading its length, stamping its base offset).
//!
//! ```text
//! byte 0              8            12         16      17       19       23
//!      | base_offset u64 | batch_len u32 | crc32 u32 | magic u8 | flags u16 | count u32 |
//!   23                    31                  39               47                 49               53
//!      | first_timestamp_ms i64 | max_timestamp_ms i64 | producer_id u64 | producer_epoch u16 | base_sequence u32 | records...
//! ```
//!
//! Fixed-width integers are little-endian. `batch_len` counts the WHOLE batch, its own field and
//! base_offset included, so in a run of batches the next starts at `position + batch_len`. The
//! CRC (crc32fast, IEEE) covers bytes `16..batch_len` (magic to the end): the producer computes
//! it once, the leader stamps `base_offset` without recomputing it, and the consumer checks the
//! producer's own checksum. `batch_len` is outside the CRC, but a batch is always parsed from
//! exactly `batch_len` bytes, so a wrong one is caught as a length mismatch or a CRC over the
//! wrong span.
//!
//! Each record (offsets are implicit: record `i` has offset `base_offset + i`):
//!
//! ```text
//! len uvarint | timestamp_delta zigzag | key_len zigzag | key | value_len uvarint | value |
//! header_count uvarint | (header_key_len uvarint | header_key | header_value_len uvarint | header_value)*
//! ```
//!
//! `len` counts the bytes after itself. `timestamp_delta` is the record's timestamp minus
//! `first_timestamp_ms` (signed: producers may send timestamps out of order). `key_len = -1`
//! means "no key" (Kafka's convention), distinct from an empty key (`0`); values and header
//! keys/values are always present, possibly empty.

mod builder;
mod view;

pub use builder::{Header, Record, RecordBatchBuilder};
pub use view::{HeaderIter, RecordBatchView, RecordBatches, RecordIter, RecordView};

use super::error::WireError;

pub const BASE_OFFSET_AT: usize = 0;
pub const BATCH_LEN_AT: usize = 8;
pub const CRC_AT: usize = 12;
pub const MAGIC_AT: usize = 16;
pub const FLAGS_AT: usize = 17;
pub const COUNT_AT: usize = 19;
pub const FIRST_TIMESTAMP_AT: usize = 23;
pub const MAX_TIMESTAMP_AT: usize = 31;
pub const PRODUCER_ID_AT: usize = 39;
pub const PRODUCER_EPOCH_AT: usize = 47;
pub const BASE_SEQUENCE_AT: usize = 49;
/// Bytes of a batch before its first record.
pub const BATCH_HEADER_BYTES: usize = 53;
/// The CRC covers the batch from here (the magic byte) to its end.
pub const CRC_COVERS_FROM: usize = MAGIC_AT;

const _: () = assert!(BASE_OFFSET_AT + 8 == BATCH_LEN_AT && BATCH_LEN_AT + 4 == CRC_AT);
const _: () =
    assert!(CRC_AT + 4 == MAGIC_AT && MAGIC_AT + 1 == FLAGS_AT && FLAGS_AT + 2 == COUNT_AT);
const _: () =
    assert!(COUNT_AT + 4 == FIRST_TIMESTAMP_AT && FIRST_TIMESTAMP_AT + 8 == MAX_TIMESTAMP_AT);
const _: () =
    assert!(MAX_TIMESTAMP_AT + 8 == PRODUCER_ID_AT && PRODUCER_ID_AT + 8 == PRODUCER_EPOCH_AT);
const _: () = assert!(
    PRODUCER_EPOCH_AT + 2 == BASE_SEQUENCE_AT && BASE_SEQUENCE_AT + 4 == BATCH_HEADER_BYTES
);

/// The batch format this code writes and reads. Another value is [`WireError::UnsupportedMagic`].
pub const MAGIC: u8 = 1;
/// Flag bits this version defines: none yet. Bits 0-2 are reserved for a compression codec
/// (later); any set bit is [`WireError::UnknownFlags`] so an old reader never misreads a newer
/// batch.
pub const KNOWN_FLAGS: u16 = 0;

/// `key_len` of a record without a key.
pub const ABSENT_KEY_LEN: i64 = -1;

/// The idempotence fields of a batch (docs/WIRE.md "Record batch"). A producer without idempotence
/// sends [`ProducerStamp::NONE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerStamp {
    pub producer_id: u64,
    pub producer_epoch: u16,
    /// Sequence number of the batch's first record; record `i` has `base_sequence + i`
    /// (wrapping, as Kafka's does).
    pub base_sequence: u32,
}

impl ProducerStamp {
    /// All ones, like Kafka's -1: "no producer id, no epoch, no sequence".
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
    pub count: u32,
    pub first_timestamp_ms: i64,
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
            count: read_u32(batch, COUNT_AT)?,
            first_timestamp_ms: read_i64(batch, FIRST_TIMESTAMP_AT)?,
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
}

/// Reads `batch_len` from the front of a batch, if its first twelve bytes are there. Lets a
/// reader of concatenated batches (a segment, a fetch payload) find where the next one starts.
pub fn peek_batch_len(bytes: &[u8]) -> Option<u32> {
    read_u32(bytes, BATCH_LEN_AT)
}

/// Writes `base_offset` into a batch in place. The CRC does not cover it, so the batch stays
/// valid: this is what the leader does when it appends a producer's batch to its log.
pub fn set_base_offset(batch: &mut [u8], base_offset: u64) -> Result<(), WireError> {
    if batch.len() < BATCH_HEADER_BYTES {
        return Err(WireError::BatchTooShort {
            available_bytes: batch.len(),
            header_bytes: BATCH_HEADER_BYTES,
        });
    }
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_le_bytes());
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
    batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&stamp.producer_id.to_le_bytes());
    batch[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2]
        .copy_from_slice(&stamp.producer_epoch.to_le_bytes());
    batch[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4]
        .copy_from_slice(&stamp.base_sequence.to_le_bytes());
    let crc = crc32fast::hash(&batch[CRC_COVERS_FROM..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

// Little-endian readers that return None instead of panicking when `bytes` is too short.
fn read_array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}
fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    read_array(bytes, at).map(u16::from_le_bytes)
}
fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    read_array(bytes, at).map(u32::from_le_bytes)
}
fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    read_array(bytes, at).map(u64::from_le_bytes)
}
fn read_i64(bytes: &[u8], at: usize) -> Option<i64> {
    read_array(bytes, at).map(i64::from_le_bytes)
}

#[cfg(test)]
mod tests;
