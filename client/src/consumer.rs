//! [`Consumer`]: reads partitions with long-poll fetches (docs/CLIENT.md "Consumer"), either
//! ones it names (`assign`, positions from seeks) or ones a consumer group gives it
//! (`subscribe`, positions from the group's committed offsets; the membership itself is
//! `group/`). In a group, `poll` also (re)joins when needed, commits on the auto-commit
//! interval, and resets a position below the log start per `auto_offset_reset`.
//!
//! Each assigned partition has a position: the offset of the next record to return. A position
//! set by [`SeekTo::Beginning`] or [`SeekTo::End`] is resolved on the next `poll` by asking the
//! partition's leader (a fetch that does not wait answers with its log start and high
//! watermark). `poll` keeps one fetch in
//! flight per partition (sent to the partition leader, retried through [`Client`]), waits for
//! the first to answer, and returns the records of every fetch that has answered; fetches still
//! waiting stay in flight for the next `poll`, so a quiet partition's long poll never delays a
//! busy one. A fetch answer may begin with a batch that starts before the position (batches are
//! never split): records below the position are skipped.
//!
//! Memory is bounded by `max_bytes` of fetched bytes per partition (plus one oversized batch,
//! which the broker returns whole so a consumer always progresses), and, for compressed
//! batches, by [`MAX_DECOMPRESSED_BATCH_BYTES`] of decompressed records per fetch answer plus
//! the batch that crosses it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;

use crate::client::{check_topic_name, unexpected, Client};
use crate::error::{ClientError, ConsumeError};
use crate::group::coordinator::Coordinator;
use crate::group::member::GroupMember;
use crate::group::{AutoOffsetReset, GroupConfig, RebalanceListener};
use crate::limits::{
    DEFAULT_FETCH_MAX_BYTES, DEFAULT_FETCH_MAX_WAIT_MS, DEFAULT_FETCH_MIN_BYTES,
    POLL_BACKSTOP_REQUEST_TIMEOUTS, UNASSIGNED_POLL_WAIT_MS,
};
use crate::wire::groups::{PartitionOffset, TopicPartitionRef};
use crate::wire::limits::{MAX_DECOMPRESSED_BATCH_BYTES, REQUEST_OVERHEAD_BYTES};
use crate::wire::messages::{FetchRequest, FetchResponse};
use crate::wire::record_batch::Compression;
use crate::wire::record_batch::RecordBatches;
use crate::wire::{ErrorCode, Request, Response, WireError};

#[derive(Debug, Clone, Copy)]
pub struct ConsumerConfig {
    /// How long the broker may hold a fetch waiting for `min_bytes`.
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    /// Payload budget of one fetch (one partition).
    pub max_bytes: u32,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait_ms: DEFAULT_FETCH_MAX_WAIT_MS,
            min_bytes: DEFAULT_FETCH_MIN_BYTES,
            max_bytes: DEFAULT_FETCH_MAX_BYTES,
        }
    }
}

/// Where a partition's position goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// The partition's log start (the oldest retained record).
    Beginning,
    /// The high watermark: only records produced from now on.
    End,
    Offset(u64),
}

/// One consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    /// `None` is a null value (a tombstone), distinct from an empty one.
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Assigned {
    topic: Arc<str>,
    partition: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Resolved on the next poll.
    Seek(SeekTo),
    At(u64),
}

struct PartitionState {
    position: Position,
    /// Bumped by every seek: answers to fetches sent before it are dropped.
    generation: u64,
    fetch_in_flight: bool,
    high_watermark: Option<u64>,
}

struct FetchOutcome {
    assigned: Assigned,
    generation: u64,
    offset: u64,
    result: Result<(FetchResponse, Bytes), ClientError>,
}

/// Reads assigned partitions. Not `Clone`: one consumer, one set of positions.
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    partitions: BTreeMap<Assigned, PartitionState>,
    fetches: JoinSet<FetchOutcome>,
    /// Which partition each fetch task serves, so a task that failed (panicked) frees its
    /// partition instead of leaving it marked in flight forever.
    fetch_tasks: HashMap<tokio::task::Id, Assigned>,
    /// An error met while other partitions returned records: reported by the next poll.
    deferred_error: Option<ConsumeError>,
    /// Set by `subscribe`: the group decides the partitions.
    group: Option<GroupState>,
}

/// A subscribed consumer's group side.
struct GroupState {
    member: GroupMember,
    listener: Option<Box<dyn RebalanceListener>>,
    last_auto_commit: Instant,
    /// What this member last committed per partition, so an idle consumer does not commit
    /// the same offsets on every interval.
    committed: BTreeMap<Assigned, u64>,
    /// The partitions the last join gave, until their positions are installed.
    pending: Option<Vec<crate::wire::consumer_protocol::TopicPartitions>>,
}

/// A commit running in its own task ([`Consumer::commit_async`]); await it for the outcome,
/// or drop it (the commit still completes).
pub struct CommitHandle(tokio::task::JoinHandle<Result<(), ConsumeError>>);

impl Future for CommitHandle {
    type Output = Result<(), ConsumeError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(context).map(|joined| {
            joined.unwrap_or_else(|error| {
                Err(
                    ClientError::protocol("consumer", format!("commit task failed: {error}"))
                        .into(),
                )
            })
        })
    }
}

impl Consumer {
    pub fn new(client: Client) -> Consumer {
        Consumer::with_config(client, ConsumerConfig::default())
    }

    pub fn with_config(client: Client, config: ConsumerConfig) -> Consumer {
        let limit = client.config().limits.max_request_bytes - REQUEST_OVERHEAD_BYTES;
        let config = ConsumerConfig {
            max_bytes: config
                .max_bytes
                .clamp(1, u32::try_from(limit).unwrap_or(u32::MAX)),
            ..config
        };
        Consumer {
            client,
            config,
            partitions: BTreeMap::new(),
            fetches: JoinSet::new(),
            fetch_tasks: HashMap::new(),
            deferred_error: None,
            group: None,
        }
    }

    /// Makes this consumer a member of `group`, reading the partitions of `topics` the group
    /// assigns it, with the default [`GroupConfig`]. Nothing is sent until the next `poll`,
    /// which joins. Refused after `assign` ([`ConsumeError::InvalidState`]).
    pub async fn subscribe(&mut self, group: &str, topics: &[&str]) -> Result<(), ConsumeError> {
        self.subscribe_with(group, topics, GroupConfig::default())
            .await
    }

    /// [`Consumer::subscribe`] with explicit settings.
    pub async fn subscribe_with(
        &mut self,
        group: &str,
        topics: &[&str],
        config: GroupConfig,
    ) -> Result<(), ConsumeError> {
        if !self.partitions.is_empty() || self.group.is_some() {
            return Err(ConsumeError::InvalidState(
                "subscribe needs a consumer with no assignment and no subscription",
            ));
        }
        let invalid = |reason: String| ConsumeError::from(ClientError::InvalidArgument(reason));
        if group.is_empty() || group.len() > crate::wire::groups::MAX_GROUP_ID_BYTES {
            return Err(invalid(format!("invalid group id {group:?}")));
        }
        if topics.is_empty() || config.assignors.is_empty() {
            return Err(invalid(
                "subscribe needs at least one topic and one assignor".into(),
            ));
        }
        for topic in topics {
            check_topic_name(topic)?;
        }
        let mut topics: Vec<String> = topics.iter().map(ToString::to_string).collect();
        topics.sort();
        topics.dedup();
        let coordinator = Coordinator::new(self.client.clone(), group);
        self.group = Some(GroupState {
            member: GroupMember::new(coordinator, config, topics),
            listener: None,
            last_auto_commit: Instant::now(),
            committed: BTreeMap::new(),
            pending: None,
        });
        Ok(())
    }

    /// Hears of partitions revoked before each rejoin and assigned after it (subscribe mode).
    pub fn set_rebalance_listener(&mut self, listener: Box<dyn RebalanceListener>) {
        if let Some(group) = &mut self.group {
            group.listener = Some(listener);
        }
    }

    /// The member id and generation this consumer holds in its group, once joined.
    pub fn group_generation(&self) -> Option<(String, i32)> {
        let generation = self.group.as_ref()?.member.generation()?;
        Some((generation.member_id.clone(), generation.generation))
    }

    /// Commits the current positions (the next offset to read of each assigned partition) and
    /// waits for the answer. Only in a group ([`ConsumeError::NotInGroup`]); a commit the
    /// group refused because it rebalanced is [`ConsumeError::CommitFailed`].
    pub async fn commit(&mut self) -> Result<(), ConsumeError> {
        let offsets = self.positions();
        self.commit_offsets_inner(offsets).await
    }

    /// [`Consumer::commit`] in a task of its own: returns at once.
    pub fn commit_async(&mut self) -> Result<CommitHandle, ConsumeError> {
        let offsets = self.positions();
        let group = self.group.as_mut().ok_or(ConsumeError::NotInGroup)?;
        // Not noted in `committed`: its outcome is unknown here, so the next automatic commit
        // (if on) sends these offsets again rather than trusting it.
        let task = group.member.commit_task(to_partition_offsets(&offsets))?;
        Ok(CommitHandle(tokio::spawn(task)))
    }

    /// Commits explicit offsets, each the next offset to read (the last one processed + 1).
    pub async fn commit_offsets(
        &mut self,
        offsets: &[(&str, u32, u64)],
    ) -> Result<(), ConsumeError> {
        let offsets = offsets
            .iter()
            .map(|&(topic, partition, offset)| {
                check_topic_name(topic)?;
                Ok((
                    Assigned {
                        topic: Arc::from(topic),
                        partition,
                    },
                    offset,
                ))
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        self.commit_offsets_inner(offsets).await
    }

    async fn commit_offsets_inner(
        &mut self,
        offsets: Vec<(Assigned, u64)>,
    ) -> Result<(), ConsumeError> {
        let group = self.group.as_mut().ok_or(ConsumeError::NotInGroup)?;
        group
            .member
            .commit_task(to_partition_offsets(&offsets))?
            .await?;
        group.committed.extend(offsets);
        Ok(())
    }

    /// Commits (when auto-commit is on) and leaves the group. The consumer keeps its
    /// subscription: a later `poll` joins again.
    pub async fn close(&mut self) -> Result<(), ConsumeError> {
        let auto_commit = self
            .group
            .as_ref()
            .is_some_and(|group| group.member.config().auto_commit_interval_ms.is_some());
        let committed = if auto_commit && self.group_generation().is_some() {
            self.commit().await
        } else {
            Ok(())
        };
        let left = self.leave().await;
        committed.and(left)
    }

    /// Leaves the group at once (LeaveGroup), committing nothing: the group rebalances without
    /// waiting for this member's session to expire.
    pub async fn leave(&mut self) -> Result<(), ConsumeError> {
        let Some(group) = &mut self.group else {
            return Ok(());
        };
        let left = group.member.leave().await;
        group.committed.clear();
        group.pending = None;
        self.partitions.clear();
        self.fetches = JoinSet::new();
        self.fetch_tasks.clear();
        left
    }

    /// Each assigned partition's resolved position.
    fn positions(&self) -> Vec<(Assigned, u64)> {
        self.partitions
            .iter()
            .filter_map(|(assigned, state)| match state.position {
                Position::At(offset) => Some((assigned.clone(), offset)),
                Position::Seek(_) => None,
            })
            .collect()
    }

    /// The group's part of a poll: commits on the interval, and on a rebalance gives every
    /// partition up (after the automatic commit and the listener) and takes the new ones.
    async fn poll_group(&mut self) -> Result<(), ConsumeError> {
        let Some(group) = &mut self.group else {
            return Ok(());
        };
        let auto_commit = group.member.config().auto_commit_interval_ms;
        if group.member.needs_join() {
            if group.member.generation().is_some() {
                if auto_commit.is_some() {
                    if let Err(error) = self.commit_changed().await {
                        // The rejoin goes ahead: a refused commit means another member may
                        // own these partitions already.
                        tracing::debug!(%error, "commit before the rejoin failed");
                    }
                }
                let revoked = self.assignment();
                if let Some(listener) = self.group.as_mut().and_then(|g| g.listener.as_mut()) {
                    listener.on_partitions_revoked(&revoked);
                }
            }
            self.partitions.clear();
            // Dropping the set aborts fetches for partitions this member may no longer own.
            self.fetches = JoinSet::new();
            self.fetch_tasks.clear();
            self.deferred_error = None;
            let Some(group) = &mut self.group else {
                return Ok(());
            };
            group.committed.clear();
            group.pending = Some(group.member.join().await?);
        }
        let Some(group) = &mut self.group else {
            return Ok(());
        };
        if let Some(assigned) = group.pending.clone() {
            // Kept until installed: a poll cancelled (or failed) while fetching the committed
            // offsets leaves the assignment for the next poll instead of losing it.
            let reset = group.member.config().auto_offset_reset;
            self.take_assignment(assigned, reset).await?;
            let Some(group) = &mut self.group else {
                return Ok(());
            };
            group.pending = None;
            group.last_auto_commit = Instant::now();
            let assignment = self.assignment();
            if let Some(listener) = self.group.as_mut().and_then(|g| g.listener.as_mut()) {
                listener.on_partitions_assigned(&assignment);
            }
        } else if let Some(interval) = auto_commit {
            if group.last_auto_commit.elapsed() >= Duration::from_millis(interval) {
                group.last_auto_commit = Instant::now();
                match self.commit_changed().await {
                    Ok(()) | Err(ConsumeError::CommitFailed { .. }) => {} // rejoins next poll
                    // As Kafka's auto-commit: a coordinator out of reach for a while is logged,
                    // and the next interval tries again; reading goes on meanwhile.
                    Err(error) if error.is_retriable() => {
                        tracing::warn!(%error, "automatic commit failed; retrying at the next interval");
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(())
    }

    /// Commits the positions that moved since this member last committed them.
    async fn commit_changed(&mut self) -> Result<(), ConsumeError> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        let changed: Vec<(Assigned, u64)> = self
            .positions()
            .into_iter()
            .filter(|(assigned, offset)| group.committed.get(assigned) != Some(offset))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        self.commit_offsets_inner(changed).await
    }

    /// Installs a new assignment: each partition at its committed offset, or where
    /// `auto_offset_reset` says when none is committed.
    async fn take_assignment(
        &mut self,
        assigned: Vec<crate::wire::consumer_protocol::TopicPartitions>,
        reset: AutoOffsetReset,
    ) -> Result<(), ConsumeError> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        let refs: Vec<TopicPartitionRef> = assigned
            .iter()
            .flat_map(|entry| {
                entry.partitions.iter().map(|&partition| TopicPartitionRef {
                    topic: entry.topic.clone(),
                    partition,
                })
            })
            .collect();
        if refs.is_empty() {
            return Ok(());
        }
        let coordinator = Coordinator::new(self.client.clone(), group.member.group());
        let committed = coordinator
            .fetch_offsets(Some(refs.clone()), self.client.request_timeout())
            .await?;
        let reset_to = match reset {
            AutoOffsetReset::Earliest => SeekTo::Beginning,
            AutoOffsetReset::Latest => SeekTo::End,
        };
        for partition in refs {
            check_topic_name(&partition.topic)?;
            let offset = committed
                .iter()
                .find(|c| c.topic == partition.topic && c.partition == partition.partition)
                .and_then(|c| c.offset);
            self.partitions.insert(
                Assigned {
                    topic: Arc::from(partition.topic.as_str()),
                    partition: partition.partition,
                },
                PartitionState {
                    position: match offset {
                        Some(offset) => Position::At(offset),
                        None => Position::Seek(reset_to),
                    },
                    generation: 0,
                    fetch_in_flight: false,
                    high_watermark: None,
                },
            );
        }
        Ok(())
    }

    /// Adds `partitions` of `topic` to the assignment, each positioned at the end (new records
    /// only) until a seek says otherwise. Partitions already assigned keep their position.
    pub async fn assign(&mut self, topic: &str, partitions: &[u32]) -> Result<(), ConsumeError> {
        if self.group.is_some() {
            return Err(ConsumeError::InvalidState(
                "assign is not for a subscribed consumer: its group assigns the partitions",
            ));
        }
        check_topic_name(topic)?;
        let count = self.client.partition_count(topic).await?;
        if let Some(&partition) = partitions.iter().find(|&&partition| partition >= count) {
            return Err(ClientError::UnknownPartition {
                topic: topic.to_string(),
                partition,
                partitions: count,
            }
            .into());
        }
        let topic: Arc<str> = Arc::from(topic);
        for &partition in partitions {
            self.partitions
                .entry(Assigned {
                    topic: topic.clone(),
                    partition,
                })
                .or_insert(PartitionState {
                    position: Position::Seek(SeekTo::End),
                    generation: 0,
                    fetch_in_flight: false,
                    high_watermark: None,
                });
        }
        Ok(())
    }

    /// Assigns every partition of `topic`; returns them.
    pub async fn assign_all(&mut self, topic: &str) -> Result<Vec<u32>, ConsumeError> {
        let count = self.client.partition_count(topic).await?;
        let partitions: Vec<u32> = (0..count).collect();
        self.assign(topic, &partitions).await?;
        Ok(partitions)
    }

    /// The assigned `(topic, partition)` pairs.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.partitions
            .keys()
            .map(|assigned| (assigned.topic.to_string(), assigned.partition))
            .collect()
    }

    /// Moves one assigned partition's position. Unassigned partitions are ignored (returns
    /// false). A fetch in flight for it is answered and dropped.
    pub fn seek(&mut self, topic: &str, partition: u32, to: SeekTo) -> bool {
        let key = Assigned {
            topic: Arc::from(topic),
            partition,
        };
        match self.partitions.get_mut(&key) {
            Some(state) => {
                state.position = match to {
                    SeekTo::Offset(offset) => Position::At(offset),
                    other => Position::Seek(other),
                };
                state.generation += 1;
                true
            }
            None => false,
        }
    }

    /// Seeks every assigned partition.
    pub fn seek_all(&mut self, to: SeekTo) {
        let keys: Vec<Assigned> = self.partitions.keys().cloned().collect();
        for key in keys {
            self.seek(&key.topic, key.partition, to);
        }
    }

    /// The next offset `poll` returns for a partition, once resolved.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        let key = Assigned {
            topic: Arc::from(topic),
            partition,
        };
        match self.partitions.get(&key)?.position {
            Position::At(offset) => Some(offset),
            Position::Seek(_) => None,
        }
    }

    /// The partition's high watermark as of the last fetch or seek that reported it.
    pub fn high_watermark(&self, topic: &str, partition: u32) -> Option<u64> {
        let key = Assigned {
            topic: Arc::from(topic),
            partition,
        };
        self.partitions.get(&key)?.high_watermark
    }

    /// Returns the next records: as soon as one partition's fetch answers (possibly with none,
    /// when its long poll ran out), with the records of every fetch answered by then, in offset
    /// order per partition.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>, ConsumeError> {
        if let Some(error) = self.deferred_error.take() {
            return Err(error);
        }
        self.poll_group().await?;
        if self.partitions.is_empty() {
            if self.group.is_some() {
                // The group gave this member nothing (more members than partitions): wait a
                // little, then the next poll checks for a rebalance.
                tokio::time::sleep(Duration::from_millis(UNASSIGNED_POLL_WAIT_MS)).await;
                return Ok(Vec::new());
            }
            return Err(ConsumeError::NothingAssigned);
        }
        self.resolve_seeks().await?;
        self.start_fetches();
        let wait = self.client.request_timeout() * POLL_BACKSTOP_REQUEST_TIMEOUTS
            + Duration::from_millis(u64::from(self.config.max_wait_ms));
        let mut outcomes = Vec::new();
        let first = match tokio::time::timeout(wait, self.fetches.join_next_with_id()).await {
            Ok(Some(joined)) => joined,
            // Every fetch task is itself bounded by the client's timeouts; this is a backstop.
            Ok(None) | Err(_) => return Ok(Vec::new()),
        };
        let mut failed_task = None;
        for joined in std::iter::once(first)
            .chain(std::iter::from_fn(|| self.fetches.try_join_next_with_id()))
        {
            match joined {
                Ok((id, outcome)) => {
                    self.fetch_tasks.remove(&id);
                    outcomes.push(outcome);
                }
                Err(join_error) => {
                    if let Some(assigned) = self.fetch_tasks.remove(&join_error.id()) {
                        if let Some(state) = self.partitions.get_mut(&assigned) {
                            state.fetch_in_flight = false;
                        }
                    }
                    failed_task.get_or_insert_with(|| join_error.to_string());
                }
            }
        }
        if let Some(reason) = failed_task {
            let error: ConsumeError =
                ClientError::protocol("consumer", format!("fetch task failed: {reason}")).into();
            self.deferred_error.get_or_insert(error);
        }
        // Every answer is applied before any error is returned: an answer left behind would
        // keep its partition marked in flight, so it would never be fetched again and its
        // records would be lost to this consumer.
        let mut records = Vec::new();
        let mut first_error = None;
        for outcome in outcomes {
            if let Err(error) = self.take_outcome(outcome, &mut records) {
                first_error.get_or_insert(error);
            }
        }
        match first_error {
            Some(error) if records.is_empty() => Err(error),
            Some(error) => {
                self.deferred_error.get_or_insert(error);
                Ok(records)
            }
            None => Ok(records),
        }
    }

    /// Resolves Beginning/End positions from each partition's leader: a fetch that cannot wait
    /// (`max_wait_ms` 0, at an offset past any high watermark) answers at once with the
    /// leader's current log start and high watermark. A node's DescribeTopic answer may lag
    /// the leader, which would make "from the end" replay older messages.
    async fn resolve_seeks(&mut self) -> Result<(), ConsumeError> {
        let seeking: Vec<Assigned> = self
            .partitions
            .iter()
            .filter(|(_, state)| matches!(state.position, Position::Seek(_)))
            .map(|(assigned, _)| assigned.clone())
            .collect();
        let probe = ConsumerConfig {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1,
        };
        for assigned in seeking {
            let (response, _) = fetch(&self.client, &probe, &assigned, u64::MAX).await?;
            let Some(state) = self.partitions.get_mut(&assigned) else {
                continue;
            };
            let Position::Seek(to) = state.position else {
                continue;
            };
            state.position = Position::At(match to {
                SeekTo::Beginning => response.log_start_offset,
                SeekTo::End => response.high_watermark,
                SeekTo::Offset(offset) => offset,
            });
            state.high_watermark = Some(response.high_watermark);
        }
        Ok(())
    }

    fn start_fetches(&mut self) {
        for (assigned, state) in self.partitions.iter_mut() {
            let Position::At(offset) = state.position else {
                continue;
            };
            if state.fetch_in_flight {
                continue;
            }
            state.fetch_in_flight = true;
            let client = self.client.clone();
            let config = self.config;
            let assigned = assigned.clone();
            let generation = state.generation;
            let task_assigned = assigned.clone();
            let handle = self.fetches.spawn(async move {
                let result = fetch(&client, &config, &task_assigned, offset).await;
                FetchOutcome {
                    assigned: task_assigned,
                    generation,
                    offset,
                    result,
                }
            });
            self.fetch_tasks.insert(handle.id(), assigned);
        }
    }

    /// Applies one fetch answer: records at or above the position, the new position.
    fn take_outcome(
        &mut self,
        outcome: FetchOutcome,
        records: &mut Vec<ConsumerRecord>,
    ) -> Result<(), ConsumeError> {
        let Some(state) = self.partitions.get_mut(&outcome.assigned) else {
            return Ok(());
        };
        state.fetch_in_flight = false;
        if state.generation != outcome.generation || state.position != Position::At(outcome.offset)
        {
            return Ok(()); // A seek happened meanwhile: this answer is for an old position.
        }
        let topic = &outcome.assigned.topic;
        let partition = outcome.assigned.partition;
        let (response, payload) = match outcome.result {
            Ok(answer) => answer,
            Err(ClientError::Server(ErrorCode::OffsetOutOfRange {
                log_start_offset,
                high_watermark,
            })) => {
                state.high_watermark = Some(high_watermark);
                if let Some(group) = &self.group {
                    // A group member's position (a committed offset retention has since
                    // removed) goes where auto_offset_reset says, as in Kafka.
                    state.position =
                        Position::Seek(match group.member.config().auto_offset_reset {
                            AutoOffsetReset::Earliest => SeekTo::Beginning,
                            AutoOffsetReset::Latest => SeekTo::End,
                        });
                    state.generation += 1;
                    return Ok(());
                }
                return Err(ConsumeError::OffsetOutOfRange {
                    topic: topic.to_string(),
                    partition,
                    offset: outcome.offset,
                    log_start_offset,
                });
            }
            Err(error) => return Err(error.into()),
        };
        state.high_watermark = Some(response.high_watermark);
        let next = decode_records(topic, partition, outcome.offset, payload, records).map_err(
            |source| ConsumeError::CorruptBatch {
                topic: topic.to_string(),
                partition,
                source,
            },
        )?;
        state.position = Position::At(next);
        Ok(())
    }
}

fn to_partition_offsets(offsets: &[(Assigned, u64)]) -> Vec<PartitionOffset> {
    offsets
        .iter()
        .map(|(assigned, offset)| PartitionOffset {
            topic: assigned.topic.to_string(),
            partition: assigned.partition,
            offset: *offset,
            leader_epoch: None,
            metadata: String::new(),
        })
        .collect()
}

async fn fetch(
    client: &Client,
    config: &ConsumerConfig,
    assigned: &Assigned,
    offset: u64,
) -> Result<(FetchResponse, Bytes), ClientError> {
    let request = Request::Fetch(FetchRequest {
        topic: assigned.topic.to_string(),
        partition: assigned.partition,
        offset,
        max_bytes: config.max_bytes,
        max_wait_ms: config.max_wait_ms,
        min_bytes: config.min_bytes,
    });
    let timeout = client.request_timeout() + Duration::from_millis(u64::from(config.max_wait_ms));
    let frame = client
        .request_leader(
            &assigned.topic,
            assigned.partition,
            &request,
            Bytes::new(),
            timeout,
        )
        .await?;
    match frame.header {
        Response::Fetch(response) => Ok((response, frame.payload)),
        other => Err(unexpected(&request, &other)),
    }
}

/// Appends the records of a fetch payload at or above `position` to `out` and returns the new
/// position (after the last record returned, or `position` if none). Each batch is checked
/// (CRC, framing, decompression) before any of its records is returned. A bad batch after good
/// ones ends the payload there: their records are returned and the position stops before the
/// bad batch, so the next fetch starts at it and reports it (returning the good records and
/// the error together would deliver them twice). A bad first batch is the error. Decoding stops
/// once [`MAX_DECOMPRESSED_BATCH_BYTES`] of records were decompressed for this payload: the
/// rest is fetched again from the new position.
///
/// Worked example: position 5, payload = one batch with base_offset 3 and 4 records (offsets
/// 3..=6): records 3 and 4 are skipped, 5 and 6 returned, the new position is 7.
pub(crate) fn decode_records(
    topic: &Arc<str>,
    partition: u32,
    position: u64,
    payload: Bytes,
    out: &mut Vec<ConsumerRecord>,
) -> Result<u64, WireError> {
    let mut next = position;
    let mut decompressed_bytes = 0u64;
    for batch in RecordBatches::new(payload) {
        let checked = batch.and_then(|batch| {
            // Offsets stay within Kafka's i64 (a leader never stamps more), so `offset + 1`
            // below cannot overflow.
            let last_offset = batch.last_offset()?;
            if last_offset >= i64::MAX as u64 {
                return Err(WireError::OffsetOverflow {
                    base_offset: batch.base_offset(),
                    count: batch.count(),
                });
            }
            Ok((batch, last_offset))
        });
        let (batch, last_offset) = match checked {
            Ok(checked) => checked,
            Err(_) if next > position => break,
            Err(error) => return Err(error),
        };
        let base_offset = batch.base_offset();
        if last_offset < next {
            continue; // already returned: no need to decompress it
        }
        let records = match batch.decode() {
            Ok(records) => records,
            Err(_) if next > position => break,
            Err(error) => return Err(error),
        };
        if batch.compression() != Compression::None {
            decompressed_bytes += records.size_bytes();
        }
        for record in records.iter() {
            let offset = base_offset + u64::from(record.offset_delta);
            if offset < next {
                continue;
            }
            out.push(ConsumerRecord {
                topic: topic.clone(),
                partition,
                offset,
                timestamp_ms: record.timestamp_ms,
                key: record.key.map(|key| records.slice_ref(key)),
                value: record.value.map(|value| records.slice_ref(value)),
                headers: record
                    .headers()
                    .map(|header| {
                        let value = header.value.map(|value| records.slice_ref(value));
                        (records.slice_ref(header.key), value)
                    })
                    .collect(),
            });
            next = offset + 1;
        }
        if decompressed_bytes >= MAX_DECOMPRESSED_BATCH_BYTES {
            break;
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::record_batch::stamp_leader;
    use crate::wire::{Limits, Record, RecordBatchBuilder};

    fn batch(base_offset: u64, values: &[&str]) -> Vec<u8> {
        let mut builder = RecordBatchBuilder::new(&Limits::default(), 1 << 20);
        for (index, value) in values.iter().enumerate() {
            let key = format!("k{index}");
            builder
                .append(&Record {
                    timestamp_ms: 1_000 + index as i64,
                    key: (index % 2 == 0).then_some(key.as_bytes()),
                    value: Some(value.as_bytes()),
                    headers: &[],
                })
                .unwrap();
        }
        let mut bytes = builder.finish().unwrap().to_vec();
        stamp_leader(&mut bytes, base_offset, 1).unwrap();
        bytes
    }

    fn decode(position: u64, payload: Vec<u8>) -> Result<(Vec<(u64, String)>, u64), WireError> {
        let mut records = Vec::new();
        let next = decode_records(
            &Arc::from("t"),
            0,
            position,
            Bytes::from(payload),
            &mut records,
        )?;
        let pairs = records
            .iter()
            .map(|record| {
                (
                    record.offset,
                    String::from_utf8(record.value.clone().unwrap().to_vec()).unwrap(),
                )
            })
            .collect();
        Ok((pairs, next))
    }

    #[test]
    fn records_below_the_position_are_skipped_worked_example() {
        let (records, next) = decode(5, batch(3, &["a", "b", "c", "d"])).unwrap();
        assert_eq!(records, [(5, "c".to_string()), (6, "d".to_string())]);
        assert_eq!(next, 7);
    }

    #[test]
    fn concatenated_batches_are_read_in_order_with_keys_and_timestamps() {
        let mut payload = batch(0, &["a", "b"]);
        payload.extend(batch(2, &["c"]));
        let mut records = Vec::new();
        let next =
            decode_records(&Arc::from("t"), 4, 0, Bytes::from(payload), &mut records).unwrap();
        assert_eq!(next, 3);
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].key.as_deref(), Some(&b"k0"[..]));
        assert_eq!(records[1].key, None);
        assert_eq!(records[1].timestamp_ms, 1_001);
        assert_eq!(records[2].offset, 2);
        assert_eq!(records[2].partition, 4);
    }

    #[test]
    fn an_empty_payload_keeps_the_position_and_a_batch_wholly_below_returns_nothing() {
        assert_eq!(decode(9, Vec::new()).unwrap(), (Vec::new(), 9));
        assert_eq!(decode(9, batch(0, &["x", "y"])).unwrap(), (Vec::new(), 9));
    }

    #[test]
    fn a_corrupt_or_truncated_payload_is_an_error_not_a_panic() {
        let mut corrupt = batch(0, &["hello"]);
        let last = corrupt.len() - 2;
        corrupt[last] ^= 0xff;
        assert!(matches!(
            decode(0, corrupt),
            Err(WireError::CrcMismatch { .. })
        ));
        let mut truncated = batch(0, &["hello"]);
        truncated.truncate(truncated.len() - 1);
        assert!(decode(0, truncated).is_err());
        assert!(decode(0, vec![1, 2, 3]).is_err());
        // No leader stamps such an offset (stamp_leader refuses it); a broken one could.
        let mut overflowing = batch(0, &["a", "b"]);
        overflowing[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            decode(0, overflowing),
            Err(WireError::OffsetOverflow { .. })
        ));
    }

    #[test]
    fn a_bad_batch_after_good_ones_ends_the_payload_before_it() {
        let mut payload = batch(0, &["a", "b"]);
        let mut bad = batch(2, &["c"]);
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        payload.extend_from_slice(&bad);
        let (records, next) = decode(0, payload.clone()).unwrap();
        assert_eq!(records, [(0, "a".to_string()), (1, "b".to_string())]);
        assert_eq!(next, 2, "the next fetch starts at the bad batch");
        assert!(matches!(
            decode(next, bad),
            Err(WireError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn an_offset_past_kafkas_range_is_an_error_not_an_overflow() {
        let mut single = batch(0, &["a"]);
        single[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            decode(0, single),
            Err(WireError::OffsetOverflow { .. })
        ));
        let mut at_i64_max = batch(0, &["a"]);
        at_i64_max[..8].copy_from_slice(&(i64::MAX as u64).to_be_bytes());
        assert!(decode(0, at_i64_max).is_err());
    }
}
