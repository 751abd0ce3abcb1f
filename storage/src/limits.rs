//! Every capacity, cap and buffer size keel-storage uses, with the reason for its value: the
//! defaults of [`LogOptions`](crate::LogOptions) and the bounds that keep a garbled file from
//! turning into a huge allocation.

use crate::frame::FRAME_HEADER_BYTES;
use crate::segment::SEGMENT_HEADER_BYTES;

/// Default size of one segment file: its length from creation on, but a sparse file whose disk
/// blocks are reserved in [`SEGMENT_EXTENT_BYTES`] steps as frames approach them.
pub const DEFAULT_SEGMENT_BYTES: u64 = 128 << 20;
/// How much disk a segment reserves (fallocate) at a time ahead of its writes. Reserving before
/// writing keeps "no space" an error of the reservation, which leaves the log unchanged, and
/// never of a write (after which the page cache state is unknown). Small enough that a node with
/// thousands of mostly idle partitions holds megabytes per partition, not whole segments; large
/// enough that a busy partition reserves a few hundred times per gigabyte.
pub const SEGMENT_EXTENT_BYTES: u64 = 1 << 20;
/// What a segment created empty reserves: the page its header is in. An idle partition costs
/// this much disk, not an extent.
pub const EMPTY_SEGMENT_RESERVED_BYTES: u64 = 4096;
/// Default payload limit: a full record batch (`max_record_batch_bytes`, 4 MiB, docs/WIRE.md
/// "Limits") plus room for the broker's entry envelope.
pub const DEFAULT_MAX_ENTRY_BYTES: u32 = 8 << 20;
/// Default distance between two sparse index slots.
pub const DEFAULT_INDEX_INTERVAL_BYTES: u32 = 4096;
/// Byte positions in `.index` / `.offsets` slots are `u32`, so a segment cannot be larger.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;

const _: () = assert!(
    DEFAULT_SEGMENT_BYTES
        >= SEGMENT_HEADER_BYTES as u64 + FRAME_HEADER_BYTES as u64 + DEFAULT_MAX_ENTRY_BYTES as u64
);
const _: () = assert!(DEFAULT_SEGMENT_BYTES <= MAX_SEGMENT_BYTES);

/// Largest entry index the log accepts (`reset` and file names): far beyond any real log, and
/// low enough that index arithmetic (`last_index + 1`, `base + relative_index`) never wraps.
pub const MAX_INDEX: u64 = u64::MAX / 2;

/// Largest record body accepted on load: these files are small by design, and a garbled length
/// must not make a reader allocate gigabytes.
pub const MAX_RECORD_BODY_BYTES: usize = 1 << 20;

/// Membership configurations are a few hundred bytes; the cap keeps a garbled length field
/// from turning into a huge allocation before its CRC is checked.
pub const MAX_CONFIGURATION_BYTES: u32 = 1024 * 1024;

/// How much a snapshot `open` reads at a time while checking the file CRC: large enough that the
/// read calls cost little, small enough not to hold a whole snapshot in memory.
pub const SNAPSHOT_VERIFY_CHUNK_BYTES: usize = 64 * 1024;

/// Zeroes written per positioned write when a segment's tail is cleared: one static buffer of
/// this size serves every call, so clearing allocates nothing.
pub const ZERO_FILL_CHUNK_BYTES: usize = 64 << 10;

/// Block a torn-tail scan ORs together before searching it byte by byte: big enough for the fold
/// to vectorise well, small enough that the final byte search stays short.
pub const NONZERO_SCAN_BLOCK_BYTES: usize = 64 << 10;
