//! Capacity admission of a topic create (docs/OPERATIONS.md "Capacity admission"): group 0's
//! leader decides, before it proposes, whether every node the placement puts new replicas on can
//! take them, from the nodes' own capacity reports (node/capacity.rs). A pure function of the
//! map, the placement and the reports, so each limit is unit-tested here.
//!
//! Applying a create never checks capacity: apply must give the same answer on every node, and
//! capacity is a measurement that differs from node to node and from minute to minute. A create
//! admitted here whose replica still fails to open (the disk filled meanwhile) is held offline
//! by that node (node/mod.rs `open_replica`); it never stops the node.

use std::collections::BTreeMap;

use keel_wire::ErrorCode;

use super::capacity::CapacityReport;
use crate::limits::{
    CAPACITY_REPORT_MAX_AGE, DISK_RESERVE_DIVISOR, HANDLE_RESERVE_DIVISOR, MIN_DISK_RESERVE_BYTES,
    MIN_HANDLE_RESERVE, MIN_INODE_RESERVE, REPLICA_INODES, REPLICA_MEMORY_MAPS, REPLICA_OPEN_FILES,
    REPLICA_UP_FRONT_DISK_BYTES,
};
use crate::meta::MetaState;
use crate::transport::NodeId;

/// Why a create was refused: the first node (by id) over a limit, and which limit, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub node_id: NodeId,
    pub reason: String,
}

impl Refusal {
    pub fn error_code(self) -> ErrorCode {
        ErrorCode::InsufficientCapacity {
            node_id: self.node_id,
            reason: self.reason,
        }
    }
}

const MIB: f64 = (1u64 << 20) as f64;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

/// "N new partition replicas", and the others the numbers count when there are any.
fn counted(new: u64, replicas: u64, sharing: &str) -> String {
    if replicas == new {
        format!("{new} new partition replicas")
    } else {
        format!(
            "{new} new partition replicas, with {} more placed since its last measurement or on \
             nodes sharing this {sharing},",
            replicas - new
        )
    }
}

/// Admits `placement` (the replica lists the create would propose) onto the cluster `map`
/// describes, given the fresh `reports` (a node without one is refused: it may be down, and
/// nothing says it can take the replicas).
///
/// Each node's cost is its new replicas plus those the map places on it that its report does
/// not count yet (created after it measured): the measured files, maps and disk do not include
/// them. Nodes sharing a file system (or a process, under `keel dev`) are judged on the sum of
/// their costs, since they draw on the same free space (or limits).
pub fn admit(
    map: &MetaState,
    placement: &[Vec<NodeId>],
    reports: &BTreeMap<NodeId, CapacityReport>,
) -> Result<(), Refusal> {
    let mut new: BTreeMap<NodeId, u64> = BTreeMap::new();
    for &node in placement.iter().flatten() {
        *new.entry(node).or_default() += 1;
    }
    let mut placed: BTreeMap<NodeId, u64> = BTreeMap::new();
    for topic in map.topics.values() {
        for &node in topic.partitions.iter().flat_map(|p| &p.replicas) {
            *placed.entry(node).or_default() += 1;
        }
    }
    let mut cost: BTreeMap<NodeId, u64> = BTreeMap::new();
    for (&node, &count) in &new {
        let refuse = |reason: String| {
            Err(Refusal {
                node_id: node,
                reason,
            })
        };
        let Some(report) = reports.get(&node) else {
            return refuse(format!(
                "no capacity report from node {node} in the last {} s (is it running?); \
                 creates that place replicas on it are refused until it reports",
                CAPACITY_REPORT_MAX_AGE.as_secs()
            ));
        };
        let hosted = placed.get(&node).copied().unwrap_or(0);
        if hosted + count > report.max_partition_replicas {
            return refuse(format!(
                "partition cap: it would host {} partition replicas ({hosted} now + {count} new), \
                 over its max_partition_replicas of {}",
                hosted + count,
                report.max_partition_replicas
            ));
        }
        cost.insert(node, hosted.saturating_sub(report.replicas) + count);
    }
    // Costs summed over every node (with new replicas) that shares a resource with `node`.
    let shared = |node: NodeId, same: &dyn Fn(&CapacityReport) -> bool| -> u64 {
        cost.iter()
            .filter(|(other, _)| reports.get(other).is_some_and(same))
            .map(|(_, &replicas)| replicas)
            .sum::<u64>()
            .max(cost[&node])
    };
    for (&node, &count) in &new {
        let report = &reports[&node];
        let refuse = |reason: String| {
            Err(Refusal {
                node_id: node,
                reason,
            })
        };
        if let Some(disk) = report.disk {
            let replicas = shared(node, &|other| {
                other.disk.is_some_and(|d| d.key() == disk.key())
            });
            let counted = counted(count, replicas, "file system");
            let need = replicas.saturating_mul(REPLICA_UP_FRONT_DISK_BYTES);
            let reserve = (disk.total_bytes / DISK_RESERVE_DIVISOR).max(MIN_DISK_RESERVE_BYTES);
            if disk.free_bytes < need.saturating_add(reserve) {
                return refuse(format!(
                    "free disk: its data directory's file system has {} free, and {counted} need \
                     {} up front ({} KiB each) with {} kept free in reserve",
                    mib(disk.free_bytes),
                    mib(need),
                    REPLICA_UP_FRONT_DISK_BYTES >> 10,
                    mib(reserve)
                ));
            }
            if let Some(free_inodes) = disk.free_inodes {
                let need = replicas.saturating_mul(REPLICA_INODES);
                if free_inodes < need.saturating_add(MIN_INODE_RESERVE) {
                    return refuse(format!(
                        "inodes: its data directory's file system has {free_inodes} free inodes, \
                         and {counted} need {need} ({REPLICA_INODES} each) with \
                         {MIN_INODE_RESERVE} kept in reserve"
                    ));
                }
            }
        }
        let replicas = shared(node, &|other| other.process == report.process);
        let counted = counted(count, replicas, "process");
        if let (Some(open), Some(limit)) = (report.open_files, report.max_open_files) {
            let more = replicas.saturating_mul(REPLICA_OPEN_FILES);
            let reserve = (limit / HANDLE_RESERVE_DIVISOR).max(MIN_HANDLE_RESERVE);
            if open.saturating_add(more).saturating_add(reserve) > limit {
                return refuse(format!(
                    "open files: its process has {open} open, and {counted} would open {more} \
                     more ({REPLICA_OPEN_FILES} each), over its open-file limit of {limit} \
                     (ulimit -n) less {reserve} kept in reserve"
                ));
            }
        }
        if let (Some(maps), Some(limit)) = (report.memory_maps, report.max_memory_maps) {
            let more = replicas.saturating_mul(REPLICA_MEMORY_MAPS);
            let reserve = (limit / HANDLE_RESERVE_DIVISOR).max(MIN_HANDLE_RESERVE);
            if maps.saturating_add(more).saturating_add(reserve) > limit {
                return refuse(format!(
                    "memory maps: its process has {maps} maps, and {counted} would add {more} \
                     ({REPLICA_MEMORY_MAPS} each), over vm.max_map_count of {limit} less \
                     {reserve} kept in reserve"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{MetaCommand, NodeInfo};
    use crate::node::capacity::DiskSpace;

    const GIB: u64 = 1 << 30;

    fn map(nodes: u64) -> MetaState {
        let mut state = MetaState::new();
        let nodes = (1..=nodes)
            .map(|node_id| NodeInfo {
                node_id,
                incarnation: node_id,
                peer_address: String::new(),
                client_address: String::new(),
            })
            .collect();
        state.apply(MetaCommand::Found { nodes }).unwrap();
        state
    }

    /// A roomy node alone in its process and on its file system.
    fn roomy(node: NodeId) -> CapacityReport {
        CapacityReport {
            process: node,
            disk: Some(DiskSpace {
                host: 1,
                fsid: node,
                free_bytes: 100 * GIB,
                total_bytes: 200 * GIB,
                free_inodes: Some(10_000_000),
            }),
            open_files: Some(100),
            max_open_files: Some(1 << 20),
            memory_maps: Some(100),
            max_memory_maps: Some(65_530),
            replicas: 0,
            max_partition_replicas: 1000,
            offline_total: 0,
            offline: Vec::new(),
        }
    }

    fn reports(
        nodes: u64,
        change: impl Fn(NodeId, &mut CapacityReport),
    ) -> BTreeMap<NodeId, CapacityReport> {
        (1..=nodes)
            .map(|node| {
                let mut report = roomy(node);
                change(node, &mut report);
                (node, report)
            })
            .collect()
    }

    fn refused(result: Result<(), Refusal>) -> Refusal {
        result.expect_err("the create should have been refused")
    }

    #[test]
    fn a_create_that_fits_everywhere_is_admitted() {
        let map = map(3);
        let placement = map.place(300, 3);
        assert_eq!(admit(&map, &placement, &reports(3, |_, _| {})), Ok(()));
    }

    #[test]
    fn the_partition_cap_counts_what_the_map_already_places() {
        let mut map = map(3);
        let placement = map.place(600, 3);
        let reports = reports(3, |node, report| {
            if node == 2 {
                report.max_partition_replicas = 1000;
            } else {
                report.max_partition_replicas = 10_000;
            }
        });
        assert_eq!(admit(&map, &placement, &reports), Ok(()));
        map.apply(MetaCommand::CreateTopic {
            name: "first".into(),
            replication_factor: 3,
            placement,
        })
        .unwrap();
        let placement = map.place(401, 3);
        let refusal = refused(admit(&map, &placement, &reports));
        assert_eq!(refusal.node_id, 2);
        assert!(
            refusal
                .reason
                .contains("1001 partition replicas (600 now + 401 new)")
                && refusal.reason.contains("max_partition_replicas of 1000"),
            "{}",
            refusal.reason
        );
        assert_eq!(admit(&map, &map.place(400, 3), &reports), Ok(()));
    }

    #[test]
    fn free_disk_must_cover_an_extent_per_new_replica_and_the_reserve() {
        let map = map(3);
        // 3000 partitions over 3 nodes with 3 replicas: 3000 new replicas on each node.
        let placement = map.place(3000, 3);
        let small = |free: u64| {
            reports(3, move |node, report| {
                report.max_partition_replicas = 10_000;
                if node == 3 {
                    let disk = report.disk.as_mut().unwrap();
                    disk.total_bytes = 128 << 20;
                    disk.free_bytes = free;
                }
            })
        };
        let refusal = refused(admit(&map, &placement, &small(100 << 20)));
        assert_eq!(refusal.node_id, 3);
        assert!(
            refusal.reason.starts_with("free disk:"),
            "{}",
            refusal.reason
        );
        assert!(
            refusal
                .reason
                .contains("100.0 MiB free, and 3000 new partition replicas need"),
            "{}",
            refusal.reason
        );
        // Three partitions fit 100 MiB, but not 3 MiB plus the 8 MiB reserve.
        let few = map.place(3, 3);
        assert_eq!(admit(&map, &few, &small(100 << 20)), Ok(()));
        assert!(refused(admit(&map, &few, &small(10 << 20)))
            .reason
            .contains("reserve"));
        let exact = 3 * REPLICA_UP_FRONT_DISK_BYTES + MIN_DISK_RESERVE_BYTES;
        assert_eq!(admit(&map, &few, &small(exact)), Ok(()));
        assert_eq!(refused(admit(&map, &few, &small(exact - 1))).node_id, 3);
    }

    #[test]
    fn nodes_on_one_file_system_or_in_one_process_share_its_limits() {
        let map = map(3);
        let placement = map.place(10, 3);
        // Each node alone needs 10 extents; together they need 30.
        let free = 20 * REPLICA_UP_FRONT_DISK_BYTES + MIN_DISK_RESERVE_BYTES;
        let shared_disk = reports(3, |_, report| {
            let disk = report.disk.as_mut().unwrap();
            (disk.fsid, disk.total_bytes, disk.free_bytes) = (7, 128 << 20, free);
        });
        let refusal = refused(admit(&map, &placement, &shared_disk));
        assert!(
            refusal
                .reason
                .contains("10 new partition replicas, with 20 more placed since"),
            "{}",
            refusal.reason
        );
        let separate = reports(3, |_, report| {
            let disk = report.disk.as_mut().unwrap();
            (disk.total_bytes, disk.free_bytes) = (128 << 20, free);
        });
        assert_eq!(admit(&map, &placement, &separate), Ok(()));

        // keel dev: one process, one open-file limit. 100 partitions x 3 nodes x 3 files.
        let placement = map.place(100, 3);
        let one_process = |limit: u64| {
            reports(3, move |_, report| {
                (report.process, report.open_files, report.max_open_files) =
                    (42, Some(100), Some(limit));
            })
        };
        let refusal = refused(admit(&map, &placement, &one_process(1000)));
        assert_eq!(refusal.node_id, 1);
        assert!(
            refusal.reason.starts_with("open files:")
                && refusal
                    .reason
                    .contains("100 new partition replicas, with 200 more placed since its last measurement or on nodes sharing this process, would open 900 more"),
            "{}",
            refusal.reason
        );
        // 100 open + 900 + a reserve of max(256, limit / 10).
        assert_eq!(admit(&map, &placement, &one_process(1256)), Ok(()));
        assert!(admit(&map, &placement, &one_process(1255)).is_err());
    }

    #[test]
    fn open_files_maps_and_inodes_each_refuse() {
        let map = map(3);
        let placement = map.place(1000, 3);
        let files = reports(3, |node, report| {
            if node == 1 {
                report.max_open_files = Some(1024);
            }
        });
        let refusal = refused(admit(&map, &placement, &files));
        assert_eq!(refusal.node_id, 1);
        assert!(
            refusal
                .reason
                .contains("open-file limit of 1024 (ulimit -n)"),
            "{}",
            refusal.reason
        );

        let maps = reports(3, |node, report| {
            if node == 2 {
                report.max_memory_maps = Some(1200);
            }
        });
        let refusal = refused(admit(&map, &placement, &maps));
        assert_eq!(refusal.node_id, 2);
        assert!(
            refusal.reason.starts_with("memory maps:")
                && refusal.reason.contains("vm.max_map_count of 1200"),
            "{}",
            refusal.reason
        );

        let inodes = reports(3, |node, report| {
            if node == 3 {
                report.disk.as_mut().unwrap().free_inodes = Some(4000);
            }
        });
        let refusal = refused(admit(&map, &placement, &inodes));
        assert_eq!(refusal.node_id, 3);
        assert!(
            refusal.reason.starts_with("inodes:") && refusal.reason.contains("4000 free inodes"),
            "{}",
            refusal.reason
        );

        // What a node could not measure is not checked.
        let unmeasured = reports(3, |_, report| {
            report.max_open_files = None;
            report.memory_maps = None;
            report.disk.as_mut().unwrap().free_inodes = None;
        });
        assert_eq!(admit(&map, &placement, &unmeasured), Ok(()));
    }

    #[test]
    fn replicas_placed_after_a_node_measured_count_against_it() {
        let mut map = map(1);
        let placement = map.place(500, 1);
        map.apply(MetaCommand::CreateTopic {
            name: "recent".into(),
            replication_factor: 1,
            placement,
        })
        .unwrap();
        // The report predates the 500 replicas: its open files do not include them, so they
        // cost like new ones. Without that, 100 open + 300 new would fit 1500.
        let stale = reports(1, |_, report| {
            report.open_files = Some(100);
            report.max_open_files = Some(1500);
            report.replicas = 0;
        });
        let placement = map.place(100, 1);
        let refusal = refused(admit(&map, &placement, &stale));
        assert!(
            refusal.reason.contains(
                "100 new partition replicas, with 500 more placed since its last measurement"
            ) && refusal.reason.contains("would open 1800 more"),
            "{}",
            refusal.reason
        );
        // Once it measured with them open, only the new ones are added to what it counted.
        let current = reports(1, |_, report| {
            report.open_files = Some(1100);
            report.max_open_files = Some(1500);
            report.replicas = 500;
        });
        let refusal = refused(admit(&map, &placement, &current));
        assert!(
            refusal
                .reason
                .contains("100 new partition replicas would open 300 more"),
            "{}",
            refusal.reason
        );
        let roomier = reports(1, |_, report| {
            report.open_files = Some(1100);
            report.max_open_files = Some(1656);
            report.replicas = 500;
        });
        assert_eq!(admit(&map, &placement, &roomier), Ok(()));
    }

    #[test]
    fn a_node_without_a_fresh_report_is_refused_and_named() {
        let map = map(3);
        let placement = map.place(1, 3);
        let mut reports = reports(3, |_, _| {});
        reports.remove(&2);
        let refusal = refused(admit(&map, &placement, &reports));
        assert_eq!(refusal.node_id, 2);
        assert!(
            refusal.reason.starts_with("no capacity report from node 2"),
            "{}",
            refusal.reason
        );
        // A create that places nothing on it does not need it.
        let one = map.place(1, 1);
        assert_eq!(one, vec![vec![1]]);
        assert_eq!(admit(&map, &one, &reports), Ok(()));
        assert_eq!(
            refused(admit(&map, &placement, &reports)).error_code(),
            ErrorCode::InsufficientCapacity {
                node_id: 2,
                reason: refusal.reason
            }
        );
    }
}
