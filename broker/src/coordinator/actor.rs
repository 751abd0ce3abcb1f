//! One partition of `__consumer_offsets` as a running Raft group: its replicated
//! [`OffsetsState`] (every replica), and on its leader the coordinator of the groups that hash to
//! it: their memberships in memory ([`GroupMembership`]), the join and sync requests waiting on
//! them, and the proposals in flight (docs/CONSUMER-GROUPS.md "The coordinator at run time").
//!
//! The pure parts decide; this shell only moves things between them:
//! - requests pass [`CoordinatorGate::check`] first (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS);
//! - a membership's [`Effects`] are carried out in order: replies to the waiting member's channel,
//!   proposals to the Raft group, each remembered by its index and term;
//! - an applied entry answers what waits on its index if it carries the term it was proposed in
//!   (another term's entry there means the proposal was lost: NOT_COORDINATOR, find the new one);
//! - leadership lost: every group is unloaded and everything waiting answered NOT_COORDINATOR;
//!   once a new leader's no-op applies, every group is rebuilt from the offsets state.
//!
//! Time: memberships run on a monotonic clock (ms since this actor started); entries carry the
//! leader's wall clock (`OffsetsEntry::at_ms`), which only expiry reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use bytes::Bytes;
use keel_raft::{Entry, Index, ProposeError, Role, Snapshot, Term};
use tokio::sync::{mpsc, oneshot, watch};

use super::membership::{
    Effects, GroupDescription, GroupMembership, GroupState, JoinRequest, JoinResponse,
    MembershipConfig, Reply, SyncRequest, SyncResponse,
};
use super::offsets::{
    CommittedOffset, GroupRecord, OffsetAndMetadata, OffsetsCommand, OffsetsEntry, OffsetsOutcome,
    OffsetsState, TopicPartition,
};
use super::{CoordinatorGate, Generation, GroupError, MemberId};
use crate::group::actor::{self, Control, GroupActor};
use crate::group::driver::Machine;
use crate::group::storage_log::{fatal_message, StorageLog};
use crate::group::{Host, PeerBatch, RaftGroup};
use crate::limits::{
    LAG_EXPORT_INTERVAL, OFFSETS_EXPIRY_CHECK_INTERVAL, OFFSETS_RETENTION_MS,
    OFFSETS_SNAPSHOT_EVERY_ENTRIES,
};
use crate::transport::NodeId;

/// A group request, for the coordinator of `group`.
#[derive(Debug)]
pub enum GroupRequest {
    Join(JoinRequest),
    Sync(SyncRequest),
    Heartbeat {
        member_id: MemberId,
        generation: Generation,
    },
    Leave {
        member_id: MemberId,
    },
    Commit {
        member_id: MemberId,
        generation: Generation,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    },
    /// `None`: every partition the group holds offsets for.
    FetchOffsets {
        partitions: Option<Vec<TopicPartition>>,
    },
    Describe,
    Reset {
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    },
    Delete,
}

/// A group as `Describe` and `List` see it.
#[derive(Debug, Clone)]
pub struct GroupSummary {
    pub group: String,
    pub description: GroupDescription,
}

#[derive(Debug)]
pub enum GroupAnswer {
    Joined(JoinResponse),
    Synced(SyncResponse),
    Done,
    /// Per requested partition (`None`: nothing committed), or every committed one.
    Offsets(Vec<(TopicPartition, Option<CommittedOffset>)>),
    Described(GroupSummary, Vec<(TopicPartition, CommittedOffset)>),
}

pub type GroupReply = oneshot::Sender<Result<GroupAnswer, GroupError>>;

pub enum CoordinatorInput {
    Peer(PeerBatch),
    Request {
        group: String,
        request: GroupRequest,
        reply: GroupReply,
    },
    /// Every group this node coordinates on this partition (none unless it leads).
    List {
        reply: oneshot::Sender<Result<Vec<GroupSummary>, GroupError>>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// What request handlers see of an offsets partition: who leads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoordinatorView {
    pub leader: Option<NodeId>,
}

/// The handle request handlers use.
#[derive(Clone)]
pub struct CoordinatorHandle {
    pub inbox: mpsc::Sender<CoordinatorInput>,
    pub view: watch::Receiver<CoordinatorView>,
}

/// What waits on a proposal's entry.
enum Pending {
    /// A client's commit, reset or delete: answered with the entry's result.
    Client { group: String, reply: GroupReply },
    /// A membership's generation: reported back to it (`generation_stored`).
    Generation {
        group: String,
        generation: Generation,
    },
    /// Member removals and expiry: nobody waits; their outcome is in the state.
    Nobody,
}

/// One group's membership and the requests waiting on it, keyed by member id (Kafka keeps one
/// callback per member and kind; a newer request replaces an older one).
struct CoordinatedGroup {
    membership: GroupMembership,
    joins: HashMap<MemberId, GroupReply>,
    syncs: HashMap<MemberId, GroupReply>,
}

pub struct OffsetsPartition {
    state: OffsetsState,
    gate: CoordinatorGate,
    groups: BTreeMap<String, CoordinatedGroup>,
    /// Proposals in flight by index, with the term they were made in.
    pending: BTreeMap<Index, (Term, Pending)>,
    /// Proposals decided while applying (which cannot propose): made after the round.
    deferred: Vec<OffsetsCommand>,
    config: MembershipConfig,
    started: Instant,
    last_expiry: Instant,
    view: watch::Sender<CoordinatorView>,
    group_label: String,
    host: Host,
    last_lag_export: Instant,
    /// The (group, topic, partition) lag gauges this coordinator set: zeroed when it stops
    /// coordinating them, so a query taking the maximum over nodes sees the live coordinator's.
    exported_lag: BTreeSet<(String, String, u32)>,
}

impl OffsetsPartition {
    /// Consumer lag, `keel_consumer_group_lag{group, topic, partition}`: the partition's high
    /// watermark (as this node's replica has it) less the group's committed offset, for every
    /// offset of the groups this node coordinates whose partition it replicates.
    fn export_lag(&mut self) {
        let mut exported = BTreeSet::new();
        if self.gate.check().is_ok() {
            for (name, record) in &self.state.groups {
                for (partition, committed) in &record.offsets {
                    let Some(high_watermark) = self
                        .host
                        .high_watermark(&partition.topic, partition.partition)
                    else {
                        continue;
                    };
                    let lag = high_watermark.saturating_sub(committed.offset.offset);
                    lag_gauge(name, &partition.topic, partition.partition).set(lag as f64);
                    exported.insert((name.clone(), partition.topic.clone(), partition.partition));
                }
            }
        }
        for (group, topic, partition) in self.exported_lag.difference(&exported) {
            lag_gauge(group, topic, *partition).set(0.0);
        }
        self.exported_lag = exported;
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The coordinated group `name`, rebuilt from its record or new if there is none.
    fn group_entry(&mut self, name: &str) -> &mut CoordinatedGroup {
        if !self.groups.contains_key(name) {
            let membership = self.membership_of(name);
            self.groups.insert(
                name.to_string(),
                CoordinatedGroup {
                    membership,
                    joins: HashMap::new(),
                    syncs: HashMap::new(),
                },
            );
        }
        self.groups.get_mut(name).expect("inserted above")
    }

    /// A group's membership as the offsets state holds it. A fresh random seed each time, so
    /// member ids never repeat across coordinators.
    fn membership_of(&self, name: &str) -> GroupMembership {
        let seed: u64 = rand::random();
        match self.state.group(name) {
            Some(record) => {
                GroupMembership::restore(name, record, self.config, self.now_ms(), seed)
            }
            None => GroupMembership::new(name, self.config, seed),
        }
    }

    /// Drops the in-memory group a request made for a name the offsets state does not hold and
    /// that has no members nor anything waiting (a heartbeat or describe of an unknown group):
    /// requests for made-up names must not grow the coordinator's memory.
    fn forget_if_unknown(&mut self, name: &str) {
        let unused = self.groups.get(name).is_some_and(|entry| {
            entry.membership.state() == GroupState::Empty
                && entry.membership.member_count() == 0
                && entry.joins.is_empty()
                && entry.syncs.is_empty()
        });
        let proposed = self.pending.values().any(|(_, pending)| match pending {
            Pending::Client { group, .. } | Pending::Generation { group, .. } => group == name,
            Pending::Nobody => false,
        });
        if unused && !proposed && self.state.group(name).is_none() {
            self.groups.remove(name);
        }
    }

    /// Delivers a membership's replies now; its proposals go to `proposals` (in order).
    fn deliver(&mut self, name: &str, effects: Effects, proposals: &mut Vec<OffsetsCommand>) {
        if let Some(entry) = self.groups.get_mut(name) {
            for reply in effects.replies {
                match reply {
                    Reply::Join { member_id, result } => {
                        if let Some(channel) = entry.joins.remove(&member_id) {
                            let _ = channel.send(result.map(GroupAnswer::Joined));
                        }
                    }
                    Reply::Sync { member_id, result } => {
                        if let Some(channel) = entry.syncs.remove(&member_id) {
                            let _ = channel.send(result.map(GroupAnswer::Synced));
                        }
                    }
                }
            }
        }
        proposals.extend(effects.proposals);
    }

    /// Unloads every group (leadership lost or a new term): waiting joins and syncs, and every
    /// proposal in flight, answer NOT_COORDINATOR so clients find the new coordinator.
    fn unload_all(&mut self) {
        let mut ignored = Vec::new();
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for name in names {
            let effects = match self.groups.get_mut(&name) {
                Some(entry) => entry.membership.unload(),
                None => continue,
            };
            self.deliver(&name, effects, &mut ignored);
            if let Some(entry) = self.groups.remove(&name) {
                // Requests that were waiting without a reply due (a replaced channel's owner).
                for (_, channel) in entry.joins.into_iter().chain(entry.syncs) {
                    let _ = channel.send(Err(GroupError::NotCoordinator));
                }
            }
        }
        for (_, (_, pending)) in std::mem::take(&mut self.pending) {
            if let Pending::Client { reply, .. } = pending {
                let _ = reply.send(Err(GroupError::NotCoordinator));
            }
        }
        self.deferred.clear();
    }

    /// Rebuilds every group from the offsets state: this leader's no-op applied, so the state
    /// holds everything the previous terms committed.
    fn load_all(&mut self) {
        let names: Vec<String> = self.state.groups.keys().cloned().collect();
        for name in names {
            self.group_entry(&name);
        }
        tracing::info!(
            group = %self.group_label,
            groups = self.groups.len(),
            "coordinator loaded its groups"
        );
    }

    /// An applied entry's result, for what waited on it.
    fn settle(&mut self, entry: &Entry, result: Option<Result<OffsetsOutcome, GroupError>>) {
        if let Some(Ok(OffsetsOutcome::Expired { deleted_groups, .. })) = &result {
            for name in deleted_groups {
                if self
                    .groups
                    .get(name)
                    .is_some_and(|g| g.membership.state() == GroupState::Empty)
                {
                    self.groups.remove(name);
                }
            }
        }
        let Some((term, pending)) = self.pending.remove(&entry.index) else {
            return;
        };
        // Another leader's entry took the index: the proposal was lost with this term.
        let result = if term == entry.term {
            result.unwrap_or(Err(GroupError::NotCoordinator))
        } else {
            Err(GroupError::NotCoordinator)
        };
        match pending {
            Pending::Client { group, reply } => {
                if let Ok(OffsetsOutcome::GroupDeleted { .. }) = &result {
                    self.groups.remove(&group);
                } else if self
                    .groups
                    .get(&group)
                    .is_some_and(|g| g.membership.state() == GroupState::Dead)
                {
                    // A delete that failed: the group is as its record says.
                    self.groups.remove(&group);
                }
                let _ = reply.send(result.map(|_| GroupAnswer::Done));
            }
            Pending::Generation { group, generation } => {
                let now = self.now_ms();
                let Some(entry) = self.groups.get_mut(&group) else {
                    return;
                };
                let effects =
                    entry
                        .membership
                        .generation_stored(now, generation, result.map(|_| ()));
                let mut proposals = Vec::new();
                self.deliver(&group, effects, &mut proposals);
                self.deferred.extend(proposals);
            }
            Pending::Nobody => {}
        }
    }

    fn describe(&self, name: &str) -> (GroupSummary, Vec<(TopicPartition, CommittedOffset)>) {
        let description = match self.groups.get(name) {
            Some(entry) => entry.membership.describe(),
            None => self.membership_of(name).describe(),
        };
        let offsets = self
            .state
            .group(name)
            .map(|record| {
                record
                    .offsets
                    .iter()
                    .map(|(partition, committed)| (partition.clone(), committed.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let description = if self.groups.contains_key(name) || self.state.group(name).is_some() {
            description
        } else {
            GroupDescription {
                state: GroupState::Dead,
                ..description
            }
        };
        (
            GroupSummary {
                group: name.to_string(),
                description,
            },
            offsets,
        )
    }
}

impl Machine<StorageLog> for OffsetsPartition {
    fn apply(&mut self, entry: &Entry, _log: &StorageLog) {
        let result = self.state.apply(entry);
        if let Some(Err(error)) = &result {
            tracing::debug!(group = %self.group_label, index = entry.index, %error, "offsets command refused");
        }
        if self.gate.on_applied(entry) {
            self.load_all();
        }
        self.settle(entry, result);
    }

    fn snapshot(&self) -> Bytes {
        self.state.snapshot()
    }

    fn restore(&mut self, _log: &StorageLog, snapshot: &Snapshot) {
        self.state = OffsetsState::restore(&snapshot.data).unwrap_or_else(|_| {
            fatal_message(&format!(
                "group {}: an offsets snapshot through {} that does not decode",
                self.group_label, snapshot.meta.last_included_index
            ))
        });
        tracing::info!(group = %self.group_label, through = snapshot.meta.last_included_index, "offsets snapshot installed");
    }

    fn on_role_change(&mut self, role: Role, leader: Option<NodeId>, term: Term) {
        self.unload_all();
        self.gate.on_role_change(role == Role::Leader, term);
        self.view.send_replace(CoordinatorView { leader });
    }
}

impl GroupActor for OffsetsPartition {
    type Input = CoordinatorInput;

    fn classify(input: CoordinatorInput) -> Control<CoordinatorInput> {
        match input {
            CoordinatorInput::Peer(batch) => Control::Peer(batch),
            CoordinatorInput::Shutdown { done } => Control::Shutdown(done),
            other => Control::Other(other),
        }
    }

    fn handle(&mut self, group: &mut RaftGroup, input: CoordinatorInput) {
        match input {
            CoordinatorInput::Request {
                group: name,
                request,
                reply,
            } => {
                if let Err(error) = self.gate.check() {
                    let _ = reply.send(Err(error));
                    return;
                }
                let proposals = self.serve(&name, request, reply);
                propose_all(group, self, &name, proposals);
                self.forget_if_unknown(&name);
            }
            CoordinatorInput::List { reply } => {
                let answer = self.gate.check().map(|_| {
                    let mut names: Vec<String> = self.groups.keys().cloned().collect();
                    names.extend(self.state.groups.keys().cloned());
                    names.sort();
                    names.dedup();
                    names.iter().map(|name| self.describe(name).0).collect()
                });
                let _ = reply.send(answer);
            }
            CoordinatorInput::Peer(batch) => group.step(batch),
            // The loop takes shutdowns (GroupActor::classify); answering keeps the caller unstuck.
            CoordinatorInput::Shutdown { done } => {
                let _ = done.send(());
            }
        }
    }

    fn on_tick(&mut self, group: &mut RaftGroup) {
        if self.last_lag_export.elapsed() >= LAG_EXPORT_INTERVAL {
            self.last_lag_export = Instant::now();
            self.export_lag();
        }
        if self.gate.check().is_err() {
            return;
        }
        let now = self.now_ms();
        let due: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.membership.next_deadline().is_some_and(|at| at <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            let Some(entry) = self.groups.get_mut(&name) else {
                continue;
            };
            let effects = entry.membership.poll(now);
            let mut proposals = Vec::new();
            self.deliver(&name, effects, &mut proposals);
            propose_all(group, self, &name, proposals);
        }
        if self.last_expiry.elapsed() >= OFFSETS_EXPIRY_CHECK_INTERVAL {
            self.last_expiry = Instant::now();
            let command = OffsetsCommand::ExpireGroups {
                retention_ms: OFFSETS_RETENTION_MS,
            };
            propose_all(group, self, "", vec![command]);
        }
    }

    fn after_round(&mut self, group: &mut RaftGroup) {
        // Proposals decided while applying: none is lost, and each goes in the order decided.
        let deferred = std::mem::take(&mut self.deferred);
        for command in deferred {
            let name = command_group(&command).to_string();
            propose_all(group, self, &name, vec![command]);
        }
        let state = &self.state;
        group.compact_live_state_if_due(OFFSETS_SNAPSHOT_EVERY_ENTRIES, "offsets", || {
            Ok::<_, std::convert::Infallible>(state.snapshot())
        });
    }

    fn on_stop(&mut self) {
        self.unload_all();
    }
}

impl OffsetsPartition {
    /// Serves one request on the coordinator; returns what to propose for it.
    fn serve(&mut self, name: &str, request: GroupRequest, reply: GroupReply) -> Vec<Proposal> {
        let now = self.now_ms();
        let mut proposals = Vec::new();
        match request {
            GroupRequest::Join(join) => {
                let entry = self.group_entry(name);
                match entry.membership.join(now, join) {
                    Ok((member_id, effects)) => {
                        // Its answer may be in these effects: the channel must wait first. An
                        // older join of the same member is dropped (its client gave up on it).
                        entry.joins.insert(member_id, reply);
                        let mut commands = Vec::new();
                        self.deliver(name, effects, &mut commands);
                        proposals.extend(commands.into_iter().map(Proposal::membership));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            GroupRequest::Sync(sync) => {
                let entry = self.group_entry(name);
                let member_id = sync.member_id.clone();
                match entry.membership.sync(now, sync) {
                    Ok(effects) => {
                        entry.syncs.insert(member_id, reply);
                        let mut commands = Vec::new();
                        self.deliver(name, effects, &mut commands);
                        proposals.extend(commands.into_iter().map(Proposal::membership));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            GroupRequest::Heartbeat {
                member_id,
                generation,
            } => {
                let result = self
                    .group_entry(name)
                    .membership
                    .heartbeat(now, &member_id, generation);
                let _ = reply.send(result.map(|()| GroupAnswer::Done));
            }
            GroupRequest::Leave { member_id } => {
                let result = self.group_entry(name).membership.leave(now, &member_id);
                match result {
                    Ok(effects) => {
                        let mut commands = Vec::new();
                        self.deliver(name, effects, &mut commands);
                        proposals.extend(commands.into_iter().map(Proposal::membership));
                        let _ = reply.send(Ok(GroupAnswer::Done));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            GroupRequest::Commit {
                member_id,
                generation,
                offsets,
            } => {
                let checked = self
                    .group_entry(name)
                    .membership
                    .validate_commit(now, &member_id, generation);
                match checked {
                    Ok(()) => proposals.push(Proposal::client(
                        OffsetsCommand::CommitOffsets {
                            group: name.to_string(),
                            member_id,
                            generation,
                            offsets,
                        },
                        reply,
                    )),
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            GroupRequest::FetchOffsets { partitions } => {
                let offsets = match partitions {
                    Some(partitions) => partitions
                        .into_iter()
                        .map(|partition| {
                            let committed = self.state.committed(name, &partition).cloned();
                            (partition, committed)
                        })
                        .collect(),
                    None => self
                        .state
                        .group(name)
                        .map(|record: &GroupRecord| {
                            record
                                .offsets
                                .iter()
                                .map(|(p, c)| (p.clone(), Some(c.clone())))
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                let _ = reply.send(Ok(GroupAnswer::Offsets(offsets)));
            }
            GroupRequest::Describe => {
                let (summary, offsets) = self.describe(name);
                let _ = reply.send(Ok(GroupAnswer::Described(summary, offsets)));
            }
            GroupRequest::Reset { offsets } => {
                match self.group_entry(name).membership.check_empty() {
                    Ok(()) => proposals.push(Proposal::client(
                        OffsetsCommand::ResetOffsets {
                            group: name.to_string(),
                            offsets,
                        },
                        reply,
                    )),
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            GroupRequest::Delete => {
                let known = self.state.group(name).is_some();
                let entry = self.group_entry(name);
                let checked = if known {
                    entry.membership.delete()
                } else {
                    Err(GroupError::GroupIdNotFound)
                };
                match checked {
                    Ok(()) => proposals.push(Proposal::client(
                        OffsetsCommand::DeleteGroup {
                            group: name.to_string(),
                        },
                        reply,
                    )),
                    Err(error) => {
                        if !known {
                            self.groups.remove(name);
                        }
                        let _ = reply.send(Err(error));
                    }
                }
            }
        }
        proposals
    }
}

/// A command to propose and what waits on it.
struct Proposal {
    command: OffsetsCommand,
    reply: Option<GroupReply>,
}

impl Proposal {
    fn membership(command: OffsetsCommand) -> Proposal {
        Proposal {
            command,
            reply: None,
        }
    }

    fn client(command: OffsetsCommand, reply: GroupReply) -> Proposal {
        Proposal {
            command,
            reply: Some(reply),
        }
    }
}

impl From<OffsetsCommand> for Proposal {
    fn from(command: OffsetsCommand) -> Proposal {
        Proposal::membership(command)
    }
}

fn lag_gauge(group: &str, topic: &str, partition: u32) -> metrics::Gauge {
    metrics::gauge!(
        "keel_consumer_group_lag",
        "group" => group.to_string(),
        "topic" => topic.to_string(),
        "partition" => partition.to_string()
    )
}

fn command_group(command: &OffsetsCommand) -> &str {
    match command {
        OffsetsCommand::CommitOffsets { group, .. }
        | OffsetsCommand::GroupGeneration { group, .. }
        | OffsetsCommand::RemoveMembers { group, .. }
        | OffsetsCommand::ResetOffsets { group, .. }
        | OffsetsCommand::DeleteGroup { group } => group,
        OffsetsCommand::ExpireGroups { .. } => "",
    }
}

/// The leader's clock for entry times, in ms since the Unix epoch (a clock before 1970 reads 0;
/// the state machine keeps entry times from going backwards anyway).
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Proposes `proposals` for group `name` in order, each remembered by its index and term. One
/// that cannot be proposed (leadership just lost, the log's queue full) fails what waits on it:
/// a client is told NOT_COORDINATOR, a generation is reported failed to its membership.
fn propose_all<P: Into<Proposal>>(
    group: &mut RaftGroup,
    state: &mut OffsetsPartition,
    name: &str,
    proposals: Vec<P>,
) {
    for proposal in proposals {
        let Proposal { command, reply } = proposal.into();
        let generation = match &command {
            OffsetsCommand::GroupGeneration { generation, .. } => Some(*generation),
            _ => None,
        };
        let entry = OffsetsEntry {
            at_ms: wall_clock_ms(),
            command,
        };
        match group.node.propose_meta(entry.encode()) {
            Ok((index, term)) => {
                let pending = match (reply, generation) {
                    (Some(reply), _) => Pending::Client {
                        group: name.to_string(),
                        reply,
                    },
                    (None, Some(generation)) => Pending::Generation {
                        group: name.to_string(),
                        generation,
                    },
                    (None, None) => Pending::Nobody,
                };
                state.pending.insert(index, (term, pending));
            }
            Err(error) => {
                let error = match error {
                    ProposeError::NotLeader { .. } => GroupError::NotCoordinator,
                    _ => GroupError::CoordinatorNotAvailable,
                };
                tracing::debug!(group = group.group, %error, "offsets command not proposed");
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error));
                } else if let Some(generation) = generation {
                    let now = state.now_ms();
                    if let Some(entry) = state.groups.get_mut(name) {
                        let effects =
                            entry
                                .membership
                                .generation_stored(now, generation, Err(error));
                        let mut commands = Vec::new();
                        state.deliver(name, effects, &mut commands);
                        state.deferred.extend(commands);
                    }
                }
            }
        }
    }
}

/// Runs an offsets partition until it is shut down (group/actor.rs has the loop).
pub async fn run(
    group: RaftGroup,
    inbox: mpsc::Receiver<CoordinatorInput>,
    view: watch::Sender<CoordinatorView>,
    host: Host,
    campaign_at_start: bool,
) {
    // A replica with a snapshot starts from it; the log after it replays as it commits.
    let state = match group.node.snapshot() {
        Some(snapshot) => OffsetsState::restore(&snapshot.data).unwrap_or_else(|_| {
            fatal_message(&format!(
                "group {}: the offsets snapshot through {} does not decode",
                group.group, snapshot.meta.last_included_index
            ))
        }),
        None => OffsetsState::default(),
    };
    let machine = OffsetsPartition {
        state,
        gate: CoordinatorGate::default(),
        groups: BTreeMap::new(),
        pending: BTreeMap::new(),
        deferred: Vec::new(),
        config: MembershipConfig::default(),
        started: Instant::now(),
        last_expiry: Instant::now(),
        view,
        group_label: group.group.to_string(),
        host: host.clone(),
        last_lag_export: Instant::now(),
        exported_lag: BTreeSet::new(),
    };
    actor::run(group, inbox, machine, host.tick(), campaign_at_start).await;
}
