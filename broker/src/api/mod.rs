//! The client API (docs/WIRE.md, docs/CLIENT.md): connections accepted on ALPN `keel/2`, one
//! request per bidirectional stream, each answered with one [`Response`] frame on the same stream.
//!
//! Every request is validated before it touches a group: frame size and version, topic name,
//! topic existence, partition range, record batch CRC and size limits. Anything wrong is a
//! typed [`ErrorCode`] back to the client and a log line; nothing here panics on input.
//! Produce and fetch go to the partition's actor on this node, which answers NotLeader (with the
//! leader's advertised address) when this node does not lead.

mod groups;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use keel_wire::limits::{DEFAULT_REQUEST_TIMEOUT_MS, REPLACE_NODE_TIMEOUT_MS};
use keel_wire::messages::{
    AlterTopicRequest, AlterTopicResponse, ClusterStatusResponse, CreateTopicRequest, FetchRequest,
    InitProducerIdResponse, ListTopicsResponse, MetadataRequest, MetadataResponse, NodeAddress,
    NodeStatus, OfflineReplica, PartitionDescription, PartitionMetadata, PartitionStatus,
    ProduceRequest, ReplaceNodeRequest, ReplaceNodeResponse, ReplaceNodeWait, TopicDescription,
    TopicMetadata, TopicSettings, TopicSummary,
};
use keel_wire::{ErrorCode, Frame, RecordBatchView, Request, Response};
use tokio::sync::{mpsc, oneshot};

use crate::group::replace::replacement_done;
use crate::limits::{
    ADMIN_TIMEOUT, CAPACITY_REPORT_POLL, CAPACITY_REPORT_WAIT, DEFAULT_REPLICATION_FACTOR,
    FRESH_HELLO_TIMEOUT, MAX_FETCH_WAIT, MAX_PARTITIONS, MAX_PRODUCE_TIMEOUT, MAX_UP_FRONT_BYTES,
    REPLACE_ANSWER_MARGIN, REPLACE_POLL,
};
use crate::meta::actor::{MetaHandle, MetaInput};
use crate::meta::{MetaCommand, MetaOutcome, MetaState, TopicConfig, TopicInfo, META_GROUP};
use crate::node::{admission, NodeContext};
use crate::partition::{PartitionHandle, PartitionInput};
use crate::transport::{ClientConnection, GroupId};

#[derive(Clone)]
pub struct ApiContext {
    pub node: NodeContext,
    pub meta: MetaHandle,
    /// Held from a create's admission to its being applied, so the next create is admitted
    /// against a map that holds this one's replicas (two at once would each see room for both).
    pub create_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// Accepts client connections until the transport closes.
pub async fn serve(mut connections: mpsc::Receiver<ClientConnection>, context: ApiContext) {
    while let Some(connection) = connections.recv().await {
        let context = context.clone();
        tokio::spawn(serve_connection(connection.connection, context));
    }
}

async fn serve_connection(connection: quinn::Connection, context: ApiContext) {
    let remote = connection.remote_address();
    loop {
        let (send, receive) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                tracing::debug!(%remote, %error, "client connection ended");
                return;
            }
        };
        let context = context.clone();
        tokio::spawn(async move {
            serve_stream(send, receive, context, remote).await;
        });
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut receive: quinn::RecvStream,
    context: ApiContext,
    remote: std::net::SocketAddr,
) {
    let max_request_bytes = context.node.limits().max_request_bytes;
    let (response, payload) = match read_request(&mut receive, max_request_bytes).await {
        Ok(bytes) => {
            let mut buffer = bytes.freeze();
            let decoded = Frame::<Request>::decode(&mut buffer, max_request_bytes);
            // The payload must own its allocation alone so produce can stamp it in place.
            drop(buffer);
            match decoded {
                Ok(frame) => handle(frame, &context).await,
                Err(error) => {
                    tracing::warn!(%remote, %error, "malformed request frame");
                    (Response::Error(error.error_code()), Bytes::new())
                }
            }
        }
        Err(ReadRequestError::TooLong) => {
            tracing::warn!(%remote, max_request_bytes, "request over max_request_bytes refused");
            (Response::Error(ErrorCode::RequestTooLarge), Bytes::new())
        }
        Err(ReadRequestError::Read(error)) => {
            tracing::debug!(%remote, %error, "request stream failed");
            return;
        }
    };
    let mut chunks = match Frame::new(response, payload).to_chunks() {
        Ok(chunks) => chunks,
        Err(error) => {
            tracing::error!(%error, "encoding a response");
            return;
        }
    };
    // A fetch response's records go to QUIC as they are, not copied into a frame buffer.
    if send.write_all_chunks(&mut chunks).await.is_ok() {
        let _ = send.finish();
        // Wait until the peer has the bytes (or gave up) before dropping the stream.
        let _ = send.stopped().await;
    }
}

#[derive(Debug)]
enum ReadRequestError {
    TooLong,
    Read(quinn::ReadError),
}

/// Reads a whole request stream into one buffer reserved from the frame's length prefix (at
/// most [`MAX_UP_FRONT_BYTES`]), so a 256 KiB produce batch is copied out of QUIC once instead
/// of through a doubling `Vec`. More than `max_request_bytes` is refused.
async fn read_request(
    receive: &mut quinn::RecvStream,
    max_request_bytes: u64,
) -> Result<BytesMut, ReadRequestError> {
    let max_request_bytes = usize::try_from(max_request_bytes).unwrap_or(usize::MAX);
    let mut buffer = BytesMut::new();
    let mut reserved = false;
    while let Some(chunk) = receive
        .read_chunk(usize::MAX, true)
        .await
        .map_err(ReadRequestError::Read)?
    {
        if chunk.bytes.len() > max_request_bytes - buffer.len() {
            return Err(ReadRequestError::TooLong);
        }
        buffer.extend_from_slice(&chunk.bytes);
        if !reserved {
            if let Some(prefix) = buffer.get(..4) {
                reserved = true;
                let frame_bytes =
                    u32::from_le_bytes(prefix.try_into().expect("four bytes")) as usize + 4;
                // A lying prefix gets at most MAX_UP_FRONT_BYTES reserved (the buffer grows
                // past that as bytes really arrive); decode rejects the frame afterwards.
                let expected = frame_bytes.min(max_request_bytes).min(MAX_UP_FRONT_BYTES);
                buffer.reserve(expected.saturating_sub(buffer.len()));
            }
        }
    }
    Ok(buffer)
}

/// The produced batch as a buffer the partition may stamp: the request's own allocation when
/// nothing else shares it (always, from `serve_stream`), else a copy.
async fn handle(frame: Frame<Request>, context: &ApiContext) -> (Response, Bytes) {
    if let Err(error) = frame.header.validate_topic_names() {
        tracing::warn!(%error, "request with an invalid topic name");
        return (Response::Error(error.error_code()), Bytes::new());
    }
    if !context.node.serves_clients() {
        // A wiped node being replaced holds no map (or a partial one): "unknown topic" from it
        // would be a lie the client takes as final. "Unavailable" sends the client elsewhere.
        tracing::debug!("request refused: this node is not a voter of the metadata group yet");
        return (Response::Error(ErrorCode::Unavailable), Bytes::new());
    }
    if let Err(error) = check_reserved(&frame.header) {
        return (Response::Error(error), Bytes::new());
    }
    let result = match frame.header {
        Request::Produce(request) => produce(request, frame.payload, context)
            .await
            .map(|response| (Response::Produce(response), Bytes::new())),
        Request::Fetch(request) => fetch(request, context)
            .await
            .map(|(response, payload)| (Response::Fetch(response), payload)),
        Request::Metadata(request) => {
            Ok((Response::Metadata(metadata(request, context)), Bytes::new()))
        }
        Request::CreateTopic(request) => create_topic(request, context)
            .await
            .map(|summary| (Response::CreateTopic(summary), Bytes::new())),
        Request::DeleteTopic(request) => {
            propose(context, MetaCommand::DeleteTopic { name: request.name })
                .await
                .map(|_| (Response::DeleteTopic, Bytes::new()))
        }
        Request::ListTopics => {
            let state = context.meta.state.borrow();
            let topics = (state.topics.values())
                .filter(|topic| !crate::coordinator::is_reserved_topic(&topic.name))
                .map(summary)
                .collect();
            Ok((
                Response::ListTopics(ListTopicsResponse { topics }),
                Bytes::new(),
            ))
        }
        Request::DescribeTopic(request) => describe(&request.name, context)
            .await
            .map(|description| (Response::DescribeTopic(description), Bytes::new())),
        Request::ClusterStatus => Ok((
            Response::ClusterStatus(cluster_status(context).await),
            Bytes::new(),
        )),
        Request::InitProducerId => match propose(context, MetaCommand::AllocateProducerId).await {
            Ok(MetaOutcome::ProducerId(producer_id)) => Ok((
                Response::InitProducerId(InitProducerIdResponse {
                    producer_id,
                    producer_epoch: 0,
                }),
                Bytes::new(),
            )),
            Ok(_) => Err(ErrorCode::Internal),
            Err(error) => Err(error),
        },
        Request::ReplaceNode(request) => replace_node(request, context)
            .await
            .map(|response| (Response::ReplaceNode(response), Bytes::new())),
        Request::AlterTopic(request) => alter_topic(request, context)
            .await
            .map(|response| (Response::AlterTopic(response), Bytes::new())),
        request @ (Request::FindCoordinator(_)
        | Request::JoinGroup(_)
        | Request::SyncGroup(_)
        | Request::Heartbeat(_)
        | Request::LeaveGroup(_)
        | Request::OffsetCommit(_)
        | Request::OffsetFetch(_)
        | Request::ListGroups
        | Request::DescribeGroup(_)
        | Request::ResetOffsets(_)
        | Request::DeleteGroup(_)) => groups::handle(request, context)
            .await
            .map(|response| (response, Bytes::new())),
    };
    match result {
        Ok(answer) => answer,
        Err(error) => (Response::Error(error), Bytes::new()),
    }
}

/// The cluster's own topics (`__` prefix, coordinator/mod.rs) are not the clients': a create of
/// such a name is an invalid name, and produce, fetch, delete and alter of one are refused (its
/// partitions hold the coordinator's commands, not records). Describe and metadata may name them.
fn check_reserved(request: &Request) -> Result<(), ErrorCode> {
    let reserved = crate::coordinator::is_reserved_topic;
    let (name, error) = match request {
        Request::CreateTopic(create) => (&create.name, ErrorCode::InvalidTopicName),
        Request::Produce(produce) => (&produce.topic, ErrorCode::NotAuthorized),
        Request::Fetch(fetch) => (&fetch.topic, ErrorCode::NotAuthorized),
        Request::DeleteTopic(delete) => (&delete.name, ErrorCode::NotAuthorized),
        Request::AlterTopic(alter) => (&alter.name, ErrorCode::NotAuthorized),
        _ => return Ok(()),
    };
    if reserved(name) {
        tracing::warn!(topic = %name, %error, "request on a reserved topic name refused");
        return Err(error);
    }
    Ok(())
}

fn summary(topic: &TopicInfo) -> TopicSummary {
    TopicSummary {
        name: topic.name.clone(),
        partitions: topic.partitions.len() as u32,
        replication_factor: topic.replication_factor,
    }
}

/// The topic's partition `partition`, and this node's replica of it if it has one.
fn locate(
    context: &ApiContext,
    topic: &str,
    partition: u32,
) -> Result<(Option<PartitionHandle>, Vec<u64>), ErrorCode> {
    let state = context.meta.state.borrow();
    let Some(info) = state.topics.get(topic) else {
        return Err(ErrorCode::UnknownTopic);
    };
    let Some(placement) = info.partitions.get(partition as usize) else {
        return Err(ErrorCode::PartitionOutOfRange);
    };
    Ok((
        context.node.partition(placement.group),
        placement.replicas.clone(),
    ))
}

/// The answer for a partition this node has no open replica of: its preferred leader, or when
/// that is this node (its replica held offline) the next replica, never this node itself, which
/// would send the client straight back here.
fn not_a_replica(context: &ApiContext, replicas: &[u64]) -> ErrorCode {
    let me = context.node.node_id();
    ErrorCode::NotLeader {
        leader_addr: (replicas.iter())
            .find(|&&id| id != me)
            .and_then(|&id| context.node.client_address(id)),
    }
}

async fn produce(
    request: ProduceRequest,
    payload: Bytes,
    context: &ApiContext,
) -> Result<keel_wire::messages::ProduceResponse, ErrorCode> {
    let (handle, replicas) = locate(context, &request.topic, request.partition)?;
    let Some(handle) = handle else {
        return Err(not_a_replica(context, &replicas));
    };
    let view = RecordBatchView::parse_within(payload, &context.node.limits()).map_err(|error| {
        tracing::warn!(topic = %request.topic, partition = request.partition, %error, "produce refused");
        error.error_code()
    })?;
    if view.count() == 0 {
        tracing::warn!(topic = %request.topic, "empty record batch refused");
        return Err(ErrorCode::CorruptBatch);
    }
    let started = std::time::Instant::now();
    let count = view.count();
    let payload = crate::partition::entry::unstamped(view.bytes());
    let (reply, answer) = oneshot::channel();
    handle
        .inbox
        .send(PartitionInput::Produce {
            payload,
            count,
            reply,
        })
        .await
        .map_err(|_| ErrorCode::Unavailable)?;
    let timeout = Duration::from_millis(u64::from(request.timeout_ms)).min(MAX_PRODUCE_TIMEOUT);
    let result = match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(ErrorCode::Unavailable),
        Err(_) => Err(ErrorCode::Timeout),
    };
    if result.is_ok() {
        metrics::histogram!("keel_produce_latency_seconds").record(started.elapsed().as_secs_f64());
    }
    result
}

async fn fetch(
    request: FetchRequest,
    context: &ApiContext,
) -> Result<(keel_wire::messages::FetchResponse, Bytes), ErrorCode> {
    let (handle, replicas) = locate(context, &request.topic, request.partition)?;
    let Some(handle) = handle else {
        return Err(not_a_replica(context, &replicas));
    };
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(u64::from(request.max_wait_ms)).min(MAX_FETCH_WAIT);
    let mut view = handle.view.clone();
    loop {
        let (reply, answer) = oneshot::channel();
        handle
            .inbox
            .send(PartitionInput::Fetch {
                offset: request.offset,
                max_bytes: request.max_bytes.max(1),
                reply,
            })
            .await
            .map_err(|_| ErrorCode::Unavailable)?;
        let (header, payload) = answer.await.map_err(|_| ErrorCode::Unavailable)??;
        if !payload.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok((header, payload));
        }
        // Long poll: wait for the high watermark to pass the offset (or leadership to move).
        let waited = tokio::time::timeout_at(deadline, async {
            loop {
                if view.changed().await.is_err() {
                    return;
                }
                let now = *view.borrow();
                if now.high_watermark > request.offset || !now.is_leader {
                    return;
                }
            }
        })
        .await;
        if waited.is_err() {
            return Ok((header, payload));
        }
    }
}

fn metadata(request: MetadataRequest, context: &ApiContext) -> MetadataResponse {
    let state = context.meta.state.borrow().clone();
    let nodes = state
        .nodes
        .values()
        .map(|info| NodeAddress {
            node_id: info.node_id,
            address: info.client_address.clone(),
        })
        .collect();
    let names: Vec<String> = match request.topics {
        Some(names) => names,
        // Every client topic: the cluster's own are listed only when named.
        None => (state.topics.keys())
            .filter(|name| !crate::coordinator::is_reserved_topic(name))
            .cloned()
            .collect(),
    };
    let topics = names
        .into_iter()
        .map(|name| {
            let partitions = match state.topics.get(&name) {
                None => Err(ErrorCode::UnknownTopic),
                Some(info) => Ok(info
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(partition, placement)| PartitionMetadata {
                        partition: partition as u32,
                        leader: leader_of(context, placement.group),
                        replicas: placement.replicas.clone(),
                    })
                    .collect()),
            };
            TopicMetadata { name, partitions }
        })
        .collect();
    MetadataResponse { nodes, topics }
}

/// The leader this node knows for a group; `None` if it does not replicate it or there is an
/// election (clients then try the preferred leader and follow redirects).
fn leader_of(context: &ApiContext, group: u64) -> Option<u64> {
    context
        .node
        .partition(group)
        .and_then(|handle| handle.view.borrow().leader)
}

/// Refuses settings that are neither -1 nor positive, with the reason in the log.
fn check_settings(topic: &str, settings: &TopicSettings, action: &str) -> Result<(), ErrorCode> {
    settings.check().map_err(|error| {
        tracing::warn!(%topic, %error, "{action} refused: invalid retention setting");
        ErrorCode::InvalidTopicConfig
    })
}

async fn create_topic(
    request: CreateTopicRequest,
    context: &ApiContext,
) -> Result<TopicSummary, ErrorCode> {
    let settings = request.settings();
    check_settings(&request.name, &settings, "create topic")?;
    let config = TopicConfig::NEW_TOPIC_DEFAULT.overlaid(&settings);
    // Only group 0's leader admits: it holds the newest map and hears every node's reports. A
    // follower sends the client there.
    let _serialized = context.create_lock.lock().await;
    let leader = *context.meta.leader.borrow();
    if leader != Some(context.node.node_id()) {
        return Err(ErrorCode::NotLeader {
            leader_addr: leader.and_then(|id| context.node.client_address(id)),
        });
    }
    let state: MetaState = context.meta.state.borrow().clone();
    let nodes = state.nodes.len();
    let replication_factor = request
        .replication_factor
        .unwrap_or(nodes.min(DEFAULT_REPLICATION_FACTOR) as u16);
    if request.partitions == 0
        || request.partitions > MAX_PARTITIONS
        || replication_factor == 0
        || usize::from(replication_factor) > nodes
    {
        tracing::warn!(
            topic = %request.name,
            partitions = request.partitions,
            replication_factor,
            nodes,
            "create topic refused: invalid partitions or replication factor"
        );
        return Err(ErrorCode::InvalidTopicConfig);
    }
    if state.topics.contains_key(&request.name) {
        return Err(ErrorCode::TopicAlreadyExists);
    }
    // The placement proposed is the one admitted: both come from this one copy of the map.
    let placement = state.place(request.partitions, replication_factor);
    let reports = capacity_reports_for(context, &placement).await;
    if let Err(refusal) = admission::admit(&state, &placement, &reports) {
        tracing::warn!(
            topic = %request.name,
            partitions = request.partitions,
            replication_factor,
            node = refusal.node_id,
            reason = %refusal.reason,
            "create topic refused: insufficient capacity"
        );
        return Err(refusal.error_code());
    }
    let outcome = propose(
        context,
        MetaCommand::CreateTopicWithConfig {
            name: request.name,
            replication_factor,
            placement,
            config,
        },
    )
    .await?;
    match outcome {
        MetaOutcome::TopicCreated(topic) => Ok(summary(&topic)),
        _ => Err(ErrorCode::Internal),
    }
}

/// The fresh capacity reports, once every node `placement` names has one or
/// [`CAPACITY_REPORT_WAIT`] has passed: a leader elected a moment ago has not heard every peer
/// yet, and refusing its first create for that would be a false alarm.
async fn capacity_reports_for(
    context: &ApiContext,
    placement: &[Vec<u64>],
) -> std::collections::BTreeMap<u64, crate::node::capacity::CapacityReport> {
    let deadline = tokio::time::Instant::now() + CAPACITY_REPORT_WAIT;
    loop {
        let reports = context.node.capacity_reports();
        let complete = placement
            .iter()
            .flatten()
            .all(|node| reports.contains_key(node));
        if complete || tokio::time::Instant::now() >= deadline {
            return reports;
        }
        tokio::time::sleep(CAPACITY_REPORT_POLL).await;
    }
}

/// Proposes the settings; applying lays them over the topic's config as the log left it, so
/// concurrent alters of different settings both hold, whichever node or term proposed them.
async fn alter_topic(
    request: AlterTopicRequest,
    context: &ApiContext,
) -> Result<AlterTopicResponse, ErrorCode> {
    let settings = request.settings();
    check_settings(&request.name, &settings, "alter topic")?;
    let leader = *context.meta.leader.borrow();
    if leader != Some(context.node.node_id()) {
        return Err(ErrorCode::NotLeader {
            leader_addr: leader.and_then(|id| context.node.client_address(id)),
        });
    }
    let outcome = propose(
        context,
        MetaCommand::AlterTopicSettings {
            name: request.name,
            retention_bytes: settings.retention_bytes,
            retention_ms: settings.retention_ms,
            segment_ms: settings.segment_ms,
        },
    )
    .await?;
    match outcome {
        MetaOutcome::TopicAltered(topic) => {
            tracing::info!(topic = %topic.name, config = ?topic.config, "topic config altered");
            Ok(AlterTopicResponse {
                name: topic.name,
                config: topic.config.view(),
            })
        }
        _ => Err(ErrorCode::Internal),
    }
}

async fn propose(context: &ApiContext, command: MetaCommand) -> Result<MetaOutcome, ErrorCode> {
    let (reply, answer) = oneshot::channel();
    context
        .meta
        .inbox
        .send(MetaInput::Propose { command, reply })
        .await
        .map_err(|_| ErrorCode::Unavailable)?;
    match tokio::time::timeout(ADMIN_TIMEOUT, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(ErrorCode::Unavailable),
        Err(_) => Err(ErrorCode::Timeout),
    }
}

/// `keel cluster replace-node` (docs/OPERATIONS.md "Replacing a node"): records the node's new
/// incarnation (as the node announces it) in the map, which makes every group's leader replace the
/// old incarnation (group/replace.rs); then waits until the node itself reports every one of its
/// groups done. Asking again is harmless: a recorded incarnation is not proposed twice.
async fn replace_node(
    request: ReplaceNodeRequest,
    context: &ApiContext,
) -> Result<ReplaceNodeResponse, ErrorCode> {
    let node_id = request.node_id;
    let recorded = context
        .meta
        .state
        .borrow()
        .nodes
        .get(&node_id)
        .map(|info| info.incarnation);
    let Some(recorded) = recorded else {
        tracing::warn!(node_id, "replace-node refused: no such node in the cluster");
        return Err(ErrorCode::UnknownNode);
    };
    // Answer before the client gives up, so it learns "timed out" rather than nothing: the
    // budget counts from the request's arrival and covers every step below.
    let budget = match request.wait {
        ReplaceNodeWait::UntilReplaced => Duration::from_millis(REPLACE_NODE_TIMEOUT_MS),
        // What a client waits for `--no-wait`: the SDK's default request timeout.
        ReplaceNodeWait::UntilLearnersAdded => Duration::from_millis(DEFAULT_REQUEST_TIMEOUT_MS),
    };
    let answer_by = tokio::time::Instant::now() + budget.saturating_sub(REPLACE_ANSWER_MARGIN);
    // Only a hello sent after this request came in speaks for the process running now: the
    // last one of a node killed a moment ago still names its lost incarnation.
    let asked = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + FRESH_HELLO_TIMEOUT;
    let incarnation = loop {
        match context.node.announcement(node_id) {
            Some(heard) if heard.heard_at >= asked => break heard.incarnation,
            _ if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(
                    node_id,
                    "replace-node: the node is not running (no hello heard)"
                );
                return Err(ErrorCode::Unavailable);
            }
            _ => tokio::time::sleep(REPLACE_POLL).await,
        }
    };
    if incarnation != recorded {
        tracing::info!(
            node_id,
            old_incarnation = recorded,
            new_incarnation = incarnation,
            "replacing a node"
        );
        propose(
            context,
            MetaCommand::ReplaceNode {
                node_id,
                incarnation,
            },
        )
        .await?;
    }
    let learners_enough = request.wait == ReplaceNodeWait::UntilLearnersAdded;
    loop {
        let expected: Vec<GroupId> = {
            let state = context.meta.state.borrow();
            std::iter::once(META_GROUP)
                .chain(state.groups_of(node_id).into_iter().map(|group| group.0))
                .collect()
        };
        match context.node.announcement(node_id) {
            Some(heard) if heard.incarnation != incarnation => {
                tracing::warn!(node_id, "replace-node: the node changed incarnation again");
                return Err(ErrorCode::Unavailable);
            }
            Some(heard) if replacement_done(&expected, &heard.groups, learners_enough) => {
                tracing::info!(node_id, groups = expected.len(), ?request.wait, "node replaced");
                return Ok(ReplaceNodeResponse {
                    groups: expected.len() as u32,
                });
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= answer_by {
            return Err(ErrorCode::Timeout);
        }
        tokio::time::sleep(REPLACE_POLL).await;
    }
}

async fn describe(name: &str, context: &ApiContext) -> Result<TopicDescription, ErrorCode> {
    let info = context
        .meta
        .state
        .borrow()
        .topics
        .get(name)
        .cloned()
        .ok_or(ErrorCode::UnknownTopic)?;
    let reports = context.node.capacity_reports();
    let mut offline_by_node = std::collections::BTreeMap::new();
    for &node in info.partitions.iter().flat_map(|p| &p.replicas) {
        offline_by_node
            .entry(node)
            .or_insert_with(|| context.node.offline_of(node, &reports));
    }
    let partitions = info
        .partitions
        .iter()
        .enumerate()
        .map(|(partition, placement)| {
            let view = context
                .node
                .partition(placement.group)
                .map(|handle| *handle.view.borrow())
                .unwrap_or_default();
            let offline = placement
                .replicas
                .iter()
                .filter_map(|node| {
                    let (_, groups) = offline_by_node.get(node)?.as_ref()?;
                    let reason = groups.get(&placement.group)?.clone();
                    Some(OfflineReplica {
                        node_id: *node,
                        reason: reason.unwrap_or_else(|| {
                            "held offline (its node reports the reason of its first offline \
                             replicas only: see that node's log)"
                                .to_string()
                        }),
                    })
                })
                .collect();
            PartitionDescription {
                partition: partition as u32,
                leader: view.leader,
                replicas: placement.replicas.clone(),
                log_start_offset: view.log_start_offset,
                high_watermark: view.high_watermark,
                offline,
            }
        })
        .collect();
    Ok(TopicDescription {
        name: info.name,
        replication_factor: info.replication_factor,
        partitions,
        config: info.config.view(),
    })
}

async fn cluster_status(context: &ApiContext) -> ClusterStatusResponse {
    let state = context.meta.state.borrow().clone();
    let reports = context.node.capacity_reports();
    let nodes = state
        .nodes
        .values()
        .map(|info| NodeStatus {
            node_id: info.node_id,
            incarnation: info.incarnation,
            address: info.client_address.clone(),
            up: context.node.peer_connected(info.node_id),
            offline_replicas: context
                .node
                .offline_of(info.node_id, &reports)
                .map(|(total, _)| u32::try_from(total).unwrap_or(u32::MAX)),
        })
        .collect();
    let mut partitions = vec![PartitionStatus {
        topic: None,
        partition: 0,
        leader: *context.meta.leader.borrow(),
        followers: Vec::new(),
    }];
    for (topic, partition, handle) in context.node.local_partitions() {
        let (reply, answer) = oneshot::channel();
        let (leader, followers) = if handle
            .inbox
            .send(PartitionInput::Status { reply })
            .await
            .is_ok()
        {
            answer.await.unwrap_or((None, Vec::new()))
        } else {
            (None, Vec::new())
        };
        partitions.push(PartitionStatus {
            topic: Some(topic),
            partition,
            leader,
            followers,
        });
    }
    ClusterStatusResponse { nodes, partitions }
}
