//! What this node can still take on, as it measures it itself: free disk and inodes on its data
//! directory's file system, open files against the open-file limit, memory maps against
//! `vm.max_map_count`, the partition replicas it hosts against its cap, and the replicas it
//! holds offline. A [`CapacityReport`] travels to every peer in the announcement the node sends
//! twice a second anyway (node/identity.rs), not through the Raft log: it is a measurement that
//! is stale within seconds, and group 0's leader only needs the latest one when it admits a
//! create (node/admission.rs). [`CapacityBoard`] keeps the latest report of each node.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::limits::{
    CAPACITY_REPORT_MAX_AGE, MAX_OFFLINE_REASON_BYTES, MAX_REPORTED_OFFLINE_REASONS,
};
use crate::transport::{GroupId, NodeId};

/// One node's capacity as it measured it. Values the node could not measure are `None`, and
/// admission does not check them (the node logged why when it measured).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityReport {
    /// Random per process. Nodes with the same value run in one process (`keel dev`) and share
    /// its open-file limit and memory maps.
    pub process: u64,
    /// The data directory's file system; `None` if `statvfs` failed.
    pub disk: Option<DiskSpace>,
    pub open_files: Option<u64>,
    /// The soft `RLIMIT_NOFILE`; `None` when unlimited or unknown.
    pub max_open_files: Option<u64>,
    pub memory_maps: Option<u64>,
    /// `vm.max_map_count`.
    pub max_memory_maps: Option<u64>,
    /// Partition replicas the node hosted when it measured (open, opening or offline): what the
    /// measured numbers include.
    pub replicas: u64,
    /// The node's `max_partition_replicas`.
    pub max_partition_replicas: u64,
    /// Replicas held offline, all of them counted ...
    pub offline_total: u64,
    /// ... each listed by group, with its reason for the first
    /// [`MAX_REPORTED_OFFLINE_REASONS`] only.
    pub offline: Vec<(GroupId, Option<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpace {
    /// The host's boot id (first 64 bits) and the file system id: nodes on one host and one file
    /// system share its free space.
    pub host: u64,
    pub fsid: u64,
    /// Bytes a non-root writer may still allocate.
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// `None` for file systems without a fixed inode table (btrfs reports none).
    pub free_inodes: Option<u64>,
}

impl DiskSpace {
    /// Nodes with equal keys draw on the same free space.
    pub fn key(&self) -> (u64, u64) {
        (self.host, self.fsid)
    }
}

/// What the node knows of itself that /proc does not: passed in by the caller.
pub struct Hosted {
    pub replicas: u64,
    pub max_partition_replicas: u64,
    pub offline: Vec<(GroupId, String)>,
}

/// Measures this process and the file system of `data_dir`. Blocking (reads /proc).
pub fn measure(data_dir: &Path, hosted: Hosted) -> CapacityReport {
    let (offline_total, offline) = reported_offline(hosted.offline);
    CapacityReport {
        process: process_token(),
        disk: disk_space(data_dir),
        open_files: count_entries("/proc/self/fd"),
        max_open_files: rustix::process::getrlimit(rustix::process::Resource::Nofile).current,
        memory_maps: count_lines("/proc/self/maps"),
        max_memory_maps: read_number("/proc/sys/vm/max_map_count"),
        replicas: hosted.replicas,
        max_partition_replicas: hosted.max_partition_replicas,
        offline_total,
        offline,
    }
}

/// All offline replicas counted, each listed, the reasons of the first ones kept.
fn reported_offline(offline: Vec<(GroupId, String)>) -> (u64, Vec<(GroupId, Option<String>)>) {
    let total = offline.len() as u64;
    let listed = offline
        .into_iter()
        .enumerate()
        .map(|(index, (group, reason))| {
            let reason = (index < MAX_REPORTED_OFFLINE_REASONS).then(|| truncated(reason));
            (group, reason)
        })
        .collect();
    (total, listed)
}

fn truncated(mut reason: String) -> String {
    if reason.len() > MAX_OFFLINE_REASON_BYTES {
        let mut end = MAX_OFFLINE_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str("...");
    }
    reason
}

fn process_token() -> u64 {
    static TOKEN: OnceLock<u64> = OnceLock::new();
    *TOKEN.get_or_init(|| rand::random::<u64>().max(1))
}

/// Logs a measurement that cannot be made the first time only: it is retried every 2 s and
/// would otherwise bury the log.
fn warn_once(logged: &AtomicBool, what: &str, error: &dyn std::fmt::Display) {
    if !logged.swap(true, Ordering::Relaxed) {
        tracing::warn!(%error, "cannot measure {what}; admission will not check it");
    }
}

fn disk_space(data_dir: &Path) -> Option<DiskSpace> {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    let stat = match rustix::fs::statvfs(data_dir) {
        Ok(stat) => stat,
        Err(error) => {
            let what = format!("free disk of {} (statvfs)", data_dir.display());
            warn_once(&LOGGED, &what, &error);
            return None;
        }
    };
    Some(DiskSpace {
        host: boot_id(),
        fsid: stat.f_fsid,
        free_bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
        total_bytes: stat.f_blocks.saturating_mul(stat.f_frsize),
        free_inodes: (stat.f_files > 0).then_some(stat.f_favail),
    })
}

/// The first 64 bits of the kernel's boot id: the same for every process on this host, and
/// different on another host (or after a reboot, when nothing is shared any more anyway).
fn boot_id() -> u64 {
    static BOOT_ID: OnceLock<u64> = OnceLock::new();
    *BOOT_ID.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let hex: String = text
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(16)
            .collect();
        u64::from_str_radix(&hex, 16).unwrap_or(0)
    })
}

fn count_entries(dir: &str) -> Option<u64> {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    match std::fs::read_dir(dir) {
        // The directory handle read_dir holds is one of the entries: not the node's own.
        Ok(entries) => Some((entries.count() as u64).saturating_sub(1)),
        Err(error) => {
            warn_once(&LOGGED, &format!("open files ({dir})"), &error);
            None
        }
    }
}

fn count_lines(path: &str) -> Option<u64> {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) => {
            warn_once(&LOGGED, &format!("memory maps ({path})"), &error);
            return None;
        }
    };
    // Thousands of maps are hundreds of KB of text: count as it streams, never hold it.
    let mut buffer = [0u8; 64 * 1024];
    let mut lines = 0u64;
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return Some(lines),
            Ok(read) => lines += buffer[..read].iter().filter(|&&b| b == b'\n').count() as u64,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => {
                warn_once(&LOGGED, &format!("memory maps ({path})"), &error);
                return None;
            }
        }
    }
}

/// `vm.max_map_count`; `None` (and a warning, once) when it cannot be read.
fn read_number(path: &str) -> Option<u64> {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    let read = std::fs::read_to_string(path).map_err(|error| error.to_string());
    match read.and_then(|text| {
        text.trim()
            .parse()
            .map_err(|_| format!("not a number: {text:?}"))
    }) {
        Ok(number) => Some(number),
        Err(error) => {
            warn_once(&LOGGED, path, &error);
            None
        }
    }
}

/// The latest capacity report of this node (written by its measuring task) and of each peer
/// (written by the task that receives announcements), with when each was taken or heard.
#[derive(Debug, Default)]
pub struct CapacityBoard {
    local: Mutex<Option<(CapacityReport, Instant)>>,
    peers: Mutex<HashMap<NodeId, (CapacityReport, Instant)>>,
}

impl CapacityBoard {
    pub fn set_local(&self, report: CapacityReport) {
        *self.local.lock().expect("capacity lock") = Some((report, Instant::now()));
    }

    /// A replica went offline or came back: the next announcement says so at once rather than
    /// after the next measurement (a node just restarted would otherwise report the empty list
    /// it measured before group 0 re-applied its topics).
    pub fn set_local_offline(&self, offline: Vec<(GroupId, String)>) {
        if let Some((report, _)) = self.local.lock().expect("capacity lock").as_mut() {
            (report.offline_total, report.offline) = reported_offline(offline);
        }
    }

    pub fn local(&self) -> Option<CapacityReport> {
        self.local
            .lock()
            .expect("capacity lock")
            .as_ref()
            .map(|(report, _)| report.clone())
    }

    pub fn record(&self, node: NodeId, report: CapacityReport) {
        self.peers
            .lock()
            .expect("capacity lock")
            .insert(node, (report, Instant::now()));
    }

    /// Every report younger than [`CAPACITY_REPORT_MAX_AGE`], this node's (as `me`) included.
    pub fn fresh(&self, me: NodeId) -> BTreeMap<NodeId, CapacityReport> {
        let young = |at: &Instant| at.elapsed() <= CAPACITY_REPORT_MAX_AGE;
        let mut fresh: BTreeMap<NodeId, CapacityReport> = self
            .peers
            .lock()
            .expect("capacity lock")
            .iter()
            .filter(|(_, (_, at))| young(at))
            .map(|(&node, (report, _))| (node, report.clone()))
            .collect();
        if let Some((report, at)) = self.local.lock().expect("capacity lock").as_ref() {
            if young(at) {
                fresh.insert(me, report.clone());
            }
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measuring_this_process_sees_its_files_maps_and_disk() {
        let dir = tempfile::tempdir().unwrap();
        let hosted = Hosted {
            replicas: 2,
            max_partition_replicas: 7,
            offline: vec![(5, "x".repeat(1000)), (9, "bad".into())],
        };
        let report = measure(dir.path(), hosted);
        let disk = report.disk.expect("statvfs on a temp dir");
        assert!(disk.total_bytes >= disk.free_bytes && disk.total_bytes > 0);
        assert!(
            report.open_files.unwrap() >= 3,
            "stdin, stdout, stderr at least"
        );
        assert!(
            report.memory_maps.unwrap() > 10,
            "the binary and its libraries"
        );
        assert!(report.max_memory_maps.unwrap() > 0);
        assert_eq!((report.replicas, report.max_partition_replicas), (2, 7));
        assert_eq!(report.offline_total, 2);
        let long = report.offline[0].1.as_ref().unwrap();
        assert!(long.len() <= MAX_OFFLINE_REASON_BYTES + 3 && long.ends_with("..."));
        assert_eq!(report.offline[1], (9, Some("bad".into())));
        // Same process, same token.
        let again = measure(
            dir.path(),
            Hosted {
                replicas: 0,
                max_partition_replicas: 1,
                offline: Vec::new(),
            },
        );
        assert_eq!(again.process, report.process);
        assert_eq!(again.disk.unwrap().key(), disk.key());
    }

    #[test]
    fn only_fresh_reports_count() {
        let dir = tempfile::tempdir().unwrap();
        let report = measure(
            dir.path(),
            Hosted {
                replicas: 0,
                max_partition_replicas: 1,
                offline: Vec::new(),
            },
        );
        let board = CapacityBoard::default();
        assert!(board.fresh(1).is_empty());
        board.set_local(report.clone());
        board.record(2, report.clone());
        board.peers.lock().unwrap().insert(
            3,
            (
                report.clone(),
                Instant::now() - CAPACITY_REPORT_MAX_AGE - std::time::Duration::from_secs(1),
            ),
        );
        let fresh = board.fresh(1);
        assert_eq!(fresh.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        // A replica going offline shows in the next announcement, before the next measurement.
        board.set_local_offline(vec![(3, "cannot open".into())]);
        let local = board.local().unwrap();
        assert_eq!(local.offline_total, 1);
        assert_eq!(local.offline, vec![(3, Some("cannot open".to_string()))]);
    }
}
