//! A running `keel server`: starts the node (identity, transport, founding, group 0), the client
//! API on top, the routing of peer messages to groups and the heartbeat flusher, and shuts all
//! of it down cleanly. The one module that sees every other, so the rest depend one way:
//! server -> api -> node -> {meta, partition} -> group -> transport.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::coordinator::actor::CoordinatorInput;
use crate::group::replace::Reports;
use crate::group::storage_log::GroupDir;
use crate::group::{
    decode_coalesced, decode_messages, PeerBatch, Peers, RaftGroup, COALESCED_BASE,
};
use crate::limits::{
    CAPACITY_MEASURE_INTERVAL, CONTROL_CHANNEL_CAPACITY, DISK_SAMPLE_INTERVAL,
    GROUP_INBOX_CAPACITY, GROUP_SHUTDOWN_TIMEOUT, OFFLINE_RETRY_INTERVAL, TRANSPORT_DRAIN_TIMEOUT,
};
use crate::meta::actor::{MetaHandle, MetaInput};
use crate::meta::{MetaState, NodeInfo, META_GROUP};
use crate::node::identity::{Founding, Identity};
use crate::node::{group_dir, NodeConfig, NodeContext, NodeError, Route, Shared, CONTROL_GROUP};
use crate::partition::PartitionInput;
use crate::transport::{ClientCertPolicy, GroupId, NodeTls, Transport, TransportConfig};
use keel_raft::Membership;

/// A started node.
pub struct RunningNode {
    pub context: NodeContext,
    pub meta: MetaHandle,
    /// The address clients reach (the bound one).
    pub local_address: SocketAddr,
    transport: Option<Transport>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Stopped first on shutdown, so no replica starts while the others stop.
    offline_retry: tokio::task::JoinHandle<()>,
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
        let disk = crate::disk::DiskSpace::new(&config.data_dir, config.min_free_bytes).map_err(
            |error| NodeError::Invalid(format!("data dir {}: {error}", config.data_dir.display())),
        )?;
        tracing::info!(
            available_bytes = disk.available_bytes(),
            min_free_bytes = disk.min_free_bytes(),
            "free space under the data directory"
        );
        let disk = Arc::new(disk);
        let shared = Arc::new(Shared {
            node_id: config.node_id,
            incarnation: identity.incarnation,
            config: config.clone(),
            peers: peers.clone(),
            routes: Mutex::new(HashMap::new()),
            meta_state: Mutex::new(None),
            reports: Arc::new(Reports::default()),
            disk: disk.clone(),
            capacity: Default::default(),
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
        tasks.push(tokio::spawn(sample_free_space(disk)));
        // Measured from the start, so the first announcement after founding carries a report.
        tasks.push(tokio::spawn(measure_capacity(context.clone())));
        let founding = Founding::new(&config.data_dir, me.clone(), config.founders.clone());
        let founders = founding
            .run(
                peers.clone(),
                control_receiver,
                &config.peers,
                shared.reports.clone(),
                shared.capacity.clone(),
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
        let group = RaftGroup::new(META_GROUP, node, context.host(), None, None);
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
            Arc::new(context.clone()),
            crate::meta::actor::ClusterSeed {
                founders,
                offsets_partitions: config.offsets_partitions,
            },
            campaign,
        )));
        let meta = MetaHandle {
            inbox,
            state,
            leader,
        };
        let offline_retry = tokio::spawn(retry_offline_replicas(context.clone()));
        tasks.push(tokio::spawn(crate::api::serve(
            channels.client_connections,
            crate::api::ApiContext {
                node: context.clone(),
                meta: meta.clone(),
                create_lock: Default::default(),
            },
        )));
        Ok(RunningNode {
            context,
            meta,
            local_address,
            transport: Some(transport),
            tasks,
            offline_retry,
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
        self.offline_retry.abort();
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
                Route::Offsets { handle, .. } => handle
                    .inbox
                    .send(CoordinatorInput::Shutdown { done })
                    .await
                    .is_ok(),
                Route::Offline { .. } | Route::Opening => false,
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

/// Every [`OFFLINE_RETRY_INTERVAL`], tries to open the replicas held offline (a full disk may
/// have been freed).
async fn retry_offline_replicas(context: NodeContext) {
    let mut ticker = tokio::time::interval(OFFLINE_RETRY_INTERVAL);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if !context.offline_replicas().is_empty() {
            context.retry_offline_replicas();
        }
    }
}

/// Every [`DISK_SAMPLE_INTERVAL`], the free space under the data directory (disk.rs).
async fn sample_free_space(disk: Arc<crate::disk::DiskSpace>) {
    let mut ticker = tokio::time::interval(DISK_SAMPLE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        tokio::task::block_in_place(|| disk.refresh());
    }
}

/// Every [`CAPACITY_MEASURE_INTERVAL`], this node measures what it can still take on; its
/// announcements carry the latest measurement to group 0's leader (node/capacity.rs).
async fn measure_capacity(context: NodeContext) {
    let mut ticker = tokio::time::interval(CAPACITY_MEASURE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let context = context.clone();
        // Reading /proc/self/maps of a node with thousands of replicas takes a while: off the
        // runtime's workers.
        if let Err(error) = tokio::task::spawn_blocking(move || context.measure_capacity()).await {
            tracing::warn!(%error, "measuring capacity failed");
        }
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
        Route::Offsets { handle, .. } => {
            handle.inbox.try_send(CoordinatorInput::Peer(batch)).is_ok()
        }
        // Its peers' messages have nowhere to go until it opens; to them it is down.
        Route::Offline { .. } | Route::Opening => true,
    };
    if !delivered {
        tracing::debug!(group, "group inbox full; peer message dropped");
    }
}
