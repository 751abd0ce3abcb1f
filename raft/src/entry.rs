//! Log entries and the hard state: the two things a Raft node writes to disk.
//!
//! `EntryKind` is `u8`-compatible because keel-storage frames store the kind as one byte
//! (docs/FORMAT.md "Segment log"); payloads are `bytes::Bytes` so a record batch travels from the
//! producer's request to the disk and to the followers without being copied.

use bytes::Bytes;

/// A Raft node id. Membership (next issue) turns a member into `(node_id, incarnation)`; the id
/// alone stays the address of a peer in messages.
pub type NodeId = u64;
/// A Raft term. Term 0 is "before any election".
pub type Term = u64;
/// A log index. Index 0 is the empty prefix (term 0); the first real entry is index 1.
pub type Index = u64;

/// Bytes an entry costs beyond its payload, for byte-based limits: index, term and kind as
/// storage frames them, plus the frame's length and CRC (docs/FORMAT.md "Segment log").
pub const ENTRY_OVERHEAD_BYTES: u64 = 8 + 8 + 1 + 4 + 4;

/// What an entry carries. Stored as one byte; the values are part of the on-disk format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum EntryKind {
    /// Appended by every new leader at the start of its term, so entries of earlier terms
    /// can commit.
    NoOp = 0,
    /// An opaque payload: for a partition, one record batch.
    Data = 1,
    /// A membership configuration.
    Config = 2,
    /// A command for the group's own state machine (group 0's metadata commands, a
    /// partition's `SetLogStart`).
    Meta = 3,
}

impl EntryKind {
    /// Decodes a stored kind byte; `None` for a byte no version of Keel writes.
    pub fn from_u8(byte: u8) -> Option<EntryKind> {
        match byte {
            0 => Some(EntryKind::NoOp),
            1 => Some(EntryKind::Data),
            2 => Some(EntryKind::Config),
            3 => Some(EntryKind::Meta),
            _ => None,
        }
    }

    /// The byte storage frames hold for this kind.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// One entry of a Raft log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub index: Index,
    pub term: Term,
    pub kind: EntryKind,
    pub payload: Bytes,
}

impl Entry {
    /// The size this entry counts for in byte limits (`max_append_bytes`, inflight bytes,
    /// uncommitted bytes).
    pub fn size_bytes(&self) -> u64 {
        self.payload.len() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// Sum of `size_bytes` over a slice of entries.
pub fn entries_size_bytes(entries: &[Entry]) -> u64 {
    entries.iter().map(Entry::size_bytes).sum()
}

/// The state a node must persist before it acts on it: its term and the vote it cast in that
/// term. The commit index is deliberately not here (a restarted node learns it again:
/// docs/RAFT-CORE.md "Commit index after a restart").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_kind_round_trips_through_its_storage_byte() {
        for kind in [
            EntryKind::NoOp,
            EntryKind::Data,
            EntryKind::Config,
            EntryKind::Meta,
        ] {
            assert_eq!(EntryKind::from_u8(kind.as_u8()), Some(kind));
        }
        assert_eq!(EntryKind::from_u8(4), None);
        assert_eq!(EntryKind::from_u8(255), None);
    }
}
