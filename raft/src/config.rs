//! The knobs of one Raft node, with their defaults, units and the relationships between them.
//!
//! Time is counted in ticks: the driver calls `tick()` every `heartbeat` period of wall time
//! (the node: 20 ms, docs/DECISIONS.md "Ticks are 20 ms"), so with the defaults a heartbeat goes
//! out every tick and `election_timeout_min_ticks = 10` is 200 ms.

use crate::entry::NodeId;
use crate::error::ConfigError;
use crate::membership::Incarnation;

pub const DEFAULT_HEARTBEAT_INTERVAL_TICKS: u32 = 1;
pub const DEFAULT_ELECTION_TIMEOUT_MIN_TICKS: u32 = 10;
pub const DEFAULT_MAX_APPEND_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_MAX_INFLIGHT_MSGS: usize = 256;
pub const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 32 * DEFAULT_MAX_APPEND_BYTES;
pub const DEFAULT_MAX_UNAPPLIED_ENTRIES: u64 = 10_000;
pub const DEFAULT_MAX_UNCOMMITTED_BYTES: u64 = 64 * DEFAULT_MAX_APPEND_BYTES;
pub const DEFAULT_MAX_APPLY_BYTES: u64 = 4 * DEFAULT_MAX_APPEND_BYTES;
pub const DEFAULT_MAX_SNAPSHOT_CHUNK_BYTES: u64 = DEFAULT_MAX_APPEND_BYTES;
pub const DEFAULT_LEASE_DRIFT_MARGIN_TICKS: u32 = 2;

/// Most slots an `Inflights` ring reserves up front: a large `max_inflight_msgs` must not cost
/// every follower's Progress that much memory before its messages are really in flight.
pub(crate) const INFLIGHTS_MAX_INITIAL_SLOTS: usize = 1024;
/// Bytes read per batch when scanning the log for configuration entries at start-up: one
/// default append's worth, so a long log is never held in memory whole.
pub(crate) const MEMBERSHIP_SCAN_BATCH_BYTES: u64 = 1024 * 1024;

// A lease must last at least one tick.
const _: () = assert!(DEFAULT_LEASE_DRIFT_MARGIN_TICKS < DEFAULT_ELECTION_TIMEOUT_MIN_TICKS);

// An election timeout must span several heartbeats, or followers would campaign between two
// heartbeats of a healthy leader.
const _: () = assert!(DEFAULT_ELECTION_TIMEOUT_MIN_TICKS >= 3 * DEFAULT_HEARTBEAT_INTERVAL_TICKS);
// One full batch must fit in the pipeline, and the leader must accept at least one full batch
// of proposals before reporting Overloaded.
const _: () = assert!(DEFAULT_MAX_INFLIGHT_BYTES >= DEFAULT_MAX_APPEND_BYTES);
const _: () = assert!(DEFAULT_MAX_UNCOMMITTED_BYTES >= DEFAULT_MAX_APPEND_BYTES);
const _: () = assert!(DEFAULT_MAX_APPLY_BYTES >= DEFAULT_MAX_APPEND_BYTES);

/// Configuration of one node of one group.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; must be a voter of the configuration `RaftNode::new` starts with
    /// (`RaftNode::with_membership` also starts learners and servers waiting to be added).
    pub id: NodeId,
    /// This node's incarnation (docs/RAFT-CORE.md "Incarnations on the wire"): the driver sends it
    /// with every message (`RaftNode::step_from` on the receiving side). 0 in `Config::new`.
    pub incarnation: Incarnation,
    /// Ticks between two heartbeat rounds of a leader.
    pub heartbeat_interval_ticks: u32,
    /// Lower bound of the randomised election timeout: each reset draws a timeout uniformly
    /// from `[election_timeout_min_ticks, 2 * election_timeout_min_ticks)`. Also the window of
    /// leader stickiness and of check-quorum.
    pub election_timeout_min_ticks: u32,
    /// Upper bound of the entry bytes in one AppendEntries (a single larger entry goes alone).
    pub max_append_bytes: u64,
    /// Replicate-state pipelining: AppendEntries with entries in flight per follower.
    pub max_inflight_msgs: usize,
    /// Replicate-state pipelining: entry bytes in flight per follower.
    pub max_inflight_bytes: u64,
    /// The leader sends no new entries to a follower whose applied index lags its persisted
    /// index by more than this.
    pub max_unapplied_entries: u64,
    /// Proposals get `Overloaded` once the leader's uncommitted entries hold this many bytes.
    pub max_uncommitted_bytes: u64,
    /// Upper bound of the committed-entry bytes handed out in one `Ready`.
    pub max_apply_bytes: u64,
    /// Bytes of snapshot data per InstallSnapshot message.
    pub max_snapshot_chunk_bytes: u64,
    /// A lease lasts `election_timeout_min_ticks - lease_drift_margin_ticks` from the sending of
    /// the round a quorum confirmed: the margin covers the clock-rate difference between the
    /// leader and the voters over one election timeout.
    pub lease_drift_margin_ticks: u32,
    /// A node restarted with a term above 0 ignores vote and pre-vote requests for
    /// `election_timeout_min_ticks`: before crashing it may have answered a lease round, which
    /// promised stickiness it no longer remembers. Off only in unit tests of vote handling.
    pub vote_hold_after_restart: bool,
    /// Seed of the node's own RNG (election timeout jitter). The driver draws it once from
    /// real entropy; the simulator derives it from the run's seed.
    pub random_seed: u64,
    /// Planted bugs for the simulator, each breaking one consensus rule on purpose
    /// (docs/RAFT-CORE.md "Planted bugs").
    #[cfg(feature = "fault-injection")]
    pub planted_bugs: PlantedBugs,
}

/// Switches that break one rule each, so tests can show the simulator catches the violation.
/// They are fields of one node's config (never process-global), so tests run in parallel.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Commit an entry of an older term by counting its replicas (breaks the commit rule).
    pub count_old_term_entries_for_commit: bool,
    /// Grant votes without the up-to-date check (breaks leader completeness).
    pub grant_vote_without_log_check: bool,
    /// Vote and campaign despite a recovery that may have lost acknowledged entries
    /// (docs/RAFT-CORE.md "The abstain rule and its durability").
    pub ignore_abstain_rule: bool,
    /// Propose a configuration change while the previous one is uncommitted, so two voter
    /// changes can be in flight at once (docs/RAFT-CORE.md "Membership": one change at a time).
    pub allow_concurrent_membership_changes: bool,
    /// Hear and count every incarnation of a member id: a wiped node votes and acknowledges
    /// as its old incarnation (docs/RAFT-CORE.md "Incarnations on the wire").
    pub ignore_incarnations: bool,
    /// Keep serving lease reads after starting a leadership transfer (docs/RAFT-CORE.md "Reads":
    /// TimeoutNow bypasses the stickiness leases rely on).
    pub lease_reads_ignore_transfer: bool,
}

impl Config {
    /// The defaults for node `id`, with RNG seed `random_seed`.
    pub fn new(id: NodeId, random_seed: u64) -> Config {
        Config {
            id,
            incarnation: 0,
            heartbeat_interval_ticks: DEFAULT_HEARTBEAT_INTERVAL_TICKS,
            election_timeout_min_ticks: DEFAULT_ELECTION_TIMEOUT_MIN_TICKS,
            max_append_bytes: DEFAULT_MAX_APPEND_BYTES,
            max_inflight_msgs: DEFAULT_MAX_INFLIGHT_MSGS,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            max_unapplied_entries: DEFAULT_MAX_UNAPPLIED_ENTRIES,
            max_uncommitted_bytes: DEFAULT_MAX_UNCOMMITTED_BYTES,
            max_apply_bytes: DEFAULT_MAX_APPLY_BYTES,
            max_snapshot_chunk_bytes: DEFAULT_MAX_SNAPSHOT_CHUNK_BYTES,
            lease_drift_margin_ticks: DEFAULT_LEASE_DRIFT_MARGIN_TICKS,
            vote_hold_after_restart: true,
            random_seed,
            #[cfg(feature = "fault-injection")]
            planted_bugs: PlantedBugs::default(),
        }
    }

    /// Checks every limit and the relationships between them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least(
            "heartbeat_interval_ticks",
            self.heartbeat_interval_ticks.into(),
            1,
        )?;
        at_least("max_append_bytes", self.max_append_bytes, 1)?;
        at_least("max_inflight_msgs", self.max_inflight_msgs as u64, 1)?;
        at_least("max_unapplied_entries", self.max_unapplied_entries, 1)?;
        at_least("max_apply_bytes", self.max_apply_bytes, 1)?;
        at_least("max_snapshot_chunk_bytes", self.max_snapshot_chunk_bytes, 1)?;
        related(
            (
                "election_timeout_min_ticks",
                self.election_timeout_min_ticks.into(),
            ),
            (
                "3 * heartbeat_interval_ticks",
                3 * u64::from(self.heartbeat_interval_ticks),
            ),
        )?;
        related(
            (
                "election_timeout_min_ticks",
                self.election_timeout_min_ticks.into(),
            ),
            (
                "lease_drift_margin_ticks + 1",
                u64::from(self.lease_drift_margin_ticks) + 1,
            ),
        )?;
        related(
            ("max_inflight_bytes", self.max_inflight_bytes),
            ("max_append_bytes", self.max_append_bytes),
        )?;
        related(
            ("max_uncommitted_bytes", self.max_uncommitted_bytes),
            ("max_append_bytes", self.max_append_bytes),
        )
    }
}

fn at_least(name: &'static str, value: u64, minimum: u64) -> Result<(), ConfigError> {
    if value < minimum {
        return Err(ConfigError::TooSmall {
            name,
            value,
            minimum,
        });
    }
    Ok(())
}

fn related(larger: (&'static str, u64), smaller: (&'static str, u64)) -> Result<(), ConfigError> {
    if larger.1 < smaller.1 {
        return Err(ConfigError::Relationship {
            larger: larger.0,
            larger_value: larger.1,
            smaller: smaller.0,
            smaller_value: smaller.1,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::new(1, 7).validate(), Ok(()));
    }

    #[test]
    fn election_timeout_must_span_three_heartbeats() {
        let mut config = Config::new(1, 7);
        config.heartbeat_interval_ticks = 4;
        config.election_timeout_min_ticks = 11;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Relationship {
                larger: "election_timeout_min_ticks",
                ..
            })
        ));
    }

    #[test]
    fn inflight_bytes_must_hold_one_append() {
        let mut config = Config::new(1, 7);
        config.max_inflight_bytes = config.max_append_bytes - 1;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Relationship {
                larger: "max_inflight_bytes",
                ..
            })
        ));
    }

    #[test]
    fn zero_inflight_messages_is_rejected() {
        let mut config = Config::new(1, 7);
        config.max_inflight_msgs = 0;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::TooSmall {
                name: "max_inflight_msgs",
                ..
            })
        ));
    }
}
