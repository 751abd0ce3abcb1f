//! The node: its configuration, its identity (`identity`), and the context every part of a
//! running node shares ([`NodeContext`]): the metadata map as group 0 last applied it, the routes
//! to the groups this node runs, and the lifecycle of partition replicas, started and stopped as
//! the map changes. It hosts the groups (`GroupHost`, `MetaHost`); `server.rs` starts it all.
//! Data directory layout: docs/FORMAT.md "Node data directory".

pub mod admission;
pub mod capacity;
pub mod identity;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_storage::{FsyncPolicy, LogOptions};
use keel_wire::Limits;
use tokio::sync::{mpsc, oneshot, watch};

use crate::group::replace::{Announcement, MemberState, Reports};
use crate::group::storage_log::GroupDir;
use crate::group::{Peers, RaftGroup};
use crate::limits::{
    DEFAULT_MAX_PARTITION_REPLICAS, DEFAULT_OFFSETS_PARTITIONS, DEFAULT_TICK, ENTRY_ENVELOPE_BYTES,
    GROUP_INBOX_CAPACITY, OFFLINE_RETRY_INTERVAL,
};
use crate::meta::actor::MetaInput;
use crate::meta::{MetaEffect, MetaState, NodeInfo, TopicInfo, META_GROUP};
use crate::partition::{PartitionHandle, PartitionInput, PartitionView};
use crate::transport::{GroupId, NodeId, TransportError};
use keel_raft::{Config, Incarnation, Membership, RaftNode, RecoveredState};

/// Group id of the node-to-node control messages (founding discovery), outside every Raft group.
pub const CONTROL_GROUP: GroupId = u64::MAX;

/// How a node runs; the CLI fills it from `keel server`'s flags (docs/CLI.md).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Address clients are told to dial; the listen address when `None`.
    pub advertise: Option<String>,
    pub tls_dir: PathBuf,
    /// Every member's peer address, this node's included (may be empty for a single node).
    pub peers: BTreeMap<NodeId, SocketAddr>,
    pub fsync: FsyncPolicy,
    pub require_client_cert: bool,
    pub limits: Limits,
    pub tick: Duration,
    pub segment_bytes: u64,
    /// Free bytes below which the node takes no new data (disk.rs); `None`: 5% of the file
    /// system, between 16 MiB and 1 GiB.
    pub min_free_bytes: Option<u64>,
    /// `keel dev` knows every founder in advance and founds without discovery.
    pub founders: Option<Vec<NodeInfo>>,
    /// Partition replicas this node accepts at most; group 0's leader refuses creates beyond
    /// it (docs/OPERATIONS.md "Capacity admission").
    pub max_partition_replicas: u64,
    /// Partitions of `__consumer_offsets` if this node creates it (as group 0's first leader of
    /// a founded cluster); fixed once the topic exists.
    pub offsets_partitions: u32,
}

impl NodeConfig {
    pub fn new(node_id: NodeId, data_dir: PathBuf, listen: SocketAddr, tls_dir: PathBuf) -> Self {
        NodeConfig {
            node_id,
            data_dir,
            listen,
            advertise: None,
            tls_dir,
            peers: BTreeMap::new(),
            fsync: FsyncPolicy::Always,
            require_client_cert: false,
            limits: Limits::default(),
            tick: DEFAULT_TICK,
            segment_bytes: keel_storage::limits::DEFAULT_SEGMENT_BYTES,
            min_free_bytes: None,
            founders: None,
            max_partition_replicas: DEFAULT_MAX_PARTITION_REPLICAS,
            offsets_partitions: DEFAULT_OFFSETS_PARTITIONS,
        }
    }

    pub(crate) fn log_options(&self) -> LogOptions {
        let max_entry_bytes =
            u32::try_from(self.limits.max_record_batch_bytes + ENTRY_ENVELOPE_BYTES)
                .unwrap_or(u32::MAX);
        LogOptions {
            segment_bytes: self.segment_bytes,
            max_entry_bytes,
            fsync: self.fsync,
            ..LogOptions::default()
        }
    }

    pub fn client_address(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Tls(#[from] crate::transport::tls::TlsError),
    #[error(transparent)]
    Storage(#[from] keel_storage::StorageError),
    #[error("{0}")]
    Invalid(String),
}

/// Where a peer message for a group goes.
#[derive(Clone)]
pub(crate) enum Route {
    Meta(mpsc::Sender<MetaInput>),
    Partition {
        handle: PartitionHandle,
        topic: String,
        partition: u32,
    },
    /// A replica this node could not open (a full disk, a damaged log): held offline while the
    /// node serves everything else, and retried ([`NodeContext::retry_offline_replicas`]). Its
    /// peers see it as down; clients are sent to the other replicas.
    Offline {
        topic: TopicInfo,
        partition: u32,
        reason: String,
    },
    /// A partition of `__consumer_offsets`: its group's coordinator when this node leads it.
    Offsets {
        handle: crate::coordinator::actor::CoordinatorHandle,
        partition: u32,
    },
    /// Claimed by a caller that is opening the replica (`NodeContext::open_replica`): nobody
    /// else may open it meanwhile. Like `Offline` to everyone else.
    Opening,
}

pub(crate) struct Shared {
    pub(crate) node_id: NodeId,
    pub(crate) incarnation: u64,
    pub(crate) config: NodeConfig,
    pub(crate) peers: Arc<Peers>,
    pub(crate) routes: Mutex<HashMap<GroupId, Route>>,
    pub(crate) meta_state: Mutex<Option<watch::Receiver<MetaState>>>,
    pub(crate) reports: Arc<Reports>,
    pub(crate) disk: Arc<crate::disk::DiskSpace>,
    pub(crate) capacity: Arc<capacity::CapacityBoard>,
}

/// What groups need of their node; cheap to clone.
#[derive(Clone)]
pub struct NodeContext {
    pub(crate) shared: Arc<Shared>,
    pub tick: Duration,
}

impl NodeContext {
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    pub fn limits(&self) -> Limits {
        self.shared.config.limits
    }

    pub fn incarnation(&self) -> Incarnation {
        self.shared.incarnation
    }

    /// The incarnation group 0's map holds for each node: what every group's membership is
    /// moved towards (group/replace.rs). Empty until the map is founded.
    pub fn desired_incarnations(&self) -> BTreeMap<NodeId, Incarnation> {
        let state = self.shared.meta_state.lock().expect("meta state lock");
        let Some(state) = state.as_ref() else {
            return BTreeMap::new();
        };
        let state = state.borrow();
        state
            .nodes
            .values()
            .map(|info| (info.node_id, info.incarnation))
            .collect()
    }

    /// Whether this node answers clients: only as a voter of group 0 under its incarnation,
    /// because only then is its map the cluster's (a replacement catching up has a partial one).
    pub fn serves_clients(&self) -> bool {
        self.shared.reports.local_state(META_GROUP) == Some(MemberState::Voter)
    }

    /// What `node` last said of itself (this node answers from its own groups).
    pub fn announcement(&self, node: NodeId) -> Option<Announcement> {
        if node == self.node_id() {
            return Some(Announcement {
                incarnation: self.incarnation(),
                groups: self.shared.reports.local(),
                heard_at: std::time::Instant::now(),
            });
        }
        self.shared.reports.heard_from(node)
    }

    /// The advertised client address of `node`, from the metadata map.
    pub fn client_address(&self, node: NodeId) -> Option<String> {
        let state = self.shared.meta_state.lock().expect("meta state lock");
        let state = state.as_ref()?.borrow();
        state
            .nodes
            .get(&node)
            .map(|info| info.client_address.clone())
    }

    /// The partition actor of `group`, if this node replicates it.
    pub fn partition(&self, group: GroupId) -> Option<PartitionHandle> {
        match self.shared.routes.lock().expect("routes lock").get(&group) {
            Some(Route::Partition { handle, .. }) => Some(handle.clone()),
            _ => None,
        }
    }

    /// This node's replica of `__consumer_offsets`' group `group`, if it has one.
    pub fn offsets_partition(
        &self,
        group: GroupId,
    ) -> Option<crate::coordinator::actor::CoordinatorHandle> {
        match self.shared.routes.lock().expect("routes lock").get(&group) {
            Some(Route::Offsets { handle, .. }) => Some(handle.clone()),
            _ => None,
        }
    }

    /// This node's replicas of `__consumer_offsets`: (partition, handle).
    pub fn local_offsets_partitions(
        &self,
    ) -> Vec<(u32, crate::coordinator::actor::CoordinatorHandle)> {
        let routes = self.shared.routes.lock().expect("routes lock");
        let mut partitions: Vec<_> = routes
            .values()
            .filter_map(|route| match route {
                Route::Offsets { handle, partition } => Some((*partition, handle.clone())),
                _ => None,
            })
            .collect();
        partitions.sort_by_key(|(partition, _)| *partition);
        partitions
    }

    /// Every partition this node replicates: (topic, partition, handle).
    pub fn local_partitions(&self) -> Vec<(String, u32, PartitionHandle)> {
        let routes = self.shared.routes.lock().expect("routes lock");
        let mut partitions: Vec<_> = routes
            .values()
            .filter_map(|route| match route {
                Route::Partition {
                    handle,
                    topic,
                    partition,
                } => Some((topic.clone(), *partition, handle.clone())),
                Route::Meta(_) | Route::Offsets { .. } | Route::Offline { .. } | Route::Opening => {
                    None
                }
            })
            .collect();
        partitions.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        partitions
    }

    pub fn peer_connected(&self, node: NodeId) -> bool {
        node == self.node_id()
            || self
                .shared
                .peers
                .senders
                .get(&node)
                .is_some_and(|sender| sender.is_connected())
    }

    /// This node as the host of its groups.
    pub(crate) fn host(&self) -> crate::group::Host {
        Arc::new(self.clone())
    }

    /// Starts the groups of `topic` this node replicates (called as group 0 applies a create,
    /// also on replay after a restart, when the group directories already exist).
    pub fn start_partitions(&self, topic: &TopicInfo) {
        for (partition, placement) in topic.partitions.iter().enumerate() {
            if !placement.replicas.contains(&self.node_id()) {
                continue;
            }
            let claimed = {
                let mut routes = self.shared.routes.lock().expect("routes lock");
                match routes.entry(placement.group) {
                    std::collections::hash_map::Entry::Occupied(_) => false,
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(Route::Opening);
                        true
                    }
                }
            };
            if claimed {
                self.open_replica(topic, partition as u32);
            }
        }
    }

    /// Opens and starts one replica whose group this caller claimed (`Route::Opening`), or
    /// holds it offline. The claim makes every opener exclusive (the metadata actor and the
    /// retry task both start replicas): two logs on one directory would corrupt it.
    fn open_replica(&self, topic: &TopicInfo, partition: u32) {
        let placement = &topic.partitions[partition as usize];
        let group = placement.group;
        let dir = GroupDir::new(group_dir(&self.shared.config, group));
        // Offsets partitions hold commands only: no record offsets to index.
        let options = if crate::coordinator::is_reserved_topic(&topic.name) {
            self.shared.config.log_options()
        } else {
            self.partition_log_options()
        };
        let opened = match tokio::task::block_in_place(|| dir.open(options)) {
            Ok(opened) => opened,
            Err(error) => {
                // Stopping here would stop every other group too, and a restart would re-apply
                // the same create and stop again: the replica waits offline.
                tracing::error!(
                    group,
                    topic = %topic.name,
                    partition,
                    %error,
                    "partition replica cannot be opened; held offline, retried every {} s",
                    OFFLINE_RETRY_INTERVAL.as_secs()
                );
                let offline = Route::Offline {
                    topic: topic.clone(),
                    partition,
                    reason: error.to_string(),
                };
                if !self.replace_claim(group, offline) {
                    self.remove_deleted_replica(group);
                }
                self.publish_offline_count();
                return;
            }
        };
        let fresh = opened.log.log().last_index() == 0 && opened.hard_state.term == 0;
        let node = self.raft_node(group, placement.membership(), opened);
        // The preferred leader of a new partition campaigns at once, so leaders spread over the
        // nodes as placed instead of going to whoever times out first.
        let campaign = fresh && placement.replicas.first() == Some(&self.node_id());
        if crate::coordinator::is_reserved_topic(&topic.name) {
            self.start_offsets_partition(topic, partition, node, campaign);
            return;
        }
        let raft_group = RaftGroup::new(
            group,
            node,
            self.host(),
            Some(crate::partition::entry::offset_key),
            placement.replicas.first().copied(),
        );
        let (inbox, receiver) = mpsc::channel(GROUP_INBOX_CAPACITY);
        let (view_sender, view) = watch::channel(PartitionView::default());
        let handle = PartitionHandle { inbox, view };
        let route = Route::Partition {
            handle,
            topic: topic.name.clone(),
            partition,
        };
        if !self.replace_claim(group, route) {
            // The topic was deleted while the log opened: never start it.
            drop(raft_group);
            self.remove_deleted_replica(group);
            return;
        }
        tracing::info!(group, topic = %topic.name, partition, "partition replica started");
        tokio::spawn(crate::partition::run(
            raft_group,
            receiver,
            view_sender,
            self.host(),
            topic.name.clone(),
            campaign,
        ));
    }

    /// Starts a replica of a `__consumer_offsets` partition: its state machine is the offsets
    /// state and, where it leads, the coordinator of its groups (coordinator/actor.rs).
    fn start_offsets_partition(
        &self,
        topic: &TopicInfo,
        partition: u32,
        node: RaftNode<crate::group::storage_log::StorageLog>,
        campaign: bool,
    ) {
        let placement = &topic.partitions[partition as usize];
        let group = placement.group;
        let raft_group = RaftGroup::new(
            group,
            node,
            self.host(),
            None,
            placement.replicas.first().copied(),
        );
        let (inbox, receiver) = mpsc::channel(GROUP_INBOX_CAPACITY);
        let (view_sender, view) = watch::channel(Default::default());
        let handle = crate::coordinator::actor::CoordinatorHandle { inbox, view };
        if !self.replace_claim(group, Route::Offsets { handle, partition }) {
            drop(raft_group);
            self.remove_deleted_replica(group);
            return;
        }
        tracing::info!(group, topic = %topic.name, partition, "consumer offsets replica started");
        tokio::spawn(crate::coordinator::actor::run(
            raft_group,
            receiver,
            view_sender,
            self.host(),
            campaign,
        ));
    }

    /// Puts `route` where this caller's `Opening` claim on `group` is; `false` (and nothing
    /// changed) if the claim is gone: the topic was deleted meanwhile.
    fn replace_claim(&self, group: GroupId, route: Route) -> bool {
        let mut routes = self.shared.routes.lock().expect("routes lock");
        match routes.get_mut(&group) {
            Some(claim @ Route::Opening) => {
                *claim = route;
                true
            }
            _ => false,
        }
    }

    fn remove_deleted_replica(&self, group: GroupId) {
        let dir = group_dir(&self.shared.config, group);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "removing a replica of a deleted topic")
            }
        }
    }

    /// Tries again to open every replica held offline; one that opens starts as usual.
    pub fn retry_offline_replicas(&self) {
        let claimed: Vec<(TopicInfo, u32)> = {
            let mut routes = self.shared.routes.lock().expect("routes lock");
            routes
                .values_mut()
                .filter(|route| matches!(route, Route::Offline { .. }))
                .filter_map(|route| match std::mem::replace(route, Route::Opening) {
                    Route::Offline {
                        topic, partition, ..
                    } => Some((topic, partition)),
                    _ => None,
                })
                .collect()
        };
        for (topic, partition) in claimed {
            // The placement as the map holds it now (a replica may have been replaced meanwhile);
            // the one recorded when it went offline if the map no longer shows that group.
            let group = topic.partitions[partition as usize].group;
            let current = self.topic(&topic.name).filter(|current| {
                current
                    .partitions
                    .get(partition as usize)
                    .is_some_and(|placement| placement.group == group)
            });
            self.open_replica(current.as_ref().unwrap_or(&topic), partition);
        }
        self.publish_offline_count();
    }

    /// `name` as this node's applied copy of the metadata map holds it.
    fn topic(&self, name: &str) -> Option<TopicInfo> {
        let state = self.shared.meta_state.lock().expect("meta state lock");
        let topic = state.as_ref()?.borrow().topics.get(name).cloned();
        topic
    }

    /// Replicas held offline on this node: (topic, partition, why).
    pub fn offline_replicas(&self) -> Vec<(String, u32, String)> {
        let routes = self.shared.routes.lock().expect("routes lock");
        let mut offline: Vec<_> = routes
            .values()
            .filter_map(|route| match route {
                Route::Offline {
                    topic,
                    partition,
                    reason,
                } => Some((topic.name.clone(), *partition, reason.clone())),
                _ => None,
            })
            .collect();
        offline.sort();
        offline
    }

    /// Replicas held offline on this node by group, with why, sorted by group.
    pub fn offline_groups(&self) -> Vec<(GroupId, String)> {
        let routes = self.shared.routes.lock().expect("routes lock");
        let mut offline: Vec<_> = routes
            .values()
            .filter_map(|route| match route {
                Route::Offline {
                    topic,
                    partition,
                    reason,
                } => (topic.partitions.get(*partition as usize))
                    .map(|placement| (placement.group, reason.clone())),
                _ => None,
            })
            .collect();
        offline.sort();
        offline
    }

    /// Measures this node's capacity now and keeps it as its own report (blocking: /proc).
    pub fn measure_capacity(&self) {
        // Opening and offline replicas count too: the map places them here, and an opening one
        // is about to hold its files.
        let replicas = (self.shared.routes.lock().expect("routes lock").values())
            .filter(|route| !matches!(route, Route::Meta(_)))
            .count() as u64;
        let hosted = capacity::Hosted {
            replicas,
            max_partition_replicas: self.shared.config.max_partition_replicas,
            offline: self.offline_groups(),
        };
        let report = capacity::measure(&self.shared.config.data_dir, hosted);
        self.shared.capacity.set_local(report);
    }

    /// The fresh capacity reports of every node, this one's included (node/admission.rs).
    pub fn capacity_reports(&self) -> BTreeMap<NodeId, capacity::CapacityReport> {
        self.shared.capacity.fresh(self.node_id())
    }

    /// The replicas `node` holds offline, by group with the reason (`None` where its report
    /// left it out), and how many in all; `None` when nothing recent was heard from it. This
    /// node answers from its routes, the others from their last report.
    pub fn offline_of(
        &self,
        node: NodeId,
        reports: &BTreeMap<NodeId, capacity::CapacityReport>,
    ) -> Option<(u64, HashMap<GroupId, Option<String>>)> {
        if node == self.node_id() {
            let offline = self.offline_groups();
            let total = offline.len() as u64;
            return Some((
                total,
                offline
                    .into_iter()
                    .map(|(group, reason)| (group, Some(reason)))
                    .collect(),
            ));
        }
        let report = reports.get(&node)?;
        Some((
            report.offline_total,
            report.offline.iter().cloned().collect(),
        ))
    }

    fn publish_offline_count(&self) {
        let offline = self.offline_groups();
        metrics::gauge!("keel_partition_replicas_offline").set(offline.len() as f64);
        self.shared.capacity.set_local_offline(offline);
    }

    /// Stops this node's replicas of a deleted topic and removes their data.
    pub fn stop_partitions(&self, topic: &TopicInfo) {
        for placement in &topic.partitions {
            let route = self
                .shared
                .routes
                .lock()
                .expect("routes lock")
                .remove(&placement.group);
            let (done, stopped) = oneshot::channel();
            let stop = match route {
                Some(Route::Partition { handle, .. }) => tokio::spawn(async move {
                    handle
                        .inbox
                        .send(PartitionInput::Shutdown { done })
                        .await
                        .is_ok()
                }),
                // Never deleted by clients (reserved); a map that deletes it anyway is obeyed.
                Some(Route::Offsets { handle, .. }) => tokio::spawn(async move {
                    (handle.inbox)
                        .send(crate::coordinator::actor::CoordinatorInput::Shutdown { done })
                        .await
                        .is_ok()
                }),
                Some(Route::Offline { .. }) => {
                    self.publish_offline_count();
                    self.remove_deleted_replica(placement.group);
                    continue;
                }
                // Its opener finds the claim gone and removes what it opened.
                Some(Route::Opening) | Some(Route::Meta(_)) | None => continue,
            };
            self.shared.reports.set_local(placement.group, None);
            let dir = group_dir(&self.shared.config, placement.group);
            tokio::spawn(async move {
                if matches!(stop.await, Ok(true)) {
                    let _ = stopped.await;
                }
                if let Err(error) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), %error, "removing a deleted partition");
                }
            });
        }
    }

    fn partition_log_options(&self) -> LogOptions {
        LogOptions {
            offset_key: Some(crate::partition::entry::offset_key),
            ..self.shared.config.log_options()
        }
    }

    /// The group's core. `membership` is its first configuration (group 0's founders, a
    /// partition's replicas as placed); configuration entries in the log override it. This
    /// node may not be a member under its incarnation (a wiped node waiting to be replaced):
    /// then it never campaigns and its votes and acknowledgements count for nothing.
    pub(crate) fn raft_node(
        &self,
        group: GroupId,
        membership: Membership,
        opened: crate::group::storage_log::OpenedGroup,
    ) -> RaftNode<crate::group::storage_log::StorageLog> {
        // Seeded per node incarnation and group: reproducible, yet different across nodes so
        // election timeouts do not collide.
        let seed = self.shared.incarnation ^ group.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut config = Config::new(self.node_id(), seed);
        config.incarnation = self.shared.incarnation;
        let recovered = RecoveredState {
            hard_state: opened.hard_state,
            // The state machine starts from the snapshot (restored by the group's actor from
            // the core's copy), then replays the log after it.
            applied_index: opened
                .snapshot
                .as_ref()
                .map_or(0, |snapshot| snapshot.meta.last_included_index),
            abstain_until_index: opened.abstain_until_index,
        };
        let node = match opened.snapshot {
            Some(snapshot) => RaftNode::with_snapshot(config, snapshot, opened.log, recovered),
            None => RaftNode::with_membership(config, membership, opened.log, recovered),
        };
        node.unwrap_or_else(|error| {
            crate::group::storage_log::fatal_message(&format!(
                "group {group} configuration: {error}"
            ))
        })
    }
}

impl crate::group::GroupHost for NodeContext {
    fn high_watermark(&self, topic: &str, partition: u32) -> Option<u64> {
        let group = self.topic(topic)?.partitions.get(partition as usize)?.group;
        let handle = self.partition(group)?;
        let high_watermark = handle.view.borrow().high_watermark;
        Some(high_watermark)
    }

    fn peers(&self) -> Arc<Peers> {
        self.shared.peers.clone()
    }

    fn fsync(&self) -> FsyncPolicy {
        self.shared.config.fsync
    }

    fn tick(&self) -> Duration {
        self.tick
    }

    fn client_address(&self, node: NodeId) -> Option<String> {
        NodeContext::client_address(self, node)
    }

    fn report_member_state(&self, group: GroupId, state: MemberState) {
        self.shared.reports.set_local(group, Some(state));
    }

    fn desired_incarnations(&self) -> BTreeMap<NodeId, Incarnation> {
        NodeContext::desired_incarnations(self)
    }

    fn peer_connected(&self, node: NodeId) -> bool {
        NodeContext::peer_connected(self, node)
    }

    fn disk(&self) -> Arc<crate::disk::DiskSpace> {
        self.shared.disk.clone()
    }

    fn topic_config(&self, topic: &str) -> Option<crate::meta::TopicConfig> {
        let state = self.shared.meta_state.lock().expect("meta state lock");
        let config = state
            .as_ref()?
            .borrow()
            .topics
            .get(topic)
            .map(|topic| topic.config);
        config
    }
}

impl crate::meta::actor::MetaHost for NodeContext {
    fn carry_out(&self, effect: MetaEffect) {
        match effect {
            MetaEffect::StartPartitions(topic) => self.start_partitions(&topic),
            MetaEffect::StopPartitions(topic) => self.stop_partitions(&topic),
        }
    }

    fn remove_unplaced_groups(&self, map: &crate::meta::MetaState) {
        let me = self.node_id();
        let placed: std::collections::BTreeSet<GroupId> = map
            .groups_of(me)
            .into_iter()
            .map(|(group, ..)| group)
            .collect();
        let groups = self.shared.config.data_dir.join("groups");
        let Ok(entries) = std::fs::read_dir(&groups) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(group) = name.to_str().and_then(|name| name.parse::<GroupId>().ok()) else {
                continue;
            };
            // Group 0 is this group; ids from `next_group` on may be created by the log after
            // the snapshot, whose replay has not happened yet.
            if group == crate::meta::META_GROUP
                || group >= map.next_group
                || placed.contains(&group)
            {
                continue;
            }
            tracing::info!(
                group,
                "removing the data of a group the map no longer places here"
            );
            self.remove_deleted_replica(group);
        }
    }
}

pub(crate) fn group_dir(config: &NodeConfig, group: GroupId) -> PathBuf {
    config.data_dir.join("groups").join(format!("{group:020}"))
}
