//! The node driver (docs/ARCHITECTURE.md "Crates" and "The driver contract"): everything one
//! `keel server` process runs. It owns the node's data directory and identity, the transport, the
//! founding of a new cluster, the routing of peer messages to Raft groups, and the lifecycle of
//! those groups (group 0 always; one per partition replica this node holds, started and stopped as
//! the metadata map changes).
//!
//! - `storage_log`: a group's files, and the core's `RaftLog` over keel-storage.
//! - `group`: the `Ready` loop every group shares (persist, send, apply).
//! - `identity`: the node's identity and founding records, the founding rule, and the hellos
//!   nodes keep exchanging afterwards.
//! - `replace`: node replacement (docs/OPERATIONS.md "Replacing a node") as reconciliation towards
//!   group 0's map.
//!
//! Each group runs as one tokio task (an actor) that owns its core and its log; requests reach
//! it through a bounded inbox. Data directory layout: docs/FORMAT.md "Node data directory".

pub mod actor;
pub mod driver;
pub mod group;
pub mod identity;
pub mod pipeline;
pub mod raft_codec;
pub mod replace;
pub mod storage_log;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_storage::{FsyncPolicy, LogOptions};
use keel_wire::Limits;
use tokio::sync::{mpsc, oneshot, watch};

use crate::limits::{
    CONTROL_CHANNEL_CAPACITY, DEFAULT_TICK, ENTRY_ENVELOPE_BYTES, GROUP_INBOX_CAPACITY,
    GROUP_SHUTDOWN_TIMEOUT, TRANSPORT_DRAIN_TIMEOUT,
};
use crate::meta::actor::{MetaHandle, MetaInput};
use crate::meta::{MetaState, NodeInfo, TopicInfo, META_GROUP};
use crate::partition::{PartitionHandle, PartitionInput, PartitionView};
use crate::transport::{
    ClientCertPolicy, GroupId, NodeId, NodeTls, Transport, TransportConfig, TransportError,
};
use group::{decode_coalesced, decode_messages, PeerBatch, Peers, RaftGroup, COALESCED_BASE};
use identity::{Founding, Identity};
use keel_raft::{Config, Incarnation, Membership, RaftNode, RecoveredState};
use replace::{Announcement, MemberState, Reports};
use storage_log::{fatal_storage_error, GroupDir};

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
    /// `keel dev` knows every founder in advance and founds without discovery.
    pub founders: Option<Vec<NodeInfo>>,
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
            founders: None,
        }
    }

    fn log_options(&self) -> LogOptions {
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
enum Route {
    Meta(mpsc::Sender<MetaInput>),
    Partition {
        handle: PartitionHandle,
        topic: String,
        partition: u32,
    },
}

struct Shared {
    node_id: NodeId,
    incarnation: u64,
    config: NodeConfig,
    peers: Arc<Peers>,
    routes: Mutex<HashMap<GroupId, Route>>,
    meta_state: Mutex<Option<watch::Receiver<MetaState>>>,
    reports: Arc<Reports>,
}

/// What groups need of their node; cheap to clone.
#[derive(Clone)]
pub struct NodeContext {
    shared: Arc<Shared>,
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

    pub(crate) fn peers(&self) -> Arc<Peers> {
        self.shared.peers.clone()
    }

    pub(crate) fn fsync(&self) -> FsyncPolicy {
        self.shared.config.fsync
    }

    /// The incarnation group 0's map holds for each node: what every group's membership is
    /// moved towards (node/replace.rs). Empty until the map is founded.
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

    pub(crate) fn report_member_state(&self, group: GroupId, state: MemberState) {
        self.shared.reports.set_local(group, Some(state));
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
                Route::Meta(_) => None,
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

    /// Starts the groups of `topic` this node replicates (called as group 0 applies a create,
    /// also on replay after a restart, when the group directories already exist).
    pub fn start_partitions(&self, topic: &TopicInfo) {
        for (partition, placement) in topic.partitions.iter().enumerate() {
            if !placement.replicas.contains(&self.node_id()) {
                continue;
            }
            if self
                .shared
                .routes
                .lock()
                .expect("routes lock")
                .contains_key(&placement.group)
            {
                continue;
            }
            let dir = GroupDir::new(group_dir(&self.shared.config, placement.group));
            let opened = tokio::task::block_in_place(|| dir.open(self.partition_log_options()))
                .unwrap_or_else(|error| fatal_storage_error("opening a partition", &error));
            let fresh = opened.log.log().last_index() == 0 && opened.hard_state.term == 0;
            let node = self.raft_node(placement.group, placement.membership(), opened);
            let group = RaftGroup::new(
                placement.group,
                node,
                self.clone(),
                true,
                placement.replicas.first().copied(),
            );
            let (inbox, receiver) = mpsc::channel(GROUP_INBOX_CAPACITY);
            let (view_sender, view) = watch::channel(PartitionView::default());
            let handle = PartitionHandle { inbox, view };
            self.shared.routes.lock().expect("routes lock").insert(
                placement.group,
                Route::Partition {
                    handle,
                    topic: topic.name.clone(),
                    partition: partition as u32,
                },
            );
            // The preferred leader of a new partition campaigns at once, so leaders spread
            // over the nodes as placed instead of going to whoever times out first.
            let campaign = fresh && placement.replicas.first() == Some(&self.node_id());
            tracing::info!(
                group = placement.group,
                topic = %topic.name,
                partition,
                "partition replica started"
            );
            tokio::spawn(crate::partition::run(
                group,
                receiver,
                view_sender,
                self.clone(),
                campaign,
            ));
        }
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
            let Some(Route::Partition { handle, .. }) = route else {
                continue;
            };
            self.shared.reports.set_local(placement.group, None);
            let dir = group_dir(&self.shared.config, placement.group);
            tokio::spawn(async move {
                let (done, stopped) = oneshot::channel();
                if handle
                    .inbox
                    .send(PartitionInput::Shutdown { done })
                    .await
                    .is_ok()
                {
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
            offset_key: Some(storage_log::offset_key),
            ..self.shared.config.log_options()
        }
    }

    /// The group's core. `membership` is its first configuration (group 0's founders, a
    /// partition's replicas as placed); configuration entries in the log override it. This
    /// node may not be a member under its incarnation (a wiped node waiting to be replaced):
    /// then it never campaigns and its votes and acknowledgements count for nothing.
    fn raft_node(
        &self,
        group: GroupId,
        membership: Membership,
        opened: storage_log::OpenedGroup,
    ) -> RaftNode<storage_log::StorageLog> {
        // Seeded per node incarnation and group: reproducible, yet different across nodes so
        // election timeouts do not collide.
        let seed = self.shared.incarnation ^ group.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut config = Config::new(self.node_id(), seed);
        config.incarnation = self.shared.incarnation;
        let recovered = RecoveredState {
            hard_state: opened.hard_state,
            applied_index: 0,
            abstain_until_index: opened.abstain_until_index,
        };
        RaftNode::with_membership(config, membership, opened.log, recovered).unwrap_or_else(
            |error| storage_log::fatal_message(&format!("group {group} configuration: {error}")),
        )
    }
}

fn group_dir(config: &NodeConfig, group: GroupId) -> PathBuf {
    config.data_dir.join("groups").join(format!("{group:020}"))
}

/// A started node.
pub struct RunningNode {
    pub context: NodeContext,
    pub meta: MetaHandle,
    /// The address clients reach (the bound one).
    pub local_address: SocketAddr,
    transport: Option<Transport>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    /// Starts the node: identity, transport, founding (waits for it), group 0, the client API.
    pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|error| {
            NodeError::Invalid(format!("data dir {}: {error}", config.data_dir.display()))
        })?;
        let identity = Identity::load_or_create(&config.data_dir, config.node_id)?;
        tracing::info!(
            node_id = config.node_id,
            incarnation = identity.incarnation,
            "node identity"
        );
        let tls = NodeTls::load(&config.tls_dir, config.node_id)?;
        let mut transport_config = TransportConfig::new(config.node_id, config.listen);
        let lanes = transport_config.lanes_per_direction;
        if config.require_client_cert {
            transport_config.client_cert_policy = ClientCertPolicy::Required;
        }
        let (transport, channels) = Transport::start(transport_config, &tls).await?;
        let local_address = transport.local_address();
        let mut peers = Peers::new(lanes, identity.incarnation);
        for (&peer, &address) in &config.peers {
            if peer != config.node_id {
                peers
                    .senders
                    .insert(peer, transport.add_peer(peer, address)?);
            }
        }
        let peers = Arc::new(peers);
        let shared = Arc::new(Shared {
            node_id: config.node_id,
            incarnation: identity.incarnation,
            config: config.clone(),
            peers: peers.clone(),
            routes: Mutex::new(HashMap::new()),
            meta_state: Mutex::new(None),
            reports: Arc::new(Reports::default()),
        });
        let context = NodeContext {
            shared: shared.clone(),
            tick: config.tick,
        };

        let me = NodeInfo {
            node_id: config.node_id,
            incarnation: identity.incarnation,
            peer_address: config
                .peers
                .get(&config.node_id)
                .copied()
                .unwrap_or(local_address)
                .to_string(),
            client_address: config
                .advertise
                .clone()
                .unwrap_or_else(|| local_address.to_string()),
        };
        let (control_sender, control_receiver) = mpsc::channel(CONTROL_CHANNEL_CAPACITY);
        let mut tasks = vec![tokio::spawn(route_peer_messages(
            channels.peer_messages,
            shared.clone(),
            control_sender,
        ))];
        tasks.push(tokio::spawn(flush_heartbeats(peers.clone(), config.tick)));
        let founding = Founding::new(&config.data_dir, me.clone(), config.founders.clone());
        let founders = founding
            .run(
                peers.clone(),
                control_receiver,
                &config.peers,
                shared.reports.clone(),
            )
            .await?;
        let (founders, control_task) = founders;
        tasks.push(control_task);

        // Group 0.
        let dir = GroupDir::new(group_dir(&config, META_GROUP));
        let opened = tokio::task::block_in_place(|| dir.open(config.log_options()))?;
        let fresh = opened.log.log().last_index() == 0 && opened.hard_state.term == 0;
        let node = context.raft_node(
            META_GROUP,
            Membership::with_voters(founders.iter().map(|info| (info.node_id, info.incarnation))),
            opened,
        );
        let group = RaftGroup::new(META_GROUP, node, context.clone(), false, None);
        let (inbox, receiver) = mpsc::channel(GROUP_INBOX_CAPACITY);
        let (state_sender, state) = watch::channel(MetaState::new());
        let (leader_sender, leader) = watch::channel(None);
        *shared.meta_state.lock().expect("meta state lock") = Some(state.clone());
        shared
            .routes
            .lock()
            .expect("routes lock")
            .insert(META_GROUP, Route::Meta(inbox.clone()));
        let lowest_founder = founders.iter().map(|info| info.node_id).min();
        let campaign = fresh && lowest_founder == Some(config.node_id);
        tasks.push(tokio::spawn(crate::meta::actor::run(
            group,
            receiver,
            state_sender,
            leader_sender,
            context.clone(),
            founders,
            campaign,
        )));
        let meta = MetaHandle {
            inbox,
            state,
            leader,
        };
        tasks.push(tokio::spawn(crate::api::serve(
            channels.client_connections,
            crate::api::ApiContext {
                node: context.clone(),
                meta: meta.clone(),
            },
        )));
        Ok(RunningNode {
            context,
            meta,
            local_address,
            transport: Some(transport),
            tasks,
        })
    }

    /// Waits until group 0 has a leader and its map is founded: the node can serve requests.
    pub async fn wait_ready(&self) {
        let mut leader = self.meta.leader.clone();
        let mut state = self.meta.state.clone();
        loop {
            if leader.borrow().is_some() && !state.borrow().nodes.is_empty() {
                return;
            }
            tokio::select! {
                _ = leader.changed() => {}
                _ = state.changed() => {}
            }
        }
    }

    /// Clean shutdown: every group syncs and stops, then the transport closes.
    pub async fn shutdown(mut self) {
        // Routes stay in place until every group has stopped: a leader handing over still needs
        // its peers' answers.
        let routes: Vec<Route> = self
            .context
            .shared
            .routes
            .lock()
            .expect("routes lock")
            .values()
            .cloned()
            .collect();
        // Every group is told at once so leadership handovers run in parallel.
        let mut stopped = Vec::new();
        for route in routes {
            let (done, receiver) = oneshot::channel();
            let sent = match route {
                Route::Meta(inbox) => inbox.send(MetaInput::Shutdown { done }).await.is_ok(),
                Route::Partition { handle, .. } => handle
                    .inbox
                    .send(PartitionInput::Shutdown { done })
                    .await
                    .is_ok(),
            };
            if sent {
                stopped.push(receiver);
            }
        }
        for receiver in stopped {
            let _ = tokio::time::timeout(GROUP_SHUTDOWN_TIMEOUT, receiver).await;
        }
        self.context
            .shared
            .routes
            .lock()
            .expect("routes lock")
            .clear();
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some(transport) = self.transport.take() {
            transport.shutdown(TRANSPORT_DRAIN_TIMEOUT).await;
        }
    }
}

/// Delivers every peer message to its group's actor. A full inbox drops the message (Raft
/// tolerates loss) rather than letting one busy group stall every other group's traffic.
async fn route_peer_messages(
    mut incoming: mpsc::Receiver<crate::transport::PeerMessage>,
    shared: Arc<Shared>,
    control: mpsc::Sender<crate::transport::PeerMessage>,
) {
    while let Some(message) = incoming.recv().await {
        if message.group == CONTROL_GROUP {
            let _ = control.try_send(message);
            continue;
        }
        if message.group >= COALESCED_BASE {
            let Some((incarnation, groups)) = decode_coalesced(message.from, &message.payload)
            else {
                continue;
            };
            for (group, messages) in groups {
                deliver(
                    &shared,
                    group,
                    PeerBatch {
                        from: message.from,
                        incarnation,
                        messages,
                    },
                );
            }
            continue;
        }
        let Some((incarnation, messages)) =
            decode_messages(message.group, message.from, &message.payload)
        else {
            continue;
        };
        deliver(
            &shared,
            message.group,
            PeerBatch {
                from: message.from,
                incarnation,
                messages,
            },
        );
    }
}

/// Once per tick, every group's pending heartbeats leave together.
async fn flush_heartbeats(peers: Arc<Peers>, tick: Duration) {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        peers.flush();
    }
}

fn deliver(shared: &Shared, group: GroupId, batch: PeerBatch) {
    let route = shared
        .routes
        .lock()
        .expect("routes lock")
        .get(&group)
        .cloned();
    let Some(route) = route else {
        tracing::trace!(group, from = batch.from, "message for an unknown group");
        return;
    };
    let delivered = match route {
        Route::Meta(inbox) => inbox.try_send(MetaInput::Peer(batch)).is_ok(),
        Route::Partition { handle, .. } => {
            handle.inbox.try_send(PartitionInput::Peer(batch)).is_ok()
        }
    };
    if !delivered {
        tracing::debug!(group, "group inbox full; peer message dropped");
    }
}
