//! The simulated cluster: N Raft nodes in one thread over a simulated network and simulated
//! disks, in simulated time, every step made deterministic by one seeded RNG. Each node runs the
//! product's group driver (keel-broker's `group/driver.rs`) over its simulated disk: an fdatasync
//! begins when the driver asks and ends a random number of time units later, while the node
//! keeps stepping, writing and applying. The fixture language of the scenario tests:
//! `cluster.campaign(1)`, `cluster.crash(2)`, `cluster.partition(&[1, 2], &[3, 4, 5])`,
//! `cluster.run_ticks(20)`.
//!
//! One time unit is a "millisecond"; a node ticks every `TICK_UNITS`. Per unit: ticks, message
//! deliveries, disk progress, then every node's Ready is handled, then the invariants run.

use std::collections::BTreeMap;

use bytes::Bytes;
use keel_broker::group::driver::{DriverBugs, GroupDriver, Machine, Network as DriverNetwork};
use keel_broker::meta::{MetaCommand, MetaState, NodeInfo};
use keel_broker::partition::dedup::BatchIdentity;
use keel_broker::partition::entry::{self as data_entry, DataEntry};
use keel_broker::partition::machine::{Applied, PartitionMachine};
use keel_raft::{
    Config, Entry, Incarnation, Index, Membership, MembershipChange, MembershipError, Message,
    NodeId, PeerMessages, ProposeError, RaftLog, RaftNode, ReadMode, ReadState, RecoveredState,
    ReplaceNode, ReplaceStep, Role, Snapshot, Term,
};
use keel_wire::{Limits, Record, RecordBatchBuilder, RecordBatchView};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::disk::SimDisk;
use crate::history::{Acknowledgement, Check, History, Violation};
use crate::invariants;
use crate::network::{Envelope, Network, NetworkFaults};
use crate::trace::Trace;
use crate::workload::Workload;

pub const TICK_UNITS: u64 = 10;

pub type SendFilter = Box<dyn Fn(NodeId, NodeId, &Message) -> bool>;

/// How often a run hit each kind of event, so a test can show the simulator is not vacuous.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub conflicting_suffixes_truncated: u64,
    /// Entries written while the node's fdatasync ran (the pipelined sync overlapped writes).
    pub writes_during_sync: u64,
    /// Syncs that ended with later writes still unsynced behind them.
    pub syncs_overtaken_by_writes: u64,
    /// Committed record batches whose offsets the dense-offsets check saw (partition machine).
    pub batches_checked: u64,
    /// Metadata commands the product's metadata machine applied, and effects it asked for.
    pub meta_commands_applied: u64,
    pub meta_effects: u64,
    pub restarts_abstaining: u64,
    pub synced_entries_lost: u64,
    pub overloaded_proposals: u64,
    pub redirected_proposals: u64,
    pub symmetric_partitions: u64,
    pub one_way_cuts: u64,
    pub disks_wiped: u64,
    pub replacements_completed: u64,
    pub voters_removed: u64,
    pub membership_changes_committed: u64,
    pub leaders_removed_themselves: u64,
    pub snapshots_taken: u64,
    /// Snapshots taken at a log start below the applied index: built by folding, not by
    /// recording the live state.
    pub snapshots_below_applied: u64,
    pub snapshots_installed: u64,
    pub restarts_from_snapshot: u64,
    pub reads_released: u64,
    pub lease_reads_released: u64,
    pub reads_failed: u64,
    pub transfers_started: u64,
    pub transfers_completed: u64,
    /// Disks that filled up (appends and hard states refused until they were freed).
    pub disks_filled: u64,
    /// Driver runs that ended with writes the disk refused still held.
    pub drives_with_refused_writes: u64,
}

/// A read in flight: where, how, and the highest write acknowledged before it began.
#[derive(Clone, Copy, Debug)]
pub struct PendingRead {
    pub node: NodeId,
    pub mode: ReadMode,
    pub acknowledged_floor: Index,
}

/// Everything a run is parameterised by (the simulator draws it from the seed).
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub node_count: u64,
    pub network: NetworkFaults,
    /// Writes land at once; each fdatasync takes `1..=max_disk_latency_units`.
    pub max_disk_latency_units: u64,
    /// Template for every node's config (id and seed are set per node).
    pub config: Config,
    pub producer_count: usize,
    /// Clock drift: a node ticks every `TICK_UNITS ± max_tick_skew_units` units.
    pub max_tick_skew_units: u64,
    /// Bugs planted in every node's driver (none outside the tests that prove they are caught).
    pub driver_bugs: DriverBugs,
    /// A planted bug in the simulator's own compaction: the partition's live state at the
    /// applied index goes into the snapshot labelled as the log start, as a partition must never
    /// do (only the test that proves the snapshot checks can fail sets it).
    pub label_live_state_as_log_start: bool,
}

impl ClusterOptions {
    /// A quiet cluster for scripted scenarios: no faults, one unit per hop and per write.
    /// Restarted nodes vote at once (no vote hold): the scripts drive elections by hand.
    pub fn quiet(node_count: u64) -> ClusterOptions {
        let mut config = Config::new(0, 0);
        config.vote_hold_after_restart = false;
        ClusterOptions {
            node_count,
            network: NetworkFaults::NONE,
            max_disk_latency_units: 1,
            config,
            producer_count: 0,
            max_tick_skew_units: 0,
            driver_bugs: DriverBugs::default(),
            label_live_state_as_log_start: false,
        }
    }
}

/// What the driver told the state machine during one call, replayed in order once the call
/// returns (the checks need the whole cluster; the driver borrows the node meanwhile).
enum MachineEvent {
    Truncated,
    Restored(Snapshot),
    Reads(Vec<ReadState>),
    Written {
        entry: Entry,
        previous_term: Term,
    },
    /// An applied entry, with a hash of the metadata map after it when it was a metadata
    /// command (folded into the digest, so replicas whose maps differ are caught), and the
    /// partition machine's applied state after it (what a snapshot there must hold).
    Applied {
        entry: Entry,
        meta_hash: Option<u64>,
        partition: Box<Applied>,
    },
    /// A committed batch whose base offset is not the partition's high watermark before it.
    OffsetGap {
        index: Index,
        base_offset: u64,
        expected: u64,
    },
}

/// The simulator's state machine as the driver sees it: the product's partition machine, run in
/// place, and a record of everything else for the cluster to check once the call returns.
struct Recorder<'a> {
    events: Vec<MachineEvent>,
    partition: &'a mut PartitionMachine,
    meta: &'a mut MetaState,
    /// Metadata commands applied, and how many of them asked the node to start or stop
    /// partitions.
    meta_commands: u64,
    meta_effects: u64,
    /// Committed batches whose offsets were checked.
    batches_checked: u64,
}

impl<'a> Recorder<'a> {
    fn new(partition: &'a mut PartitionMachine, meta: &'a mut MetaState) -> Recorder<'a> {
        Recorder {
            events: Vec::new(),
            partition,
            meta,
            meta_commands: 0,
            meta_effects: 0,
            batches_checked: 0,
        }
    }
}

impl Machine<SimDisk> for Recorder<'_> {
    fn on_truncated(&mut self, log: &SimDisk, from: Index) {
        self.partition.truncated(log, from);
        self.events.push(MachineEvent::Truncated);
    }

    fn on_appended(&mut self, log: &SimDisk, entries: &[Entry]) {
        self.partition.appended(entries);
        for entry in entries
            .iter()
            .filter(|entry| entry.index >= log.first_index())
        {
            let previous = entry.index - 1;
            let previous_term = log
                .term(previous)
                .or_else(|| {
                    let meta = &log.snapshot()?.meta;
                    (meta.last_included_index == previous).then_some(meta.last_included_term)
                })
                .unwrap_or(0);
            self.events.push(MachineEvent::Written {
                entry: entry.clone(),
                previous_term,
            });
        }
    }

    fn apply(&mut self, entry: &Entry, _log: &SimDisk) {
        // Offsets are dense: every committed batch starts where the ones before it ended, on
        // every replica, whatever leaders came and went (only workload batches parse).
        let batch = DataEntry::read(&entry.payload)
            .filter(|data| RecordBatchView::parse(Bytes::copy_from_slice(data.batch)).is_ok());
        if let (keel_raft::EntryKind::Data, Some(data)) = (entry.kind, batch) {
            let base_offset = data.header().map_or(0, |header| header.base_offset);
            let expected = self.partition.high_watermark();
            self.batches_checked += 1;
            if base_offset != expected {
                self.events.push(MachineEvent::OffsetGap {
                    index: entry.index,
                    base_offset,
                    expected,
                });
            }
        }
        self.partition.apply(entry);
        let meta = apply_meta(self.meta, entry);
        self.meta_commands += u64::from(meta.executed);
        self.meta_effects += u64::from(meta.effect);
        self.events.push(MachineEvent::Applied {
            entry: entry.clone(),
            meta_hash: meta.hash,
            partition: Box::new(self.partition.applied().clone()),
        });
    }

    /// The machines' live state. The simulator does not snapshot it: a snapshot is taken at a
    /// log start, usually below the applied index, by folding ([`Machines::fold_log`]).
    fn snapshot(&self) -> Bytes {
        machines_data(&self.partition.snapshot(), self.meta)
    }

    fn restore(&mut self, log: &SimDisk, snapshot: &Snapshot) {
        // Every snapshot here is one the simulator took: one that does not decode is a bug to
        // see, not to skip (the state-machine check reports the digest side).
        if let Some((_, partition, meta)) = StateMachine::decode(&snapshot.data) {
            *self.partition =
                PartitionMachine::restore(log, &partition).expect("the partition machine's own");
            *self.meta = meta;
        }
        self.events.push(MachineEvent::Restored(snapshot.clone()));
    }

    fn on_read_states(&mut self, reads: &[ReadState]) {
        self.events.push(MachineEvent::Reads(reads.to_vec()));
    }
}

/// What one applied entry did to the metadata map.
struct MetaStep {
    /// The map's hash after a metadata entry (folded into the digest), `None` after others.
    hash: Option<u64>,
    /// The entry was a command the machine executed (counted for coverage)...
    executed: bool,
    /// ...and it asked the node to start or stop partitions.
    effect: bool,
}

/// The product's metadata machine applying `entry`, as group 0 runs it (meta/actor.rs `apply`):
/// the one step both a replica applying and a snapshot fold take.
fn apply_meta(meta: &mut MetaState, entry: &Entry) -> MetaStep {
    let mut step = MetaStep {
        hash: None,
        executed: false,
        effect: false,
    };
    if entry.kind == keel_raft::EntryKind::Meta {
        if let Ok(command) = postcard::from_bytes::<MetaCommand>(&entry.payload) {
            let (_, effect) = meta.execute(command);
            step.executed = true;
            step.effect = effect.is_some();
        }
        step.hash = Some(meta_hash_of(meta));
    }
    step
}

/// A hash of the metadata map, folded into the digest after each metadata command.
fn meta_hash_of(meta: &MetaState) -> u64 {
    let bytes = postcard::to_allocvec(meta).expect("the map encodes");
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash: u64, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// The metadata map every replica starts from: founded with the cluster's first nodes (the
/// founding itself is the node's, not the simulator's, to test).
pub fn founded_meta(node_count: u64) -> MetaState {
    let mut meta = MetaState::new();
    let nodes = (1..=node_count)
        .map(|node_id| NodeInfo {
            node_id,
            incarnation: 1,
            peer_address: format!("node-{node_id}"),
            client_address: format!("node-{node_id}"),
        })
        .collect();
    meta.apply(MetaCommand::Found { nodes })
        .expect("founding an empty map");
    meta
}

/// The driver's network: messages wait here until the call returns, then enter the simulated
/// network in the order the driver sent them.
#[derive(Default)]
struct Outbox(Vec<PeerMessages>);

impl DriverNetwork for Outbox {
    fn send(&mut self, batches: Vec<PeerMessages>) {
        self.0.extend(batches);
    }
}

enum NodeState {
    Up(Box<RaftNode<SimDisk>>),
    Down(SimDisk),
}

struct SimNode {
    state: NodeState,
    /// The product's driver for this node while it is up.
    driver: Option<GroupDriver>,
    /// When the fdatasync the driver started ends.
    sync_due_at: Option<u64>,
    /// Each node's clock runs at its own rate: it ticks every `tick_interval_units`.
    tick_interval_units: u64,
    /// And its wall clock is off by this much (plus a jitter per read), which the append times
    /// a leader stamps must survive (they never go backwards in the log).
    clock_skew_ms: i64,
    /// The index and append time of the last Data entry this node applied.
    applied_append_time: Option<(Index, i64)>,
    next_tick_at: u64,
    /// The incarnation of the disk behind this id; a wipe draws a new one.
    incarnation: Incarnation,
    /// The configuration the node starts from (the founding one; nothing after a wipe: a new
    /// server learns its configuration from the leader's log).
    base_membership: Membership,
    /// The node's state machine: the last index applied and a digest of everything applied.
    state_machine: StateMachine,
    /// The product's partition machine over the same log: offsets and the dedup table.
    partition: PartitionMachine,
    /// The product's metadata machine over the same log (metadata commands only).
    meta: MetaState,
}

/// The simulated state machine: a running digest of the applied entries. Its snapshot is the
/// digest with padding (so snapshots take several chunks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    pub applied_index: Index,
    pub digest: u64,
}

impl StateMachine {
    /// `meta_hash`: the metadata map's hash after the entry, when it was a metadata command
    /// (the replica's derived state, folded into the digest).
    fn apply(&mut self, entry: &Entry, meta_hash: Option<u64>) {
        debug_assert_eq!(entry.index, self.applied_index + 1);
        let mut digest = self.digest;
        for word in [entry.index, entry.term, entry.kind.as_u8() as u64]
            .into_iter()
            .chain(entry.payload.iter().map(|&byte| byte as u64))
        {
            digest = (digest ^ word).wrapping_mul(0x0000_0100_0000_01b3);
        }
        if let Some(word) = meta_hash {
            digest = (digest ^ word).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.applied_index = entry.index;
        self.digest = digest;
    }

    /// A snapshot's data: this state, then the machines' part ([`machines_data`]: the
    /// partition machine's snapshot and the map).
    pub fn encode_with(&self, machines: &[u8]) -> Bytes {
        let mut bytes = self.encode().to_vec();
        bytes.extend_from_slice(machines);
        Bytes::from(bytes)
    }

    fn encode(&self) -> Bytes {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&self.applied_index.to_le_bytes());
        bytes.extend_from_slice(&self.digest.to_le_bytes());
        let padding = (self.digest % 97) as usize;
        bytes.extend(std::iter::repeat_n(0xAB, padding));
        Bytes::from(bytes)
    }

    /// The state, the partition machine's snapshot and the map of [`StateMachine::encode_with`].
    pub fn decode(bytes: &[u8]) -> Option<(StateMachine, Bytes, MetaState)> {
        let applied_index = Index::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
        let digest = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
        let state = StateMachine {
            applied_index,
            digest,
        };
        let own = state.encode();
        (bytes.get(..own.len())? == own).then_some(())?;
        let (partition, meta): (Vec<u8>, MetaState) =
            postcard::from_bytes(&bytes[own.len()..]).ok()?;
        Some((state, Bytes::from(partition), meta))
    }
}

/// The machines' part of a snapshot's data ([`StateMachine::encode_with`] puts the digest first):
/// the partition machine's snapshot and the map.
fn machines_data(partition: &[u8], meta: &MetaState) -> Bytes {
    let machines = postcard::to_allocvec(&(partition, meta));
    Bytes::from(machines.expect("machines encode"))
}

/// A replica's machines as of one applied index, as its snapshot there holds them: the digest,
/// the product's partition state and the product's metadata map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machines {
    pub state: StateMachine,
    pub partition: Applied,
    pub meta: MetaState,
}

impl Machines {
    /// Every replica's state before the first entry.
    fn founding(node_count: u64) -> Machines {
        Machines {
            state: StateMachine::default(),
            partition: Applied::default(),
            meta: founded_meta(node_count),
        }
    }

    pub fn decode(data: &[u8]) -> Option<Machines> {
        let (state, partition, meta) = StateMachine::decode(data)?;
        Some(Machines {
            state,
            partition: Applied::decode(&partition)?,
            meta,
        })
    }

    fn encode(&self) -> Bytes {
        let machines = machines_data(&self.partition.encode(), &self.meta);
        self.state.encode_with(&machines)
    }

    /// The snapshot at log start `through`: these machines (the previous snapshot's) with the
    /// entries of `log` after them, up to `through`, folded in, never the live state at the
    /// applied index relabelled. The partition part is the product's fold
    /// ([`Applied::fold_log`]), reading `read_bytes` at a time; the digest and the map take the
    /// steps applying takes.
    fn fold_log(self, log: &SimDisk, through: Index, read_bytes: u64) -> Result<Machines, String> {
        let Machines {
            mut state,
            partition,
            mut meta,
        } = self;
        let partition = partition
            .fold_log(log, through, read_bytes)
            .map_err(|missing| missing.to_string())?;
        let from = state.applied_index + 1;
        if from <= through {
            if from < log.first_index() || through > log.last_index() {
                return Err(format!("entries {from}..={through} to fold are missing"));
            }
            for entry in log.entries(from, through + 1, u64::MAX) {
                let step = apply_meta(&mut meta, &entry);
                state.apply(&entry, step.hash);
            }
        }
        if state.applied_index != through {
            return Err(format!(
                "the digest folded to {} for a snapshot at {through}",
                state.applied_index
            ));
        }
        Ok(Machines {
            state,
            partition,
            meta,
        })
    }
}

pub struct Cluster {
    pub now: u64,
    pub options: ClusterOptions,
    pub network: Network,
    pub history: History,
    pub workload: Workload,
    pub trace: Trace,
    pub rng: ChaCha8Rng,
    pub ticks_enabled: bool,
    /// Set once a safety property broke; the run stops there.
    pub violation: Option<Violation>,
    pub coverage: Coverage,
    /// Scenario tests: messages for which this returns false are dropped when sent.
    pub send_filter: Option<SendFilter>,
    /// Scenario tests: every delivered message as `(from, to, kind, term)`.
    pub delivered: Option<Vec<(NodeId, NodeId, &'static str, Term)>>,
    nodes: BTreeMap<NodeId, SimNode>,
    /// Wiped nodes being brought back (the replace sequence, docs/RAFT-CORE.md) and removed voters
    /// being added back (the same sequence with the same incarnation), by id.
    pub replacements: BTreeMap<NodeId, ReplaceNode>,
    /// Reads in flight by request id, and the next id.
    pub reads: BTreeMap<u64, PendingRead>,
    next_read_id: u64,
    /// Scenario tests: every read released, as `(request id, read index)`.
    pub released_reads: Vec<(u64, Option<Index>)>,
    /// The transfer in progress: `(from, to, started at)`.
    pub transfer: Option<(NodeId, NodeId, u64)>,
    /// A fault aimed at leases: the leader that sends TimeoutNow goes deaf (hears nobody)
    /// for this many units, so it learns of its successor late.
    pub deafen_after_timeout_now_units: Option<u64>,
    /// When the network heals by itself (after such a fault).
    pub heal_at: Option<u64>,
}

impl SimNode {
    fn state_machine_restored(&mut self, state: StateMachine) {
        self.state_machine = state;
    }
}

impl Cluster {
    pub fn new(options: ClusterOptions, seed: u64) -> Cluster {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let founding = Membership::with_voters((1..=options.node_count).map(|id| (id, 1)));
        let mut cluster = Cluster {
            now: 0,
            network: Network::new(options.network),
            history: History::default(),
            workload: Workload::new(options.producer_count),
            trace: Trace::from_environment(),
            ticks_enabled: true,
            violation: None,
            coverage: Coverage::default(),
            send_filter: None,
            delivered: None,
            nodes: BTreeMap::new(),
            replacements: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_read_id: 1,
            released_reads: Vec::new(),
            transfer: None,
            deafen_after_timeout_now_units: None,
            heal_at: None,
            rng: ChaCha8Rng::seed_from_u64(rng.random()),
            options,
        };
        for id in 1..=cluster.options.node_count {
            let skew = cluster.options.max_tick_skew_units;
            let tick_interval_units = rng.random_range(TICK_UNITS - skew..=TICK_UNITS + skew);
            let next_tick_at = rng.random_range(0..TICK_UNITS);
            let node = SimNode {
                state: NodeState::Down(SimDisk::default()),
                driver: None,
                sync_due_at: None,
                tick_interval_units,
                clock_skew_ms: rng.random_range(-5_000..=5_000),
                applied_append_time: None,
                next_tick_at,
                incarnation: 1,
                base_membership: founding.clone(),
                state_machine: StateMachine::default(),
                partition: PartitionMachine::default(),
                meta: founded_meta(cluster.options.node_count),
            };
            cluster.nodes.insert(id, node);
            let raft = cluster.start_node(id, SimDisk::default(), RecoveredState::default());
            let driver = cluster.new_driver(&raft);
            let node = cluster.nodes.get_mut(&id).expect("inserted");
            node.driver = Some(driver);
            node.state = NodeState::Up(raft);
        }
        cluster
    }

    fn new_driver(&self, raft: &RaftNode<SimDisk>) -> GroupDriver {
        let mut driver = GroupDriver::new(raft);
        driver.plant(self.options.driver_bugs);
        driver
    }

    fn start_node(
        &mut self,
        id: NodeId,
        disk: SimDisk,
        recovered: RecoveredState,
    ) -> Box<RaftNode<SimDisk>> {
        let mut config = self.options.config.clone();
        config.id = id;
        config.incarnation = self.nodes[&id].incarnation;
        config.random_seed = self.rng.random();
        let membership = self.nodes[&id].base_membership.clone();
        let raft = match disk.snapshot().cloned() {
            Some(snapshot) => RaftNode::with_snapshot(config, snapshot, disk, recovered),
            None => RaftNode::with_membership(config, membership, disk, recovered),
        };
        Box::new(raft.expect("valid config"))
    }

    /// Node `id` compacts its log at a log start drawn anywhere from its first index to its
    /// applied index: below the applied index unless the draw lands on it, as a partition's
    /// retention picks a log start behind what it applied.
    pub fn snapshot_node(&mut self, id: NodeId) {
        if !self.is_up(id) {
            return;
        }
        let first = self.node(id).first_index();
        let applied = self.nodes[&id].state_machine.applied_index;
        if applied < first {
            return;
        }
        let through = self.rng.random_range(first..=applied);
        self.snapshot_node_at(id, through);
    }

    /// Node `id` compacts its log through `through` as a partition replica does
    /// (partition/mod.rs `compact` and `persist_compaction`): the snapshot there is its previous
    /// one with the entries up to `through` folded in, it is written, the entries it covers are
    /// dropped, and only then does the partition machine's log start move. The snapshot must be
    /// the state at `through` and, restored and replayed to the applied index, the live state
    /// (invariants/snapshot_fold.rs).
    pub fn snapshot_node_at(&mut self, id: NodeId, through: Index) {
        if !self.is_up(id) {
            return;
        }
        let node = &self.nodes[&id];
        let applied = node.state_machine.applied_index;
        debug_assert_eq!(node.partition.applied_index(), applied);
        if through < self.node(id).first_index() || through > applied {
            return;
        }
        let previous = match self.node(id).snapshot() {
            Some(snapshot) => match Machines::decode(&snapshot.data) {
                Some(machines) => machines,
                None => {
                    let index = snapshot.meta.last_included_index;
                    self.record(crate::history::violation(
                        "snapshot at a log start",
                        format!("node {id}: its snapshot at {index} does not decode"),
                    ));
                    return;
                }
            },
            None => Machines::founding(self.options.node_count),
        };
        // Reads of one entry, of a few, or of all at once: the fold continues across reads.
        let read_bytes = [1, 512, u64::MAX][self.rng.random_range(0..3)];
        let folded = match previous.fold_log(self.node(id).storage(), through, read_bytes) {
            Ok(folded) => folded,
            Err(error) => {
                self.record(crate::history::violation(
                    "snapshot at a log start",
                    format!("node {id}: no snapshot at {through}: {error}"),
                ));
                return;
            }
        };
        let data = if self.options.label_live_state_as_log_start {
            // The partition's live state with the log start moved, as a replica that skipped the
            // fold would write it; the digest and the map stay folded, so only the partition
            // checks can catch it.
            let mut partition = self.nodes[&id].partition.applied().clone();
            partition.compacted(through, partition.high_watermark);
            Machines {
                partition,
                ..folded
            }
            .encode()
        } else {
            folded.encode()
        };
        let Ok(snapshot) = self.node_mut(id).compact(through, data) else {
            return; // an install in progress replaces the state instead
        };
        self.coverage.snapshots_taken += 1;
        self.coverage.snapshots_below_applied += u64::from(through < applied);
        self.trace.line(self.now, || {
            format!("snapshot {id} at {through} (applied {applied})")
        });
        self.trace.hash_event(self.now, 5, id, through);
        let data = snapshot.data.clone();
        let taken = Machines::decode(&data).expect("encoded above");
        self.node_mut(id).storage_mut().persist_snapshot(snapshot);
        let node = self.nodes.get_mut(&id).expect("known node");
        node.partition
            .compacted(through, taken.partition.log_start_offset);
        let live = Machines {
            state: node.state_machine,
            partition: node.partition.applied().clone(),
            meta: node.meta.clone(),
        };
        let replayed = self.restore_and_replay(id, &data, through, applied);
        let check = invariants::snapshot_fold::observe_taken(
            &mut self.history,
            id,
            through,
            &taken,
            &replayed,
            &live,
        );
        self.record(check);
        self.check_invariants();
    }

    /// Node `id`'s machines restored from its snapshot `data` at `through`, with the entries
    /// after `through` in its log replayed up to `to`, the partition through the product's
    /// machine: what a restart or a follower installing the snapshot would reach.
    fn restore_and_replay(&self, id: NodeId, data: &[u8], through: Index, to: Index) -> Machines {
        let disk = self.node(id).storage();
        let (mut state, partition, mut meta) = StateMachine::decode(data).expect("decoded");
        let mut partition = PartitionMachine::restore(disk, &partition).expect("decoded");
        if through < to {
            for entry in disk.entries(through + 1, to + 1, u64::MAX) {
                partition.apply(&entry);
                let step = apply_meta(&mut meta, &entry);
                state.apply(&entry, step.hash);
            }
        }
        Machines {
            state,
            partition: partition.applied().clone(),
            meta,
        }
    }

    pub fn state_machine(&self, id: NodeId) -> StateMachine {
        self.nodes[&id].state_machine
    }

    /// Node `id`'s partition machine (the product's).
    pub fn partition_machine(&self, id: NodeId) -> &PartitionMachine {
        &self.nodes[&id].partition
    }

    pub fn incarnation(&self, id: NodeId) -> Incarnation {
        self.nodes[&id].incarnation
    }

    /// The node lost its disk: it is down, and comes back (at `restart`) empty under a new
    /// incarnation, as a new server that waits to be added; the replace sequence starts.
    pub fn wipe(&mut self, id: NodeId) {
        if self.is_up(id) {
            self.crash(id, false);
        }
        let node = self.nodes.get_mut(&id).expect("known node");
        let old = node.incarnation;
        node.incarnation += 1;
        node.state = NodeState::Down(SimDisk::default());
        node.base_membership = Membership::default();
        node.state_machine = StateMachine::default();
        node.partition = PartitionMachine::default();
        node.meta = founded_meta(self.options.node_count);
        let new = node.incarnation;
        self.coverage.disks_wiped += 1;
        self.trace.line(self.now, || {
            format!("wipe {id}: incarnation {old} -> {new}")
        });
        self.trace.hash_event(self.now, 3, id, new);
        self.history.forget_volatile_state(id);
        self.replacements.insert(id, ReplaceNode::new(id, old, new));
    }

    /// Every node is up and its latest configuration (committed or not) has every id as a
    /// voter with the incarnation of its disk.
    pub fn every_node_has_the_full_membership(&self) -> bool {
        let wanted: Membership =
            Membership::with_voters(self.ids().into_iter().map(|id| (id, self.incarnation(id))));
        self.ids()
            .into_iter()
            .all(|id| self.is_up(id) && self.node(id).membership() == &wanted)
    }

    /// Replacements and re-adds in progress.
    pub fn membership_work(&self) -> usize {
        self.replacements.len()
    }

    /// Every id a voter with the incarnation of its disk, nothing else, as the leader sees it.
    pub fn membership_is_complete(&self) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        let node = self.node(leader);
        let wanted: Membership =
            Membership::with_voters(self.ids().into_iter().map(|id| (id, self.incarnation(id))));
        node.membership() == &wanted && !node.membership_change_pending()
    }

    /// One round of the membership driver at the current leader: the next step of every
    /// replacement (`ReplaceNode`). A replacement is finished only once its last change is
    /// committed (a leader's uncommitted view may still be truncated). An id that is not a
    /// voter with its disk's incarnation and has no replacement gets one (a removal that came
    /// back after a leader change).
    pub fn drive_membership(&mut self) {
        let Some(leader) = self.leader() else {
            return;
        };
        let node = self.node(leader);
        let missing: Vec<(NodeId, Incarnation)> = if node.membership_change_pending() {
            Vec::new()
        } else {
            self.ids()
                .into_iter()
                .map(|id| (id, self.incarnation(id)))
                .filter(|&(id, incarnation)| !node.membership().is_voter(id, incarnation))
                .collect()
        };
        for (id, incarnation) in missing {
            self.replacements
                .entry(id)
                .or_insert(ReplaceNode::new(id, incarnation, incarnation));
        }
        let node = self.node(leader);
        let mut changes = Vec::new();
        let mut done = Vec::new();
        for (&id, replacement) in &self.replacements {
            match replacement.next_step(node) {
                ReplaceStep::Propose(change) => changes.push(change),
                ReplaceStep::Wait => {}
                ReplaceStep::Done if !node.membership_change_pending() => done.push(id),
                ReplaceStep::Done => {}
            }
        }
        for id in done {
            self.replacements.remove(&id);
            self.coverage.replacements_completed += 1;
        }
        for change in changes {
            // A refusal (pending change, no-op not committed) is retried at the next round.
            let _ = self.propose_membership_change(leader, change);
        }
    }

    /// Starts a linearizable read at node `at`; `None` if refused at once.
    pub fn read(&mut self, at: NodeId, mode: ReadMode) -> Option<u64> {
        let request_id = self.next_read_id;
        self.next_read_id += 1;
        let acknowledged_floor = self
            .history
            .acknowledged
            .iter()
            .map(|acknowledged| acknowledged.index)
            .max()
            .unwrap_or(0);
        let read = PendingRead {
            node: at,
            mode,
            acknowledged_floor,
        };
        self.reads.insert(request_id, read);
        let result = self.node_mut(at).request_read(request_id, mode);
        self.trace.line(self.now, || {
            format!("read {request_id} at {at} ({mode:?}): {result:?}")
        });
        if result.is_err() {
            self.reads.remove(&request_id);
            return None;
        }
        self.handle_all_ready();
        Some(request_id)
    }

    /// The leader hands leadership to `target`.
    pub fn transfer_leadership(&mut self, target: NodeId) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        let result = self.node_mut(leader).transfer_leadership(target);
        self.trace.line(self.now, || {
            format!("transfer {leader} -> {target}: {result:?}")
        });
        if result.is_ok() {
            self.coverage.transfers_started += 1;
            self.trace.hash_event(self.now, 7, leader, target);
            self.transfer = Some((leader, target, self.now));
        }
        self.handle_all_ready();
        result.is_ok()
    }

    /// Removes voter `id` (its own incarnation) to add it back later as a learner, then
    /// promote it (`ReplaceNode` with the same incarnation). The re-add is tried at once,
    /// while the removal is uncommitted: the core must refuse it (a planted bug that does not
    /// is caught by invariants/membership_rule.rs).
    pub fn churn_voter(&mut self, id: NodeId) {
        let Some(leader) = self.leader() else {
            return;
        };
        let incarnation = self.incarnation(id);
        let change = MembershipChange::RemoveVoter { id, incarnation };
        if self.propose_membership_change(leader, change).is_ok() {
            self.coverage.voters_removed += 1;
            self.coverage.leaders_removed_themselves += u64::from(id == leader);
            let re_add = MembershipChange::AddLearner { id, incarnation };
            let _ = self.propose_membership_change(leader, re_add);
            self.replacements.insert(
                id,
                ReplaceNode {
                    id,
                    old_incarnation: incarnation,
                    new_incarnation: incarnation,
                },
            );
        }
    }

    pub fn propose_membership_change(
        &mut self,
        at: NodeId,
        change: MembershipChange,
    ) -> Result<(Index, Term), MembershipError> {
        let result = self.node_mut(at).propose_membership_change(change);
        self.trace.line(self.now, || {
            format!("membership change at {at}: {change:?} -> {result:?}")
        });
        if result.is_ok() {
            self.trace.hash_event(self.now, 4, at, 0);
        }
        self.handle_all_ready();
        result
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The nodes running now (not crashed), in id order.
    pub fn up_ids(&self) -> Vec<NodeId> {
        self.ids()
            .into_iter()
            .filter(|&id| self.is_up(id))
            .collect()
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        matches!(self.nodes[&id].state, NodeState::Up(_))
    }

    pub fn node(&self, id: NodeId) -> &RaftNode<SimDisk> {
        match &self.nodes[&id].state {
            NodeState::Up(raft) => raft,
            NodeState::Down(_) => panic!("node {id} is down"),
        }
    }

    fn node_mut(&mut self, id: NodeId) -> &mut RaftNode<SimDisk> {
        match &mut self.nodes.get_mut(&id).expect("known node").state {
            NodeState::Up(raft) => raft,
            NodeState::Down(_) => panic!("node {id} is down"),
        }
    }

    pub fn up_nodes(&self) -> Vec<&RaftNode<SimDisk>> {
        self.nodes
            .values()
            .filter_map(|node| match &node.state {
                NodeState::Up(raft) => Some(&**raft),
                NodeState::Down(_) => None,
            })
            .collect()
    }

    /// The up node that leads the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.up_nodes()
            .into_iter()
            .filter(|node| node.role() == Role::Leader)
            .max_by_key(|node| node.term())
            .map(|node| node.id())
    }

    /// Advances one time unit.
    pub fn step(&mut self) {
        if self.heal_at.is_some_and(|at| at <= self.now) {
            self.heal_at = None;
            self.heal();
        }
        if self.ticks_enabled {
            for id in self.ids() {
                let node = self.nodes.get_mut(&id).expect("known node");
                if node.next_tick_at > self.now {
                    continue;
                }
                node.next_tick_at = self.now + node.tick_interval_units;
                if let NodeState::Up(raft) = &mut node.state {
                    raft.tick();
                }
            }
        }
        while let Some(envelope) = self.network.next_due(self.now) {
            if self.is_up(envelope.to) {
                self.trace
                    .delivered(self.now, envelope.from, envelope.to, &envelope.message);
                if let Some(delivered) = &mut self.delivered {
                    let kind = envelope.message.body.kind_name();
                    delivered.push((envelope.from, envelope.to, kind, envelope.message.term));
                }
                self.node_mut(envelope.to).step_from(
                    envelope.from,
                    envelope.from_incarnation,
                    envelope.message,
                );
            }
        }
        for id in self.ids() {
            self.advance_disk(id);
        }
        self.handle_all_ready();
        self.workload.expire(self.now);
        self.now += 1;
    }

    pub fn run_ticks(&mut self, ticks: u64) {
        for _ in 0..ticks * TICK_UNITS {
            self.step();
        }
    }

    /// Runs until `done` holds (true) or `max_ticks` pass (false).
    pub fn run_until(&mut self, max_ticks: u64, done: impl Fn(&Cluster) -> bool) -> bool {
        for _ in 0..max_ticks * TICK_UNITS {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    /// Delivers, writes and handles Readys without ticking until nothing is left in flight.
    pub fn settle(&mut self) {
        let ticks = self.ticks_enabled;
        self.ticks_enabled = false;
        for _ in 0..100_000 {
            if self.network.in_flight_count() == 0
                && self.nodes.values().all(|node| node.sync_due_at.is_none())
            {
                break;
            }
            self.step();
        }
        self.ticks_enabled = ticks;
    }

    pub fn campaign(&mut self, id: NodeId) {
        self.node_mut(id).campaign();
        self.handle_all_ready();
    }

    pub fn tick(&mut self, id: NodeId) {
        self.node_mut(id).tick();
        self.handle_all_ready();
    }

    pub fn propose(&mut self, id: NodeId, payload: Bytes) -> Result<(Index, Term), ProposeError> {
        let result = self.node_mut(id).propose(payload);
        self.trace
            .line(self.now, || format!("propose at {id}: {result:?}"));
        self.handle_all_ready();
        result
    }

    /// A metadata command at node `id`, as group 0's leader proposes one.
    pub fn propose_meta(
        &mut self,
        id: NodeId,
        command: &MetaCommand,
    ) -> Result<(Index, Term, Bytes), ProposeError> {
        let payload = Bytes::from(postcard::to_allocvec(command).expect("commands encode"));
        let result = self.node_mut(id).propose_meta(payload.clone());
        self.trace.line(self.now, || {
            format!("meta at {id}: {command:?} -> {result:?}")
        });
        self.handle_all_ready();
        result.map(|(index, term)| (index, term, payload))
    }

    /// The metadata map node `id` applied.
    pub fn meta(&self, id: NodeId) -> &MetaState {
        &self.nodes[&id].meta
    }

    /// A produce at node `id`, as the product's partition leader does it: `value` in a record
    /// batch in a Data entry, stamped with the next offset of the node's partition machine, its
    /// term and its (skewed) clock, proposed, and remembered as this leader's proposal. Returns
    /// the entry's position and payload.
    pub fn produce(
        &mut self,
        id: NodeId,
        value: &[u8],
    ) -> Result<(Index, Term, Bytes), ProposeError> {
        let limits = Limits::default();
        let mut builder = RecordBatchBuilder::new(&limits, 1024);
        let record = Record {
            timestamp_ms: self.now as i64,
            key: None,
            value: Some(value),
            headers: &[],
        };
        builder.append(&record).expect("a small record fits");
        let mut payload = data_entry::unstamped(&builder.finish().expect("one record"));
        // Each read of a node's wall clock is off by its skew and a jitter, so clocks also step
        // back between two reads (NTP does that to real ones).
        let jitter_ms = self.rng.random_range(-2_000..=2_000);
        let node = &self.nodes[&id];
        let base_offset = node.partition.end_offset();
        let append_time_ms = node
            .partition
            .next_append_time_ms(self.now as i64 + node.clock_skew_ms + jitter_ms);
        let term = self.node(id).term();
        data_entry::stamp(&mut payload, append_time_ms, base_offset, term).expect("a whole batch");
        let batch = payload.freeze();
        let identity = BatchIdentity::of(data_entry::batch_of(&batch)).expect("a whole batch");
        let result = self.node_mut(id).propose(batch.clone());
        self.trace
            .line(self.now, || format!("produce at {id}: {result:?}"));
        if let Ok((index, _)) = result {
            let node = self.nodes.get_mut(&id).expect("known node");
            node.partition
                .proposed(index, identity, base_offset, append_time_ms);
        }
        self.handle_all_ready();
        result.map(|(index, term)| (index, term, batch))
    }

    /// A power loss at node `id`: every write not yet synced may be lost or torn; with
    /// `may_abstain`, holes (and rarely damage to synced entries) that make it abstain.
    /// Node `id`'s disk fills up (`full`) or gets room again; it stays so across crashes.
    pub fn set_disk_full(&mut self, id: NodeId, full: bool) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let disk = match &mut node.state {
            NodeState::Up(raft) => raft.storage_mut(),
            NodeState::Down(disk) => disk,
        };
        if full && !disk.full {
            self.coverage.disks_filled += 1;
        }
        disk.full = full;
        self.trace
            .line(self.now, || format!("disk {id} full: {full}"));
    }

    pub fn crash(&mut self, id: NodeId, may_abstain: bool) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let NodeState::Up(raft) =
            std::mem::replace(&mut node.state, NodeState::Down(SimDisk::default()))
        else {
            panic!("node {id} is already down");
        };
        node.driver = None;
        node.sync_due_at = None;
        let (disk, report) = raft.into_storage().crash(&mut self.rng, may_abstain);
        self.coverage.synced_entries_lost += report.synced_entries_lost;
        self.trace
            .line(self.now, || format!("crash {id}: {report:?}"));
        self.trace
            .hash_event(self.now, 1, id, report.abstain_until_index.unwrap_or(0));
        self.nodes.get_mut(&id).expect("known node").state = NodeState::Down(disk);
        self.workload.node_crashed(id);
        self.reads.retain(|_, read| read.node != id);
    }

    pub fn restart(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        let NodeState::Down(disk) =
            std::mem::replace(&mut node.state, NodeState::Down(SimDisk::default()))
        else {
            panic!("node {id} is already up");
        };
        // The state machine is rebuilt from the snapshot (if any) and then the log.
        let (state, partition, meta) = match disk.snapshot() {
            Some(snapshot) => {
                let (state, partition, meta) =
                    StateMachine::decode(&snapshot.data).expect("our own snapshot");
                let partition =
                    PartitionMachine::restore(&disk, &partition).expect("our own snapshot");
                (state, partition, meta)
            }
            None => (
                StateMachine::default(),
                PartitionMachine::open(&disk),
                founded_meta(self.options.node_count),
            ),
        };
        self.coverage.restarts_from_snapshot += u64::from(state.applied_index > 0);
        let recovered = RecoveredState {
            hard_state: disk.hard_state(),
            applied_index: state.applied_index,
            abstain_until_index: disk.abstain_until_index(),
        };
        self.coverage.restarts_abstaining += u64::from(recovered.abstain_until_index.is_some());
        self.trace
            .line(self.now, || format!("restart {id}: {recovered:?}"));
        self.trace.hash_event(self.now, 2, id, 0);
        let raft = self.start_node(id, disk, recovered);
        let driver = self.new_driver(&raft);
        let node = self.nodes.get_mut(&id).expect("known node");
        node.driver = Some(driver);
        node.state = NodeState::Up(raft);
        node.state_machine_restored(state);
        node.partition = partition;
        node.meta = meta;
        self.history.forget_volatile_state(id);
        self.history.applied_by_node.insert(id, state.applied_index);
    }

    /// Crash and restart with every write synced first: the node forgets only its volatile
    /// state (leader, commit index, election timer).
    pub fn reboot(&mut self, id: NodeId) {
        self.settle();
        self.crash(id, false);
        self.restart(id);
    }

    pub fn partition(&mut self, side_a: &[NodeId], side_b: &[NodeId]) {
        self.trace
            .line(self.now, || format!("partition {side_a:?} | {side_b:?}"));
        self.network.partition(side_a, side_b);
        self.coverage.symmetric_partitions += 1;
    }

    /// Cuts the one-way link `from -> to`.
    pub fn cut(&mut self, from: NodeId, to: NodeId) {
        self.trace.line(self.now, || format!("cut {from} -> {to}"));
        self.coverage.one_way_cuts += 1;
        self.network.cut(from, to);
    }

    /// Cuts node `id` off from everyone, both ways.
    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self
            .ids()
            .into_iter()
            .filter(|&other| other != id)
            .collect();
        self.partition(&[id], &others);
    }

    pub fn heal(&mut self) {
        self.trace.line(self.now, || "heal".to_string());
        self.network.heal();
    }

    /// Nodes whose votes are withheld by the abstain rule, up or (after a crash) down.
    pub fn abstaining_count(&self) -> usize {
        self.nodes
            .values()
            .filter(|node| match &node.state {
                NodeState::Up(raft) => raft.abstain_until_index().is_some(),
                NodeState::Down(disk) => disk.abstain_until_index().is_some(),
            })
            .count()
    }

    fn handle_all_ready(&mut self) {
        loop {
            let mut any = false;
            for id in self.ids() {
                if self.is_up(id) && self.node(id).has_ready() {
                    any = true;
                    self.drive(id, false);
                }
            }
            if !any || self.violation.is_some() {
                break;
            }
        }
        self.check_invariants();
    }

    /// Runs node `id`'s driver: its Readys (or, with `sync_done`, the end of its fdatasync),
    /// then schedules the end of any sync it started, checks what it did and sends its messages.
    fn drive(&mut self, id: NodeId, sync_done: bool) {
        let mut outbox = Outbox::default();
        let node = self.nodes.get_mut(&id).expect("known node");
        let NodeState::Up(raft) = &mut node.state else {
            return;
        };
        let mut recorder = Recorder::new(&mut node.partition, &mut node.meta);
        let driver = node.driver.as_mut().expect("an up node has a driver");
        let was_syncing = driver.is_syncing();
        if sync_done {
            driver.sync_finished(raft, (), &mut outbox, &mut recorder);
        } else {
            // The product offers refused writes again once a tick; here on every run, which
            // only makes the retries more frequent.
            if driver.is_stalled() {
                driver.retry_writes(raft, &mut outbox, &mut recorder);
            }
            driver.process(raft, &mut outbox, &mut recorder);
        }
        if driver.is_stalled() {
            self.coverage.drives_with_refused_writes += 1;
        }
        let syncing = driver.is_syncing();
        let events = recorder.events;
        let truncated = events
            .iter()
            .any(|event| matches!(event, MachineEvent::Truncated));
        self.coverage.batches_checked += recorder.batches_checked;
        self.coverage.meta_commands_applied += recorder.meta_commands;
        self.coverage.meta_effects += recorder.meta_effects;
        let written = events
            .iter()
            .filter(|event| matches!(event, MachineEvent::Written { .. }))
            .count() as u64;
        if was_syncing && !sync_done {
            self.coverage.writes_during_sync += written;
        }
        if sync_done && raft.persisted_index() < raft.storage().last_index() {
            self.coverage.syncs_overtaken_by_writes += 1;
        }
        if !syncing {
            node.sync_due_at = None;
        } else if node.sync_due_at.is_none() {
            let latency = self
                .rng
                .random_range(1..=self.options.max_disk_latency_units);
            let node = self.nodes.get_mut(&id).expect("known node");
            node.sync_due_at = Some(self.now + latency);
        }
        for event in events {
            match event {
                MachineEvent::Truncated => self.coverage.conflicting_suffixes_truncated += 1,
                MachineEvent::Restored(snapshot) => self.install_snapshot(id, &snapshot),
                MachineEvent::Reads(reads) => {
                    for read in reads {
                        self.release_read(id, read.request_id, read.read_index);
                    }
                }
                MachineEvent::Written {
                    entry,
                    previous_term,
                } => {
                    let check = invariants::log_matching::observe_written(
                        &mut self.history,
                        id,
                        &entry,
                        previous_term,
                    );
                    self.record(check);
                }
                MachineEvent::Applied {
                    entry,
                    meta_hash,
                    partition,
                } => self.apply(id, &entry, meta_hash, *partition),
                MachineEvent::OffsetGap {
                    index,
                    base_offset,
                    expected,
                } => self.record(crate::history::violation(
                    "dense offsets",
                    format!(
                        "node {id} applied a batch at index {index} with base offset \
                         {base_offset}, after offsets up to {expected}"
                    ),
                )),
            }
        }
        // What a follower acknowledges must be durable on its disk (skipped when this call also
        // truncated, which may have cut acknowledged entries after they left).
        if !truncated {
            let synced = self.node(id).storage().synced_index();
            for batch in &outbox.0 {
                for message in &batch.messages {
                    if let keel_raft::MessageBody::AppendEntriesResponse(response) = &message.body {
                        if let keel_raft::AppendResult::Accepted { match_index } = response.result {
                            if match_index > synced {
                                self.record(crate::history::violation(
                                    "durable acknowledgement",
                                    format!(
                                        "node {id} acknowledged entries up to {match_index} \
                                         with its disk synced to {synced}"
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
        }
        self.send_all(id, outbox.0);
    }

    fn release_read(&mut self, id: NodeId, request_id: u64, read_index: Option<Index>) {
        self.released_reads.push((request_id, read_index));
        let Some(read) = self.reads.remove(&request_id) else {
            return;
        };
        self.trace.line(self.now, || {
            format!("read {request_id} at {id} released: {read_index:?}")
        });
        self.trace
            .hash_event(self.now, 8, request_id, read_index.unwrap_or(0));
        let Some(read_index) = read_index else {
            self.coverage.reads_failed += 1;
            return;
        };
        self.coverage.reads_released += 1;
        self.coverage.lease_reads_released += u64::from(read.mode == ReadMode::Lease);
        let check = invariants::linearizable_reads::observe_read(
            &self.history,
            id,
            request_id,
            read_index,
            read.acknowledged_floor,
        );
        self.record(check);
    }

    /// The driver replaces the state machine with a snapshot from the leader (before applying
    /// the committed entries after it); the snapshot must be the state every node had there.
    fn install_snapshot(&mut self, id: NodeId, snapshot: &Snapshot) {
        let index = snapshot.meta.last_included_index;
        self.coverage.snapshots_installed += 1;
        self.trace
            .line(self.now, || format!("install snapshot at {id}: {index}"));
        self.trace.hash_event(self.now, 6, id, index);
        let check = invariants::state_machine_safety::observe_snapshot(
            &mut self.history,
            id,
            index,
            StateMachine::decode(&snapshot.data)
                .map(|(state, _, _)| (state.applied_index, state.digest)),
        );
        self.record(check);
        if let Some(machines) = Machines::decode(&snapshot.data) {
            let check = invariants::snapshot_fold::observe_snapshot_partition(
                &self.history,
                id,
                index,
                &machines.partition,
            );
            self.record(check);
        }
        if let Some((state, _, _)) = StateMachine::decode(&snapshot.data) {
            self.nodes
                .get_mut(&id)
                .expect("known node")
                .state_machine_restored(state);
        }
    }

    fn apply(&mut self, id: NodeId, entry: &Entry, meta_hash: Option<u64>, partition: Applied) {
        let check = invariants::state_machine_safety::observe_applied(&mut self.history, id, entry);
        self.record(check);
        let check = invariants::snapshot_fold::observe_partition(
            &mut self.history,
            id,
            entry.index,
            partition,
        );
        self.record(check);
        let node = self.nodes.get_mut(&id).expect("known node");
        let data = (entry.kind == keel_raft::EntryKind::Data)
            .then(|| DataEntry::read(&entry.payload))
            .flatten();
        if let Some(data) = data {
            // Compared forward in index order only: a restarted node applies from the start
            // again, and every node applies the same committed entries.
            let backwards = matches!(node.applied_append_time,
                Some((index, time)) if entry.index > index && data.append_time_ms < time);
            let previous = node.applied_append_time;
            node.applied_append_time = Some((entry.index, data.append_time_ms));
            if backwards {
                self.record(crate::history::violation(
                    "append times never go backwards",
                    format!(
                        "node {id} applied index {} appended at {} ms after {previous:?}",
                        entry.index, data.append_time_ms
                    ),
                ));
            }
        }
        let node = self.nodes.get_mut(&id).expect("known node");
        node.state_machine.apply(entry, meta_hash);
        let digest = node.state_machine.digest;
        let check = invariants::state_machine_safety::observe_digest(
            &mut self.history,
            id,
            entry.index,
            digest,
        );
        self.record(check);
        if let Some(producer) = self
            .workload
            .applied(id, entry.index, entry.term, &entry.payload)
        {
            self.trace.line(self.now, || {
                format!(
                    "acknowledged {:?} at ({}, {})",
                    entry.payload, entry.index, entry.term
                )
            });
            self.history.acknowledged.push(Acknowledgement {
                producer,
                index: entry.index,
                term: entry.term,
                payload: entry.payload.clone(),
            });
        }
    }

    fn send_all(&mut self, from: NodeId, batches: Vec<PeerMessages>) {
        for batch in batches {
            for message in batch.messages {
                self.send(from, batch.to, message);
            }
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: Message) {
        if matches!(message.body, keel_raft::MessageBody::TimeoutNow) {
            if let Some(units) = self.deafen_after_timeout_now_units.take() {
                for other in self.ids().into_iter().filter(|&id| id != from) {
                    self.cut(other, from);
                }
                self.heal_at = Some(self.now + units);
            }
        }
        if self
            .send_filter
            .as_ref()
            .is_some_and(|allow| !allow(from, to, &message))
        {
            return;
        }
        let envelope = Envelope {
            from,
            from_incarnation: self.nodes[&from].incarnation,
            to,
            message,
        };
        self.network.send(&mut self.rng, self.now, envelope);
    }

    /// Ends node `id`'s fdatasync when it is due: the driver then reports what it covered,
    /// releases what waited for it and starts the next one over whatever was written meanwhile.
    fn advance_disk(&mut self, id: NodeId) {
        if !self.is_up(id) {
            return;
        }
        if self.nodes[&id]
            .sync_due_at
            .is_some_and(|due| due <= self.now)
        {
            self.nodes.get_mut(&id).expect("known node").sync_due_at = None;
            self.drive(id, true);
        }
    }

    pub fn check_invariants(&mut self) {
        if self.violation.is_some() {
            return;
        }
        let nodes: Vec<&RaftNode<SimDisk>> = self
            .nodes
            .values()
            .filter_map(|node| match &node.state {
                NodeState::Up(raft) => Some(&**raft),
                NodeState::Down(_) => None,
            })
            .collect();
        let check = invariants::check_step(&mut self.history, &nodes);
        self.record(check);
    }

    pub fn record(&mut self, check: Check) {
        if let Err(violation) = check {
            self.trace
                .line(self.now, || format!("VIOLATION {violation:?}"));
            self.violation.get_or_insert(violation);
        }
    }

    /// The committed log up to node `id`'s commit index, as the nodes applied it (compaction
    /// may have removed its prefix from every log).
    pub fn committed_log(&self, id: NodeId) -> Vec<Entry> {
        (1..=self.node(id).commit_index())
            .map(|index| {
                let (term, payload) = self
                    .history
                    .applied
                    .get(&index)
                    .cloned()
                    .unwrap_or_else(|| panic!("committed index {index} never applied"));
                Entry {
                    index,
                    term,
                    kind: keel_raft::EntryKind::Data,
                    payload,
                }
            })
            .collect()
    }
}
