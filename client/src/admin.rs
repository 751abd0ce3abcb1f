//! [`Admin`]: topic, cluster and consumer-group management (docs/CLIENT.md "Admin"): create,
//! delete, list, describe and alter topics, cluster status, node replacement; list, describe,
//! read committed offsets, reset and delete groups (those go to the group's coordinator,
//! `group/coordinator.rs`). Each call is one request to any node (the
//! client follows `NotLeader` redirects to the metadata leader) with the client's retries.
//!
//! Retrying a create or delete after a lost answer can meet its own earlier success
//! (`TopicAlreadyExists`, `UnknownTopic`); callers that care check with describe.

use std::time::Duration;

use crate::client::{check_topic_name, unexpected, Client};
use crate::error::ClientError;
use crate::group;
use crate::wire::groups::{
    CommittedPartitionOffset, GroupDescriptionView, GroupListing, PartitionOffset,
    TopicPartitionRef,
};
use crate::wire::messages::NodeId;
use crate::wire::messages::{
    AlterTopicRequest, AlterTopicResponse, ClusterStatusResponse, CreateTopicRequest,
    DeleteTopicRequest, DescribeTopicRequest, ReplaceNodeRequest, ReplaceNodeResponse,
    ReplaceNodeWait, TopicDescription, TopicSettings, TopicSummary,
};
use crate::wire::{Request, Response};

pub use crate::wire::limits::REPLACE_NODE_TIMEOUT_MS;

/// Management calls. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    client: Client,
}

impl Admin {
    pub fn new(client: Client) -> Admin {
        Admin { client }
    }

    /// Creates a topic with the cluster's default retention (docs/OPERATIONS.md "Retention").
    /// `replication_factor: None` lets the cluster choose (`min(3, nodes)`). An existing topic
    /// is `ClientError::Server(ErrorCode::TopicAlreadyExists)`.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: Option<u16>,
    ) -> Result<TopicSummary, ClientError> {
        self.create_topic_with_settings(
            name,
            partitions,
            replication_factor,
            TopicSettings::default(),
        )
        .await
    }

    /// [`Admin::create_topic`] with retention settings: a `None` setting takes the cluster's
    /// default for new topics, -1 ([`crate::wire::messages::UNLIMITED`]) is no limit. Any
    /// other value that is not positive is `ClientError::InvalidArgument`, before anything is
    /// sent.
    pub async fn create_topic_with_settings(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: Option<u16>,
        settings: TopicSettings,
    ) -> Result<TopicSummary, ClientError> {
        check_topic_name(name)?;
        if partitions == 0 || replication_factor == Some(0) {
            return Err(ClientError::InvalidArgument(
                "partitions and replication factor must be at least 1".into(),
            ));
        }
        check_settings(&settings)?;
        let request = Request::CreateTopic(CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor,
            retention_bytes: settings.retention_bytes,
            retention_ms: settings.retention_ms,
            segment_ms: settings.segment_ms,
        });
        let answer = self.client.request(&request).await;
        // Created now, or already there: either way an earlier "unknown" no longer holds.
        self.client.forget_unknown_topic(name);
        match answer?.header {
            Response::CreateTopic(summary) => Ok(summary),
            other => Err(unexpected(&request, &other)),
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        check_topic_name(name)?;
        let request = Request::DeleteTopic(DeleteTopicRequest {
            name: name.to_string(),
        });
        match self.client.request(&request).await?.header {
            Response::DeleteTopic => Ok(()),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Every topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>, ClientError> {
        let request = Request::ListTopics;
        match self.client.request(&request).await?.header {
            Response::ListTopics(list) => {
                let mut topics = list.topics;
                topics.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(topics)
            }
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Changes a topic's retention settings: a `None` setting stays as it is, -1 removes the
    /// limit. Settings that are all `None`, or a value neither -1 nor positive, are
    /// `ClientError::InvalidArgument`. Answers the topic's whole config after the change.
    pub async fn alter_topic(
        &self,
        name: &str,
        settings: TopicSettings,
    ) -> Result<AlterTopicResponse, ClientError> {
        check_topic_name(name)?;
        if settings.is_empty() {
            return Err(ClientError::InvalidArgument(
                "alter topic: no setting to change".into(),
            ));
        }
        check_settings(&settings)?;
        let request = Request::AlterTopic(AlterTopicRequest {
            name: name.to_string(),
            retention_bytes: settings.retention_bytes,
            retention_ms: settings.retention_ms,
            segment_ms: settings.segment_ms,
        });
        match self.client.request(&request).await?.header {
            Response::AlterTopic(response) => Ok(response),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Partitions with leaders, replicas, log start and high watermark, sorted by partition,
    /// and the topic's retention settings.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        check_topic_name(name)?;
        let request = Request::DescribeTopic(DescribeTopicRequest {
            name: name.to_string(),
        });
        match self.client.request(&request).await?.header {
            Response::DescribeTopic(mut description) => {
                description
                    .partitions
                    .sort_by_key(|partition| partition.partition);
                Ok(description)
            }
            other => Err(unexpected(&request, &other)),
        }
    }

    pub async fn cluster_status(&self) -> Result<ClusterStatusResponse, ClientError> {
        let request = Request::ClusterStatus;
        match self.client.request(&request).await?.header {
            Response::ClusterStatus(mut status) => {
                status.nodes.sort_by_key(|node| node.node_id);
                Ok(status)
            }
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Replaces node `node_id`'s old incarnation by its new one in every group (docs/OPERATIONS.md
    /// "Replacing a node"). `UntilReplaced` waits up to [`REPLACE_NODE_TIMEOUT_MS`].
    pub async fn replace_node(
        &self,
        node_id: NodeId,
        wait: ReplaceNodeWait,
    ) -> Result<ReplaceNodeResponse, ClientError> {
        let request = Request::ReplaceNode(ReplaceNodeRequest { node_id, wait });
        let timeout = match wait {
            ReplaceNodeWait::UntilReplaced => Duration::from_millis(REPLACE_NODE_TIMEOUT_MS),
            ReplaceNodeWait::UntilLearnersAdded => self.client.request_timeout(),
        };
        match self.client.request_any(&request, timeout).await?.header {
            Response::ReplaceNode(response) => Ok(response),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Every consumer group of the cluster with its state, protocol type and member count,
    /// sorted by group id (ListGroups asks each node for the groups it coordinates, so every
    /// node is asked; one that does not answer fails the list).
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        group::coordinator::list_groups(&self.client).await
    }

    /// A group as its coordinator holds it: state, generation, members (their metadata and
    /// assignments are ConsumerProtocol bytes, [`crate::wire::consumer_protocol`]) and committed
    /// offsets. A group the coordinator does not know is `Dead` with no members.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescriptionView, ClientError> {
        group::coordinator::describe_group(&self.client, group).await
    }

    /// A group's committed offsets (OffsetFetch to its coordinator), of `partitions` or, with
    /// `None`, of every partition the group has one for. A partition without one is answered
    /// with `offset: None`. The coordinator answers from its applied state, which holds every
    /// acknowledged commit (docs/CONSUMER-GROUPS.md "The coordinator at run time"); this is the
    /// read a monitor (or keel-chaos's offset watcher) uses without joining the group.
    pub async fn committed_offsets(
        &self,
        group: &str,
        partitions: Option<Vec<TopicPartitionRef>>,
    ) -> Result<Vec<CommittedPartitionOffset>, ClientError> {
        for partition in partitions.iter().flatten() {
            check_topic_name(&partition.topic)?;
        }
        group::coordinator::Coordinator::new(self.client.clone(), group)
            .fetch_offsets(partitions, self.client.request_timeout())
            .await
    }

    /// Sets a group's committed offsets (each the next offset to read). Only while the group
    /// has no members: otherwise `ClientError::Server(ErrorCode::NonEmptyGroup)`.
    pub async fn reset_group_offsets(
        &self,
        group: &str,
        offsets: Vec<PartitionOffset>,
    ) -> Result<(), ClientError> {
        for offset in &offsets {
            check_topic_name(&offset.topic)?;
        }
        group::coordinator::reset_offsets(&self.client, group, offsets).await
    }

    /// Deletes a group and its offsets. Only while it has no members (`NonEmptyGroup`); an
    /// unknown group is `GroupIdNotFound`.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        group::coordinator::delete_group(&self.client, group).await
    }
}

fn check_settings(settings: &TopicSettings) -> Result<(), ClientError> {
    settings
        .check()
        .map_err(|error| ClientError::InvalidArgument(error.to_string()))
}
