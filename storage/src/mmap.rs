//! Read-only memory maps of segment files: the only `unsafe` code in keel-storage.
//!
//! A map is wrapped in [`bytes::Bytes`] (`Bytes::from_owner`), so every payload handed to a
//! reader is a zero-copy slice that keeps the whole map alive through a reference count. The
//! map, and so the slice, stays valid after the log drops the segment, deletes its file or is
//! itself dropped: unlinking a mapped file leaves the mapping in place.

use std::fs::File;
use std::io;

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};

/// Owns a map for `Bytes::from_owner`.
struct MapOwner(Mmap);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Maps the first `len_bytes` of `file` read-only and shared, so positioned writes to the file
/// show through it at once (Linux has one page cache for both).
///
/// `len_bytes` must not exceed the file's length: touching a page past the end of a file
/// raises SIGBUS. Callers pass the length they just read from the file, and the log never
/// shrinks a segment file (it zeroes bytes instead of truncating).
pub(crate) fn map_read_only(file: &File, len_bytes: u64) -> io::Result<Bytes> {
    let len = usize::try_from(len_bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large to map"))?;
    if len == 0 {
        // mmap(2) rejects zero-length maps; an empty file maps to no bytes.
        return Ok(Bytes::new());
    }
    // SAFETY: memmap2 requires that the mapped file is not modified or truncated behind the
    // map's back in a way that breaks Rust's aliasing rules or faults. The log keeps that
    // contract: (1) it never shrinks a mapped segment file, so no page of the map goes past
    // the end of the file (no SIGBUS); (2) it only writes bytes that no live `&[u8]` or
    // handed-out `Bytes` covers: appends go past the end of the last frame, recovery zeroes a
    // torn tail before anything is read from it, and `truncate_suffix` asserts that it only
    // zeroes bytes above the handed-out watermark. Other processes must not write the log's
    // files while it is open (documented on `Log`).
    let map = unsafe { MmapOptions::new().len(len).map(file)? };
    Ok(Bytes::from_owner(MapOwner(map)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn writes_show_through_the_map_and_slices_outlive_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        file.set_len(8192).unwrap();
        let map = map_read_only(&file, 8192).unwrap();
        file.write_all_at(b"keel", 4096).unwrap();
        let slice = map.slice(4096..4100);
        assert_eq!(&slice[..], b"keel");
        drop(map);
        drop(file);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            &slice[..],
            b"keel",
            "the slice keeps the unlinked map alive"
        );
    }

    #[test]
    fn empty_file_maps_to_no_bytes() {
        let file = tempfile::tempfile().unwrap();
        assert!(map_read_only(&file, 0).unwrap().is_empty());
    }
}
