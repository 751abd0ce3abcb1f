//! Raft's hard state (current term and vote), one small file replaced atomically.
//!
//! It owns the file `hard_state` in a group's directory and nothing else. A store writes a
//! temp file, fsyncs it, renames it over the old one and fsyncs the directory, so after a power
//! loss at any point the file holds either the old or the new value, whole and checksummed.
//! The commit index is not persisted (docs/FORMAT.md "Hard state"): it is recomputed from the
//! quorum.
//!
//! Layout (docs/FORMAT.md "Hard state"), 28 bytes, little-endian:
//!
//! ```text
//! 0       4        6        8              16             24       28
//! | magic | version | flags  | term u64      | vote u64      | crc32  |
//!   "KHST"   u16 = 1  bit 0 = vote present    0 if no vote    over bytes 0..24
//! ```

use std::path::Path;

use crate::error::{Result, StorageError};
use crate::io::Io;

/// The hard state file's name inside a group's directory.
pub const HARD_STATE_FILE_NAME: &str = "hard_state";
/// The temp name a store writes before renaming; a leftover one is stale and ignored.
pub const HARD_STATE_TEMP_FILE_NAME: &str = "hard_state.tmp";

pub const HARD_STATE_MAGIC: [u8; 4] = *b"KHST";
pub const HARD_STATE_VERSION: u16 = 1;
/// The whole file: magic 4 + version 2 + flags 2 + term 8 + vote 8 + crc 4.
pub const HARD_STATE_BYTES: usize = 28;

const FLAG_VOTE_PRESENT: u16 = 1;
/// The CRC covers every byte before it.
const CRC_OFFSET: usize = 24;
const _: () = assert!(HARD_STATE_BYTES == 4 + 2 + 2 + 8 + 8 + 4);
const _: () = assert!(CRC_OFFSET + 4 == HARD_STATE_BYTES);

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

impl HardState {
    /// Reads the hard state in `dir`. `Ok(None)` only when no hard state was ever stored (the
    /// file does not exist); a short, garbled or unknown-version file is
    /// [`StorageError::Corruption`], never a default, because a default would let a node vote
    /// twice in one term.
    pub fn load(io: &dyn Io, dir: &Path) -> Result<Option<HardState>> {
        let path = dir.join(HARD_STATE_FILE_NAME);
        let Some(file) = crate::atomic_file::open_if_exists(io, &path)? else {
            return Ok(None);
        };
        let len_bytes = file
            .len_bytes()
            .map_err(|error| StorageError::io("stat", &path, error))?;
        let read_bytes = len_bytes.min(HARD_STATE_BYTES as u64) as usize;
        let mut bytes = vec![0; read_bytes];
        file.read_at(&mut bytes, 0)
            .map_err(|error| StorageError::io("read", &path, error))?;
        if len_bytes > HARD_STATE_BYTES as u64 {
            return Err(StorageError::Corruption {
                path,
                offset: HARD_STATE_BYTES as u64,
                reason: format!(
                    "hard state file is {len_bytes} bytes, expected {HARD_STATE_BYTES}"
                ),
            });
        }
        HardState::decode(&bytes)
            .map(Some)
            .map_err(|error| StorageError::Corruption {
                path,
                offset: error.offset,
                reason: error.reason,
            })
    }

    /// Replaces the hard state in `dir` atomically and durably: when this returns `Ok`, a
    /// power loss leaves this value. When it returns an error the file holds the old or the
    /// new value (never garbage), and the caller must treat the node as failed: it may not
    /// know which value a restart will see.
    pub fn store(&self, io: &dyn Io, dir: &Path) -> Result<()> {
        crate::atomic_file::replace(
            io,
            dir,
            HARD_STATE_TEMP_FILE_NAME,
            HARD_STATE_FILE_NAME,
            &self.encode(),
        )
    }

    pub fn encode(&self) -> [u8; HARD_STATE_BYTES] {
        let mut bytes = [0u8; HARD_STATE_BYTES];
        bytes[0..4].copy_from_slice(&HARD_STATE_MAGIC);
        bytes[4..6].copy_from_slice(&HARD_STATE_VERSION.to_le_bytes());
        let flags = if self.vote.is_some() {
            FLAG_VOTE_PRESENT
        } else {
            0
        };
        bytes[6..8].copy_from_slice(&flags.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.term.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.vote.unwrap_or(0).to_le_bytes());
        let crc = crc32fast::hash(&bytes[..CRC_OFFSET]);
        bytes[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes a whole hard state file. Total: any input gives a value or an error.
    pub fn decode(bytes: &[u8]) -> Result<HardState, HardStateDecodeError> {
        let fail = |offset: usize, reason: String| HardStateDecodeError {
            offset: offset as u64,
            reason,
        };
        if bytes.len() != HARD_STATE_BYTES {
            return Err(fail(
                bytes.len(),
                format!(
                    "hard state is {} bytes, expected {HARD_STATE_BYTES}",
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
        let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
        if flags & !FLAG_VOTE_PRESENT != 0 {
            return Err(fail(6, format!("unknown flags {flags:#06x}")));
        }
        let term = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let vote_field = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        let vote = if flags & FLAG_VOTE_PRESENT != 0 {
            Some(vote_field)
        } else if vote_field == 0 {
            None
        } else {
            return Err(fail(16, format!("vote {vote_field} without the vote flag")));
        };
        Ok(HardState { term, vote })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faulty_io::{FaultyIo, PowerLossMode};
    use crate::io::RealIo;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn missing_file_loads_as_none_and_a_store_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(HardState::load(&RealIo, dir.path()).unwrap(), None);
        for hard_state in [
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
        ] {
            hard_state.store(&RealIo, dir.path()).unwrap();
            assert_eq!(
                HardState::load(&RealIo, dir.path()).unwrap(),
                Some(hard_state)
            );
        }
    }

    #[test]
    fn the_worked_example_in_format_md_is_what_we_write() {
        let bytes = HardState {
            term: 5,
            vote: Some(2),
        }
        .encode();
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(
            hex,
            "4b4853540100010005000000000000000200000000000000b937094f"
        );
    }

    #[test]
    fn a_completed_store_leaves_nothing_a_power_loss_could_undo() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        HardState {
            term: 1,
            vote: Some(1),
        }
        .store(&*io, dir.path())
        .unwrap();
        assert!(io.is_all_durable());
    }

    #[test]
    fn power_loss_at_any_step_of_a_store_leaves_the_old_or_the_new_value() {
        let old = HardState {
            term: 4,
            vote: Some(9),
        };
        let new = HardState {
            term: 5,
            vote: None,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0x4b48_5354);
        for previous in [None, Some(old)] {
            for mode in PowerLossMode::ALL {
                // Crash after each number of I/O calls; 10 is more than a store makes.
                for operations in 0..10 {
                    let dir = tempfile::tempdir().unwrap();
                    let io = FaultyIo::new();
                    if let Some(previous) = previous {
                        previous.store(&*io, dir.path()).unwrap();
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
                    if stored.is_ok() {
                        assert_eq!(loaded, Some(new), "{mode:?} after {operations} ops");
                    } else {
                        assert!(
                            loaded == previous || loaded == Some(new),
                            "{mode:?} after {operations} ops: {loaded:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_the_file_never_a_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HARD_STATE_FILE_NAME);
        let good = HardState {
            term: 3,
            vote: Some(1),
        }
        .encode();
        let mut flipped = good;
        flipped[9] ^= 0x01;
        let mut too_long = good.to_vec();
        too_long.push(0);
        for (bytes, expected_offset) in [
            (flipped.to_vec(), CRC_OFFSET as u64),
            (good[..20].to_vec(), 20),
            (Vec::new(), 0),
            (too_long, HARD_STATE_BYTES as u64),
            (vec![0; HARD_STATE_BYTES], 0),
        ] {
            std::fs::write(&path, &bytes).unwrap();
            match HardState::load(&RealIo, dir.path()) {
                Err(StorageError::Corruption {
                    path: error_path,
                    offset,
                    ..
                }) => {
                    assert_eq!(error_path, path);
                    assert_eq!(offset, expected_offset, "{bytes:02x?}");
                }
                other => panic!("expected corruption for {bytes:02x?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_version_or_flags_are_rejected_even_with_a_valid_crc() {
        let mut bytes = HardState::default().encode();
        bytes[4] = 2;
        let crc = crc32fast::hash(&bytes[..CRC_OFFSET]);
        bytes[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(HardState::decode(&bytes).unwrap_err().offset, 4);

        let mut bytes = HardState::default().encode();
        bytes[16] = 1; // a vote without the flag
        let crc = crc32fast::hash(&bytes[..CRC_OFFSET]);
        bytes[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(HardState::decode(&bytes).unwrap_err().offset, 16);
    }

    proptest! {
        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = HardState::decode(&bytes);
        }

        #[test]
        fn encode_decode_round_trips(term in any::<u64>(), vote in any::<Option<u64>>()) {
            let hard_state = HardState { term, vote };
            prop_assert_eq!(HardState::decode(&hard_state.encode()).unwrap(), hard_state);
        }

        #[test]
        fn any_single_bit_flip_is_detected(
            term in any::<u64>(),
            vote in any::<Option<u64>>(),
            bit in 0..HARD_STATE_BYTES * 8,
        ) {
            let mut bytes = HardState { term, vote }.encode();
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(HardState::decode(&bytes).is_err());
        }
    }
}
