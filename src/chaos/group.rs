//! The consumer-group side of a chaos run: members of the group [`GROUP`] reading the main
//! topic through `Consumer::subscribe`, each committing exactly what it has read, and an offset
//! watcher asking the coordinator for the group's committed offsets twice a second. After the
//! heal, [`drain`] keeps the members going until the group has committed every partition up to
//! its high watermark. Everything goes into the history (`group_read`, `group_commit`,
//! `group_commit_failed`, `group_assigned`, `committed_seen`, `group_done`); the checker judges
//! it (docs/CHAOS.md "The consumer group").
//!
//! Commits are explicit (auto-commit off), synchronous and never cancelled halfway, so every
//! offset the group may hold is one a `group_commit` or `group_commit_failed` line names.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_client::wire::groups::TopicPartitionRef;
use keel_client::{
    Admin, AutoOffsetReset, Client, ConsumeError, Consumer, ConsumerConfig, GroupConfig,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;

use crate::history::{Event, History, Stored};
use crate::limits::{
    CONSUMER_ERROR_NOTE_INTERVAL, CONSUMER_ERROR_PAUSE, CONSUMER_MAX_WAIT_MS, GROUP_DRAIN_POLL,
    GROUP_LEAVES, GROUP_LEAVE_AWAY_MS, GROUP_LEAVE_WINDOW, GROUP_REBALANCE_TIMEOUT_MS,
    GROUP_SESSION_TIMEOUT_MS, OFFSET_WATCH_INTERVAL,
};

/// The group every member joins.
pub const GROUP: &str = "keel-chaos";

/// Mixed into the run's seed for the leave schedule, so that adding or changing it leaves the
/// nemesis's schedule of a seed as it was.
const LEAVE_SCHEDULE_SALT: u64 = 0x6b65_656c_6772_6f75;

/// When a member leaves the group and how long it stays away before it subscribes anew, counted
/// from the start of the faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leave {
    pub member: u32,
    pub at: Duration,
    pub away: Duration,
    /// Leave as a crashed application would: drop the consumer right after a poll, its records
    /// recorded but not committed, without LeaveGroup. The coordinator removes it when its
    /// session expires, and whoever gets its partitions reads those records again. Otherwise
    /// the member closes its consumer (LeaveGroup) after committing what it read.
    pub abandon: bool,
}

/// The seeded leaves of a run: [`GROUP_LEAVES`] of them at random members, within the middle of
/// the fault period, each a clean leave or an abandoned consumer, so rebalances happen even when
/// no fault moves the coordinator.
pub fn leave_schedule(seed: u64, members: u32, duration: Duration) -> Vec<Leave> {
    if members == 0 {
        return Vec::new();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ LEAVE_SCHEDULE_SALT);
    let count = rng.random_range(GROUP_LEAVES);
    let window = duration.as_secs_f64();
    let mut leaves: Vec<Leave> = (0..count)
        .map(|_| Leave {
            member: rng.random_range(0..members),
            at: Duration::from_secs_f64(window * rng.random_range(GROUP_LEAVE_WINDOW)),
            away: Duration::from_millis(rng.random_range(GROUP_LEAVE_AWAY_MS)),
            abandon: rng.random_bool(0.5),
        })
        .collect();
    leaves.sort_by_key(|leave| leave.at);
    leaves
}

fn group_config(member: u32) -> GroupConfig {
    GroupConfig {
        client_id: format!("keel-chaos-m{member}"),
        session_timeout_ms: GROUP_SESSION_TIMEOUT_MS,
        rebalance_timeout_ms: GROUP_REBALANCE_TIMEOUT_MS,
        // Commits are the workload's own, after each poll: the history must name every offset
        // the group may ever hold.
        auto_commit_interval_ms: None,
        // A partition nobody committed is read from its start, so every message is due.
        auto_offset_reset: AutoOffsetReset::Earliest,
        ..GroupConfig::default()
    }
}

async fn subscribed(client: &Client, member: u32, topic: &str) -> Result<Consumer, ConsumeError> {
    let mut consumer = Consumer::with_config(
        client.clone(),
        ConsumerConfig {
            max_wait_ms: CONSUMER_MAX_WAIT_MS,
            ..ConsumerConfig::default()
        },
    );
    consumer
        .subscribe_with(GROUP, &[topic], group_config(member))
        .await?;
    Ok(consumer)
}

/// Runs member `member` on `topic` until `stop` turns true, then leaves the group. `leaves`
/// are this member's scheduled leaves, relative to `started`.
pub async fn run_member(
    member: u32,
    client: Client,
    topic: String,
    started: Instant,
    leaves: Vec<Leave>,
    mut stop: watch::Receiver<bool>,
    history: Arc<History>,
) {
    let mut leaves = leaves.into_iter().peekable();
    let mut consumer = match subscribed(&client, member, &topic).await {
        Ok(consumer) => consumer,
        Err(error) => {
            // Only a bad argument fails a subscribe (it sends nothing): the run is wrong.
            history.note(format!("group member {member}: subscribe: {error}"));
            return;
        }
    };
    let mut generation: Option<(String, i32)> = None;
    // Read but not yet acknowledged as committed, under the generation the reads were made in:
    // a failed commit is retried after the next poll, or the drain would never finish.
    let mut pending: BTreeMap<u32, u64> = BTreeMap::new();
    let mut last_error_note = Instant::now() - CONSUMER_ERROR_NOTE_INTERVAL;
    // A leave that is due: taken before the next poll, or (abandoning) right after it.
    let mut due: Option<Leave> = None;
    while !*stop.borrow() {
        if due.is_none()
            && leaves
                .peek()
                .is_some_and(|leave| started.elapsed() >= leave.at)
        {
            due = leaves.next();
        }
        if let Some(leave) = due.filter(|leave| !leave.abandon) {
            due = None;
            history.note(format!(
                "group member {member}: leaving for {} ms",
                leave.away.as_millis()
            ));
            if let Err(error) = consumer.close().await {
                history.note(format!("group member {member}: leave: {error}"));
            }
            generation = None;
            pending.clear();
            tokio::select! {
                _ = tokio::time::sleep(leave.away) => {}
                _ = stop.changed() => break,
            }
            consumer = match subscribed(&client, member, &topic).await {
                Ok(consumer) => consumer,
                Err(error) => {
                    history.note(format!("group member {member}: subscribe: {error}"));
                    return;
                }
            };
            history.note(format!("group member {member}: subscribed again"));
        }
        // Cancel-safe: a join or a fetch cut short here is simply made again (a record it
        // fetched was neither recorded nor committed).
        let polled = tokio::select! {
            polled = consumer.poll() => polled,
            _ = stop.changed() => break,
        };
        let now_in = consumer.group_generation();
        if now_in != generation {
            // A new generation: what was read under the old one is not this member's to
            // commit any more (another member may already have committed past it).
            pending.clear();
            if let Some((_, number)) = &now_in {
                history.record(Event::GroupAssigned {
                    member,
                    generation: *number,
                    partitions: consumer.assignment(),
                });
            }
            generation = now_in;
        }
        match polled {
            Ok(records) => {
                for record in records {
                    history.record(Event::GroupRead {
                        member,
                        topic: record.topic.to_string(),
                        partition: record.partition,
                        offset: record.offset,
                        stored: Stored::from_value(record.value.as_deref().unwrap_or_default()),
                    });
                    let next = pending.entry(record.partition).or_default();
                    *next = (*next).max(record.offset + 1);
                }
            }
            Err(error) => {
                if last_error_note.elapsed() >= CONSUMER_ERROR_NOTE_INTERVAL {
                    history.note(format!("group member {member}: poll: {error}"));
                    last_error_note = Instant::now();
                }
                tokio::time::sleep(CONSUMER_ERROR_PAUSE).await;
            }
        }
        if let Some(leave) = due.filter(|leave| leave.abandon) {
            due = None;
            history.note(format!(
                "group member {member}: abandoning its consumer (reads uncommitted, no leave) \
                 for {} ms",
                leave.away.as_millis()
            ));
            // Dropping the consumer stops its heartbeats; nothing is sent.
            drop(consumer);
            generation = None;
            pending.clear();
            tokio::select! {
                _ = tokio::time::sleep(leave.away) => {}
                _ = stop.changed() => return,
            }
            consumer = match subscribed(&client, member, &topic).await {
                Ok(consumer) => consumer,
                Err(error) => {
                    history.note(format!("group member {member}: subscribe: {error}"));
                    return;
                }
            };
            history.note(format!("group member {member}: subscribed again"));
            continue;
        }
        if pending.is_empty() || generation.is_none() {
            continue;
        }
        // Not raced with `stop`: a commit given up halfway could land unrecorded.
        let offsets: Vec<(&str, u32, u64)> = pending
            .iter()
            .map(|(&partition, &offset)| (topic.as_str(), partition, offset))
            .collect();
        let outcome = consumer.commit_offsets(&offsets).await;
        for (_, partition, offset) in offsets {
            history.record(match &outcome {
                Ok(()) => Event::GroupCommit {
                    member,
                    topic: topic.clone(),
                    partition,
                    offset,
                },
                Err(error) => Event::GroupCommitFailed {
                    member,
                    topic: topic.clone(),
                    partition,
                    offset,
                    error: error.to_string(),
                },
            });
        }
        match outcome {
            Ok(()) => pending.clear(),
            // Refused because the group rebalanced: the next poll rejoins, and the partitions
            // may be another member's by then.
            Err(ConsumeError::CommitFailed { .. }) => pending.clear(),
            // Outcome unknown (the coordinator moved, a timeout): try again after the next poll.
            Err(_) => {}
        }
    }
    // Leave, so the group does not wait out this member's session.
    if let Err(error) = consumer.close().await {
        history.note(format!("group member {member}: leave at the end: {error}"));
    }
}

/// Fetches the group's committed offsets through `Admin::committed_offsets`, recording each as
/// `committed_seen` with the time the request was sent.
#[derive(Clone)]
pub struct OffsetWatcher {
    admin: Admin,
    topic: String,
    partitions: u32,
    history: Arc<History>,
}

impl OffsetWatcher {
    pub fn new(client: Client, topic: String, partitions: u32, history: Arc<History>) -> Self {
        OffsetWatcher {
            admin: Admin::new(client),
            topic,
            partitions,
            history,
        }
    }

    /// One fetch: the committed offset of every partition (`None`: nothing committed), or the
    /// error.
    pub async fn observe(&self) -> anyhow::Result<BTreeMap<u32, Option<u64>>> {
        let refs: Vec<TopicPartitionRef> = (0..self.partitions)
            .map(|partition| TopicPartitionRef {
                topic: self.topic.clone(),
                partition,
            })
            .collect();
        let started_ms = self.history.now_ms();
        let answer = self.admin.committed_offsets(GROUP, Some(refs)).await?;
        let mut seen = BTreeMap::new();
        for committed in answer {
            if committed.topic != self.topic || committed.partition >= self.partitions {
                anyhow::bail!(
                    "offset fetch answered {}/{} which was not asked for",
                    committed.topic,
                    committed.partition
                );
            }
            self.history.record(Event::CommittedSeen {
                topic: committed.topic,
                partition: committed.partition,
                offset: committed.offset,
                started_ms,
            });
            seen.insert(committed.partition, committed.offset);
        }
        Ok(seen)
    }

    /// Observes every [`OFFSET_WATCH_INTERVAL`] until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(OFFSET_WATCH_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error_note = Instant::now() - CONSUMER_ERROR_NOTE_INTERVAL;
        while !*stop.borrow() {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => break,
            }
            // A fetch cut short by `stop` records nothing: its line is written only with the
            // answer.
            let observed = tokio::select! {
                observed = self.observe() => observed,
                _ = stop.changed() => break,
            };
            if let Err(error) = observed {
                if last_error_note.elapsed() >= CONSUMER_ERROR_NOTE_INTERVAL {
                    self.history.note(format!("offset watcher: {error:#}"));
                    last_error_note = Instant::now();
                }
            }
        }
    }
}

/// After the heal and the final read: waits (bounded by `timeout`) until the group's committed
/// offset of every partition has reached `high_watermarks` (partition -> the high watermark the
/// final read reached). Returns whether it got there; the caller records `group_done`.
pub async fn drain(
    watcher: &OffsetWatcher,
    high_watermarks: &BTreeMap<u32, u64>,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut last = BTreeMap::new();
    loop {
        match watcher.observe().await {
            Ok(seen) => {
                let done = high_watermarks.iter().all(|(partition, high_watermark)| {
                    seen.get(partition)
                        .copied()
                        .flatten()
                        .is_some_and(|offset| offset >= *high_watermark)
                });
                if done {
                    return true;
                }
                last = seen;
            }
            Err(error) => watcher.history.note(format!("group drain: {error:#}")),
        }
        if Instant::now() >= deadline {
            watcher.history.note(format!(
                "group drain: committed offsets {last:?} short of the high watermarks \
                 {high_watermarks:?} after {timeout:?}"
            ));
            return false;
        }
        tokio::time::sleep(GROUP_DRAIN_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leave_schedule_is_fixed_by_the_seed_and_stays_within_the_run() {
        let duration = Duration::from_secs(60);
        let first = leave_schedule(7, 2, duration);
        assert_eq!(first, leave_schedule(7, 2, duration));
        assert!(!first.is_empty());
        for leave in &first {
            assert!(leave.member < 2);
            assert!(leave.at < duration);
        }
        assert!(first.windows(2).all(|pair| pair[0].at <= pair[1].at));
        assert!(leave_schedule(7, 0, duration).is_empty());
    }
}
