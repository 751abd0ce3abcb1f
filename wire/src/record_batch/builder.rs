//! [`RecordBatchBuilder`]: what a producer uses to pack records into one batch. Records are
//! encoded as they are appended, into one buffer that already reserves the header; `finish`
//! fills the header, computes the CRC once and hands the buffer over as `Bytes` without a copy.

use bytes::Bytes;

use super::super::error::WireError;
use super::super::limits::{Limits, BUILDER_MAX_INITIAL_CAPACITY_BYTES};
use super::super::varint;
use super::*;

/// One header of a record: an application-defined key/value pair of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// A record to append: borrowed, so appending copies each byte exactly once (into the batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp_ms: i64,
    /// `None` is "no key" (`key_len = -1` on the wire), unlike `Some(b"")`.
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: &'a [Header<'a>],
}

/// Packs records into one batch within a byte budget.
///
/// ```
/// use keel_wire::limits::Limits;
/// use keel_wire::record_batch::{Record, RecordBatchBuilder, RecordBatchView};
///
/// let mut builder = RecordBatchBuilder::new(&Limits::default(), 16 * 1024);
/// builder.append(&Record { timestamp_ms: 1_700_000_000_000, key: Some(b"k"), value: b"v", headers: &[] })?;
/// let batch = RecordBatchView::parse(builder.finish()?)?;
/// assert_eq!(batch.count(), 1);
/// # Ok::<(), keel_wire::WireError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RecordBatchBuilder {
    buffer: Vec<u8>,
    count: u32,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
    producer: ProducerStamp,
    /// The batch stops taking records at this size, except that its first record only has to
    /// fit `max_record_batch_bytes` (so one big message still gets a batch of its own).
    batch_bytes: u64,
    max_message_bytes: u64,
    max_record_batch_bytes: u64,
}

impl RecordBatchBuilder {
    /// A builder aiming for batches of `batch_bytes` (the producer's batching target), never
    /// beyond `limits.max_record_batch_bytes`.
    pub fn new(limits: &Limits, batch_bytes: u64) -> Self {
        let batch_bytes = batch_bytes.min(limits.max_record_batch_bytes);
        // A builder for a small target reserves the target; one for a big target grows as needed
        // (an open batch per partition must not pin its whole target while it sits nearly empty).
        let initial_capacity = usize::try_from(batch_bytes.min(BUILDER_MAX_INITIAL_CAPACITY_BYTES))
            .unwrap_or(0)
            .max(BATCH_HEADER_BYTES);
        let mut buffer = Vec::with_capacity(initial_capacity);
        buffer.resize(BATCH_HEADER_BYTES, 0);
        RecordBatchBuilder {
            buffer,
            count: 0,
            first_timestamp_ms: 0,
            max_timestamp_ms: i64::MIN,
            producer: ProducerStamp::NONE,
            batch_bytes,
            max_message_bytes: limits.max_message_bytes,
            max_record_batch_bytes: limits.max_record_batch_bytes,
        }
    }

    /// Sets the idempotence fields written into the header (default [`ProducerStamp::NONE`]).
    pub fn with_producer(mut self, producer: ProducerStamp) -> Self {
        self.producer = producer;
        self
    }

    /// Records appended so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The batch's size if it were finished now, header included.
    pub fn size_bytes(&self) -> u64 {
        self.buffer.len() as u64
    }

    /// Appends `record`; returns its offset delta (its index in the batch).
    ///
    /// Errors leave the builder unchanged: [`WireError::MessageTooLarge`] (the record can never
    /// be sent), [`WireError::BatchFull`] (finish this batch, append to a new one),
    /// [`WireError::TimestampOverflow`] (its distance to the first timestamp overflows i64).
    pub fn append(&mut self, record: &Record<'_>) -> Result<u32, WireError> {
        let index = self.count;
        let first_timestamp_ms = if self.is_empty() {
            record.timestamp_ms
        } else {
            self.first_timestamp_ms
        };
        let timestamp_delta_ms = record
            .timestamp_ms
            .checked_sub(first_timestamp_ms)
            .ok_or(WireError::TimestampOverflow { index })?;
        let body_bytes = record_body_bytes(timestamp_delta_ms, record);
        let record_bytes = varint::unsigned_len(body_bytes) as u64 + body_bytes;
        if record_bytes > self.max_message_bytes {
            return Err(WireError::MessageTooLarge {
                record_bytes,
                max_message_bytes: self.max_message_bytes,
            });
        }
        let limit_bytes = if self.is_empty() {
            self.max_record_batch_bytes
        } else {
            self.batch_bytes
        };
        let remaining_bytes = limit_bytes.saturating_sub(self.size_bytes());
        if record_bytes > remaining_bytes || index == u32::MAX {
            return Err(WireError::BatchFull {
                record_bytes,
                remaining_bytes,
            });
        }

        let start = self.buffer.len();
        self.buffer.reserve(record_bytes as usize);
        varint::put_unsigned(&mut self.buffer, body_bytes);
        varint::put_signed(&mut self.buffer, timestamp_delta_ms);
        match record.key {
            Some(key) => {
                varint::put_signed(&mut self.buffer, key.len() as i64);
                self.buffer.extend_from_slice(key);
            }
            None => varint::put_signed(&mut self.buffer, ABSENT_KEY_LEN),
        }
        put_bytes(&mut self.buffer, record.value);
        varint::put_unsigned(&mut self.buffer, record.headers.len() as u64);
        for header in record.headers {
            put_bytes(&mut self.buffer, header.key);
            put_bytes(&mut self.buffer, header.value);
        }
        debug_assert_eq!((self.buffer.len() - start) as u64, record_bytes);

        self.count += 1;
        self.first_timestamp_ms = first_timestamp_ms;
        self.max_timestamp_ms = self.max_timestamp_ms.max(record.timestamp_ms);
        Ok(index)
    }

    /// Writes the header and CRC and returns the batch, with `base_offset` 0 (the leader stamps
    /// the real one). An empty builder is [`WireError::EmptyBatch`]: a batch holds at least one
    /// record.
    pub fn finish(mut self) -> Result<Bytes, WireError> {
        if self.is_empty() {
            return Err(WireError::EmptyBatch);
        }
        // append() kept the size within max_record_batch_bytes, which Limits keeps within u32.
        let batch_len =
            u32::try_from(self.buffer.len()).map_err(|_| WireError::RecordBatchTooLarge {
                batch_bytes: self.size_bytes(),
                max_record_batch_bytes: self.max_record_batch_bytes,
            })?;
        let header = &mut self.buffer[..BATCH_HEADER_BYTES];
        header[BASE_OFFSET_AT..BATCH_LEN_AT].copy_from_slice(&0u64.to_le_bytes());
        header[BATCH_LEN_AT..CRC_AT].copy_from_slice(&batch_len.to_le_bytes());
        header[MAGIC_AT] = MAGIC;
        header[FLAGS_AT..COUNT_AT].copy_from_slice(&KNOWN_FLAGS.to_le_bytes());
        header[COUNT_AT..FIRST_TIMESTAMP_AT].copy_from_slice(&self.count.to_le_bytes());
        header[FIRST_TIMESTAMP_AT..MAX_TIMESTAMP_AT]
            .copy_from_slice(&self.first_timestamp_ms.to_le_bytes());
        header[MAX_TIMESTAMP_AT..PRODUCER_ID_AT]
            .copy_from_slice(&self.max_timestamp_ms.to_le_bytes());
        header[PRODUCER_ID_AT..PRODUCER_EPOCH_AT]
            .copy_from_slice(&self.producer.producer_id.to_le_bytes());
        header[PRODUCER_EPOCH_AT..BASE_SEQUENCE_AT]
            .copy_from_slice(&self.producer.producer_epoch.to_le_bytes());
        header[BASE_SEQUENCE_AT..BATCH_HEADER_BYTES]
            .copy_from_slice(&self.producer.base_sequence.to_le_bytes());
        let crc = crc32fast::hash(&self.buffer[CRC_COVERS_FROM..]);
        self.buffer[CRC_AT..MAGIC_AT].copy_from_slice(&crc.to_le_bytes());
        Ok(Bytes::from(self.buffer))
    }
}

fn put_bytes(buffer: &mut Vec<u8>, bytes: &[u8]) {
    varint::put_unsigned(buffer, bytes.len() as u64);
    buffer.extend_from_slice(bytes);
}

fn length_prefixed_bytes(length: usize) -> u64 {
    (varint::unsigned_len(length as u64) + length) as u64
}

/// Bytes of a record after its `len` varint.
fn record_body_bytes(timestamp_delta_ms: i64, record: &Record<'_>) -> u64 {
    let key_bytes = match record.key {
        Some(key) => (varint::signed_len(key.len() as i64) + key.len()) as u64,
        None => varint::signed_len(ABSENT_KEY_LEN) as u64,
    };
    let headers_bytes: u64 = record
        .headers
        .iter()
        .map(|header| {
            length_prefixed_bytes(header.key.len()) + length_prefixed_bytes(header.value.len())
        })
        .sum();
    varint::signed_len(timestamp_delta_ms) as u64
        + key_bytes
        + length_prefixed_bytes(record.value.len())
        + varint::unsigned_len(record.headers.len() as u64) as u64
        + headers_bytes
}
