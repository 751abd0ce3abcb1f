//! Snapshot files: a Raft snapshot's metadata and opaque data, published atomically.
//!
//! This module owns the `snapshot-*.snap` files (and their `.snap.tmp` temps) in a group's
//! directory. A [`SnapshotWriter`] streams data in chunks (InstallSnapshot arrives chunked) into
//! a temp file; [`SnapshotWriter::finish`] appends a trailer whose CRC covers the whole file,
//! fsyncs, renames the temp to its final name and fsyncs the directory. Only then is the
//! snapshot visible to [`latest_snapshot`], so a power loss before `finish` returns leaves the
//! previous snapshot as the latest, intact. The log prefix may be compacted only after `finish`
//! returns (docs/FORMAT.md "Snapshot files").
//!
//! Layout (docs/FORMAT.md "Snapshot files"), little-endian:
//!
//! ```text
//! header (32 bytes)
//!   0  magic "KSNP"           4  version u16 = 1      6  reserved u16 = 0
//!   8  last_included_index    16 last_included_term   24 configuration_bytes u32
//!   28 header_crc u32: crc32 of bytes 0..28 followed by the configuration
//! configuration (configuration_bytes, opaque)
//! data (opaque)
//! trailer (16 bytes)
//!   0  data_bytes u64   8  file_crc u32: crc32 of every file byte before it   12 magic "KEND"
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Result, StorageError};
use crate::io::{Io, IoFile};
use crate::limits::{MAX_CONFIGURATION_BYTES, SNAPSHOT_VERIFY_CHUNK_BYTES};

pub const SNAPSHOT_MAGIC: [u8; 4] = *b"KSNP";
pub const SNAPSHOT_TRAILER_MAGIC: [u8; 4] = *b"KEND";
pub const SNAPSHOT_VERSION: u16 = 1;
pub const SNAPSHOT_HEADER_BYTES: usize = 32;
pub const SNAPSHOT_TRAILER_BYTES: usize = 16;

const HEADER_CRC_OFFSET: usize = 28;
const TRAILER_CRC_OFFSET: usize = 8;
const TRAILER_MAGIC_OFFSET: usize = 12;
const _: () = assert!(SNAPSHOT_HEADER_BYTES == 4 + 2 + 2 + 8 + 8 + 4 + 4);
const _: () = assert!(HEADER_CRC_OFFSET + 4 == SNAPSHOT_HEADER_BYTES);
const _: () = assert!(SNAPSHOT_TRAILER_BYTES == 8 + 4 + 4);
const _: () = assert!(TRAILER_MAGIC_OFFSET + 4 == SNAPSHOT_TRAILER_BYTES);

const FILE_PREFIX: &str = "snapshot-";
const FILE_SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";

/// What a snapshot replaces: the log up to and including `last_included_index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub last_included_index: u64,
    pub last_included_term: u64,
    /// The membership configuration as of `last_included_index`, encoded by the caller.
    pub configuration: Vec<u8>,
}

/// A snapshot made durable by [`SnapshotWriter::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    pub meta: SnapshotMeta,
    pub data_bytes: u64,
    pub file_bytes: u64,
}

/// The final file name of a snapshot: `snapshot-<index:020>-<term:020>.snap`, so names sort
/// by index and a reader can pick the newest without opening every file.
pub fn snapshot_file_name(last_included_index: u64, last_included_term: u64) -> String {
    format!("{FILE_PREFIX}{last_included_index:020}-{last_included_term:020}{FILE_SUFFIX}")
}

/// Parses a final snapshot file name into (last_included_index, last_included_term).
fn parse_snapshot_file_name(name: &str) -> Option<(u64, u64)> {
    let numbers = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?;
    let (index, term) = numbers.split_once('-')?;
    let is_number = |digits: &str| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit());
    if !is_number(index) || !is_number(term) {
        return None;
    }
    Some((index.parse().ok()?, term.parse().ok()?))
}

/// Streams one snapshot into a temp file; see the module documentation.
///
/// Dropping a writer without [`SnapshotWriter::finish`] or [`SnapshotWriter::abort`] leaves
/// its temp file behind, exactly as a crash would; [`remove_temp_files`] clears those at start.
#[derive(Debug)]
pub struct SnapshotWriter {
    io: Arc<dyn Io>,
    dir: PathBuf,
    temp_path: PathBuf,
    final_path: PathBuf,
    file: Arc<dyn IoFile>,
    meta: SnapshotMeta,
    /// CRC of every byte written so far (becomes the trailer's file CRC).
    file_crc: crc32fast::Hasher,
    next_offset: u64,
    data_bytes: u64,
    /// Set by a failed write: the temp file's content is unknown, so nothing may follow.
    failed: bool,
}

impl SnapshotWriter {
    /// Starts a snapshot in `dir` (which must exist), writing its header. A temp file with the
    /// same name (a crashed earlier attempt) is replaced.
    pub fn create(io: Arc<dyn Io>, dir: &Path, meta: SnapshotMeta) -> Result<SnapshotWriter> {
        let configuration_bytes = u32::try_from(meta.configuration.len())
            .ok()
            .filter(|&bytes| bytes <= MAX_CONFIGURATION_BYTES)
            .ok_or_else(|| {
                StorageError::InvalidOptions(format!(
                    "snapshot configuration of {} bytes exceeds {MAX_CONFIGURATION_BYTES}",
                    meta.configuration.len()
                ))
            })?;
        let name = snapshot_file_name(meta.last_included_index, meta.last_included_term);
        let final_path = dir.join(&name);
        let temp_path = dir.join(format!("{name}.tmp"));
        let file = crate::atomic_file::create_temp(io.as_ref(), &temp_path)?;

        let mut head = encode_header(&meta, configuration_bytes).to_vec();
        head.extend_from_slice(&meta.configuration);
        file.write_at(&head, 0)
            .map_err(|error| StorageError::io("write", &temp_path, error))?;
        let mut file_crc = crc32fast::Hasher::new();
        file_crc.update(&head);
        Ok(SnapshotWriter {
            io,
            dir: dir.to_path_buf(),
            temp_path,
            final_path,
            file,
            meta,
            file_crc,
            next_offset: head.len() as u64,
            data_bytes: 0,
            failed: false,
        })
    }

    /// Appends the next piece of the data stream. Not durable until `finish`.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<()> {
        self.write(chunk)?;
        self.data_bytes += chunk.len() as u64;
        Ok(())
    }

    /// Writes the trailer and publishes the snapshot durably: fsync, rename to the final
    /// name, fsync the directory. On `Ok` the snapshot survives a power loss; on error no
    /// snapshot of this (index, term) is visible unless the rename reached the disk, in which
    /// case it is complete (its bytes were fsynced first).
    pub fn finish(mut self) -> Result<SnapshotInfo> {
        let mut trailer = [0u8; SNAPSHOT_TRAILER_BYTES];
        trailer[0..TRAILER_CRC_OFFSET].copy_from_slice(&self.data_bytes.to_le_bytes());
        self.file_crc.update(&trailer[0..TRAILER_CRC_OFFSET]);
        let file_crc = self.file_crc.clone().finalize();
        trailer[TRAILER_CRC_OFFSET..TRAILER_MAGIC_OFFSET].copy_from_slice(&file_crc.to_le_bytes());
        trailer[TRAILER_MAGIC_OFFSET..].copy_from_slice(&SNAPSHOT_TRAILER_MAGIC);
        self.write(&trailer)?;
        crate::atomic_file::publish(
            self.io.as_ref(),
            self.file.as_ref(),
            &self.temp_path,
            &self.final_path,
            &self.dir,
        )?;
        Ok(SnapshotInfo {
            path: self.final_path,
            meta: self.meta,
            data_bytes: self.data_bytes,
            file_bytes: self.next_offset,
        })
    }

    /// Abandons the snapshot and removes its temp file (a superseded InstallSnapshot, say).
    pub fn abort(self) -> Result<()> {
        let SnapshotWriter {
            io,
            temp_path,
            file,
            ..
        } = self;
        drop(file);
        match io.remove(&temp_path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(StorageError::io("remove", temp_path, error)),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.failed {
            return Err(StorageError::Poisoned(format!(
                "an earlier write to {} failed",
                self.temp_path.display()
            )));
        }
        if let Err(error) = self.file.write_at(bytes, self.next_offset) {
            self.failed = true;
            return Err(StorageError::io("write", &self.temp_path, error));
        }
        self.file_crc.update(bytes);
        self.next_offset += bytes.len() as u64;
        Ok(())
    }
}

fn encode_header(meta: &SnapshotMeta, configuration_bytes: u32) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    header[0..4].copy_from_slice(&SNAPSHOT_MAGIC);
    header[4..6].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    // 6..8 reserved, zero.
    header[8..16].copy_from_slice(&meta.last_included_index.to_le_bytes());
    header[16..24].copy_from_slice(&meta.last_included_term.to_le_bytes());
    header[24..28].copy_from_slice(&configuration_bytes.to_le_bytes());
    let mut header_crc = crc32fast::Hasher::new();
    header_crc.update(&header[..HEADER_CRC_OFFSET]);
    header_crc.update(&meta.configuration);
    header[HEADER_CRC_OFFSET..].copy_from_slice(&header_crc.finalize().to_le_bytes());
    header
}

/// A complete, verified snapshot file open for reading.
///
/// `open` checks every byte against the file CRC once; later reads trust the file (the data
/// has no per-chunk checksum), so a reader that needs stronger guarantees re-opens.
#[derive(Debug)]
pub struct Snapshot {
    path: PathBuf,
    file: Arc<dyn IoFile>,
    meta: SnapshotMeta,
    data_offset: u64,
    data_bytes: u64,
}

impl Snapshot {
    /// Opens and fully verifies a snapshot file: magic, version, header CRC, trailer, length
    /// and the whole-file CRC. Any mismatch is [`StorageError::Corruption`] naming the file and
    /// the byte offset of the field that failed.
    pub fn open(io: &dyn Io, path: &Path) -> Result<Snapshot> {
        let file = io
            .open(path)
            .map_err(|error| StorageError::io("open", path, error))?;
        let corrupt = |offset: u64, reason: String| StorageError::Corruption {
            path: path.to_path_buf(),
            offset,
            reason,
        };
        let read = |buf: &mut [u8], offset: u64| {
            file.read_at(buf, offset)
                .map_err(|error| StorageError::io("read", path, error))
        };
        let file_bytes = file
            .len_bytes()
            .map_err(|error| StorageError::io("stat", path, error))?;
        let minimum_bytes = (SNAPSHOT_HEADER_BYTES + SNAPSHOT_TRAILER_BYTES) as u64;
        if file_bytes < minimum_bytes {
            return Err(corrupt(
                file_bytes,
                format!("truncated: {file_bytes} bytes, a snapshot has at least {minimum_bytes}"),
            ));
        }

        let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
        read(&mut header, 0)?;
        if header[0..4] != SNAPSHOT_MAGIC {
            return Err(corrupt(0, format!("bad magic {:02x?}", &header[0..4])));
        }
        let configuration_bytes = u32::from_le_bytes(header[24..28].try_into().expect("4"));
        let room_bytes = file_bytes - minimum_bytes;
        if configuration_bytes > MAX_CONFIGURATION_BYTES
            || u64::from(configuration_bytes) > room_bytes
        {
            return Err(corrupt(
                24,
                format!(
                    "configuration of {configuration_bytes} bytes does not fit a {file_bytes}-byte file"
                ),
            ));
        }
        let mut configuration = vec![0u8; configuration_bytes as usize];
        read(&mut configuration, SNAPSHOT_HEADER_BYTES as u64)?;
        let stored_header_crc =
            u32::from_le_bytes(header[HEADER_CRC_OFFSET..].try_into().expect("4"));
        let mut header_crc = crc32fast::Hasher::new();
        header_crc.update(&header[..HEADER_CRC_OFFSET]);
        header_crc.update(&configuration);
        let computed_header_crc = header_crc.finalize();
        if stored_header_crc != computed_header_crc {
            return Err(corrupt(
                HEADER_CRC_OFFSET as u64,
                format!(
                    "header crc mismatch: stored {stored_header_crc:#010x}, computed {computed_header_crc:#010x}"
                ),
            ));
        }
        let version = u16::from_le_bytes([header[4], header[5]]);
        if version != SNAPSHOT_VERSION {
            return Err(corrupt(4, format!("unknown version {version}")));
        }
        if header[6..8] != [0, 0] {
            return Err(corrupt(6, "reserved bytes are not zero".to_string()));
        }

        let trailer_offset = file_bytes - SNAPSHOT_TRAILER_BYTES as u64;
        let mut trailer = [0u8; SNAPSHOT_TRAILER_BYTES];
        read(&mut trailer, trailer_offset)?;
        if trailer[TRAILER_MAGIC_OFFSET..] != SNAPSHOT_TRAILER_MAGIC {
            return Err(corrupt(
                trailer_offset + TRAILER_MAGIC_OFFSET as u64,
                "no trailer (truncated or unfinished snapshot)".to_string(),
            ));
        }
        let data_offset = (SNAPSHOT_HEADER_BYTES as u64) + u64::from(configuration_bytes);
        let data_bytes = u64::from_le_bytes(trailer[0..TRAILER_CRC_OFFSET].try_into().expect("8"));
        if data_offset.checked_add(data_bytes) != Some(trailer_offset) {
            return Err(corrupt(
                trailer_offset,
                format!(
                    "trailer says {data_bytes} data bytes, the file holds {}",
                    trailer_offset - data_offset
                ),
            ));
        }

        let crc_offset = trailer_offset + TRAILER_CRC_OFFSET as u64;
        let stored_file_crc = u32::from_le_bytes(
            trailer[TRAILER_CRC_OFFSET..TRAILER_MAGIC_OFFSET]
                .try_into()
                .expect("4"),
        );
        let mut file_crc = crc32fast::Hasher::new();
        let mut chunk = vec![0u8; SNAPSHOT_VERIFY_CHUNK_BYTES];
        let mut offset = 0;
        while offset < crc_offset {
            let chunk_bytes =
                (crc_offset - offset).min(SNAPSHOT_VERIFY_CHUNK_BYTES as u64) as usize;
            read(&mut chunk[..chunk_bytes], offset)?;
            file_crc.update(&chunk[..chunk_bytes]);
            offset += chunk_bytes as u64;
        }
        let computed_file_crc = file_crc.finalize();
        if stored_file_crc != computed_file_crc {
            return Err(corrupt(
                crc_offset,
                format!(
                    "file crc mismatch: stored {stored_file_crc:#010x}, computed {computed_file_crc:#010x}"
                ),
            ));
        }

        Ok(Snapshot {
            path: path.to_path_buf(),
            file,
            meta: SnapshotMeta {
                last_included_index: u64::from_le_bytes(header[8..16].try_into().expect("8")),
                last_included_term: u64::from_le_bytes(header[16..24].try_into().expect("8")),
                configuration,
            },
            data_offset,
            data_bytes,
        })
    }

    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Up to `max_bytes` of data starting at data offset `offset` (for InstallSnapshot
    /// chunks); empty at or past the end.
    pub fn read_data(&self, offset: u64, max_bytes: usize) -> Result<Vec<u8>> {
        let available_bytes = self.data_bytes.saturating_sub(offset);
        let chunk_bytes = available_bytes.min(max_bytes as u64) as usize;
        let mut chunk = vec![0u8; chunk_bytes];
        if chunk_bytes > 0 {
            self.file
                .read_at(&mut chunk, self.data_offset + offset)
                .map_err(|error| StorageError::io("read", &self.path, error))?;
        }
        Ok(chunk)
    }

    /// The whole data stream.
    pub fn read_all_data(&self) -> Result<Vec<u8>> {
        let data_bytes = usize::try_from(self.data_bytes).map_err(|_| {
            StorageError::InvalidOptions(format!(
                "snapshot data of {} bytes does not fit in memory",
                self.data_bytes
            ))
        })?;
        self.read_data(0, data_bytes)
    }
}

/// The complete snapshots in `dir` (by name; not opened), oldest first.
fn list_snapshots(io: &dyn Io, dir: &Path) -> Result<Vec<(u64, u64, PathBuf)>> {
    let names = match io.list(dir) {
        Ok(names) => names,
        Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(StorageError::io("list", dir, error)),
    };
    let mut snapshots: Vec<(u64, u64, PathBuf)> = names
        .iter()
        .filter_map(|name| {
            let (index, term) = parse_snapshot_file_name(name)?;
            Some((index, term, dir.join(name)))
        })
        .collect();
    snapshots.sort();
    Ok(snapshots)
}

/// Opens the newest complete snapshot in `dir` (highest last_included_index, then term), or
/// `None` if there is none. Temp files are ignored. A newest file that fails verification is
/// an error, not a reason to fall back silently: it was fsynced before it got its name, so
/// damage to it is disk corruption the operator must hear about.
pub fn latest_snapshot(io: &dyn Io, dir: &Path) -> Result<Option<Snapshot>> {
    let Some((index, term, path)) = list_snapshots(io, dir)?.pop() else {
        return Ok(None);
    };
    let snapshot = Snapshot::open(io, &path)?;
    if (
        snapshot.meta.last_included_index,
        snapshot.meta.last_included_term,
    ) != (index, term)
    {
        return Err(StorageError::Corruption {
            path,
            offset: 8,
            reason: format!(
                "header says index {} term {}, the file name says index {index} term {term}",
                snapshot.meta.last_included_index, snapshot.meta.last_included_term
            ),
        });
    }
    Ok(Some(snapshot))
}

/// Removes every complete snapshot whose last_included_index is below
/// `last_included_index`, then fsyncs the directory. The caller keeps the newer snapshot it
/// just finished; returns how many files were removed.
pub fn remove_older_than(io: &dyn Io, dir: &Path, last_included_index: u64) -> Result<usize> {
    let mut removed = 0;
    for (index, _term, path) in list_snapshots(io, dir)? {
        if index < last_included_index {
            io.remove(&path)
                .map_err(|error| StorageError::io("remove", &path, error))?;
            removed += 1;
        }
    }
    if removed > 0 {
        io.sync_dir(dir)
            .map_err(|error| StorageError::io("fsync dir", dir, error))?;
    }
    Ok(removed)
}

/// Removes the temp files of snapshots that were never finished (a crash, a dropped writer).
/// Call when opening a group, never while a [`SnapshotWriter`] in `dir` is live.
pub fn remove_temp_files(io: &dyn Io, dir: &Path) -> Result<usize> {
    let names = match io.list(dir) {
        Ok(names) => names,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(StorageError::io("list", dir, error)),
    };
    let mut removed = 0;
    for name in names {
        if name.starts_with(FILE_PREFIX) && name.ends_with(TEMP_SUFFIX) {
            let path = dir.join(&name);
            io.remove(&path)
                .map_err(|error| StorageError::io("remove", &path, error))?;
            removed += 1;
        }
    }
    if removed > 0 {
        io.sync_dir(dir)
            .map_err(|error| StorageError::io("fsync dir", dir, error))?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faulty_io::{FaultyIo, PowerLossMode};
    use crate::io::RealIo;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn meta(index: u64, term: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_included_index: index,
            last_included_term: term,
            configuration: format!("voters=1,2,3 at {index}").into_bytes(),
        }
    }

    fn random_data(rng: &mut impl Rng, data_bytes: usize) -> Vec<u8> {
        (0..data_bytes).map(|_| rng.random()).collect()
    }

    /// Writes `data` as a snapshot in chunks of random sizes.
    fn write_snapshot(
        io: Arc<dyn Io>,
        dir: &Path,
        meta: SnapshotMeta,
        data: &[u8],
        rng: &mut impl Rng,
    ) -> Result<SnapshotInfo> {
        let mut writer = SnapshotWriter::create(io, dir, meta)?;
        let mut rest = data;
        while !rest.is_empty() {
            let chunk_bytes = rng.random_range(0..=rest.len().min(5000));
            writer.write_chunk(&rest[..chunk_bytes])?;
            rest = &rest[chunk_bytes..];
        }
        writer.finish()
    }

    #[test]
    fn many_chunks_round_trip_and_read_back_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let data = random_data(&mut rng, 300_000);
        let info =
            write_snapshot(Arc::new(RealIo), dir.path(), meta(100, 4), &data, &mut rng).unwrap();
        assert_eq!(info.data_bytes, data.len() as u64);
        assert_eq!(
            info.file_bytes,
            std::fs::metadata(&info.path).unwrap().len()
        );
        assert_eq!(
            info.path.file_name().unwrap(),
            "snapshot-00000000000000000100-00000000000000000004.snap"
        );

        let snapshot = latest_snapshot(&RealIo, dir.path()).unwrap().unwrap();
        assert_eq!(snapshot.meta(), &meta(100, 4));
        assert_eq!(snapshot.read_all_data().unwrap(), data);
        let mut reassembled = Vec::new();
        loop {
            let chunk = snapshot.read_data(reassembled.len() as u64, 7777).unwrap();
            if chunk.is_empty() {
                break;
            }
            reassembled.extend_from_slice(&chunk);
        }
        assert_eq!(reassembled, data);
        assert!(snapshot.read_data(u64::MAX, 10).unwrap().is_empty());
    }

    #[test]
    fn empty_data_and_empty_configuration_are_valid() {
        let dir = tempfile::tempdir().unwrap();
        let empty = SnapshotMeta {
            last_included_index: 0,
            last_included_term: 0,
            configuration: Vec::new(),
        };
        let writer = SnapshotWriter::create(Arc::new(RealIo), dir.path(), empty.clone()).unwrap();
        let info = writer.finish().unwrap();
        assert_eq!(
            info.file_bytes,
            (SNAPSHOT_HEADER_BYTES + SNAPSHOT_TRAILER_BYTES) as u64
        );
        let snapshot = Snapshot::open(&RealIo, &info.path).unwrap();
        assert_eq!(snapshot.meta(), &empty);
        assert!(snapshot.read_all_data().unwrap().is_empty());
    }

    #[test]
    fn the_worked_example_in_format_md_is_what_we_write() {
        let dir = tempfile::tempdir().unwrap();
        let example = SnapshotMeta {
            last_included_index: 10,
            last_included_term: 2,
            configuration: b"abc".to_vec(),
        };
        let mut writer = SnapshotWriter::create(Arc::new(RealIo), dir.path(), example).unwrap();
        writer.write_chunk(b"hel").unwrap();
        writer.write_chunk(b"lo").unwrap();
        let info = writer.finish().unwrap();
        let hex: String = std::fs::read(&info.path)
            .unwrap()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(hex, WORKED_EXAMPLE_HEX);
    }

    const WORKED_EXAMPLE_HEX: &str = "4b534e50010000000a00000000000000020000000000000003000000f4010ec161626368656c6c6f0500000000000000a21669574b454e44";

    #[test]
    fn latest_picks_the_newest_complete_snapshot_and_cleanup_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let io: Arc<dyn Io> = Arc::new(RealIo);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        assert!(latest_snapshot(&*io, dir.path()).unwrap().is_none());
        for (index, term) in [(5, 1), (20, 2), (9, 2)] {
            write_snapshot(
                Arc::clone(&io),
                dir.path(),
                meta(index, term),
                b"d",
                &mut rng,
            )
            .unwrap();
        }
        // An unfinished newer one (a crash mid-InstallSnapshot) and a stranger are ignored.
        let mut unfinished =
            SnapshotWriter::create(Arc::clone(&io), dir.path(), meta(30, 3)).unwrap();
        unfinished.write_chunk(b"partial").unwrap();
        drop(unfinished);
        std::fs::write(dir.path().join("snapshot-notes.txt"), b"hi").unwrap();

        let latest = latest_snapshot(&*io, dir.path()).unwrap().unwrap();
        assert_eq!(latest.meta().last_included_index, 20);

        assert_eq!(remove_temp_files(&*io, dir.path()).unwrap(), 1);
        assert_eq!(remove_older_than(&*io, dir.path(), 20).unwrap(), 2);
        let mut names = io.list(dir.path()).unwrap();
        names.sort();
        assert_eq!(
            names,
            [
                "snapshot-00000000000000000020-00000000000000000002.snap",
                "snapshot-notes.txt"
            ]
        );
    }

    #[test]
    fn abort_removes_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SnapshotWriter::create(Arc::new(RealIo), dir.path(), meta(1, 1)).unwrap();
        writer.write_chunk(b"x").unwrap();
        writer.abort().unwrap();
        assert!(RealIo.list(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_failed_write_poisons_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let mut writer = SnapshotWriter::create(io.clone(), dir.path(), meta(1, 1)).unwrap();
        io.fail_writes_after(0);
        assert!(matches!(
            writer.write_chunk(b"x"),
            Err(StorageError::Io { .. })
        ));
        io.clear_faults();
        assert!(matches!(
            writer.write_chunk(b"y"),
            Err(StorageError::Poisoned(_))
        ));
        assert!(matches!(writer.finish(), Err(StorageError::Poisoned(_))));
    }

    #[test]
    fn power_loss_before_finish_returns_leaves_the_previous_snapshot_or_a_complete_new_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let old_data = random_data(&mut rng, 20_000);
        let new_data = random_data(&mut rng, 50_000);
        let mut outcomes = std::collections::HashSet::new();
        for mode in PowerLossMode::ALL {
            // Crash after each number of I/O calls; the new snapshot takes about 20.
            for operations in (0..30).step_by(3).chain([usize::MAX]) {
                let dir = tempfile::tempdir().unwrap();
                let io = FaultyIo::new();
                write_snapshot(io.clone(), dir.path(), meta(10, 1), &old_data, &mut rng).unwrap();
                if operations != usize::MAX {
                    io.halt_after(operations as u64);
                }
                let finished =
                    write_snapshot(io.clone(), dir.path(), meta(20, 2), &new_data, &mut rng);
                io.clear_faults();
                let report = io.power_loss(mode, &mut rng).unwrap();
                let context = format!("{mode:?} after {operations} ops: {report:?}");

                let latest = latest_snapshot(&*io, dir.path())
                    .unwrap_or_else(|error| panic!("{context}: {error}"))
                    .unwrap();
                if finished.is_ok() {
                    assert_eq!(latest.meta(), &meta(20, 2), "{context}");
                }
                let expected = match latest.meta().last_included_index {
                    10 => &old_data,
                    20 => &new_data,
                    other => panic!("{context}: unexpected snapshot {other}"),
                };
                outcomes.insert((finished.is_ok(), latest.meta().last_included_index));
                assert_eq!(&latest.read_all_data().unwrap(), expected, "{context}");
                let old = Snapshot::open(&*io, &dir.path().join(snapshot_file_name(10, 1)));
                assert_eq!(old.unwrap().read_all_data().unwrap(), old_data, "{context}");
            }
        }
        assert!(outcomes.contains(&(false, 10)) && outcomes.contains(&(true, 20)));
    }

    /// Writes a small valid snapshot and returns its path and bytes.
    fn small_snapshot(dir: &Path) -> (PathBuf, Vec<u8>) {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let data = random_data(&mut rng, 1000);
        let info = write_snapshot(Arc::new(RealIo), dir, meta(7, 3), &data, &mut rng).unwrap();
        let bytes = std::fs::read(&info.path).unwrap();
        (info.path, bytes)
    }

    fn expect_corruption(path: &Path) -> u64 {
        match Snapshot::open(&RealIo, path) {
            Err(StorageError::Corruption {
                path: error_path,
                offset,
                ..
            }) => {
                assert_eq!(error_path, path);
                offset
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn every_flipped_byte_is_corruption_naming_path_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (path, good) = small_snapshot(dir.path());
        let file_bytes = good.len() as u64;
        for position in 0..good.len() {
            let mut bytes = good.clone();
            bytes[position] ^= 0x20;
            std::fs::write(&path, &bytes).unwrap();
            let offset = expect_corruption(&path);
            assert!(offset < file_bytes, "byte {position}: offset {offset}");
        }
        // The two checksums point at where they are stored.
        let mut bytes = good.clone();
        bytes[40] ^= 1; // configuration
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(expect_corruption(&path), HEADER_CRC_OFFSET as u64);
        let mut bytes = good.clone();
        bytes[500] ^= 1; // data
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(expect_corruption(&path), file_bytes - 8);
    }

    #[test]
    fn every_truncation_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (path, good) = small_snapshot(dir.path());
        for len in (0..good.len()).rev() {
            std::fs::write(&path, &good[..len]).unwrap();
            expect_corruption(&path);
        }
        let mut extended = good.clone();
        extended.extend_from_slice(&[0; 100]);
        std::fs::write(&path, &extended).unwrap();
        expect_corruption(&path);
    }

    #[test]
    fn a_file_whose_name_disagrees_with_its_header_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = small_snapshot(dir.path());
        std::fs::rename(&path, dir.path().join(snapshot_file_name(8, 3))).unwrap();
        assert!(matches!(
            latest_snapshot(&RealIo, dir.path()),
            Err(StorageError::Corruption { offset: 8, .. })
        ));
    }

    #[test]
    fn file_names_parse_only_in_their_exact_form() {
        assert_eq!(
            parse_snapshot_file_name(&snapshot_file_name(u64::MAX, 0)),
            Some((u64::MAX, 0))
        );
        for name in [
            "snapshot-1-2.snap",
            "snapshot-00000000000000000001-00000000000000000002.snap.tmp",
            "snapshot-0000000000000000000a-00000000000000000002.snap",
            "snapshot-99999999999999999999-00000000000000000002.snap",
            "x-00000000000000000001-00000000000000000002.snap",
        ] {
            assert_eq!(parse_snapshot_file_name(name), None, "{name}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn open_is_total_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(snapshot_file_name(1, 1));
            std::fs::write(&path, &bytes).unwrap();
            let _ = Snapshot::open(&RealIo, &path);
        }
    }
}
