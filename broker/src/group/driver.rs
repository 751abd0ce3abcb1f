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

use bytes::Bytes;
use keel_raft::{
    Entry, HardState, Index, NodeId, PeerMessages, RaftLog, RaftNode, ReadState, Role, Snapshot,
    Term,
};

#[cfg(feature = "fault-injection")]
pub use crate::group::pipeline::DriverBugs;
use crate::group::pipeline::{Released, SyncPipeline};

/// The disk under one group, as the driver uses it. Everything but the sync is synchronous: a
/// call returns when its write is in the page cache (the hard state and a snapshot: durable).
/// Failures are the implementation's to handle; the product's end the process (a failed write or
/// fsync leaves the page cache in an unknown state).
pub trait DriverLog: RaftLog {
    /// What the end of a sync hands back to [`DriverLog::finish_sync`].
    type SyncDone;

    /// The commit index moved: entries at or below it can never be truncated.
    fn note_committed(&mut self, _index: Index) {}
    /// Term and vote, durable when it returns.
    fn store_hard_state(&mut self, hard_state: HardState);
    /// Cuts the log from `from` on; never called while a sync runs.
    fn truncate_suffix(&mut self, from: Index);
    /// Appends entries that continue the log.
    fn append(&mut self, entries: &[Entry]);
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
    /// The state as of the last entry applied, for a snapshot at that index: what
    /// [`Machine::restore`] takes back. Compaction takes it; the node does not compact yet.
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
}

impl GroupDriver {
    pub fn new<L: RaftLog>(node: &RaftNode<L>) -> GroupDriver {
        GroupDriver {
            pipeline: SyncPipeline::default(),
            last_role: (node.role(), node.leader(), node.term()),
            abstaining: node.abstain_until_index().is_some(),
        }
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
            node.storage_mut().store_hard_state(hard_state);
        }
        network.send(ready.messages);
        if let Some(from) = ready.truncate_from {
            // Rewriting the log under a sync in flight would leave it proving nothing; and
            // what waits for durability keeps its order. Truncations are rare (a new leader
            // overruling this follower): settle everything first.
            self.settle(node, network);
            node.storage_mut().truncate_suffix(from);
            machine.on_truncated(node.storage(), from);
        }
        if let Some(snapshot) = &ready.snapshot {
            self.settle(node, network);
            node.storage_mut().write_snapshot(snapshot);
            machine.restore(node.storage(), snapshot);
            node.on_snapshot_done(snapshot.meta.last_included_index);
        }
        if !ready.entries.is_empty() {
            node.storage_mut().append(&ready.entries);
            machine.on_appended(node.storage(), &ready.entries);
        }
        if let Some(last) = last_entry {
            self.pipeline.written(last);
        }
        let may_go = self.pipeline.after_persist(ready.messages_after_persist);
        network.send(may_go);
        if !ready.read_states.is_empty() {
            machine.on_read_states(&ready.read_states);
        }
        if let Some(last) = ready.committed_entries.last().map(|entry| entry.index) {
            for entry in &ready.committed_entries {
                machine.apply(entry, node.storage());
            }
            node.on_applied(last);
        }
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
            release(node, network, released);
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
        release(node, network, released);
        self.process(node, network, machine);
    }

    /// Finishes the sync in flight and has the log sync every other write as its policy says,
    /// here and now, with every waiting message sent: before a truncation or a snapshot, and at
    /// shutdown.
    pub fn settle<L: DriverLog>(&mut self, node: &mut RaftNode<L>, network: &mut impl Network) {
        node.storage_mut().settle(self.pipeline.has_unsynced());
        let released = self.pipeline.settled();
        release(node, network, released);
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

/// Tells the core what became durable and sends what waited for it.
fn release<L: RaftLog>(node: &mut RaftNode<L>, network: &mut impl Network, released: Released) {
    for (index, term) in released.persisted {
        // Ignored by the core if that entry has been replaced since.
        node.on_persisted(index, term);
    }
    network.send(released.messages);
}
