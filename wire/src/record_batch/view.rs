//! [`RecordBatchView`]: a validated batch over `Bytes`, read in place. `parse` checks the header,
//! the CRC and the framing of every record once; after that, iterating records and headers only
//! slices the buffer (no allocation, no copy) and cannot fail.

use bytes::Bytes;

use super::super::error::WireError;
use super::super::limits::Limits;
use super::super::varint;
use super::*;

/// A record batch whose bytes have been checked. Cheap to clone (shares the `Bytes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatchView {
    bytes: Bytes,
    count: u32,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
    producer: ProducerStamp,
    /// Encoded size of the largest record, for [`RecordBatchView::validate`] without a rescan.
    largest_record_bytes: u64,
}

impl RecordBatchView {
    /// Checks `bytes` as exactly one batch: header, magic, CRC, flags, then the framing of each
    /// record (lengths inside their bounds, `count` records exactly filling the batch, every
    /// timestamp representable, `max_timestamp_ms` equal to the largest). Total: any input gives
    /// a view or a [`WireError`].
    pub fn parse(bytes: Bytes) -> Result<Self, WireError> {
        let header = check_header(&bytes)?;
        let largest_record_bytes = check_records(&bytes[BATCH_HEADER_BYTES..], &header)?;
        Ok(RecordBatchView {
            bytes,
            count: header.count,
            first_timestamp_ms: header.first_timestamp_ms,
            max_timestamp_ms: header.max_timestamp_ms,
            producer: header.producer,
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

    pub fn base_offset(&self) -> u64 {
        // parse() checked the header is there; 0 is unreachable, not a silent default.
        read_u64(&self.bytes, BASE_OFFSET_AT).unwrap_or(0)
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Offset of the last record minus `base_offset`: `count - 1` (count is at least 1).
    pub fn last_offset_delta(&self) -> u32 {
        self.count - 1
    }

    /// Offset of the last record, or [`WireError::OffsetOverflow`] if the stamped base offset
    /// leaves no room for the batch.
    pub fn last_offset(&self) -> Result<u64, WireError> {
        let base_offset = self.base_offset();
        base_offset
            .checked_add(u64::from(self.last_offset_delta()))
            .ok_or(WireError::OffsetOverflow {
                base_offset,
                count: self.count,
            })
    }

    pub fn first_timestamp_ms(&self) -> i64 {
        self.first_timestamp_ms
    }

    pub fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms
    }

    pub fn producer(&self) -> ProducerStamp {
        self.producer
    }

    pub fn crc(&self) -> u32 {
        read_u32(&self.bytes, CRC_AT).unwrap_or(0)
    }

    /// The records in offset order, borrowed from the batch.
    pub fn records(&self) -> RecordIter<'_> {
        RecordIter {
            remaining: &self.bytes[BATCH_HEADER_BYTES..],
            first_timestamp_ms: self.first_timestamp_ms,
            next_index: 0,
            count: self.count,
        }
    }

    /// A zero-copy `Bytes` of a slice borrowed from this batch (a record's key or value), for a
    /// consumer that wants to keep it past the view's lifetime.
    pub fn slice_ref(&self, subset: &[u8]) -> Bytes {
        self.bytes.slice_ref(subset)
    }
}

/// One record of a parsed batch, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Index in the batch: the record's offset is `base_offset + offset_delta`.
    pub offset_delta: u32,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    header_count: u64,
    /// The encoded headers (`(key_len | key | value_len | value)*`), already checked.
    headers: &'a [u8],
}

impl<'a> RecordView<'a> {
    pub fn header_count(&self) -> u64 {
        self.header_count
    }

    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            remaining: self.headers,
            left: self.header_count,
        }
    }
}

/// The records of a [`RecordBatchView`], in offset order.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    remaining: &'a [u8],
    first_timestamp_ms: i64,
    next_index: u32,
    count: u32,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = RecordView<'a>;

    fn next(&mut self) -> Option<RecordView<'a>> {
        if self.next_index == self.count {
            return None;
        }
        // parse() decoded these exact bytes successfully; an error here is impossible, and if it
        // ever happened the iterator ends rather than panicking in a decode path.
        let (record, record_bytes) =
            decode_record(self.remaining, self.first_timestamp_ms, self.next_index).ok()?;
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
    left: u64,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        if self.left == 0 {
            return None;
        }
        let (key, rest) = take_length_prefixed(self.remaining).ok()?;
        let (value, rest) = take_length_prefixed(rest).ok()?;
        self.remaining = rest;
        self.left -= 1;
        Some(Header { key, value })
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
        let batch_len = match peek_batch_len(&self.remaining) {
            Some(batch_len) if batch_len as usize >= BATCH_HEADER_BYTES => batch_len as usize,
            _ => {
                self.remaining.clear();
                return Some(Err(WireError::BatchTooShort {
                    available_bytes,
                    header_bytes: BATCH_HEADER_BYTES,
                }));
            }
        };
        if batch_len > available_bytes {
            self.remaining.clear();
            return Some(Err(WireError::BatchLenMismatch {
                batch_len: batch_len as u64,
                available_bytes,
            }));
        }
        let batch = self.remaining.split_to(batch_len);
        let parsed = RecordBatchView::parse(batch);
        if parsed.is_err() {
            self.remaining.clear();
        }
        Some(parsed)
    }
}

/// The header fields a view keeps.
struct HeaderFields {
    count: u32,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
    producer: ProducerStamp,
}

/// Checks everything in the header: size, `batch_len` against the bytes given, magic (first: a
/// future format may checksum differently), CRC, flags, a non-zero count.
fn check_header(bytes: &[u8]) -> Result<HeaderFields, WireError> {
    let available_bytes = bytes.len();
    let too_short = || WireError::BatchTooShort {
        available_bytes,
        header_bytes: BATCH_HEADER_BYTES,
    };
    if available_bytes < BATCH_HEADER_BYTES {
        return Err(too_short());
    }
    let batch_len = peek_batch_len(bytes).ok_or_else(too_short)?;
    if batch_len as usize != available_bytes {
        return Err(WireError::BatchLenMismatch {
            batch_len: u64::from(batch_len),
            available_bytes,
        });
    }
    let magic = bytes.get(MAGIC_AT).copied().ok_or_else(too_short)?;
    if magic != MAGIC {
        return Err(WireError::UnsupportedMagic(magic));
    }
    let stored = read_u32(bytes, CRC_AT).ok_or_else(too_short)?;
    let computed = crc32fast::hash(bytes.get(CRC_COVERS_FROM..).ok_or_else(too_short)?);
    if stored != computed {
        return Err(WireError::CrcMismatch { stored, computed });
    }
    let flags = read_u16(bytes, FLAGS_AT).ok_or_else(too_short)?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(WireError::UnknownFlags(flags));
    }
    let header = read_header_fields(bytes).ok_or_else(too_short)?;
    if header.count == 0 {
        return Err(WireError::EmptyBatch);
    }
    Ok(header)
}

fn read_header_fields(bytes: &[u8]) -> Option<HeaderFields> {
    Some(HeaderFields {
        count: read_u32(bytes, COUNT_AT)?,
        first_timestamp_ms: read_i64(bytes, FIRST_TIMESTAMP_AT)?,
        max_timestamp_ms: read_i64(bytes, MAX_TIMESTAMP_AT)?,
        producer: ProducerStamp {
            producer_id: read_u64(bytes, PRODUCER_ID_AT)?,
            producer_epoch: read_u16(bytes, PRODUCER_EPOCH_AT)?,
            base_sequence: read_u32(bytes, BASE_SEQUENCE_AT)?,
        },
    })
}

/// Walks the records area: exactly `count` well-framed records filling it, the largest
/// timestamp equal to the header's. Returns the largest record's encoded size.
fn check_records(records: &[u8], header: &HeaderFields) -> Result<u64, WireError> {
    let mut position = 0;
    let mut found_max_timestamp_ms = i64::MIN;
    let mut largest_record_bytes = 0;
    for index in 0..header.count {
        let Some(remaining) = records
            .get(position..)
            .filter(|remaining| !remaining.is_empty())
        else {
            return Err(WireError::RecordCountMismatch {
                declared: header.count,
                found: index,
            });
        };
        let (record, record_bytes) = decode_record(remaining, header.first_timestamp_ms, index)?;
        position += record_bytes;
        found_max_timestamp_ms = found_max_timestamp_ms.max(record.timestamp_ms);
        largest_record_bytes = largest_record_bytes.max(record_bytes as u64);
    }
    if position != records.len() {
        return Err(WireError::TrailingRecordBytes {
            declared: header.count,
            trailing_bytes: (records.len() - position) as u64,
        });
    }
    if found_max_timestamp_ms != header.max_timestamp_ms {
        return Err(WireError::MaxTimestampMismatch {
            declared: header.max_timestamp_ms,
            found: found_max_timestamp_ms,
        });
    }
    Ok(largest_record_bytes)
}

/// Decodes the record at the front of `input`; returns it and the bytes it took (its `len`
/// varint included). Checks every length against the bytes that remain.
fn decode_record(
    input: &[u8],
    first_timestamp_ms: i64,
    index: u32,
) -> Result<(RecordView<'_>, usize), WireError> {
    let overrun = WireError::RecordOverrun { index };
    let (record_len, len_bytes) = varint::get_unsigned(input).map_err(|_| overrun.clone())?;
    let body_end = usize::try_from(record_len)
        .ok()
        .and_then(|record_len| len_bytes.checked_add(record_len))
        .filter(|&body_end| body_end <= input.len())
        .ok_or(overrun.clone())?;
    let body = &input[len_bytes..body_end];
    // Inside the body, running out of bytes means the fields overflow the record's len.
    let fields_overrun = || WireError::RecordLenMismatch {
        index,
        record_len,
        fields_bytes: record_len + 1,
    };

    let (timestamp_delta_ms, used) = varint::get_signed(body).map_err(|_| fields_overrun())?;
    let timestamp_ms = first_timestamp_ms
        .checked_add(timestamp_delta_ms)
        .ok_or(WireError::TimestampOverflow { index })?;
    let rest = &body[used..];

    let (key_len, used) = varint::get_signed(rest).map_err(|_| fields_overrun())?;
    let rest = &rest[used..];
    let (key, rest) = match key_len {
        ABSENT_KEY_LEN => (None, rest),
        key_len if key_len >= 0 => {
            let key_len = usize::try_from(key_len).map_err(|_| fields_overrun())?;
            if key_len > rest.len() {
                return Err(fields_overrun());
            }
            let (key, rest) = rest.split_at(key_len);
            (Some(key), rest)
        }
        key_len => return Err(WireError::InvalidKeyLength { index, key_len }),
    };

    let (value, rest) = take_length_prefixed(rest).map_err(|_| fields_overrun())?;
    let (header_count, used) = varint::get_unsigned(rest).map_err(|_| fields_overrun())?;
    let headers_start = &rest[used..];
    let mut headers_rest = headers_start;
    for _ in 0..header_count {
        // Each header takes at least two bytes, so a huge declared count fails fast here.
        let (_, after_key) = take_length_prefixed(headers_rest).map_err(|_| fields_overrun())?;
        let (_, after_value) = take_length_prefixed(after_key).map_err(|_| fields_overrun())?;
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
    let headers = headers_start;
    let record = RecordView {
        offset_delta: index,
        timestamp_ms,
        key,
        value,
        header_count,
        headers,
    };
    Ok((record, body_end))
}

/// Splits `uvarint length | bytes` off the front of `input`.
fn take_length_prefixed(input: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let (length, used) = varint::get_unsigned(input)?;
    let rest = &input[used..];
    let length = usize::try_from(length).map_err(|_| WireError::VarintOverflow)?;
    if length > rest.len() {
        return Err(WireError::VarintTruncated);
    }
    Ok(rest.split_at(length))
}
