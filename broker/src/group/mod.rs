//! What every Raft group of a node runs on, the metadata group and partitions alike, with no
//! knowledge of either: they plug in as a `Machine` (driver.rs) and a `GroupActor` (actor.rs),
//! and the node plugs in as the [`GroupHost`].
//!
//! - `driver.rs`: the step function that turns each `Ready` into calls on a disk, a network and
//!   the state machine, in the order docs/ARCHITECTURE.md "The driver contract" demands; the
//!   simulator runs it too.
//! - `pipeline.rs`: the ordering rules of the pipelined fdatasync, a pure state machine.
//! - `storage_log.rs`: the segment log as the core reads it and the driver writes it (its sync
//!   runs on tokio's blocking pool).
//! - `actor.rs`: the one loop (inbox, tick, sync completion, shutdown) and the replies owed.
//! - `replace.rs`: membership reconciliation towards group 0's map; `raft_codec.rs`: Raft
//!   messages on the wire.
//! - here: [`RaftGroup`] (a core, its driver, and what the node adds: reconciliation,
//!   preferred-leader moves, member-state reports, gauges) and [`Peers`], the outgoing links with
//!   heartbeat coalescing.

pub mod actor;
pub mod driver;
pub mod pipeline;
pub mod raft_codec;
pub mod replace;
pub mod storage_log;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::group::driver::{GroupDriver, Machine, Network};
use crate::group::replace::{member_state, next_change, MemberState};
use crate::group::storage_log::{fatal_storage_error, StorageLog, SyncDone};
use crate::limits::{
    FULL_DISK_HANDOVER_EVERY_TICKS, HANDOVER_SLACK_TICKS, REBALANCE_EVERY_TICKS,
    RECONCILE_EVERY_TICKS,
};
use crate::transport::{GroupId, NodeId, PeerSender};
use keel_raft::{Incarnation, Message, MessageBody, PeerMessages, RaftNode, Role};

/// Messages for one group from one peer, decoded.
#[derive(Debug)]
pub struct PeerBatch {
    pub from: NodeId,
    /// The sender's incarnation: answers from an incarnation that is not a member are ignored
    /// (docs/RAFT-CORE.md "Incarnations on the wire").
    pub incarnation: Incarnation,
    pub messages: Vec<Message>,
}

/// A carrier's payload: the sender's incarnation, then coalesced heartbeats. One group's
/// messages travel in group/raft_codec.rs's format instead. docs/TRANSPORT.md "Raft payloads".
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Envelope<T> {
    incarnation: Incarnation,
    body: T,
}

/// Decodes a carrier of coalesced heartbeats: the sender's incarnation and (group, messages)
/// pairs.
pub fn decode_coalesced(
    from: NodeId,
    payload: &[u8],
) -> Option<(Incarnation, CoalescedHeartbeats)> {
    match postcard::from_bytes::<Envelope<CoalescedHeartbeats>>(payload) {
        Ok(envelope) => Some((envelope.incarnation, envelope.body)),
        Err(error) => {
            tracing::warn!(from, %error, "dropping malformed coalesced heartbeats");
            None
        }
    }
}

/// Decodes one group's messages from a peer; entry payloads share `payload`'s memory. A
/// malformed payload is dropped with a log line (Raft tolerates loss; a peer that sends
/// garbage gains nothing).
pub fn decode_messages(
    group: GroupId,
    from: NodeId,
    payload: &Bytes,
) -> Option<(Incarnation, Vec<Message>)> {
    let decoded = raft_codec::decode(payload);
    if decoded.is_none() {
        tracing::warn!(
            group,
            from,
            bytes = payload.len(),
            "dropping a malformed Raft payload"
        );
    }
    decoded
}

/// Group ids from here up carry coalesced heartbeats (one per lane) instead of one group's
/// messages. A multiple of every lane count up to 16, so `COALESCED_BASE + lane` travels on
/// `lane`.
pub const COALESCED_BASE: GroupId = 1 << 62;

/// The senders towards every peer, fixed at start (a replaced node keeps its id and address,
/// so replacement needs no new links), and the heartbeats waiting to be coalesced.
#[derive(Debug, Default)]
pub struct Peers {
    pub senders: HashMap<NodeId, PeerSender>,
    pub lanes: u8,
    /// This node's incarnation, sent with every payload.
    pub incarnation: Incarnation,
    /// Heartbeats per (peer, carrier group), sent together once per tick by [`Peers::flush`].
    outbox: Mutex<HashMap<(NodeId, GroupId), CoalescedHeartbeats>>,
}

/// The payload of a carrier: (group, messages) pairs.
pub type CoalescedHeartbeats = Vec<(GroupId, Vec<Message>)>;

/// Heartbeats only: empty AppendEntries. Delaying them until the next flush is safe because
/// they travel on their group's lane after everything the group sent before them, and a late
/// heartbeat only repeats what the follower already has.
fn is_heartbeat(messages: &[Message]) -> bool {
    messages.iter().all(|message| {
        matches!(&message.body, MessageBody::AppendEntries(append) if append.entries.is_empty())
    })
}

impl Peers {
    pub fn new(lanes: u8, incarnation: Incarnation) -> Peers {
        Peers {
            lanes,
            incarnation,
            ..Peers::default()
        }
    }

    /// The carrier group whose lane is `group`'s lane.
    fn carrier(&self, group: GroupId) -> GroupId {
        let lanes = u64::from(self.lanes.max(1));
        COALESCED_BASE + group % lanes
    }

    /// Sends the coalesced heartbeats: one message per (peer, lane) for every group at once
    /// (docs/TRANSPORT.md "Lanes and framing").
    pub fn flush(&self) {
        let outbox = std::mem::take(&mut *self.outbox.lock().expect("outbox lock"));
        for ((to, carrier), groups) in outbox {
            let Some(sender) = self.senders.get(&to) else {
                continue;
            };
            let envelope = Envelope {
                incarnation: self.incarnation,
                body: groups,
            };
            match postcard::to_allocvec(&envelope) {
                Ok(bytes) => {
                    let _ = sender.try_send(carrier, Bytes::from(bytes));
                }
                Err(error) => tracing::error!(%error, "encoding coalesced heartbeats"),
            }
        }
    }

    pub fn send(&self, group: GroupId, batches: Vec<PeerMessages>) {
        for batch in batches {
            if self.lanes > 0 && is_heartbeat(&batch.messages) {
                self.outbox
                    .lock()
                    .expect("outbox lock")
                    .entry((batch.to, self.carrier(group)))
                    .or_default()
                    .push((group, batch.messages));
                continue;
            }
            let Some(sender) = self.senders.get(&batch.to) else {
                tracing::debug!(group, to = batch.to, "no link to peer; messages dropped");
                continue;
            };
            let Some(chunks) = raft_codec::encode(self.incarnation, &batch.messages) else {
                continue;
            };
            let appends = batch
                .messages
                .iter()
                .filter(|message| matches!(message.body, MessageBody::AppendEntries(_)))
                .count();
            if appends > 0 {
                metrics::counter!("keel_raft_append_entries_sent_total").increment(appends as u64);
            }
            if let Err(error) = sender.try_send_chunks(group, chunks) {
                // Raft tolerates loss: the leader's progress for the peer falls back to probing.
                tracing::trace!(group, to = batch.to, %error, "messages to peer dropped");
            }
        }
    }
}

/// The network a group's driver sends through: the peer links, tagged with the group.
struct PeerNetwork<'a> {
    peers: &'a Peers,
    group: GroupId,
}

impl Network for PeerNetwork<'_> {
    fn send(&mut self, batches: Vec<PeerMessages>) {
        self.peers.send(self.group, batches);
    }
}

/// What a group needs from the node that hosts it. The node implements it (node/mod.rs); as a
/// trait it keeps this module, the metadata group and partitions free of the node that starts
/// them, so dependencies point one way: node -> {meta, partition} -> group.
pub trait GroupHost: Send + Sync + 'static {
    /// The links to every peer.
    fn peers(&self) -> Arc<Peers>;
    fn fsync(&self) -> keel_storage::FsyncPolicy;
    /// The length of one tick of logical time.
    fn tick(&self) -> std::time::Duration;
    /// The address clients reach `node` at, for `NotLeader` answers.
    fn client_address(&self, node: NodeId) -> Option<String>;
    /// Where this node stands in `group`, for its hellos (group/replace.rs).
    fn report_member_state(&self, group: GroupId, state: MemberState);
    /// The incarnation group 0's map holds for each node: what memberships move towards.
    fn desired_incarnations(&self) -> std::collections::BTreeMap<NodeId, Incarnation>;
    /// Whether the link to `node` is up (this node counts as connected).
    fn peer_connected(&self, node: NodeId) -> bool;
    /// Topic `topic`'s settings as this node's copy of group 0's map holds them (partitions read
    /// their retention here); `None` once the topic is gone.
    fn topic_config(&self, topic: &str) -> Option<crate::meta::TopicConfig>;
    /// The high watermark of `topic`'s partition `partition` as this node's replica last
    /// published it; `None` where this node holds no replica (a coordinator reports consumer lag
    /// from it).
    fn high_watermark(&self, topic: &str, partition: u32) -> Option<u64>;
    /// The free space under the data directory: below its line partitions take no new data.
    fn disk(&self) -> Arc<crate::disk::DiskSpace>;
}

/// The host, shared by every group of a node.
pub type Host = Arc<dyn GroupHost>;

/// One Raft group's core, its driver (group/driver.rs) and what the node adds around them:
/// membership reconciliation, preferred-leader moves, member-state reports and gauges.
pub struct RaftGroup {
    pub group: GroupId,
    pub node: RaftNode<StorageLog>,
    driver: GroupDriver,
    peers: Arc<Peers>,
    fsync: keel_storage::FsyncPolicy,
    group_label: String,
    host: Host,
    /// The replica that should lead when it can (a partition's first replica), so leaders stay
    /// spread over the nodes as placed after restarts and replacements move them.
    preferred_leader: Option<NodeId>,
    ticks: u64,
    /// The tick this node last became leader.
    leader_since: u64,
    was_leader: bool,
    reported: Option<MemberState>,
    /// A tick passed: writes the disk refused are offered again in the next `process`.
    retry_due: bool,
    /// Whether the driver held writes the disk refused, as last logged.
    stalled: bool,
    /// The tick of the last handover because this node cannot take data.
    full_disk_handover_at: Option<u64>,
}

impl RaftGroup {
    pub fn new(
        group: GroupId,
        mut node: RaftNode<StorageLog>,
        host: Host,
        offset_key: Option<keel_storage::OffsetKeyFn>,
        preferred_leader: Option<NodeId>,
    ) -> RaftGroup {
        node.storage_mut().record_offsets(offset_key);
        #[allow(unused_mut)] // mutated only to plant bugs
        let mut driver = GroupDriver::new(&node);
        #[cfg(feature = "fault-injection")]
        driver.plant(crate::group::driver::DriverBugs {
            release_unsynced: fault_release_unsynced(),
            ..Default::default()
        });
        let mut group = RaftGroup {
            group,
            driver,
            was_leader: node.role() == Role::Leader,
            node,
            peers: host.peers(),
            fsync: host.fsync(),
            group_label: group.to_string(),
            host,
            preferred_leader,
            ticks: 0,
            leader_since: 0,
            reported: None,
            retry_due: false,
            stalled: false,
            full_disk_handover_at: None,
        };
        group.report_member_state();
        group
    }

    pub fn step(&mut self, batch: PeerBatch) {
        for message in batch.messages {
            self.node.step_from(batch.from, batch.incarnation, message);
        }
    }

    /// Drains every `Ready` and starts a sync over what they wrote (group/driver.rs). Storage
    /// errors are fatal for the node.
    pub fn process(&mut self, machine: &mut impl Machine<StorageLog>) {
        let mut network = PeerNetwork {
            peers: &self.peers,
            group: self.group,
        };
        if std::mem::take(&mut self.retry_due) && self.driver.is_stalled() {
            self.driver
                .retry_writes(&mut self.node, &mut network, machine);
        }
        self.driver.process(&mut self.node, &mut network, machine);
        self.notice_leadership();
    }

    /// For a group whose state machine's snapshot is its whole live state (group 0, the offsets
    /// partitions): once `every` entries were applied since the last snapshot, the state as
    /// applied becomes a snapshot at the applied index, written durably, and the log below it
    /// goes. A snapshot that cannot be written keeps the log (retried at the next call).
    pub fn compact_live_state_if_due<E: std::fmt::Display>(
        &mut self,
        every: u64,
        what: &str,
        state: impl FnOnce() -> Result<Bytes, E>,
    ) {
        let applied = self.node.applied_index();
        let snapshot_index = self
            .node
            .snapshot()
            .map_or(0, |snapshot| snapshot.meta.last_included_index);
        if applied < snapshot_index + every {
            return;
        }
        let data = match state() {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(group = self.group, %error, "encoding the {what} state");
                return;
            }
        };
        let snapshot = match self.node.compact(applied, data) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::debug!(group = self.group, %error, "no {what} snapshot");
                return;
            }
        };
        let storage = self.node.storage_mut();
        if let Err(error) = tokio::task::block_in_place(|| storage.write_snapshot_file(&snapshot)) {
            tracing::warn!(group = self.group, through = applied, %error, "cannot write the {what} snapshot; log kept");
            return;
        }
        match tokio::task::block_in_place(|| storage.drop_through(applied)) {
            Ok(()) => tracing::info!(
                group = self.group,
                through = applied,
                "{what} snapshot taken"
            ),
            Err(error) if error.is_retriable() => {
                tracing::warn!(group = self.group, through = applied, %error, "cannot roll to delete {what} segments")
            }
            Err(error) => fatal_storage_error(&format!("deleting {what} segments"), &error),
        }
    }

    /// Whether writes the disk refused are waiting: such a replica acknowledges nothing new.
    pub fn is_stalled(&self) -> bool {
        self.driver.is_stalled()
    }

    /// Whether a sync is running (the actor loop then also waits on [`RaftGroup::sync_finished`]).
    pub fn is_syncing(&self) -> bool {
        self.driver.is_syncing()
    }

    /// Waits for the running sync to end. Cancel-safe: the sync keeps running and a later call
    /// picks it up. Pending forever when none runs.
    pub async fn sync_finished(&mut self) -> SyncDone {
        self.node.storage_mut().sync_finished().await
    }

    /// Takes a finished sync back: the core hears what is durable, the messages that waited
    /// for it leave, and the next sync starts.
    pub fn complete_sync(&mut self, done: SyncDone, machine: &mut impl Machine<StorageLog>) {
        let mut network = PeerNetwork {
            peers: &self.peers,
            group: self.group,
        };
        self.driver
            .sync_finished(&mut self.node, done, &mut network, machine);
        self.notice_leadership();
    }

    fn notice_leadership(&mut self) {
        let is_leader = self.node.role() == Role::Leader;
        if is_leader && !self.was_leader {
            self.leader_since = self.ticks;
        }
        self.was_leader = is_leader;
        self.node.storage_mut().set_leading(is_leader);
        let stalled = self.driver.is_stalled();
        if stalled != self.stalled {
            self.stalled = stalled;
            if stalled {
                tracing::warn!(
                    group = self.group,
                    "the disk refused a write: this replica acknowledges nothing new until it has room"
                );
            } else {
                tracing::info!(group = self.group, "writes landed again");
            }
            metrics::gauge!("keel_raft_writes_stalled", "group" => self.group_label.clone())
                .set(if stalled { 1.0 } else { 0.0 });
        }
    }

    /// A leader on a node that cannot take data (below its free-space line, or with writes the
    /// disk refused) hands leadership to the most caught-up voter, so the others keep the
    /// partition writable; at most once per [`FULL_DISK_HANDOVER_EVERY_TICKS`], so a cluster
    /// whose disks are all full does not pass leadership round for nothing.
    fn hand_over_if_disk_full(&mut self) {
        if self.node.role() != Role::Leader
            || self.node.transfer_target().is_some()
            || !(self.driver.is_stalled() || self.node.storage().below_free_space_line())
            || self.ticks.saturating_sub(self.leader_since) < FULL_DISK_HANDOVER_EVERY_TICKS
            || self
                .full_disk_handover_at
                .is_some_and(|at| self.ticks.saturating_sub(at) < FULL_DISK_HANDOVER_EVERY_TICKS)
        {
            return;
        }
        self.full_disk_handover_at = Some(self.ticks);
        if self.hand_over_leadership() {
            tracing::warn!(
                group = self.group,
                "this node cannot take data: handing leadership to a replica that may"
            );
        }
    }

    /// One tick of logical time. Under `interval` fsync an idle log also gets its last writes
    /// synced here, and the group's gauges are refreshed (once per tick, not per request).
    pub fn tick(&mut self) {
        self.node.tick();
        self.ticks += 1;
        self.retry_due = true;
        self.report_member_state();
        self.hand_over_if_disk_full();
        if self.ticks % RECONCILE_EVERY_TICKS == 0 {
            self.reconcile_membership();
        }
        if self.ticks % REBALANCE_EVERY_TICKS == 0 {
            self.move_to_preferred_leader();
        }
        if let keel_storage::FsyncPolicy::Interval { .. } = self.fsync {
            let log = self.node.storage_mut().log_mut();
            if let Err(error) = tokio::task::block_in_place(|| log.sync()) {
                fatal_storage_error("syncing on a tick", &error);
            }
        }
        let group = self.group_label.clone();
        metrics::gauge!("keel_raft_term", "group" => group.clone()).set(self.node.term() as f64);
        metrics::gauge!("keel_raft_commit_index", "group" => group.clone())
            .set(self.node.commit_index() as f64);
        if self.node.role() == Role::Leader {
            let last = self.node.last_index();
            for &peer in &self.node.configuration().voters {
                if let Some(progress) = self.node.progress(peer) {
                    metrics::gauge!(
                        "keel_follower_lag_entries",
                        "group" => group.clone(),
                        "follower" => peer.to_string()
                    )
                    .set(last.saturating_sub(progress.match_index) as f64);
                }
            }
        }
    }

    /// Tells the node (and through its hellos, its peers) where it stands in this group.
    fn report_member_state(&mut self) {
        let state = member_state(&self.node);
        if self.reported != Some(state) {
            self.reported = Some(state);
            self.host.report_member_state(self.group, state);
        }
    }

    /// As leader, proposes the next step of any replacement the map asks for
    /// (group/replace.rs).
    fn reconcile_membership(&mut self) {
        if self.node.role() != Role::Leader {
            return;
        }
        let desired = self.host.desired_incarnations();
        let Some(change) = next_change(&self.node, &desired) else {
            return;
        };
        match self.node.propose_membership_change(change) {
            Ok((index, _)) => {
                tracing::info!(
                    group = self.group,
                    ?change,
                    index,
                    "membership change proposed"
                )
            }
            Err(error) => {
                tracing::debug!(group = self.group, ?change, %error, "membership change waits")
            }
        }
    }

    /// Hands leadership to the preferred replica once it is a caught-up voter under the
    /// incarnation the map holds (what Kafka's preferred-leader election does).
    fn move_to_preferred_leader(&mut self) {
        let Some(preferred) = self.preferred_leader else {
            return;
        };
        let node = &self.node;
        if node.role() != Role::Leader
            || preferred == node.id()
            || self.ticks.saturating_sub(self.leader_since) < REBALANCE_EVERY_TICKS
            || node.membership_change_pending()
            || node.transfer_target().is_some()
            || !self.host.peer_connected(preferred)
        {
            return;
        }
        let incarnation = self.host.desired_incarnations().get(&preferred).copied();
        let is_voter = incarnation.is_some_and(|inc| node.membership().is_voter(preferred, inc));
        let caught_up = node
            .progress(preferred)
            .is_some_and(|progress| progress.match_index >= node.last_index());
        if !is_voter || !caught_up {
            return;
        }
        match self.node.transfer_leadership(preferred) {
            Ok(()) => tracing::info!(
                group = self.group,
                preferred,
                "handing leadership to the preferred replica"
            ),
            Err(error) => tracing::debug!(group = self.group, %error, "no preferred-leader move"),
        }
    }

    /// Starts handing leadership to the most caught-up voter (clean shutdown, docs/OPERATIONS.md
    /// "Stopping"). Returns whether a transfer started; the caller keeps the group running until
    /// the role changes or [`RaftGroup::handover_deadline`] passes.
    pub fn hand_over_leadership(&mut self) -> bool {
        if self.node.role() != Role::Leader {
            return false;
        }
        let me = self.node.id();
        let target = self
            .node
            .configuration()
            .voters
            .iter()
            .copied()
            .filter(|&id| id != me)
            .filter_map(|id| {
                self.node
                    .progress(id)
                    .map(|progress| (progress.match_index, id))
            })
            .max()
            .map(|(_, id)| id);
        match target.map(|id| self.node.transfer_leadership(id)) {
            Some(Ok(())) => {
                tracing::info!(group = self.group, target = ?target, "handing leadership over");
                true
            }
            Some(Err(error)) => {
                tracing::debug!(group = self.group, %error, "no leadership handover");
                false
            }
            None => false,
        }
    }

    /// How long a shutdown waits for a handover: the core abandons a transfer after an
    /// election timeout, so waiting longer gains nothing.
    pub fn handover_deadline(&self, tick: std::time::Duration) -> std::time::Instant {
        std::time::Instant::now()
            + tick * (self.node.config().election_timeout_min_ticks + HANDOVER_SLACK_TICKS)
    }

    /// Makes everything appended durable (clean shutdown).
    pub fn sync_now(&mut self) {
        let mut network = PeerNetwork {
            peers: &self.peers,
            group: self.group,
        };
        self.driver.settle(&mut self.node, &mut network);
        let log = self.node.storage_mut().log_mut();
        if let Err(error) = tokio::task::block_in_place(|| log.sync_now()) {
            tracing::error!(group = self.group, %error, "final sync failed");
        }
    }
}

/// `KEEL_FAULT_RELEASE_UNSYNCED=1` (read once): every group's driver reports writes durable that
/// its last sync did not cover (group/pipeline.rs `DriverBugs`), for fault tests to catch.
#[cfg(feature = "fault-injection")]
fn fault_release_unsynced() -> bool {
    static SWITCH: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SWITCH.get_or_init(|| {
        std::env::var("KEEL_FAULT_RELEASE_UNSYNCED").is_ok_and(|value| value == "1")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::lane_of;
    use keel_raft::{AppendEntries, Entry, EntryKind, VoteRequest};

    fn append(entries: Vec<Entry>) -> Message {
        Message {
            term: 1,
            body: MessageBody::AppendEntries(AppendEntries {
                prev_log_index: 3,
                prev_log_term: 1,
                entries,
                leader_commit: 3,
            }),
        }
    }

    #[test]
    fn only_empty_appends_are_coalesced_and_they_keep_their_groups_lane() {
        assert!(is_heartbeat(&[append(Vec::new())]));
        let entry = Entry {
            index: 4,
            term: 1,
            kind: EntryKind::Data,
            payload: Bytes::from_static(b"x"),
        };
        assert!(!is_heartbeat(&[append(Vec::new()), append(vec![entry])]));
        let vote = Message {
            term: 2,
            body: MessageBody::RequestVote(VoteRequest {
                last_log_index: 1,
                last_log_term: 1,
            }),
        };
        assert!(!is_heartbeat(&[vote]));
        for lanes in [1u8, 2, 4, 16] {
            let peers = Peers::new(lanes, 7);
            for group in [0u64, 1, 7, 12345] {
                assert_eq!(
                    lane_of(peers.carrier(group), lanes),
                    lane_of(group, lanes),
                    "a group's heartbeats must ride its own lane"
                );
            }
        }
    }

    #[test]
    fn coalesced_heartbeats_round_trip() {
        let groups = vec![
            (1u64, vec![append(Vec::new())]),
            (9, vec![append(Vec::new())]),
        ];
        let envelope = Envelope {
            incarnation: 42,
            body: groups.clone(),
        };
        let bytes = postcard::to_allocvec(&envelope).unwrap();
        assert_eq!(decode_coalesced(2, &bytes), Some((42, groups)));
        assert_eq!(decode_coalesced(2, &[0xff, 0xff, 0xff]), None);
    }
}
