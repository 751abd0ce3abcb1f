//! One consumer group's membership under Kafka's classic group protocol, in the coordinator's
//! memory only, pure: no tasks, no clock (every call takes `now_ms`, a monotonic clock in
//! milliseconds), no reply channels. Join, sync, heartbeat and leave; session, rebalance and sync
//! timeouts through [`GroupMembership::poll`] and [`GroupMembership::next_deadline`]; the states
//! Empty, PreparingRebalance, CompletingRebalance, Stable and Dead (docs/CONSUMER-GROUPS.md).
//!
//! Joins and syncs that must wait are answered later, as values: every call returns [`Effects`],
//! the [`Reply`]s now due (keyed by member id, so the async shell keeps one reply channel per
//! member and kind) and the [`OffsetsCommand`]s to propose to the group's offsets partition
//! (a completed generation, members removed). A generation with members becomes Stable only when
//! the shell reports it stored ([`GroupMembership::generation_stored`]), so no member receives an
//! assignment the offsets partition does not hold.
//!
//! The coordinator is assignor-agnostic: protocols and their metadata, and the assignments the
//! elected leader computes, are opaque bytes.
//!
//! New members are admitted on their first join and given an id in its answer; Kafka's
//! MEMBER_ID_REQUIRED round trip is not used (clients of every version accept an id handed out
//! this way). Static membership (`group.instance.id`) is not supported.

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::offsets::{GroupRecord, MemberRecord, OffsetsCommand};
use super::{Generation, GroupError, MemberId, Protocol};
use crate::limits::{
    GROUP_INITIAL_REBALANCE_DELAY_MS, GROUP_MAX_SESSION_TIMEOUT_MS, GROUP_MIN_SESSION_TIMEOUT_MS,
    GROUP_NEW_MEMBER_JOIN_TIMEOUT_MS,
};

/// The coordinator's limits and delays, Kafka's broker settings of the same meaning (defaults
/// and their reasons: `limits.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipConfig {
    /// `group.min.session.timeout.ms`: a shorter session would make the group rebalance on
    /// every hiccup.
    pub min_session_timeout_ms: u64,
    /// `group.max.session.timeout.ms`: a longer one hides dead consumers too long.
    pub max_session_timeout_ms: u64,
    /// `group.initial.rebalance.delay.ms`: a group formed from empty waits this long (again
    /// after each new member, within the rebalance timeout) so a fleet of consumers starting
    /// together forms one generation instead of one per arrival.
    pub initial_rebalance_delay_ms: u64,
    /// Kafka's `NewMemberJoinTimeoutMs`: a new member's first join is dropped after this (its
    /// client may have timed out and retried under a new id), so abandoned joins cannot hold a
    /// rebalance open for the whole rebalance timeout.
    pub new_member_join_timeout_ms: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            min_session_timeout_ms: GROUP_MIN_SESSION_TIMEOUT_MS,
            max_session_timeout_ms: GROUP_MAX_SESSION_TIMEOUT_MS,
            initial_rebalance_delay_ms: GROUP_INITIAL_REBALANCE_DELAY_MS,
            new_member_join_timeout_ms: GROUP_NEW_MEMBER_JOIN_TIMEOUT_MS,
        }
    }
}

/// Kafka's classic group states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    /// No members; offsets may still be stored (and expire).
    Empty,
    /// Waiting for members to (re)join, up to the rebalance timeout.
    PreparingRebalance,
    /// Joined: waiting for the leader's assignment (and for it to be stored).
    CompletingRebalance,
    Stable,
    /// Deleted or unloaded: nothing more is served from this value.
    Dead,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    /// `None` for a new member (Kafka's empty member id).
    pub member_id: Option<MemberId>,
    pub client_id: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocol_type: String,
    /// In the member's order of preference.
    pub protocols: Vec<Protocol>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResponse {
    pub member_id: MemberId,
    pub generation: Generation,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: MemberId,
    /// Every member with its metadata for the chosen protocol, for the leader only (followers
    /// get none): the leader computes the assignment from it.
    pub members: Vec<(MemberId, Bytes)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRequest {
    pub member_id: MemberId,
    pub generation: Generation,
    /// Checked when given (Kafka's SyncGroup v5+).
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    /// The leader's assignment (followers send none). Members it leaves out get empty bytes;
    /// ids that are not members are ignored.
    pub assignments: Vec<(MemberId, Bytes)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResponse {
    pub protocol_type: String,
    pub protocol: String,
    pub assignment: Bytes,
}

/// The answer to a waiting join or sync, for the member's reply channel of that kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Join {
        member_id: MemberId,
        result: Result<JoinResponse, GroupError>,
    },
    Sync {
        member_id: MemberId,
        result: Result<SyncResponse, GroupError>,
    },
}

/// What a call asks of the shell, in order: deliver the replies, propose the commands (to the
/// group's offsets partition, in this order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Effects {
    pub replies: Vec<Reply>,
    pub proposals: Vec<OffsetsCommand>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty() && self.proposals.is_empty()
    }

    /// Removals in a row become one command: one entry however many sessions expired at once.
    fn remove_member(&mut self, group: &str, member_id: MemberId) {
        if let Some(OffsetsCommand::RemoveMembers { members, .. }) = self.proposals.last_mut() {
            members.push(member_id);
        } else {
            self.proposals.push(OffsetsCommand::RemoveMembers {
                group: group.to_string(),
                members: vec![member_id],
            });
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: MemberId,
    pub client_id: String,
    /// Its metadata for the chosen protocol (empty while none is chosen).
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub state: GroupState,
    pub generation: Generation,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<MemberId>,
    pub members: Vec<MemberDescription>,
}

#[derive(Clone, Debug)]
struct Member {
    id: MemberId,
    client_id: String,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    protocols: Vec<Protocol>,
    /// A join of this member waits for the join phase to end.
    awaiting_join: bool,
    /// A sync of this member waits for the assignment to be stored.
    awaiting_sync: bool,
    /// It has not sent its sync for this generation yet (removed at the sync deadline).
    sync_pending: bool,
    /// Its first join has not completed yet.
    is_new: bool,
    assignment: Bytes,
    /// When it is removed unless heard from: its session's end, or for a new member the end of
    /// its first join's time.
    deadline_ms: u64,
}

impl Member {
    /// Whether its deadline can remove it: a member waiting on a join or a sync is covered by
    /// the rebalance and sync deadlines instead, except a new member (Kafka's
    /// `hasSatisfiedHeartbeat`).
    fn expires(&self) -> bool {
        self.is_new || !(self.awaiting_join || self.awaiting_sync)
    }

    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|p| p.name == protocol)
    }
}

/// One group's membership: the classic protocol's state machine.
#[derive(Clone, Debug)]
pub struct GroupMembership {
    group: String,
    config: MembershipConfig,
    state: GroupState,
    generation: Generation,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<MemberId>,
    /// In joining order: the leader's successor is the longest-standing member.
    members: Vec<Member>,
    /// PreparingRebalance: the join phase ends here whoever has rejoined.
    join_deadline_ms: Option<u64>,
    /// PreparingRebalance from Empty: the join phase does not end before this.
    join_not_before_ms: Option<u64>,
    /// CompletingRebalance and Stable: members that have not synced by then are removed.
    sync_deadline_ms: Option<u64>,
    /// The generation whose assignment is being stored (a `GroupGeneration` proposed).
    storing: Option<Generation>,
    rng: ChaCha8Rng,
}

impl GroupMembership {
    /// A group the offsets partition holds nothing for. `seed` feeds member ids: the shell
    /// passes a random one, so ids never repeat across coordinators.
    pub fn new(group: impl Into<String>, config: MembershipConfig, seed: u64) -> Self {
        GroupMembership {
            group: group.into(),
            config,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            join_deadline_ms: None,
            join_not_before_ms: None,
            sync_deadline_ms: None,
            storing: None,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A group as a new coordinator finds it in the offsets partition: Stable with the stored
    /// members, who keep their assignments and need not rejoin (each gets a fresh session), or
    /// Empty. The generation continues from the stored one, so the next one stored is newer.
    /// If members were removed since the generation was stored, their partitions are
    /// unassigned: the group starts rebalancing instead.
    pub fn restore(
        group: impl Into<String>,
        record: &GroupRecord,
        config: MembershipConfig,
        now_ms: u64,
        seed: u64,
    ) -> Self {
        let mut membership = GroupMembership::new(group, config, seed);
        membership.generation = record.generation;
        membership.protocol_type = record.protocol_type.clone();
        let Some(protocol) = record.protocol.clone().filter(|_| !record.is_empty()) else {
            return membership;
        };
        membership.members = record
            .members
            .iter()
            .map(|m| Member {
                id: m.member_id.clone(),
                client_id: m.client_id.clone(),
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                protocols: m.protocols.clone(),
                awaiting_join: false,
                awaiting_sync: false,
                sync_pending: false,
                is_new: false,
                assignment: m.assignment.clone(),
                deadline_ms: now_ms.saturating_add(m.session_timeout_ms),
            })
            .collect();
        membership.leader = record
            .leader
            .clone()
            .filter(|leader| membership.index_of(leader).is_some())
            .or_else(|| membership.members.first().map(|m| m.id.clone()));
        membership.protocol = Some(protocol);
        membership.state = GroupState::Stable;
        if record.members_removed {
            let effects = membership.prepare_rebalance(now_ms);
            debug_assert!(effects.is_empty(), "nothing waits on a restored group");
        }
        debug_assert!(membership.consistent());
        membership
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> Generation {
        self.generation
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn is_member(&self, member_id: &str) -> bool {
        self.index_of(member_id).is_some()
    }

    pub fn describe(&self) -> GroupDescription {
        let protocol = self.protocol.as_deref().unwrap_or_default();
        GroupDescription {
            state: self.state,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .iter()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    client_id: m.client_id.clone(),
                    metadata: m.metadata(protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// A join. Ok with the member's id (new for a new member): its answer is in the returned
    /// effects or in a later call's, keyed by that id. A second join from a member whose first
    /// still waits takes its place (the shell drops the older reply channel, as Kafka does).
    pub fn join(
        &mut self,
        now_ms: u64,
        request: JoinRequest,
    ) -> Result<(MemberId, Effects), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let timeouts = self.config.min_session_timeout_ms..=self.config.max_session_timeout_ms;
        if !timeouts.contains(&request.session_timeout_ms) {
            return Err(GroupError::InvalidSessionTimeout);
        }
        let mut effects = Effects::default();
        let member_id = match request.member_id.clone() {
            None => {
                if !self.supports(&request, None) {
                    return Err(GroupError::InconsistentGroupProtocol);
                }
                let id = self.new_member_id(&request.client_id);
                self.members.push(Member {
                    id: id.clone(),
                    client_id: request.client_id,
                    session_timeout_ms: request.session_timeout_ms,
                    rebalance_timeout_ms: request.rebalance_timeout_ms,
                    protocols: request.protocols,
                    awaiting_join: true,
                    awaiting_sync: false,
                    sync_pending: false,
                    is_new: true,
                    assignment: Bytes::new(),
                    deadline_ms: now_ms.saturating_add(self.config.new_member_join_timeout_ms),
                });
                self.protocol_type = Some(request.protocol_type);
                if self.leader.is_none() {
                    self.leader = Some(id.clone());
                }
                match self.state {
                    GroupState::PreparingRebalance => self.extend_initial_delay(now_ms),
                    _ => effects = self.prepare_rebalance(now_ms),
                }
                self.try_complete_join(now_ms, &mut effects);
                id
            }
            Some(id) => {
                let index = self.index_of(&id).ok_or(GroupError::UnknownMemberId)?;
                if !self.supports(&request, Some(&id)) {
                    return Err(GroupError::InconsistentGroupProtocol);
                }
                let unchanged = self.members[index].protocols == request.protocols;
                let is_leader = self.leader.as_deref() == Some(id.as_str());
                match self.state {
                    // Its earlier join's answer was lost: the current one again, no rebalance.
                    GroupState::CompletingRebalance if unchanged => {
                        let response = self.join_response(&id, is_leader);
                        effects.replies.push(Reply::Join {
                            member_id: id.clone(),
                            result: Ok(response),
                        });
                    }
                    // A follower with nothing new need not disturb the group; a leader's
                    // rejoin asks for a new assignment (Kafka: topic metadata changed).
                    GroupState::Stable if unchanged && !is_leader => {
                        self.members[index].deadline_ms =
                            now_ms.saturating_add(self.members[index].session_timeout_ms);
                        let response = self.join_response(&id, false);
                        effects.replies.push(Reply::Join {
                            member_id: id.clone(),
                            result: Ok(response),
                        });
                    }
                    GroupState::PreparingRebalance
                    | GroupState::CompletingRebalance
                    | GroupState::Stable => {
                        let member = &mut self.members[index];
                        member.protocols = request.protocols;
                        member.session_timeout_ms = request.session_timeout_ms;
                        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
                        member.awaiting_join = true;
                        self.protocol_type = Some(request.protocol_type);
                        if self.state != GroupState::PreparingRebalance {
                            effects = self.prepare_rebalance(now_ms);
                        }
                        self.try_complete_join(now_ms, &mut effects);
                    }
                    // An Empty group has no members: index_of refused it above.
                    GroupState::Empty | GroupState::Dead => {
                        return Err(GroupError::UnknownMemberId)
                    }
                }
                id
            }
        };
        debug_assert!(self.consistent());
        Ok((member_id, effects))
    }

    /// A sync. Ok: its answer is in the returned effects or a later call's.
    pub fn sync(&mut self, now_ms: u64, request: SyncRequest) -> Result<Effects, GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let index = self
            .index_of(&request.member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if request.generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        let mismatch = |given: &Option<String>, ours: &Option<String>| {
            given
                .as_ref()
                .is_some_and(|given| Some(given) != ours.as_ref())
        };
        if mismatch(&request.protocol_type, &self.protocol_type)
            || mismatch(&request.protocol, &self.protocol)
        {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let mut effects = Effects::default();
        match self.state {
            GroupState::Empty | GroupState::Dead => return Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => return Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance => {
                let member = &mut self.members[index];
                member.awaiting_sync = true;
                member.sync_pending = false;
                let is_leader = self.leader.as_deref() == Some(request.member_id.as_str());
                if is_leader && self.storing.is_none() {
                    for member in &mut self.members {
                        member.assignment = request
                            .assignments
                            .iter()
                            .find(|(id, _)| *id == member.id)
                            .map(|(_, assignment)| assignment.clone())
                            .unwrap_or_default();
                    }
                    self.storing = Some(self.generation);
                    effects.proposals.push(self.generation_command());
                }
            }
            GroupState::Stable => {
                let member = &mut self.members[index];
                member.sync_pending = false;
                member.deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
                let response = self.sync_response(index);
                effects.replies.push(Reply::Sync {
                    member_id: request.member_id,
                    result: Ok(response),
                });
            }
        }
        if !self.members.iter().any(|m| m.sync_pending) {
            self.sync_deadline_ms = None;
        }
        debug_assert!(self.consistent());
        Ok(effects)
    }

    /// The `GroupGeneration` proposed for `generation` was applied (`Ok`) or failed (the
    /// partition refused it, or leadership was lost). Stored: the group is Stable and the
    /// waiting syncs get their assignments. Failed: they get the error and the group rebalances.
    /// A report for a generation no longer being stored changes nothing.
    pub fn generation_stored(
        &mut self,
        now_ms: u64,
        generation: Generation,
        result: Result<(), GroupError>,
    ) -> Effects {
        let mut effects = Effects::default();
        if self.storing != Some(generation) {
            return effects;
        }
        self.storing = None;
        debug_assert_eq!(self.state, GroupState::CompletingRebalance);
        debug_assert_eq!(self.generation, generation);
        match result {
            Ok(()) => {
                self.state = GroupState::Stable;
                for index in 0..self.members.len() {
                    if !self.members[index].awaiting_sync {
                        continue;
                    }
                    let response = self.sync_response(index);
                    let member = &mut self.members[index];
                    member.awaiting_sync = false;
                    member.deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
                    effects.replies.push(Reply::Sync {
                        member_id: member.id.clone(),
                        result: Ok(response),
                    });
                }
            }
            Err(error) => {
                for member in &mut self.members {
                    member.assignment = Bytes::new();
                    if member.awaiting_sync {
                        member.awaiting_sync = false;
                        effects.replies.push(Reply::Sync {
                            member_id: member.id.clone(),
                            result: Err(error.clone()),
                        });
                    }
                }
                let more = self.prepare_rebalance(now_ms);
                effects.replies.extend(more.replies);
                effects.proposals.extend(more.proposals);
            }
        }
        debug_assert!(self.consistent());
        effects
    }

    /// A heartbeat: keeps the member's session. During a rebalance it says so
    /// (REBALANCE_IN_PROGRESS), which is how Stable members learn to rejoin.
    pub fn heartbeat(
        &mut self,
        now_ms: u64,
        member_id: &str,
        generation: Generation,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let index = self
            .index_of(member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        let member = &mut self.members[index];
        member.deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
        match self.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
        }
    }

    /// A member leaves: the group rebalances without it.
    pub fn leave(&mut self, now_ms: u64, member_id: &str) -> Result<Effects, GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if self.index_of(member_id).is_none() {
            return Err(GroupError::UnknownMemberId);
        }
        let mut effects = Effects::default();
        self.remove_member(now_ms, member_id, &mut effects);
        debug_assert!(self.consistent());
        Ok(effects)
    }

    /// Whether an offset commit may be proposed (Kafka's validateOffsetCommit); the offsets
    /// partition checks member and generation again when it applies. A member's commit counts
    /// as a heartbeat.
    pub fn validate_commit(
        &mut self,
        now_ms: u64,
        member_id: &str,
        generation: Generation,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if generation < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if generation < 0 && member_id.is_empty() {
            // Only members commit to a group that has them.
            return Err(GroupError::UnknownMemberId);
        }
        let index = self
            .index_of(member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        if self.state == GroupState::CompletingRebalance {
            // The generation's assignment is not handed out yet: nothing to commit for it.
            return Err(GroupError::RebalanceInProgress);
        }
        let member = &mut self.members[index];
        member.deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
        Ok(())
    }

    /// Whether offsets may be reset or the group deleted: only while it is Empty.
    pub fn check_empty(&self) -> Result<(), GroupError> {
        match self.state {
            GroupState::Empty => Ok(()),
            GroupState::Dead => Err(GroupError::GroupIdNotFound),
            _ => Err(GroupError::NonEmptyGroup),
        }
    }

    /// A delete is being proposed: the group is Dead from now on (joins meanwhile get
    /// COORDINATOR_NOT_AVAILABLE and retry). The shell drops it once the delete applies, and
    /// rebuilds it from the offsets partition if the delete fails.
    pub fn delete(&mut self) -> Result<(), GroupError> {
        self.check_empty()?;
        self.state = GroupState::Dead;
        Ok(())
    }

    /// This node stops coordinating the group (leadership of its offsets partition lost): every
    /// waiting join and sync is answered NOT_COORDINATOR, so its client looks for the new one.
    pub fn unload(&mut self) -> Effects {
        let mut effects = Effects::default();
        for member in &mut self.members {
            if member.awaiting_join {
                effects.replies.push(Reply::Join {
                    member_id: member.id.clone(),
                    result: Err(GroupError::NotCoordinator),
                });
            }
            if member.awaiting_sync {
                effects.replies.push(Reply::Sync {
                    member_id: member.id.clone(),
                    result: Err(GroupError::NotCoordinator),
                });
            }
            member.awaiting_join = false;
            member.awaiting_sync = false;
        }
        self.state = GroupState::Dead;
        self.join_deadline_ms = None;
        self.join_not_before_ms = None;
        self.sync_deadline_ms = None;
        self.storing = None;
        effects
    }

    /// The earliest time [`GroupMembership::poll`] has something to do, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.state == GroupState::Dead {
            return None;
        }
        let sessions = self
            .members
            .iter()
            .filter(|m| m.expires())
            .map(|m| m.deadline_ms);
        let join = match self.state {
            GroupState::PreparingRebalance => {
                let all_joined = self.members.iter().all(|m| m.awaiting_join);
                let not_before = self.join_not_before_ms.filter(|_| all_joined);
                self.join_deadline_ms.into_iter().chain(not_before).min()
            }
            _ => None,
        };
        let sync = match self.state {
            GroupState::CompletingRebalance | GroupState::Stable => self.sync_deadline_ms,
            _ => None,
        };
        sessions.chain(join).chain(sync).min()
    }

    /// Runs the timers due at `now_ms`: expired sessions (and new members' first joins) are
    /// removed, a join phase past its deadline completes without the members that did not
    /// rejoin, members that did not sync in time are removed and the group rebalances.
    pub fn poll(&mut self, now_ms: u64) -> Effects {
        let mut effects = Effects::default();
        if self.state == GroupState::Dead {
            return effects;
        }
        let expired: Vec<MemberId> = self
            .members
            .iter()
            .filter(|m| m.expires() && m.deadline_ms <= now_ms)
            .map(|m| m.id.clone())
            .collect();
        for member_id in expired {
            // An earlier removal may have completed a join phase that renewed this member's
            // deadline and answered its join: it stays.
            let still_due = self.index_of(&member_id).is_some_and(|i| {
                self.members[i].expires() && self.members[i].deadline_ms <= now_ms
            });
            if still_due {
                self.remove_member(now_ms, &member_id, &mut effects);
            }
        }
        self.try_complete_join(now_ms, &mut effects);
        let syncing = matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        );
        if syncing && self.sync_deadline_ms.is_some_and(|at| at <= now_ms) {
            self.sync_deadline_ms = None;
            let late: Vec<MemberId> = self
                .members
                .iter()
                .filter(|m| m.sync_pending)
                .map(|m| m.id.clone())
                .collect();
            if !late.is_empty() {
                for member_id in &late {
                    self.drop_member(member_id, &mut effects);
                }
                let more = self.prepare_rebalance(now_ms);
                effects.replies.extend(more.replies);
                effects.proposals.extend(more.proposals);
                self.try_complete_join(now_ms, &mut effects);
            }
        }
        debug_assert!(self.consistent());
        effects
    }

    fn index_of(&self, member_id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == member_id)
    }

    fn new_member_id(&mut self, client_id: &str) -> MemberId {
        loop {
            let id = format!("{client_id}-{:032x}", self.rng.random::<u128>());
            if self.index_of(&id).is_none() {
                return id;
            }
        }
    }

    /// Whether a join's protocols fit the group (Kafka's `supportsProtocols`): any non-empty
    /// type and list when no other member is there; otherwise the same type and at least one
    /// protocol every other member supports. `rejoining` is left out: its old protocols do not
    /// count against its new ones.
    fn supports(&self, request: &JoinRequest, rejoining: Option<&str>) -> bool {
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return false;
        }
        let mut others = self
            .members
            .iter()
            .filter(|m| Some(m.id.as_str()) != rejoining)
            .peekable();
        if others.peek().is_none() {
            return true;
        }
        self.protocol_type.as_deref() == Some(request.protocol_type.as_str())
            && request.protocols.iter().any(|p| {
                self.members
                    .iter()
                    .filter(|m| Some(m.id.as_str()) != rejoining)
                    .all(|m| m.supports(&p.name))
            })
    }

    /// Into PreparingRebalance: waiting syncs are told to rejoin, and the join phase gets the
    /// longest rebalance timeout of the members.
    fn prepare_rebalance(&mut self, now_ms: u64) -> Effects {
        let mut effects = Effects::default();
        for member in &mut self.members {
            if member.awaiting_sync {
                member.awaiting_sync = false;
                effects.replies.push(Reply::Sync {
                    member_id: member.id.clone(),
                    result: Err(GroupError::RebalanceInProgress),
                });
            }
            member.sync_pending = false;
        }
        self.sync_deadline_ms = None;
        self.storing = None;
        let from_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        let timeout = self.rebalance_timeout_ms();
        self.join_deadline_ms = Some(now_ms.saturating_add(timeout));
        self.join_not_before_ms = from_empty
            .then(|| now_ms.saturating_add(self.config.initial_rebalance_delay_ms.min(timeout)));
        effects
    }

    /// A new member arrived during the initial delay: wait for more, within the deadline.
    fn extend_initial_delay(&mut self, now_ms: u64) {
        if let (Some(not_before), Some(deadline)) = (self.join_not_before_ms, self.join_deadline_ms)
        {
            let extended = now_ms.saturating_add(self.config.initial_rebalance_delay_ms);
            self.join_not_before_ms = Some(not_before.max(extended).min(deadline));
        }
    }

    fn rebalance_timeout_ms(&self) -> u64 {
        self.members
            .iter()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    fn try_complete_join(&mut self, now_ms: u64, effects: &mut Effects) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.iter().all(|m| m.awaiting_join);
        let delay_over = self.join_not_before_ms.is_none_or(|at| at <= now_ms);
        let timed_out = self.join_deadline_ms.is_some_and(|at| at <= now_ms);
        if (all_joined && delay_over) || timed_out {
            self.complete_join(now_ms, effects);
        }
    }

    /// The join phase ends: members that did not rejoin are out, the generation moves on, and
    /// every joined member gets its answer (the leader with everyone's metadata).
    fn complete_join(&mut self, now_ms: u64, effects: &mut Effects) {
        let gone: Vec<MemberId> = self
            .members
            .iter()
            .filter(|m| !m.awaiting_join)
            .map(|m| m.id.clone())
            .collect();
        for member_id in &gone {
            self.drop_member(member_id, effects);
        }
        self.generation += 1;
        self.join_deadline_ms = None;
        self.join_not_before_ms = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            debug_assert!(self.protocol_type.is_some(), "a join set the type");
            effects.proposals.push(self.generation_command());
            return;
        }
        self.protocol = Some(self.select_protocol());
        self.state = GroupState::CompletingRebalance;
        self.sync_deadline_ms = Some(now_ms.saturating_add(self.rebalance_timeout_ms()));
        let leader = self.leader.clone().unwrap_or_default();
        for index in 0..self.members.len() {
            let id = self.members[index].id.clone();
            let response = self.join_response(&id, id == leader);
            let member = &mut self.members[index];
            member.awaiting_join = false;
            member.is_new = false;
            member.sync_pending = true;
            member.deadline_ms = now_ms.saturating_add(member.session_timeout_ms);
            effects.replies.push(Reply::Join {
                member_id: id,
                result: Ok(response),
            });
        }
    }

    /// The protocol every member supports that most members prefer (each votes for its first
    /// choice among those all support), ties going to the leader's preference: Kafka's
    /// `selectProtocol`, with a deterministic tie-break.
    fn select_protocol(&self) -> String {
        let leader = self
            .leader
            .as_deref()
            .and_then(|id| self.index_of(id))
            .unwrap_or(0);
        let candidates: Vec<&str> = self.members[leader]
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| self.members.iter().all(|m| m.supports(name)))
            .collect();
        let mut votes = vec![0usize; candidates.len()];
        for member in &self.members {
            let choice = member
                .protocols
                .iter()
                .find_map(|p| candidates.iter().position(|c| *c == p.name));
            if let Some(choice) = choice {
                votes[choice] += 1;
            }
        }
        // Joins admit only members sharing a protocol with all others, so there is one.
        debug_assert!(!candidates.is_empty());
        let best = (0..candidates.len())
            .rev()
            .max_by_key(|&i| votes[i])
            .map(|i| candidates[i]);
        best.or_else(|| {
            self.members[leader]
                .protocols
                .first()
                .map(|p| p.name.as_str())
        })
        .unwrap_or_default()
        .to_string()
    }

    fn join_response(&self, member_id: &str, for_leader: bool) -> JoinResponse {
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if for_leader {
            self.members
                .iter()
                .map(|m| (m.id.clone(), m.metadata(&protocol)))
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            member_id: member_id.to_string(),
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol,
            leader: self.leader.clone().unwrap_or_default(),
            members,
        }
    }

    fn sync_response(&self, index: usize) -> SyncResponse {
        SyncResponse {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: self.protocol.clone().unwrap_or_default(),
            assignment: self.members[index].assignment.clone(),
        }
    }

    /// The current generation as the offsets partition stores it.
    fn generation_command(&self) -> OffsetsCommand {
        OffsetsCommand::GroupGeneration {
            group: self.group.clone(),
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .iter()
                .map(|m| MemberRecord {
                    member_id: m.id.clone(),
                    client_id: m.client_id.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: m.protocols.clone(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Takes a member out, answering what it waits on, and has its removal stored if it was
    /// ever part of a generation. The group's state is the caller's to move.
    fn drop_member(&mut self, member_id: &str, effects: &mut Effects) {
        let Some(index) = self.index_of(member_id) else {
            return;
        };
        let member = self.members.remove(index);
        if member.awaiting_join {
            effects.replies.push(Reply::Join {
                member_id: member.id.clone(),
                result: Err(GroupError::UnknownMemberId),
            });
        }
        if member.awaiting_sync {
            effects.replies.push(Reply::Sync {
                member_id: member.id.clone(),
                result: Err(GroupError::UnknownMemberId),
            });
        }
        if self.leader.as_deref() == Some(member_id) {
            // The longest-standing member that is rejoining, else the longest-standing one.
            self.leader = self
                .members
                .iter()
                .find(|m| m.awaiting_join)
                .or(self.members.first())
                .map(|m| m.id.clone());
        }
        if !member.is_new {
            effects.remove_member(&self.group, member.id);
        }
    }

    /// A member leaves or times out: the group rebalances without it.
    fn remove_member(&mut self, now_ms: u64, member_id: &str, effects: &mut Effects) {
        self.drop_member(member_id, effects);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                let more = self.prepare_rebalance(now_ms);
                effects.replies.extend(more.replies);
                effects.proposals.extend(more.proposals);
                self.try_complete_join(now_ms, effects);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now_ms, effects),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// The invariants every public call leaves behind.
    fn consistent(&self) -> bool {
        let leader_is_member = match &self.leader {
            Some(leader) => self.index_of(leader).is_some(),
            None => self.members.is_empty(),
        };
        let by_state = match self.state {
            GroupState::Empty => self.members.is_empty() && self.protocol.is_none(),
            GroupState::PreparingRebalance => self.join_deadline_ms.is_some(),
            GroupState::CompletingRebalance => self.protocol.is_some() && !self.members.is_empty(),
            GroupState::Stable => {
                self.protocol.is_some()
                    && !self.members.is_empty()
                    && self
                        .members
                        .iter()
                        .all(|m| !m.awaiting_sync && !m.awaiting_join)
            }
            GroupState::Dead => true,
        };
        let storing_ok = self.storing.is_none() || self.state == GroupState::CompletingRebalance;
        (leader_is_member || self.state == GroupState::Dead) && by_state && storing_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::offsets::{
        OffsetAndMetadata, OffsetsOutcome, OffsetsState, TopicPartition,
    };
    use crate::coordinator::NO_GENERATION;

    const SESSION: u64 = 10_000;
    const REBALANCE: u64 = 30_000;
    const DELAY: u64 = 100;

    fn config() -> MembershipConfig {
        MembershipConfig {
            initial_rebalance_delay_ms: DELAY,
            ..MembershipConfig::default()
        }
    }

    fn protocols(names: &[&str]) -> Vec<Protocol> {
        names
            .iter()
            .map(|name| Protocol {
                name: name.to_string(),
                metadata: Bytes::from(format!("{name}-metadata")),
            })
            .collect()
    }

    fn join_request(member_id: Option<&str>, names: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.map(String::from),
            client_id: "client".into(),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: REBALANCE,
            protocol_type: "consumer".into(),
            protocols: protocols(names),
        }
    }

    fn sync_request(member_id: &str, generation: Generation) -> SyncRequest {
        SyncRequest {
            member_id: member_id.into(),
            generation,
            protocol_type: None,
            protocol: None,
            assignments: Vec::new(),
        }
    }

    fn joins(effects: &Effects) -> Vec<(MemberId, Result<JoinResponse, GroupError>)> {
        effects
            .replies
            .iter()
            .filter_map(|reply| match reply {
                Reply::Join { member_id, result } => Some((member_id.clone(), result.clone())),
                Reply::Sync { .. } => None,
            })
            .collect()
    }

    fn syncs(effects: &Effects) -> Vec<(MemberId, Result<SyncResponse, GroupError>)> {
        effects
            .replies
            .iter()
            .filter_map(|reply| match reply {
                Reply::Sync { member_id, result } => Some((member_id.clone(), result.clone())),
                Reply::Join { .. } => None,
            })
            .collect()
    }

    fn only<T: std::fmt::Debug>(items: Vec<T>) -> T {
        assert_eq!(items.len(), 1, "exactly one expected: {items:?}");
        items.into_iter().next().expect("one")
    }

    fn join_new(group: &mut GroupMembership, now: u64, names: &[&str]) -> (MemberId, Effects) {
        let joined = group.join(now, join_request(None, names)).unwrap();
        assert!(group.consistent());
        joined
    }

    /// The assignment the leader hands `member` in the tests.
    fn assignment_of(member: &str) -> Bytes {
        Bytes::from(format!("partitions of {member}"))
    }

    /// A Stable group of `n` members formed at time 0 (generation 1), and the time it formed.
    fn stable_group(n: usize) -> (GroupMembership, Vec<MemberId>, u64) {
        let mut group = GroupMembership::new("g", config(), 7);
        let ids: Vec<MemberId> = (0..n)
            .map(|_| {
                let (id, effects) = join_new(&mut group, 0, &["range"]);
                assert!(effects.is_empty(), "the join waits for the initial delay");
                id
            })
            .collect();
        let now = DELAY;
        let formed = group.poll(now);
        assert_eq!(joins(&formed).len(), n);
        assert_eq!(group.state(), GroupState::CompletingRebalance);
        complete_sync(&mut group, &ids, now);
        (group, ids, now)
    }

    /// Every member syncs (the leader last, with an assignment for each) and the generation is
    /// stored: returns the stored command.
    fn complete_sync(group: &mut GroupMembership, ids: &[MemberId], now: u64) -> OffsetsCommand {
        let generation = group.generation();
        let leader = group.leader().unwrap().to_string();
        for id in ids.iter().filter(|id| **id != leader) {
            let waiting = group.sync(now, sync_request(id, generation)).unwrap();
            assert!(waiting.is_empty(), "a follower waits for the leader");
        }
        let mut request = sync_request(&leader, generation);
        request.assignments = ids
            .iter()
            .map(|id| (id.clone(), assignment_of(id)))
            .collect();
        let effects = group.sync(now, request).unwrap();
        assert!(
            effects.replies.is_empty(),
            "nothing is handed out before it is stored"
        );
        let [command] = effects.proposals.as_slice() else {
            panic!("one GroupGeneration expected: {effects:?}")
        };
        let stored = group.generation_stored(now, generation, Ok(()));
        assert_eq!(group.state(), GroupState::Stable);
        let replies = syncs(&stored);
        assert_eq!(replies.len(), ids.len());
        for (id, result) in replies {
            assert_eq!(result.unwrap().assignment, assignment_of(&id));
        }
        assert!(group.consistent());
        command.clone()
    }

    #[test]
    fn the_first_joiner_leads_and_a_group_forms_after_the_initial_delay() {
        let mut group = GroupMembership::new("g", config(), 1);
        let (a, effects) = join_new(&mut group, 0, &["range"]);
        assert!(effects.is_empty());
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert_eq!(group.next_deadline(), Some(DELAY));
        // A second consumer arriving during the delay extends it.
        let (b, effects) = join_new(&mut group, 60, &["range"]);
        assert!(effects.is_empty());
        assert_ne!(a, b);
        assert!(a.starts_with("client-"), "ids are client id + random: {a}");
        assert!(group.poll(DELAY).is_empty(), "the delay was extended");
        let formed = group.poll(60 + DELAY);
        let replies = joins(&formed);
        assert_eq!(replies.len(), 2);
        for (id, result) in replies {
            let response = result.unwrap();
            assert_eq!(response.member_id, id);
            assert_eq!(response.generation, 1);
            assert_eq!(response.leader, a);
            assert_eq!(response.protocol, "range");
            assert_eq!(response.protocol_type, "consumer");
            if id == a {
                let metadata = Bytes::from_static(b"range-metadata");
                assert_eq!(
                    response.members,
                    vec![(a.clone(), metadata.clone()), (b.clone(), metadata)],
                    "the leader gets everyone's metadata"
                );
            } else {
                assert!(response.members.is_empty(), "followers get none");
            }
        }
        assert_eq!(group.state(), GroupState::CompletingRebalance);
        assert!(formed.proposals.is_empty(), "stored at the leader's sync");
    }

    #[test]
    fn the_protocol_most_members_prefer_among_those_all_support_wins() {
        let mut group = GroupMembership::new("g", config(), 1);
        // The leader prefers range, two others roundrobin; sticky is not supported by all.
        let _ = join_new(&mut group, 0, &["range", "roundrobin", "sticky"]);
        let _ = join_new(&mut group, 0, &["roundrobin", "range"]);
        let _ = join_new(&mut group, 0, &["sticky", "roundrobin", "range"]);
        let formed = group.poll(DELAY);
        assert_eq!(group.protocol(), Some("roundrobin"));
        for (_, result) in joins(&formed) {
            assert_eq!(result.unwrap().protocol, "roundrobin");
        }

        // A tie goes to the leader's preference.
        let mut group = GroupMembership::new("g", config(), 1);
        let _ = join_new(&mut group, 0, &["roundrobin", "range"]);
        let _ = join_new(&mut group, 0, &["range", "roundrobin"]);
        let _ = group.poll(DELAY);
        assert_eq!(group.protocol(), Some("roundrobin"));
    }

    #[test]
    fn a_join_without_a_common_protocol_or_with_another_type_is_refused() {
        let (mut group, _, now) = stable_group(2);
        assert_eq!(
            group.join(now, join_request(None, &["sticky"])),
            Err(GroupError::InconsistentGroupProtocol)
        );
        let mut other_type = join_request(None, &["range"]);
        other_type.protocol_type = "connect".into();
        assert_eq!(
            group.join(now, other_type),
            Err(GroupError::InconsistentGroupProtocol)
        );
        assert_eq!(
            group.join(now, join_request(None, &[])),
            Err(GroupError::InconsistentGroupProtocol)
        );
        assert_eq!(
            group.state(),
            GroupState::Stable,
            "a refused join changes nothing"
        );
        assert_eq!(group.member_count(), 2);
    }

    #[test]
    fn a_session_timeout_outside_the_range_is_refused() {
        let mut group = GroupMembership::new("g", config(), 1);
        let mut short = join_request(None, &["range"]);
        short.session_timeout_ms = 5_999;
        assert_eq!(group.join(0, short), Err(GroupError::InvalidSessionTimeout));
        let mut long = join_request(None, &["range"]);
        long.session_timeout_ms = 1_800_001;
        assert_eq!(group.join(0, long), Err(GroupError::InvalidSessionTimeout));
        assert_eq!(group.state(), GroupState::Empty);
    }

    #[test]
    fn followers_wait_for_the_leaders_assignment_until_it_is_stored() {
        let (mut group, ids, now) = stable_group(3);
        // stable_group checked the waits; here: what was stored, and a late sync in Stable.
        assert_eq!(group.generation(), 1);
        let description = group.describe();
        assert_eq!(description.state, GroupState::Stable);
        for member in &description.members {
            assert_eq!(member.assignment, assignment_of(&member.member_id));
        }
        let again = group.sync(now + 1, sync_request(&ids[1], 1)).unwrap();
        let (id, result) = only(syncs(&again));
        let response = result.unwrap();
        assert_eq!(
            (id, response.assignment),
            (ids[1].clone(), assignment_of(&ids[1]))
        );
        assert_eq!(
            group.sync(now, sync_request(&ids[1], 2)),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            group.sync(now, sync_request("stranger", 1)),
            Err(GroupError::UnknownMemberId)
        );
        let mut wrong = sync_request(&ids[1], 1);
        wrong.protocol = Some("roundrobin".into());
        assert_eq!(
            group.sync(now, wrong),
            Err(GroupError::InconsistentGroupProtocol)
        );
    }

    #[test]
    fn the_stored_generation_holds_members_and_assignments() {
        let mut group = GroupMembership::new("g", config(), 3);
        let (a, _) = join_new(&mut group, 0, &["range"]);
        let (b, _) = join_new(&mut group, 0, &["range"]);
        let _ = group.poll(DELAY);
        let command = complete_sync(&mut group, &[a.clone(), b.clone()], DELAY);
        let OffsetsCommand::GroupGeneration {
            group: name,
            generation,
            protocol_type,
            protocol,
            leader,
            members,
        } = command
        else {
            panic!("{command:?}")
        };
        assert_eq!((name.as_str(), generation), ("g", 1));
        assert_eq!(
            (protocol_type.as_str(), protocol.as_deref()),
            ("consumer", Some("range"))
        );
        assert_eq!(leader.as_deref(), Some(a.as_str()));
        let stored: Vec<_> = members
            .iter()
            .map(|m| {
                (
                    m.member_id.clone(),
                    m.protocols.clone(),
                    m.assignment.clone(),
                )
            })
            .collect();
        assert_eq!(
            stored,
            vec![
                (a.clone(), protocols(&["range"]), assignment_of(&a)),
                (b.clone(), protocols(&["range"]), assignment_of(&b)),
            ]
        );
        assert!(members.iter().all(|m| m.session_timeout_ms == SESSION));
    }

    #[test]
    fn heartbeats_keep_the_session_and_say_when_to_rejoin() {
        let (mut group, ids, now) = stable_group(2);
        assert_eq!(group.heartbeat(now + 1, &ids[1], 1), Ok(()));
        assert_eq!(
            group.heartbeat(now + 1, &ids[1], 0),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            group.heartbeat(now + 1, "stranger", 1),
            Err(GroupError::UnknownMemberId)
        );
        // Heartbeats every few seconds keep both members far past one session.
        let mut t = now;
        while t < now + 5 * SESSION {
            t += SESSION / 3;
            assert_eq!(group.heartbeat(t, &ids[0], 1), Ok(()));
            assert_eq!(group.heartbeat(t, &ids[1], 1), Ok(()));
            assert!(group.poll(t).is_empty());
        }
        // A new member starts a rebalance: heartbeats tell the members to rejoin.
        let (_, effects) = join_new(&mut group, t, &["range"]);
        assert!(effects.is_empty());
        assert_eq!(
            group.heartbeat(t, &ids[1], 1),
            Err(GroupError::RebalanceInProgress)
        );
    }

    #[test]
    fn a_member_that_leaves_is_removed_and_its_removal_stored() {
        let (mut group, ids, now) = stable_group(2);
        let effects = group.leave(now, &ids[1]).unwrap();
        assert_eq!(
            effects.proposals,
            vec![OffsetsCommand::RemoveMembers {
                group: "g".into(),
                members: vec![ids[1].clone()],
            }]
        );
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert_eq!(group.leave(now, &ids[1]), Err(GroupError::UnknownMemberId));
        // The remaining member rejoins and forms generation 2 alone.
        let (id, effects) = group
            .join(now + 5, join_request(Some(&ids[0]), &["range"]))
            .unwrap();
        assert_eq!(id, ids[0]);
        let (_, result) = only(joins(&effects));
        let response = result.unwrap();
        assert_eq!((response.generation, response.leader), (2, ids[0].clone()));
        assert_eq!(response.members.len(), 1);
    }

    #[test]
    fn an_expired_session_removes_the_member_and_rebalances() {
        let (mut group, ids, now) = stable_group(2);
        assert_eq!(group.next_deadline(), Some(now + SESSION));
        // Only the leader heartbeats.
        assert_eq!(group.heartbeat(now + SESSION - 1, &ids[0], 1), Ok(()));
        let effects = group.poll(now + SESSION);
        assert_eq!(
            effects.proposals,
            vec![OffsetsCommand::RemoveMembers {
                group: "g".into(),
                members: vec![ids[1].clone()],
            }]
        );
        assert!(!group.is_member(&ids[1]));
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        // Its heartbeats and commits are refused from now on.
        assert_eq!(
            group.heartbeat(now + SESSION, &ids[1], 1),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(
            group.validate_commit(now + SESSION, &ids[1], 1),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn members_that_do_not_rejoin_within_the_rebalance_timeout_are_removed() {
        let (mut group, ids, now) = stable_group(3);
        // The leader rejoins (a rebalance), the second member too; the third never does.
        let (_, effects) = group
            .join(now, join_request(Some(&ids[0]), &["range"]))
            .unwrap();
        assert!(effects.is_empty());
        let (_, effects) = group
            .join(now, join_request(Some(&ids[1]), &["range"]))
            .unwrap();
        assert!(effects.is_empty());
        // Members waiting on their join need no heartbeat; the third keeps heartbeating but
        // heartbeats do not rejoin.
        let mut t = now;
        while t + SESSION / 2 < now + REBALANCE {
            t += SESSION / 2;
            assert_eq!(
                group.heartbeat(t, &ids[2], 1),
                Err(GroupError::RebalanceInProgress)
            );
            assert!(group.poll(t).is_empty());
        }
        assert_eq!(group.next_deadline(), Some(now + REBALANCE));
        let effects = group.poll(now + REBALANCE);
        assert_eq!(
            effects.proposals,
            vec![OffsetsCommand::RemoveMembers {
                group: "g".into(),
                members: vec![ids[2].clone()],
            }]
        );
        let replies = joins(&effects);
        assert_eq!(
            replies.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
            vec![ids[0].clone(), ids[1].clone()]
        );
        assert!(replies
            .iter()
            .all(|(_, r)| r.as_ref().unwrap().generation == 2));
        assert_eq!(group.state(), GroupState::CompletingRebalance);
    }

    #[test]
    fn a_leader_that_does_not_rejoin_is_replaced_by_a_member_that_did() {
        let (mut group, ids, now) = stable_group(2);
        let (_, _) = join_new(&mut group, now, &["range"]);
        let _ = group
            .join(now, join_request(Some(&ids[1]), &["range"]))
            .unwrap();
        let effects = group.poll(now + REBALANCE);
        assert_eq!(group.leader(), Some(ids[1].as_str()));
        for (_, result) in joins(&effects) {
            assert_eq!(result.unwrap().leader, ids[1]);
        }
    }

    #[test]
    fn members_that_do_not_sync_within_the_rebalance_timeout_are_removed() {
        let mut group = GroupMembership::new("g", config(), 1);
        let (a, _) = join_new(&mut group, 0, &["range"]);
        let (b, _) = join_new(&mut group, 0, &["range"]);
        let _ = group.poll(DELAY);
        // The follower syncs and waits; the leader heartbeats but never sends its assignment.
        let waiting = group.sync(DELAY, sync_request(&b, 1)).unwrap();
        assert!(waiting.is_empty());
        let mut t = DELAY;
        while t + SESSION / 2 < DELAY + REBALANCE {
            t += SESSION / 2;
            assert_eq!(group.heartbeat(t, &a, 1), Ok(()));
            assert!(group.poll(t).is_empty());
        }
        assert_eq!(group.next_deadline(), Some(DELAY + REBALANCE));
        let effects = group.poll(DELAY + REBALANCE);
        assert!(!group.is_member(&a));
        assert_eq!(
            syncs(&effects),
            vec![(b.clone(), Err(GroupError::RebalanceInProgress))],
            "the waiting follower is told to rejoin"
        );
        assert_eq!(
            effects.proposals,
            vec![OffsetsCommand::RemoveMembers {
                group: "g".into(),
                members: vec![a.clone()],
            }]
        );
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert_eq!(group.leader(), Some(b.as_str()));
    }

    #[test]
    fn a_leader_rejoin_rebalances_a_follower_rejoin_with_the_same_metadata_does_not() {
        let (mut group, ids, now) = stable_group(2);
        let (_, effects) = group
            .join(now, join_request(Some(&ids[1]), &["range"]))
            .unwrap();
        let (_, result) = only(joins(&effects));
        let response = result.unwrap();
        assert_eq!(response.generation, 1);
        assert_eq!(group.state(), GroupState::Stable);
        // New metadata from a follower rebalances.
        let (_, effects) = group
            .join(now, join_request(Some(&ids[1]), &["range", "roundrobin"]))
            .unwrap();
        assert!(effects.is_empty());
        assert_eq!(group.state(), GroupState::PreparingRebalance);

        let (mut group, ids, now) = stable_group(2);
        let (_, effects) = group
            .join(now, join_request(Some(&ids[0]), &["range"]))
            .unwrap();
        assert!(effects.is_empty(), "the leader's join waits for the others");
        assert_eq!(group.state(), GroupState::PreparingRebalance);
    }

    #[test]
    fn a_rejoin_during_completing_rebalance_gets_the_same_answer_again() {
        let mut group = GroupMembership::new("g", config(), 1);
        let (a, _) = join_new(&mut group, 0, &["range"]);
        let (b, _) = join_new(&mut group, 0, &["range"]);
        let formed = group.poll(DELAY);
        let first: Vec<_> = joins(&formed);
        for id in [&a, &b] {
            let (_, again) = group
                .join(DELAY, join_request(Some(id), &["range"]))
                .unwrap();
            let again = joins(&again);
            assert_eq!(again.len(), 1);
            assert!(first.contains(&again[0]), "the lost answer, exactly");
        }
        assert_eq!(group.state(), GroupState::CompletingRebalance);
    }

    #[test]
    fn a_group_whose_members_all_leave_is_empty_with_a_new_generation_stored() {
        let (mut group, ids, now) = stable_group(2);
        let first = group.leave(now, &ids[0]).unwrap();
        assert_eq!(group.leader(), Some(ids[1].as_str()));
        let effects = group.leave(now, &ids[1]).unwrap();
        assert_eq!(first.proposals.len(), 1);
        assert_eq!(group.state(), GroupState::Empty);
        assert_eq!(group.generation(), 2);
        assert_eq!(
            effects.proposals,
            vec![
                OffsetsCommand::RemoveMembers {
                    group: "g".into(),
                    members: vec![ids[1].clone()],
                },
                OffsetsCommand::GroupGeneration {
                    group: "g".into(),
                    generation: 2,
                    protocol_type: "consumer".into(),
                    protocol: None,
                    leader: None,
                    members: vec![],
                },
            ]
        );
        assert_eq!(group.next_deadline(), None);
        assert_eq!(group.check_empty(), Ok(()));
    }

    #[test]
    fn a_new_member_that_never_completes_its_first_join_is_dropped() {
        let config = MembershipConfig {
            new_member_join_timeout_ms: 1_000,
            ..config()
        };
        let mut group = GroupMembership::new("g", config, 1);
        let (a, _) = join_new(&mut group, 0, &["range"]);
        let (b, _) = join_new(&mut group, 0, &["range"]);
        let _ = group.poll(DELAY);
        let _ = complete_sync(&mut group, &[a.clone(), b.clone()], DELAY);
        // A new member starts a rebalance the others are slow to rejoin (they heartbeat):
        // its join waits in vain and is dropped at its own limit, long before the rebalance
        // timeout.
        let (c, _) = join_new(&mut group, DELAY, &["range"]);
        assert_eq!(group.next_deadline(), Some(DELAY + 1_000));
        assert_eq!(
            group.heartbeat(DELAY + 900, &a, 1),
            Err(GroupError::RebalanceInProgress)
        );
        assert_eq!(
            group.heartbeat(DELAY + 900, &b, 1),
            Err(GroupError::RebalanceInProgress)
        );
        let effects = group.poll(DELAY + 1_000);
        assert!(!group.is_member(&c));
        assert_eq!(joins(&effects), vec![(c, Err(GroupError::UnknownMemberId))]);
        assert!(
            effects.proposals.is_empty(),
            "a member that never completed a join was never stored"
        );
        assert_eq!(group.state(), GroupState::PreparingRebalance);
    }

    #[test]
    fn a_member_answered_by_a_join_that_a_removal_completed_is_not_removed_in_the_same_poll() {
        let config = MembershipConfig {
            new_member_join_timeout_ms: 1_000,
            ..config()
        };
        let mut group = GroupMembership::new("g", config, 1);
        let (x, _) = join_new(&mut group, 0, &["range"]);
        let _ = group.poll(DELAY);
        let _ = complete_sync(&mut group, std::slice::from_ref(&x), DELAY);
        let (y, _) = join_new(&mut group, DELAY, &["range"]);
        // A late poll finds both due: x's session and y's first join. Removing x completes the
        // join phase with y, which is answered and renewed, so it stays.
        let effects = group.poll(DELAY + SESSION);
        assert_eq!(
            effects.proposals,
            vec![OffsetsCommand::RemoveMembers {
                group: "g".into(),
                members: vec![x],
            }]
        );
        let (id, result) = only(joins(&effects));
        assert_eq!((id.as_str(), result.unwrap().generation), (y.as_str(), 2));
        assert!(group.is_member(&y));
        assert_eq!(group.state(), GroupState::CompletingRebalance);
    }

    #[test]
    fn commits_are_fenced_before_proposal() {
        let (mut group, ids, now) = stable_group(2);
        assert_eq!(group.validate_commit(now, &ids[1], 1), Ok(()));
        assert_eq!(
            group.validate_commit(now, &ids[1], 0),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            group.validate_commit(now, "stranger", 1),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(
            group.validate_commit(now, "", NO_GENERATION),
            Err(GroupError::UnknownMemberId),
            "a simple commit to a group with members"
        );
        // Between the join phase and the stored assignment nothing may commit.
        let _ = group
            .join(now, join_request(Some(&ids[0]), &["range"]))
            .unwrap();
        assert_eq!(
            group.validate_commit(now, &ids[1], 1),
            Ok(()),
            "the previous generation may commit while its members rejoin"
        );
        let effects = group
            .join(now, join_request(Some(&ids[1]), &["range"]))
            .unwrap()
            .1;
        assert_eq!(joins(&effects).len(), 2);
        assert_eq!(
            group.validate_commit(now, &ids[1], 2),
            Err(GroupError::RebalanceInProgress)
        );
        assert_eq!(
            group.validate_commit(now, &ids[1], 1),
            Err(GroupError::IllegalGeneration)
        );
        // A commit counts as a heartbeat.
        let (mut group, ids, now) = stable_group(1);
        assert_eq!(group.validate_commit(now + SESSION - 1, &ids[0], 1), Ok(()));
        assert!(group.poll(now + SESSION).is_empty());
        assert!(group.is_member(&ids[0]));
        // Once empty, simple commits pass.
        let _ = group.leave(now + SESSION, &ids[0]).unwrap();
        assert_eq!(
            group.validate_commit(now + SESSION, "", NO_GENERATION),
            Ok(())
        );
    }

    /// The coordinator's pre-check passed, but the rebalance's generation landed first in the
    /// log: the commit is refused when it applies.
    #[test]
    fn a_commit_accepted_before_a_rebalance_is_refused_when_it_lands_after_it() {
        let mut offsets = OffsetsState::default();
        let (mut group, ids, now) = stable_group(2);
        // stable_group's generation, as the partition stored it.
        let members: Vec<MemberRecord> = ids
            .iter()
            .map(|id| MemberRecord {
                member_id: id.clone(),
                client_id: "client".into(),
                session_timeout_ms: SESSION,
                rebalance_timeout_ms: REBALANCE,
                protocols: protocols(&["range"]),
                assignment: assignment_of(id),
            })
            .collect();
        let stored = OffsetsCommand::GroupGeneration {
            group: "g".into(),
            generation: 1,
            protocol_type: "consumer".into(),
            protocol: Some("range".into()),
            leader: Some(ids[0].clone()),
            members,
        };
        assert_eq!(
            offsets.execute(now, stored),
            Ok(OffsetsOutcome::GenerationStored)
        );

        // The follower's commit for generation 1 passes the pre-check and is proposed...
        assert_eq!(group.validate_commit(now, &ids[1], 1), Ok(()));
        let commit = OffsetsCommand::CommitOffsets {
            group: "g".into(),
            member_id: ids[1].clone(),
            generation: 1,
            offsets: vec![(
                TopicPartition {
                    topic: "t".into(),
                    partition: 0,
                },
                OffsetAndMetadata {
                    offset: 10,
                    leader_epoch: None,
                    metadata: String::new(),
                },
            )],
        };
        // ...but a rebalance completes and its generation is proposed before it.
        let _ = group
            .join(now, join_request(Some(&ids[0]), &["range"]))
            .unwrap();
        let _ = group
            .join(now, join_request(Some(&ids[1]), &["range"]))
            .unwrap();
        let second = complete_sync_proposal(&mut group, &ids, now);
        assert_eq!(
            offsets.execute(now + 1, second),
            Ok(OffsetsOutcome::GenerationStored)
        );
        assert_eq!(
            offsets.execute(now + 2, commit),
            Err(GroupError::IllegalGeneration)
        );
        assert!(offsets.group("g").unwrap().offsets.is_empty());
    }

    /// The pre-check passed while the member's session was alive; its removal reached the log
    /// first: the commit is refused when it applies.
    #[test]
    fn a_commit_accepted_before_a_session_expired_is_refused_when_it_lands_after_the_removal() {
        let mut offsets = OffsetsState::default();
        let mut group = GroupMembership::new("g", config(), 5);
        let (a, _) = join_new(&mut group, 0, &["range"]);
        let (b, _) = join_new(&mut group, 0, &["range"]);
        let _ = group.poll(DELAY);
        let stored = complete_sync(&mut group, &[a.clone(), b.clone()], DELAY);
        offsets.execute(DELAY, stored).unwrap();

        let t = DELAY + SESSION - 1;
        assert_eq!(group.heartbeat(t, &a, 1), Ok(()));
        assert_eq!(group.validate_commit(t, &b, 1), Ok(()));
        let commit = OffsetsCommand::CommitOffsets {
            group: "g".into(),
            member_id: b.clone(),
            generation: 1,
            offsets: vec![],
        };
        // "b" is heard from no more (the commit renewed its session once): its session ends,
        // and its removal is proposed first.
        assert_eq!(group.heartbeat(t + SESSION - 1, &a, 1), Ok(()));
        let expired = group.poll(t + SESSION);
        assert!(!group.is_member(&b));
        assert!(group.is_member(&a));
        assert_eq!(
            expired.proposals,
            vec![OffsetsCommand::RemoveMembers {
                group: "g".into(),
                members: vec![b.clone()],
            }]
        );
        for command in expired.proposals {
            offsets.execute(t + SESSION, command).unwrap();
        }
        assert_eq!(
            offsets.execute(t + SESSION, commit),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(
            group.validate_commit(t + SESSION, &b, 1),
            Err(GroupError::UnknownMemberId)
        );
    }

    /// The leader's sync in CompletingRebalance: the proposal it makes.
    fn complete_sync_proposal(
        group: &mut GroupMembership,
        ids: &[MemberId],
        now: u64,
    ) -> OffsetsCommand {
        let mut request = sync_request(group.leader().unwrap(), group.generation());
        request.assignments = ids
            .iter()
            .map(|id| (id.clone(), assignment_of(id)))
            .collect();
        let effects = group.sync(now, request).unwrap();
        effects
            .proposals
            .into_iter()
            .next()
            .expect("a GroupGeneration")
    }

    #[test]
    fn a_new_coordinator_serves_the_stored_generation_without_a_rebalance() {
        let (mut group, ids, now) = stable_group(2);
        let mut offsets = OffsetsState::default();
        // Replay what the old coordinator stored (its generation at the leader's sync).
        let _ = group
            .join(now, join_request(Some(&ids[0]), &["range"]))
            .unwrap();
        let _ = group
            .join(now, join_request(Some(&ids[1]), &["range"]))
            .unwrap();
        let command = complete_sync_proposal(&mut group, &ids, now);
        offsets.execute(now, command).unwrap();
        let record = offsets.group("g").unwrap();

        let later = now + 60_000;
        let mut restored = GroupMembership::restore("g", record, config(), later, 99);
        assert!(restored.consistent());
        assert_eq!(restored.state(), GroupState::Stable);
        assert_eq!(restored.generation(), 2);
        assert_eq!(restored.leader(), Some(ids[0].as_str()));
        assert_eq!(restored.heartbeat(later, &ids[1], 2), Ok(()));
        let effects = restored.sync(later, sync_request(&ids[1], 2)).unwrap();
        assert_eq!(
            syncs(&effects)[0].1.as_ref().unwrap().assignment,
            assignment_of(&ids[1])
        );
        assert_eq!(
            restored.next_deadline(),
            Some(later + SESSION),
            "fresh sessions from the takeover"
        );
        // A follower with unchanged metadata rejoins without a rebalance.
        let (_, effects) = restored
            .join(later, join_request(Some(&ids[1]), &["range"]))
            .unwrap();
        assert_eq!(joins(&effects)[0].1.as_ref().unwrap().generation, 2);

        // Had a member been removed since, the group would rebalance at once.
        offsets
            .execute(
                later,
                OffsetsCommand::RemoveMembers {
                    group: "g".into(),
                    members: vec![ids[1].clone()],
                },
            )
            .unwrap();
        let record = offsets.group("g").unwrap();
        let rebalancing = GroupMembership::restore("g", record, config(), later, 5);
        assert!(rebalancing.consistent());
        assert_eq!(rebalancing.state(), GroupState::PreparingRebalance);
        assert_eq!(rebalancing.member_count(), 1);

        // And an empty record gives an Empty group that continues its generations.
        offsets
            .execute(
                later,
                OffsetsCommand::GroupGeneration {
                    group: "g".into(),
                    generation: 3,
                    protocol_type: "consumer".into(),
                    protocol: None,
                    leader: None,
                    members: vec![],
                },
            )
            .unwrap();
        let mut empty =
            GroupMembership::restore("g", offsets.group("g").unwrap(), config(), later, 5);
        assert_eq!((empty.state(), empty.generation()), (GroupState::Empty, 3));
        let (_, _) = join_new(&mut empty, later, &["range"]);
        let effects = empty.poll(later + DELAY);
        assert_eq!(joins(&effects)[0].1.as_ref().unwrap().generation, 4);
    }

    #[test]
    fn a_failed_store_fails_the_waiting_syncs_and_rebalances() {
        let mut group = GroupMembership::new("g", config(), 1);
        let (a, _) = join_new(&mut group, 0, &["range"]);
        let (b, _) = join_new(&mut group, 0, &["range"]);
        let _ = group.poll(DELAY);
        let _ = group.sync(DELAY, sync_request(&b, 1)).unwrap();
        let _ = complete_sync_proposal(&mut group, &[a.clone(), b.clone()], DELAY);
        let effects = group.generation_stored(DELAY, 1, Err(GroupError::NotCoordinator));
        let mut replies = syncs(&effects);
        replies.sort_by(|x, y| x.0.cmp(&y.0));
        let mut expected = vec![
            (a.clone(), Err(GroupError::NotCoordinator)),
            (b.clone(), Err(GroupError::NotCoordinator)),
        ];
        expected.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(replies, expected);
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert!(group
            .describe()
            .members
            .iter()
            .all(|m| m.assignment.is_empty()));
        // A late report for that generation changes nothing.
        assert!(group.generation_stored(DELAY, 1, Ok(())).is_empty());
        assert_eq!(group.state(), GroupState::PreparingRebalance);
    }

    #[test]
    fn unloading_answers_every_waiting_request_not_coordinator() {
        let mut group = GroupMembership::new("g", config(), 1);
        let (a, _) = join_new(&mut group, 0, &["range"]);
        let effects = group.unload();
        assert_eq!(
            joins(&effects),
            vec![(a.clone(), Err(GroupError::NotCoordinator))]
        );
        assert_eq!(group.state(), GroupState::Dead);
        assert_eq!(group.next_deadline(), None);
        assert!(group.poll(u64::MAX).is_empty());
        assert_eq!(
            group.join(0, join_request(None, &["range"])),
            Err(GroupError::CoordinatorNotAvailable)
        );
        assert_eq!(
            group.heartbeat(0, &a, 0),
            Err(GroupError::CoordinatorNotAvailable)
        );
    }

    #[test]
    fn reset_and_delete_need_an_empty_group() {
        let (mut group, ids, now) = stable_group(1);
        assert_eq!(group.check_empty(), Err(GroupError::NonEmptyGroup));
        assert_eq!(group.delete(), Err(GroupError::NonEmptyGroup));
        let _ = group.leave(now, &ids[0]).unwrap();
        assert_eq!(group.delete(), Ok(()));
        assert_eq!(group.state(), GroupState::Dead);
        assert_eq!(group.check_empty(), Err(GroupError::GroupIdNotFound));
        assert_eq!(
            group.join(now, join_request(None, &["range"])),
            Err(GroupError::CoordinatorNotAvailable)
        );
    }

    // Property test: a model shell drives the group with random requests from four clients and
    // random time steps, applying every proposal to an offsets partition at once, with lost
    // stores and coordinator failovers.

    #[derive(Debug, Clone)]
    enum Op {
        Join {
            client: usize,
            protocols: usize,
        },
        Sync {
            client: usize,
        },
        Heartbeat {
            client: usize,
        },
        Leave {
            client: usize,
        },
        Commit {
            client: usize,
        },
        Advance {
            ms: u64,
        },
        /// The next generation proposed is lost (leadership lost before it committed).
        LoseNextStore,
        /// A new coordinator takes over: the group is unloaded and rebuilt from the partition.
        Failover,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (0..4usize, 0..3usize).prop_map(|(client, protocols)| Op::Join { client, protocols }),
            3 => (0..4usize).prop_map(|client| Op::Sync { client }),
            3 => (0..4usize).prop_map(|client| Op::Heartbeat { client }),
            1 => (0..4usize).prop_map(|client| Op::Leave { client }),
            2 => (0..4usize).prop_map(|client| Op::Commit { client }),
            3 => prop_oneof![0u64..200, 0u64..40_000].prop_map(|ms| Op::Advance { ms }),
            1 => Just(Op::LoseNextStore),
            1 => Just(Op::Failover),
        ]
    }

    #[derive(Default)]
    struct Client {
        id: Option<MemberId>,
        generation: Generation,
    }

    struct Shell {
        group: GroupMembership,
        offsets: OffsetsState,
        clients: Vec<Client>,
        waiting_joins: std::collections::BTreeSet<MemberId>,
        waiting_syncs: std::collections::BTreeSet<MemberId>,
        now: u64,
        lose_next_store: bool,
        failovers: u64,
    }

    impl Shell {
        fn client_of(&mut self, member_id: &str) -> Option<&mut Client> {
            self.clients
                .iter_mut()
                .find(|c| c.id.as_deref() == Some(member_id))
        }

        /// Delivers replies (each must answer a request that waits) and applies proposals,
        /// reporting stored generations back, until nothing is left.
        fn deliver(
            &mut self,
            effects: Effects,
        ) -> Result<(), proptest::test_runner::TestCaseError> {
            let mut queue = vec![effects];
            while let Some(effects) = queue.pop() {
                for reply in effects.replies {
                    match reply {
                        Reply::Join { member_id, result } => {
                            proptest::prop_assert!(
                                self.waiting_joins.remove(&member_id),
                                "a join answer nobody waits for: {}",
                                member_id
                            );
                            if let Some(client) = self.client_of(&member_id) {
                                match result {
                                    Ok(response) => client.generation = response.generation,
                                    Err(GroupError::UnknownMemberId) => client.id = None,
                                    // Kafka clients keep their id and find the coordinator again.
                                    Err(_) => {}
                                }
                            }
                        }
                        Reply::Sync { member_id, result } => {
                            proptest::prop_assert!(
                                self.waiting_syncs.remove(&member_id),
                                "a sync answer nobody waits for: {}",
                                member_id
                            );
                            if let (Some(client), Err(GroupError::UnknownMemberId)) =
                                (self.client_of(&member_id), &result)
                            {
                                client.id = None;
                            }
                        }
                    }
                }
                for command in effects.proposals {
                    let generation = match &command {
                        OffsetsCommand::GroupGeneration { generation, .. } => Some(*generation),
                        _ => None,
                    };
                    if let Some(generation) = generation.filter(|_| self.lose_next_store) {
                        self.lose_next_store = false;
                        let lost = Err(GroupError::NotCoordinator);
                        queue.push(self.group.generation_stored(self.now, generation, lost));
                        continue;
                    }
                    let result = self.offsets.execute(self.now, command);
                    proptest::prop_assert!(result.is_ok(), "a proposal refused: {:?}", result);
                    if let Some(generation) = generation {
                        queue.push(self.group.generation_stored(self.now, generation, Ok(())));
                    }
                }
            }
            proptest::prop_assert!(self.group.consistent());
            // A Stable group is exactly what its offsets partition stores.
            if self.group.state() == GroupState::Stable {
                let record = self.offsets.group("g").expect("stored");
                proptest::prop_assert_eq!(record.generation, self.group.generation());
                let stored: Vec<&str> = record
                    .members
                    .iter()
                    .map(|m| m.member_id.as_str())
                    .collect();
                let live: Vec<MemberId> = self
                    .group
                    .describe()
                    .members
                    .into_iter()
                    .map(|m| m.member_id)
                    .collect();
                proptest::prop_assert_eq!(
                    stored,
                    live.iter().map(String::as_str).collect::<Vec<_>>()
                );
            }
            Ok(())
        }

        fn step(&mut self, op: Op) -> Result<(), proptest::test_runner::TestCaseError> {
            const CHOICES: [&[&str]; 3] = [
                &["range"],
                &["range", "roundrobin"],
                &["roundrobin", "range"],
            ];
            let now = self.now;
            match op {
                Op::Join { client, protocols } => {
                    let member_id = self.clients[client].id.clone();
                    let request = join_request(member_id.as_deref(), CHOICES[protocols]);
                    match self.group.join(now, request) {
                        Ok((id, effects)) => {
                            self.clients[client].id = Some(id.clone());
                            self.waiting_joins.insert(id);
                            self.deliver(effects)?;
                        }
                        Err(GroupError::UnknownMemberId) => self.clients[client].id = None,
                        Err(error) => proptest::prop_assert!(false, "join refused: {:?}", error),
                    }
                }
                Op::Sync { client } => {
                    let Some(id) = self.clients[client].id.clone() else {
                        return Ok(());
                    };
                    let mut request = sync_request(&id, self.clients[client].generation);
                    if self.group.leader() == Some(id.as_str()) {
                        request.assignments = self
                            .group
                            .describe()
                            .members
                            .into_iter()
                            .map(|m| (m.member_id.clone(), assignment_of(&m.member_id)))
                            .collect();
                    }
                    if let Ok(effects) = self.group.sync(now, request) {
                        self.waiting_syncs.insert(id);
                        self.deliver(effects)?;
                    }
                }
                Op::Heartbeat { client } => {
                    if let Some(id) = self.clients[client].id.clone() {
                        let generation = self.clients[client].generation;
                        if self.group.heartbeat(now, &id, generation)
                            == Err(GroupError::UnknownMemberId)
                        {
                            self.clients[client].id = None;
                        }
                    }
                }
                Op::Leave { client } => {
                    if let Some(id) = self.clients[client].id.take() {
                        if let Ok(effects) = self.group.leave(now, &id) {
                            self.deliver(effects)?;
                        }
                    }
                }
                Op::Commit { client } => {
                    let (member_id, generation) = match &self.clients[client].id {
                        Some(id) => (id.clone(), self.clients[client].generation),
                        None => (String::new(), NO_GENERATION),
                    };
                    if self
                        .group
                        .validate_commit(now, &member_id, generation)
                        .is_ok()
                    {
                        let state = self.group.state();
                        let result = self.offsets.execute(
                            now,
                            OffsetsCommand::CommitOffsets {
                                group: "g".into(),
                                member_id,
                                generation,
                                offsets: vec![],
                            },
                        );
                        // What a Stable or Empty group accepts, its partition accepts.
                        if matches!(state, GroupState::Stable | GroupState::Empty) {
                            proptest::prop_assert_eq!(result, Ok(OffsetsOutcome::Committed));
                        }
                    }
                }
                Op::Advance { ms } => {
                    self.now += ms;
                    let effects = self.group.poll(self.now);
                    self.deliver(effects)?;
                }
                Op::LoseNextStore => self.lose_next_store = true,
                Op::Failover => {
                    let effects = self.group.unload();
                    self.deliver(effects)?;
                    proptest::prop_assert!(
                        self.waiting_joins.is_empty() && self.waiting_syncs.is_empty()
                    );
                    self.failovers += 1;
                    self.group = match self.offsets.group("g") {
                        Some(record) => {
                            GroupMembership::restore("g", record, config(), now, self.failovers)
                        }
                        None => GroupMembership::new("g", config(), self.failovers),
                    };
                    self.deliver(Effects::default())?;
                }
            }
            Ok(())
        }
    }

    proptest::proptest! {
        /// Whatever the clients do: the invariants hold after every call, generations only
        /// grow, every answer goes to a request that waits, every proposal applies, a Stable
        /// group is what its partition stores, and once the clients go quiet every waiting
        /// request is answered and the group ends Empty.
        #[test]
        fn the_group_protocol_keeps_its_invariants_whatever_the_clients_do(
            ops in proptest::collection::vec(op(), 1..150)
        ) {
            let mut shell = Shell {
                group: GroupMembership::new("g", config(), 11),
                offsets: OffsetsState::default(),
                clients: (0..4).map(|_| Client::default()).collect(),
                waiting_joins: Default::default(),
                waiting_syncs: Default::default(),
                now: 0,
                lose_next_store: false,
                failovers: 0,
            };
            let mut generation = 0;
            for op in ops {
                let coordinator = shell.failovers;
                shell.step(op)?;
                // Generations only grow under one coordinator, and a new one continues from
                // the stored generation.
                let stored = shell.offsets.group("g").map_or(0, |r| r.generation);
                proptest::prop_assert!(shell.group.generation() >= stored);
                if shell.failovers == coordinator {
                    proptest::prop_assert!(shell.group.generation() >= generation);
                }
                generation = shell.group.generation();
            }
            for _ in 0..1_000 {
                let Some(deadline) = shell.group.next_deadline() else { break };
                shell.now = shell.now.max(deadline);
                let effects = shell.group.poll(shell.now);
                shell.deliver(effects)?;
            }
            proptest::prop_assert_eq!(shell.group.state(), GroupState::Empty);
            proptest::prop_assert!(shell.waiting_joins.is_empty(), "{:?}", shell.waiting_joins);
            proptest::prop_assert!(shell.waiting_syncs.is_empty(), "{:?}", shell.waiting_syncs);
            if let Some(record) = shell.offsets.group("g") {
                proptest::prop_assert!(record.members.is_empty());
            }
        }
    }
}
