//! Wire framing of the peer transport (docs/TRANSPORT.md "Lanes and framing"): the frames carried
//! on a lane and the hello that opens a peer connection. Both decoders are total: short, oversized
//! or garbled bytes give a typed [`DecodeError`], never a panic, and a frame's length is checked
//! against the limit before any buffer is reserved for it.
//!
//! Lane frame (big-endian):
//!
//! ```text
//! +------------+------------+-------------------+
//! | len: u32   | group: u64 | payload: len - 8  |
//! +------------+------------+-------------------+
//! ```
//!
//! `len` counts the bytes after itself (group + payload), so a frame with a 100-byte payload is
//! `4 + 8 + 100 = 112` bytes on the wire and its `len` is 108. The payload is opaque here: the
//! Raft message codec sits on top of it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of the `len` field.
pub const FRAME_LENGTH_BYTES: usize = 4;
/// Bytes of the `group` field.
pub const FRAME_GROUP_BYTES: usize = 8;
/// Bytes before the payload.
pub const FRAME_HEADER_BYTES: usize = FRAME_LENGTH_BYTES + FRAME_GROUP_BYTES;

/// The largest payload representable: `len` is a u32 and includes the group field.
pub const MAX_REPRESENTABLE_PAYLOAD_BYTES: u32 = u32::MAX - FRAME_GROUP_BYTES as u32;

/// One message on a lane: the Raft group it belongs to and its opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneFrame {
    pub group: u64,
    pub payload: Bytes,
}

/// Why bytes from the network could not be decoded. Every variant is the remote's fault: the
/// connection that sent them is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("incomplete: {needed_bytes} more bytes needed")]
    Incomplete { needed_bytes: usize },
    #[error(
        "frame length {length_bytes} is shorter than the {FRAME_GROUP_BYTES}-byte group field"
    )]
    FrameTooShort { length_bytes: u32 },
    #[error("frame payload of {payload_bytes} bytes exceeds the limit of {max_payload_bytes}")]
    FrameTooLarge {
        payload_bytes: u64,
        max_payload_bytes: u32,
    },
    #[error("hello does not start with the Keel magic")]
    BadMagic,
    #[error("hello has unsupported protocol version {version}")]
    UnsupportedVersion { version: u16 },
    #[error("hello has {extra_bytes} trailing bytes")]
    TrailingBytes { extra_bytes: usize },
}

/// Appends one frame to `buffer`.
///
/// Panics if the payload is larger than any frame can carry: callers check
/// `max_payload_bytes` first (a programmer error, not bad input).
pub fn encode_frame(group: u64, payload: &[u8], buffer: &mut impl BufMut) {
    encode_frame_header(group, payload.len(), buffer);
    buffer.put_slice(payload);
}

/// Appends the header of a frame whose `payload_bytes` of payload the caller sends right after
/// it (on the same lane, unmodified): a large payload then goes out without being copied.
///
/// Panics like [`encode_frame`] if no frame can carry that payload.
pub fn encode_frame_header(group: u64, payload_bytes: usize, buffer: &mut impl BufMut) {
    assert!(
        payload_bytes <= MAX_REPRESENTABLE_PAYLOAD_BYTES as usize,
        "payload of {payload_bytes} bytes cannot be framed"
    );
    buffer.put_u32((FRAME_GROUP_BYTES + payload_bytes) as u32);
    buffer.put_u64(group);
}

/// Bytes one frame with `payload_bytes` of payload takes on the wire.
pub fn encoded_frame_bytes(payload_bytes: usize) -> usize {
    FRAME_HEADER_BYTES + payload_bytes
}

/// Splits the first complete frame off `buffer`.
///
/// `Ok(None)` means more bytes are needed (nothing is consumed); the length prefix is checked
/// against `max_payload_bytes` as soon as its four bytes are present, so a hostile length never
/// makes the caller buffer more than one legal frame. The payload shares `buffer`'s allocation.
pub fn decode_frame(
    buffer: &mut BytesMut,
    max_payload_bytes: u32,
) -> Result<Option<LaneFrame>, DecodeError> {
    let Some(length_prefix) = buffer.get(..FRAME_LENGTH_BYTES) else {
        return Ok(None);
    };
    let length_bytes = u32::from_be_bytes(length_prefix.try_into().expect("four bytes"));
    check_frame_length(length_bytes, max_payload_bytes)?;
    let frame_bytes = FRAME_LENGTH_BYTES + length_bytes as usize;
    if buffer.len() < frame_bytes {
        return Ok(None);
    }
    let mut frame = buffer.split_to(frame_bytes);
    frame.advance(FRAME_LENGTH_BYTES);
    let group = frame.get_u64();
    Ok(Some(LaneFrame {
        group,
        payload: frame.freeze(),
    }))
}

/// Decodes exactly one frame from a buffer holding at least that frame. Total, and property-tested
/// like every decoder. On error the buffer's position is unspecified.
pub fn decode_one_frame(
    buffer: &mut impl Buf,
    max_payload_bytes: u32,
) -> Result<LaneFrame, DecodeError> {
    if buffer.remaining() < FRAME_HEADER_BYTES {
        return Err(DecodeError::Incomplete {
            needed_bytes: FRAME_HEADER_BYTES - buffer.remaining(),
        });
    }
    let length_bytes = buffer.get_u32();
    check_frame_length(length_bytes, max_payload_bytes)?;
    let group = buffer.get_u64();
    let payload_bytes = length_bytes as usize - FRAME_GROUP_BYTES;
    if buffer.remaining() < payload_bytes {
        return Err(DecodeError::Incomplete {
            needed_bytes: payload_bytes - buffer.remaining(),
        });
    }
    Ok(LaneFrame {
        group,
        payload: buffer.copy_to_bytes(payload_bytes),
    })
}

fn check_frame_length(length_bytes: u32, max_payload_bytes: u32) -> Result<(), DecodeError> {
    let Some(payload_bytes) = length_bytes.checked_sub(FRAME_GROUP_BYTES as u32) else {
        return Err(DecodeError::FrameTooShort { length_bytes });
    };
    if payload_bytes > max_payload_bytes {
        return Err(DecodeError::FrameTooLarge {
            payload_bytes: u64::from(payload_bytes),
            max_payload_bytes,
        });
    }
    Ok(())
}

/// The first bytes of a peer connection, sent by each side on the hello stream: who the sender
/// says it is. The accepting side checks the claim against the sender's certificate.
///
/// ```text
/// +--------------+--------------+---------------+
/// | magic "KEEL" | version: u16 | node_id: u64  |   14 bytes, big-endian
/// +--------------+--------------+---------------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub node_id: u64,
}

/// Marks a Keel peer hello (and lets a stray protocol fail fast).
pub const HELLO_MAGIC: [u8; 4] = *b"KEEL";
/// Version of the peer protocol this build speaks; bumped on incompatible changes. 2: one
/// group's Raft messages carry entry payloads after a postcard head (group/raft_codec.rs). 3: a
/// partition's Data entries hold the leader's append time and a Kafka RecordBatch v2
/// (partition/entry.rs), which a node of version 2 would misread.
pub const PEER_PROTOCOL_VERSION: u16 = 3;
/// Encoded size of a [`Hello`].
pub const HELLO_BYTES: usize = 4 + 2 + 8;

impl Hello {
    pub fn encode(&self, buffer: &mut impl BufMut) {
        buffer.put_slice(&HELLO_MAGIC);
        buffer.put_u16(PEER_PROTOCOL_VERSION);
        buffer.put_u64(self.node_id);
    }

    /// Decodes a whole hello message: `buffer` must hold exactly one hello.
    pub fn decode(buffer: &mut impl Buf) -> Result<Hello, DecodeError> {
        if buffer.remaining() < HELLO_BYTES {
            return Err(DecodeError::Incomplete {
                needed_bytes: HELLO_BYTES - buffer.remaining(),
            });
        }
        let mut magic = [0_u8; 4];
        buffer.copy_to_slice(&mut magic);
        if magic != HELLO_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = buffer.get_u16();
        if version != PEER_PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let node_id = buffer.get_u64();
        if buffer.has_remaining() {
            return Err(DecodeError::TrailingBytes {
                extra_bytes: buffer.remaining(),
            });
        }
        Ok(Hello { node_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_all(frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut wire = Vec::new();
        for (group, payload) in frames {
            encode_frame(*group, payload, &mut wire);
        }
        wire
    }

    #[test]
    fn frame_layout_is_length_group_payload() {
        let mut wire = Vec::new();
        encode_frame(7, b"abc", &mut wire);
        assert_eq!(
            wire,
            [0, 0, 0, 11, 0, 0, 0, 0, 0, 0, 0, 7, b'a', b'b', b'c']
        );
        assert_eq!(wire.len(), encoded_frame_bytes(3));
    }

    #[test]
    fn oversized_length_is_refused_before_the_payload_arrives() {
        // Only the four length bytes are present: a 4 GiB claim must fail now, not wait.
        let mut buffer = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            decode_frame(&mut buffer, 1024),
            Err(DecodeError::FrameTooLarge {
                payload_bytes: u64::from(u32::MAX) - 8,
                max_payload_bytes: 1024
            })
        );
    }

    #[test]
    fn length_shorter_than_the_group_field_is_refused() {
        let mut buffer = BytesMut::from(&[0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7][..]);
        assert_eq!(
            decode_frame(&mut buffer, 1024),
            Err(DecodeError::FrameTooShort { length_bytes: 7 })
        );
    }

    #[test]
    fn hello_round_trips_and_rejects_garbage() {
        let mut wire = Vec::new();
        Hello { node_id: 42 }.encode(&mut wire);
        assert_eq!(wire.len(), HELLO_BYTES);
        assert_eq!(Hello::decode(&mut &wire[..]), Ok(Hello { node_id: 42 }));
        let mut wrong_version = wire.clone();
        wrong_version[5] = 9;
        assert_eq!(
            Hello::decode(&mut &wrong_version[..]),
            Err(DecodeError::UnsupportedVersion { version: 9 })
        );
        wire.push(0);
        assert_eq!(
            Hello::decode(&mut &wire[..]),
            Err(DecodeError::TrailingBytes { extra_bytes: 1 })
        );
        assert_eq!(
            Hello::decode(&mut &b"HTTP/1.1 200 OK"[..]),
            Err(DecodeError::BadMagic)
        );
    }

    proptest! {
        #[test]
        fn frames_round_trip_whatever_the_read_sizes(
            frames in proptest::collection::vec(
                (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..20),
            read_sizes in proptest::collection::vec(1_usize..64, 1..50),
        ) {
            let wire = encode_all(&frames);
            let mut buffer = BytesMut::new();
            let mut decoded = Vec::new();
            let mut position = 0;
            let mut read_index = 0;
            while position < wire.len() {
                let read_bytes = read_sizes[read_index % read_sizes.len()].min(wire.len() - position);
                read_index += 1;
                buffer.extend_from_slice(&wire[position..position + read_bytes]);
                position += read_bytes;
                while let Some(frame) = decode_frame(&mut buffer, 300).expect("valid frames") {
                    decoded.push((frame.group, frame.payload.to_vec()));
                }
            }
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(&decoded, &frames);

            let mut whole = &wire[..];
            for (group, payload) in &frames {
                let frame = decode_one_frame(&mut whole, 300).expect("valid frame");
                prop_assert_eq!(frame.group, *group);
                prop_assert_eq!(&frame.payload[..], &payload[..]);
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics_and_never_overreads(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            max_payload_bytes in 0_u32..128,
        ) {
            let mut buffer = BytesMut::from(&bytes[..]);
            loop {
                let before_bytes = buffer.len();
                match decode_frame(&mut buffer, max_payload_bytes) {
                    Ok(Some(frame)) => {
                        prop_assert!(frame.payload.len() <= max_payload_bytes as usize);
                        prop_assert_eq!(
                            before_bytes - buffer.len(),
                            encoded_frame_bytes(frame.payload.len())
                        );
                    }
                    Ok(None) => {
                        prop_assert_eq!(buffer.len(), before_bytes);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let _ = decode_one_frame(&mut &bytes[..], max_payload_bytes);
            let _ = Hello::decode(&mut &bytes[..]);
        }
    }
}
