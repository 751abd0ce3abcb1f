//! The file I/O boundary of the storage engine.
//!
//! Everything keel-storage does to a disk goes through [`Io`] and [`IoFile`], so that the
//! power-loss tests can run the real log over a fault-injecting implementation. The contract
//! both implementations keep, and that the log relies on:
//!
//! - A write is *visible* on return: a later read, or a memory map of the file, sees it.
//! - A write is *durable* only after a later [`IoFile::sync_data`] on the same file returns.
//!   Until then a power loss may drop it, keep a torn prefix of it, or keep any subset of the
//!   4 KiB pages it touched (disks write back in any order).
//! - A file create, rename or remove is durable only after [`Io::sync_dir`] on its directory.
//! - An error from `write_at` or `sync_data` is fatal for the file: after a failed fsync the
//!   state of the page cache is unknown, so callers never retry (docs/OPERATIONS.md
//!   "When a disk fails").

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A directory-level file system: creating, opening, renaming and removing files.
pub trait Io: Send + Sync + std::fmt::Debug {
    /// Creates a new file (failing if it exists) and reserves `len_bytes` of disk for it, so a
    /// full disk shows up here as `ErrorKind::StorageFull` rather than as a fault on a later
    /// write. The caller must [`Io::sync_dir`] the parent to make the creation durable.
    fn create(&self, path: &Path, len_bytes: u64) -> io::Result<Arc<dyn IoFile>>;

    /// Opens an existing file for reading and positioned writes.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn IoFile>>;

    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Lists the file names (not paths) in `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
}

/// One open file. Shared (`Arc`) between the writer and the memory maps that readers hold.
pub trait IoFile: Send + Sync + std::fmt::Debug {
    /// Writes all of `buf` at `offset`. Visible on return, durable after `sync_data`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Reads exactly `buf.len()` bytes at `offset` (used for small files; segments are read
    /// through a memory map of [`IoFile::file`]).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Makes every write to this file that returned before this call durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;

    /// The file's current length in bytes.
    fn len_bytes(&self) -> io::Result<u64>;

    /// Truncates or extends the file to `len_bytes`. Durable after `sync_data`. Extending
    /// reserves no disk: the new range is a hole until written or [`IoFile::allocate`]d.
    fn set_len(&self, len_bytes: u64) -> io::Result<()>;

    /// Reserves disk blocks for `offset..offset + len_bytes` without changing the file's length
    /// or content, so writes there cannot run out of space. A full disk is
    /// `ErrorKind::StorageFull` and reserves nothing the caller relies on. Durable with the next
    /// `sync_data` (as the block allocation a later write there needs).
    fn allocate(&self, offset: u64, len_bytes: u64) -> io::Result<()>;

    /// The underlying OS file, for memory-mapping. Writes must never go through it.
    fn file(&self) -> &File;

    /// The path this file was opened at, for error messages.
    fn path(&self) -> &Path;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealIo;

#[derive(Debug)]
struct RealFile {
    file: File,
    path: PathBuf,
}

impl Io for RealIo {
    fn create(&self, path: &Path, len_bytes: u64) -> io::Result<Arc<dyn IoFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        if len_bytes > 0 {
            if let Err(error) = allocate(&file, len_bytes) {
                // Leave no half-made file behind: the caller sees the error and a clean dir.
                drop(file);
                let _ = std::fs::remove_file(path);
                return Err(error);
            }
        }
        Ok(Arc::new(RealFile {
            file,
            path: path.to_path_buf(),
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn IoFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(RealFile {
            file,
            path: path.to_path_buf(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
}

impl IoFile for RealFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.file.set_len(len_bytes)
    }

    fn allocate(&self, offset: u64, len_bytes: u64) -> io::Result<()> {
        reserve(&self.file, offset, len_bytes)
    }

    fn file(&self) -> &File {
        &self.file
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// Reserves disk blocks for a range of an existing file without changing its length. File
/// systems without fallocate (some FUSE and network mounts) get no reservation: a write there
/// may then fail for space, which the log treats as fatal. Copy-on-write file systems (btrfs,
/// ZFS) may need new blocks for a write even into reserved space.
fn reserve(file: &File, offset: u64, len_bytes: u64) -> io::Result<()> {
    use rustix::fs::{fallocate, FallocateFlags};
    match fallocate(file, FallocateFlags::KEEP_SIZE, offset, len_bytes) {
        Ok(()) | Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// Reserves real disk blocks (not a sparse hole), so running out of space is reported now.
/// Filesystems without fallocate (tmpfs on old kernels, some network mounts) fall back to
/// `set_len`, which only extends the file.
fn allocate(file: &File, len_bytes: u64) -> io::Result<()> {
    use rustix::fs::{fallocate, FallocateFlags};
    match fallocate(file, FallocateFlags::empty(), 0, len_bytes) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => {
            file.set_len(len_bytes)
        }
        Err(errno) => Err(errno.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_file_is_preallocated_and_writes_are_visible() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        let file = RealIo.create(&path, 8192).unwrap();
        assert_eq!(file.len_bytes().unwrap(), 8192);
        file.write_at(b"keel", 100).unwrap();
        let mut buf = [0u8; 4];
        file.read_at(&mut buf, 100).unwrap();
        assert_eq!(&buf, b"keel");
        assert!(RealIo.create(&path, 10).is_err(), "create must not clobber");
    }
}
