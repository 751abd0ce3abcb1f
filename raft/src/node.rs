//! `RaftNode`: one member of one Raft group, as a pure state machine.
//!
//! ```text
//!               election timeout              majority of pre-votes
//!  +----------+ -------------> +--------------+ ------------------> +-----------+
//!  | Follower |                | PreCandidate |                     | Candidate |
//!  +----------+ <------------- +--------------+ <------------------ +-----------+
//!    ^     ^    pre-votes lost,    |      ^      election timeout:     |      |
//!    |     |    leader heard,      +------+      pre-vote again        |      | majority
//!    |     |    higher term        timeout: again                      |      | of votes
//!    |     +-----------------------------------------------------------+      v
//!    |              votes lost, leader heard, higher term                +--------+
//!    +------------------------------------------------------------------ | Leader |
//!                     higher term, or check-quorum fails                 +--------+
//! ```
//!
//! Inputs: `tick`, `step_from` (or `step`), `propose`, `propose_membership_change`,
//! `on_persisted`, `on_applied`, `campaign`. Output: `ready`. Elections live in election.rs,
//! replication and commit in replication.rs, configuration tracking in membership_log.rs.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::entry::{Entry, EntryKind, HardState, Index, NodeId, Term};
use crate::error::{ConfigError, ProposeError};
use crate::log::RaftLog;
use crate::membership::{Incarnation, Membership, MembershipChange, MembershipError};
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::quorum::Configuration;
use crate::read_index::{ReadState, ReadTracker};
use crate::ready::{PeerMessages, Ready};
use crate::replicated_log::ReplicatedLog;
use crate::snapshot::{Snapshot, SnapshotMeta};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// What a node recovered from its disk, besides the log itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveredState {
    pub hard_state: HardState,
    /// The state machine's applied index (0 when it is rebuilt from the log).
    pub applied_index: Index,
    /// From storage's recovery report: the highest index seen beyond the cut of a damaged tail.
    /// The node grants no votes and does not campaign until its log reaches it again.
    pub abstain_until_index: Option<Index>,
}

/// Where a message goes in the Ready: at once, or after local durability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendWhen {
    Now,
    AfterPersist,
}

pub struct RaftNode<L: RaftLog> {
    pub(crate) config: Config,
    /// The ids of `membership`, kept in step with it for the quorum code.
    pub(crate) configuration: Configuration,
    /// The latest configuration in the log, committed or not (docs/RAFT-CORE.md "Membership").
    pub(crate) membership: Membership,
    /// `(index, configuration)` of the configuration entries the node may still need: the
    /// latest one at or below the commit index (or the starting one) and every one above it,
    /// so a truncated suffix can restore the configuration before it. Never empty.
    pub(crate) membership_entries: Vec<(Index, Membership)>,
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) log: ReplicatedLog<L>,
    /// Votes (or pre-votes) received in the current campaign.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    /// Leader only: one entry per other member.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    pub(crate) election_elapsed_ticks: u32,
    pub(crate) heartbeat_elapsed_ticks: u32,
    pub(crate) randomized_election_timeout_ticks: u32,
    pub(crate) abstain_until_index: Option<Index>,
    /// Leader only: `(index, bytes)` of its own entries not yet committed.
    pub(crate) uncommitted: VecDeque<(Index, u64)>,
    pub(crate) uncommitted_bytes: u64,
    /// Leader only: the target of a leadership transfer in progress and the ticks it has run.
    pub(crate) transfer: Option<(NodeId, u32)>,
    /// The latest snapshot (taken or installed), streamed to followers that need it.
    pub(crate) snapshot: Option<Snapshot>,
    /// An installed snapshot for the next Ready.
    pub(crate) snapshot_to_install: Option<Snapshot>,
    /// Follower: the snapshot transfer in progress and the bytes received so far.
    pub(crate) incoming_snapshot: Option<(SnapshotMeta, bytes::BytesMut)>,
    /// Leader: read rounds and reads waiting for them.
    pub(crate) reads: ReadTracker,
    /// Reads confirmed or failed, for the next Ready.
    pub(crate) read_states: Vec<ReadState>,
    /// The campaign under way was ordered by TimeoutNow: its RequestVotes bypass stickiness.
    pub(crate) campaign_forced: bool,
    /// Ticks since this node started: a restarted node may have promised stickiness to a
    /// leader's lease before it crashed, so it ignores elections for one
    /// `election_timeout_min_ticks` after a restart (leases depend on it).
    pub(crate) ticks_since_start: u32,
    pub(crate) restarted: bool,
    rng: ChaCha8Rng,
    hard_state_handed_out: HardState,
    messages: BTreeMap<NodeId, Vec<Message>>,
    pub(crate) messages_after_persist: BTreeMap<NodeId, Vec<Message>>,
}

impl<L: RaftLog> RaftNode<L> {
    /// A voter over a recovered log, every member at incarnation 0 (see `with_membership`).
    /// Returns the configuration error if `config` is invalid or the node is not a voter.
    pub fn new(
        config: Config,
        configuration: Configuration,
        storage: L,
        recovered: RecoveredState,
    ) -> Result<RaftNode<L>, ConfigError> {
        if configuration.voters.is_empty() {
            return Err(ConfigError::NoVoters);
        }
        if !configuration.is_voter(config.id) {
            return Err(ConfigError::NotAMember {
                id: config.id,
                voters: configuration.voters.iter().copied().collect(),
            });
        }
        let mut config = config;
        config.incarnation = 0;
        RaftNode::with_membership(
            config,
            Membership::from_configuration(&configuration),
            storage,
            recovered,
        )
    }

    /// A node over a recovered log. `membership` is the configuration as of
    /// `recovered.applied_index` (the snapshot's, or the founding one); configuration entries
    /// after it are read back from the log, and the latest one wins. The node may be a voter,
    /// a learner, or not yet a member (a new server or a wiped node waiting to be added: it
    /// never campaigns and counts for nothing until a configuration makes it a voter).
    pub fn with_membership(
        config: Config,
        membership: Membership,
        storage: L,
        recovered: RecoveredState,
    ) -> Result<RaftNode<L>, ConfigError> {
        RaftNode::build(config, membership, storage, recovered, None)
    }

    /// A node restarting from its latest snapshot (persisted by the driver with the log
    /// entries after it; entries at or below its index may or may not still be stored). The
    /// state machine was restored from `snapshot.data`, so the applied index is at least the
    /// snapshot's; the configuration is the snapshot's, then the log's.
    pub fn with_snapshot(
        config: Config,
        snapshot: Snapshot,
        storage: L,
        recovered: RecoveredState,
    ) -> Result<RaftNode<L>, ConfigError> {
        let membership = snapshot.meta.membership.clone();
        RaftNode::build(config, membership, storage, recovered, Some(snapshot))
    }

    fn build(
        config: Config,
        membership: Membership,
        storage: L,
        recovered: RecoveredState,
        snapshot: Option<Snapshot>,
    ) -> Result<RaftNode<L>, ConfigError> {
        config.validate()?;
        let config_vote_hold = config.vote_hold_after_restart;
        let snapshot_position = snapshot.as_ref().map_or((0, 0), |snapshot| {
            (
                snapshot.meta.last_included_index,
                snapshot.meta.last_included_term,
            )
        });
        let log = ReplicatedLog::new(storage, recovered.applied_index, snapshot_position);
        let mut node = RaftNode {
            rng: ChaCha8Rng::seed_from_u64(config.random_seed),
            config,
            configuration: membership.configuration(),
            membership_entries: vec![(
                snapshot_position.0.max(if snapshot.is_some() {
                    0
                } else {
                    log.applied_index()
                }),
                membership.clone(),
            )],
            membership,
            term: recovered.hard_state.term,
            vote: recovered.hard_state.vote,
            role: Role::Follower,
            leader: None,
            log,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            election_elapsed_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            randomized_election_timeout_ticks: 0,
            abstain_until_index: recovered.abstain_until_index,
            uncommitted: VecDeque::new(),
            uncommitted_bytes: 0,
            transfer: None,
            snapshot,
            snapshot_to_install: None,
            incoming_snapshot: None,
            reads: ReadTracker::default(),
            read_states: Vec::new(),
            campaign_forced: false,
            ticks_since_start: 0,
            restarted: recovered.hard_state.term > 0 && config_vote_hold,
            hard_state_handed_out: recovered.hard_state,
            messages: BTreeMap::new(),
            messages_after_persist: BTreeMap::new(),
        };
        node.reset_election_timer();
        node.maybe_end_abstention();
        node.read_memberships_from_log();
        Ok(node)
    }

    /// One unit of logical time passed.
    pub fn tick(&mut self) {
        self.ticks_since_start = self.ticks_since_start.saturating_add(1);
        match self.role {
            Role::Leader => self.tick_leader(),
            Role::Follower | Role::PreCandidate | Role::Candidate => self.tick_election(),
        }
    }

    /// A message from peer `from` arrived, WITHOUT the incarnation check: for drivers that do
    /// not know the sender's incarnation. It cannot tell a wiped node from the member it
    /// replaced, so a cluster that replaces nodes must use `step_from`.
    pub fn step(&mut self, from: NodeId, message: Message) {
        self.step_checked(from, None, message);
    }

    /// A message from incarnation `from_incarnation` of peer `from` arrived (the driver carries
    /// the sender's `Config::incarnation` beside every message). Answers (votes, append
    /// acknowledgements) from an incarnation the configuration does not know under that id are
    /// ignored, and votes and acknowledgements count only for a voter's own incarnation: a lost
    /// server never votes or acknowledges as the member it was (docs/RAFT-CORE.md
    /// "Incarnations on the wire").
    ///
    /// Requests (PreVote, RequestVote, AppendEntries) are heard from any incarnation: they are
    /// judged by term and log alone, and a node whose configuration is behind must still follow
    /// a leader that is a newer incarnation (the simulator found a lagging learner that ignored
    /// its replaced leader forever when every message was filtered).
    pub fn step_from(&mut self, from: NodeId, from_incarnation: Incarnation, message: Message) {
        #[cfg(feature = "fault-injection")]
        if self.config.planted_bugs.ignore_incarnations {
            return self.step_checked(from, None, message);
        }
        let is_answer = matches!(
            message.body,
            MessageBody::PreVoteResponse(_)
                | MessageBody::RequestVoteResponse(_)
                | MessageBody::AppendEntriesResponse(_)
        );
        if is_answer && !self.membership.admits(from, from_incarnation) {
            tracing::debug!(
                from,
                from_incarnation,
                kind = message.body.kind_name(),
                "ignoring a message from a non-member incarnation"
            );
            return;
        }
        self.step_checked(from, Some(from_incarnation), message);
    }

    /// `incarnation` is `None` when the driver does not know it (`step`): then acknowledgements
    /// and votes count for whatever incarnation the configuration holds.
    fn step_checked(&mut self, from: NodeId, incarnation: Option<Incarnation>, message: Message) {
        if from == self.config.id {
            tracing::warn!(from, "ignoring a message claiming to come from this node");
            return;
        }
        if !self.step_term(from, &message) {
            return;
        }
        match message.body {
            MessageBody::PreVote(request) => {
                self.handle_vote_request(from, message.term, request, true)
            }
            MessageBody::RequestVote(request) => {
                self.handle_vote_request(from, message.term, request, false)
            }
            MessageBody::PreVoteResponse(response) => {
                if self.counts_vote_of(from, incarnation) {
                    self.handle_pre_vote_response(from, message.term, response)
                }
            }
            MessageBody::RequestVoteResponse(response) => {
                if self.counts_vote_of(from, incarnation) {
                    self.handle_vote_response(from, response)
                }
            }
            MessageBody::AppendEntries(append) => self.handle_append_entries(from, append),
            MessageBody::AppendEntriesResponse(response) => {
                self.handle_append_response(from, incarnation, response)
            }
            MessageBody::InstallSnapshot(chunk) => self.handle_install_snapshot(from, chunk),
            MessageBody::ReadIndexCheck(check) => self.handle_read_index_check(from, check),
            MessageBody::ReadIndexCheckResponse(check) => {
                self.handle_read_index_check_response(from, incarnation, check)
            }
            MessageBody::TimeoutNow => self.handle_timeout_now(from),
            MessageBody::ForcedRequestVote(request) => {
                self.handle_vote_request(from, message.term, request, false)
            }
            MessageBody::InstallSnapshotResponse(response) => {
                if self.counts_answer_of(from, incarnation) {
                    self.handle_install_snapshot_response(from, response)
                }
            }
        }
    }

    /// Appends `payload` as a `Data` entry if this node leads. Returns the entry's
    /// `(index, term)`: the proposal succeeded iff that entry is later applied.
    pub fn propose(&mut self, payload: Bytes) -> Result<(Index, Term), ProposeError> {
        self.propose_entry(EntryKind::Data, payload)
    }

    /// Appends `payload` as a `Meta` entry (a group's own command: group 0's metadata
    /// commands, a partition's retention decision) if this node leads. Kept apart from
    /// [`RaftNode::propose`] so a command is never mistaken for data.
    pub fn propose_meta(&mut self, payload: Bytes) -> Result<(Index, Term), ProposeError> {
        self.propose_entry(EntryKind::Meta, payload)
    }

    /// Proposes one single-server configuration change (docs/RAFT-CORE.md "Membership"). Refused
    /// until this leader has committed an entry of its own term and while the previous change is
    /// uncommitted. The change takes effect as soon as it is appended, on every node.
    pub fn propose_membership_change(
        &mut self,
        change: MembershipChange,
    ) -> Result<(Index, Term), MembershipError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            }
            .into());
        }
        if self.log.term(self.log.commit_index()) != Some(self.term) {
            return Err(MembershipError::OwnTermNotCommitted);
        }
        if self.membership_change_pending() && !self.allows_concurrent_membership_changes() {
            return Err(MembershipError::ChangePending {
                index: self.membership_index(),
            });
        }
        if self.transfer_target().is_some() {
            return Err(MembershipError::TransferInProgress);
        }
        let next = self.membership.apply(change)?;
        // Like the no-op, a configuration entry bypasses the uncommitted-bytes limit: it is
        // small and rare, and a limit below its size would block membership forever (the
        // simulator found that with max_uncommitted_bytes = 128).
        let entry = Entry {
            index: self.log.last_index() + 1,
            term: self.term,
            kind: EntryKind::Config,
            payload: next.encode(),
        };
        Ok(self.append_own_entry(entry))
    }

    fn allows_concurrent_membership_changes(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.config.planted_bugs.allow_concurrent_membership_changes {
            return true;
        }
        false
    }

    pub(crate) fn propose_entry(
        &mut self,
        kind: EntryKind,
        payload: Bytes,
    ) -> Result<(Index, Term), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if let Some((target, _)) = self.transfer {
            // A leadership transfer stops proposals: retry at the target.
            return Err(ProposeError::NotLeader {
                leader_hint: Some(target),
            });
        }
        let entry = Entry {
            index: self.log.last_index() + 1,
            term: self.term,
            kind,
            payload,
        };
        let size_bytes = entry.size_bytes();
        if size_bytes > self.config.max_uncommitted_bytes {
            return Err(ProposeError::PayloadTooLarge {
                size_bytes,
                max_uncommitted_bytes: self.config.max_uncommitted_bytes,
            });
        }
        if self.uncommitted_bytes + size_bytes > self.config.max_uncommitted_bytes {
            return Err(ProposeError::Overloaded {
                uncommitted_bytes: self.uncommitted_bytes,
                max_uncommitted_bytes: self.config.max_uncommitted_bytes,
            });
        }
        Ok(self.append_own_entry(entry))
    }

    /// The leader appends an entry of its term, tracked as uncommitted until it commits. The
    /// no-op of a new term comes here directly: it is never refused.
    pub(crate) fn append_own_entry(&mut self, entry: Entry) -> (Index, Term) {
        assert_eq!(self.role, Role::Leader);
        assert_eq!(
            (entry.index, entry.term),
            (self.log.last_index() + 1, self.term)
        );
        let position = (entry.index, entry.term);
        self.uncommitted
            .push_back((entry.index, entry.size_bytes()));
        self.uncommitted_bytes += entry.size_bytes();
        let entries = [entry];
        self.log.append(&entries);
        self.observe_appended(&entries);
        position
    }

    /// The driver made the log durable up to `(index, term)`.
    pub fn on_persisted(&mut self, index: Index, term: Term) {
        if self.log.persisted_to(index, term) {
            self.maybe_end_abstention();
            if self.role == Role::Leader {
                self.maybe_commit();
            }
        }
    }

    /// The state machine applied every entry up to `index`.
    pub fn on_applied(&mut self, index: Index) {
        self.log.applied_to(index);
    }

    /// Starts an election now, as an election timeout would (pre-vote first).
    pub fn campaign(&mut self) {
        if self.role != Role::Leader {
            self.start_pre_vote();
        }
    }

    /// Takes everything the driver must do now. See `Ready` for the order.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.send_appends_to_all();
        }
        let hard_state = self.hard_state();
        let hard_state = (hard_state != self.hard_state_handed_out).then(|| {
            self.hard_state_handed_out = hard_state;
            hard_state
        });
        let (truncate_from, entries) = self.log.take_entries_to_write();
        self.read_round_handed_out();
        Ready {
            hard_state,
            truncate_from,
            snapshot: self.snapshot_to_install.take(),
            entries,
            messages: drain_batches(&mut self.messages),
            messages_after_persist: drain_batches(&mut self.messages_after_persist),
            committed_entries: self
                .log
                .take_committed_to_apply(self.config.max_apply_bytes),
            read_states: std::mem::take(&mut self.read_states),
        }
    }

    /// True when `ready()` would return something to do.
    pub fn has_ready(&self) -> bool {
        self.hard_state() != self.hard_state_handed_out
            || self.log.has_work()
            || self.snapshot_to_install.is_some()
            || !self.read_states.is_empty()
            || !self.messages.is_empty()
            || !self.messages_after_persist.is_empty()
            || (self.role == Role::Leader && self.has_appends_to_send())
    }

    pub(crate) fn send(&mut self, to: NodeId, when: SendWhen, message: Message) {
        let queue = match when {
            SendWhen::Now => &mut self.messages,
            SendWhen::AfterPersist => &mut self.messages_after_persist,
        };
        queue.entry(to).or_default().push(message);
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed_ticks = 0;
        let minimum = self.config.election_timeout_min_ticks;
        self.randomized_election_timeout_ticks = self.rng.random_range(minimum..2 * minimum);
    }

    /// True while the recovery rule forbids voting and campaigning.
    pub(crate) fn is_abstaining(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        if self.config.planted_bugs.ignore_abstain_rule {
            return false;
        }
        self.abstain_until_index.is_some()
    }

    pub(crate) fn maybe_end_abstention(&mut self) {
        if let Some(until) = self.abstain_until_index {
            if self.log.persisted_index() >= until {
                self.abstain_until_index = None;
            }
        }
    }

    /// The O(1) invariants of the node, checked by tests after every step.
    pub fn validate(&self) {
        self.log.validate();
        // A vote may name a server a later configuration removed: no check on it.
        assert_eq!(self.configuration, self.membership.configuration());
        assert_eq!(
            self.membership_entries.last().map(|(_, m)| m),
            Some(&self.membership)
        );
        if matches!(self.role, Role::Candidate | Role::PreCandidate) {
            assert!(self.is_self_voter(), "a non-voter campaigns");
        }
        match self.role {
            Role::Leader => {
                assert_eq!(self.leader, Some(self.config.id));
                assert_eq!(self.vote, Some(self.config.id), "a leader voted for itself");
                for (id, progress) in &self.progress {
                    assert!(
                        progress.match_index < progress.next_index,
                        "progress of {id}"
                    );
                    assert!(
                        progress.next_index <= self.log.last_index() + 1,
                        "progress of {id}"
                    );
                    assert!(progress.inflights.count() <= self.config.max_inflight_msgs);
                }
                let own: u64 = self.uncommitted.iter().map(|&(_, bytes)| bytes).sum();
                assert_eq!(own, self.uncommitted_bytes);
            }
            Role::Candidate => assert_eq!(self.vote, Some(self.config.id)),
            Role::Follower | Role::PreCandidate => assert!(self.progress.is_empty()),
        }
        assert!(self.randomized_election_timeout_ticks >= self.config.election_timeout_min_ticks);
        assert!(
            self.randomized_election_timeout_ticks < 2 * self.config.election_timeout_min_ticks
        );
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }
    pub fn term(&self) -> Term {
        self.term
    }
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
        }
    }
    pub fn commit_index(&self) -> Index {
        self.log.commit_index()
    }
    pub fn applied_index(&self) -> Index {
        self.log.applied_index()
    }
    pub fn persisted_index(&self) -> Index {
        self.log.persisted_index()
    }
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }
    /// Term of the entry at `index` in the node's whole log (stable and unstable).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }
    /// Entries `from..to_exclusive` of the whole log (for tests and the simulator).
    pub fn entries(&self, from: Index, to_exclusive: Index) -> Vec<Entry> {
        self.log.entries(from, to_exclusive, u64::MAX)
    }
    pub fn abstain_until_index(&self) -> Option<Index> {
        self.abstain_until_index
    }
    pub fn uncommitted_bytes(&self) -> u64 {
        self.uncommitted_bytes
    }
    pub fn configuration(&self) -> &Configuration {
        &self.configuration
    }
    /// The latest configuration in the log, with incarnations.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
    /// This node's incarnation (`Config::incarnation`).
    pub fn incarnation(&self) -> Incarnation {
        self.config.incarnation
    }
    /// Leader: the target of the leadership transfer in progress.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.map(|(target, _)| target)
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The leader's progress of follower `id`.
    pub fn progress(&self, id: NodeId) -> Option<&Progress> {
        self.progress.get(&id)
    }
    pub fn storage(&self) -> &L {
        self.log.storage()
    }
    /// The driver writes the log through this (following `Ready`), never the core.
    pub fn storage_mut(&mut self) -> &mut L {
        self.log.storage_mut()
    }
    /// Gives the log back (a crash in the simulator, a shutdown in the node).
    pub fn into_storage(self) -> L {
        self.log.into_storage()
    }
}

fn drain_batches(queue: &mut BTreeMap<NodeId, Vec<Message>>) -> Vec<PeerMessages> {
    std::mem::take(queue)
        .into_iter()
        .map(|(to, messages)| PeerMessages { to, messages })
        .collect()
}
