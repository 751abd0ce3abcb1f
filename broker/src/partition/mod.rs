//! A partition: a Raft group whose log is the partition's message log (docs/FORMAT.md
//! "Node data directory"). Entries of kind `Data` hold the leader's append time and one record
//! batch ([`entry`]), stored exactly as the producer sent it except for the base offset and
//! leader epoch the leader stamps (outside the batch CRC). Offsets are dense from 0.
//!
//! The actor ([`run`]) owns the group: it stamps and proposes produced batches (all requests
//! waiting in its inbox become one Raft batch and one fdatasync: group commit), answers them once
//! their entry is applied, serves fetches from committed entries without re-encoding, and
//! publishes the high watermark for long polls.
//!
//! Offsets: `end_offset` counts every batch in the log (committed or not, the next base offset
//! a leader gives); `high_watermark` counts the applied ones, which is all a consumer sees.

pub mod dedup;
pub mod entry;
pub mod machine;
pub mod retention;

use bytes::{Bytes, BytesMut};
use keel_wire::messages::{FetchResponse, FollowerLag, ProduceResponse};
use keel_wire::ErrorCode;
use tokio::sync::{mpsc, oneshot, watch};

use crate::group::actor::{self, Control, GroupActor, Waiters};
use crate::group::driver::Machine;
use crate::group::storage_log::{fatal_message, fatal_storage_error, StorageLog};
use crate::group::{Host, PeerBatch, RaftGroup};
use crate::limits::{
    EARLY_BATCH_WAIT, FETCH_READ_CHUNK_MIN_BYTES, FOLD_READ_BYTES, MAX_EARLY_BATCHES,
    RETENTION_CHECK_EVERY_TICKS,
};
use crate::transport::NodeId;
use dedup::{BatchIdentity, Verdict};
use entry::DataEntry;
use keel_raft::{Entry, EntryKind, Index, ProposeError, Role, Snapshot, Term};
use machine::{Applied, PartitionCommand, PartitionMachine};

/// What a partition publishes for request handlers that wait (long polls) or route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionView {
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub leader: Option<NodeId>,
    pub is_leader: bool,
}

/// Requests a partition actor serves.
pub enum PartitionInput {
    Peer(PeerBatch),
    Produce {
        /// A checked batch in a Data entry payload with its stamps still to write
        /// ([`entry::unstamped`]).
        payload: BytesMut,
        count: u32,
        reply: oneshot::Sender<Result<ProduceResponse, ErrorCode>>,
    },
    Fetch {
        offset: u64,
        max_bytes: u32,
        reply: oneshot::Sender<Result<(FetchResponse, Bytes), ErrorCode>>,
    },
    Status {
        reply: oneshot::Sender<(Option<NodeId>, Vec<FollowerLag>)>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// The handle request handlers use.
#[derive(Clone)]
pub struct PartitionHandle {
    pub inbox: mpsc::Sender<PartitionInput>,
    pub view: watch::Receiver<PartitionView>,
}

/// An idempotent batch that arrived before its predecessor: a producer with several batches in
/// flight sends each on its own stream, and streams (or retries after a leader change) may
/// overtake each other. It waits for the predecessor instead of being refused as a gap.
struct Early {
    payload: BytesMut,
    count: u32,
    identity: BatchIdentity,
    reply: oneshot::Sender<Result<ProduceResponse, ErrorCode>>,
    /// Past this, the gap is real (the predecessor failed for good): refuse the batch.
    deadline: std::time::Instant,
}

/// A partition replica: its pure state ([`PartitionMachine`]) and the requests waiting on it.
pub struct PartitionState {
    machine: PartitionMachine,
    /// Produce requests (and retries of them that arrived meanwhile) by their entry's index.
    waiters: Waiters<ProduceResponse>,
    /// Batches waiting for a predecessor (leader only; answered on any role change).
    early: Vec<Early>,
    group_label: String,
    view: watch::Sender<PartitionView>,
    host: Host,
    /// The topic, to read its retention settings.
    topic: String,
    ticks: u64,
    /// The log start this leader last proposed, until leadership changes: no second proposal
    /// while it is in flight.
    proposed_log_start: Option<Index>,
}

impl PartitionState {
    fn publish(&self, role: Role, leader: Option<NodeId>) {
        if role == Role::Leader {
            metrics::gauge!("keel_partition_high_watermark", "group" => self.group_label.clone())
                .set(self.machine.high_watermark() as f64);
        }
        self.view.send_replace(PartitionView {
            high_watermark: self.machine.high_watermark(),
            log_start_offset: self.machine.log_start_offset(),
            leader,
            is_leader: role == Role::Leader,
        });
    }

    fn not_leader(&self, leader: Option<NodeId>) -> ErrorCode {
        ErrorCode::NotLeader {
            leader_addr: leader.and_then(|id| self.host.client_address(id)),
        }
    }

    fn fail_waiters(&mut self, error: ErrorCode) {
        self.waiters.fail_all(&error);
        for early in std::mem::take(&mut self.early) {
            let _ = early.reply.send(Err(error.clone()));
        }
        self.machine.forget_proposals();
    }
}

impl Machine<StorageLog> for PartitionState {
    fn on_truncated(&mut self, log: &StorageLog, from: Index) {
        self.machine.truncated(log, from);
    }

    fn on_appended(&mut self, _log: &StorageLog, entries: &[Entry]) {
        self.machine.appended(entries);
    }

    fn apply(&mut self, entry: &Entry, _log: &StorageLog) {
        self.machine.apply(entry);
        // Another leader's entry at a proposal's index means the batch was lost with the old
        // term: the producer retries at the new leader.
        let lost = ErrorCode::NotLeader { leader_addr: None };
        let log_start_offset = self.machine.log_start_offset();
        self.waiters.answer(
            entry.index,
            entry.term,
            || produced(&entry.payload, log_start_offset),
            lost,
        );
    }

    fn snapshot(&self) -> Bytes {
        self.machine.snapshot()
    }

    fn restore(&mut self, log: &StorageLog, snapshot: &Snapshot) {
        // Only a leader running this code sends a partition snapshot; one that does not decode
        // cannot be continued from.
        self.machine = PartitionMachine::restore(log, &snapshot.data).unwrap_or_else(|| {
            fatal_message(&format!(
                "group {}: a snapshot through {} that does not decode",
                self.group_label, snapshot.meta.last_included_index
            ))
        });
        metrics::counter!("keel_partition_snapshots_installed_total", "group" => self.group_label.clone())
            .increment(1);
        tracing::info!(
            group = %self.group_label,
            through = snapshot.meta.last_included_index,
            log_start_offset = self.machine.log_start_offset(),
            "snapshot installed"
        );
    }

    fn on_role_change(&mut self, role: Role, leader: Option<NodeId>, _term: Term) {
        self.proposed_log_start = None;
        if role != Role::Leader && (!self.waiters.is_empty() || !self.early.is_empty()) {
            // Their fate is unknown (they may still commit under the next leader): the producer
            // retries, and the next leader answers a retry of one that did commit with its
            // original offsets.
            let error = self.not_leader(leader);
            self.fail_waiters(error);
        }
    }
}

/// The answer to the produce that became the Data entry `payload` (as stamped and applied).
fn produced(payload: &[u8], log_start_offset: u64) -> Result<ProduceResponse, ErrorCode> {
    let header = DataEntry::read(payload).and_then(|data| data.header());
    match header.and_then(|header| Some((header.base_offset, header.end_offset()?))) {
        Some((base_offset, end)) if end > base_offset => Ok(ProduceResponse {
            base_offset,
            last_offset: end - 1,
            log_start_offset,
        }),
        // The leader stamped and checked this batch before proposing it.
        _ => Err(ErrorCode::CorruptBatch),
    }
}

impl GroupActor for PartitionState {
    type Input = PartitionInput;

    fn classify(input: PartitionInput) -> Control<PartitionInput> {
        match input {
            PartitionInput::Peer(batch) => Control::Peer(batch),
            PartitionInput::Shutdown { done } => Control::Shutdown(done),
            other => Control::Other(other),
        }
    }

    fn handle(&mut self, group: &mut RaftGroup, input: PartitionInput) {
        handle(group, self, input);
    }

    fn on_tick(&mut self, group: &mut RaftGroup) {
        expire_early(group, self);
        self.ticks += 1;
        if self.ticks % RETENTION_CHECK_EVERY_TICKS == 0 {
            apply_retention(group, self);
        }
    }

    fn after_round(&mut self, group: &mut RaftGroup) {
        if let Some(through) = self.machine.take_compaction() {
            compact(group, self, through);
        }
        self.publish(group.node.role(), group.node.leader());
    }

    fn on_stop(&mut self) {
        self.fail_waiters(ErrorCode::Unavailable);
    }
}

/// Runs a partition group until it is shut down (group/actor.rs has the loop).
pub async fn run(
    mut group: RaftGroup,
    inbox: mpsc::Receiver<PartitionInput>,
    view: watch::Sender<PartitionView>,
    host: Host,
    topic: String,
    campaign_at_start: bool,
) {
    // Below the node's free-space line this replica takes no new data (disk.rs).
    group.node.storage_mut().guard_data(host.disk());
    // A replica with a snapshot starts from it; the log after it replays as it commits.
    let machine = match group.node.snapshot() {
        Some(snapshot) => PartitionMachine::restore(group.node.storage(), &snapshot.data)
            .unwrap_or_else(|| {
                fatal_message(&format!(
                    "group {}: the snapshot through {} does not decode",
                    group.group, snapshot.meta.last_included_index
                ))
            }),
        None => PartitionMachine::open(group.node.storage()),
    };
    let state = PartitionState {
        machine,
        waiters: Waiters::default(),
        early: Vec::new(),
        group_label: group.group.to_string(),
        view,
        host: host.clone(),
        topic,
        ticks: 0,
        proposed_log_start: None,
    };
    actor::run(group, inbox, state, host.tick(), campaign_at_start).await;
}

fn handle(group: &mut RaftGroup, state: &mut PartitionState, input: PartitionInput) {
    match input {
        PartitionInput::Produce {
            payload,
            count,
            reply,
        } => produce(group, state, payload, count, reply, true),
        PartitionInput::Fetch {
            offset,
            max_bytes,
            reply,
        } => {
            let _ = reply.send(fetch(group, state, offset, max_bytes));
        }
        PartitionInput::Status { reply } => {
            let mut lags = Vec::new();
            if group.node.role() == Role::Leader {
                let last = group.node.last_index();
                for &peer in group.node.configuration().voters.iter() {
                    if peer == group.node.id() {
                        continue;
                    }
                    if let Some(progress) = group.node.progress(peer) {
                        lags.push(FollowerLag {
                            node_id: peer,
                            lag_entries: last.saturating_sub(progress.match_index),
                        });
                    }
                }
            }
            let _ = reply.send((group.node.leader(), lags));
        }
        PartitionInput::Peer(batch) => group.step(batch),
        PartitionInput::Shutdown { done } => {
            // The loop takes shutdowns (GroupActor::classify); answering keeps the caller unstuck.
            let _ = done.send(());
        }
    }
}

fn produce(
    group: &mut RaftGroup,
    state: &mut PartitionState,
    mut payload: BytesMut,
    count: u32,
    reply: oneshot::Sender<Result<ProduceResponse, ErrorCode>>,
    may_wait: bool,
) {
    let node = &group.node;
    if node.role() != Role::Leader {
        let _ = reply.send(Err(state.not_leader(node.leader())));
        return;
    }
    // Checked before proposing, so the space under the line stays for control entries and
    // group 0, and this log never queues its own control entries behind data it cannot write.
    // Retriable: retention or an operator frees space, or leadership moves to a replica with
    // room (group/mod.rs).
    if !state.host.disk().accepts_data() || group.is_stalled() {
        let _ = reply.send(Err(ErrorCode::DiskFull));
        return;
    }
    let Some(identity) = BatchIdentity::of(entry::batch_of(&payload)) else {
        let _ = reply.send(Err(ErrorCode::CorruptBatch));
        return;
    };
    if identity.stamp.is_idempotent() {
        // Entries of earlier terms may hold this producer's batches that the table has not
        // seen; judge retries only once they are applied (the no-op of this term is).
        if node.term_at(node.applied_index()) != Some(node.term()) {
            let _ = reply.send(Err(ErrorCode::Unavailable));
            return;
        }
        match state.machine.judge(&identity) {
            Verdict::Append => {}
            Verdict::Duplicate {
                base_offset,
                last_offset,
            } => {
                tracing::debug!(
                    group = group.group,
                    base_offset,
                    "duplicate batch answered with its offsets"
                );
                let _ = reply.send(Ok(ProduceResponse {
                    base_offset,
                    last_offset,
                    log_start_offset: state.machine.log_start_offset(),
                }));
                release_successor(group, state, &identity);
                return;
            }
            Verdict::InFlight { index } => {
                if let Err(reply) = state.waiters.join(index, reply) {
                    let _ = reply.send(Err(ErrorCode::Unavailable));
                }
                release_successor(group, state, &identity);
                return;
            }
            // Ahead of what the table expects (a producer it knows), or not at the start of a
            // producer it has not seen yet: a predecessor may still be on its way.
            Verdict::Reject(ref error)
                if may_wait
                    && is_ahead(error, &identity)
                    && state.early.len() < MAX_EARLY_BATCHES =>
            {
                state.early.push(Early {
                    payload,
                    count,
                    identity,
                    reply,
                    deadline: std::time::Instant::now() + EARLY_BATCH_WAIT,
                });
                return;
            }
            Verdict::Reject(error) => {
                tracing::warn!(group = group.group, producer_id = identity.stamp.producer_id, %error, "idempotent batch refused");
                let _ = reply.send(Err(error));
                return;
            }
        }
    }
    let base_offset = state.machine.end_offset();
    let append_time_ms = state.machine.next_append_time_ms(wall_clock_ms());
    if let Err(error) = entry::stamp(&mut payload, append_time_ms, base_offset, node.term()) {
        tracing::warn!(group = group.group, base_offset, %error, "a batch the leader cannot stamp");
        let _ = reply.send(Err(error.error_code()));
        return;
    }
    match group.node.propose(payload.freeze()) {
        Ok((index, term)) => {
            state
                .machine
                .proposed(index, identity, base_offset, append_time_ms);
            #[cfg(feature = "fault-injection")]
            if fault_ack_before_commit() {
                // Planted bug: the answer leaves before the entry is committed, so a leader
                // change can drop an acknowledged batch (keel-chaos must see it).
                let _ = reply.send(Ok(ProduceResponse {
                    base_offset,
                    last_offset: base_offset + u64::from(count) - 1,
                    log_start_offset: 0,
                }));
                return;
            }
            state.waiters.insert(index, term, reply);
            if identity.stamp.is_idempotent() {
                release_successor(group, state, &identity);
            }
        }
        Err(ProposeError::NotLeader { leader_hint }) => {
            let _ = reply.send(Err(state.not_leader(leader_hint)));
        }
        Err(ProposeError::Overloaded { .. }) => {
            let _ = reply.send(Err(ErrorCode::Overloaded));
        }
        Err(error) => {
            tracing::warn!(group = group.group, %error, "produce refused");
            let _ = reply.send(Err(ErrorCode::MessageTooLarge));
        }
    }
}

/// Whether a refused batch could be waiting for a predecessor: it starts past the sequence the
/// producer should continue at (0 for a producer the partition has not seen yet), counting
/// across the wrap from `i32::MAX` to 0: less than half the sequence space ahead.
fn is_ahead(refusal: &ErrorCode, identity: &BatchIdentity) -> bool {
    let expected = match *refusal {
        ErrorCode::OutOfOrderSequence { expected_sequence } => expected_sequence,
        ErrorCode::UnknownProducerId => 0,
        _ => return false,
    };
    let space = i32::MAX as u64 + 1;
    let distance = (u64::from(identity.stamp.base_sequence) + space - u64::from(expected)) % space;
    distance > 0 && distance < space / 2
}

/// Proposes the early batch that continues right after `identity`, if one is waiting (and so on
/// down the chain, through `produce`).
fn release_successor(group: &mut RaftGroup, state: &mut PartitionState, identity: &BatchIdentity) {
    let next_sequence =
        keel_wire::record_batch::next_sequence(identity.stamp.base_sequence, identity.count);
    let successor = state.early.iter().position(|early| {
        early.identity.stamp.producer_id == identity.stamp.producer_id
            && early.identity.stamp.producer_epoch == identity.stamp.producer_epoch
            && early.identity.stamp.base_sequence == next_sequence
    });
    if let Some(position) = successor {
        let early = state.early.swap_remove(position);
        produce(group, state, early.payload, early.count, early.reply, true);
    }
}

/// Early batches whose predecessor did not come in time are judged again, without waiting:
/// the gap is refused (the producer starts over under a new producer id).
fn expire_early(group: &mut RaftGroup, state: &mut PartitionState) {
    if state.early.is_empty() {
        return;
    }
    let now = std::time::Instant::now();
    let (expired, waiting): (Vec<Early>, Vec<Early>) = std::mem::take(&mut state.early)
        .into_iter()
        .partition(|early| early.deadline <= now);
    state.early = waiting;
    for early in expired {
        produce(group, state, early.payload, early.count, early.reply, false);
    }
}

/// The leader's clock for append times, in ms since the Unix epoch. A clock before 1970 reads as
/// 0; the machine keeps append times from going backwards anyway.
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// `KEEL_FAULT_ACK_BEFORE_COMMIT=1` (read once; docs/ARCHITECTURE.md "Testing"): the leader
/// acknowledges a produce as soon as it has appended it, before commit. Logged when on, so a
/// harness can tell that the binary it runs honours the switch.
#[cfg(feature = "fault-injection")]
fn fault_ack_before_commit() -> bool {
    static SWITCH: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SWITCH.get_or_init(|| {
        let on = std::env::var("KEEL_FAULT_ACK_BEFORE_COMMIT").is_ok_and(|value| value == "1");
        if on {
            tracing::warn!("fault switch KEEL_FAULT_ACK_BEFORE_COMMIT on: acknowledging produces before commit");
        }
        on
    })
}

/// Once a second: every replica rolls an active segment older than `segment.ms`; the leader
/// picks a new log start by the topic's retention (retention.rs) and proposes it.
fn apply_retention(group: &mut RaftGroup, state: &mut PartitionState) {
    publish_log_gauges(group, state);
    persist_compaction(group, state);
    let Some(config) = state.host.topic_config(&state.topic) else {
        return; // the topic is being deleted
    };
    let now_ms = wall_clock_ms();
    let commit_index = group.node.commit_index();
    let log = group.node.storage().log();
    let spans = log.segment_spans();
    if let Some(active) = spans.last() {
        let oldest = || first_append_time_ms(log, active, commit_index);
        if config.segment_ms.is_some()
            && retention::should_roll(active, oldest(), &config, now_ms)
            && !roll(group)
        {
            return;
        }
    }
    let node = &group.node;
    if node.role() != Role::Leader || node.term_at(node.applied_index()) != Some(node.term()) {
        return;
    }
    let log = node.storage().log();
    let spans = log.segment_spans();
    let decision = retention::pick_log_start(
        &spans,
        |span| newest_append_time_ms(log, span),
        node.applied_index(),
        state.machine.log_start_index(),
        &config,
        now_ms,
    );
    let Some(decision) = decision else { return };
    if state
        .proposed_log_start
        .is_some_and(|proposed| proposed >= decision.through)
    {
        return; // in flight
    }
    if decision.roll_active && !roll(group) {
        return;
    }
    let command = PartitionCommand::SetLogStart {
        through: decision.through,
    };
    match group.node.propose_meta(command.encode()) {
        Ok(_) => {
            tracing::debug!(
                group = group.group,
                through = decision.through,
                "new log start proposed"
            );
            state.proposed_log_start = Some(decision.through);
        }
        Err(error) => tracing::debug!(group = group.group, %error, "log start not proposed"),
    }
}

/// This replica's log as an operator watches it (docs/OPERATIONS.md "Metrics"), once a second.
fn publish_log_gauges(group: &RaftGroup, state: &PartitionState) {
    let log = group.node.storage().log();
    let label = state.group_label.clone();
    metrics::gauge!("keel_partition_log_start_offset", "group" => label.clone())
        .set(state.machine.log_start_offset() as f64);
    metrics::gauge!("keel_partition_segments", "group" => label.clone())
        .set(log.segment_spans().len() as f64);
    metrics::gauge!("keel_partition_log_bytes", "group" => label).set(log.size_bytes() as f64);
}

/// Rolls the active segment; false (logged) if the disk has no room for a new one.
fn roll(group: &mut RaftGroup) -> bool {
    let log = group.node.storage_mut().log_mut();
    match tokio::task::block_in_place(|| log.roll()) {
        Ok(()) => true,
        Err(error) if error.is_retriable() => {
            tracing::warn!(group = group.group, %error, "cannot roll the active segment");
            false
        }
        Err(error) => fatal_storage_error("rolling a segment", &error),
    }
}

/// One entry of the log; committed entries are read in place, the rest copied (a zero-copy read
/// would stop the log from ever truncating it).
fn read_entry(
    log: &keel_storage::Log,
    index: Index,
    commit_index: Index,
) -> Option<keel_storage::StoredEntry> {
    let read = if index <= commit_index {
        log.read(index, index + 1, u64::MAX)
    } else {
        log.read_copied(index, index + 1, u64::MAX)
    };
    read.unwrap_or_else(|error| fatal_storage_error("reading for retention", &error))
        .pop()
}

/// Append time of the first Data entry of `span` (within its first few entries: a segment
/// opens with data, or a no-op and then data).
fn first_append_time_ms(
    log: &keel_storage::Log,
    span: &keel_storage::SegmentSpan,
    commit_index: Index,
) -> Option<i64> {
    (span.base_index..=span.last_index.min(span.base_index + 16))
        .filter_map(|index| read_entry(log, index, commit_index))
        .find(|entry| entry.kind == EntryKind::Data.as_u8())
        .and_then(|entry| DataEntry::read(&entry.payload).map(|data| data.append_time_ms))
}

/// Append time of the last Data entry of `span` (committed: retention judges no other): the
/// newest, since append times never decrease along the log.
fn newest_append_time_ms(log: &keel_storage::Log, span: &keel_storage::SegmentSpan) -> Option<i64> {
    (span.base_index..=span.last_index)
        .rev()
        .filter_map(|index| read_entry(log, index, span.last_index))
        .find(|entry| entry.kind == EntryKind::Data.as_u8())
        .and_then(|entry| DataEntry::read(&entry.payload).map(|data| data.append_time_ms))
}

/// An applied `SetLogStart` asked this replica to compact through `through`: the snapshot there
/// is the previous one with the entries up to `through` folded in (read from the log before they
/// go), then the whole segments it covers are deleted ([`persist_compaction`]).
///
/// When this replica's segment holding `through` holds nothing but commands and no-ops after
/// it (a quiet partition: the `SetLogStart` itself, a no-op), the snapshot goes to that
/// segment's end instead, so the segment can go too: the log start offset is the same (no batch
/// lies between), and without it a follower, whose segments end elsewhere than the leader's,
/// would keep expired data for as long as the partition stays quiet.
fn compact(group: &mut RaftGroup, state: &mut PartitionState, through: Index) {
    let previous = core_snapshot(group).unwrap_or_default();
    if previous.applied_index < through {
        let through = through_segment_end(
            group.node.storage().log(),
            through,
            group.node.applied_index(),
        );
        let storage = group.node.storage();
        let folded = tokio::task::block_in_place(|| fold_log(storage, previous, through));
        if let Err(error) = group.node.compact(through, folded.encode()) {
            // An install in progress: its snapshot replaces the state instead.
            tracing::debug!(group = group.group, through, %error, "no compaction");
        }
    }
    persist_compaction(group, state);
}

/// The core's latest snapshot (taken or installed), decoded.
fn core_snapshot(group: &RaftGroup) -> Option<Applied> {
    let snapshot = group.node.snapshot()?;
    let applied = Applied::decode(&snapshot.data).unwrap_or_else(|| {
        fatal_message(&format!(
            "group {}: the snapshot through {} does not decode",
            group.group, snapshot.meta.last_included_index
        ))
    });
    Some(applied)
}

/// `through`, or the last index of this replica's segment holding it when everything after
/// `through` there is applied and is no Data entry.
fn through_segment_end(log: &keel_storage::Log, through: Index, applied_index: Index) -> Index {
    let Some(span) = log
        .segment_spans()
        .into_iter()
        .find(|span| span.base_index <= through && through <= span.last_index)
    else {
        return through;
    };
    if span.last_index == through || span.last_index > applied_index {
        return through;
    }
    let only_commands = log
        .read(through + 1, span.last_index + 1, u64::MAX)
        .unwrap_or_else(|error| fatal_storage_error("reading for retention", &error))
        .iter()
        .all(|entry| entry.kind != EntryKind::Data.as_u8());
    if only_commands {
        span.last_index
    } else {
        through
    }
}

/// Makes the core's latest snapshot this replica's log start, if it is not yet: writes it
/// durably, deletes the whole segments it covers, and only then moves the log start. A failure
/// to write it (a full disk) keeps every segment and the old log start, and is retried once a
/// second (`apply_retention`); so the log start a replica reports is always one a restart
/// finds on disk, and never moves backwards.
fn persist_compaction(group: &mut RaftGroup, state: &mut PartitionState) {
    let Some(snapshot) = group.node.snapshot().cloned() else {
        return;
    };
    let through = snapshot.meta.last_included_index;
    if through <= state.machine.log_start_index() {
        return; // persisted already, or installed (the restore moved the log start)
    }
    let Some(applied) = Applied::decode(&snapshot.data) else {
        fatal_message(&format!(
            "group {}: the snapshot through {through} does not decode",
            group.group
        ));
    };
    let storage = group.node.storage_mut();
    let written = tokio::task::block_in_place(|| storage.write_snapshot_file(&snapshot));
    if let Err(error) = written {
        tracing::warn!(group = group.group, through, %error, "cannot write a snapshot; segments kept, retried");
        return;
    }
    let segments_before = storage.log().segment_spans().len();
    match tokio::task::block_in_place(|| storage.drop_through(through)) {
        Ok(()) => {}
        Err(error) if error.is_retriable() => {
            tracing::warn!(group = group.group, through, %error, "cannot roll to delete segments")
        }
        Err(error) => fatal_storage_error("deleting segments", &error),
    }
    let deleted = segments_before.saturating_sub(storage.log().segment_spans().len());
    state.machine.compacted(through, applied.log_start_offset);
    metrics::counter!("keel_partition_retention_deleted_segments_total", "group" => state.group_label.clone())
        .increment(deleted as u64);
    tracing::debug!(
        group = group.group,
        through,
        log_start_offset = applied.log_start_offset,
        deleted,
        "log compacted"
    );
}

/// `previous` with the log's entries after it, up to `through`, folded in. They are committed,
/// so the log hands them out in place.
fn fold_log(log: &StorageLog, previous: Applied, through: Index) -> Applied {
    previous
        .fold_log(log, through, FOLD_READ_BYTES)
        .unwrap_or_else(|missing| fatal_message(&missing.to_string()))
}

/// Committed batches from the one holding `offset`, up to `max_bytes` (the first batch whole).
fn fetch(
    group: &RaftGroup,
    state: &PartitionState,
    offset: u64,
    max_bytes: u32,
) -> Result<(FetchResponse, Bytes), ErrorCode> {
    let node = &group.node;
    if node.role() != Role::Leader {
        return Err(state.not_leader(node.leader()));
    }
    if node.term_at(node.applied_index()) != Some(node.term()) {
        // A new leader's high watermark is behind until its no-op applies: answering now would
        // show a consumer an end of log older than what was already acknowledged.
        return Err(ErrorCode::Unavailable);
    }
    let header = FetchResponse {
        high_watermark: state.machine.high_watermark(),
        log_start_offset: state.machine.log_start_offset(),
    };
    if offset < header.log_start_offset {
        // Deleted by retention (or never there): the consumer restarts from the log start.
        return Err(ErrorCode::OffsetOutOfRange {
            log_start_offset: header.log_start_offset,
            high_watermark: header.high_watermark,
        });
    }
    if offset >= state.machine.high_watermark() {
        return Ok((header, Bytes::new()));
    }
    let log = group.node.storage().log();
    let end = state.machine.applied_index() + 1;
    let mut index = log
        .find_offset(offset)
        .unwrap_or_else(|| log.first_index())
        .max(log.first_index());
    let mut payload = BytesMut::new();
    let chunk_bytes = u64::from(max_bytes).max(FETCH_READ_CHUNK_MIN_BYTES);
    'scan: while index < end {
        let entries = log
            .read(index, end, chunk_bytes)
            .unwrap_or_else(|error| fatal_storage_error("serving a fetch", &error));
        for entry in &entries {
            index = entry.index + 1;
            if entry.kind != EntryKind::Data.as_u8() {
                continue;
            }
            let Some(data) = DataEntry::read(&entry.payload) else {
                continue;
            };
            match data.header().and_then(|header| header.end_offset()) {
                Some(batch_end) if batch_end <= offset => continue,
                Some(_) => {}
                None => continue,
            }
            if !payload.is_empty() && payload.len() + data.batch.len() > max_bytes as usize {
                break 'scan;
            }
            payload.extend_from_slice(data.batch);
            if payload.len() >= max_bytes as usize {
                break 'scan;
            }
        }
    }
    Ok((header, payload.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_wire::ProducerStamp;

    fn identity(base_sequence: u32) -> BatchIdentity {
        BatchIdentity {
            stamp: ProducerStamp {
                producer_id: 1,
                producer_epoch: 0,
                base_sequence,
            },
            count: 1,
        }
    }

    #[test]
    fn a_batch_is_ahead_across_the_sequence_wrap_too() {
        let gap = |expected_sequence| ErrorCode::OutOfOrderSequence { expected_sequence };
        assert!(is_ahead(&gap(5), &identity(6)));
        assert!(!is_ahead(&gap(5), &identity(5)));
        assert!(!is_ahead(&gap(5), &identity(4)), "behind: a stale retry");
        let max = i32::MAX as u32;
        assert!(is_ahead(&gap(max), &identity(0)), "0 follows i32::MAX");
        assert!(is_ahead(&gap(max - 1), &identity(2)));
        assert!(!is_ahead(&gap(0), &identity(max)), "i32::MAX is before 0");
        assert!(is_ahead(&ErrorCode::UnknownProducerId, &identity(3)));
        assert!(!is_ahead(&ErrorCode::UnknownProducerId, &identity(0)));
        assert!(!is_ahead(&ErrorCode::ProducerFenced, &identity(3)));
    }
}
