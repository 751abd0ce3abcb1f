//! The free space of the file system under a node's data directory, and the line below which
//! the node stops taking new data (docs/OPERATIONS.md "A full disk").
//!
//! Below `min_free_bytes` a node refuses produce as partition leader (`DiskFull`, retriable) and
//! refuses to append replicated data as a follower; everything else still writes: the metadata
//! group, the partitions' control entries (a new log start from retention), snapshots. So the
//! space under the line is a reserve that keeps the node able to free space and to take part in
//! consensus, and a full disk degrades instead of stopping the node. The free space is sampled
//! once a second ([`DiskSpace::refresh`]) and, in between, every append takes what it wrote off
//! the sample ([`DiskSpace::note_written`]), so a fast producer cannot run through the reserve
//! between two samples; an append that meets ENOSPC anyway marks the disk full at once
//! ([`DiskSpace::note_full`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The default line: 5% of the file system, at most 1 GiB, at least 16 MiB (what one partition's
/// writes in flight and a round of snapshots need on a small disk).
pub fn default_min_free_bytes(total_bytes: u64) -> u64 {
    (total_bytes / 20).clamp(16 << 20, 1 << 30)
}

/// The data directory's free space, shared by every group of a node.
#[derive(Debug)]
pub struct DiskSpace {
    path: PathBuf,
    min_free_bytes: u64,
    available_bytes: AtomicU64,
    /// Below the line: data writes are refused.
    refusing: AtomicBool,
}

impl DiskSpace {
    /// Measures `path`'s file system now. `min_free_bytes` of `None` takes
    /// [`default_min_free_bytes`].
    pub fn new(path: &Path, min_free_bytes: Option<u64>) -> std::io::Result<DiskSpace> {
        let (available, total) = measure(path)?;
        let space = DiskSpace {
            path: path.to_path_buf(),
            min_free_bytes: min_free_bytes.unwrap_or_else(|| default_min_free_bytes(total)),
            available_bytes: AtomicU64::new(available),
            refusing: AtomicBool::new(false),
        };
        space.update(available);
        Ok(space)
    }

    /// A disk that never refuses (tests of other parts, the simulator).
    pub fn unlimited() -> DiskSpace {
        DiskSpace {
            path: PathBuf::new(),
            min_free_bytes: 0,
            available_bytes: AtomicU64::new(u64::MAX),
            refusing: AtomicBool::new(false),
        }
    }

    pub fn min_free_bytes(&self) -> u64 {
        self.min_free_bytes
    }

    pub fn available_bytes(&self) -> u64 {
        self.available_bytes.load(Ordering::Relaxed)
    }

    /// Whether new data may be written (the free space is at or above the line).
    pub fn accepts_data(&self) -> bool {
        !self.refusing.load(Ordering::Relaxed)
    }

    /// Samples the free space again. A failed `statvfs` keeps the last answer: it says nothing
    /// about the space, and the appends themselves still meet a real ENOSPC.
    pub fn refresh(&self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        match measure(&self.path) {
            Ok((available, _)) => self.update(available),
            Err(error) => tracing::warn!(path = %self.path.display(), %error, "statvfs failed"),
        }
    }

    /// An append wrote `bytes`: the free space is that much smaller until the next sample says
    /// otherwise (segments take their disk in whole extents, so the sample may show less).
    pub fn note_written(&self, bytes: u64) {
        let before = self
            .available_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |available| {
                Some(available.saturating_sub(bytes))
            })
            .unwrap_or_else(|available| available);
        let after = before.saturating_sub(bytes);
        if after < self.min_free_bytes && before >= self.min_free_bytes {
            self.cross_line(after);
        }
    }

    /// An append met ENOSPC: refuse data until a sample shows space again.
    pub fn note_full(&self) {
        if !self.refusing.swap(true, Ordering::Relaxed) {
            tracing::warn!(path = %self.path.display(), "the disk is full: new data is refused");
            metrics::gauge!("keel_disk_full").set(1.0);
        }
    }

    fn update(&self, available: u64) {
        self.available_bytes.store(available, Ordering::Relaxed);
        metrics::gauge!("keel_disk_available_bytes").set(available as f64);
        if available < self.min_free_bytes {
            self.cross_line(available);
        } else if self.refusing.swap(false, Ordering::Relaxed) {
            tracing::info!(path = %self.path.display(), available, "free space back above the line: data is taken again");
            metrics::gauge!("keel_disk_full").set(0.0);
        }
    }

    fn cross_line(&self, available: u64) {
        if !self.refusing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                path = %self.path.display(),
                available,
                min_free_bytes = self.min_free_bytes,
                "free space below the line: new data is refused until retention or an operator frees space"
            );
            metrics::gauge!("keel_disk_full").set(1.0);
        }
    }
}

/// (available to unprivileged writers, total) bytes of `path`'s file system.
fn measure(path: &Path) -> std::io::Result<(u64, u64)> {
    let stat = rustix::fs::statvfs(path)?;
    Ok((
        stat.f_bavail.saturating_mul(stat.f_frsize),
        stat.f_blocks.saturating_mul(stat.f_frsize),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_line_is_five_percent_within_bounds() {
        assert_eq!(default_min_free_bytes(100 << 20), 16 << 20);
        assert_eq!(default_min_free_bytes(1 << 30), (1 << 30) / 20);
        assert_eq!(default_min_free_bytes(1 << 40), 1 << 30);
    }

    #[test]
    fn data_is_refused_below_the_line_and_taken_again_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::new(dir.path(), Some(0)).unwrap();
        assert!(space.accepts_data());
        space.note_full();
        assert!(!space.accepts_data(), "an ENOSPC refuses at once");
        space.refresh();
        assert!(space.accepts_data(), "a sample with space takes data again");
        let line = space.available_bytes() / 2;
        let space = DiskSpace::new(dir.path(), Some(line)).unwrap();
        space.note_written(line / 2);
        assert!(space.accepts_data(), "still above the line");
        space.note_written(line);
        assert!(
            !space.accepts_data(),
            "writes took it below the line before a sample"
        );
        let huge = DiskSpace::new(dir.path(), Some(u64::MAX)).unwrap();
        assert!(!huge.accepts_data());
        assert!(huge.available_bytes() > 0);
    }
}
