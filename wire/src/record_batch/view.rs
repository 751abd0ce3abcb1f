//! Reading batches: [`RecordBatchView`] checks one batch's bytes once (header, CRC, attributes,
//! and for an uncompressed batch every record's framing) and then answers questions about it
//! without re-parsing; [`RecordBatchView::decode`] gives its records, decompressing first if
//! needed; [`RecordBatches`] walks a run of concatenated batches (a fetch payload).

use bytes::Bytes;

use super::super::error::WireError;
use super::super::limits::{Limits, MAX_DECOMPRESSED_BATCH_BYTES};
use super::super::varint;
use super::*;

/// The fewest bytes a record takes: length, attributes, timestamp delta, offset delta, key
/// length, value length and header count, one byte each.
const MIN_RECORD_BYTES: u64 = 7;

/// A batch whose bytes were checked by [`RecordBatchView::parse`]. Cheap to clone (the bytes are
/// shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatchView {
    bytes: Bytes,
    header: BatchHeader,
    compression: Compression,
    /// Encoded size of the largest record, for [`RecordBatchView::validate`] without a rescan;
    /// 0 for a compressed batch (its records are not looked at until decoded).
    largest_record_bytes: u64,
}

impl RecordBatchView {
    /// Checks `bytes` as exactly one batch: header, magic, CRC, attributes, counts, producer
    /// fields; then, uncompressed, every record's framing (lengths inside their bounds, offset
    /// deltas `0..count`, `count` records exactly filling the batch, `maxTimestamp` equal to the
    /// largest), or, compressed, that the records area starts as its codec's stream does.
    /// Total: any input gives a view or a [`WireError`].
    pub fn parse(bytes: Bytes) -> Result<Self, WireError> {
        let (header, compression) = check_header(&bytes)?;
        let records = &bytes[BATCH_HEADER_BYTES..];
        let largest_record_bytes = if compression == Compression::None {
            let walk = check_records(records, header.base_timestamp_ms, header.count)?;
            if walk.max_timestamp_ms != header.max_timestamp_ms {
                return Err(WireError::MaxTimestampMismatch {
                    declared: header.max_timestamp_ms,
                    found: walk.max_timestamp_ms,
                });
            }
            walk.largest_record_bytes
        } else {
            compression.check_framing(records)?;
            0
        };
        Ok(RecordBatchView {
            bytes,
            header,
            compression,
            largest_record_bytes,
        })
    }

    /// Checks the batch against the size limits of docs/WIRE.md "Limits".
    pub fn validate(&self, limits: &Limits) -> Result<(), WireError> {
        let batch_bytes = self.size_bytes();
        if batch_bytes > limits.max_record_batch_bytes {
            return Err(WireError::RecordBatchTooLarge {
                batch_bytes,
                max_record_batch_bytes: limits.max_record_batch_bytes,
            });
        }
        if self.largest_record_bytes > limits.max_message_bytes {
            return Err(WireError::MessageTooLarge {
                record_bytes: self.largest_record_bytes,
                max_message_bytes: limits.max_message_bytes,
            });
        }
        Ok(())
    }

    /// [`RecordBatchView::parse`] then [`RecordBatchView::validate`], rejecting an oversized
    /// batch before spending a CRC on it: what the broker runs on a produce payload.
    pub fn parse_within(bytes: Bytes, limits: &Limits) -> Result<Self, WireError> {
        if bytes.len() as u64 > limits.max_record_batch_bytes {
            return Err(WireError::RecordBatchTooLarge {
                batch_bytes: bytes.len() as u64,
                max_record_batch_bytes: limits.max_record_batch_bytes,
            });
        }
        let view = Self::parse(bytes)?;
        view.validate(limits)?;
        Ok(view)
    }

    /// The batch's bytes, exactly as parsed.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    pub fn size_bytes(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Every header field, as read at parse time.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn base_offset(&self) -> u64 {
        self.header.base_offset
    }

    /// The epoch of the leader that appended the batch ([`NO_LEADER_EPOCH`] before that).
    pub fn leader_epoch(&self) -> u32 {
        self.header.leader_epoch
    }

    pub fn count(&self) -> u32 {
        self.header.count
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Offset of the last record minus `base_offset`: `count - 1` (count is at least 1).
    pub fn last_offset_delta(&self) -> u32 {
        self.header.count - 1
    }

    /// Offset of the last record, or [`WireError::OffsetOverflow`] if the stamped base offset
    /// leaves no room for the batch.
    pub fn last_offset(&self) -> Result<u64, WireError> {
        let base_offset = self.base_offset();
        base_offset
            .checked_add(u64::from(self.last_offset_delta()))
            .ok_or(WireError::OffsetOverflow {
                base_offset,
                count: self.header.count,
            })
    }

    pub fn base_timestamp_ms(&self) -> i64 {
        self.header.base_timestamp_ms
    }

    pub fn max_timestamp_ms(&self) -> i64 {
        self.header.max_timestamp_ms
    }

    pub fn producer(&self) -> ProducerStamp {
        self.header.producer
    }

    pub fn crc(&self) -> u32 {
        read_u32(&self.bytes, CRC_AT).unwrap_or(0)
    }

    /// The records, decompressed if the batch is compressed (at most
    /// [`MAX_DECOMPRESSED_BATCH_BYTES`], then checked record by record as `parse` checks an
    /// uncompressed batch). Free for an uncompressed batch: `parse` already checked it.
    pub fn decode(&self) -> Result<DecodedRecords, WireError> {
        let records = self.bytes.slice(BATCH_HEADER_BYTES..);
        if self.compression == Compression::None {
            return Ok(DecodedRecords {
                records,
                base_timestamp_ms: self.header.base_timestamp_ms,
                count: self.header.count,
            });
        }
        let records = Bytes::from(
            self.compression
                .decompress(&records, MAX_DECOMPRESSED_BATCH_BYTES)?,
        );
        check_records(&records, self.header.base_timestamp_ms, self.header.count)?;
        Ok(DecodedRecords {
            records,
            base_timestamp_ms: self.header.base_timestamp_ms,
            count: self.header.count,
        })
    }
}

/// The uncompressed records of one batch, checked; iterate with [`DecodedRecords::iter`].
#[derive(Debug, Clone)]
pub struct DecodedRecords {
    records: Bytes,
    base_timestamp_ms: i64,
    count: u32,
}

impl DecodedRecords {
    /// The records in offset order, borrowed from this buffer.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter {
            remaining: &self.records,
            base_timestamp_ms: self.base_timestamp_ms,
            next_index: 0,
            count: self.count,
        }
    }

    /// Bytes of the uncompressed records.
    pub fn size_bytes(&self) -> u64 {
        self.records.len() as u64
    }

    /// A zero-copy `Bytes` of a slice borrowed from these records (a key or a value), for a
    /// consumer that wants to keep it past their lifetime.
    pub fn slice_ref(&self, subset: &[u8]) -> Bytes {
        self.records.slice_ref(subset)
    }
}

/// One record of a decoded batch, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Index in the batch: the record's offset is `base_offset + offset_delta`.
    pub offset_delta: u32,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    header_count: u32,
    /// The encoded headers, already checked.
    headers: &'a [u8],
}

impl<'a> RecordView<'a> {
    pub fn header_count(&self) -> u32 {
        self.header_count
    }

    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            remaining: self.headers,
            left: self.header_count,
        }
    }
}

/// The records of a [`DecodedRecords`], in offset order.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    remaining: &'a [u8],
    base_timestamp_ms: i64,
    next_index: u32,
    count: u32,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = RecordView<'a>;

    fn next(&mut self) -> Option<RecordView<'a>> {
        if self.next_index == self.count {
            return None;
        }
        // These exact bytes were decoded successfully before; an error here is impossible, and
        // if it ever happened the iterator ends rather than panicking in a decode path.
        let (record, record_bytes) =
            decode_record(self.remaining, self.base_timestamp_ms, self.next_index).ok()?;
        self.remaining = &self.remaining[record_bytes..];
        self.next_index += 1;
        Some(record)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.count - self.next_index) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for RecordIter<'_> {}

/// The headers of one record: `(key, value)` pairs in the order the producer gave them.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    remaining: &'a [u8],
    left: u32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        if self.left == 0 {
            return None;
        }
        let (key, rest) = take_nullable(self.remaining).ok()?;
        let (value, rest) = take_nullable(rest).ok()?;
        self.remaining = rest;
        self.left -= 1;
        Some(Header { key: key?, value })
    }
}

/// The batches of a run of concatenated batches (a fetch payload, a span of a segment), each
/// parsed in full. Yields an error, then stops, at the first bad or cut-off batch.
#[derive(Debug, Clone)]
pub struct RecordBatches {
    remaining: Bytes,
}

impl RecordBatches {
    pub fn new(bytes: Bytes) -> Self {
        RecordBatches { remaining: bytes }
    }
}

impl Iterator for RecordBatches {
    type Item = Result<RecordBatchView, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining.is_empty() {
            return None;
        }
        let available_bytes = self.remaining.len();
        let batch_bytes = match peek_batch_bytes(&self.remaining) {
            Some(batch_bytes) if batch_bytes >= BATCH_HEADER_BYTES => batch_bytes,
            _ => {
                self.remaining.clear();
                return Some(Err(WireError::BatchTooShort {
                    available_bytes,
                    header_bytes: BATCH_HEADER_BYTES,
                }));
            }
        };
        if batch_bytes > available_bytes {
            self.remaining.clear();
            return Some(Err(WireError::BatchLenMismatch {
                batch_len: batch_bytes as u64,
                available_bytes,
            }));
        }
        let batch = self.remaining.split_to(batch_bytes);
        let parsed = RecordBatchView::parse(batch);
        if parsed.is_err() {
            self.remaining.clear();
        }
        Some(parsed)
    }
}

/// Checks everything in the header: size, `batchLength` against the bytes given, magic (first: a
/// different format may checksum differently), CRC, attributes, counts, producer fields.
fn check_header(bytes: &[u8]) -> Result<(BatchHeader, Compression), WireError> {
    let available_bytes = bytes.len();
    let too_short = || WireError::BatchTooShort {
        available_bytes,
        header_bytes: BATCH_HEADER_BYTES,
    };
    if available_bytes < BATCH_HEADER_BYTES {
        return Err(too_short());
    }
    let batch_bytes = peek_batch_bytes(bytes).ok_or_else(too_short)?;
    if batch_bytes != available_bytes {
        return Err(WireError::BatchLenMismatch {
            batch_len: batch_bytes as u64,
            available_bytes,
        });
    }
    let magic = bytes[MAGIC_AT];
    if magic != MAGIC {
        return Err(WireError::UnsupportedMagic(magic));
    }
    let stored = read_u32(bytes, CRC_AT).ok_or_else(too_short)?;
    let computed = crc32c::crc32c(&bytes[CRC_COVERS_FROM..]);
    if stored != computed {
        return Err(WireError::CrcMismatch { stored, computed });
    }
    let header = BatchHeader::read(bytes).ok_or_else(too_short)?;
    let compression = check_attributes(header.attributes)?;
    if header.count == 0 {
        return Err(WireError::EmptyBatch);
    }
    let last_offset_delta = read_u32(bytes, LAST_OFFSET_DELTA_AT).ok_or_else(too_short)?;
    if header.count > i32::MAX as u32 || last_offset_delta != header.count - 1 {
        return Err(WireError::LastOffsetDeltaMismatch {
            last_offset_delta,
            count: header.count,
        });
    }
    if compression != Compression::None
        && u64::from(header.count) * MIN_RECORD_BYTES > MAX_DECOMPRESSED_BATCH_BYTES
    {
        return Err(WireError::DecompressedTooLarge {
            codec: compression.name(),
            max_bytes: MAX_DECOMPRESSED_BATCH_BYTES,
        });
    }
    check_producer(header.producer)?;
    Ok((header, compression))
}

/// Keel stores only plain and compressed data batches; what the other bits ask for is not built
/// yet, and storing a batch whose meaning it ignores would mislead its consumers.
fn check_attributes(attributes: u16) -> Result<Compression, WireError> {
    let compression = Compression::from_attributes(attributes).ok_or(
        WireError::UnknownCompression(attributes & ATTR_COMPRESSION_MASK),
    )?;
    if attributes & ATTR_LOG_APPEND_TIME != 0 {
        return Err(WireError::LogAppendTimeUnsupported);
    }
    if attributes & ATTR_TRANSACTIONAL != 0 {
        return Err(WireError::TransactionalUnsupported);
    }
    if attributes & ATTR_CONTROL != 0 {
        return Err(WireError::ControlBatchUnsupported);
    }
    let known = ATTR_COMPRESSION_MASK | ATTR_LOG_APPEND_TIME | ATTR_TRANSACTIONAL | ATTR_CONTROL;
    if attributes & !known != 0 {
        return Err(WireError::UnknownAttributes(attributes));
    }
    Ok(compression)
}

/// Kafka's rule: with a producer id, id, epoch and sequence are non-negative in their signed
/// types. Without one (-1) the other two mean nothing and are not looked at, as Kafka's broker
/// does not (some clients send sequence 0 there).
fn check_producer(producer: ProducerStamp) -> Result<(), WireError> {
    let valid = if producer.producer_id == ProducerStamp::NONE.producer_id {
        true
    } else {
        producer.producer_id <= i64::MAX as u64
            && producer.producer_epoch <= i16::MAX as u16
            && producer.base_sequence <= i32::MAX as u32
    };
    if valid {
        Ok(())
    } else {
        Err(WireError::InvalidProducerStamp {
            producer_id: producer.producer_id as i64,
            producer_epoch: producer.producer_epoch as i16,
            base_sequence: producer.base_sequence as i32,
        })
    }
}

/// What a walk over a records area found.
struct RecordsWalk {
    max_timestamp_ms: i64,
    largest_record_bytes: u64,
}

/// Walks a records area: exactly `count` well-framed records filling it, offset deltas in order.
fn check_records(
    records: &[u8],
    base_timestamp_ms: i64,
    count: u32,
) -> Result<RecordsWalk, WireError> {
    let mut position = 0;
    let mut walk = RecordsWalk {
        max_timestamp_ms: i64::MIN,
        largest_record_bytes: 0,
    };
    for index in 0..count {
        let Some(remaining) = records
            .get(position..)
            .filter(|remaining| !remaining.is_empty())
        else {
            return Err(WireError::RecordCountMismatch {
                declared: count,
                found: index,
            });
        };
        let (record, record_bytes) = decode_record(remaining, base_timestamp_ms, index)?;
        position += record_bytes;
        walk.max_timestamp_ms = walk.max_timestamp_ms.max(record.timestamp_ms);
        walk.largest_record_bytes = walk.largest_record_bytes.max(record_bytes as u64);
    }
    if position != records.len() {
        return Err(WireError::TrailingRecordBytes {
            declared: count,
            trailing_bytes: (records.len() - position) as u64,
        });
    }
    Ok(walk)
}

/// Decodes the record at the front of `input`; returns it and the bytes it took (its `length`
/// varint included). Checks every length against the bytes that remain.
fn decode_record(
    input: &[u8],
    base_timestamp_ms: i64,
    index: u32,
) -> Result<(RecordView<'_>, usize), WireError> {
    let overrun = WireError::RecordOverrun { index };
    let (record_len, len_bytes) = varint::get_signed32(input).map_err(|_| overrun.clone())?;
    let body_end = usize::try_from(record_len)
        .ok()
        .and_then(|record_len| len_bytes.checked_add(record_len))
        .filter(|&body_end| body_end <= input.len())
        .ok_or(overrun.clone())?;
    let body = &input[len_bytes..body_end];
    let record_len = record_len as u64;
    // Inside the body, running out of bytes means the fields overflow the record's length.
    let fields_overrun = || WireError::RecordLenMismatch {
        index,
        record_len,
        fields_bytes: record_len + 1,
    };

    // The record's attributes byte: unused by Kafka's format, read and ignored as Kafka does.
    let rest = body.get(1..).ok_or_else(fields_overrun)?;
    let (timestamp_delta_ms, used) = varint::get_signed(rest).map_err(|_| fields_overrun())?;
    let timestamp_ms = base_timestamp_ms
        .checked_add(timestamp_delta_ms)
        .ok_or(WireError::TimestampOverflow { index })?;
    let rest = &rest[used..];
    let (offset_delta, used) = varint::get_signed32(rest).map_err(|_| fields_overrun())?;
    if i64::from(offset_delta) != i64::from(index) {
        return Err(WireError::OffsetDeltaMismatch {
            index,
            offset_delta: i64::from(offset_delta),
        });
    }
    let rest = &rest[used..];
    let (key, rest) = take_field(rest, index, "key", fields_overrun)?;
    let (value, rest) = take_field(rest, index, "value", fields_overrun)?;
    let (header_count, used) = varint::get_signed32(rest).map_err(|_| fields_overrun())?;
    let header_count = u32::try_from(header_count).map_err(|_| WireError::InvalidLength {
        index,
        field: "header count",
        length: i64::from(header_count),
    })?;
    let headers_start = &rest[used..];
    let mut headers_rest = headers_start;
    for _ in 0..header_count {
        // Each header takes at least two bytes, so a huge declared count fails fast here.
        let (key, after_key) = take_field(headers_rest, index, "header key", fields_overrun)?;
        if key.is_none() {
            return Err(WireError::InvalidLength {
                index,
                field: "header key",
                length: NULL_LENGTH,
            });
        }
        let (_, after_value) = take_field(after_key, index, "header value", fields_overrun)?;
        headers_rest = after_value;
    }
    if !headers_rest.is_empty() {
        let fields_bytes = (body.len() - headers_rest.len()) as u64;
        return Err(WireError::RecordLenMismatch {
            index,
            record_len,
            fields_bytes,
        });
    }
    let record = RecordView {
        offset_delta: index,
        timestamp_ms,
        key,
        value,
        header_count,
        headers: headers_start,
    };
    Ok((record, body_end))
}

/// Splits a nullable `length varint | bytes` field off the front of a record's body: a length
/// below -1 is [`WireError::InvalidLength`], one past the body is `overrun()`.
fn take_field<'a>(
    input: &'a [u8],
    index: u32,
    field: &'static str,
    overrun: impl Fn() -> WireError,
) -> Result<(Option<&'a [u8]>, &'a [u8]), WireError> {
    let (length, used) = varint::get_signed32(input).map_err(|_| overrun())?;
    let length = i64::from(length);
    let rest = &input[used..];
    match length {
        NULL_LENGTH => Ok((None, rest)),
        length if length >= 0 => {
            let length = usize::try_from(length).map_err(|_| overrun())?;
            if length > rest.len() {
                return Err(overrun());
            }
            let (bytes, rest) = rest.split_at(length);
            Ok((Some(bytes), rest))
        }
        length => Err(WireError::InvalidLength {
            index,
            field,
            length,
        }),
    }
}

/// [`take_field`] for bytes already checked by it (the header iterator).
fn take_nullable(input: &[u8]) -> Result<(Option<&[u8]>, &[u8]), WireError> {
    take_field(input, 0, "header", || WireError::VarintTruncated)
}
