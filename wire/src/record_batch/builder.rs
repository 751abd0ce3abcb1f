//! [`RecordBatchBuilder`]: what a producer uses to pack records into one batch. Records are
//! encoded as they are appended, into one buffer that already reserves the header; `finish`
//! compresses the records area if a codec is set, fills the header, computes the CRC once and
//! hands the buffer over as `Bytes`.

use bytes::Bytes;

use super::super::error::WireError;
use super::super::limits::{Limits, BUILDER_MAX_INITIAL_CAPACITY_BYTES};
use super::super::varint;
use super::*;

/// One header of a record: an application-defined key and an optional value. Kafka's clients
/// read header keys as UTF-8 strings; Keel carries any bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: &'a [u8],
    /// `None` is a null value (length -1 on the wire), unlike `Some(b"")`.
    pub value: Option<&'a [u8]>,
}

/// A record to append: borrowed, so appending copies each byte exactly once (into the batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp_ms: i64,
    /// `None` is "no key" (length -1 on the wire), unlike `Some(b"")`.
    pub key: Option<&'a [u8]>,
    /// `None` is a null value (a tombstone, in Kafka's compacted topics).
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header<'a>],
}

/// Packs records into one batch within a byte budget.
///
/// ```
/// use keel_wire::limits::Limits;
/// use keel_wire::record_batch::{Record, RecordBatchBuilder, RecordBatchView};
///
/// let mut builder = RecordBatchBuilder::new(&Limits::default(), 16 * 1024);
/// builder.append(&Record { timestamp_ms: 1_700_000_000_000, key: Some(b"k"), value: Some(b"v"), headers: &[] })?;
/// let batch = RecordBatchView::parse(builder.finish()?)?;
/// assert_eq!(batch.count(), 1);
/// # Ok::<(), keel_wire::WireError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RecordBatchBuilder {
    buffer: Vec<u8>,
    count: u32,
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
    producer: ProducerStamp,
    compression: Compression,
    /// The batch stops taking records at this size (uncompressed), except that its first record
    /// only has to fit `max_record_batch_bytes` (so one big message still gets a batch of its
    /// own). Measuring before compression keeps the decompressed size bounded too.
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
            base_timestamp_ms: 0,
            max_timestamp_ms: i64::MIN,
            producer: ProducerStamp::NONE,
            compression: Compression::None,
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

    /// Sets the codec `finish` compresses the records area with (default none).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Records appended so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The batch's size if it were finished now without compression, header included.
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
        let base_timestamp_ms = if self.is_empty() {
            record.timestamp_ms
        } else {
            self.base_timestamp_ms
        };
        let timestamp_delta_ms = record
            .timestamp_ms
            .checked_sub(base_timestamp_ms)
            .ok_or(WireError::TimestampOverflow { index })?;
        let body_bytes = record_body_bytes(timestamp_delta_ms, index, record);
        let record_bytes = varint::signed_len(body_bytes as i64) as u64 + body_bytes;
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
        // Kafka's count and offset deltas are i32.
        if record_bytes > remaining_bytes || index == i32::MAX as u32 {
            return Err(WireError::BatchFull {
                record_bytes,
                remaining_bytes,
            });
        }

        let start = self.buffer.len();
        self.buffer.reserve(record_bytes as usize);
        varint::put_signed(&mut self.buffer, body_bytes as i64);
        self.buffer.push(0); // record attributes: unused by Kafka's format
        varint::put_signed(&mut self.buffer, timestamp_delta_ms);
        varint::put_signed(&mut self.buffer, i64::from(index));
        put_nullable(&mut self.buffer, record.key);
        put_nullable(&mut self.buffer, record.value);
        varint::put_signed(&mut self.buffer, record.headers.len() as i64);
        for header in record.headers {
            put_nullable(&mut self.buffer, Some(header.key));
            put_nullable(&mut self.buffer, header.value);
        }
        debug_assert_eq!((self.buffer.len() - start) as u64, record_bytes);

        self.count += 1;
        self.base_timestamp_ms = base_timestamp_ms;
        self.max_timestamp_ms = self.max_timestamp_ms.max(record.timestamp_ms);
        Ok(index)
    }

    /// Compresses the records (if a codec is set and it pays), writes the header and CRC and
    /// returns the batch, with base offset 0 and no leader epoch (the leader stamps both). An
    /// empty builder is [`WireError::EmptyBatch`]: a batch holds at least one record.
    pub fn finish(mut self) -> Result<Bytes, WireError> {
        if self.is_empty() {
            return Err(WireError::EmptyBatch);
        }
        let mut compression = self.compression;
        if compression != Compression::None {
            let compressed = compression.compress(&self.buffer[BATCH_HEADER_BYTES..])?;
            if compressed.len() < self.buffer.len() - BATCH_HEADER_BYTES {
                self.buffer.truncate(BATCH_HEADER_BYTES);
                self.buffer.extend_from_slice(&compressed);
            } else {
                // Incompressible records go as they are: never a batch larger than its records.
                compression = Compression::None;
            }
        }
        // append() kept the size within max_record_batch_bytes, which Limits keeps within i32.
        let batch_length =
            i32::try_from(self.buffer.len() - BATCH_LENGTH_EXCLUDES).map_err(|_| {
                WireError::RecordBatchTooLarge {
                    batch_bytes: self.size_bytes(),
                    max_record_batch_bytes: self.max_record_batch_bytes,
                }
            })?;
        let last_offset_delta = self.count - 1;
        let header = &mut self.buffer[..BATCH_HEADER_BYTES];
        header[BASE_OFFSET_AT..BATCH_LENGTH_AT].copy_from_slice(&0u64.to_be_bytes());
        header[BATCH_LENGTH_AT..LEADER_EPOCH_AT].copy_from_slice(&batch_length.to_be_bytes());
        header[LEADER_EPOCH_AT..MAGIC_AT].copy_from_slice(&NO_LEADER_EPOCH.to_be_bytes());
        header[MAGIC_AT] = MAGIC;
        header[ATTRIBUTES_AT..LAST_OFFSET_DELTA_AT]
            .copy_from_slice(&compression.attribute_bits().to_be_bytes());
        header[LAST_OFFSET_DELTA_AT..BASE_TIMESTAMP_AT]
            .copy_from_slice(&last_offset_delta.to_be_bytes());
        header[BASE_TIMESTAMP_AT..MAX_TIMESTAMP_AT]
            .copy_from_slice(&self.base_timestamp_ms.to_be_bytes());
        header[MAX_TIMESTAMP_AT..PRODUCER_ID_AT]
            .copy_from_slice(&self.max_timestamp_ms.to_be_bytes());
        header[PRODUCER_ID_AT..PRODUCER_EPOCH_AT]
            .copy_from_slice(&self.producer.producer_id.to_be_bytes());
        header[PRODUCER_EPOCH_AT..BASE_SEQUENCE_AT]
            .copy_from_slice(&self.producer.producer_epoch.to_be_bytes());
        header[BASE_SEQUENCE_AT..RECORDS_COUNT_AT]
            .copy_from_slice(&self.producer.base_sequence.to_be_bytes());
        header[RECORDS_COUNT_AT..BATCH_HEADER_BYTES].copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&self.buffer[CRC_COVERS_FROM..]);
        self.buffer[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
        Ok(Bytes::from(self.buffer))
    }
}

/// `length varint | bytes`, or length -1 for `None`.
fn put_nullable(buffer: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            varint::put_signed(buffer, bytes.len() as i64);
            buffer.extend_from_slice(bytes);
        }
        None => varint::put_signed(buffer, NULL_LENGTH),
    }
}

fn nullable_bytes(bytes: Option<&[u8]>) -> u64 {
    match bytes {
        Some(bytes) => (varint::signed_len(bytes.len() as i64) + bytes.len()) as u64,
        None => varint::signed_len(NULL_LENGTH) as u64,
    }
}

/// Bytes of a record after its `length` varint.
fn record_body_bytes(timestamp_delta_ms: i64, index: u32, record: &Record<'_>) -> u64 {
    let headers_bytes: u64 = record
        .headers
        .iter()
        .map(|header| nullable_bytes(Some(header.key)) + nullable_bytes(header.value))
        .sum();
    1 + varint::signed_len(timestamp_delta_ms) as u64
        + varint::signed_len(i64::from(index)) as u64
        + nullable_bytes(record.key)
        + nullable_bytes(record.value)
        + varint::signed_len(record.headers.len() as i64) as u64
        + headers_bytes
}
