//! Who this node is and how a cluster is founded (docs/OPERATIONS.md "A real cluster").
//!
//! Identity: `(node_id, incarnation)`, stored in the data directory's `identity` record the
//! first time a node starts on an empty directory. The incarnation is random, so a node whose
//! directory was wiped comes back as a different member.
//!
//! Founding: a node on an empty directory with peers says hello to every peer. Only when ALL
//! answered and ALL are empty too does it found, with every founder's identity; the founders
//! are written to the `founders` record before group 0 starts, and the lowest id campaigns at
//! once. A peer that already holds cluster state answers with the founders it knows: if this
//! node is among them with its own incarnation (it founded together with them and has simply not
//! written its record yet) it adopts them; otherwise it is a replacement: it adopts the founders
//! too (group 0's first configuration, where it is no member under its new incarnation), never
//! founds a rogue cluster, and waits to be added (`keel cluster replace-node`). Decision notes:
//! docs/DECISIONS.md "Founding".
//!
//! After founding every node keeps saying hello, twice a second, with its incarnation and its
//! standing in each of its groups (`Announcement`): what `replace-node` needs to learn a new
//! incarnation and to see a replacement through. The same hello carries the node's latest
//! capacity report (node/capacity.rs), which group 0's leader admits creates by.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use keel_storage::atomic_file::{load_record, store_record};
use keel_storage::io::RealIo;
use keel_storage::StorageError;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::capacity::{CapacityBoard, CapacityReport};
use super::{NodeError, CONTROL_GROUP};
use crate::group::replace::{Announcement, MemberState, Reports};
use crate::group::Peers;
use crate::limits::{ANNOUNCE_INTERVAL, HELLO_INTERVAL};
use crate::meta::NodeInfo;
use crate::transport::{GroupId, NodeId, PeerMessage};

const IDENTITY_FILE: &str = "identity";
const IDENTITY_MAGIC: [u8; 4] = *b"KNID";
const FOUNDERS_FILE: &str = "founders";
const FOUNDERS_MAGIC: [u8; 4] = *b"KFND";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: NodeId,
    pub incarnation: u64,
}

impl Identity {
    /// Loads the identity, or makes a new incarnation on an empty directory. A directory that
    /// belongs to another node id is refused: starting on it would impersonate that node.
    pub fn load_or_create(data_dir: &Path, node_id: NodeId) -> Result<Identity, NodeError> {
        if let Some(body) = load_record(&RealIo, data_dir, IDENTITY_FILE, IDENTITY_MAGIC)? {
            let identity: Identity = postcard::from_bytes(&body).map_err(|error| {
                NodeError::Storage(StorageError::Corruption {
                    path: data_dir.join(IDENTITY_FILE),
                    offset: 0,
                    reason: error.to_string(),
                })
            })?;
            if identity.node_id != node_id {
                return Err(NodeError::Invalid(format!(
                    "data dir {} belongs to node {}, not node {node_id}",
                    data_dir.display(),
                    identity.node_id
                )));
            }
            return Ok(identity);
        }
        let identity = Identity {
            node_id,
            // Zero is reserved for "unknown" in logs and tools.
            incarnation: rand::rng().next_u64().max(1),
        };
        let body = postcard::to_allocvec(&identity).expect("identity encodes");
        store_record(&RealIo, data_dir, IDENTITY_FILE, IDENTITY_MAGIC, &body)?;
        Ok(identity)
    }
}

pub fn load_founders(data_dir: &Path) -> Result<Option<Vec<NodeInfo>>, NodeError> {
    let Some(body) = load_record(&RealIo, data_dir, FOUNDERS_FILE, FOUNDERS_MAGIC)? else {
        return Ok(None);
    };
    postcard::from_bytes(&body).map(Some).map_err(|error| {
        NodeError::Storage(StorageError::Corruption {
            path: data_dir.join(FOUNDERS_FILE),
            offset: 0,
            reason: error.to_string(),
        })
    })
}

pub fn store_founders(data_dir: &Path, founders: &[NodeInfo]) -> Result<(), NodeError> {
    let body = postcard::to_allocvec(founders).expect("founders encode");
    store_record(&RealIo, data_dir, FOUNDERS_FILE, FOUNDERS_MAGIC, &body)?;
    Ok(())
}

/// The control message of founding.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hello {
    node: NodeInfo,
    /// The founders the sender knows; `None` while it is empty.
    founders: Option<Vec<NodeInfo>>,
    /// The sender is still founding and wants an answer.
    want_reply: bool,
    /// The sender's standing in each of its groups (empty while founding).
    groups: Vec<(GroupId, MemberState)>,
    /// The sender's latest capacity report (`None` while founding). Last, so a node of an older
    /// release still reads the fields before it (postcard ignores trailing bytes), and a hello
    /// from such a node decodes as [`HelloWithoutCapacity`].
    capacity: Option<CapacityReport>,
}

/// A hello as nodes sent it before capacity reports existed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HelloWithoutCapacity {
    node: NodeInfo,
    founders: Option<Vec<NodeInfo>>,
    want_reply: bool,
    groups: Vec<(GroupId, MemberState)>,
}

pub struct Founding {
    data_dir: PathBuf,
    me: NodeInfo,
    preset: Option<Vec<NodeInfo>>,
}

impl Founding {
    pub fn new(data_dir: &Path, me: NodeInfo, preset: Option<Vec<NodeInfo>>) -> Founding {
        Founding {
            data_dir: data_dir.to_path_buf(),
            me,
            preset,
        }
    }

    /// Returns the founders (group 0's first voters) once known, and the task that keeps
    /// answering other nodes' hellos.
    pub async fn run(
        self,
        peers: Arc<Peers>,
        mut control: mpsc::Receiver<PeerMessage>,
        peer_addresses: &BTreeMap<NodeId, SocketAddr>,
        reports: Arc<Reports>,
        capacity: Arc<CapacityBoard>,
    ) -> Result<(Vec<NodeInfo>, tokio::task::JoinHandle<()>), NodeError> {
        let stored = load_founders(&self.data_dir)?;
        let others: Vec<NodeId> = peer_addresses
            .keys()
            .copied()
            .filter(|&id| id != self.me.node_id)
            .collect();
        let founders = match (stored, self.preset.clone()) {
            (Some(founders), _) => founders,
            (None, Some(preset)) => {
                store_founders(&self.data_dir, &preset)?;
                preset
            }
            (None, None) if others.is_empty() => {
                let founders = vec![self.me.clone()];
                store_founders(&self.data_dir, &founders)?;
                tracing::info!("founding a single-node cluster");
                founders
            }
            (None, None) => self.discover(&peers, &mut control, &others).await?,
        };
        let me = self.me.clone();
        let task = tokio::spawn(announce(
            control,
            peers,
            me,
            founders.clone(),
            reports,
            capacity,
        ));
        Ok((founders, task))
    }

    async fn discover(
        &self,
        peers: &Peers,
        control: &mut mpsc::Receiver<PeerMessage>,
        others: &[NodeId],
    ) -> Result<Vec<NodeInfo>, NodeError> {
        tracing::info!(peers = ?others, "empty data dir: asking every peer before founding");
        let mut heard: HashMap<NodeId, Hello> = HashMap::new();
        let mut ticker = tokio::time::interval(HELLO_INTERVAL);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let hello = Hello {
                        node: self.me.clone(),
                        founders: None,
                        want_reply: true,
                        groups: Vec::new(),
                        capacity: None,
                    };
                    send_hello(peers, others.iter().copied(), &hello);
                }
                message = control.recv() => {
                    let Some(message) = message else {
                        return Err(NodeError::Invalid("transport closed while founding".into()));
                    };
                    let Some(hello) = decode_hello(&message) else { continue };
                    if hello.want_reply {
                        let answer = Hello {
                            node: self.me.clone(),
                            founders: None,
                            want_reply: false,
                            groups: Vec::new(),
                            capacity: None,
                        };
                        send_hello(peers, [message.from], &answer);
                    }
                    heard.insert(message.from, hello);
                }
            }
            if let Some(founders) = heard.values().find_map(|hello| hello.founders.clone()) {
                store_founders(&self.data_dir, &founders)?;
                if founders.contains(&self.me) {
                    tracing::info!("joining the cluster founded with this node");
                } else {
                    // Group 0 starts with the founders' configuration, in which this incarnation
                    // is no member: it follows the log and never votes until it is added.
                    tracing::warn!(
                        "a peer holds cluster state and this node (new incarnation {}) is not a \
                         founder: waiting to be added with `keel cluster replace-node --id {}`",
                        self.me.incarnation,
                        self.me.node_id
                    );
                }
                return Ok(founders);
            }
            if others.iter().all(|id| heard.contains_key(id)) {
                let mut founders: Vec<NodeInfo> =
                    heard.values().map(|hello| hello.node.clone()).collect();
                founders.push(self.me.clone());
                founders.sort_by_key(|info| info.node_id);
                store_founders(&self.data_dir, &founders)?;
                tracing::info!(founders = ?founders.iter().map(|f| f.node_id).collect::<Vec<_>>(), "every peer is empty: founding the cluster");
                // Tell the others at once so they need not wait for their next round.
                let hello = Hello {
                    node: self.me.clone(),
                    founders: Some(founders.clone()),
                    want_reply: false,
                    groups: Vec::new(),
                    capacity: None,
                };
                send_hello(peers, others.iter().copied(), &hello);
                return Ok(founders);
            }
        }
    }
}

fn send_hello(peers: &Peers, to: impl IntoIterator<Item = NodeId>, hello: &Hello) {
    let payload = Bytes::from(postcard::to_allocvec(hello).expect("hello encodes"));
    for peer in to {
        if let Some(sender) = peers.senders.get(&peer) {
            let _ = sender.try_send(CONTROL_GROUP, payload.clone());
        }
    }
}

fn decode_hello(message: &PeerMessage) -> Option<Hello> {
    let decoded = postcard::from_bytes::<Hello>(&message.payload).or_else(|error| {
        postcard::from_bytes::<HelloWithoutCapacity>(&message.payload)
            .map(|old| Hello {
                node: old.node,
                founders: old.founders,
                want_reply: old.want_reply,
                groups: old.groups,
                capacity: None,
            })
            .map_err(|_| error)
    });
    match decoded {
        Ok(hello) if hello.node.node_id == message.from => Some(hello),
        Ok(_) => {
            tracing::warn!(from = message.from, "hello naming another node ignored");
            None
        }
        Err(error) => {
            tracing::warn!(from = message.from, %error, "malformed control message ignored");
            None
        }
    }
}

/// After founding, answers every hello with the founders, so late or replacement nodes learn
/// the cluster exists.
/// After founding: answers founding hellos with the founders, tells every peer about this node
/// twice a second, and keeps what each peer last said of itself.
async fn announce(
    mut control: mpsc::Receiver<PeerMessage>,
    peers: Arc<Peers>,
    me: NodeInfo,
    founders: Vec<NodeInfo>,
    reports: Arc<Reports>,
    capacity: Arc<CapacityBoard>,
) {
    let hello = |want_reply: bool| Hello {
        node: me.clone(),
        founders: Some(founders.clone()),
        want_reply,
        groups: reports.local().into_iter().collect(),
        capacity: capacity.local(),
    };
    let everyone: Vec<NodeId> = peers.senders.keys().copied().collect();
    let mut ticker = tokio::time::interval(ANNOUNCE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            _ = ticker.tick() => {
                send_hello(&peers, everyone.iter().copied(), &hello(false));
                continue;
            }
            message = control.recv() => message,
        };
        let Some(message) = message else { return };
        let Some(heard) = decode_hello(&message) else {
            continue;
        };
        if heard.want_reply {
            send_hello(&peers, [message.from], &hello(false));
        }
        if let Some(report) = heard.capacity {
            capacity.record(message.from, report);
        }
        reports.record(
            message.from,
            Announcement {
                incarnation: heard.node.incarnation,
                groups: heard.groups.into_iter().collect(),
                heard_at: std::time::Instant::now(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::capacity::{measure, Hosted};

    fn node(node_id: NodeId) -> NodeInfo {
        NodeInfo {
            node_id,
            incarnation: 7,
            peer_address: "127.0.0.1:1".into(),
            client_address: "127.0.0.1:1".into(),
        }
    }

    fn message(from: NodeId, payload: Vec<u8>) -> PeerMessage {
        PeerMessage {
            from,
            group: CONTROL_GROUP,
            payload: Bytes::from(payload),
        }
    }

    /// A rolling upgrade mixes releases: each must read the other's hellos.
    #[test]
    fn hellos_with_and_without_capacity_decode_on_both_releases() {
        let dir = tempfile::tempdir().unwrap();
        let report = measure(
            dir.path(),
            Hosted {
                replicas: 1,
                max_partition_replicas: 10,
                offline: vec![(4, "cannot open".into())],
            },
        );
        let groups = vec![(0, MemberState::Voter)];
        let new = Hello {
            node: node(2),
            founders: Some(vec![node(1), node(2)]),
            want_reply: false,
            groups: groups.clone(),
            capacity: Some(report.clone()),
        };
        let bytes = postcard::to_allocvec(&new).unwrap();
        let decoded = decode_hello(&message(2, bytes.clone())).expect("new hello");
        assert_eq!(decoded.capacity, Some(report));
        // An older node reads the fields it knows and ignores the report after them.
        let old: HelloWithoutCapacity = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(
            (old.node.clone(), old.groups.clone()),
            (node(2), groups.clone())
        );
        // A hello from an older node decodes, without a report.
        let old_bytes = postcard::to_allocvec(&old).unwrap();
        let decoded = decode_hello(&message(2, old_bytes)).expect("old hello");
        assert_eq!((decoded.groups, decoded.capacity), (groups, None));
        // Garbage and a hello naming another node are ignored.
        assert!(decode_hello(&message(2, vec![0xff; 3])).is_none());
        assert!(decode_hello(&message(3, bytes)).is_none());
    }
}
