//! Raft's hard state (current term and vote): one small file of two slots, written in place.
//!
//! It owns the file `hard_state` in a group's directory and nothing else. The file is created
//! once, whole, by temp file + fsync + rename + directory fsync; after that every store writes
//! the new value, with a sequence number one above the last, into slot 0, fdatasyncs, then into
//! slot 1, and fdatasyncs again. The slots sit in different 4 KiB pages. A power loss during a
//! store can damage only the slot being written, and the other holds the value from before the
//! store or the new one; after a completed store both hold it, so one slot damaged later (a bad
//! sector, a lost write) still leaves the newest durable value in the other. A load takes the
//! valid slot with the highest sequence; no valid slot is corruption. A store after creation
//! needs no new disk block (on a file system that overwrites in place), so a node on a full disk
//! can still persist a vote. The commit index is not persisted
//! (docs/FORMAT.md "Hard state"): it is recomputed from the quorum.
//!
//! Slot layout (docs/FORMAT.md "Hard state"), 36 bytes, little-endian, at bytes 0 and 4096 of
//! an 8192-byte file:
//!
//! ```text
//! 0       4        6        8              16            24            32       36
//! | magic | version | flags  | sequence u64  | term u64     | vote u64     | crc32  |
//!   "KHST"   u16 = 2  bit 0 = vote present                   0 if no vote   over bytes 0..32
//! ```
//!
//! A version-1 file (28 bytes: the same fields without a sequence, replaced by rename on every
//! store) is still read; the next store rewrites it as a version-2 file.

use std::path::Path;

use crate::error::{Result, StorageError};
use crate::io::{Io, IoFile};

/// The hard state file's name inside a group's directory.
pub const HARD_STATE_FILE_NAME: &str = "hard_state";
/// The temp name the file is created under; a leftover one is stale and ignored.
pub const HARD_STATE_TEMP_FILE_NAME: &str = "hard_state.tmp";

pub const HARD_STATE_MAGIC: [u8; 4] = *b"KHST";
pub const HARD_STATE_VERSION: u16 = 2;
/// One slot: magic 4 + version 2 + flags 2 + sequence 8 + term 8 + vote 8 + crc 4.
pub const HARD_STATE_SLOT_BYTES: usize = 36;
/// Slot `i` starts at `i * HARD_STATE_SLOT_STRIDE`: one page each, so a torn page write cannot
/// reach both.
pub const HARD_STATE_SLOT_STRIDE: usize = 4096;
/// The whole file: two slots of one page each.
pub const HARD_STATE_FILE_BYTES: usize = 2 * HARD_STATE_SLOT_STRIDE;
/// A version-1 file: magic 4 + version 2 + flags 2 + term 8 + vote 8 + crc 4.
pub const HARD_STATE_V1_BYTES: usize = 28;

const FLAG_VOTE_PRESENT: u16 = 1;
/// The CRC covers every byte of the slot before it.
const CRC_OFFSET: usize = 32;
const V1_CRC_OFFSET: usize = 24;
const _: () = assert!(HARD_STATE_SLOT_BYTES == 4 + 2 + 2 + 8 + 8 + 8 + 4);
const _: () = assert!(CRC_OFFSET + 4 == HARD_STATE_SLOT_BYTES);
const _: () = assert!(HARD_STATE_SLOT_BYTES <= HARD_STATE_SLOT_STRIDE);
const _: () = assert!(HARD_STATE_V1_BYTES == V1_CRC_OFFSET + 4);

/// Raft's durable per-node state: the latest term seen and the vote cast in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    pub term: u64,
    /// The node voted for in `term`, if any.
    pub vote: Option<u64>,
}

/// Why bytes are not a valid hard state: the byte offset of the first bad field and what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardStateDecodeError {
    pub offset: u64,
    pub reason: String,
}

/// What one slot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// All zeros: never written (the second slot of a new file).
    Empty,
    Valid {
        sequence: u64,
        state: HardState,
    },
    /// Damaged: a store torn by a power loss, or worse.
    Invalid(HardStateDecodeError),
}

impl HardState {
    /// Reads the hard state in `dir`. `Ok(None)` only when no hard state was ever stored (the
    /// file does not exist); a file of another length, or one without a valid slot, is
    /// [`StorageError::Corruption`], never a default, because a default would let a node vote
    /// twice in one term.
    pub fn load(io: &dyn Io, dir: &Path) -> Result<Option<HardState>> {
        let path = dir.join(HARD_STATE_FILE_NAME);
        let Some(file) = crate::atomic_file::open_if_exists(io, &path)? else {
            return Ok(None);
        };
        let corruption = |error: HardStateDecodeError| StorageError::Corruption {
            path: path.clone(),
            offset: error.offset,
            reason: error.reason,
        };
        match read_slots(file.as_ref(), &path)? {
            Layout::Version1(bytes) => HardState::decode_v1(&bytes).map(Some).map_err(corruption),
            Layout::Slots(slots) => newest(&slots)
                .map(|(_, _, state)| Some(state))
                .map_err(corruption),
            Layout::Other { len_bytes } => Err(corruption(HardStateDecodeError {
                offset: len_bytes.min(HARD_STATE_FILE_BYTES as u64),
                reason: format!(
                    "hard state file is {len_bytes} bytes, expected {HARD_STATE_FILE_BYTES} \
                     (or {HARD_STATE_V1_BYTES} for version 1)"
                ),
            })),
        }
    }

    /// Stores the hard state in `dir` durably: when this returns `Ok`, a power loss leaves this
    /// value. When it returns an error a load finds the old or the new value (never garbage),
    /// and the caller must treat the node as failed: it may not know which one a restart sees.
    ///
    /// The first store (or the first after a version-1 file) creates the file; every later one
    /// writes both slots in place, one after the other, and so needs no new disk block. A file
    /// it cannot read is refused ([`StorageError::Corruption`]), never overwritten.
    pub fn store(&self, io: &dyn Io, dir: &Path) -> Result<()> {
        let path = dir.join(HARD_STATE_FILE_NAME);
        let corruption = |error: HardStateDecodeError| StorageError::Corruption {
            path: path.clone(),
            offset: error.offset,
            reason: error.reason,
        };
        if let Some(file) = crate::atomic_file::open_if_exists(io, &path)? {
            match read_slots(file.as_ref(), &path)? {
                Layout::Slots(slots) => {
                    let (_, sequence, _) = newest(&slots).map_err(corruption)?;
                    let sequence = sequence.checked_add(1).ok_or_else(|| {
                        corruption(HardStateDecodeError {
                            offset: 8,
                            reason: "sequence at its maximum".into(),
                        })
                    })?;
                    let bytes = self.encode(sequence);
                    for slot in 0..2 {
                        file.write_at(&bytes, (slot * HARD_STATE_SLOT_STRIDE) as u64)
                            .and_then(|()| file.sync_data())
                            .map_err(|error| StorageError::io("write", &path, error))?;
                    }
                    return Ok(());
                }
                Layout::Version1(_) => {}
                Layout::Other { len_bytes } => {
                    return Err(corruption(HardStateDecodeError {
                        offset: len_bytes.min(HARD_STATE_FILE_BYTES as u64),
                        reason: format!(
                            "hard state file is {len_bytes} bytes; refusing to overwrite it"
                        ),
                    }))
                }
            }
        }
        // Created whole: both slots hold the value.
        let mut whole = vec![0u8; HARD_STATE_FILE_BYTES];
        whole[..HARD_STATE_SLOT_BYTES].copy_from_slice(&self.encode(1));
        whole[HARD_STATE_SLOT_STRIDE..HARD_STATE_SLOT_STRIDE + HARD_STATE_SLOT_BYTES]
            .copy_from_slice(&self.encode(1));
        crate::atomic_file::replace(
            io,
            dir,
            HARD_STATE_TEMP_FILE_NAME,
            HARD_STATE_FILE_NAME,
            &whole,
        )
    }

    /// The slot that records this state as store number `sequence`.
    pub fn encode(&self, sequence: u64) -> [u8; HARD_STATE_SLOT_BYTES] {
        let mut bytes = [0u8; HARD_STATE_SLOT_BYTES];
        bytes[0..4].copy_from_slice(&HARD_STATE_MAGIC);
        bytes[4..6].copy_from_slice(&HARD_STATE_VERSION.to_le_bytes());
        let flags = if self.vote.is_some() {
            FLAG_VOTE_PRESENT
        } else {
            0
        };
        bytes[6..8].copy_from_slice(&flags.to_le_bytes());
        bytes[8..16].copy_from_slice(&sequence.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.term.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.vote.unwrap_or(0).to_le_bytes());
        let crc = crc32fast::hash(&bytes[..CRC_OFFSET]);
        bytes[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes one slot into its sequence and state. Total: any input gives a value or an error.
    pub fn decode(bytes: &[u8]) -> Result<(u64, HardState), HardStateDecodeError> {
        let fail = |offset: usize, reason: String| HardStateDecodeError {
            offset: offset as u64,
            reason,
        };
        if bytes.len() != HARD_STATE_SLOT_BYTES {
            return Err(fail(
                bytes.len(),
                format!(
                    "hard state slot is {} bytes, expected {HARD_STATE_SLOT_BYTES}",
                    bytes.len()
                ),
            ));
        }
        if bytes[0..4] != HARD_STATE_MAGIC {
            return Err(fail(0, format!("bad magic {:02x?}", &bytes[0..4])));
        }
        // The CRC is checked before any field is trusted; version and flags are checked after
        // so that a bit flip is reported as a checksum failure rather than a bad version.
        let stored_crc = u32::from_le_bytes(bytes[CRC_OFFSET..].try_into().expect("4 bytes"));
        let computed_crc = crc32fast::hash(&bytes[..CRC_OFFSET]);
        if stored_crc != computed_crc {
            return Err(fail(
                CRC_OFFSET,
                format!("crc mismatch: stored {stored_crc:#010x}, computed {computed_crc:#010x}"),
            ));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != HARD_STATE_VERSION {
            return Err(fail(4, format!("unknown version {version}")));
        }
        let sequence = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let term = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        let vote = decode_vote(bytes, 6, 24).map_err(|(offset, reason)| fail(offset, reason))?;
        Ok((sequence, HardState { term, vote }))
    }

    /// Decodes a whole version-1 file.
    pub fn decode_v1(bytes: &[u8]) -> Result<HardState, HardStateDecodeError> {
        let fail = |offset: usize, reason: String| HardStateDecodeError {
            offset: offset as u64,
            reason,
        };
        if bytes.len() != HARD_STATE_V1_BYTES || bytes[0..4] != HARD_STATE_MAGIC {
            return Err(fail(0, "not a version-1 hard state".into()));
        }
        let stored_crc = u32::from_le_bytes(bytes[V1_CRC_OFFSET..].try_into().expect("4 bytes"));
        let computed_crc = crc32fast::hash(&bytes[..V1_CRC_OFFSET]);
        if stored_crc != computed_crc {
            return Err(fail(
                V1_CRC_OFFSET,
                format!("crc mismatch: stored {stored_crc:#010x}, computed {computed_crc:#010x}"),
            ));
        }
        if u16::from_le_bytes([bytes[4], bytes[5]]) != 1 {
            return Err(fail(4, "a 28-byte hard state must be version 1".into()));
        }
        let term = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let vote = decode_vote(bytes, 6, 16).map_err(|(offset, reason)| fail(offset, reason))?;
        Ok(HardState { term, vote })
    }
}

/// The flags at `flags_at` and the vote at `vote_at`: a vote without the flag, or an unknown
/// flag bit, is an error (offset, reason).
fn decode_vote(
    bytes: &[u8],
    flags_at: usize,
    vote_at: usize,
) -> std::result::Result<Option<u64>, (usize, String)> {
    let flags = u16::from_le_bytes([bytes[flags_at], bytes[flags_at + 1]]);
    if flags & !FLAG_VOTE_PRESENT != 0 {
        return Err((flags_at, format!("unknown flags {flags:#06x}")));
    }
    let vote = u64::from_le_bytes(bytes[vote_at..vote_at + 8].try_into().expect("8 bytes"));
    if flags & FLAG_VOTE_PRESENT != 0 {
        Ok(Some(vote))
    } else if vote == 0 {
        Ok(None)
    } else {
        Err((vote_at, format!("vote {vote} without the vote flag")))
    }
}

/// What the file on disk is.
enum Layout {
    Slots([Slot; 2]),
    Version1(Vec<u8>),
    Other { len_bytes: u64 },
}

fn read_slots(file: &dyn IoFile, path: &Path) -> Result<Layout> {
    let len_bytes = file
        .len_bytes()
        .map_err(|error| StorageError::io("stat", path, error))?;
    if len_bytes == HARD_STATE_V1_BYTES as u64 {
        let mut bytes = vec![0; HARD_STATE_V1_BYTES];
        file.read_at(&mut bytes, 0)
            .map_err(|error| StorageError::io("read", path, error))?;
        return Ok(Layout::Version1(bytes));
    }
    if len_bytes != HARD_STATE_FILE_BYTES as u64 {
        return Ok(Layout::Other { len_bytes });
    }
    let read_slot = |slot: usize| -> Result<Slot> {
        let at = slot * HARD_STATE_SLOT_STRIDE;
        let mut bytes = [0u8; HARD_STATE_SLOT_BYTES];
        file.read_at(&mut bytes, at as u64)
            .map_err(|error| StorageError::io("read", path, error))?;
        if bytes.iter().all(|&byte| byte == 0) {
            return Ok(Slot::Empty);
        }
        Ok(match HardState::decode(&bytes) {
            Ok((sequence, state)) => Slot::Valid { sequence, state },
            Err(mut error) => {
                error.offset += at as u64;
                Slot::Invalid(error)
            }
        })
    };
    Ok(Layout::Slots([read_slot(0)?, read_slot(1)?]))
}

/// The valid slot with the highest sequence: (slot, sequence, state). Beside a damaged slot the
/// valid one holds the newest durable value (both slots get every completed store), or the
/// value of a store a power loss cut short (it never returned, so nothing acted on it); no
/// valid slot at all is corruption.
fn newest(slots: &[Slot; 2]) -> Result<(usize, u64, HardState), HardStateDecodeError> {
    let valid = slots
        .iter()
        .enumerate()
        .filter_map(|(slot, content)| match content {
            Slot::Valid { sequence, state } => Some((slot, *sequence, *state)),
            _ => None,
        });
    if let Some(best) = valid.max_by_key(|&(_, sequence, _)| sequence) {
        return Ok(best);
    }
    Err(match slots {
        [Slot::Invalid(error), _] | [_, Slot::Invalid(error)] => error.clone(),
        _ => HardStateDecodeError {
            offset: 0,
            reason: "no slot of the hard state file was ever written".into(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faulty_io::{FaultyIo, PowerLossMode};
    use crate::io::RealIo;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn file_bytes(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join(HARD_STATE_FILE_NAME)).unwrap()
    }

    #[test]
    fn missing_file_loads_as_none_and_stores_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(HardState::load(&RealIo, dir.path()).unwrap(), None);
        for (store, hard_state) in [
            HardState::default(),
            HardState {
                term: 7,
                vote: Some(3),
            },
            HardState {
                term: u64::MAX,
                vote: Some(0),
            },
            HardState {
                term: 8,
                vote: None,
            },
        ]
        .into_iter()
        .enumerate()
        {
            hard_state.store(&RealIo, dir.path()).unwrap();
            assert_eq!(
                HardState::load(&RealIo, dir.path()).unwrap(),
                Some(hard_state)
            );
            // Both slots hold every completed store, one sequence number on each time.
            let bytes = file_bytes(dir.path());
            assert_eq!(bytes.len(), HARD_STATE_FILE_BYTES);
            for slot in 0..2 {
                let at = slot * HARD_STATE_SLOT_STRIDE;
                let (sequence, state) =
                    HardState::decode(&bytes[at..at + HARD_STATE_SLOT_BYTES]).unwrap();
                assert_eq!((sequence, state), (store as u64 + 1, hard_state));
            }
        }
    }

    #[test]
    fn the_worked_example_in_format_md_is_what_we_write() {
        let bytes = HardState {
            term: 5,
            vote: Some(2),
        }
        .encode(1);
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(hex, WORKED_EXAMPLE_HEX);
    }
    const WORKED_EXAMPLE_HEX: &str = concat!(
        "4b485354",
        "0200",
        "0100",
        "0100000000000000",
        "0500000000000000",
        "0200000000000000",
        "1971f7e8"
    );

    #[test]
    fn completed_stores_leave_nothing_a_power_loss_could_undo() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        for term in 1..=3 {
            HardState {
                term,
                vote: Some(1),
            }
            .store(&*io, dir.path())
            .unwrap();
            assert!(io.is_all_durable(), "after store {term}");
        }
    }

    /// After its file exists, persisting a vote needs no new disk block: a node whose disk is
    /// full can still vote.
    #[test]
    fn a_store_on_a_full_disk_succeeds_once_the_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        HardState::default().store(&*io, dir.path()).unwrap();
        io.disk_full();
        let voted = HardState {
            term: 2,
            vote: Some(3),
        };
        voted.store(&*io, dir.path()).unwrap();
        assert_eq!(HardState::load(&*io, dir.path()).unwrap(), Some(voted));
    }

    #[test]
    fn power_loss_at_any_step_of_a_store_leaves_the_old_or_the_new_value() {
        let older = HardState {
            term: 3,
            vote: Some(2),
        };
        let old = HardState {
            term: 4,
            vote: Some(9),
        };
        let new = HardState {
            term: 5,
            vote: None,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0x4b48_5354);
        // No file yet (the store creates it), one slot written, both slots written.
        for previous in [vec![], vec![old], vec![older, old]] {
            for mode in PowerLossMode::ALL {
                // Crash after each number of I/O calls; 10 is more than a store makes.
                for operations in 0..10 {
                    let dir = tempfile::tempdir().unwrap();
                    let io = FaultyIo::new();
                    for state in &previous {
                        state.store(&*io, dir.path()).unwrap();
                    }
                    // A stale temp from an earlier crash must not get in the way.
                    std::fs::write(dir.path().join(HARD_STATE_TEMP_FILE_NAME), b"junk").unwrap();
                    io.halt_after(operations);
                    let stored = new.store(&*io, dir.path());
                    io.clear_faults();
                    io.power_loss(mode, &mut rng).unwrap();
                    let loaded = HardState::load(&*io, dir.path()).unwrap_or_else(|error| {
                        panic!("{mode:?} after {operations} operations: {error}")
                    });
                    let before = previous.last().copied();
                    if stored.is_ok() {
                        assert_eq!(loaded, Some(new), "{mode:?} after {operations} ops");
                    } else {
                        assert!(
                            loaded == before || loaded == Some(new),
                            "{mode:?} after {operations} ops: {loaded:?}"
                        );
                    }
                }
            }
        }
    }

    /// One damaged slot never hides the newest durable value, and a store cut short between its
    /// two writes gives the old value or the new one.
    #[test]
    fn one_damaged_slot_leaves_the_newest_durable_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HARD_STATE_FILE_NAME);
        let old = HardState {
            term: 4,
            vote: Some(1),
        };
        let new = HardState {
            term: 5,
            vote: Some(2),
        };
        old.store(&RealIo, dir.path()).unwrap();
        new.store(&RealIo, dir.path()).unwrap();
        let stored = file_bytes(dir.path());
        for slot in 0..2 {
            // A bad sector (or a lost write) in either slot after the store completed.
            let mut bytes = stored.clone();
            bytes[slot * HARD_STATE_SLOT_STRIDE + 20] ^= 0xff;
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(HardState::load(&RealIo, dir.path()).unwrap(), Some(new));
        }
        // Cut between the writes: slot 0 new (sequence 3), slot 1 still old (sequence 2).
        let mut bytes = stored.clone();
        bytes[..HARD_STATE_SLOT_BYTES].copy_from_slice(
            &HardState {
                term: 6,
                vote: None,
            }
            .encode(3),
        );
        bytes[HARD_STATE_SLOT_STRIDE..HARD_STATE_SLOT_STRIDE + HARD_STATE_SLOT_BYTES]
            .copy_from_slice(&new.encode(2));
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            HardState::load(&RealIo, dir.path()).unwrap(),
            Some(HardState {
                term: 6,
                vote: None
            })
        );
        // Cut during the first write: slot 0 torn, slot 1 old.
        bytes[30] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(HardState::load(&RealIo, dir.path()).unwrap(), Some(new));
        // A file it cannot read is refused, not overwritten.
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            new.store(&RealIo, dir.path()),
            Err(StorageError::Corruption { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"short");
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_the_file_never_a_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HARD_STATE_FILE_NAME);
        HardState {
            term: 3,
            vote: Some(1),
        }
        .store(&RealIo, dir.path())
        .unwrap();
        let good = file_bytes(dir.path());
        // Both slots damaged: nothing to fall back on.
        let mut flipped = good.clone();
        flipped[17] ^= 0x01;
        flipped[HARD_STATE_SLOT_STRIDE + 17] ^= 0x01;
        let mut too_long = good.clone();
        too_long.push(0);
        for (bytes, expected_offset) in [
            (flipped, CRC_OFFSET as u64),
            (good[..20].to_vec(), 20),
            (Vec::new(), 0),
            (too_long, HARD_STATE_FILE_BYTES as u64),
            (vec![0; HARD_STATE_FILE_BYTES], 0),
        ] {
            std::fs::write(&path, &bytes).unwrap();
            match HardState::load(&RealIo, dir.path()) {
                Err(StorageError::Corruption {
                    path: error_path,
                    offset,
                    ..
                }) => {
                    assert_eq!(error_path, path);
                    assert_eq!(offset, expected_offset, "{} bytes", bytes.len());
                }
                other => panic!(
                    "expected corruption for {} bytes, got {other:?}",
                    bytes.len()
                ),
            }
        }
    }

    #[test]
    fn a_version_1_file_is_read_and_the_next_store_rewrites_it_as_version_2() {
        let dir = tempfile::tempdir().unwrap();
        // Term 5, vote 2, as version 1 wrote it.
        let v1: Vec<u8> = (0..28)
            .map(|i| {
                u8::from_str_radix(
                    &"4b4853540100010005000000000000000200000000000000b937094f"[2 * i..2 * i + 2],
                    16,
                )
                .unwrap()
            })
            .collect();
        std::fs::write(dir.path().join(HARD_STATE_FILE_NAME), &v1).unwrap();
        assert_eq!(
            HardState::load(&RealIo, dir.path()).unwrap(),
            Some(HardState {
                term: 5,
                vote: Some(2)
            })
        );
        let next = HardState {
            term: 6,
            vote: None,
        };
        next.store(&RealIo, dir.path()).unwrap();
        assert_eq!(file_bytes(dir.path()).len(), HARD_STATE_FILE_BYTES);
        assert_eq!(HardState::load(&RealIo, dir.path()).unwrap(), Some(next));
    }

    #[test]
    fn unknown_version_or_flags_are_rejected_even_with_a_valid_crc() {
        let reseal = |mut bytes: [u8; HARD_STATE_SLOT_BYTES]| {
            let crc = crc32fast::hash(&bytes[..CRC_OFFSET]);
            bytes[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
            bytes
        };
        let mut bytes = HardState::default().encode(1);
        bytes[4] = 3;
        assert_eq!(HardState::decode(&reseal(bytes)).unwrap_err().offset, 4);
        let mut bytes = HardState::default().encode(1);
        bytes[24] = 1; // a vote without the flag
        assert_eq!(HardState::decode(&reseal(bytes)).unwrap_err().offset, 24);
        let mut bytes = HardState::default().encode(1);
        bytes[7] = 0x80; // an unknown flag
        assert_eq!(HardState::decode(&reseal(bytes)).unwrap_err().offset, 6);
    }

    proptest! {
        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = HardState::decode(&bytes);
            let _ = HardState::decode_v1(&bytes);
        }

        #[test]
        fn encode_decode_round_trips(
            sequence in any::<u64>(),
            term in any::<u64>(),
            vote in any::<Option<u64>>(),
        ) {
            let hard_state = HardState { term, vote };
            prop_assert_eq!(HardState::decode(&hard_state.encode(sequence)).unwrap(), (sequence, hard_state));
        }

        #[test]
        fn any_single_bit_flip_is_detected(
            term in any::<u64>(),
            vote in any::<Option<u64>>(),
            bit in 0..HARD_STATE_SLOT_BYTES * 8,
        ) {
            let mut bytes = HardState { term, vote }.encode(7);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(HardState::decode(&bytes).is_err());
        }
    }
}
