//! [`GroupMember`]: one consumer's membership of one group (Kafka's classic protocol, eager:
//! every partition is given up before a rejoin). It joins (the answer comes when the join phase
//! ends), computes the assignment when the coordinator made it leader, syncs (the answer comes
//! once the generation is stored), keeps its session with a background heartbeat task, commits
//! offsets under its generation and leaves.
//!
//! The heartbeat task and commits report "rejoin" through [`Signal`]; `poll` reads it and
//! rejoins. A join is cancel-safe: state changes only after each answer arrives, so a `poll`
//! dropped mid-join leaves a member that simply joins again (with the id it learned, if any).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::assignor::{Assignor, Subscriptions};
use super::coordinator::Coordinator;
use super::GroupConfig;
use crate::client::unexpected;
use crate::error::{ClientError, ConsumeError};
use crate::limits::{GROUP_INITIAL_DELAY_MS, HEARTBEATS_PER_SESSION};
use crate::wire::consumer_protocol::{Assignment, Subscription, TopicPartitions};
use crate::wire::groups::{
    GroupAssignment, GroupProtocol, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, OffsetCommitRequest, PartitionOffset, SyncGroupRequest,
    CONSUMER_PROTOCOL_TYPE,
};
use crate::wire::{ErrorCode, Request, Response};

/// Why the member must join again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejoin {
    /// A rebalance started, or the generation moved on: rejoin under the same member id.
    SameMember,
    /// The coordinator no longer knows the member id: join as a new member.
    NewMember,
}

/// The member's "rejoin" flag, set from the heartbeat task and from failed commits.
#[derive(Default)]
pub(crate) struct Signal {
    rejoin: Mutex<Option<Rejoin>>,
}

impl Signal {
    fn set(&self, rejoin: Rejoin) {
        let mut slot = self.rejoin.lock().expect("signal lock");
        // NewMember wins: rejoining under a forgotten id would only be refused.
        if *slot != Some(Rejoin::NewMember) {
            *slot = Some(rejoin);
        }
    }

    fn peek(&self) -> Option<Rejoin> {
        *self.rejoin.lock().expect("signal lock")
    }

    fn take(&self) -> Option<Rejoin> {
        self.rejoin.lock().expect("signal lock").take()
    }
}

/// A member's generation, what a commit is made under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Generation {
    pub member_id: String,
    pub generation: i32,
}

pub(crate) struct GroupMember {
    coordinator: Coordinator,
    config: GroupConfig,
    topics: Vec<String>,
    member_id: Option<String>,
    /// Set when the last join and sync succeeded, until the signal or a leave ends it.
    active: Option<Generation>,
    signal: Arc<Signal>,
    heartbeat: Option<JoinHandle<()>>,
}

/// How one join-and-sync round ended when it did not give an assignment.
enum Round {
    /// The group moved on under us (a rebalance, a newer generation): join again.
    Again(Rejoin, ClientError),
    Fatal(ConsumeError),
}

impl GroupMember {
    pub(crate) fn new(coordinator: Coordinator, config: GroupConfig, topics: Vec<String>) -> Self {
        GroupMember {
            coordinator,
            config,
            topics,
            member_id: None,
            active: None,
            signal: Arc::new(Signal::default()),
            heartbeat: None,
        }
    }

    pub(crate) fn group(&self) -> &str {
        self.coordinator.group()
    }

    pub(crate) fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// The generation the member is in, if it holds an assignment now.
    pub(crate) fn generation(&self) -> Option<&Generation> {
        self.active.as_ref()
    }

    /// Whether `poll` must (re)join before reading: never joined, or told to rejoin.
    pub(crate) fn needs_join(&self) -> bool {
        self.active.is_none() || self.signal.peek().is_some()
    }

    /// Joins the group and returns this member's partitions. Rounds that end in a rebalance
    /// are retried until twice the rebalance timeout (plus the initial delay) has passed.
    pub(crate) async fn join(&mut self) -> Result<Vec<TopicPartitions>, ConsumeError> {
        self.stop_heartbeat();
        self.active = None;
        if self.signal.take() == Some(Rejoin::NewMember) {
            self.member_id = None;
        }
        let rebalance = Duration::from_millis(u64::from(self.config.rebalance_timeout_ms));
        let deadline =
            Instant::now() + rebalance * 2 + Duration::from_millis(GROUP_INITIAL_DELAY_MS);
        loop {
            match self.round().await {
                Ok((generation, partitions)) => {
                    debug!(group = %self.group(), member = %generation.member_id, generation = generation.generation, ?partitions, "joined");
                    self.active = Some(generation);
                    self.start_heartbeat();
                    return Ok(partitions);
                }
                Err(Round::Fatal(error)) => return Err(error),
                Err(Round::Again(rejoin, error)) => {
                    debug!(group = %self.group(), %error, "rejoining");
                    if rejoin == Rejoin::NewMember {
                        self.member_id = None;
                    }
                    if Instant::now() >= deadline {
                        return Err(error.into());
                    }
                }
            }
        }
    }

    /// One JoinGroup and SyncGroup.
    async fn round(&mut self) -> Result<(Generation, Vec<TopicPartitions>), Round> {
        let metadata = Subscription::new(self.topics.clone())
            .encode()
            .map_err(|error| {
                Round::Fatal(ClientError::InvalidArgument(error.to_string()).into())
            })?;
        let join = Request::JoinGroup(JoinGroupRequest {
            group: self.group().to_string(),
            member_id: self.member_id.clone(),
            client_id: self.config.client_id.clone(),
            session_timeout_ms: self.config.session_timeout_ms,
            rebalance_timeout_ms: self.config.rebalance_timeout_ms,
            protocol_type: CONSUMER_PROTOCOL_TYPE.to_string(),
            protocols: self
                .config
                .assignors
                .iter()
                .map(|assignor| GroupProtocol {
                    name: assignor.name().to_string(),
                    metadata: metadata.clone(),
                })
                .collect(),
        });
        // The answer comes when the join phase ends: up to the rebalance timeout, plus the
        // initial delay of a group formed from empty, plus the round trip.
        let timeout = Duration::from_millis(
            u64::from(self.config.rebalance_timeout_ms) + GROUP_INITIAL_DELAY_MS,
        ) + self.coordinator.request_timeout();
        let joined = match self.coordinator.request(&join, timeout, timeout).await {
            Ok(Response::JoinGroup(joined)) => joined,
            Ok(other) => return Err(Round::Fatal(unexpected(&join, &other).into())),
            Err(error) => return Err(classify(error)),
        };
        self.member_id = Some(joined.member_id.clone());
        let assignments = if joined.leader == joined.member_id {
            self.lead(&joined).await.map_err(Round::Fatal)?
        } else {
            Vec::new()
        };
        let sync = Request::SyncGroup(SyncGroupRequest {
            group: self.group().to_string(),
            member_id: joined.member_id.clone(),
            generation: joined.generation,
            protocol_type: Some(joined.protocol_type.clone()),
            protocol: Some(joined.protocol.clone()),
            assignments,
        });
        // Followers wait for the leader's assignment (up to the rebalance timeout) and everyone
        // for the generation to be stored.
        let timeout = Duration::from_millis(u64::from(self.config.rebalance_timeout_ms))
            + self.coordinator.request_timeout();
        let synced = match self.coordinator.request(&sync, timeout, timeout).await {
            Ok(Response::SyncGroup(synced)) => synced,
            Ok(other) => return Err(Round::Fatal(unexpected(&sync, &other).into())),
            Err(error) => return Err(classify(error)),
        };
        let assignment = Assignment::decode(&synced.assignment).map_err(|error| {
            Round::Fatal(
                ClientError::protocol("group leader", format!("assignment: {error}")).into(),
            )
        })?;
        Ok((
            Generation {
                member_id: joined.member_id,
                generation: joined.generation,
            },
            assignment.partitions,
        ))
    }

    /// The leader's work: every member's subscription, each subscribed topic's partition
    /// count, the chosen assignor's answer, encoded for the sync.
    async fn lead(&self, joined: &JoinGroupResponse) -> Result<Vec<GroupAssignment>, ConsumeError> {
        let assignor = Assignor::from_name(&joined.protocol).ok_or_else(|| {
            ClientError::protocol(
                "coordinator",
                format!(
                    "chose protocol {:?}, which this member did not offer",
                    joined.protocol
                ),
            )
        })?;
        let mut subscriptions = Subscriptions::new();
        for member in &joined.members {
            let topics = match Subscription::decode(&member.metadata) {
                Ok(subscription) => subscription.topics,
                Err(error) => {
                    // One member's bad metadata should not stop the group: it gets nothing.
                    warn!(group = %self.group(), member = %member.member_id, %error, "a member's subscription does not decode");
                    Vec::new()
                }
            };
            subscriptions.insert(member.member_id.clone(), topics);
        }
        let topics: BTreeSet<&String> = subscriptions.values().flatten().collect();
        let mut counts = BTreeMap::new();
        for topic in topics {
            match self.coordinator.client().partition_count(topic).await {
                Ok(count) => {
                    counts.insert(topic.clone(), count);
                }
                // Kafka assigns only topics its metadata has; the rest wait for a rebalance.
                Err(ClientError::UnknownTopic { .. } | ClientError::InvalidTopicName { .. }) => {
                    warn!(group = %self.group(), %topic, "subscribed topic does not exist");
                }
                Err(error) => return Err(error.into()),
            }
        }
        let mut out = Vec::with_capacity(subscriptions.len());
        for (member_id, topics) in assignor.assign(&counts, &subscriptions) {
            let partitions = topics
                .into_iter()
                .map(|(topic, partitions)| TopicPartitions { topic, partitions })
                .collect();
            let assignment = Assignment::new(partitions)
                .encode()
                .map_err(|error| ClientError::InvalidArgument(error.to_string()))?;
            out.push(GroupAssignment {
                member_id,
                assignment,
            });
        }
        Ok(out)
    }

    fn start_heartbeat(&mut self) {
        let Some(generation) = self.active.clone() else {
            return;
        };
        let coordinator = self.coordinator.clone();
        let signal = self.signal.clone();
        let session = Duration::from_millis(u64::from(self.config.session_timeout_ms));
        let interval = session / HEARTBEATS_PER_SESSION;
        let request = Request::Heartbeat(HeartbeatRequest {
            group: self.group().to_string(),
            member_id: generation.member_id,
            generation: generation.generation,
        });
        self.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let timeout = coordinator.request_timeout().min(session);
                // Retried for up to a session: past that the coordinator has dropped us anyway.
                match coordinator.request(&request, timeout, session).await {
                    Ok(_) => {}
                    Err(error) => {
                        debug!(group = %coordinator.group(), %error, "heartbeat says rejoin");
                        signal.set(rejoin_for(&error));
                        return;
                    }
                }
            }
        }));
    }

    fn stop_heartbeat(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }

    /// A commit under the current generation, to run now or in a task.
    pub(crate) fn commit_task(
        &self,
        offsets: Vec<PartitionOffset>,
    ) -> Result<
        impl std::future::Future<Output = Result<(), ConsumeError>> + Send + 'static,
        ConsumeError,
    > {
        let generation = self.active.clone().ok_or(ConsumeError::NotInGroup)?;
        let coordinator = self.coordinator.clone();
        let signal = self.signal.clone();
        Ok(async move { commit(&coordinator, &signal, &generation, offsets).await })
    }

    /// Leaves the group (LeaveGroup) if a member; the member must join again to read.
    pub(crate) async fn leave(&mut self) -> Result<(), ConsumeError> {
        self.stop_heartbeat();
        self.active = None;
        let Some(member_id) = self.member_id.take() else {
            return Ok(());
        };
        let request = Request::LeaveGroup(LeaveGroupRequest {
            group: self.group().to_string(),
            member_id,
        });
        let timeout = self.coordinator.request_timeout();
        match self.coordinator.request(&request, timeout, timeout).await {
            Ok(Response::LeaveGroup) => Ok(()),
            Ok(other) => Err(unexpected(&request, &other).into()),
            // Already gone (its session expired, or an earlier leave's answer was lost).
            Err(error) if error.error_code() == Some(&ErrorCode::UnknownMemberId) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        // The session then expires on the coordinator; `leave` is the prompt way out.
        self.stop_heartbeat();
    }
}

async fn commit(
    coordinator: &Coordinator,
    signal: &Signal,
    generation: &Generation,
    offsets: Vec<PartitionOffset>,
) -> Result<(), ConsumeError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let request = Request::OffsetCommit(OffsetCommitRequest {
        group: coordinator.group().to_string(),
        member_id: generation.member_id.clone(),
        generation: generation.generation,
        offsets,
    });
    let timeout = coordinator.request_timeout();
    match coordinator.request(&request, timeout, timeout).await {
        Ok(Response::OffsetCommit) => Ok(()),
        Ok(other) => Err(unexpected(&request, &other).into()),
        Err(error) => match error.error_code() {
            Some(
                code @ (ErrorCode::RebalanceInProgress
                | ErrorCode::IllegalGeneration
                | ErrorCode::UnknownMemberId),
            ) => {
                signal.set(rejoin_for(&error));
                Err(ConsumeError::CommitFailed { code: code.clone() })
            }
            _ => Err(error.into()),
        },
    }
}

/// What a join or sync failure means: the group moved on (join again), or a real error.
fn classify(error: ClientError) -> Round {
    match error.error_code() {
        Some(ErrorCode::UnknownMemberId) => Round::Again(Rejoin::NewMember, error),
        Some(ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration) => {
            Round::Again(Rejoin::SameMember, error)
        }
        _ => Round::Fatal(error.into()),
    }
}

fn rejoin_for(error: &ClientError) -> Rejoin {
    if error.error_code() == Some(&ErrorCode::UnknownMemberId) {
        Rejoin::NewMember
    } else {
        Rejoin::SameMember
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_member_rejoin_is_not_downgraded() {
        let signal = Signal::default();
        signal.set(Rejoin::NewMember);
        signal.set(Rejoin::SameMember);
        assert_eq!(signal.take(), Some(Rejoin::NewMember));
        assert_eq!(signal.peek(), None);
    }

    #[test]
    fn join_failures_are_classified_as_kafka_clients_do() {
        let again = |code: ErrorCode| match classify(ClientError::Server(code)) {
            Round::Again(rejoin, _) => Some(rejoin),
            Round::Fatal(_) => None,
        };
        assert_eq!(again(ErrorCode::UnknownMemberId), Some(Rejoin::NewMember));
        assert_eq!(
            again(ErrorCode::RebalanceInProgress),
            Some(Rejoin::SameMember)
        );
        assert_eq!(
            again(ErrorCode::IllegalGeneration),
            Some(Rejoin::SameMember)
        );
        assert_eq!(again(ErrorCode::InconsistentGroupProtocol), None);
        assert_eq!(again(ErrorCode::InvalidSessionTimeout), None);
        assert_eq!(
            rejoin_for(&ClientError::Server(ErrorCode::UnknownMemberId)),
            Rejoin::NewMember
        );
        assert_eq!(
            rejoin_for(&ClientError::Timeout {
                address: "a:1".into(),
                timeout_ms: 1
            }),
            Rejoin::SameMember
        );
    }
}
