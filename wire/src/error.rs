//! [`WireError`]: every way bytes from a peer (or a caller's arguments to an encoder) can be
//! wrong, as one typed enum. Decoders return it instead of panicking; the broker turns it into
//! an [`ErrorCode`] for the answer with [`WireError::error_code`].

use super::messages::ErrorCode;
use super::topic::TopicNameError;

/// Why bytes are not a valid batch, record or frame, or why a builder refused an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    // ---- record batch: structure ----
    /// Fewer bytes than the fixed batch header.
    #[error(
        "record batch of {available_bytes} bytes is shorter than its {header_bytes}-byte header"
    )]
    BatchTooShort {
        available_bytes: usize,
        header_bytes: usize,
    },
    /// The batch's size (`12 + batchLength`) disagrees with the bytes given (a batch is parsed
    /// from exactly its bytes).
    #[error("batchLength makes the batch {batch_len} bytes, {available_bytes} given")]
    BatchLenMismatch {
        batch_len: u64,
        available_bytes: usize,
    },
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(u8),
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    /// A batch must hold at least one record: its last offset would be undefined otherwise.
    #[error("record batch holds no records")]
    EmptyBatch,
    /// The records area ended after `found` of the `count` records the header declares.
    #[error("record batch header says {declared} records, the records area holds {found}")]
    RecordCountMismatch { declared: u32, found: u32 },
    /// Bytes left in the batch after its `count` records: a wrong count, or garbage.
    #[error("{trailing_bytes} bytes after the {declared} records the header declares")]
    TrailingRecordBytes { declared: u32, trailing_bytes: u64 },
    #[error("record {index} runs past the end of its batch")]
    RecordOverrun { index: u32 },
    /// A record's fields do not exactly fill its `len`.
    #[error("record {index}: fields take {fields_bytes} bytes, its len says {record_len}")]
    RecordLenMismatch {
        index: u32,
        record_len: u64,
        fields_bytes: u64,
    },
    /// A length below -1 (the only negative value, meaning null), or a null where none is
    /// allowed (a header key), or a negative header count.
    #[error("record {index}: invalid {field} length {length}")]
    InvalidLength {
        index: u32,
        field: &'static str,
        length: i64,
    },
    /// Record `index` says it is at another offset delta: a batch's records are `0..count`.
    #[error("record {index} has offset delta {offset_delta}")]
    OffsetDeltaMismatch { index: u32, offset_delta: i64 },
    /// `lastOffsetDelta` must be `count - 1`, and `count` a positive `i32`.
    #[error("lastOffsetDelta {last_offset_delta} does not match {count} records")]
    LastOffsetDeltaMismatch { last_offset_delta: u32, count: u32 },
    #[error("compression codec {0} is not one Kafka defines")]
    UnknownCompression(u16),
    /// The records area does not start as its codec's stream does.
    #[error("records area is not a {codec} stream")]
    CompressedFraming { codec: &'static str },
    #[error("{codec} records area does not decompress: {reason}")]
    Decompress { codec: &'static str, reason: String },
    /// Decompressed, the records would take more than the consumer allows (or the count alone
    /// says so).
    #[error("{codec} records decompress to more than {max_bytes} bytes")]
    DecompressedTooLarge { codec: &'static str, max_bytes: u64 },
    #[error("{codec} compression failed: {reason}")]
    Compress { codec: &'static str, reason: String },
    #[error("record batch attributes {0:#06x} set bits this version does not know")]
    UnknownAttributes(u16),
    /// Keel keeps the producer's timestamps and its own append time beside them (docs/WIRE.md).
    #[error("LogAppendTime batches are not supported")]
    LogAppendTimeUnsupported,
    #[error("transactional batches are not supported yet")]
    TransactionalUnsupported,
    #[error("control batches are not supported yet")]
    ControlBatchUnsupported,
    /// Producer id, epoch and sequence break Kafka's rule: all -1, or all non-negative.
    #[error("invalid producer fields: id {producer_id}, epoch {producer_epoch}, sequence {base_sequence}")]
    InvalidProducerStamp {
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    },
    #[error("record {index}: timestamp overflows i64 milliseconds")]
    TimestampOverflow { index: u32 },
    #[error("max_timestamp_ms {declared} but the largest record timestamp is {found}")]
    MaxTimestampMismatch { declared: i64, found: i64 },
    #[error("varint longer than 64 bits")]
    VarintOverflow,
    #[error("varint cut off by the end of its field")]
    VarintTruncated,
    /// The offset of the last record does not fit in a `u64`.
    #[error("base_offset {base_offset} + {count} records overflows u64")]
    OffsetOverflow { base_offset: u64, count: u32 },

    // ---- limits (docs/WIRE.md "Limits") ----
    #[error("message of {record_bytes} bytes exceeds max_message_bytes {max_message_bytes}")]
    MessageTooLarge {
        record_bytes: u64,
        max_message_bytes: u64,
    },
    #[error("record batch of {batch_bytes} bytes exceeds max_record_batch_bytes {max_record_batch_bytes}")]
    RecordBatchTooLarge {
        batch_bytes: u64,
        max_record_batch_bytes: u64,
    },
    /// The builder's byte budget (or the u32 record count) has no room for this record; finish
    /// the batch and start another. Not an error in the data: a signal to the batcher.
    #[error(
        "record of {record_bytes} bytes does not fit the batch's remaining {remaining_bytes} bytes"
    )]
    BatchFull {
        record_bytes: u64,
        remaining_bytes: u64,
    },
    #[error("invalid limits: {0}")]
    InvalidLimits(&'static str),

    // ---- stream frames (docs/WIRE.md "Client stream frame") ----
    #[error("frame of {frame_bytes} bytes exceeds max_request_bytes {max_frame_bytes}")]
    FrameTooLarge {
        frame_bytes: u64,
        max_frame_bytes: u64,
    },
    /// Not all of the frame is there yet. [`super::frame::FrameDecoder`] turns this into
    /// "wait for more bytes"; for a whole-message decode it means the stream ended early.
    #[error("frame needs {needed_bytes} bytes, {available_bytes} available")]
    FrameTruncated {
        needed_bytes: u64,
        available_bytes: u64,
    },
    /// `frame_len` too small to hold the version byte and `header_len`.
    #[error("frame_len {frame_len} cannot hold the frame's fixed fields")]
    FrameTooShort { frame_len: u32 },
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    #[error("frame header_len {header_len} exceeds the frame's {body_bytes} body bytes")]
    HeaderLenExceedsFrame { header_len: u64, body_bytes: u64 },
    /// Postcard could not read the header, or bytes were left inside the header span.
    #[error("malformed frame header: {0}")]
    MalformedHeader(String),
    /// Postcard could not write the header (a serde impl failed; never for Keel's own types).
    #[error("cannot encode frame header: {0}")]
    HeaderEncode(String),

    #[error(transparent)]
    TopicName(#[from] TopicNameError),
}

impl WireError {
    /// The code the broker answers with when a request's bytes fail to decode or validate.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            WireError::MessageTooLarge { .. } | WireError::RecordBatchTooLarge { .. } => {
                ErrorCode::MessageTooLarge
            }
            WireError::FrameTooLarge { .. } => ErrorCode::RequestTooLarge,
            WireError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            WireError::TopicName(_) => ErrorCode::InvalidTopicName,
            WireError::BatchTooShort { .. }
            | WireError::BatchLenMismatch { .. }
            | WireError::UnsupportedMagic(_)
            | WireError::UnknownAttributes(_)
            | WireError::UnknownCompression(_)
            | WireError::CompressedFraming { .. }
            | WireError::Decompress { .. }
            | WireError::DecompressedTooLarge { .. }
            | WireError::OffsetDeltaMismatch { .. }
            | WireError::LastOffsetDeltaMismatch { .. }
            | WireError::InvalidProducerStamp { .. }
            | WireError::CrcMismatch { .. }
            | WireError::EmptyBatch
            | WireError::RecordCountMismatch { .. }
            | WireError::TrailingRecordBytes { .. }
            | WireError::RecordOverrun { .. }
            | WireError::RecordLenMismatch { .. }
            | WireError::InvalidLength { .. }
            | WireError::TimestampOverflow { .. }
            | WireError::MaxTimestampMismatch { .. }
            | WireError::VarintOverflow
            | WireError::VarintTruncated
            | WireError::OffsetOverflow { .. } => ErrorCode::CorruptBatch,
            WireError::LogAppendTimeUnsupported
            | WireError::TransactionalUnsupported
            | WireError::ControlBatchUnsupported => ErrorCode::UnsupportedForMessageFormat,
            WireError::BatchFull { .. }
            | WireError::Compress { .. }
            | WireError::InvalidLimits(_)
            | WireError::FrameTruncated { .. }
            | WireError::FrameTooShort { .. }
            | WireError::HeaderLenExceedsFrame { .. }
            | WireError::MalformedHeader(_)
            | WireError::HeaderEncode(_) => ErrorCode::Malformed,
        }
    }
}
