//! Every deadline, interval, retry count, queue size and cap `keel-chaos` uses, with the reason
//! for its value, the fault schedule's random ranges included. The run's shape (nodes, duration,
//! producers, rate, seed) comes from its flags.

use std::ops::Range;
use std::time::Duration;

// The run.

/// Bound on starting the cluster (every node ready, every partition led).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on healing the cluster at the end (restarted nodes ready, every partition led).
pub const HEAL_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the final read of every partition: it reads a whole run's messages.
pub const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Worker threads of the harness's runtime: the clients are light, the CPU belongs to the nodes.
pub const RUNTIME_WORKER_THREADS: usize = 2;
/// How long the runtime waits for its tasks at exit: the cluster is already gone by then.
pub const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries of a topic creation while the cluster settles after its start.
pub const CREATE_TOPIC_RETRIES: u32 = 20;
/// Wait between those retries: 20 of them span ten seconds, a few elections.
pub const CREATE_TOPIC_RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// Lines of a node's log quoted when it does not start: enough to show why.
pub const START_FAILURE_LOG_LINES: usize = 30;
/// Violations of each kind quoted in the report: a few are enough for the post-mortem.
pub const MAX_EXAMPLES: usize = 20;

/// The topic with retention: a small `retention.bytes` and segments rolled every few seconds,
/// so that whole segments go, followers compact, and replicas behind the log start get the
/// leader's snapshot while the faults run. Size, not age: the log start then stays put once
/// the producers stop, and the final read checks everything above it.
pub const RETAINED_TOPIC: &str = "chaos-retained";
pub const RETAINED_TOPIC_RETENTION_BYTES: i64 = 64 * 1024;
pub const RETAINED_TOPIC_SEGMENT_MS: i64 = 1_000;

// The nodes.

/// Segment size the nodes run with (`--config`): big enough for a 4 MiB record batch.
pub const NODE_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// How often a node's log is checked for its "ready" line: a start takes hundreds of ms.
pub const READY_POLL_INTERVAL: Duration = Duration::from_millis(100);

// The relays.

/// Largest datagram forwarded (QUIC stays well under it on loopback).
pub const MAX_DATAGRAM_BYTES: usize = 65_536;
/// Distinct sources one relay serves; a node keeps one UDP port, so a handful is plenty.
pub const MAX_SESSIONS_PER_RELAY: usize = 16;
/// Pause after a failed receive (an ICMP error while a node is down): keeps a relay from
/// spinning, short enough not to delay the traffic behind it.
pub const RELAY_ERROR_PAUSE: Duration = Duration::from_millis(1);

// The nemesis.

/// How long a restarted node may take to log "ready" before the run notes it and goes on.
pub const RESTART_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Healthy time between two faults, in ms: long enough for elections and client retries to
/// finish, short enough that a minute holds many faults.
pub const FAULT_QUIET_MS: Range<u64> = 2_000..6_000;
/// How long killed nodes stay down, in ms: past an election timeout, so leadership moves.
pub const KILL_HOLD_MS: Range<u64> = 1_000..5_000;
/// How long a paused node stays paused, in ms: past an election timeout, so a paused leader is
/// replaced and comes back stale.
pub const PAUSE_HOLD_MS: Range<u64> = 1_000..6_000;
/// How long a network partition holds, in ms: long enough for the majority side to elect and
/// commit while the minority retries.
pub const PARTITION_HOLD_MS: Range<u64> = 3_000..10_000;
/// One-way delay added to every link by the latency fault, in ms: from a slow LAN to a slow WAN.
pub const LATENCY_FAULT_DELAY_MS: Range<u64> = 20..150;
/// Bound on the `replace-node` after a disk wipe: it catches a learner up on every group.
pub const WIPE_REPLACE_TIMEOUT: Duration = Duration::from_secs(120);
/// Lines of a crashed node's log quoted in the history.
pub const CRASH_LOG_LINES: usize = 20;

// The workload.

/// Request timeout of the harness's clients: short, so a request stuck on a paused or cut-off
/// node is retried elsewhere well within the delivery timeout.
pub const CLIENT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Connect timeout of the harness's clients: a node behind a fault is given up on quickly.
pub const CLIENT_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Connection attempts while the cluster is still coming up.
pub const CONNECT_ATTEMPTS: u32 = 20;
/// Wait between those attempts: 20 of them span ten seconds.
pub const CONNECT_RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// Producer linger: short, so a low rate still makes many small batches under faults.
pub const PRODUCER_LINGER_MS: u64 = 2;
/// How long a leader may wait for one produce's commit: as short as the request timeout.
pub const PRODUCE_TIMEOUT_MS: u32 = 5_000;
/// Bound on a message's life in the SDK (batching, retries, leader changes).
pub const DELIVERY_TIMEOUT_MS: u64 = 30_000;
/// Sends a producer may have awaiting their acknowledgement.
pub const MAX_OUTSTANDING_SENDS: usize = 256;
/// How long a producer waits for its last outstanding sends after being told to stop: past the
/// delivery timeout, so every send resolves.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(45);
/// Fetch long-poll of the consumers: stop requests are noticed within it.
pub const CONSUMER_MAX_WAIT_MS: u32 = 500;
/// Attempts to assign a partition (the topic exists: the harness created it before the clients).
pub const ASSIGN_ATTEMPTS: u32 = 20;
/// Wait between assign attempts, and after a failed poll of the final read.
pub const ASSIGN_RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// A consumer notes at most one error per this period, so a long fault does not flood the history.
pub const CONSUMER_ERROR_NOTE_INTERVAL: Duration = Duration::from_secs(5);
/// Pause after a failed poll, so a consumer facing a fault does not spin.
pub const CONSUMER_ERROR_PAUSE: Duration = Duration::from_millis(200);
/// Fetch long-poll of the final read: short, so the caught-up check runs often.
pub const FINAL_READ_MAX_WAIT_MS: u32 = 200;
/// Polls per partition that must find every partition at its high watermark, in a row, before
/// the final read ends: makes sure no late commit is missed.
pub const FINAL_READ_CAUGHT_UP_POLLS_PER_PARTITION: usize = 3;
/// Bound on one node's answer about leaders.
pub const LEADER_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the leaders are asked again while waiting for every partition to have one.
pub const LEADER_WAIT_INTERVAL: Duration = Duration::from_millis(200);

// The consumer group (group.rs).

/// Session timeout of the group's members: the broker's minimum is 6 s, and a node paused for up
/// to 6 s (`PAUSE_HOLD_MS`) should not by itself expire every member it coordinates.
pub const GROUP_SESSION_TIMEOUT_MS: u32 = 8_000;
/// Rebalance timeout of the members: a member whose poll is stuck on a faulty node holds a
/// rebalance up for at most this long, then the others go on without it.
pub const GROUP_REBALANCE_TIMEOUT_MS: u32 = 20_000;
/// How many times per run a member leaves the group and subscribes again (a rebalance without
/// any fault).
pub const GROUP_LEAVES: Range<u32> = 1..3;
/// When those leaves happen, as a fraction of the fault period: away from its start (the group
/// is still forming) and its end (the member must be back before the drain).
pub const GROUP_LEAVE_WINDOW: Range<f64> = 0.2..0.8;
/// How long a member that left stays away, in ms: long enough for the others to rebalance
/// without it, short of a session timeout.
pub const GROUP_LEAVE_AWAY_MS: Range<u64> = 1_000..4_000;
/// How often the offset watcher fetches the group's committed offsets.
pub const OFFSET_WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// How often the drain after the heal checks the committed offsets.
pub const GROUP_DRAIN_POLL: Duration = Duration::from_millis(500);
/// Bound on that drain: the members have been reading all along, so what is left after the
/// final read is at most a rebalance and a few polls; a minute means they are stuck.
pub const GROUP_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
