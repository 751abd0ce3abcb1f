//! [`Client`]: the shared handle every producer, consumer and admin uses. It owns the
//! connections (`conn.rs`) and the cluster map (`metadata.rs`) and routes requests:
//!
//! - to any node (metadata, admin): the node that answered last, then the bootstrap list, then
//!   every node in the map, rotating on failures;
//! - to a partition leader (produce, fetch): the leader in the map; on `NotLeader` with an
//!   address, straight there (once without waiting), and the map is refreshed before the next
//!   lookup; on other retriable errors, back off, refresh, try again.
//!
//! Every loop is bounded by [`RetryPolicy::max_attempts`] and every request by a timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};

use crate::address::BrokerAddress;
use crate::conn::{ConnectionConfig, Connections};
use crate::error::ClientError;
use crate::limits::{
    CLOSE_GRACE, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS,
    DEFAULT_KEEP_ALIVE_INTERVAL_MS, MAX_UNKNOWN_TOPICS, MAX_VARIANT_NAME_CHARS,
    UNKNOWN_TOPIC_ATTEMPTS, UNKNOWN_TOPIC_BACKOFF, UNKNOWN_TOPIC_TTL,
};
use crate::metadata::{ClusterMap, LeaderLookup};
use crate::retry::{decide, random_u64, RetryDecision, RetryPolicy};
use crate::tls::ClientTls;
use crate::wire::messages::{MetadataRequest, MetadataResponse};
use crate::wire::{validate_topic_name, ErrorCode, Frame, Limits, Request, Response};

/// Settings shared by everything built on a [`Client`].
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    /// Bound on one request's round trip (connect included). Fetches add their `max_wait_ms`.
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub keep_alive_interval_ms: u64,
    pub retry: RetryPolicy,
    /// The protocol limits the brokers run with (defaults: docs/WIRE.md "Limits").
    pub limits: Limits,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout_ms: crate::wire::limits::DEFAULT_REQUEST_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            keep_alive_interval_ms: DEFAULT_KEEP_ALIVE_INTERVAL_MS,
            retry: RetryPolicy::default(),
            limits: Limits::default(),
        }
    }
}

/// A connection to a Keel cluster. Cheap to clone; clones share connections and the map.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    bootstrap: Vec<BrokerAddress>,
    connections: Connections,
    map: Mutex<ClusterMap>,
    /// The node that answered an any-node request last: tried first next time.
    preferred: Mutex<Option<BrokerAddress>>,
    /// Topics the cluster said it does not know, and when (see [`Client::partition_count`]).
    unknown_topics: Mutex<HashMap<String, Instant>>,
}

impl Client {
    /// Connects to the cluster through `bootstrap` (`host:port` strings, each possibly a
    /// comma-separated list) and learns the cluster map, with the default [`ClientConfig`].
    pub async fn connect<S: AsRef<str>>(
        bootstrap: &[S],
        tls: ClientTls,
    ) -> Result<Client, ClientError> {
        Client::connect_with(bootstrap, tls, ClientConfig::default()).await
    }

    /// [`Client::connect`] with explicit settings. Fails if no bootstrap node answers a
    /// metadata request within the retry policy.
    pub async fn connect_with<S: AsRef<str>>(
        bootstrap: &[S],
        tls: ClientTls,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        config
            .limits
            .validate()
            .map_err(|error| ClientError::InvalidArgument(error.to_string()))?;
        let bootstrap = BrokerAddress::parse_all(bootstrap.iter().map(AsRef::as_ref))?;
        let connections = Connections::new(
            tls.rustls_config()?,
            ConnectionConfig {
                connect_timeout_ms: config.connect_timeout_ms,
                idle_timeout_ms: config.idle_timeout_ms,
                keep_alive_interval_ms: config.keep_alive_interval_ms,
                max_response_bytes: config.limits.max_request_bytes,
            },
        )?;
        let client = Client {
            inner: Arc::new(Inner {
                config,
                bootstrap,
                connections,
                map: Mutex::new(ClusterMap::default()),
                preferred: Mutex::new(None),
                unknown_topics: Mutex::new(HashMap::new()),
            }),
        };
        client.refresh_metadata(Some(Vec::new())).await?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Asks the cluster for its map (all topics when `topics` is `None`) and takes it in.
    pub async fn refresh_metadata(
        &self,
        topics: Option<Vec<String>>,
    ) -> Result<MetadataResponse, ClientError> {
        for topic in topics.iter().flatten() {
            check_topic_name(topic)?;
        }
        let request = Request::Metadata(MetadataRequest { topics });
        let frame = self.request_any(&request, self.request_timeout()).await?;
        let Response::Metadata(response) = frame.header else {
            return Err(unexpected(&request, &frame.header));
        };
        let refused = self.inner.map.lock().expect("map lock").apply(&response);
        for reason in refused {
            warn!(%reason, "ignored part of a metadata answer");
        }
        Ok(response)
    }

    /// The number of partitions of `topic`, from the map or a fresh metadata request.
    ///
    /// A topic the cluster does not know is asked about again a few times over about 1.5 s
    /// (a topic created a moment ago may not have reached the node answering yet), then
    /// `UnknownTopic`; that answer is remembered for [`UNKNOWN_TOPIC_TTL`] so a stream of sends
    /// to a missing topic fails fast instead of waiting each time.
    pub async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        check_topic_name(topic)?;
        if let Some(count) = self.cached_partition_count(topic) {
            return Ok(count);
        }
        let unknown_since = self
            .inner
            .unknown_topics
            .lock()
            .expect("unknown topics lock")
            .get(topic)
            .copied();
        if unknown_since.is_some_and(|since| since.elapsed() < UNKNOWN_TOPIC_TTL) {
            return Err(ClientError::UnknownTopic {
                topic: topic.to_string(),
            });
        }
        for attempt in 0..UNKNOWN_TOPIC_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(UNKNOWN_TOPIC_BACKOFF * (1 << (attempt - 1))).await;
            }
            let response = self.refresh_metadata(Some(vec![topic.to_string()])).await?;
            if let Some(count) = self.cached_partition_count(topic) {
                self.inner
                    .unknown_topics
                    .lock()
                    .expect("unknown topics lock")
                    .remove(topic);
                return Ok(count);
            }
            let code = response
                .topics
                .iter()
                .find(|entry| entry.name == topic)
                .and_then(|entry| entry.partitions.as_ref().err());
            if let Some(code) = code.filter(|code| **code != ErrorCode::UnknownTopic) {
                return Err(ClientError::Server(code.clone()));
            }
        }
        let mut unknown_topics = self
            .inner
            .unknown_topics
            .lock()
            .expect("unknown topics lock");
        if unknown_topics.len() >= MAX_UNKNOWN_TOPICS {
            unknown_topics.clear();
        }
        unknown_topics.insert(topic.to_string(), Instant::now());
        Err(ClientError::UnknownTopic {
            topic: topic.to_string(),
        })
    }

    /// Drops a remembered "unknown topic" answer (the topic was just created through us).
    pub(crate) fn forget_unknown_topic(&self, topic: &str) {
        self.inner
            .unknown_topics
            .lock()
            .expect("unknown topics lock")
            .remove(topic);
    }

    fn cached_partition_count(&self, topic: &str) -> Option<u32> {
        self.inner
            .map
            .lock()
            .expect("map lock")
            .partition_count(topic)
            .filter(|&count| count > 0)
    }

    /// Sends `request` (empty payload) to any node, following redirects and retrying
    /// retriable failures. A `Response::Error` comes back as [`ClientError::Server`].
    pub async fn request(&self, request: &Request) -> Result<Frame<Response>, ClientError> {
        self.request_any(request, self.request_timeout()).await
    }

    /// Closes every connection, telling the brokers (waits at most a second for that).
    /// Requests in flight fail; the handle and its clones must not be used after.
    pub async fn close(&self) {
        self.inner.connections.close(CLOSE_GRACE).await;
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.config.request_timeout_ms)
    }

    /// [`Client::request`] with an explicit per-attempt timeout.
    pub(crate) async fn request_any(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Frame<Response>, ClientError> {
        let policy = self.inner.config.retry;
        let mut redirect: Option<BrokerAddress> = None;
        let mut rotation = 0usize;
        let mut attempt = 0u32;
        loop {
            let followed_redirect = redirect.is_some();
            let address = match redirect.take() {
                Some(address) => address,
                None => {
                    let candidates = self.any_node_candidates();
                    let address = candidates[rotation % candidates.len()].clone();
                    rotation += 1;
                    address
                }
            };
            let error = match self
                .inner
                .connections
                .request(&address, request, Bytes::new(), timeout)
                .await
            {
                Ok(frame) => match frame.header {
                    Response::Error(code) => ClientError::Server(code),
                    _ => {
                        *self.inner.preferred.lock().expect("preferred lock") = Some(address);
                        return Ok(frame);
                    }
                },
                Err(error) => error,
            };
            debug!(%address, %error, attempt, "request to any node failed");
            match decide(&policy, attempt, error, followed_redirect, random_u64()) {
                RetryDecision::GiveUp(error) => return Err(error),
                RetryDecision::Retry {
                    redirect: next,
                    wait,
                } => {
                    redirect = next;
                    tokio::time::sleep(wait).await;
                }
            }
            attempt += 1;
        }
    }

    /// Sends `request` to one node, once: no redirects, no retries (the caller owns the loop,
    /// as a group member does for its coordinator). A `Response::Error` comes back as
    /// [`ClientError::Server`].
    pub(crate) async fn request_at(
        &self,
        address: &BrokerAddress,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let frame = self
            .inner
            .connections
            .request(address, request, Bytes::new(), timeout)
            .await?;
        match frame.header {
            Response::Error(code) => Err(ClientError::Server(code)),
            other => Ok(other),
        }
    }

    /// The order in which any-node requests try nodes: the last good one, the bootstrap list,
    /// then the map's nodes. Never empty (the bootstrap list is not).
    fn any_node_candidates(&self) -> Vec<BrokerAddress> {
        let mut candidates: Vec<BrokerAddress> = Vec::new();
        let preferred = self.inner.preferred.lock().expect("preferred lock").clone();
        let known = self.inner.map.lock().expect("map lock").node_addresses();
        for address in preferred
            .into_iter()
            .chain(self.inner.bootstrap.iter().cloned())
            .chain(known)
        {
            if !candidates.contains(&address) {
                candidates.push(address);
            }
        }
        candidates
    }

    /// Sends a request to the leader of `topic`/`partition`, following redirects, refreshing
    /// the map and retrying retriable failures within the retry policy.
    pub(crate) async fn request_leader(
        &self,
        topic: &str,
        partition: u32,
        request: &Request,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Frame<Response>, ClientError> {
        let policy = self.inner.config.retry;
        let mut redirect: Option<BrokerAddress> = None;
        let mut refresh = false;
        let mut attempt = 0u32;
        loop {
            let followed_redirect = redirect.is_some();
            let error = match self
                .leader_address(topic, partition, &mut redirect, refresh)
                .await
            {
                Err(error) => error,
                Ok(address) => match self
                    .inner
                    .connections
                    .request(&address, request, payload.clone(), timeout)
                    .await
                {
                    Ok(frame) => match frame.header {
                        Response::Error(code) => ClientError::Server(code),
                        _ => return Ok(frame),
                    },
                    Err(error) => error,
                },
            };
            debug!(topic, partition, %error, attempt, "leader request failed");
            if matches!(error, ClientError::Server(ErrorCode::UnknownTopic)) {
                // Deleted under us, or created a moment ago and not yet applied by the node
                // that leads it (the node that answered the lookup knew it; Kafka retries
                // UNKNOWN_TOPIC_OR_PARTITION for the same reason). Forget it: the next lookup
                // asks the cluster, which answers for good if the topic is gone.
                self.inner.map.lock().expect("map lock").forget_topic(topic);
                if policy.may_retry(attempt) {
                    tokio::time::sleep(policy.backoff(attempt, random_u64())).await;
                    redirect = None;
                    refresh = true;
                    attempt += 1;
                    continue;
                }
            }
            match decide(&policy, attempt, error, followed_redirect, random_u64()) {
                RetryDecision::GiveUp(error) => return Err(error),
                RetryDecision::Retry {
                    redirect: next,
                    wait,
                } => {
                    if let Some(leader) = &next {
                        self.inner
                            .map
                            .lock()
                            .expect("map lock")
                            .note_leader(topic, partition, leader);
                    }
                    redirect = next;
                    refresh = true;
                    tokio::time::sleep(wait).await;
                }
            }
            attempt += 1;
        }
    }

    /// Where the next attempt goes: a pending redirect, else the map's leader (refreshing the
    /// map first when asked to, or when it knows nothing of the topic).
    async fn leader_address(
        &self,
        topic: &str,
        partition: u32,
        redirect: &mut Option<BrokerAddress>,
        refresh: bool,
    ) -> Result<BrokerAddress, ClientError> {
        if let Some(address) = redirect.take() {
            return Ok(address);
        }
        let mut lookup = if refresh {
            LeaderLookup::NotCached
        } else {
            self.inner
                .map
                .lock()
                .expect("map lock")
                .leader(topic, partition)
        };
        if lookup == LeaderLookup::NotCached {
            self.refresh_metadata(Some(vec![topic.to_string()])).await?;
            lookup = self
                .inner
                .map
                .lock()
                .expect("map lock")
                .leader(topic, partition);
        }
        match lookup {
            LeaderLookup::Leader(address) => Ok(address),
            LeaderLookup::NoLeader => Err(ClientError::NoLeader {
                topic: topic.to_string(),
                partition,
            }),
            LeaderLookup::UnknownPartition { partitions } => Err(ClientError::UnknownPartition {
                topic: topic.to_string(),
                partition,
                partitions,
            }),
            LeaderLookup::NotCached => Err(ClientError::UnknownTopic {
                topic: topic.to_string(),
            }),
        }
    }
}

pub(crate) fn check_topic_name(topic: &str) -> Result<(), ClientError> {
    validate_topic_name(topic).map_err(|source| ClientError::InvalidTopicName {
        name: topic.to_string(),
        source,
    })
}

/// A response of the wrong kind for its request: the broker broke the protocol.
pub(crate) fn unexpected(request: &Request, response: &Response) -> ClientError {
    ClientError::protocol(
        "broker",
        format!(
            "{} answered to a {} request",
            variant_name(response),
            variant_name(request)
        ),
    )
}

/// `Produce(ProduceRequest { .. })` -> `Produce`: names only, never a whole (large) value.
fn variant_name(value: &impl std::fmt::Debug) -> String {
    let text = format!("{value:?}");
    text.split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .chars()
        .take(MAX_VARIANT_NAME_CHARS)
        .collect()
}
