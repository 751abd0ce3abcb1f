//! Reaching a group's coordinator: [`Coordinator`] finds it (FindCoordinator to any node), sends
//! requests straight to its address, and when it has moved or is not ready (NotCoordinator,
//! CoordinatorNotAvailable, CoordinatorLoadInProgress, a broken connection) finds it again and
//! retries with backoff until the caller's patience runs out. Also the operator's calls that
//! need no membership (list, describe, committed offsets, reset, delete), which `Admin` exposes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::address::BrokerAddress;
use crate::client::{unexpected, Client};
use crate::error::ClientError;
use crate::wire::groups::{
    CommittedPartitionOffset, DeleteGroupRequest, DescribeGroupRequest, FindCoordinatorRequest,
    GroupDescriptionView, GroupListing, OffsetFetchRequest, PartitionOffset, ResetOffsetsRequest,
    TopicPartitionRef,
};
use crate::wire::{ErrorCode, Request, Response};

/// One group's coordinator, as last found. Cheap to clone; clones share what they learn.
#[derive(Clone)]
pub(crate) struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    group: String,
    address: Mutex<Option<BrokerAddress>>,
}

impl Coordinator {
    pub(crate) fn new(client: Client, group: &str) -> Coordinator {
        Coordinator {
            inner: Arc::new(Inner {
                client,
                group: group.to_string(),
                address: Mutex::new(None),
            }),
        }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.inner.client
    }

    pub(crate) fn group(&self) -> &str {
        &self.inner.group
    }

    /// Sends `request` to the coordinator (each attempt bounded by `timeout`), finding it
    /// first when unknown. Failures that mean "ask again, maybe elsewhere" are retried with the
    /// client's backoff until `patience` has passed; the last one is returned then. Every other
    /// error (including the group errors a member must act on) is returned at once.
    pub(crate) async fn request(
        &self,
        request: &Request,
        timeout: Duration,
        patience: Duration,
    ) -> Result<Response, ClientError> {
        let deadline = Instant::now() + patience;
        let policy = self.inner.client.config().retry;
        let mut attempt = 0u32;
        loop {
            let error = match self.attempt(request, timeout).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            if !worth_retrying(&error) {
                return Err(error);
            }
            // A coordinator still loading its groups is the right node: wait and ask it again.
            // Anything else may mean the group moved (a new leader of its offsets partition).
            if error.error_code() != Some(&ErrorCode::CoordinatorLoadInProgress) {
                *self.inner.address.lock().expect("coordinator lock") = None;
            }
            let wait = policy.backoff_now(attempt.min(16));
            if Instant::now() + wait >= deadline {
                return Err(error);
            }
            debug!(group = %self.inner.group, %error, attempt, "coordinator request failed; retrying");
            tokio::time::sleep(wait).await;
            attempt = attempt.saturating_add(1);
        }
    }

    async fn attempt(&self, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
        let known = self.inner.address.lock().expect("coordinator lock").clone();
        let address = match known {
            Some(address) => address,
            None => self.find().await?,
        };
        self.inner
            .client
            .request_at(&address, request, timeout)
            .await
    }

    /// Asks any node which node coordinates the group, and remembers its address.
    async fn find(&self) -> Result<BrokerAddress, ClientError> {
        let request = Request::FindCoordinator(FindCoordinatorRequest {
            group: self.inner.group.clone(),
        });
        let frame = self.inner.client.request(&request).await?;
        let Response::FindCoordinator(found) = frame.header else {
            return Err(unexpected(&request, &frame.header));
        };
        let address = BrokerAddress::parse(&found.address).map_err(|error| {
            ClientError::protocol(
                "broker",
                format!("coordinator address {:?}: {error}", found.address),
            )
        })?;
        debug!(group = %self.inner.group, node = found.node_id, %address, "found the coordinator");
        *self.inner.address.lock().expect("coordinator lock") = Some(address.clone());
        Ok(address)
    }

    /// The committed offsets of `partitions` (all the group has when `None`).
    pub(crate) async fn fetch_offsets(
        &self,
        partitions: Option<Vec<TopicPartitionRef>>,
        patience: Duration,
    ) -> Result<Vec<CommittedPartitionOffset>, ClientError> {
        let request = Request::OffsetFetch(OffsetFetchRequest {
            group: self.inner.group.clone(),
            partitions,
        });
        match self
            .request(&request, self.request_timeout(), patience)
            .await?
        {
            Response::OffsetFetch(response) => Ok(response.offsets),
            other => Err(unexpected(&request, &other)),
        }
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.client.request_timeout()
    }
}

/// Whether a failure is one a coordinator request retries: the retriable ones (the
/// coordinator codes among them), also when the client already spent its own attempts on them
/// (FindCoordinator goes through the any-node loop, which gives up sooner than a member may).
fn worth_retrying(error: &ClientError) -> bool {
    match error {
        ClientError::RetriesExhausted { last, .. } => last.is_retriable(),
        other => other.is_retriable(),
    }
}

// The operator's calls (Admin): one request each to the coordinator, or to every node.

pub(crate) async fn describe_group(
    client: &Client,
    group: &str,
) -> Result<GroupDescriptionView, ClientError> {
    let coordinator = Coordinator::new(client.clone(), group);
    let request = Request::DescribeGroup(DescribeGroupRequest {
        group: group.to_string(),
    });
    match coordinator
        .request(&request, client.request_timeout(), client.request_timeout())
        .await?
    {
        Response::DescribeGroup(view) => Ok(view),
        other => Err(unexpected(&request, &other)),
    }
}

pub(crate) async fn reset_offsets(
    client: &Client,
    group: &str,
    offsets: Vec<PartitionOffset>,
) -> Result<(), ClientError> {
    let coordinator = Coordinator::new(client.clone(), group);
    let request = Request::ResetOffsets(ResetOffsetsRequest {
        group: group.to_string(),
        offsets,
    });
    match coordinator
        .request(&request, client.request_timeout(), client.request_timeout())
        .await?
    {
        Response::ResetOffsets => Ok(()),
        other => Err(unexpected(&request, &other)),
    }
}

pub(crate) async fn delete_group(client: &Client, group: &str) -> Result<(), ClientError> {
    let coordinator = Coordinator::new(client.clone(), group);
    let request = Request::DeleteGroup(DeleteGroupRequest {
        group: group.to_string(),
    });
    match coordinator
        .request(&request, client.request_timeout(), client.request_timeout())
        .await?
    {
        Response::DeleteGroup => Ok(()),
        other => Err(unexpected(&request, &other)),
    }
}

/// Every group of the cluster: ListGroups asks one node for the groups it coordinates, so every
/// node in the map is asked. A group seen on two nodes (its coordinator moved between the two
/// answers) is kept once, the live listing preferred over a Dead one. A node that does not
/// answer fails the whole list: a partial list would read as "those groups do not exist".
pub(crate) async fn list_groups(client: &Client) -> Result<Vec<GroupListing>, ClientError> {
    let metadata = client.refresh_metadata(Some(Vec::new())).await?;
    let mut groups: BTreeMap<String, GroupListing> = BTreeMap::new();
    for node in &metadata.nodes {
        let address = BrokerAddress::parse(&node.address).map_err(|error| {
            ClientError::protocol(
                "broker",
                format!("node address {:?}: {error}", node.address),
            )
        })?;
        let response = list_on(client, &address).await?;
        for listing in response {
            let replace = groups
                .get(&listing.group)
                .is_none_or(|seen| seen.state == crate::wire::groups::GroupStateView::Dead);
            if replace {
                groups.insert(listing.group.clone(), listing);
            }
        }
    }
    Ok(groups.into_values().collect())
}

/// ListGroups on one node, retried within the client's policy (the node may be restarting).
async fn list_on(
    client: &Client,
    address: &BrokerAddress,
) -> Result<Vec<GroupListing>, ClientError> {
    let policy = client.config().retry;
    let mut attempt = 0u32;
    loop {
        match client
            .request_at(address, &Request::ListGroups, client.request_timeout())
            .await
        {
            Ok(Response::ListGroups(response)) => return Ok(response.groups),
            Ok(other) => return Err(unexpected(&Request::ListGroups, &other)),
            Err(error) if error.is_retriable() && policy.may_retry(attempt) => {
                tokio::time::sleep(policy.backoff_now(attempt)).await;
                attempt += 1;
            }
            Err(error) if error.is_retriable() => {
                return Err(ClientError::RetriesExhausted {
                    attempts: attempt + 1,
                    last: Box::new(error),
                })
            }
            Err(error) => return Err(error),
        }
    }
}
