//! The metadata group's actor: feeds group 0's core, applies committed commands to the map, and
//! starts or stops the partition groups this node replicates as topics come and go.

use std::sync::Arc;

use bytes::Bytes;
use keel_wire::ErrorCode;
use tokio::sync::{mpsc, oneshot, watch};

use super::{MetaCommand, MetaEffect, MetaOutcome, MetaState, NodeInfo, TopicConfig};
use crate::coordinator::OFFSETS_TOPIC;
use crate::group::actor::{self, Control, GroupActor, Waiters};
use crate::group::driver::Machine;
use crate::group::storage_log::{fatal_message, StorageLog};
use crate::group::{GroupHost, PeerBatch, RaftGroup};
use crate::limits::META_SNAPSHOT_EVERY_ENTRIES;
use crate::transport::NodeId;
use keel_raft::{Entry, EntryKind, ProposeError, Role, Snapshot, Term};

pub enum MetaInput {
    Peer(PeerBatch),
    Propose {
        command: MetaCommand,
        reply: oneshot::Sender<Result<MetaOutcome, ErrorCode>>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// What request handlers see of group 0.
#[derive(Clone)]
pub struct MetaHandle {
    pub inbox: mpsc::Sender<MetaInput>,
    pub state: watch::Receiver<MetaState>,
    pub leader: watch::Receiver<Option<NodeId>>,
}

/// The node as group 0 sees it: a group's host that also carries out what applying the map asks
/// of it (the node implements it).
pub trait MetaHost: GroupHost {
    fn carry_out(&self, effect: MetaEffect);
    /// After a restart from a snapshot: removes the data of groups the map no longer places on
    /// this node (a topic deleted before the snapshot whose removal a crash interrupted: the
    /// delete is not in the log any more to be replayed).
    fn remove_unplaced_groups(&self, map: &MetaState);
}

struct MetaMachine {
    state: watch::Sender<MetaState>,
    leader: watch::Sender<Option<NodeId>>,
    waiters: Waiters<MetaOutcome>,
    host: Arc<dyn MetaHost>,
    /// The founders (from the founding record), proposed as the first command by a leader
    /// that finds the map empty.
    founders: Vec<NodeInfo>,
    /// Set once this leader's no-op was applied, so it proposes `Found` at most once per term.
    founding_proposed_in: Option<Term>,
    /// Partitions `__consumer_offsets` gets if this leader creates it.
    offsets_partitions: u32,
    /// The term in which this leader proposed creating `__consumer_offsets`, at most once each.
    offsets_topic_proposed_in: Option<Term>,
}

impl Machine<StorageLog> for MetaMachine {
    fn apply(&mut self, entry: &Entry, _log: &StorageLog) {
        let outcome = match entry.kind {
            EntryKind::Meta => match postcard::from_bytes::<MetaCommand>(&entry.payload) {
                Ok(command) => self.apply_command(command),
                Err(error) => {
                    // Only a leader of this code base writes Meta entries; an undecodable one is
                    // a bug or a newer format. Skipping keeps every node's map identical.
                    tracing::error!(index = entry.index, %error, "undecodable metadata command skipped");
                    Err(ErrorCode::Malformed)
                }
            },
            _ => Ok(MetaOutcome::Done),
        };
        self.waiters
            .answer(entry.index, entry.term, || outcome, ErrorCode::Unavailable);
    }

    fn snapshot(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(&*self.state.borrow()).expect("the map encodes"))
    }

    /// A snapshot from the leader: the map jumps ahead, and this node starts and stops the
    /// replicas of the topics created and deleted in between, as applying them would have.
    fn restore(&mut self, _log: &StorageLog, snapshot: &Snapshot) {
        self.restore_map(snapshot);
    }

    fn on_role_change(&mut self, role: Role, leader: Option<NodeId>, _term: Term) {
        self.leader.send_replace(leader);
        if role != Role::Leader {
            self.waiters.fail_all(&ErrorCode::Unavailable);
        }
    }
}

impl MetaMachine {
    fn restore_map(&mut self, snapshot: &Snapshot) {
        let restored: MetaState = postcard::from_bytes(&snapshot.data).unwrap_or_else(|error| {
            fatal_message(&format!(
                "the metadata snapshot through {} does not decode: {error}",
                snapshot.meta.last_included_index
            ))
        });
        let before = self.state.send_replace(restored.clone());
        for effect in MetaState::effects_between(&before, &restored) {
            self.host.carry_out(effect);
        }
        tracing::info!(
            through = snapshot.meta.last_included_index,
            topics = restored.topics.len(),
            "metadata map restored from a snapshot"
        );
    }

    fn apply_command(&mut self, command: MetaCommand) -> Result<MetaOutcome, ErrorCode> {
        let (mut result, mut effect) = (Ok(MetaOutcome::Done), None);
        self.state
            .send_modify(|state| (result, effect) = state.execute(command));
        if let Some(effect) = effect {
            self.host.carry_out(effect);
        }
        result
    }
}

impl GroupActor for MetaMachine {
    type Input = MetaInput;

    fn classify(input: MetaInput) -> Control<MetaInput> {
        match input {
            MetaInput::Peer(batch) => Control::Peer(batch),
            MetaInput::Shutdown { done } => Control::Shutdown(done),
            other => Control::Other(other),
        }
    }

    fn handle(&mut self, group: &mut RaftGroup, input: MetaInput) {
        match input {
            MetaInput::Propose { command, reply } => propose(group, self, command, reply),
            MetaInput::Peer(batch) => group.step(batch),
            // The loop takes shutdowns (GroupActor::classify); answering keeps the caller unstuck.
            MetaInput::Shutdown { done } => {
                let _ = done.send(());
            }
        }
    }

    fn after_round(&mut self, group: &mut RaftGroup) {
        propose_founding_if_needed(group, self);
        propose_offsets_topic_if_needed(group, self);
        compact_if_due(group, self);
    }

    fn on_stop(&mut self) {
        self.waiters.fail_all(&ErrorCode::Unavailable);
    }
}

/// What a leader of group 0 writes into a map that lacks it: the founders (from the founding
/// record) and the partition count of `__consumer_offsets`.
pub struct ClusterSeed {
    pub founders: Vec<NodeInfo>,
    pub offsets_partitions: u32,
}

/// Runs group 0 until shut down (group/actor.rs has the loop).
pub async fn run(
    group: RaftGroup,
    inbox: mpsc::Receiver<MetaInput>,
    state: watch::Sender<MetaState>,
    leader: watch::Sender<Option<NodeId>>,
    host: Arc<dyn MetaHost>,
    seed: ClusterSeed,
    campaign_at_start: bool,
) {
    let ClusterSeed {
        founders,
        offsets_partitions,
    } = seed;
    let mut machine = MetaMachine {
        state,
        leader,
        waiters: Waiters::default(),
        host: host.clone(),
        founders,
        founding_proposed_in: None,
        offsets_partitions,
        offsets_topic_proposed_in: None,
    };
    // A restart from a snapshot: the map as of it, and the replicas it places here.
    if let Some(snapshot) = group.node.snapshot().cloned() {
        machine.restore_map(&snapshot);
        host.remove_unplaced_groups(&machine.state.borrow());
    }
    actor::run(group, inbox, machine, host.tick(), campaign_at_start).await;
}

fn propose(
    group: &mut RaftGroup,
    machine: &mut MetaMachine,
    command: MetaCommand,
    reply: oneshot::Sender<Result<MetaOutcome, ErrorCode>>,
) {
    let payload = match postcard::to_allocvec(&command) {
        Ok(bytes) => Bytes::from(bytes),
        Err(error) => {
            tracing::error!(%error, "encoding a metadata command");
            let _ = reply.send(Err(ErrorCode::Malformed));
            return;
        }
    };
    match group.node.propose_meta(payload) {
        Ok((index, term)) => {
            machine.waiters.insert(index, term, reply);
        }
        Err(ProposeError::NotLeader { leader_hint }) => {
            let leader_addr = leader_hint.and_then(|id| machine.host.client_address(id));
            let _ = reply.send(Err(ErrorCode::NotLeader { leader_addr }));
        }
        Err(_) => {
            let _ = reply.send(Err(ErrorCode::Overloaded));
        }
    }
}

/// A fresh cluster's first leader writes the founders into the map (docs/DECISIONS.md "Founding"),
/// once its no-op has applied so it knows whether an earlier leader already did.
fn propose_founding_if_needed(group: &mut RaftGroup, machine: &mut MetaMachine) {
    let node = &group.node;
    if node.role() != Role::Leader
        || machine.founding_proposed_in == Some(node.term())
        || node.applied_index() < node.commit_index()
        || node.term_at(node.applied_index()) != Some(node.term())
        || !machine.state.borrow().nodes.is_empty()
        || machine.founders.is_empty()
    {
        return;
    }
    machine.founding_proposed_in = Some(node.term());
    let (reply, _) = oneshot::channel();
    let command = MetaCommand::Found {
        nodes: machine.founders.clone(),
    };
    propose(group, machine, command, reply);
    group.process(machine);
}

/// A founded cluster's leader creates the internal topic `__consumer_offsets` (consumer groups'
/// committed offsets, docs/CONSUMER-GROUPS.md) once its no-op has applied and the map shows no
/// such topic. Its partition count is this leader's setting; it never changes afterwards, since
/// clients can neither delete nor alter a reserved topic and a group's partition is its id's
/// hash modulo the count.
fn propose_offsets_topic_if_needed(group: &mut RaftGroup, machine: &mut MetaMachine) {
    let node = &group.node;
    if node.role() != Role::Leader
        || machine.offsets_topic_proposed_in == Some(node.term())
        || node.applied_index() < node.commit_index()
        || node.term_at(node.applied_index()) != Some(node.term())
    {
        return;
    }
    let command = {
        let state = machine.state.borrow();
        if state.nodes.is_empty() || state.topics.contains_key(OFFSETS_TOPIC) {
            return;
        }
        let replication_factor = state.nodes.len().min(3) as u16;
        MetaCommand::CreateTopicWithConfig {
            name: OFFSETS_TOPIC.to_string(),
            replication_factor,
            placement: state.place(machine.offsets_partitions.max(1), replication_factor),
            // Compacted by snapshots of its state, never by retention.
            config: TopicConfig::UNLIMITED,
        }
    };
    machine.offsets_topic_proposed_in = Some(node.term());
    let (reply, _) = oneshot::channel();
    propose(group, machine, command, reply);
    group.process(machine);
}

/// Every `META_SNAPSHOT_EVERY_ENTRIES` applied entries, the map as applied becomes a snapshot at
/// the applied index and the log below it goes, so a restart reads the map and a short tail
/// (docs/ARCHITECTURE.md "Snapshots"). Unlike a partition's, this snapshot is the live state:
/// the map is all there is to the group, and it is taken exactly at the index it is labelled.
fn compact_if_due(group: &mut RaftGroup, machine: &MetaMachine) {
    group.compact_live_state_if_due(META_SNAPSHOT_EVERY_ENTRIES, "metadata", || {
        postcard::to_allocvec(&*machine.state.borrow()).map(Bytes::from)
    });
}
