//! The metadata group's state machine (group 0, DESIGN.md 5): which nodes exist (id,
//! incarnation, advertised address), which topics exist, where each partition's replicas live,
//! and the producer ids handed out. Every node runs group 0 and applies the same committed
//! commands in the same order, so every node holds the same map.
//!
//! Commands are postcard-encoded [`MetaCommand`]s in entries of kind `Meta`. Applying is
//! deterministic and total: a command that cannot apply (a topic that already exists) yields a
//! typed error for the proposer and changes nothing. Placement is decided by the leader when it
//! proposes and carried in the command, so replay never depends on anything but the log.

pub mod actor;

use std::collections::BTreeMap;

use keel_client::wire::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::raft::NodeId;
use crate::transport::GroupId;

/// The metadata group's id.
pub const META_GROUP: GroupId = 0;

/// One cluster member as group 0 knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: NodeId,
    /// Random id of the node's data directory (DESIGN.md 5).
    pub incarnation: u64,
    /// Address peers dial (`--peers`).
    pub peer_address: String,
    /// Address clients dial (`--advertise`, else the listen address).
    pub client_address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPlacement {
    /// The Raft group that replicates this partition.
    pub group: GroupId,
    /// Replica nodes; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: String,
    pub replication_factor: u16,
    pub partitions: Vec<PartitionPlacement>,
}

/// A change to the map, proposed to group 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// The founding entry: the first members (written by the founder, DESIGN.md 5).
    Found {
        nodes: Vec<NodeInfo>,
    },
    CreateTopic {
        name: String,
        replication_factor: u16,
        /// Replica lists, one per partition; group ids are assigned when applied.
        placement: Vec<Vec<NodeId>>,
    },
    DeleteTopic {
        name: String,
    },
    AllocateProducerId,
}

/// What applying a command produced, for the proposer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaOutcome {
    Done,
    TopicCreated(TopicInfo),
    ProducerId(u64),
}

/// The map itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub topics: BTreeMap<String, TopicInfo>,
    /// Next group id to assign; group 0 is this group.
    pub next_group: GroupId,
    pub next_producer_id: u64,
}

impl MetaState {
    pub fn new() -> MetaState {
        MetaState {
            next_group: 1,
            ..MetaState::default()
        }
    }

    /// Applies one committed command.
    pub fn apply(&mut self, command: MetaCommand) -> Result<MetaOutcome, ErrorCode> {
        match command {
            MetaCommand::Found { nodes } => {
                for node in nodes {
                    self.nodes.insert(node.node_id, node);
                }
                Ok(MetaOutcome::Done)
            }
            MetaCommand::CreateTopic {
                name,
                replication_factor,
                placement,
            } => {
                if self.topics.contains_key(&name) {
                    return Err(ErrorCode::TopicAlreadyExists);
                }
                let valid = !placement.is_empty()
                    && placement.iter().all(|replicas| {
                        replicas.len() == usize::from(replication_factor)
                            && replicas.iter().all(|id| self.nodes.contains_key(id))
                    });
                if !valid {
                    return Err(ErrorCode::InvalidTopicConfig);
                }
                let partitions = placement
                    .into_iter()
                    .map(|replicas| {
                        let group = self.next_group;
                        self.next_group += 1;
                        PartitionPlacement { group, replicas }
                    })
                    .collect();
                let topic = TopicInfo {
                    name: name.clone(),
                    replication_factor,
                    partitions,
                };
                self.topics.insert(name, topic.clone());
                Ok(MetaOutcome::TopicCreated(topic))
            }
            MetaCommand::DeleteTopic { name } => match self.topics.remove(&name) {
                Some(_) => Ok(MetaOutcome::Done),
                None => Err(ErrorCode::UnknownTopic),
            },
            MetaCommand::AllocateProducerId => {
                let id = self.next_producer_id;
                self.next_producer_id += 1;
                Ok(MetaOutcome::ProducerId(id))
            }
        }
    }

    /// Replica lists for a new topic: consecutive nodes (in id order) starting at a rotating
    /// position, so the preferred leaders (first replicas) spread over the nodes both within a
    /// topic and across topics.
    pub fn place(&self, partitions: u32, replication_factor: u16) -> Vec<Vec<NodeId>> {
        let nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
        let existing: u64 = self
            .topics
            .values()
            .map(|topic| topic.partitions.len() as u64)
            .sum();
        (0..u64::from(partitions))
            .map(|partition| {
                let start = ((existing + partition) % nodes.len() as u64) as usize;
                (0..usize::from(replication_factor))
                    .map(|offset| nodes[(start + offset) % nodes.len()])
                    .collect()
            })
            .collect()
    }

    /// Every partition group `node` replicates: (group, topic, partition, replicas).
    pub fn groups_of(&self, node: NodeId) -> Vec<(GroupId, String, u32, Vec<NodeId>)> {
        self.topics
            .values()
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, placement)| placement.replicas.contains(&node))
                    .map(|(partition, placement)| {
                        (
                            placement.group,
                            topic.name.clone(),
                            partition as u32,
                            placement.replicas.clone(),
                        )
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with_nodes(count: u64) -> MetaState {
        let mut state = MetaState::new();
        let nodes = (1..=count)
            .map(|node_id| NodeInfo {
                node_id,
                incarnation: node_id * 100,
                peer_address: format!("127.0.0.1:{}", 7000 + node_id),
                client_address: format!("127.0.0.1:{}", 7000 + node_id),
            })
            .collect();
        state.apply(MetaCommand::Found { nodes }).unwrap();
        state
    }

    #[test]
    fn placement_spreads_preferred_leaders_over_nodes() {
        let state = state_with_nodes(3);
        let placement = state.place(3, 3);
        let leaders: Vec<NodeId> = placement.iter().map(|replicas| replicas[0]).collect();
        assert_eq!(leaders, vec![1, 2, 3]);
        assert!(placement.iter().all(|replicas| {
            let mut sorted = replicas.clone();
            sorted.sort();
            sorted.dedup();
            sorted.len() == 3
        }));
    }

    #[test]
    fn create_twice_is_an_error_and_changes_nothing() {
        let mut state = state_with_nodes(3);
        let placement = state.place(2, 2);
        let command = MetaCommand::CreateTopic {
            name: "t".into(),
            replication_factor: 2,
            placement,
        };
        let MetaOutcome::TopicCreated(topic) = state.apply(command.clone()).unwrap() else {
            panic!("expected a created topic");
        };
        assert_eq!(topic.partitions.len(), 2);
        assert_eq!(topic.partitions[0].group, 1);
        let before = state.clone();
        assert_eq!(state.apply(command), Err(ErrorCode::TopicAlreadyExists));
        assert_eq!(state, before);
        // A later topic's first partition leads on the next node.
        assert_eq!(state.place(1, 1), vec![vec![3]]);
    }

    #[test]
    fn placement_naming_an_unknown_node_is_refused() {
        let mut state = state_with_nodes(1);
        let command = MetaCommand::CreateTopic {
            name: "t".into(),
            replication_factor: 1,
            placement: vec![vec![9]],
        };
        assert_eq!(state.apply(command), Err(ErrorCode::InvalidTopicConfig));
        assert!(state.topics.is_empty());
    }
}
