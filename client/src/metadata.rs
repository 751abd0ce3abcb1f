//! The client's cluster map: node addresses and partition leaders, learned from
//! `Request::Metadata` answers and corrected by `NotLeader` redirects. Pure (no I/O), so the
//! routing decisions are unit-tested; `client.rs` does the fetching.

use std::collections::{BTreeMap, HashMap};

use crate::address::BrokerAddress;
use crate::wire::messages::{MetadataResponse, NodeId};

/// What the map says about where a partition's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LeaderLookup {
    Leader(BrokerAddress),
    /// Nothing cached for the topic: refresh the map.
    NotCached,
    UnknownPartition {
        partitions: u32,
    },
    /// No leader (election) or the leader's address is not in the map.
    NoLeader,
}

#[derive(Debug, Default)]
pub(crate) struct ClusterMap {
    nodes: BTreeMap<NodeId, BrokerAddress>,
    /// Per topic: the leader of each partition, indexed by partition number. Topics the
    /// cluster could not describe are not kept: a negative answer must not outlive the moment
    /// (the topic may be created a second later), so the next lookup asks again.
    topics: HashMap<String, Vec<Option<NodeId>>>,
    /// Per topic: each partition's replicas. When no leader is known (an election, or a node
    /// that does not replicate the partition answered the metadata request), requests go to a
    /// replica, which knows its leader and redirects.
    replicas: HashMap<String, Vec<Vec<NodeId>>>,
    /// Rotates the replica guessed when no leader is known, so a dead replica is not retried
    /// forever.
    guesses: std::sync::atomic::AtomicUsize,
}

impl ClusterMap {
    /// Takes in a metadata answer: the node list replaces the old one (it is always complete);
    /// each topic it describes replaces that topic's entry, and a topic it answers with an error
    /// (or with no partitions) is forgotten. Returns the reasons for which parts were refused (a
    /// node whose advertised address does not parse, a topic whose partitions are not numbered
    /// `0..n`): those are logged by the caller, the rest is used.
    pub(crate) fn apply(&mut self, response: &MetadataResponse) -> Vec<String> {
        let mut refused = Vec::new();
        let mut nodes = BTreeMap::new();
        for node in &response.nodes {
            match BrokerAddress::parse(&node.address) {
                Ok(address) => {
                    nodes.insert(node.node_id, address);
                }
                Err(error) => refused.push(format!("node {}: {error}", node.node_id)),
            }
        }
        self.nodes = nodes;
        for topic in &response.topics {
            let partitions = match &topic.partitions {
                Ok(partitions) if !partitions.is_empty() => partitions,
                _ => {
                    self.topics.remove(&topic.name);
                    continue;
                }
            };
            let mut leaders = vec![None; partitions.len()];
            let mut replicas = vec![Vec::new(); partitions.len()];
            let mut seen = vec![false; partitions.len()];
            let mut dense = true;
            for partition in partitions {
                match usize::try_from(partition.partition) {
                    Ok(index) if index < leaders.len() && !seen[index] => {
                        seen[index] = true;
                        leaders[index] = partition.leader;
                        replicas[index] = partition.replicas.clone();
                    }
                    _ => dense = false,
                }
            }
            if dense {
                self.topics.insert(topic.name.clone(), leaders);
                self.replicas.insert(topic.name.clone(), replicas);
            } else {
                self.topics.remove(&topic.name);
                self.replicas.remove(&topic.name);
                refused.push(format!(
                    "topic {:?}: partitions are not numbered 0..{}",
                    topic.name,
                    partitions.len()
                ));
            }
        }
        refused
    }

    pub(crate) fn leader(&self, topic: &str, partition: u32) -> LeaderLookup {
        match self.topics.get(topic) {
            None => LeaderLookup::NotCached,
            Some(leaders) => match leaders.get(partition as usize) {
                None => LeaderLookup::UnknownPartition {
                    partitions: leaders.len() as u32,
                },
                Some(None) => self.guess_replica(topic, partition),
                Some(Some(node_id)) => match self.nodes.get(node_id) {
                    Some(address) => LeaderLookup::Leader(address.clone()),
                    None => self.guess_replica(topic, partition),
                },
            },
        }
    }

    /// A replica of the partition, in rotation, when the leader is unknown.
    fn guess_replica(&self, topic: &str, partition: u32) -> LeaderLookup {
        let replicas: Vec<&BrokerAddress> = self
            .replicas
            .get(topic)
            .and_then(|partitions| partitions.get(partition as usize))
            .map(|ids| ids.iter().filter_map(|id| self.nodes.get(id)).collect())
            .unwrap_or_default();
        if replicas.is_empty() {
            return LeaderLookup::NoLeader;
        }
        let turn = self
            .guesses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LeaderLookup::Leader(replicas[turn % replicas.len()].clone())
    }

    /// The topic's partition count, if known.
    pub(crate) fn partition_count(&self, topic: &str) -> Option<u32> {
        self.topics.get(topic).map(|leaders| leaders.len() as u32)
    }

    /// A `NotLeader` redirect named `address`: remember that node as the leader, if the map
    /// knows it, so the next request goes there directly.
    pub(crate) fn note_leader(&mut self, topic: &str, partition: u32, address: &BrokerAddress) {
        let node_id = self
            .nodes
            .iter()
            .find(|(_, node_address)| *node_address == address)
            .map(|(node_id, _)| *node_id);
        if let Some(leaders) = self.topics.get_mut(topic) {
            if let Some(leader) = leaders.get_mut(partition as usize) {
                *leader = node_id;
            }
        }
    }

    /// Forget the topic (deleted, or its map is suspect): the next lookup refreshes it.
    pub(crate) fn forget_topic(&mut self, topic: &str) {
        self.topics.remove(topic);
    }

    /// Every node address the map knows, by node id.
    pub(crate) fn node_addresses(&self) -> Vec<BrokerAddress> {
        self.nodes.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::messages::{NodeAddress, PartitionMetadata, TopicMetadata};
    use crate::wire::ErrorCode;

    fn response(leaders: &[Option<NodeId>]) -> MetadataResponse {
        MetadataResponse {
            nodes: vec![
                NodeAddress {
                    node_id: 1,
                    address: "127.0.0.1:7070".into(),
                },
                NodeAddress {
                    node_id: 2,
                    address: "127.0.0.1:7071".into(),
                },
            ],
            topics: vec![TopicMetadata {
                name: "orders".into(),
                partitions: Ok(leaders
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(partition, leader)| PartitionMetadata {
                        partition: partition as u32,
                        leader: *leader,
                        replicas: vec![1, 2],
                    })
                    .collect()),
            }],
        }
    }

    fn address(port: u16) -> BrokerAddress {
        BrokerAddress {
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn lookups_route_to_the_leaders_address() {
        let mut map = ClusterMap::default();
        assert_eq!(map.leader("orders", 0), LeaderLookup::NotCached);
        assert!(map.apply(&response(&[Some(2), None, Some(9)])).is_empty());
        assert_eq!(map.leader("orders", 0), LeaderLookup::Leader(address(7071)));
        // No leader known: the replicas (nodes 1 and 2) are tried in turn; they redirect.
        let guesses = [map.leader("orders", 1), map.leader("orders", 1)];
        assert!(
            guesses.contains(&LeaderLookup::Leader(address(7070))),
            "{guesses:?}"
        );
        assert!(
            guesses.contains(&LeaderLookup::Leader(address(7071))),
            "{guesses:?}"
        );
        assert!(
            matches!(map.leader("orders", 2), LeaderLookup::Leader(_)),
            "leader 9 has no address: a replica is tried"
        );
        assert_eq!(
            map.leader("orders", 3),
            LeaderLookup::UnknownPartition { partitions: 3 }
        );
        assert_eq!(map.partition_count("orders"), Some(3));
        assert_eq!(map.partition_count("other"), None);
    }

    #[test]
    fn redirects_update_the_leader_and_forgetting_forces_a_refresh() {
        let mut map = ClusterMap::default();
        map.apply(&response(&[Some(1)]));
        map.note_leader("orders", 0, &address(7071));
        assert_eq!(map.leader("orders", 0), LeaderLookup::Leader(address(7071)));
        map.note_leader("orders", 0, &address(9999));
        assert!(
            matches!(map.leader("orders", 0), LeaderLookup::Leader(_)),
            "an unknown redirect leaves the leader unknown: a replica is tried"
        );
        map.forget_topic("orders");
        assert_eq!(map.leader("orders", 0), LeaderLookup::NotCached);
    }

    #[test]
    fn bad_parts_of_an_answer_are_refused_and_the_rest_is_used() {
        let mut map = ClusterMap::default();
        let mut answer = response(&[Some(1)]);
        answer.nodes.push(NodeAddress {
            node_id: 3,
            address: "no port".into(),
        });
        answer.topics.push(TopicMetadata {
            name: "gappy".into(),
            partitions: Ok(vec![PartitionMetadata {
                partition: 5,
                leader: Some(1),
                replicas: vec![1],
            }]),
        });
        answer.topics.push(TopicMetadata {
            name: "missing".into(),
            partitions: Err(ErrorCode::UnknownTopic),
        });
        map.apply(&response(&[Some(1)]));
        map.topics.insert("missing".into(), vec![Some(1)]);
        let refused = map.apply(&answer);
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert_eq!(map.leader("orders", 0), LeaderLookup::Leader(address(7070)));
        assert_eq!(map.leader("gappy", 0), LeaderLookup::NotCached);
        assert_eq!(
            map.leader("missing", 0),
            LeaderLookup::NotCached,
            "a negative answer is not kept"
        );
        assert_eq!(map.node_addresses().len(), 2);
    }
}
