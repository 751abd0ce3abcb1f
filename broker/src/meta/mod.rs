//! The metadata group's state machine (group 0, docs/DECISIONS.md "The broker"): which nodes exist
//! (id, incarnation, advertised address), which topics exist, where each partition's replicas
//! live, and the producer ids handed out. Every node runs group 0 and applies the same committed
//! commands in the same order, so every node holds the same map.
//!
//! Commands are postcard-encoded [`MetaCommand`]s in entries of kind `Meta`. Applying is
//! deterministic and total: a command that cannot apply (a topic that already exists) yields a
//! typed error for the proposer and changes nothing. Placement is decided by the leader when it
//! proposes and carried in the command, so replay never depends on anything but the log.

pub mod actor;

use std::collections::BTreeMap;

use keel_wire::messages::{TopicConfigView, TopicSettings, UNLIMITED};
use keel_wire::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::transport::GroupId;
use keel_raft::{Membership, NodeId};

/// The metadata group's id.
pub const META_GROUP: GroupId = 0;

/// One cluster member as group 0 knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: NodeId,
    /// Random id of the node's data directory (docs/FORMAT.md "Small records").
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
    /// Each replica's incarnation when the topic was created: the group's first configuration.
    /// Never updated: replacements change the group through configuration entries in its log.
    pub incarnations: Vec<u64>,
}

impl PartitionPlacement {
    /// The group's first configuration (every replica a voter).
    pub fn membership(&self) -> Membership {
        Membership::with_voters(
            self.replicas
                .iter()
                .copied()
                .zip(self.incarnations.iter().copied()),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: String,
    pub replication_factor: u16,
    pub partitions: Vec<PartitionPlacement>,
    pub config: TopicConfig,
}

/// A topic's retention settings (docs/OPERATIONS.md "Retention"). `None` is unlimited. Each
/// partition's leader reads them when it picks a new log start (partition/retention.rs), so a
/// change applies from the next check on, with no restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Per partition: the bytes of whole segments kept, at least (Kafka's `retention.bytes`).
    pub retention_bytes: Option<u64>,
    /// Segments whose newest entry's append time (the leader's clock) is older than this go
    /// (Kafka's `retention.ms`).
    pub retention_ms: Option<u64>,
    /// A non-empty active segment older than this rolls, so a quiet partition still expires
    /// (Kafka's `segment.ms`).
    pub segment_ms: Option<u64>,
}

impl TopicConfig {
    /// Topics created before retention existed: nothing is ever deleted.
    pub const UNLIMITED: TopicConfig = TopicConfig {
        retention_bytes: None,
        retention_ms: None,
        segment_ms: None,
    };

    /// A new topic's defaults, Kafka's: 7 days, bytes unlimited, segments roll weekly.
    pub const NEW_TOPIC_DEFAULT: TopicConfig = TopicConfig {
        retention_bytes: None,
        retention_ms: Some(7 * 24 * 3600 * 1000),
        segment_ms: Some(7 * 24 * 3600 * 1000),
    };

    /// Whether every limit is one a partition can act on: a zero would delete or roll on every
    /// check, and anything over `i64::MAX` cannot be shown to clients (docs/WIRE.md).
    pub fn is_valid(&self) -> bool {
        [self.retention_bytes, self.retention_ms, self.segment_ms]
            .into_iter()
            .flatten()
            .all(|limit| limit > 0 && i64::try_from(limit).is_ok())
    }

    /// This config with a request's settings laid over it: `None` keeps the setting, -1 removes
    /// the limit, a positive value sets it. The settings must have passed
    /// [`TopicSettings::check`]; a value that did not is kept as it is here.
    pub fn overlaid(self, settings: &TopicSettings) -> TopicConfig {
        let merge = |current: Option<u64>, requested: Option<i64>| match requested {
            None => current,
            Some(UNLIMITED) => None,
            Some(value) => u64::try_from(value)
                .ok()
                .filter(|&limit| limit > 0)
                .map_or(current, Some),
        };
        TopicConfig {
            retention_bytes: merge(self.retention_bytes, settings.retention_bytes),
            retention_ms: merge(self.retention_ms, settings.retention_ms),
            segment_ms: merge(self.segment_ms, settings.segment_ms),
        }
    }

    /// As clients see it (docs/WIRE.md): -1 for unlimited.
    pub fn view(&self) -> TopicConfigView {
        // is_valid keeps limits within i64 in the map; saturating is only for the impossible.
        let show = |limit: Option<u64>| {
            limit.map_or(UNLIMITED, |limit| i64::try_from(limit).unwrap_or(i64::MAX))
        };
        TopicConfigView {
            retention_bytes: show(self.retention_bytes),
            retention_ms: show(self.retention_ms),
            segment_ms: show(self.segment_ms),
        }
    }
}

/// A change to the map, proposed to group 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// The founding entry: the first members (written by the founder, docs/DECISIONS.md
    /// "Founding").
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
    /// Node `node_id` now runs as `incarnation` (its data dir was lost): every group it is in
    /// replaces its old incarnation by this one (docs/OPERATIONS.md "Replacing a node",
    /// group/replace.rs).
    ReplaceNode {
        node_id: NodeId,
        incarnation: u64,
    },
    /// `CreateTopic` with retention settings: what leaders of this release propose. A new
    /// variant rather than a new field, since older `CreateTopic` entries must still decode.
    CreateTopicWithConfig {
        name: String,
        replication_factor: u16,
        placement: Vec<Vec<NodeId>>,
        config: TopicConfig,
    },
    /// Replaces a topic's whole config (merged by its proposer from the config it read). No
    /// longer proposed: a new metadata leader may not yet have applied an alter committed in
    /// the previous term, and merging into that stale config undid it. Kept so logs that hold
    /// it still apply.
    AlterTopicConfig {
        name: String,
        config: TopicConfig,
    },
    /// Lays settings over a topic's config when applied, so every alter merges into the config
    /// every alter before it in the log left (`None` keeps a setting, -1 removes the limit).
    AlterTopicSettings {
        name: String,
        retention_bytes: Option<i64>,
        retention_ms: Option<i64>,
        segment_ms: Option<i64>,
    },
}

/// What applying a command produced, for the proposer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaOutcome {
    Done,
    TopicCreated(TopicInfo),
    /// The topic with its new config.
    TopicAltered(TopicInfo),
    ProducerId(u64),
}

/// What applying a command asks of the node besides the new map: the metadata machine stays pure
/// and the node carries these out (node/mod.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaEffect {
    /// Start this node's replicas of a new topic (also on replay after a restart).
    StartPartitions(TopicInfo),
    /// Stop this node's replicas of a deleted topic and remove their data.
    StopPartitions(TopicInfo),
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

    /// Applies one committed command and says what the node must do about it.
    pub fn execute(
        &mut self,
        command: MetaCommand,
    ) -> (Result<MetaOutcome, ErrorCode>, Option<MetaEffect>) {
        let deleted = match &command {
            MetaCommand::DeleteTopic { name } => self.topics.get(name).cloned(),
            _ => None,
        };
        let result = self.apply(command);
        let effect = match (&result, deleted) {
            (Ok(MetaOutcome::TopicCreated(topic)), _) => {
                Some(MetaEffect::StartPartitions(topic.clone()))
            }
            (Ok(_), Some(topic)) => Some(MetaEffect::StopPartitions(topic)),
            _ => None,
        };
        (result, effect)
    }

    /// What moving the map from `before` to `after` in one step (a snapshot from the leader)
    /// asks of the node: the replicas of topics gone (or recreated under the same name with new
    /// groups) stop, those of new topics start. Settings changes ask nothing.
    pub fn effects_between(before: &MetaState, after: &MetaState) -> Vec<MetaEffect> {
        let same_groups = |a: &TopicInfo, b: &TopicInfo| {
            a.partitions
                .iter()
                .map(|p| p.group)
                .eq(b.partitions.iter().map(|p| p.group))
        };
        let stopped = before.topics.values().filter(|old| {
            !after
                .topics
                .get(&old.name)
                .is_some_and(|new| same_groups(old, new))
        });
        let started = after.topics.values().filter(|new| {
            !before
                .topics
                .get(&new.name)
                .is_some_and(|old| same_groups(old, new))
        });
        stopped
            .map(|topic| MetaEffect::StopPartitions(topic.clone()))
            .chain(started.map(|topic| MetaEffect::StartPartitions(topic.clone())))
            .collect()
    }

    /// Applies one committed command.
    pub fn apply(&mut self, command: MetaCommand) -> Result<MetaOutcome, ErrorCode> {
        match command {
            // A second founding proposal (from a later leader that had not yet applied the
            // first) changes nothing.
            MetaCommand::Found { .. } if !self.nodes.is_empty() => Ok(MetaOutcome::Done),
            MetaCommand::Found { nodes } => {
                for node in nodes {
                    self.nodes.insert(node.node_id, node);
                }
                Ok(MetaOutcome::Done)
            }
            // Topics created by this command predate retention (docs/OPERATIONS.md
            // "Retention"): they keep everything.
            MetaCommand::CreateTopic {
                name,
                replication_factor,
                placement,
            } => self.create_topic(name, replication_factor, placement, TopicConfig::UNLIMITED),
            MetaCommand::CreateTopicWithConfig {
                name,
                replication_factor,
                placement,
                config,
            } => self.create_topic(name, replication_factor, placement, config),
            MetaCommand::AlterTopicConfig { name, config } => match self.topics.get_mut(&name) {
                Some(_) if !config.is_valid() => Err(ErrorCode::InvalidTopicConfig),
                Some(topic) => {
                    topic.config = config;
                    Ok(MetaOutcome::TopicAltered(topic.clone()))
                }
                None => Err(ErrorCode::UnknownTopic),
            },
            MetaCommand::AlterTopicSettings {
                name,
                retention_bytes,
                retention_ms,
                segment_ms,
            } => {
                let settings = TopicSettings {
                    retention_bytes,
                    retention_ms,
                    segment_ms,
                };
                match self.topics.get_mut(&name) {
                    None => Err(ErrorCode::UnknownTopic),
                    Some(_) if settings.check().is_err() => Err(ErrorCode::InvalidTopicConfig),
                    Some(topic) => {
                        let config = topic.config.overlaid(&settings);
                        if config.is_valid() {
                            topic.config = config;
                            Ok(MetaOutcome::TopicAltered(topic.clone()))
                        } else {
                            Err(ErrorCode::InvalidTopicConfig)
                        }
                    }
                }
            }
            // The cluster's own topics (consumer offsets) outlive every client request; the API
            // refuses the delete first, this keeps the map whole whoever proposed it.
            MetaCommand::DeleteTopic { name } if crate::coordinator::is_reserved_topic(&name) => {
                Err(ErrorCode::NotAuthorized)
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
            MetaCommand::ReplaceNode {
                node_id,
                incarnation,
            } => match self.nodes.get_mut(&node_id) {
                Some(node) => {
                    node.incarnation = incarnation;
                    Ok(MetaOutcome::Done)
                }
                None => Err(ErrorCode::UnknownNode),
            },
        }
    }

    /// Both create commands: the same checks, only the config differs.
    fn create_topic(
        &mut self,
        name: String,
        replication_factor: u16,
        placement: Vec<Vec<NodeId>>,
        config: TopicConfig,
    ) -> Result<MetaOutcome, ErrorCode> {
        if self.topics.contains_key(&name) {
            return Err(ErrorCode::TopicAlreadyExists);
        }
        // The API checks the config before proposing; this keeps a bad one out of the map
        // whoever proposed it.
        if !config.is_valid() {
            return Err(ErrorCode::InvalidTopicConfig);
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
                let incarnations = replicas
                    .iter()
                    .map(|id| self.nodes[id].incarnation)
                    .collect();
                PartitionPlacement {
                    group,
                    replicas,
                    incarnations,
                }
            })
            .collect();
        let topic = TopicInfo {
            name: name.clone(),
            replication_factor,
            partitions,
            config,
        };
        self.topics.insert(name, topic.clone());
        Ok(MetaOutcome::TopicCreated(topic))
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
    fn replacing_records_the_new_incarnation_and_keeps_placements_first_configuration() {
        let mut state = state_with_nodes(3);
        let placement = state.place(1, 3);
        state
            .apply(MetaCommand::CreateTopic {
                name: "t".into(),
                replication_factor: 3,
                placement,
            })
            .unwrap();
        let command = MetaCommand::ReplaceNode {
            node_id: 2,
            incarnation: 777,
        };
        assert_eq!(state.apply(command), Ok(MetaOutcome::Done));
        assert_eq!(state.nodes[&2].incarnation, 777);
        let first = state.topics["t"].partitions[0].membership();
        assert_eq!(
            first.voters.get(&2),
            Some(&200),
            "the log, not the map, moves a group"
        );
        let unknown = MetaCommand::ReplaceNode {
            node_id: 9,
            incarnation: 1,
        };
        assert_eq!(state.apply(unknown), Err(ErrorCode::UnknownNode));
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

    #[test]
    fn creating_and_deleting_a_topic_start_and_stop_its_partitions() {
        let mut state = state_with_nodes(3);
        let placement = state.place(2, 3);
        let (created, effect) = state.execute(MetaCommand::CreateTopic {
            name: "t".into(),
            replication_factor: 3,
            placement,
        });
        let Ok(MetaOutcome::TopicCreated(topic)) = created else {
            panic!("created: {created:?}");
        };
        assert_eq!(effect, Some(MetaEffect::StartPartitions(topic.clone())));
        let (deleted, effect) = state.execute(MetaCommand::DeleteTopic { name: "t".into() });
        assert_eq!(deleted, Ok(MetaOutcome::Done));
        assert_eq!(effect, Some(MetaEffect::StopPartitions(topic)));
        let (again, effect) = state.execute(MetaCommand::DeleteTopic { name: "t".into() });
        assert_eq!(again, Err(ErrorCode::UnknownTopic));
        assert_eq!(effect, None, "an unknown topic stops nothing");
    }

    fn create(state: &mut MetaState, name: &str, config: Option<TopicConfig>) -> TopicInfo {
        let placement = state.place(2, 3);
        let command = match config {
            None => MetaCommand::CreateTopic {
                name: name.into(),
                replication_factor: 3,
                placement,
            },
            Some(config) => MetaCommand::CreateTopicWithConfig {
                name: name.into(),
                replication_factor: 3,
                placement,
                config,
            },
        };
        match state.execute(command) {
            (Ok(MetaOutcome::TopicCreated(topic)), Some(MetaEffect::StartPartitions(started))) => {
                assert_eq!(topic, started);
                topic
            }
            other => panic!("create {name}: {other:?}"),
        }
    }

    #[test]
    fn the_old_create_command_makes_an_unlimited_topic() {
        let mut state = state_with_nodes(3);
        let topic = create(&mut state, "old", None);
        assert_eq!(topic.config, TopicConfig::UNLIMITED);
        assert_eq!(state.topics["old"].config, TopicConfig::UNLIMITED);
    }

    #[test]
    fn create_with_config_keeps_the_config_and_shares_the_create_checks() {
        let mut state = state_with_nodes(3);
        let config = TopicConfig {
            retention_bytes: Some(1 << 30),
            ..TopicConfig::NEW_TOPIC_DEFAULT
        };
        let topic = create(&mut state, "t", Some(config));
        assert_eq!(topic.config, config);
        assert_eq!(topic.partitions.len(), 2);
        let before = state.clone();
        let again = MetaCommand::CreateTopicWithConfig {
            name: "t".into(),
            replication_factor: 3,
            placement: state.place(1, 3),
            config,
        };
        assert_eq!(state.apply(again), Err(ErrorCode::TopicAlreadyExists));
        let unknown_node = MetaCommand::CreateTopicWithConfig {
            name: "u".into(),
            replication_factor: 1,
            placement: vec![vec![9]],
            config,
        };
        assert_eq!(
            state.apply(unknown_node),
            Err(ErrorCode::InvalidTopicConfig)
        );
        let zero = MetaCommand::CreateTopicWithConfig {
            name: "z".into(),
            replication_factor: 1,
            placement: vec![vec![1]],
            config: TopicConfig {
                retention_ms: Some(0),
                ..config
            },
        };
        assert_eq!(state.apply(zero), Err(ErrorCode::InvalidTopicConfig));
        assert_eq!(state, before);
    }

    #[test]
    fn alter_replaces_only_the_config() {
        let mut state = state_with_nodes(3);
        create(&mut state, "old", None);
        let other = create(&mut state, "other", Some(TopicConfig::NEW_TOPIC_DEFAULT));
        let before = state.topics["old"].clone();
        let config = TopicConfig {
            retention_bytes: Some(4096),
            retention_ms: None,
            segment_ms: Some(60_000),
        };
        let (result, effect) = state.execute(MetaCommand::AlterTopicConfig {
            name: "old".into(),
            config,
        });
        let expected = TopicInfo {
            config,
            ..before.clone()
        };
        assert_eq!(result, Ok(MetaOutcome::TopicAltered(expected.clone())));
        assert_eq!(effect, None, "partitions read the config from the map");
        assert_eq!(state.topics["old"], expected);
        assert_eq!(state.topics["other"], other);
        // The whole config is replaced: the proposer already merged.
        state
            .apply(MetaCommand::AlterTopicConfig {
                name: "old".into(),
                config: TopicConfig::UNLIMITED,
            })
            .unwrap();
        assert_eq!(state.topics["old"], before);
    }

    /// Two alters of different settings, proposed from the same old config (say by a new
    /// metadata leader that had not applied the first yet), both hold: each merges at apply.
    #[test]
    fn alters_merge_when_applied_so_concurrent_alters_of_different_settings_both_hold() {
        let mut state = state_with_nodes(3);
        create(&mut state, "t", Some(TopicConfig::NEW_TOPIC_DEFAULT));
        let alter = |retention_bytes, segment_ms| MetaCommand::AlterTopicSettings {
            name: "t".into(),
            retention_bytes,
            retention_ms: None,
            segment_ms,
        };
        state.apply(alter(Some(4096), None)).unwrap();
        state.apply(alter(None, Some(60_000))).unwrap();
        assert_eq!(
            state.topics["t"].config,
            TopicConfig {
                retention_bytes: Some(4096),
                segment_ms: Some(60_000),
                ..TopicConfig::NEW_TOPIC_DEFAULT
            }
        );
        state.apply(alter(Some(UNLIMITED), None)).unwrap();
        assert_eq!(
            state.topics["t"].config.retention_bytes, None,
            "-1 removes the limit"
        );
        let before = state.clone();
        assert_eq!(
            state.apply(alter(Some(0), None)),
            Err(ErrorCode::InvalidTopicConfig)
        );
        assert_eq!(
            state.apply(MetaCommand::AlterTopicSettings {
                name: "missing".into(),
                retention_bytes: Some(1),
                retention_ms: None,
                segment_ms: None,
            }),
            Err(ErrorCode::UnknownTopic)
        );
        assert_eq!(state, before, "refused alters change nothing");
    }

    #[test]
    fn altering_an_unknown_topic_or_to_a_zero_limit_is_refused_and_changes_nothing() {
        let mut state = state_with_nodes(3);
        create(&mut state, "t", Some(TopicConfig::NEW_TOPIC_DEFAULT));
        let before = state.clone();
        let (result, effect) = state.execute(MetaCommand::AlterTopicConfig {
            name: "missing".into(),
            config: TopicConfig::UNLIMITED,
        });
        assert_eq!((result, effect), (Err(ErrorCode::UnknownTopic), None));
        let zero = MetaCommand::AlterTopicConfig {
            name: "t".into(),
            config: TopicConfig {
                segment_ms: Some(0),
                ..TopicConfig::UNLIMITED
            },
        };
        assert_eq!(state.apply(zero), Err(ErrorCode::InvalidTopicConfig));
        let huge = MetaCommand::AlterTopicConfig {
            name: "t".into(),
            config: TopicConfig {
                retention_bytes: Some(u64::MAX),
                ..TopicConfig::UNLIMITED
            },
        };
        assert_eq!(state.apply(huge), Err(ErrorCode::InvalidTopicConfig));
        assert_eq!(state, before);
    }

    /// Raft logs on disk hold postcard-encoded commands: the old variants keep their tags, the
    /// new ones come after them.
    #[test]
    fn old_command_tags_are_unchanged() {
        let tag = |command: &MetaCommand| postcard::to_stdvec(command).unwrap()[0];
        assert_eq!(tag(&MetaCommand::AllocateProducerId), 3);
        let create = MetaCommand::CreateTopic {
            name: "t".into(),
            replication_factor: 1,
            placement: vec![vec![1]],
        };
        assert_eq!(
            postcard::to_stdvec(&create).unwrap(),
            [1, 1, b't', 1, 1, 1, 1]
        );
        let alter = MetaCommand::AlterTopicConfig {
            name: "t".into(),
            config: TopicConfig::UNLIMITED,
        };
        assert_eq!(tag(&alter), 6);
        let decoded: MetaCommand =
            postcard::from_bytes(&postcard::to_stdvec(&alter).unwrap()).unwrap();
        assert_eq!(decoded, alter);
    }

    #[test]
    fn settings_overlay_a_config_and_show_minus_one_for_unlimited() {
        let settings = TopicSettings {
            retention_bytes: Some(1000),
            retention_ms: Some(UNLIMITED),
            segment_ms: None,
        };
        let config = TopicConfig::NEW_TOPIC_DEFAULT.overlaid(&settings);
        assert_eq!(
            config,
            TopicConfig {
                retention_bytes: Some(1000),
                retention_ms: None,
                segment_ms: TopicConfig::NEW_TOPIC_DEFAULT.segment_ms,
            }
        );
        assert_eq!(
            config.view(),
            TopicConfigView {
                retention_bytes: 1000,
                retention_ms: UNLIMITED,
                segment_ms: 7 * 24 * 3600 * 1000,
            }
        );
        assert_eq!(
            TopicConfig::UNLIMITED.overlaid(&TopicSettings::default()),
            TopicConfig::UNLIMITED
        );
    }

    #[test]
    fn a_second_founding_changes_nothing() {
        let mut state = state_with_nodes(3);
        let before = state.clone();
        let (result, effect) = state.execute(MetaCommand::Found { nodes: Vec::new() });
        assert_eq!((result, effect), (Ok(MetaOutcome::Done), None));
        assert_eq!(state, before);
    }
}
