//! The group driver as a step function: it takes what the Raft core has ready and turns it into
//! calls on a narrow disk interface ([`DriverLog`]), a network ([`Network`]) and the group's
//! state machine ([`Machine`]), in the order the core's contract demands (docs/ARCHITECTURE.md
//! "The driver contract"). It owns no thread, clock, socket or file: the node runs it over the
//! segment log on tokio (group/mod.rs, group/storage_log.rs), and the deterministic simulator
//! runs the same code over its simulated disk and network (tests/sim), with the start and the end
//! of every fdatasync as separate events.
//!
//! Per `Ready`: hard state (durable before anything of the Ready leaves), messages that may go at
//! once, truncation (after settling every sync), a snapshot from the leader, the append, the
//! messages that need durability (released by group/pipeline.rs once a sync covers them), reads,
//! then the committed entries applied in order.
//!
//! A full disk is not fatal (docs/OPERATIONS.md "A full disk"): the log may refuse an append
//! (nothing written) or a hard state. Refused entries wait here, in order, with every later
//! entry queued behind them and every message that claims their durability held, until
//! [`GroupDriver::retry_writes`] lands them; the core's own view is untouched, so this node
//! simply does not acknowledge what it has not stored. Committed entries it has not stored (the
//! others committed them) wait to be applied too: a replica applies only what its log holds, so
//! its state machine never runs ahead of the log a compaction folds or a restart replays. A
//! refused hard state silences the group (no message leaves) until it is stored: a node never
//! grants a vote it could forget.

use bytes::Bytes;
use keel_raft::{
    Entry, HardState, Index, NodeId, PeerMessages, RaftLog, RaftNode, ReadState, Role, Snapshot,
    Term,
};

#[cfg(feature = "fault-injection")]
pub use crate::group::pipeline::DriverBugs;
use crate::group::pipeline::{Released, SyncPipeline};

/// The disk had no room for a write: nothing of it was written and the log is unchanged, so the
/// same write may be offered again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the disk has no room for the write")]
pub struct WriteRefused;

/// The disk under one group, as the driver uses it. Everything but the sync is synchronous: a
/// call returns when its write is in the page cache (the hard state and a snapshot: durable).
/// A full disk refuses an append or a hard state ([`WriteRefused`]); other failures are the
/// implementation's to handle, and the product's end the process (a failed write or fsync leaves
/// the page cache in an unknown state).
pub trait DriverLog: RaftLog {
    /// What the end of a sync hands back to [`DriverLog::finish_sync`].
    type SyncDone;

    /// The commit index moved: entries at or below it can never be truncated.
    fn note_committed(&mut self, _index: Index) {}
    /// Term and vote, durable when it returns Ok.
    fn store_hard_state(&mut self, hard_state: HardState) -> Result<(), WriteRefused>;
    /// Cuts the log from `from` on; never called while a sync runs.
    fn truncate_suffix(&mut self, from: Index);
    /// Appends entries that continue the log, or none of them.
    fn append(&mut self, entries: &[Entry]) -> Result<(), WriteRefused>;
    /// Starts one sync over everything written so far, or returns false when the fsync policy
    /// counts the writes durable without one. Never called while a sync runs.
    fn begin_sync(&mut self) -> bool;
    /// The sync begun last has ended: what it covered is durable.
    fn finish_sync(&mut self, done: Self::SyncDone);
    /// Waits for the sync in flight (if any) and, when `unsynced` (writes no sync covers), syncs
    /// them as the fsync policy says, here and now.
    fn settle(&mut self, unsynced: bool);
    /// The core no longer abstains: its marker can go.
    fn clear_abstain(&mut self);
    /// Persists a snapshot from the leader and drops the entries it covers; durable on return.
    fn write_snapshot(&mut self, snapshot: &Snapshot);
}

/// Where a group's messages go.
pub trait Network {
    fn send(&mut self, batches: Vec<PeerMessages>);
}

/// A group's state machine, told about every change to the log the driver makes.
pub trait Machine<L> {
    /// Entries from `from` on were cut from the log (a follower resolving a conflict).
    fn on_truncated(&mut self, _log: &L, _from: Index) {}
    /// Entries were appended (not yet durable).
    fn on_appended(&mut self, _log: &L, _entries: &[Entry]) {}
    /// A committed entry, in index order, each exactly once per process lifetime.
    fn apply(&mut self, entry: &Entry, log: &L);
    /// The node's role or the group's leader changed.
    fn on_role_change(&mut self, _role: Role, _leader: Option<NodeId>, _term: Term) {}
    /// The state as of the last entry applied: what [`Machine::restore`] takes back. Only a
    /// group whose snapshot is its whole state at the applied index may compact with it (the
    /// partitions fold their snapshot at the log start instead, partition/machine.rs).
    fn snapshot(&self) -> Bytes;
    /// A snapshot from the leader replaces the state (`log` already holds it); the entries
    /// after it apply next.
    fn restore(&mut self, log: &L, snapshot: &Snapshot);
    /// Linearizable reads the core released (or failed, with no index).
    fn on_read_states(&mut self, _reads: &[ReadState]) {}
}

/// The driver's own state for one group: what is written, syncing and durable, and what it last
/// told the state machine about roles.
#[derive(Debug)]
pub struct GroupDriver {
    pipeline: SyncPipeline,
    last_role: (Role, Option<NodeId>, Term),
    abstaining: bool,
    /// Entries the log refused, in order, then every entry after them: the next to write.
    unwritten: Vec<Entry>,
    /// Messages that need the durability of `unwritten` entries: they join the pipeline once
    /// those are written.
    held: Vec<PeerMessages>,
    /// Committed entries at or after the first unwritten one: applied once written.
    unapplied: Vec<Entry>,
    /// A hard state the disk refused: nothing leaves until it is stored.
    unstored_hard_state: Option<HardState>,
}

impl GroupDriver {
    pub fn new<L: RaftLog>(node: &RaftNode<L>) -> GroupDriver {
        GroupDriver {
            pipeline: SyncPipeline::default(),
            last_role: (node.role(), node.leader(), node.term()),
            abstaining: node.abstain_until_index().is_some(),
            unwritten: Vec::new(),
            held: Vec::new(),
            unapplied: Vec::new(),
            unstored_hard_state: None,
        }
    }

    /// A planted bug (fault-injection builds only): acknowledging what the disk refused.
    fn acknowledges_refused_writes(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        return self.pipeline.bugs().acknowledge_refused_writes;
        #[cfg(not(feature = "fault-injection"))]
        false
    }

    /// Whether a write the disk refused is waiting ([`GroupDriver::retry_writes`]).
    pub fn is_stalled(&self) -> bool {
        !self.unwritten.is_empty() || self.unstored_hard_state.is_some()
    }

    /// Offers the disk what it refused before (a full disk may have been freed); the caller
    /// runs [`GroupDriver::process`] after it. Cheap when nothing waits.
    pub fn retry_writes<L: DriverLog>(
        &mut self,
        node: &mut RaftNode<L>,
        network: &mut impl Network,
        machine: &mut impl Machine<L>,
    ) {
        self.store_hard_state(node);
        if self.unwritten.is_empty() || node.storage_mut().append(&self.unwritten).is_err() {
            return;
        }
        let written = std::mem::take(&mut self.unwritten);
        machine.on_appended(node.storage(), &written);
        let last = written.last().expect("non-empty");
        self.pipeline.written((last.index, last.term));
        let held = std::mem::take(&mut self.held);
        let may_go = self.pipeline.after_persist(held);
        self.send(network, may_go);
        let unapplied = std::mem::take(&mut self.unapplied);
        self.apply(node, machine, unapplied);
    }

    /// Applies committed entries the log holds, in order; those past the first unwritten entry
    /// wait (behind any already waiting) until [`GroupDriver::retry_writes`] writes them.
    fn apply<L: DriverLog>(
        &mut self,
        node: &mut RaftNode<L>,
        machine: &mut impl Machine<L>,
        committed: Vec<Entry>,
    ) {
        let first_unwritten = self.unwritten.first().map(|entry| entry.index);
        let held_from = if !self.unapplied.is_empty() {
            0
        } else {
            first_unwritten.map_or(committed.len(), |first| {
                committed.partition_point(|entry| entry.index < first)
            })
        };
        let mut committed = committed;
        let waiting = committed.split_off(held_from);
        self.unapplied.extend(waiting);
        if let Some(last) = committed.last().map(|entry| entry.index) {
            for entry in &committed {
                machine.apply(entry, node.storage());
            }
            node.on_applied(last);
        }
    }

    fn store_hard_state<L: DriverLog>(&mut self, node: &mut RaftNode<L>) {
        if let Some(hard_state) = self.unstored_hard_state {
            if node.storage_mut().store_hard_state(hard_state).is_ok() {
                self.unstored_hard_state = None;
            }
        }
    }

    /// Sends unless a hard state waits to be stored: a message may rest on a term or vote that a
    /// crash would forget, and a lost message is always safe.
    fn send(&self, network: &mut impl Network, batches: Vec<PeerMessages>) {
        if self.unstored_hard_state.is_none() {
            network.send(batches);
        } else if !batches.is_empty() {
            tracing::debug!("messages dropped: the hard state is not stored");
        }
    }

    /// Tells the core what became durable and sends what waited for it.
    fn release<L: RaftLog>(
        &self,
        node: &mut RaftNode<L>,
        network: &mut impl Network,
        released: Released,
    ) {
        for (index, term) in released.persisted {
            // Ignored by the core if that entry has been replaced since.
            node.on_persisted(index, term);
        }
        self.send(network, released.messages);
    }

    /// Plants bugs in this driver's sync pipeline (tests and fault-injection builds only).
    #[cfg(feature = "fault-injection")]
    pub fn plant(&mut self, bugs: DriverBugs) {
        self.pipeline.plant(bugs);
    }

    /// Drains every `Ready` and starts a sync over what they wrote.
    pub fn process<L: DriverLog>(
        &mut self,
        node: &mut RaftNode<L>,
        network: &mut impl Network,
        machine: &mut impl Machine<L>,
    ) {
        loop {
            while node.has_ready() {
                self.process_ready(node, network, machine);
            }
            // A policy that does not sync now counts the writes as persisted at once, which may
            // make more work (a commit, acknowledgements): go round again.
            if !self.start_sync(node, network) {
                break;
            }
        }
        self.notice_role_change(node, machine);
        if self.abstaining && node.abstain_until_index().is_none() {
            self.abstaining = false;
            node.storage_mut().clear_abstain();
        }
    }

    fn process_ready<L: DriverLog>(
        &mut self,
        node: &mut RaftNode<L>,
        network: &mut impl Network,
        machine: &mut impl Machine<L>,
    ) {
        let commit_index = node.commit_index();
        node.storage_mut().note_committed(commit_index);
        let ready = node.ready();
        let last_entry = ready.last_entry();
        if let Some(hard_state) = ready.hard_state {
            self.unstored_hard_state = Some(hard_state);
            self.store_hard_state(node);
        }
        self.send(network, ready.messages);
        if let Some(from) = ready.truncate_from {
            // Rewriting the log under a sync in flight would leave it proving nothing; and
            // what waits for durability keeps its order. Truncations are rare (a new leader
            // overruling this follower): settle everything first.
            self.settle(node, network);
            // Held messages may claim entries being cut: drop them (the leader asks again).
            self.unwritten.retain(|entry| entry.index < from);
            self.held.clear();
            node.storage_mut().truncate_suffix(from);
            // The machine has heard of written entries only (the rest it hears of when they
            // land), so for it the cut starts at most just after the log's last entry.
            let stored_end = node.storage().last_index() + 1;
            machine.on_truncated(node.storage(), from.min(stored_end));
        }
        if let Some(snapshot) = &ready.snapshot {
            self.settle(node, network);
            // The core keeps the entries after the snapshot when its log agreed at the
            // snapshot's last entry: those still waiting to be written or applied keep waiting
            // (the log, which may not hold that entry, starts right after it). Everything else
            // the snapshot covers or the core dropped.
            let through = snapshot.meta.last_included_index;
            let kept = |entry: &Entry| {
                entry.index > through && node.term_at(entry.index) == Some(entry.term)
            };
            self.unwritten.retain(kept);
            self.unapplied.retain(kept);
            self.held.clear();
            node.storage_mut().write_snapshot(snapshot);
            machine.restore(node.storage(), snapshot);
            node.on_snapshot_done(snapshot.meta.last_included_index);
        }
        let written = if ready.entries.is_empty() {
            self.unwritten.is_empty()
        } else if self.unwritten.is_empty() && node.storage_mut().append(&ready.entries).is_ok() {
            machine.on_appended(node.storage(), &ready.entries);
            true
        } else {
            self.unwritten.extend(ready.entries);
            false
        };
        if written {
            if let Some(last) = last_entry {
                self.pipeline.written(last);
            }
            let may_go = self.pipeline.after_persist(ready.messages_after_persist);
            self.send(network, may_go);
        } else if self.acknowledges_refused_writes() {
            self.send(network, ready.messages_after_persist);
        } else {
            self.held.extend(ready.messages_after_persist);
        }
        if !ready.read_states.is_empty() {
            machine.on_read_states(&ready.read_states);
        }
        self.apply(node, machine, ready.committed_entries);
        self.notice_role_change(node, machine);
    }

    /// Starts a sync over what is written and unsynced, unless one is running. Returns true
    /// when the fsync policy asked for none, so the writes were reported persisted at once.
    fn start_sync<L: DriverLog>(
        &mut self,
        node: &mut RaftNode<L>,
        network: &mut impl Network,
    ) -> bool {
        if self.pipeline.is_syncing() || !self.pipeline.has_unsynced() {
            return false;
        }
        if node.storage_mut().begin_sync() {
            let started = self.pipeline.start();
            debug_assert!(started.is_some(), "unsynced writes and no sync running");
            false
        } else {
            let released = self.pipeline.durable_without_sync();
            self.release(node, network, released);
            true
        }
    }

    /// Whether a sync is running: its end must come back through [`GroupDriver::sync_finished`].
    pub fn is_syncing(&self) -> bool {
        self.pipeline.is_syncing()
    }

    /// The sync in flight ended: the core hears what is durable, the messages that waited for
    /// it leave, and the next sync starts.
    pub fn sync_finished<L: DriverLog>(
        &mut self,
        node: &mut RaftNode<L>,
        done: L::SyncDone,
        network: &mut impl Network,
        machine: &mut impl Machine<L>,
    ) {
        node.storage_mut().finish_sync(done);
        let released = self.pipeline.finished();
        self.release(node, network, released);
        self.process(node, network, machine);
    }

    /// Finishes the sync in flight and has the log sync every other write as its policy says,
    /// here and now, with every waiting message sent: before a truncation or a snapshot, and at
    /// shutdown.
    pub fn settle<L: DriverLog>(&mut self, node: &mut RaftNode<L>, network: &mut impl Network) {
        node.storage_mut().settle(self.pipeline.has_unsynced());
        let released = self.pipeline.settled();
        self.release(node, network, released);
    }

    fn notice_role_change<L: RaftLog>(
        &mut self,
        node: &RaftNode<L>,
        machine: &mut impl Machine<L>,
    ) {
        let now = (node.role(), node.leader(), node.term());
        if now != self.last_role {
            self.last_role = now;
            machine.on_role_change(now.0, now.1, now.2);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The driver on a disk that fills: what a replica sends while its writes are refused.

    use super::*;
    use keel_raft::{
        AppendEntries, AppendResult, Config, Configuration, EntryKind, MemoryLog, Message,
        MessageBody, RecoveredState, VoteRequest,
    };

    /// A log in memory whose disk can be full: then it refuses appends and hard states, and
    /// writes nothing.
    #[derive(Default)]
    struct FillableLog {
        log: MemoryLog,
        hard_state: HardState,
        full: bool,
    }

    impl RaftLog for FillableLog {
        fn first_index(&self) -> Index {
            self.log.first_index()
        }
        fn last_index(&self) -> Index {
            self.log.last_index()
        }
        fn term(&self, index: Index) -> Option<Term> {
            self.log.term(index)
        }
        fn entries(&self, from: Index, to_exclusive: Index, max_bytes: u64) -> Vec<Entry> {
            self.log.entries(from, to_exclusive, max_bytes)
        }
    }

    impl DriverLog for FillableLog {
        type SyncDone = ();
        fn store_hard_state(&mut self, hard_state: HardState) -> Result<(), WriteRefused> {
            if self.full {
                return Err(WriteRefused);
            }
            self.hard_state = hard_state;
            Ok(())
        }
        fn truncate_suffix(&mut self, from: Index) {
            if from <= self.log.last_index() {
                self.log.truncate_suffix(from);
            }
        }
        fn append(&mut self, entries: &[Entry]) -> Result<(), WriteRefused> {
            if self.full {
                return Err(WriteRefused);
            }
            self.log.append(entries);
            Ok(())
        }
        /// Writes are durable at once (no sync to wait for).
        fn begin_sync(&mut self) -> bool {
            false
        }
        fn finish_sync(&mut self, (): ()) {}
        fn settle(&mut self, _unsynced: bool) {}
        fn clear_abstain(&mut self) {}
        fn write_snapshot(&mut self, snapshot: &Snapshot) {
            self.log.compact(snapshot.meta.last_included_index);
        }
    }

    #[derive(Default)]
    struct Sent(Vec<PeerMessages>);

    impl Network for Sent {
        fn send(&mut self, batches: Vec<PeerMessages>) {
            self.0.extend(batches);
        }
    }

    impl Sent {
        fn bodies(&mut self) -> Vec<MessageBody> {
            std::mem::take(&mut self.0)
                .into_iter()
                .flat_map(|batch| batch.messages)
                .map(|message| message.body)
                .collect()
        }
    }

    #[derive(Default)]
    struct Applied(Vec<Index>);

    impl Machine<FillableLog> for Applied {
        fn apply(&mut self, entry: &Entry, _log: &FillableLog) {
            self.0.push(entry.index);
        }
        fn snapshot(&self) -> Bytes {
            Bytes::new()
        }
        fn restore(&mut self, _log: &FillableLog, _snapshot: &Snapshot) {}
    }

    /// Node 2 of three voters, a follower in term 1 with an empty log.
    fn follower() -> RaftNode<FillableLog> {
        let mut config = Config::new(2, 7);
        config.vote_hold_after_restart = false;
        RaftNode::new(
            config,
            Configuration::with_voters(1..=3),
            FillableLog::default(),
            RecoveredState {
                hard_state: HardState {
                    term: 1,
                    vote: None,
                },
                ..RecoveredState::default()
            },
        )
        .expect("valid")
    }

    fn append_from_leader(node: &mut RaftNode<FillableLog>, first: Index, count: u64) {
        let entries = (first..first + count)
            .map(|index| Entry {
                index,
                term: 1,
                kind: EntryKind::Data,
                payload: Bytes::from(vec![index as u8; 10]),
            })
            .collect();
        let prev_log_index = first - 1;
        node.step(
            1,
            Message {
                term: 1,
                body: MessageBody::AppendEntries(AppendEntries {
                    prev_log_index,
                    prev_log_term: if prev_log_index == 0 { 0 } else { 1 },
                    entries,
                    leader_commit: 0,
                }),
            },
        );
    }

    fn accepted_through(bodies: &[MessageBody]) -> Option<Index> {
        bodies
            .iter()
            .filter_map(|body| match body {
                MessageBody::AppendEntriesResponse(response) => match response.result {
                    AppendResult::Accepted { match_index } => Some(match_index),
                    AppendResult::Rejected { .. } => None,
                },
                _ => None,
            })
            .max()
    }

    #[test]
    fn a_follower_acknowledges_nothing_its_disk_refused_and_catches_up_once_it_has_room() {
        let mut node = follower();
        let mut driver = GroupDriver::new(&node);
        let (mut sent, mut machine) = (Sent::default(), Applied::default());
        append_from_leader(&mut node, 1, 2);
        driver.process(&mut node, &mut sent, &mut machine);
        assert_eq!(
            accepted_through(&sent.bodies()),
            Some(2),
            "room: acknowledged"
        );

        node.storage_mut().full = true;
        append_from_leader(&mut node, 3, 3);
        driver.process(&mut node, &mut sent, &mut machine);
        // More arrives while the first refused batch waits: it queues behind it, in order.
        append_from_leader(&mut node, 6, 2);
        driver.process(&mut node, &mut sent, &mut machine);
        driver.retry_writes(&mut node, &mut sent, &mut machine);
        driver.process(&mut node, &mut sent, &mut machine);
        let bodies = sent.bodies();
        assert!(
            accepted_through(&bodies).is_none_or(|index| index <= 2),
            "nothing past what is stored may be acknowledged: {bodies:?}"
        );
        assert!(driver.is_stalled());
        assert_eq!(node.storage().last_index(), 2);
        assert_eq!(node.persisted_index(), 2);

        node.storage_mut().full = false;
        driver.retry_writes(&mut node, &mut sent, &mut machine);
        driver.process(&mut node, &mut sent, &mut machine);
        assert!(!driver.is_stalled());
        assert_eq!(node.storage().last_index(), 7, "every refused entry landed");
        assert_eq!(
            node.storage().entries(1, 8, u64::MAX).len(),
            7,
            "in order, without a gap"
        );
        assert_eq!(node.persisted_index(), 7);
        assert_eq!(accepted_through(&sent.bodies()), Some(7));
    }

    #[test]
    fn a_refused_entry_cut_by_a_new_leader_is_never_written() {
        let mut node = follower();
        let mut driver = GroupDriver::new(&node);
        let (mut sent, mut machine) = (Sent::default(), Applied::default());
        append_from_leader(&mut node, 1, 2);
        driver.process(&mut node, &mut sent, &mut machine);
        node.storage_mut().full = true;
        append_from_leader(&mut node, 3, 3);
        driver.process(&mut node, &mut sent, &mut machine);
        assert_eq!(accepted_through(&sent.bodies()), Some(2));
        // A leader of term 2 overrules entries 3..=5 with its own entry 3.
        node.step(
            3,
            Message {
                term: 2,
                body: MessageBody::AppendEntries(AppendEntries {
                    prev_log_index: 2,
                    prev_log_term: 1,
                    entries: vec![Entry {
                        index: 3,
                        term: 2,
                        kind: EntryKind::Data,
                        payload: Bytes::from_static(b"new"),
                    }],
                    leader_commit: 0,
                }),
            },
        );
        // Term 2 is a new hard state: refused, so nothing leaves.
        driver.process(&mut node, &mut sent, &mut machine);
        let bodies = sent.bodies();
        assert!(
            bodies.is_empty(),
            "a refused hard state silences: {bodies:?}"
        );
        node.storage_mut().full = false;
        driver.retry_writes(&mut node, &mut sent, &mut machine);
        driver.process(&mut node, &mut sent, &mut machine);
        let last = node.storage().last_index();
        let log = node.storage().entries(1, last + 1, u64::MAX);
        let terms: Vec<Term> = log.iter().map(|entry| entry.term).collect();
        assert_eq!(terms, vec![1, 1, 2], "the overruled entries are gone");
        assert_eq!(node.storage().hard_state.term, 2);
    }

    #[test]
    fn a_vote_is_never_granted_before_it_is_stored() {
        let mut node = follower();
        let mut driver = GroupDriver::new(&node);
        let (mut sent, mut machine) = (Sent::default(), Applied::default());
        node.storage_mut().full = true;
        let request = Message {
            term: 2,
            body: MessageBody::RequestVote(VoteRequest {
                last_log_index: 0,
                last_log_term: 0,
            }),
        };
        node.step(3, request);
        driver.process(&mut node, &mut sent, &mut machine);
        assert!(sent.bodies().is_empty(), "no grant without a stored vote");
        assert_eq!(node.storage().hard_state.vote, None);

        node.storage_mut().full = false;
        driver.retry_writes(&mut node, &mut sent, &mut machine);
        driver.process(&mut node, &mut sent, &mut machine);
        assert_eq!(
            node.storage().hard_state.vote,
            Some(3),
            "stored once there is room"
        );
        // The grant itself was dropped (a lost message is safe); the candidate asks again.
        node.step(
            3,
            Message {
                term: 2,
                body: MessageBody::RequestVote(VoteRequest {
                    last_log_index: 0,
                    last_log_term: 0,
                }),
            },
        );
        driver.process(&mut node, &mut sent, &mut machine);
        let granted = sent.bodies().iter().any(
            |body| matches!(body, MessageBody::RequestVoteResponse(response) if response.granted),
        );
        assert!(granted, "the stored vote is granted when asked again");
    }
}
