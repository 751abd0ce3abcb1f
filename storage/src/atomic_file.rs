//! Small files replaced atomically: write a temp file, fsync it, rename it over the old one,
//! fsync the directory. After a power loss at any point the name holds the old bytes or the new
//! ones, never a mix. Hard state uses [`replace`] to create its file (then writes slots in place); the node driver's own small files
//! (identity, founders, abstain marker) use [`store_record`] / [`load_record`], which add a
//! magic, a length and a CRC so a damaged file is a typed error instead of a silent default.
//!
//! Record layout (docs/FORMAT.md "Small records"), little-endian:
//! `magic [4] | body_len u32 | body | crc32 u32` (CRC over everything before it).

use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Result, StorageError};
use crate::io::{Io, IoFile};
use crate::limits::MAX_RECORD_BODY_BYTES;

/// Replaces `dir/final_name` with `bytes` atomically and durably, through `dir/temp_name`.
/// When this returns an error the file holds the old or the new value (never garbage), and the
/// caller must treat the owner as failed: it does not know which value a restart will see.
pub fn replace(
    io: &dyn Io,
    dir: &Path,
    temp_name: &str,
    final_name: &str,
    bytes: &[u8],
) -> Result<()> {
    let temp_path = dir.join(temp_name);
    let file = create_temp(io, &temp_path)?;
    file.write_at(bytes, 0)
        .map_err(|error| StorageError::io("write", &temp_path, error))?;
    publish(io, file.as_ref(), &temp_path, &dir.join(final_name), dir)
}

/// Creates the temp file a publish starts from. One left by a crash mid-write is garbage and
/// is removed first (`create` refuses to overwrite).
pub fn create_temp(io: &dyn Io, temp_path: &Path) -> Result<Arc<dyn IoFile>> {
    match io.remove(temp_path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(StorageError::io("remove", temp_path, error)),
    }
    io.create(temp_path, 0)
        .map_err(|error| StorageError::io("create", temp_path, error))
}

/// Publishes a fully written temp file under its final name: fsync its data, rename, fsync the
/// directory. Data first: the rename must never publish a name whose bytes are not on disk.
pub fn publish(
    io: &dyn Io,
    file: &dyn IoFile,
    temp_path: &Path,
    final_path: &Path,
    dir: &Path,
) -> Result<()> {
    file.sync_data()
        .map_err(|error| StorageError::io("fsync", temp_path, error))?;
    io.rename(temp_path, final_path)
        .map_err(|error| StorageError::io("rename", temp_path, error))?;
    io.sync_dir(dir)
        .map_err(|error| StorageError::io("fsync dir", dir, error))
}

/// Opens `path` for a small-file load: `Ok(None)` when it does not exist.
pub fn open_if_exists(io: &dyn Io, path: &Path) -> Result<Option<Arc<dyn IoFile>>> {
    match io.open(path) {
        Ok(file) => Ok(Some(file)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(StorageError::io("open", path, error)),
    }
}

/// Stores `body` under `dir/name` as a checksummed record with `magic`, atomically.
pub fn store_record(
    io: &dyn Io,
    dir: &Path,
    name: &str,
    magic: [u8; 4],
    body: &[u8],
) -> Result<()> {
    if body.len() > MAX_RECORD_BODY_BYTES {
        return Err(StorageError::InvalidOptions(format!(
            "record {name} of {} bytes exceeds {MAX_RECORD_BODY_BYTES}",
            body.len()
        )));
    }
    let mut bytes = Vec::with_capacity(body.len() + 12);
    bytes.extend_from_slice(&magic);
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(body);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    replace(io, dir, &format!("{name}.tmp"), name, &bytes)
}

/// Loads the record `dir/name`. `Ok(None)` only when the file does not exist; a short file, a
/// wrong magic, a bad length or a CRC mismatch is [`StorageError::Corruption`].
pub fn load_record(io: &dyn Io, dir: &Path, name: &str, magic: [u8; 4]) -> Result<Option<Vec<u8>>> {
    let path = dir.join(name);
    let Some(file) = open_if_exists(io, &path)? else {
        return Ok(None);
    };
    let len_bytes = file
        .len_bytes()
        .map_err(|error| StorageError::io("stat", &path, error))?;
    let corrupt = |offset: u64, reason: String| StorageError::Corruption {
        path: path.clone(),
        offset,
        reason,
    };
    if len_bytes < 12 || len_bytes > (MAX_RECORD_BODY_BYTES + 12) as u64 {
        return Err(corrupt(0, format!("record file is {len_bytes} bytes")));
    }
    let mut bytes = vec![0; len_bytes as usize];
    file.read_at(&mut bytes, 0)
        .map_err(|error| StorageError::io("read", &path, error))?;
    if bytes[0..4] != magic {
        return Err(corrupt(0, "wrong magic".to_string()));
    }
    let body_len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if body_len + 12 != bytes.len() {
        return Err(corrupt(
            4,
            format!("body length {body_len} does not match a file of {len_bytes} bytes"),
        ));
    }
    let crc_at = 8 + body_len;
    let stored = u32::from_le_bytes([
        bytes[crc_at],
        bytes[crc_at + 1],
        bytes[crc_at + 2],
        bytes[crc_at + 3],
    ]);
    if crc32fast::hash(&bytes[..crc_at]) != stored {
        return Err(corrupt(crc_at as u64, "CRC mismatch".to_string()));
    }
    bytes.truncate(crc_at);
    bytes.drain(..8);
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::RealIo;

    #[test]
    fn a_record_round_trips_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let io = RealIo;
        assert_eq!(load_record(&io, dir.path(), "r", *b"TEST").unwrap(), None);
        store_record(&io, dir.path(), "r", *b"TEST", b"hello").unwrap();
        assert_eq!(
            load_record(&io, dir.path(), "r", *b"TEST")
                .unwrap()
                .as_deref(),
            Some(&b"hello"[..])
        );
        assert!(load_record(&io, dir.path(), "r", *b"OTHR").is_err());
        let path = dir.path().join("r");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[9] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            load_record(&io, dir.path(), "r", *b"TEST"),
            Err(StorageError::Corruption { .. })
        ));
        std::fs::write(&path, &bytes[..5]).unwrap();
        assert!(load_record(&io, dir.path(), "r", *b"TEST").is_err());
    }
}
