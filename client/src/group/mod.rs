//! Consumer groups, the member's side (docs/CLIENT.md "Consumer groups"): a [`crate::Consumer`]
//! that subscribes joins a group through its coordinator, and the group decides which of the
//! topics' partitions it reads; positions start at the group's committed offsets.
//!
//! - `coordinator.rs`: finding the coordinator and retrying around its moves; the operator's
//!   group calls (`Admin`).
//! - `member.rs`: one membership: join, the leader's assignment, sync, the heartbeat task,
//!   commits, leave.
//! - `assignor.rs`: Kafka's range and round-robin assignors (pure).
//!
//! The settings are [`GroupConfig`]; a [`RebalanceListener`] hears of partitions leaving and
//! arriving.

pub mod assignor;
pub(crate) mod coordinator;
pub(crate) mod member;

use crate::limits::{
    DEFAULT_AUTO_COMMIT_INTERVAL_MS, DEFAULT_REBALANCE_TIMEOUT_MS, DEFAULT_SESSION_TIMEOUT_MS,
};
pub use assignor::Assignor;

/// Where a partition without a committed offset (or with one below the log start) starts:
/// Kafka's `auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoOffsetReset {
    /// The log start: every retained record.
    Earliest,
    /// The high watermark: records produced from now on (Kafka's default).
    #[default]
    Latest,
}

/// A consumer's group settings (Kafka's names in parentheses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// Sent in joins (`client.id`); the coordinator builds member ids from it.
    pub client_id: String,
    /// How long the coordinator keeps the member without a heartbeat (`session.timeout.ms`,
    /// 10 s). The broker accepts 6,000..=1,800,000 ms. Heartbeats go every third of it.
    pub session_timeout_ms: u32,
    /// How long a rebalance waits for members to rejoin (`max.poll.interval.ms`, whose Kafka
    /// default is 300 s; 60 s here, so a member that stopped polling holds a rebalance up for a
    /// minute at most).
    pub rebalance_timeout_ms: u32,
    /// Commit the positions every this many ms from `poll`, and before a rebalance and on
    /// `close` (`enable.auto.commit`, `auto.commit.interval.ms`, 5 s). `None`: never
    /// automatically.
    pub auto_commit_interval_ms: Option<u64>,
    pub auto_offset_reset: AutoOffsetReset,
    /// Assignors in order of preference (`partition.assignment.strategy`); at least one. The
    /// default prefers range, like Kafka's before 3.0.
    pub assignors: Vec<Assignor>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            client_id: "keel-consumer".to_string(),
            session_timeout_ms: DEFAULT_SESSION_TIMEOUT_MS,
            rebalance_timeout_ms: DEFAULT_REBALANCE_TIMEOUT_MS,
            auto_commit_interval_ms: Some(DEFAULT_AUTO_COMMIT_INTERVAL_MS),
            auto_offset_reset: AutoOffsetReset::Latest,
            assignors: vec![Assignor::Range, Assignor::RoundRobin],
        }
    }
}

/// Called by `poll` around a rebalance (Kafka's `ConsumerRebalanceListener`): revoked before the
/// member rejoins (after the automatic commit, when on), assigned once the new assignment's
/// positions are known. Partitions are `(topic, partition)`.
pub trait RebalanceListener: Send {
    fn on_partitions_revoked(&mut self, partitions: &[(String, u32)]);
    fn on_partitions_assigned(&mut self, partitions: &[(String, u32)]);
}
