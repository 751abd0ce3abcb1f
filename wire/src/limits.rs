//! The protocol's size limits with their defaults and how they relate, the deadlines both ends
//! agree on, and every other capacity keel-wire uses: codec buffers and the QUIC socket settings.
//!
//! A message (one record) fits in a batch, and a batch fits in a request frame with room for the
//! request header: `max_message_bytes <= max_record_batch_bytes < max_request_bytes`. The broker
//! reads these from its configuration; the client uses the defaults unless told otherwise, and a
//! broker configured tighter answers `MessageTooLarge` / `RequestTooLarge`.

use super::error::WireError;
use super::record_batch::BATCH_HEADER_BYTES;

/// Default largest record, measured as its encoded bytes including its `len` varint (1 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 1024 * 1024;
/// Default largest record batch, header included (4 MiB).
pub const DEFAULT_MAX_RECORD_BATCH_BYTES: u64 = 4 * 1024 * 1024;
/// Most bytes a consumer decompresses one batch's records into. Producers bound a batch by its
/// compressed size, so this is generous (16 default batches), but a few kilobytes of zeros that
/// claim gigabytes stop here.
pub const MAX_DECOMPRESSED_BATCH_BYTES: u64 = 16 * DEFAULT_MAX_RECORD_BATCH_BYTES;
/// Default largest frame on a client stream, its `frame_len` prefix included (16 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 16 * 1024 * 1024;

/// Room a request needs besides its record batch: frame prefix, version, header length and a
/// postcard header with a topic name of at most [`MAX_TOPIC_NAME_BYTES`]. Generous on purpose.
pub const REQUEST_OVERHEAD_BYTES: u64 = 4 * 1024;

/// Longest topic name, in bytes (all allowed characters are ASCII, so bytes = characters).
pub const MAX_TOPIC_NAME_BYTES: usize = 200;

/// How long a client waits for an answer by default. The broker bounds its own waits for a client
/// by it (a `--no-wait` replace-node answers within it), so it lives where both ends read it.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;

/// Bound on a `replace_node` that waits for every group to finish: catching a learner up can take
/// a while. The SDK waits this long; the broker answers a little before it (docs/OPERATIONS.md).
pub const REPLACE_NODE_TIMEOUT_MS: u64 = 30 * 60 * 1000;

/// Most bytes [`FrameDecoder::decode`](crate::frame::FrameDecoder::decode) reserves ahead for a
/// frame still arriving: four bytes from a peer must not pin a whole frame's memory up front.
pub const RESERVE_AHEAD_BYTES: usize = 64 * 1024;

/// Most a new [`RecordBatchBuilder`](crate::RecordBatchBuilder) reserves up front: an open batch
/// per partition must not pin its whole (up to 4 MiB) target while it sits nearly empty.
pub const BUILDER_MAX_INITIAL_CAPACITY_BYTES: u64 = 64 << 10;

/// Kernel buffer asked for on every QUIC socket, each direction. Linux's default (about 208 KiB)
/// holds about 2 ms of a 100 MB/s stream: a receiving task that waits that long for a CPU
/// drops datagrams, and QUIC's loss recovery then shrinks the congestion window for all
/// traffic on the socket. The kernel caps the request at `net.core.rmem_max` / `wmem_max`.
pub const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Largest UDP payload a Keel endpoint sends or accepts, found per path by QUIC's MTU discovery
/// (starting from the 1,200 bytes every path carries, so a 1,500-byte network settles at what
/// it allows). Why larger than Ethernet: on loopback and jumbo-frame networks a 6,000-byte
/// datagram carries five times what a 1,200-byte one does for the same per-packet work
/// (header, encryption call, loss tracking, ACK), and with 1,452-byte datagrams that work was
/// a fifth of the CPU of the 4-producer bench (BENCHMARKS.md, "100,000 msgs/s"). Why not larger: quinn sends up
/// to 10 datagrams in one GSO `sendmsg`, which the kernel refuses past 64 KiB in total
/// (EMSGSIZE, dropped silently by quinn-udp: the long tails of an earlier 16 KiB experiment).
pub const MAX_UDP_PAYLOAD_BYTES: u16 = 6000;

const _: () = assert!(MAX_UDP_PAYLOAD_BYTES as usize * 10 <= 65_507);
const _: () = assert!(
    DEFAULT_MAX_MESSAGE_BYTES + BATCH_HEADER_BYTES as u64 <= DEFAULT_MAX_RECORD_BATCH_BYTES
);
const _: () =
    assert!(DEFAULT_MAX_RECORD_BATCH_BYTES + REQUEST_OVERHEAD_BYTES <= DEFAULT_MAX_REQUEST_BYTES);
const _: () = assert!(DEFAULT_MAX_REQUEST_BYTES <= u32::MAX as u64);

/// The protocol's size limits. Build with [`Limits::default`] and check changes with
/// [`Limits::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_message_bytes: u64,
    pub max_record_batch_bytes: u64,
    pub max_request_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_record_batch_bytes: DEFAULT_MAX_RECORD_BATCH_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

impl Limits {
    /// Checks that the limits nest (a record fits a batch, a batch fits a request) and that each
    /// is representable in its `u32` length field.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.max_message_bytes == 0 {
            return Err(WireError::InvalidLimits(
                "max_message_bytes must be positive",
            ));
        }
        if self.max_message_bytes + BATCH_HEADER_BYTES as u64 > self.max_record_batch_bytes {
            return Err(WireError::InvalidLimits(
                "max_record_batch_bytes must hold a batch header and a max_message_bytes record",
            ));
        }
        if self
            .max_record_batch_bytes
            .saturating_add(REQUEST_OVERHEAD_BYTES)
            > self.max_request_bytes
        {
            return Err(WireError::InvalidLimits(
                "max_request_bytes must hold a max_record_batch_bytes batch and a request header",
            ));
        }
        if self.max_record_batch_bytes > MAX_DECOMPRESSED_BATCH_BYTES {
            return Err(WireError::InvalidLimits(
                "max_record_batch_bytes must not exceed what a consumer decompresses (64 MiB)",
            ));
        }
        if self.max_request_bytes > u64::from(u32::MAX) {
            return Err(WireError::InvalidLimits(
                "max_request_bytes must fit in a u32",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_design() {
        let limits = Limits::default();
        assert_eq!(limits.validate(), Ok(()));
        assert_eq!(limits.max_message_bytes, 1 << 20);
        assert_eq!(limits.max_record_batch_bytes, 4 << 20);
        assert_eq!(limits.max_request_bytes, 16 << 20);
    }

    #[test]
    fn limits_that_do_not_nest_are_rejected() {
        let defaults = Limits::default();
        let message_over_batch = Limits {
            max_message_bytes: defaults.max_record_batch_bytes,
            ..defaults
        };
        assert!(message_over_batch.validate().is_err());
        let batch_over_request = Limits {
            max_record_batch_bytes: defaults.max_request_bytes,
            ..defaults
        };
        assert!(batch_over_request.validate().is_err());
        let request_over_u32 = Limits {
            max_request_bytes: 1 << 33,
            ..defaults
        };
        assert!(request_over_u32.validate().is_err());
        assert!(Limits {
            max_message_bytes: 0,
            ..defaults
        }
        .validate()
        .is_err());
    }
}
