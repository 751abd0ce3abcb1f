//! The stream frame (docs/WIRE.md "Client stream frame"): how one request or response travels on a
//! client stream.
//!
//! ```text
//! byte 0             4            5                9                    9 + header_len
//!      | frame_len u32 | version u8 | header_len u32 | header (postcard) | payload (raw) ... |
//! ```
//!
//! Little-endian. `frame_len` counts the bytes AFTER itself, so a frame takes `4 + frame_len`
//! bytes on the stream, and that total is what `max_request_bytes` bounds. `version` is
//! [`PROTOCOL_VERSION`]: ALPN `keel/2` already picks the protocol per connection, and the byte in
//! every frame turns a mixed-up peer into [`WireError::UnsupportedVersion`] instead of a garbled
//! header. The header is a serde type in postcard (requests: [`super::messages::Request`],
//! responses: [`super::messages::Response`]); the payload is raw bytes after it (record
//! batches for produce and fetch, empty otherwise), so a batch is never copied into or out of a
//! serde structure. Its length is what is left: `frame_len - 5 - header_len`.
//!
//! Worked example: header bytes `01 02` and payload `ff` make the 12-byte frame
//! `08 00 00 00 | 02 | 02 00 00 00 | 01 02 | ff` (`frame_len` 8 = 1 + 4 + 2 + 1).
//!
//! Decoding is total and checks `frame_len` against the limit before allocating anything.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::WireError;
use super::limits::RESERVE_AHEAD_BYTES;

/// The version byte of every frame this code writes and the only one it reads. 2: record batches
/// are Kafka's RecordBatch v2 (version 1 carried Keel's own magic-1 batches).
pub const PROTOCOL_VERSION: u8 = 2;
/// ALPN protocol id of client connections (docs/TRANSPORT.md "One endpoint, two ALPNs"); its
/// `/2` matches [`PROTOCOL_VERSION`], so a client of another version is refused at the handshake.
pub const CLIENT_ALPN: &[u8] = b"keel/2";

/// Bytes of the `frame_len` prefix.
pub const FRAME_PREFIX_BYTES: usize = 4;
/// Bytes of the frame before its header: `frame_len`, `version`, `header_len`.
pub const FRAME_FIXED_BYTES: usize = 9;
const _: () = assert!(FRAME_PREFIX_BYTES + 1 + 4 == FRAME_FIXED_BYTES);

/// One decoded frame: a typed header and the raw payload (zero-copy when decoded from `Bytes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<H> {
    pub header: H,
    pub payload: Bytes,
}

impl<H> Frame<H> {
    pub fn new(header: H, payload: Bytes) -> Self {
        Frame { header, payload }
    }
}

impl<H: Serialize> Frame<H> {
    /// Writes the frame into `out`. Fails only if the header's serde impl fails or the frame
    /// cannot be described by a `u32`; the sender checks [`Frame::encoded_bytes`] against the
    /// peer's `max_request_bytes` itself.
    pub fn encode(&self, out: &mut impl BufMut) -> Result<(), WireError> {
        let header = postcard::to_stdvec(&self.header)
            .map_err(|error| WireError::HeaderEncode(error.to_string()))?;
        encode_head(&header, self.payload.len(), out)?;
        out.put_slice(&self.payload);
        Ok(())
    }

    /// Bytes the frame takes on the stream, `frame_len` prefix included.
    pub fn encoded_bytes(&self) -> Result<u64, WireError> {
        let header_bytes = postcard::experimental::serialized_size(&self.header)
            .map_err(|error| WireError::HeaderEncode(error.to_string()))?;
        Ok((FRAME_FIXED_BYTES + header_bytes) as u64 + self.payload.len() as u64)
    }

    /// The frame as two chunks to write one after the other: everything up to the payload,
    /// then the payload itself (shared, not copied). A sender hands both to QUIC as they are:
    /// copying a 256 KiB produce batch into a fresh frame buffer cost the client a copy and a
    /// page fault per page for every request (BENCHMARKS.md).
    pub fn to_chunks(&self) -> Result<[Bytes; 2], WireError> {
        let mut head = BytesMut::new();
        let header = postcard::to_stdvec(&self.header)
            .map_err(|error| WireError::HeaderEncode(error.to_string()))?;
        encode_head(&header, self.payload.len(), &mut head)?;
        Ok([head.freeze(), self.payload.clone()])
    }

    /// The frame as one `Bytes`.
    pub fn to_bytes(&self) -> Result<Bytes, WireError> {
        let mut out = BytesMut::new();
        self.encode(&mut out)?;
        Ok(out.freeze())
    }
}

/// Writes everything of a frame before its payload: prefix, version, header length, header.
fn encode_head(
    header: &[u8],
    payload_bytes: usize,
    out: &mut impl BufMut,
) -> Result<(), WireError> {
    let frame_bytes = (FRAME_FIXED_BYTES + header.len()) as u64 + payload_bytes as u64;
    let frame_len = u32::try_from(frame_bytes - FRAME_PREFIX_BYTES as u64).map_err(|_| {
        WireError::FrameTooLarge {
            frame_bytes,
            max_frame_bytes: u64::from(u32::MAX),
        }
    })?;
    // header.len() < frame_len, which fits in a u32.
    let header_len = header.len() as u32;
    out.put_u32_le(frame_len);
    out.put_u8(PROTOCOL_VERSION);
    out.put_u32_le(header_len);
    out.put_slice(header);
    Ok(())
}

impl<H: DeserializeOwned> Frame<H> {
    /// Reads one whole frame from the front of `input`. A frame larger than `max_frame_bytes`
    /// (prefix included) is rejected from its first four bytes, before anything is allocated; a
    /// frame not wholly in `input` is [`WireError::FrameTruncated`]. On error, how much of
    /// `input` was consumed is unspecified: the stream is unusable after a bad frame.
    pub fn decode(input: &mut impl Buf, max_frame_bytes: u64) -> Result<Self, WireError> {
        let available_bytes = input.remaining() as u64;
        if input.remaining() < FRAME_PREFIX_BYTES {
            return Err(WireError::FrameTruncated {
                needed_bytes: FRAME_PREFIX_BYTES as u64,
                available_bytes,
            });
        }
        let frame_len = input.get_u32_le();
        check_frame_len(frame_len, max_frame_bytes)?;
        if (input.remaining() as u64) < u64::from(frame_len) {
            let needed_bytes = FRAME_PREFIX_BYTES as u64 + u64::from(frame_len);
            return Err(WireError::FrameTruncated {
                needed_bytes,
                available_bytes,
            });
        }
        let version = input.get_u8();
        if version != PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        let header_len = input.get_u32_le();
        let body_bytes = u64::from(frame_len) - (FRAME_FIXED_BYTES - FRAME_PREFIX_BYTES) as u64;
        if u64::from(header_len) > body_bytes {
            return Err(WireError::HeaderLenExceedsFrame {
                header_len: u64::from(header_len),
                body_bytes,
            });
        }
        let header_bytes = input.copy_to_bytes(header_len as usize);
        let (header, unread) = postcard::take_from_bytes::<H>(&header_bytes)
            .map_err(|error| WireError::MalformedHeader(error.to_string()))?;
        if !unread.is_empty() {
            return Err(WireError::MalformedHeader(format!(
                "{} bytes left after the header",
                unread.len()
            )));
        }
        let payload = input.copy_to_bytes((body_bytes - u64::from(header_len)) as usize);
        Ok(Frame { header, payload })
    }
}

/// Rejects a `frame_len` whose frame would exceed the limit or cannot hold the fixed fields.
fn check_frame_len(frame_len: u32, max_frame_bytes: u64) -> Result<(), WireError> {
    let frame_bytes = FRAME_PREFIX_BYTES as u64 + u64::from(frame_len);
    if frame_bytes > max_frame_bytes {
        return Err(WireError::FrameTooLarge {
            frame_bytes,
            max_frame_bytes,
        });
    }
    if (frame_len as usize) < FRAME_FIXED_BYTES - FRAME_PREFIX_BYTES {
        return Err(WireError::FrameTooShort { frame_len });
    }
    Ok(())
}

/// Cuts frames off a stream's receive buffer as their bytes arrive.
///
/// ```
/// use bytes::BytesMut;
/// use keel_wire::frame::{Frame, FrameDecoder};
///
/// let bytes = Frame::new(7u32, bytes::Bytes::from_static(b"payload")).to_bytes()?;
/// let decoder = FrameDecoder::new(16 << 20);
/// let mut buffer = BytesMut::new();
/// buffer.extend_from_slice(&bytes[..5]);
/// assert_eq!(decoder.decode::<u32>(&mut buffer)?, None); // more bytes needed
/// buffer.extend_from_slice(&bytes[5..]);
/// assert_eq!(decoder.decode::<u32>(&mut buffer)?.map(|frame| frame.header), Some(7));
/// # Ok::<(), keel_wire::WireError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDecoder {
    max_frame_bytes: u64,
}

impl FrameDecoder {
    /// A decoder refusing frames over `max_frame_bytes` (the receiver's `max_request_bytes`).
    pub fn new(max_frame_bytes: u64) -> Self {
        FrameDecoder { max_frame_bytes }
    }

    /// Takes the first frame off `buffer` if all of it has arrived; `Ok(None)` (buffer
    /// untouched, except that it reserves room for up to [`RESERVE_AHEAD_BYTES`] more) if more
    /// bytes are needed. An oversized `frame_len` is an error as soon as its four bytes are in.
    pub fn decode<H: DeserializeOwned>(
        &self,
        buffer: &mut BytesMut,
    ) -> Result<Option<Frame<H>>, WireError> {
        let Some(prefix) = buffer.get(..FRAME_PREFIX_BYTES) else {
            return Ok(None);
        };
        let frame_len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        check_frame_len(frame_len, self.max_frame_bytes)?;
        let frame_bytes = FRAME_PREFIX_BYTES + frame_len as usize;
        if buffer.len() < frame_bytes {
            // Room for what is coming, but at most RESERVE_AHEAD_BYTES at a time: four bytes from
            // a peer must not pin max_frame_bytes of memory before the rest actually arrives.
            buffer.reserve((frame_bytes - buffer.len()).min(RESERVE_AHEAD_BYTES));
            return Ok(None);
        }
        let mut frame = buffer.split_to(frame_bytes).freeze();
        Frame::decode(&mut frame, self.max_frame_bytes).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_the_frame_and_the_payload_is_not_copied() {
        let payload = Bytes::from(vec![7u8; 4096]);
        let frame = Frame::new((1u8, 2u8), payload.clone());
        let [head, body] = frame.to_chunks().unwrap();
        assert_eq!(
            [&head[..], &body[..]].concat(),
            &frame.to_bytes().unwrap()[..]
        );
        assert_eq!(
            body.as_ptr(),
            payload.as_ptr(),
            "the payload chunk shares the caller's bytes"
        );
    }

    #[test]
    fn worked_example_from_the_module_doc() {
        // A (u8, u8) header serialises as its two bytes.
        let frame = Frame::new((1u8, 2u8), Bytes::from_static(&[0xff]));
        let bytes = frame.to_bytes().unwrap();
        assert_eq!(&bytes[..], &[8, 0, 0, 0, 2, 2, 0, 0, 0, 1, 2, 0xff]);
        assert_eq!(frame.encoded_bytes(), Ok(12));
        assert_eq!(Frame::<(u8, u8)>::decode(&mut bytes.clone(), 12), Ok(frame));
    }

    #[test]
    fn oversized_frame_is_rejected_from_its_prefix_alone() {
        let mut prefix = BytesMut::from(&(1u32 << 30).to_le_bytes()[..]);
        let decoder = FrameDecoder::new(16 << 20);
        let error = decoder.decode::<u8>(&mut prefix).unwrap_err();
        assert_eq!(
            error,
            WireError::FrameTooLarge {
                frame_bytes: (1 << 30) + 4,
                max_frame_bytes: 16 << 20
            }
        );
        assert!(
            prefix.capacity() < 1024,
            "nothing was reserved for the oversized frame"
        );
        assert!(matches!(
            Frame::<u8>::decode(&mut &(u32::MAX.to_le_bytes())[..], 16 << 20),
            Err(WireError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn wrong_version_header_overrun_and_trailing_header_bytes_are_errors() {
        let good = Frame::new(5u8, Bytes::new()).to_bytes().unwrap();
        let mut wrong_version = good.to_vec();
        // Version 1: a client from before Kafka's batch format.
        wrong_version[4] = 1;
        assert_eq!(
            Frame::<u8>::decode(&mut &wrong_version[..], 1 << 20),
            Err(WireError::UnsupportedVersion(1))
        );
        let mut header_overrun = good.to_vec();
        header_overrun[5] = 9;
        assert!(matches!(
            Frame::<u8>::decode(&mut &header_overrun[..], 1 << 20),
            Err(WireError::HeaderLenExceedsFrame { .. })
        ));
        // A u16 header of two bytes read as a u8 header leaves one byte over.
        let two_byte_header = Frame::new(300u16, Bytes::new()).to_bytes().unwrap();
        assert!(matches!(
            Frame::<u8>::decode(&mut &two_byte_header[..], 1 << 20),
            Err(WireError::MalformedHeader(_))
        ));
        assert_eq!(
            Frame::<u8>::decode(&mut &[5u8, 0, 0, 0][..], 1 << 20),
            Err(WireError::FrameTruncated {
                needed_bytes: 9,
                available_bytes: 4
            })
        );
        assert_eq!(
            Frame::<u8>::decode(&mut &[0u8, 0, 0, 0][..], 1 << 20),
            Err(WireError::FrameTooShort { frame_len: 0 })
        );
    }
}
