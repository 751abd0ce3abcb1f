//! Consumer-group requests (docs/CONSUMER-GROUPS.md): each goes to this node's replica of the
//! group's `__consumer_offsets` partition, whose actor answers as the coordinator when this node
//! leads it and NOT_COORDINATOR otherwise. Here only: finding that partition, translating between
//! the wire's types and the coordinator's, and bounding how long a request may wait.

use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use keel_wire::groups::{
    CommittedPartitionOffset, FindCoordinatorResponse, GroupDescriptionView, GroupListing,
    GroupMemberMetadata, GroupMemberView, GroupStateView, JoinGroupResponse, ListGroupsResponse,
    OffsetFetchResponse, PartitionOffset, SyncGroupResponse,
};
use keel_wire::{ErrorCode, Request, Response};
use tokio::sync::oneshot;

use super::ApiContext;
use crate::coordinator::actor::{
    CoordinatorHandle, CoordinatorInput, GroupAnswer, GroupRequest, GroupSummary,
};
use crate::coordinator::membership::{GroupState, JoinRequest, SyncRequest};
use crate::coordinator::offsets::{CommittedOffset, OffsetAndMetadata, TopicPartition};
use crate::coordinator::{offsets_partition_for, GroupError, Protocol, OFFSETS_TOPIC};
use crate::limits::{ADMIN_TIMEOUT, GROUP_ANSWER_MARGIN};
use crate::transport::GroupId;

/// Serves one group request (the caller matched it as one; any other is an internal error).
pub(super) async fn handle(request: Request, context: &ApiContext) -> Result<Response, ErrorCode> {
    keel_wire::groups::check_group_request(&request).inspect_err(|error| {
        tracing::warn!(%error, "group request refused");
    })?;
    match request {
        Request::FindCoordinator(find) => find_coordinator(&find.group, context),
        Request::ListGroups => list_groups(context).await,
        Request::JoinGroup(join) => {
            // A join waits for the join phase to end: up to the rebalance timeout.
            let wait = Duration::from_millis(u64::from(join.rebalance_timeout_ms))
                .max(ADMIN_TIMEOUT)
                + GROUP_ANSWER_MARGIN;
            let request = GroupRequest::Join(JoinRequest {
                member_id: join.member_id,
                client_id: join.client_id,
                session_timeout_ms: u64::from(join.session_timeout_ms),
                rebalance_timeout_ms: u64::from(join.rebalance_timeout_ms),
                protocol_type: join.protocol_type,
                protocols: join
                    .protocols
                    .into_iter()
                    .map(|p| Protocol {
                        name: p.name,
                        metadata: Bytes::from(p.metadata),
                    })
                    .collect(),
            });
            match ask(context, &join.group, request, wait).await? {
                GroupAnswer::Joined(joined) => Ok(Response::JoinGroup(JoinGroupResponse {
                    member_id: joined.member_id,
                    generation: joined.generation,
                    protocol_type: joined.protocol_type,
                    protocol: joined.protocol,
                    leader: joined.leader,
                    members: joined
                        .members
                        .into_iter()
                        .map(|(member_id, metadata)| GroupMemberMetadata {
                            member_id,
                            metadata: metadata.to_vec(),
                        })
                        .collect(),
                })),
                other => Err(unexpected(other)),
            }
        }
        Request::SyncGroup(sync) => {
            let request = GroupRequest::Sync(SyncRequest {
                member_id: sync.member_id,
                generation: sync.generation,
                protocol_type: sync.protocol_type,
                protocol: sync.protocol,
                assignments: sync
                    .assignments
                    .into_iter()
                    .map(|a| (a.member_id, Bytes::from(a.assignment)))
                    .collect(),
            });
            // A follower's sync waits for the leader's (within the rebalance timeout, which the
            // coordinator enforces) and the generation's commit.
            let wait = crate::limits::GROUP_SYNC_WAIT;
            match ask(context, &sync.group, request, wait).await? {
                GroupAnswer::Synced(synced) => Ok(Response::SyncGroup(SyncGroupResponse {
                    protocol_type: synced.protocol_type,
                    protocol: synced.protocol,
                    assignment: synced.assignment.to_vec(),
                })),
                other => Err(unexpected(other)),
            }
        }
        Request::Heartbeat(heartbeat) => {
            let request = GroupRequest::Heartbeat {
                member_id: heartbeat.member_id,
                generation: heartbeat.generation,
            };
            done(ask(context, &heartbeat.group, request, ADMIN_TIMEOUT).await?)
                .map(|()| Response::Heartbeat)
        }
        Request::LeaveGroup(leave) => {
            let request = GroupRequest::Leave {
                member_id: leave.member_id,
            };
            done(ask(context, &leave.group, request, ADMIN_TIMEOUT).await?)
                .map(|()| Response::LeaveGroup)
        }
        Request::OffsetCommit(commit) => {
            let request = GroupRequest::Commit {
                member_id: commit.member_id,
                generation: commit.generation,
                offsets: offsets_of(commit.offsets),
            };
            done(ask(context, &commit.group, request, ADMIN_TIMEOUT).await?)
                .map(|()| Response::OffsetCommit)
        }
        Request::OffsetFetch(fetch) => {
            let request = GroupRequest::FetchOffsets {
                partitions: fetch.partitions.map(|partitions| {
                    partitions
                        .into_iter()
                        .map(|p| TopicPartition {
                            topic: p.topic,
                            partition: p.partition,
                        })
                        .collect()
                }),
            };
            match ask(context, &fetch.group, request, ADMIN_TIMEOUT).await? {
                GroupAnswer::Offsets(offsets) => Ok(Response::OffsetFetch(OffsetFetchResponse {
                    offsets: offsets
                        .into_iter()
                        .map(|(partition, committed)| committed_view(partition, committed))
                        .collect(),
                })),
                other => Err(unexpected(other)),
            }
        }
        Request::DescribeGroup(describe) => {
            match ask(
                context,
                &describe.group,
                GroupRequest::Describe,
                ADMIN_TIMEOUT,
            )
            .await?
            {
                GroupAnswer::Described(summary, offsets) => {
                    Ok(Response::DescribeGroup(description_view(summary, offsets)))
                }
                other => Err(unexpected(other)),
            }
        }
        Request::ResetOffsets(reset) => {
            let request = GroupRequest::Reset {
                offsets: offsets_of(reset.offsets),
            };
            done(ask(context, &reset.group, request, ADMIN_TIMEOUT).await?)
                .map(|()| Response::ResetOffsets)
        }
        Request::DeleteGroup(delete) => {
            done(ask(context, &delete.group, GroupRequest::Delete, ADMIN_TIMEOUT).await?)
                .map(|()| Response::DeleteGroup)
        }
        other => {
            tracing::error!(?other, "not a group request");
            Err(ErrorCode::Internal)
        }
    }
}

/// The group of `__consumer_offsets`' partition that holds `group`, and that partition's
/// replicas; `CoordinatorNotAvailable` until the cluster has created the topic.
fn offsets_partition(context: &ApiContext, group: &str) -> Result<(GroupId, Vec<u64>), ErrorCode> {
    let state = context.meta.state.borrow();
    let topic = state
        .topics
        .get(OFFSETS_TOPIC)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let count =
        NonZeroU32::new(topic.partitions.len() as u32).ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let placement = &topic.partitions[offsets_partition_for(group, count) as usize];
    Ok((placement.group, placement.replicas.clone()))
}

/// The leader of the group's offsets partition as this node knows it: its own replica's view,
/// else (not a replica) the preferred leader, which leads whenever it can.
fn find_coordinator(group: &str, context: &ApiContext) -> Result<Response, ErrorCode> {
    let (offsets_group, replicas) = offsets_partition(context, group)?;
    let leader = match context.node.offsets_partition(offsets_group) {
        Some(handle) => handle.view.borrow().leader,
        None => replicas.first().copied(),
    };
    let node_id = leader.ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let address = context
        .node
        .client_address(node_id)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    Ok(Response::FindCoordinator(FindCoordinatorResponse {
        node_id,
        address,
    }))
}

/// Sends `request` to this node's replica of the group's offsets partition and waits up to
/// `wait` for its answer.
async fn ask(
    context: &ApiContext,
    group: &str,
    request: GroupRequest,
    wait: Duration,
) -> Result<GroupAnswer, ErrorCode> {
    let (offsets_group, _) = offsets_partition(context, group)?;
    let handle = context
        .node
        .offsets_partition(offsets_group)
        .ok_or(ErrorCode::NotCoordinator)?;
    let (reply, answer) = oneshot::channel();
    send(
        &handle,
        CoordinatorInput::Request {
            group: group.to_string(),
            request,
            reply,
        },
    )
    .await?;
    match tokio::time::timeout(wait, answer).await {
        Ok(Ok(result)) => result.map_err(|error| error_code(&error)),
        // Dropped: a newer request of the same member took its place, or the actor stopped.
        Ok(Err(_)) => Err(ErrorCode::CoordinatorNotAvailable),
        Err(_) => Err(ErrorCode::Timeout),
    }
}

async fn send(handle: &CoordinatorHandle, input: CoordinatorInput) -> Result<(), ErrorCode> {
    handle
        .inbox
        .send(input)
        .await
        .map_err(|_| ErrorCode::CoordinatorNotAvailable)
}

/// Every group this node coordinates, on each offsets partition it leads.
async fn list_groups(context: &ApiContext) -> Result<Response, ErrorCode> {
    let mut groups = Vec::new();
    for (_, handle) in context.node.local_offsets_partitions() {
        if handle.view.borrow().leader != Some(context.node.node_id()) {
            continue;
        }
        let (reply, answer) = oneshot::channel();
        send(&handle, CoordinatorInput::List { reply }).await?;
        match tokio::time::timeout(ADMIN_TIMEOUT, answer).await {
            Ok(Ok(Ok(summaries))) => groups.extend(summaries.into_iter().map(listing)),
            // Leadership moved meanwhile: the new leader lists them.
            Ok(Ok(Err(_))) | Ok(Err(_)) => {}
            Err(_) => return Err(ErrorCode::Timeout),
        }
    }
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    Ok(Response::ListGroups(ListGroupsResponse { groups }))
}

fn listing(summary: GroupSummary) -> GroupListing {
    GroupListing {
        group: summary.group,
        state: state_view(summary.description.state),
        protocol_type: summary.description.protocol_type.unwrap_or_default(),
        members: summary.description.members.len() as u32,
    }
}

fn done(answer: GroupAnswer) -> Result<(), ErrorCode> {
    match answer {
        GroupAnswer::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

fn unexpected(answer: GroupAnswer) -> ErrorCode {
    tracing::error!(
        ?answer,
        "the coordinator answered a request with another's answer"
    );
    ErrorCode::Internal
}

fn offsets_of(offsets: Vec<PartitionOffset>) -> Vec<(TopicPartition, OffsetAndMetadata)> {
    offsets
        .into_iter()
        .map(|o| {
            (
                TopicPartition {
                    topic: o.topic,
                    partition: o.partition,
                },
                OffsetAndMetadata {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata: o.metadata,
                },
            )
        })
        .collect()
}

fn committed_view(
    partition: TopicPartition,
    committed: Option<CommittedOffset>,
) -> CommittedPartitionOffset {
    let (offset, leader_epoch, metadata) = match committed {
        Some(c) => (
            Some(c.offset.offset),
            c.offset.leader_epoch,
            c.offset.metadata,
        ),
        None => (None, None, String::new()),
    };
    CommittedPartitionOffset {
        topic: partition.topic,
        partition: partition.partition,
        offset,
        leader_epoch,
        metadata,
    }
}

fn description_view(
    summary: GroupSummary,
    offsets: Vec<(TopicPartition, CommittedOffset)>,
) -> GroupDescriptionView {
    let description = summary.description;
    GroupDescriptionView {
        group: summary.group,
        state: state_view(description.state),
        generation: description.generation,
        protocol_type: description.protocol_type.unwrap_or_default(),
        protocol: description.protocol.unwrap_or_default(),
        leader: description.leader,
        members: description
            .members
            .into_iter()
            .map(|m| GroupMemberView {
                member_id: m.member_id,
                client_id: m.client_id,
                metadata: m.metadata.to_vec(),
                assignment: m.assignment.to_vec(),
            })
            .collect(),
        offsets: offsets
            .into_iter()
            .map(|(partition, committed)| committed_view(partition, Some(committed)))
            .collect(),
    }
}

fn state_view(state: GroupState) -> GroupStateView {
    match state {
        GroupState::Empty => GroupStateView::Empty,
        GroupState::PreparingRebalance => GroupStateView::PreparingRebalance,
        GroupState::CompletingRebalance => GroupStateView::CompletingRebalance,
        GroupState::Stable => GroupStateView::Stable,
        GroupState::Dead => GroupStateView::Dead,
    }
}

/// The wire's code for a coordinator's refusal (the same names as Kafka's).
pub(crate) fn error_code(error: &GroupError) -> ErrorCode {
    match error {
        GroupError::RebalanceInProgress => ErrorCode::RebalanceInProgress,
        GroupError::UnknownMemberId => ErrorCode::UnknownMemberId,
        GroupError::IllegalGeneration => ErrorCode::IllegalGeneration,
        GroupError::NotCoordinator => ErrorCode::NotCoordinator,
        GroupError::CoordinatorLoadInProgress => ErrorCode::CoordinatorLoadInProgress,
        GroupError::CoordinatorNotAvailable => ErrorCode::CoordinatorNotAvailable,
        GroupError::InconsistentGroupProtocol => ErrorCode::InconsistentGroupProtocol,
        GroupError::InvalidSessionTimeout => ErrorCode::InvalidSessionTimeout,
        GroupError::InvalidGroupId => ErrorCode::InvalidGroupId,
        GroupError::NonEmptyGroup => ErrorCode::NonEmptyGroup,
        GroupError::GroupIdNotFound => ErrorCode::GroupIdNotFound,
        GroupError::OffsetMetadataTooLarge => ErrorCode::OffsetMetadataTooLarge,
        GroupError::CorruptCommand => ErrorCode::Internal,
    }
}
