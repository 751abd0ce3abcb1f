//! The codecs of a batch's records area, numbered as Kafka numbers them in the attributes. The
//! broker never calls into this module for a produce or a fetch: it stores and serves compressed
//! batches as they came. Producers compress here, consumers decompress here, and the leader's
//! check of a compressed batch ([`Compression::check_framing`]) reads only its first bytes.
//!
//! Framing, as Kafka's clients write it: gzip is a gzip stream (RFC 1952, several members
//! allowed); snappy is xerial's framing (a 16-byte header, then blocks of `len u32 BE | raw
//! snappy`), and raw snappy is read too, as Kafka's own reader does; lz4 is the LZ4 frame
//! format; zstd is a zstd frame.

use std::io::Read;

use super::super::error::WireError;
use super::ATTR_COMPRESSION_MASK;

/// A codec of the records area (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

/// xerial snappy-java's stream header: magic, then version 1 and compatible version 1.
const XERIAL_SNAPPY_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// xerial's block size: Kafka's Java producer writes 32 KiB blocks.
const SNAPPY_BLOCK_BYTES: usize = 32 * 1024;
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const LZ4_FRAME_MAGIC: &[u8] = &[0x04, 0x22, 0x4d, 0x18];
const ZSTD_FRAME_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// zstd level for producers: its default, a good speed/ratio point for log data.
const ZSTD_LEVEL: i32 = 3;
/// Largest zstd window a consumer accepts: 64 MiB, the decompression bound
/// (`limits::MAX_DECOMPRESSED_BATCH_BYTES`). Level 3 writes windows of a few MiB.
const ZSTD_MAX_WINDOW_LOG: u32 = 26;
const _: () =
    assert!(1 << ZSTD_MAX_WINDOW_LOG >= super::super::limits::MAX_DECOMPRESSED_BATCH_BYTES);

impl Compression {
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec named by a batch's attributes; `None` for codec numbers 5-7.
    pub fn from_attributes(attributes: u16) -> Option<Compression> {
        match attributes & ATTR_COMPRESSION_MASK {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub fn attribute_bits(self) -> u16 {
        self as u16
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// What the leader can check of a compressed records area without decompressing it: that
    /// it starts the way its codec's stream starts. Raw snappy has no magic number, so any
    /// non-empty snappy area passes.
    pub fn check_framing(self, records: &[u8]) -> Result<(), WireError> {
        let magic: &[u8] = match self {
            Compression::None => return Ok(()),
            Compression::Gzip => GZIP_MAGIC,
            Compression::Lz4 => LZ4_FRAME_MAGIC,
            Compression::Zstd => ZSTD_FRAME_MAGIC,
            Compression::Snappy => &[],
        };
        if records.is_empty() || !records.starts_with(magic) {
            return Err(WireError::CompressedFraming { codec: self.name() });
        }
        Ok(())
    }

    /// Compresses a records area for a producer. Writing to a `Vec` cannot fail; a codec
    /// library that fails anyway is reported, never unwrapped.
    pub fn compress(self, records: &[u8]) -> Result<Vec<u8>, WireError> {
        let failed = |error: std::io::Error| WireError::Compress {
            codec: self.name(),
            reason: error.to_string(),
        };
        match self {
            Compression::None => Ok(records.to_vec()),
            Compression::Gzip => {
                use std::io::Write;
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(records).map_err(failed)?;
                encoder.finish().map_err(failed)
            }
            Compression::Snappy => {
                let mut out = Vec::with_capacity(XERIAL_SNAPPY_HEADER.len() + records.len());
                out.extend_from_slice(XERIAL_SNAPPY_HEADER);
                let mut encoder = snap::raw::Encoder::new();
                for block in records.chunks(SNAPPY_BLOCK_BYTES) {
                    let compressed =
                        encoder
                            .compress_vec(block)
                            .map_err(|error| WireError::Compress {
                                codec: self.name(),
                                reason: error.to_string(),
                            })?;
                    let block_bytes =
                        u32::try_from(compressed.len()).map_err(|_| WireError::Compress {
                            codec: self.name(),
                            reason: "block over 4 GiB".into(),
                        })?;
                    out.extend_from_slice(&block_bytes.to_be_bytes());
                    out.extend_from_slice(&compressed);
                }
                Ok(out)
            }
            Compression::Lz4 => {
                use std::io::Write;
                let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
                encoder.write_all(records).map_err(failed)?;
                encoder.finish().map_err(|error| WireError::Compress {
                    codec: self.name(),
                    reason: error.to_string(),
                })
            }
            Compression::Zstd => zstd::bulk::compress(records, ZSTD_LEVEL).map_err(failed),
        }
    }

    /// Decompresses a records area, refusing to produce more than `max_bytes` (a small batch
    /// must not be able to claim gigabytes of a consumer's memory).
    pub fn decompress(self, compressed: &[u8], max_bytes: u64) -> Result<Vec<u8>, WireError> {
        let codec = self.name();
        let failed = |error: std::io::Error| WireError::Decompress {
            codec,
            reason: error.to_string(),
        };
        let mut out = Vec::new();
        match self {
            Compression::None => out.extend_from_slice(compressed),
            Compression::Gzip => {
                flate2::read::MultiGzDecoder::new(compressed)
                    .take(max_bytes.saturating_add(1))
                    .read_to_end(&mut out)
                    .map_err(failed)?;
            }
            Compression::Lz4 => {
                lz4_flex::frame::FrameDecoder::new(compressed)
                    .take(max_bytes.saturating_add(1))
                    .read_to_end(&mut out)
                    .map_err(failed)?;
            }
            Compression::Zstd => {
                let mut decoder =
                    zstd::stream::read::Decoder::with_buffer(compressed).map_err(failed)?;
                // A frame may ask for a window up to 2^31 bytes, allocated before any output:
                // no window larger than the output bound is ever needed.
                decoder
                    .window_log_max(ZSTD_MAX_WINDOW_LOG)
                    .map_err(failed)?;
                decoder
                    .take(max_bytes.saturating_add(1))
                    .read_to_end(&mut out)
                    .map_err(failed)?;
            }
            Compression::Snappy => out = decompress_snappy(compressed, max_bytes)?,
        }
        if out.len() as u64 > max_bytes {
            return Err(WireError::DecompressedTooLarge { codec, max_bytes });
        }
        Ok(out)
    }
}

/// xerial-framed snappy, or raw snappy when the header is absent; every claimed length is
/// checked against `max_bytes` before anything is allocated for it.
fn decompress_snappy(compressed: &[u8], max_bytes: u64) -> Result<Vec<u8>, WireError> {
    let codec = Compression::Snappy.name();
    let failed = |reason: String| WireError::Decompress { codec, reason };
    let too_large = || WireError::DecompressedTooLarge { codec, max_bytes };
    let mut decoder = snap::raw::Decoder::new();
    let Some(mut blocks) = compressed.strip_prefix(&XERIAL_SNAPPY_HEADER[..]) else {
        let claimed = snap::raw::decompress_len(compressed).map_err(|e| failed(e.to_string()))?;
        if claimed as u64 > max_bytes {
            return Err(too_large());
        }
        return decoder
            .decompress_vec(compressed)
            .map_err(|e| failed(e.to_string()));
    };
    let mut out = Vec::new();
    while !blocks.is_empty() {
        let (length, rest) = blocks
            .split_first_chunk::<4>()
            .ok_or_else(|| failed("block length cut off".into()))?;
        let length = u32::from_be_bytes(*length) as usize;
        if length > rest.len() {
            return Err(failed(format!(
                "block of {length} bytes, {} left",
                rest.len()
            )));
        }
        let (block, rest) = rest.split_at(length);
        let claimed = snap::raw::decompress_len(block).map_err(|e| failed(e.to_string()))?;
        if (out.len() as u64).saturating_add(claimed as u64) > max_bytes {
            return Err(too_large());
        }
        let start = out.len();
        out.resize(start + claimed, 0);
        decoder
            .decompress(block, &mut out[start..])
            .map_err(|e| failed(e.to_string()))?;
        blocks = rest;
    }
    Ok(out)
}
