//! Every capacity, deadline, retry count and cap the SDK uses, with the reason for its value: the
//! defaults of [`ClientConfig`](crate::ClientConfig), [`ProducerConfig`](crate::ProducerConfig),
//! [`ConsumerConfig`](crate::ConsumerConfig) and [`RetryPolicy`](crate::RetryPolicy), and the
//! bounds the client keeps on its own memory. The protocol's limits are keel-wire's
//! ([`crate::wire::limits`]).

use std::time::Duration;

// Client and connections.

/// Default bound on connecting (QUIC and TLS handshake), shared among a host's addresses:
/// generous for a loaded broker, short enough to move on to the next node of the list.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Default QUIC idle timeout: several keep-alive periods, so one lost ping does not drop a link.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 10_000;
/// Default keep-alive period: under the broker's 3 s idle timeout too (QUIC uses the smaller of
/// the two), so an idle but healthy connection stays up.
pub const DEFAULT_KEEP_ALIVE_INTERVAL_MS: u64 = 2_000;
/// Most broker connections one client keeps: a cluster map bigger than this is suspicious, and
/// every connection holds buffers.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most resolved addresses tried for one host: enough for a dual-stack host or a few replicas,
/// few enough that each still gets a useful share of the connect timeout.
pub const MAX_RESOLVED_ADDRESSES: usize = 8;
/// A connection's receive window, in largest responses: one response in flight plus room for the
/// next, so a fetch never stalls on window updates.
pub const CONNECTION_WINDOW_RESPONSES: u64 = 2;
/// How long [`Client::close`](crate::Client::close) waits for the brokers to hear of the close:
/// a courtesy, never worth holding a shutdown for.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Most addresses a bootstrap list may hold: a list is typed by a person or a script, and a
/// longer one is more likely a mistake than a cluster.
pub const MAX_BOOTSTRAP_ADDRESSES: usize = 64;
/// Characters of a request or response name kept in an error message: a type name, never a
/// whole (large) value.
pub const MAX_VARIANT_NAME_CHARS: usize = 40;

// Unknown topics.

/// Metadata requests before a topic is declared unknown.
pub const UNKNOWN_TOPIC_ATTEMPTS: u32 = 5;
/// First wait between those requests; it doubles (100, 200, 400, 800 ms).
pub const UNKNOWN_TOPIC_BACKOFF: Duration = Duration::from_millis(100);
/// How long an "unknown topic" answer is reused before asking the cluster again.
pub const UNKNOWN_TOPIC_TTL: Duration = Duration::from_secs(5);
/// Bound on the remembered unknown topics (a typo loop must not grow memory).
pub const MAX_UNKNOWN_TOPICS: usize = 1024;

// Retries.

/// Default attempts in all: with the default backoff they span 4.6 to 9.15 s, longer than a Raft
/// election (about 1 s).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// Default first backoff: a new leader is usually elected within a few of these.
pub const DEFAULT_INITIAL_BACKOFF_MS: u64 = 50;
/// Default backoff ceiling: a client keeps asking about once every two seconds at worst.
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 2_000;

// Producer.

/// Default linger: long enough for concurrent sends to share a batch, short next to a round trip.
pub const DEFAULT_LINGER_MS: u64 = 5;
/// Default batch target: with one batch in flight per partition, throughput is what one round
/// trip can carry (16 KiB 23.5k, 64 KiB 56-70k, 256 KiB 74-95k msgs/s with 4 producers).
pub const DEFAULT_BATCH_BYTES: u64 = 256 * 1024;
/// Default batches in flight per partition: more measured no faster on a 2-core machine, where
/// the CPU is the limit at ~80k msgs/s, and 1 is the path the fault tests cover most.
pub const DEFAULT_MAX_IN_FLIGHT_PER_PARTITION: u32 = 1;
/// Most batches of one partition in flight: the leader remembers a producer's last 5 batches,
/// so a retry of any batch still in flight is recognised as a duplicate.
pub const MAX_IN_FLIGHT_PER_PARTITION: u32 = 5;
/// Default bound on buffered keys and values: 128 default batches, so a burst does not block
/// the sender, yet a stalled cluster cannot take the process's memory.
pub const DEFAULT_MAX_BUFFERED_BYTES: u64 = 32 * 1024 * 1024;
/// Bytes a buffered record is charged beyond its key and value (bookkeeping), so that even
/// empty messages count against `max_buffered_bytes`.
pub const RECORD_OVERHEAD_BYTES: u64 = 64;
/// Default wait a leader may spend on one produce's commit: as long as the client waits for any
/// answer by default.
pub const DEFAULT_PRODUCE_TIMEOUT_MS: u32 = 30_000;
/// Default bound on a record's whole life in the producer: four request timeouts, so retries
/// across a leader change fit.
pub const DEFAULT_DELIVERY_TIMEOUT_MS: u64 = 120_000;

// Consumer.

/// Default long-poll wait of a fetch: an idle consumer asks twice a second, a busy one at once.
pub const DEFAULT_FETCH_MAX_WAIT_MS: u32 = 500;
/// Default bytes a fetch waits for: any record at all is worth returning.
pub const DEFAULT_FETCH_MIN_BYTES: u32 = 1;
/// Default payload budget of one fetch: four default batches, far below a request's limit.
pub const DEFAULT_FETCH_MAX_BYTES: u32 = 1024 * 1024;
/// Request timeouts a poll waits (plus the fetch wait) before giving up on its fetches: every
/// fetch is bounded by the client's own timeouts, so this is only a backstop.
pub const POLL_BACKSTOP_REQUEST_TIMEOUTS: u32 = 2;

// Consumer groups.

/// Default session timeout: Kafka's `session.timeout.ms` (45 s since Kafka 3.0, 10 s before);
/// the shorter one moves a dead member's partitions on sooner, and the broker's minimum is 6 s.
pub const DEFAULT_SESSION_TIMEOUT_MS: u32 = 10_000;
/// Default rebalance timeout: Kafka's `max.poll.interval.ms` is 300 s; a minute bounds how long a
/// member that stopped polling holds up everyone else's rebalance.
pub const DEFAULT_REBALANCE_TIMEOUT_MS: u32 = 60_000;
/// Default auto-commit interval: Kafka's `auto.commit.interval.ms`.
pub const DEFAULT_AUTO_COMMIT_INTERVAL_MS: u64 = 5_000;
/// Heartbeats per session timeout: three chances before the coordinator gives the member up.
pub const HEARTBEATS_PER_SESSION: u32 = 3;
/// The coordinator's initial delay for a group formed from empty (its
/// `initial_rebalance_delay_ms`): a join may wait this long beyond the rebalance timeout.
pub const GROUP_INITIAL_DELAY_MS: u64 = 3_000;
/// How long `poll` waits when the group gave this member nothing, before checking again.
pub const UNASSIGNED_POLL_WAIT_MS: u64 = 500;
