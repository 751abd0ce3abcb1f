//! The entry frame: how one log entry is laid out in a segment (docs/FORMAT.md "Segment log").
//!
//! ```text
//! byte 0        4        8                16               24     25
//!      | len u32 | crc u32 | index u64      | term u64       | kind | payload ...
//! ```
//!
//! All little-endian. `len` counts the WHOLE frame, its own four bytes included, so the next
//! frame starts at `position + len`; the smallest frame (empty payload) has `len == 25`. The CRC
//! (crc32fast, IEEE) covers bytes `8..len`: index, term, kind and payload. `len` itself is not
//! covered, but a wrong `len` makes the CRC run over the wrong bytes, so it fails too.
//!
//! Worked example: index 7, term 2, kind 1, payload `hello` is a 30-byte frame
//! (`25 + 5`) starting `1e 00 00 00`; a frame written at byte 24 of a segment is followed by the
//! next one at byte 54.
//!
//! [`decode`] is total: any byte string gives a frame or a [`FrameError`], never a panic.

/// Bytes of a frame before its payload.
pub const FRAME_HEADER_BYTES: usize = 25;

const LEN_AT: usize = 0;
const CRC_AT: usize = 4;
const INDEX_AT: usize = 8;
const TERM_AT: usize = 16;
const KIND_AT: usize = 24;
const _: () = assert!(LEN_AT + 4 == CRC_AT && CRC_AT + 4 == INDEX_AT);
const _: () = assert!(INDEX_AT + 8 == TERM_AT && TERM_AT + 8 == KIND_AT);
const _: () = assert!(KIND_AT + 1 == FRAME_HEADER_BYTES);

/// Largest payload a frame can describe (its `len` is a `u32`).
pub const MAX_FRAME_PAYLOAD_BYTES: usize = u32::MAX as usize - FRAME_HEADER_BYTES;

/// One decoded frame, borrowing its payload from the bytes it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub index: u64,
    pub term: u64,
    pub kind: u8,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// The frame's `len` field: header plus payload.
    pub fn frame_bytes(&self) -> u64 {
        (FRAME_HEADER_BYTES + self.payload.len()) as u64
    }
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The `len` field is zero: preallocated space that was never written (or was zeroed).
    #[error("zero length field")]
    ZeroLength,
    /// The frame runs past the end of the bytes available.
    #[error("frame of {frame_bytes} bytes, only {available_bytes} available")]
    Truncated {
        frame_bytes: u64,
        available_bytes: u64,
    },
    /// The `len` field is too small to hold a frame header.
    #[error("length field {frame_bytes} below the {FRAME_HEADER_BYTES}-byte minimum")]
    BadLength { frame_bytes: u32 },
    /// The checksum does not match the bytes.
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
}

/// Size of the frame that carries `payload_bytes`.
pub fn encoded_frame_bytes(payload_bytes: usize) -> usize {
    FRAME_HEADER_BYTES + payload_bytes
}

/// Appends the frame of one entry to `out`.
///
/// # Panics
/// If the payload exceeds [`MAX_FRAME_PAYLOAD_BYTES`]; the log checks `max_entry_bytes` first.
pub fn encode(out: &mut Vec<u8>, index: u64, term: u64, kind: u8, payload: &[u8]) {
    assert!(
        payload.len() <= MAX_FRAME_PAYLOAD_BYTES,
        "payload too large"
    );
    let start = out.len();
    let frame_bytes = encoded_frame_bytes(payload.len()) as u32;
    out.extend_from_slice(&frame_bytes.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // crc, filled in below
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&term.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + INDEX_AT..]);
    out[start + CRC_AT..start + INDEX_AT].copy_from_slice(&crc.to_le_bytes());
}

/// The unchecked header fields of a frame, for cheap plausibility checks before the CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub frame_bytes: u32,
    pub index: u64,
    pub term: u64,
}

/// Reads the header fields without checking anything; `None` if fewer than
/// [`FRAME_HEADER_BYTES`] are available.
pub fn peek_header(bytes: &[u8]) -> Option<FrameHeader> {
    let header = bytes.get(..FRAME_HEADER_BYTES)?;
    Some(FrameHeader {
        frame_bytes: read_u32(header, LEN_AT),
        index: read_u64(header, INDEX_AT),
        term: read_u64(header, TERM_AT),
    })
}

/// Decodes and verifies the frame at the start of `bytes` (which may continue past it).
pub fn decode(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    let Some(len_field) = bytes.get(LEN_AT..LEN_AT + 4) else {
        return Err(short_prefix_error(bytes));
    };
    let frame_bytes = read_u32(len_field, 0);
    if frame_bytes == 0 {
        return Err(FrameError::ZeroLength);
    }
    if (frame_bytes as usize) < FRAME_HEADER_BYTES {
        return Err(FrameError::BadLength { frame_bytes });
    }
    let Some(frame) = bytes.get(..frame_bytes as usize) else {
        return Err(FrameError::Truncated {
            frame_bytes: u64::from(frame_bytes),
            available_bytes: bytes.len() as u64,
        });
    };
    let stored = read_u32(frame, CRC_AT);
    let computed = crc32fast::hash(&frame[INDEX_AT..]);
    if stored != computed {
        return Err(FrameError::BadCrc { stored, computed });
    }
    Ok(Frame {
        index: read_u64(frame, INDEX_AT),
        term: read_u64(frame, TERM_AT),
        kind: frame[KIND_AT],
        payload: &frame[FRAME_HEADER_BYTES..],
    })
}

/// Fewer than four bytes left: nothing written there (all zero) or a frame cut short.
fn short_prefix_error(bytes: &[u8]) -> FrameError {
    if bytes.iter().all(|&byte| byte == 0) {
        FrameError::ZeroLength
    } else {
        FrameError::Truncated {
            frame_bytes: u64::from(FRAME_HEADER_BYTES as u32),
            available_bytes: bytes.len() as u64,
        }
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut field = [0; 4];
    field.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(field)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut field = [0; 8];
    field.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn worked_example_matches_the_module_docs() {
        let mut out = Vec::new();
        encode(&mut out, 7, 2, 1, b"hello");
        assert_eq!(out.len(), 30);
        assert_eq!(&out[..4], &[0x1e, 0, 0, 0]);
        assert_eq!(&out[8..16], &7u64.to_le_bytes());
        assert_eq!(out[24], 1);
        let frame = decode(&out).unwrap();
        assert_eq!(frame.payload, b"hello");
        assert_eq!(frame.frame_bytes(), 30);
    }

    #[test]
    fn zeroes_and_short_inputs_are_classified() {
        assert_eq!(decode(&[]), Err(FrameError::ZeroLength));
        assert_eq!(decode(&[0; 3]), Err(FrameError::ZeroLength));
        assert_eq!(decode(&[0; 100]), Err(FrameError::ZeroLength));
        assert!(matches!(decode(&[1, 0]), Err(FrameError::Truncated { .. })));
        assert_eq!(
            decode(&[24, 0, 0, 0]),
            Err(FrameError::BadLength { frame_bytes: 24 })
        );
        let mut out = Vec::new();
        encode(&mut out, 1, 1, 0, b"abc");
        assert!(matches!(
            decode(&out[..out.len() - 1]),
            Err(FrameError::Truncated { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn decode_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let _ = peek_header(&bytes);
        }

        #[test]
        fn encode_then_decode_round_trips(
            index in any::<u64>(), term in any::<u64>(), kind in any::<u8>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            trailing in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut out = Vec::new();
            encode(&mut out, index, term, kind, &payload);
            let frame_bytes = out.len();
            out.extend_from_slice(&trailing);
            let frame = decode(&out).unwrap();
            prop_assert_eq!(frame, Frame { index, term, kind, payload: &payload });
            prop_assert_eq!(frame.frame_bytes() as usize, frame_bytes);
        }

        #[test]
        fn any_flipped_bit_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            bit in any::<proptest::sample::Index>(),
        ) {
            let mut out = Vec::new();
            encode(&mut out, 42, 3, 9, &payload);
            let bit = bit.index(out.len() * 8);
            out[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&out).is_err());
        }
    }
}
