//! Variable-length integers inside records: unsigned LEB128 and its zigzag signed form.
//!
//! LEB128 stores seven bits per byte, least significant group first; the high bit of a byte says
//! "another byte follows". Zigzag maps signed to unsigned so small magnitudes stay short:
//! `0 -> 0, -1 -> 1, 1 -> 2, -2 -> 3, ...`. Worked example: `300` is `ac 02`; zigzag `-1` is
//! `01`; zigzag `-200` is `8f 03`.
//!
//! Decoding is total: a varint longer than ten bytes, or whose tenth byte carries bits beyond
//! the 64th, is [`WireError::VarintOverflow`]; one cut off by the end of the input is
//! [`WireError::VarintTruncated`]. Non-minimal encodings (`80 00` for zero) are accepted: the
//! batch CRC already pins the producer's exact bytes, so there is nothing to canonicalise.

use super::error::WireError;

/// Most bytes a `u64` takes as LEB128 (`ceil(64 / 7)`).
pub const MAX_VARINT_BYTES: usize = 10;

/// Appends `value` as unsigned LEB128.
pub fn put_unsigned(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends `value` zigzag-encoded, then as unsigned LEB128.
pub fn put_signed(out: &mut Vec<u8>, value: i64) {
    put_unsigned(out, zigzag_encode(value));
}

/// Bytes `value` takes as unsigned LEB128.
pub const fn unsigned_len(value: u64) -> usize {
    // Bits needed, rounded up to whole seven-bit groups; zero still takes one byte.
    let significant_bits = 64 - (value | 1).leading_zeros() as usize;
    significant_bits.div_ceil(7)
}

/// Bytes `value` takes zigzag-encoded.
pub const fn signed_len(value: i64) -> usize {
    unsigned_len(zigzag_encode(value))
}

pub const fn zigzag_encode(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

pub const fn zigzag_decode(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Reads an unsigned LEB128 from the front of `input`; returns it and the bytes it took.
pub fn get_unsigned(input: &[u8]) -> Result<(u64, usize), WireError> {
    let mut value = 0u64;
    for (position, &byte) in input.iter().enumerate().take(MAX_VARINT_BYTES) {
        let group = u64::from(byte & 0x7f);
        // The tenth byte holds bit 63 only: anything above it would be silently dropped.
        if position == MAX_VARINT_BYTES - 1 && group > 1 {
            return Err(WireError::VarintOverflow);
        }
        value |= group << (7 * position);
        if byte & 0x80 == 0 {
            return Ok((value, position + 1));
        }
    }
    if input.len() >= MAX_VARINT_BYTES {
        Err(WireError::VarintOverflow)
    } else {
        Err(WireError::VarintTruncated)
    }
}

/// Reads a zigzag varint from the front of `input`; returns it and the bytes it took.
pub fn get_signed(input: &[u8]) -> Result<(i64, usize), WireError> {
    let (raw, used_bytes) = get_unsigned(input)?;
    Ok((zigzag_decode(raw), used_bytes))
}

/// Most bytes a 32-bit varint takes (`ceil(32 / 7)`).
pub const MAX_VARINT32_BYTES: usize = 5;

/// Reads a zigzag varint of Kafka's 32-bit kind (lengths, offset deltas, counts): at most five
/// bytes and 32 bits, as Kafka's readers require; a longer or wider one is
/// [`WireError::VarintOverflow`] even where a 64-bit reader would take it.
pub fn get_signed32(input: &[u8]) -> Result<(i32, usize), WireError> {
    let (raw, used_bytes) = get_unsigned(&input[..input.len().min(MAX_VARINT32_BYTES)]).map_err(
        |error| match error {
            // Five bytes all saying "more follows": longer than a 32-bit varint may be.
            WireError::VarintTruncated if input.len() > MAX_VARINT32_BYTES => {
                WireError::VarintOverflow
            }
            other => other,
        },
    )?;
    let raw = u32::try_from(raw).map_err(|_| WireError::VarintOverflow)?;
    Ok((((raw >> 1) as i32) ^ -((raw & 1) as i32), used_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsigned_bytes(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_unsigned(&mut out, value);
        out
    }

    fn signed_bytes(value: i64) -> Vec<u8> {
        let mut out = Vec::new();
        put_signed(&mut out, value);
        out
    }

    #[test]
    fn thirty_two_bit_varints_stop_at_five_bytes_and_32_bits() {
        for value in [
            0i64,
            -1,
            1,
            300,
            -200,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
        ] {
            let bytes = signed_bytes(value);
            assert_eq!(
                get_signed32(&bytes),
                Ok((value as i32, bytes.len())),
                "{value}"
            );
        }
        // Past i32, or six bytes for a small value: Kafka refuses both.
        assert_eq!(
            get_signed32(&signed_bytes(i64::from(i32::MAX) + 1)),
            Err(WireError::VarintOverflow)
        );
        assert_eq!(
            get_signed32(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            Err(WireError::VarintOverflow)
        );
        assert_eq!(get_signed32(&[0x80, 0x80]), Err(WireError::VarintTruncated));
    }

    #[test]
    fn worked_examples_from_the_module_doc() {
        assert_eq!(unsigned_bytes(0), [0x00]);
        assert_eq!(unsigned_bytes(127), [0x7f]);
        assert_eq!(unsigned_bytes(128), [0x80, 0x01]);
        assert_eq!(unsigned_bytes(300), [0xac, 0x02]);
        assert_eq!(signed_bytes(-1), [0x01]);
        assert_eq!(signed_bytes(1), [0x02]);
        assert_eq!(signed_bytes(-200), [0x8f, 0x03]);
        assert_eq!(unsigned_bytes(u64::MAX).len(), MAX_VARINT_BYTES);
    }

    #[test]
    fn lengths_match_the_encoder_at_every_group_boundary() {
        for shift in 0..64 {
            for value in [1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) + 1] {
                assert_eq!(unsigned_len(value), unsigned_bytes(value).len(), "{value}");
                let signed = value as i64;
                assert_eq!(signed_len(signed), signed_bytes(signed).len(), "{signed}");
                assert_eq!(
                    get_unsigned(&unsigned_bytes(value)),
                    Ok((value, unsigned_len(value)))
                );
                assert_eq!(
                    get_signed(&signed_bytes(signed)).map(|(v, _)| v),
                    Ok(signed)
                );
            }
        }
        for value in [i64::MIN, i64::MAX, 0, -1] {
            assert_eq!(get_signed(&signed_bytes(value)).map(|(v, _)| v), Ok(value));
        }
    }

    #[test]
    fn overlong_and_cut_varints_are_errors() {
        assert_eq!(get_unsigned(&[]), Err(WireError::VarintTruncated));
        assert_eq!(get_unsigned(&[0x80, 0x80]), Err(WireError::VarintTruncated));
        assert_eq!(get_unsigned(&[0xff; 10]), Err(WireError::VarintOverflow));
        assert_eq!(get_unsigned(&[0x80; 11]), Err(WireError::VarintOverflow));
        let mut tenth_byte_too_big = vec![0xff; 9];
        tenth_byte_too_big.push(0x02);
        assert_eq!(
            get_unsigned(&tenth_byte_too_big),
            Err(WireError::VarintOverflow)
        );
        assert_eq!(
            get_unsigned(&[0x80, 0x00]),
            Ok((0, 2)),
            "non-minimal is accepted"
        );
    }
}
