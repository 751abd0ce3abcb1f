//! Every capacity, deadline, interval, queue size and cap keel-broker uses, with the reason for
//! its value: the transport's defaults and buffers, the client API's bounds on what a request
//! may ask, the founding and announcement intervals, the producer table's limits, and the
//! consumer-group coordinator's timeouts and retention. The
//! protocol's size limits are keel-wire's; the Raft core's defaults are keel-raft's config.

use std::time::Duration;

use crate::transport::codec::MAX_REPRESENTABLE_PAYLOAD_BYTES;

// Transport: lanes, queues and flow-control windows (the defaults of `TransportConfig::new`).

/// Most lanes a node opens towards one peer; also the number of unidirectional streams a node
/// lets a peer open at once, so two nodes with different `lanes_per_direction` still connect.
pub const MAX_LANES_PER_DIRECTION: u8 = 16;
/// Default lanes per direction: groups on other lanes do not wait behind a lost packet of one
/// lane, and few lanes still batch many groups' messages into each write.
pub const DEFAULT_LANES_PER_DIRECTION: u8 = 4;
/// Default messages waiting for one peer's sender task: beyond it `try_send` drops the message
/// and Raft falls back to Probe, so it only needs to absorb bursts, not a stalled peer.
pub const DEFAULT_PEER_QUEUE_CAPACITY_MESSAGES: usize = 4096;
/// Default received peer messages waiting for the node driver: room for several peers' bursts
/// before lane readers stop and QUIC flow control pushes back on the senders.
pub const DEFAULT_INCOMING_CAPACITY_MESSAGES: usize = 16_384;
/// Default accepted client connections waiting for the client API: a reconnect storm queues,
/// beyond it new ones are closed `Busy` so the accept loop never waits on the application.
pub const DEFAULT_CLIENT_CONNECTION_CAPACITY: usize = 256;
/// Largest payload a lane frame may carry by default (a Raft append of `max_append_bytes`
/// plus its header must fit; 16 MiB leaves ample room). Receivers refuse larger frames
/// before allocating.
pub const DEFAULT_MAX_PAYLOAD_BYTES: u32 = 16 * 1024 * 1024;
/// Default flow-control window of one peer lane: a few `max_append_bytes` appends in flight.
pub const DEFAULT_PEER_STREAM_RECEIVE_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// Default flow-control window of a whole peer connection: all lanes of a busy pair at once.
pub const DEFAULT_PEER_CONNECTION_RECEIVE_WINDOW_BYTES: u32 = 64 * 1024 * 1024;
/// Default connection window of a client connection: one request of the default 16 MiB limit,
/// small enough for many clients per node (a peer's connection is raised after the handshake).
pub const DEFAULT_CLIENT_CONNECTION_RECEIVE_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// Default requests a client may have open at once: plenty for pipelined producers, bounded so
/// one client cannot make the node hold unbounded streams.
pub const DEFAULT_CLIENT_MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Default first wait before redialling a peer: a restarting peer is back within a few doublings.
pub const DEFAULT_RECONNECT_BACKOFF_MIN_MS: u64 = 50;
/// Default ceiling of the redial backoff: a node back from a long outage is found within seconds.
pub const DEFAULT_RECONNECT_BACKOFF_MAX_MS: u64 = 2_000;
/// Default bound on the TLS handshake plus the peer hello exchange: ample on a loaded node, short
/// enough that a stuck dial is retried soon.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Default QUIC idle timeout: a restarted peer cannot reset the old connection (its reset key is
/// new), so survivors notice only by this timeout; kept short so it rejoins within seconds.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 3_000;
/// Default keep-alive period, well under the idle timeout, so idle but healthy peers stay
/// connected even if a ping is lost.
pub const DEFAULT_KEEP_ALIVE_INTERVAL_MS: u64 = 1_000;
/// Connections a peer task holds waiting to be taken: a newer connection replaces the one
/// waiting, so the accept loop never blocks.
pub const ACCEPTED_CONNECTION_QUEUE: usize = 1;
/// Bytes coalesced into one round of lane writes before yielding back to the select: a round's
/// worth of appends per write, without starving the connection's other events.
pub const MAX_LANE_BATCH_BYTES: usize = 1024 * 1024;
/// A payload at least this large is handed to QUIC as its own chunk instead of being copied
/// behind its header: Raft appends (up to `max_append_bytes`, 1 MiB) are most of the bytes a
/// leader sends, and copying each one into a lane buffer cost about 1.3% of a leader's CPU in
/// the 4-producer produce bench (BENCHMARKS.md). Smaller ones (heartbeats, acknowledgements)
/// are cheaper copied than tracked as chunks.
pub const ZERO_COPY_MIN_PAYLOAD_BYTES: usize = 4096;
/// Bytes asked of QUIC per read on a lane: a read call per many small frames, not per frame.
pub const LANE_READ_CHUNK_BYTES: usize = 64 * 1024;
/// How often shutdown probes whether the endpoint's port is free again: quinn's drivers release
/// it within milliseconds, and a probe is one cheap bind.
pub const PORT_PROBE_INTERVAL: Duration = Duration::from_millis(5);

const _: () = assert!(DEFAULT_MAX_PAYLOAD_BYTES <= MAX_REPRESENTABLE_PAYLOAD_BYTES);

// Client API: bounds on what a request may ask, and how long the node waits for it.

/// Longest a produce may wait for its commit, whatever the client asks.
pub const MAX_PRODUCE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a fetch long-poll may wait.
pub const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);
/// How long an admin command waits for group 0 to commit it.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a waiting `replace-node` looks at the replaced node's reports (it announces itself
/// twice a second).
pub const REPLACE_POLL: Duration = Duration::from_millis(200);
/// How long `replace-node` waits for the node to say hello (it does twice a second once
/// founded, five times a second while it looks for its cluster).
pub const FRESH_HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// A waiting `replace-node` answers this long before its client's deadline.
pub const REPLACE_ANSWER_MARGIN: Duration = Duration::from_secs(5);
/// Partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;
/// Replicas of a topic created without a replication factor (fewer if the cluster is smaller):
/// three survive one node's loss with a majority to spare.
pub const DEFAULT_REPLICATION_FACTOR: usize = 3;
/// Most a request's length prefix can make `read_request` reserve before the bytes arrive: a
/// produce batch of the SDK's default 256 KiB (plus its frame) fits, and a thousand streams
/// announcing the 16 MiB limit each cannot make the node reserve gigabytes.
pub const MAX_UP_FRONT_BYTES: usize = 512 * 1024;

// Founding and membership.

/// How often an empty node repeats its hello while founding.
pub const HELLO_INTERVAL: Duration = Duration::from_millis(200);
/// How often a founded node tells its peers about itself.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(500);

// Idempotent producers.

/// Batches remembered per producer: a retry of any of them is answered with its offsets.
pub const RETAINED_BATCHES: usize = 5;
/// A producer idle this long (by its batches' timestamps) is forgotten.
pub const PRODUCER_EXPIRY_MS: i64 = 7 * 24 * 3600 * 1000;
/// Committed batches between two sweeps for expired producers: often enough that the table stays
/// small, rarely enough that the sweep costs nothing per batch.
pub const PRODUCER_SWEEP_EVERY_BATCHES: u32 = 1024;

// Groups: the driver's loop, the node's clock, partitions and shutdown.

/// How long a tick lasts; election timeouts and heartbeats count ticks. 20 ms keeps a 10-tick
/// election timeout (200-400 ms) well above loopback and LAN round trips.
pub const DEFAULT_TICK: Duration = Duration::from_millis(20);
/// Inputs taken from a group's inbox in one round before its `Ready` is processed: everything
/// waiting joins one Raft batch and one write (group commit), but a flood cannot starve the
/// ticker and the sync completion for long.
pub const MAX_INPUTS_PER_ROUND: usize = 1024;
/// Requests waiting in one group's inbox (partition or metadata group): several rounds of
/// `MAX_INPUTS_PER_ROUND`, so producers queue rather than fail during one slow fdatasync.
pub const GROUP_INBOX_CAPACITY: usize = 4096;
/// Control messages (peer hellos, announcements) waiting for the node: they are small and rare.
pub const CONTROL_CHANNEL_CAPACITY: usize = 1024;
/// How often a node tries again to open a replica it holds offline (node/mod.rs).
pub const OFFLINE_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// How often a node samples the free space under its data directory (disk.rs): a producer
/// filling the disk at a few hundred MB/s crosses at most that much of the reserve unnoticed.
pub const DISK_SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Ticks between two membership reconciliations (and member-state reports): 200 ms at the
/// default tick. Changes wait for commits anyway; polling faster only burns CPU.
pub const RECONCILE_EVERY_TICKS: u64 = 10;
/// Ticks a leader waits before handing leadership to the preferred replica (5 s at the default
/// tick), and between two attempts: a freshly restarted preferred replica gets time to catch up,
/// and a transfer that keeps failing (a paused node) costs little availability.
pub const REBALANCE_EVERY_TICKS: u64 = 250;
/// Ticks between a leader's handovers because its node cannot take data (1 s): long enough for a
/// transfer to finish or be abandoned, short enough that produce moves off a full disk at once.
pub const FULL_DISK_HANDOVER_EVERY_TICKS: u64 = 50;
/// Ticks a shutdown waits for a handover beyond the election timeout: the core abandons a
/// transfer after an election timeout, so waiting longer gains nothing.
pub const HANDOVER_SLACK_TICKS: u32 = 2;
/// How long a shutting-down node waits for each group to hand over and sync before it moves on.
pub const GROUP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a shutting-down node lets its connections drain before closing the endpoint.
pub const TRANSPORT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Room in a log entry beyond its record batch (the entry's own framing), so the largest batch a
/// client may send always fits one entry.
pub const ENTRY_ENVELOPE_BYTES: u64 = 4096;
/// Early batches held at once per partition; beyond it a gap is refused at once. A producer
/// has at most `max_in_flight_per_partition` (a handful) batches in flight.
pub const MAX_EARLY_BATCHES: usize = 64;
/// How long an early batch waits for its predecessor: a retry crossing a leader change takes
/// an election timeout and a backoff or two.
pub const EARLY_BATCH_WAIT: Duration = Duration::from_secs(2);
/// Applied entries between two snapshots of the metadata map: a restart replays at most this
/// many commands after reading the map.
pub const META_SNAPSHOT_EVERY_ENTRIES: u64 = 10_000;
/// Ticks between two retention checks of a partition (1 s at the default tick): segment.ms
/// rolls on every replica, and the leader's choice of a new log start.
pub const RETENTION_CHECK_EVERY_TICKS: u64 = 50;
/// Bytes read from the log per call while folding the entries below a new log start into the
/// snapshot (they are read in place, so this bounds only the entry list).
pub const FOLD_READ_BYTES: u64 = 4 << 20;
/// Smallest read from the log when serving a fetch: a small `max_bytes` still reads a useful
/// chunk of entries per call, as the batches it skips cost a read each.
pub const FETCH_READ_CHUNK_MIN_BYTES: u64 = 64 * 1024;

// Capacity admission (node/capacity.rs, node/admission.rs; docs/OPERATIONS.md "Capacity
// admission").

/// Partition replicas a node hosts at most unless its config says otherwise
/// (`max_partition_replicas`): each replica is a Raft group with its own loop, timers, files and
/// memory map, and a thousand idle ones already cost a node tens of MB and a steady trickle of
/// heartbeats. Raise it on purpose, not by accident.
pub const DEFAULT_MAX_PARTITION_REPLICAS: u64 = 1000;
/// How often a node measures its own capacity. Admission works from a measurement at most this
/// old plus the announcement interval, and accounts for replicas placed since (`pending`).
pub const CAPACITY_MEASURE_INTERVAL: Duration = Duration::from_secs(2);
/// A peer's capacity report older than this counts as missing: the node is probably down, and
/// a create that would place replicas on it is refused rather than admitted blind.
pub const CAPACITY_REPORT_MAX_AGE: Duration = Duration::from_secs(10);
/// How long the metadata leader waits for a missing report before refusing: a leader elected a
/// moment ago has not heard every peer's announcement yet.
pub const CAPACITY_REPORT_WAIT: Duration = Duration::from_secs(3);
/// How often the waiting leader looks again for the missing reports.
pub const CAPACITY_REPORT_POLL: Duration = Duration::from_millis(100);
/// Offline replicas whose reason a node puts in its report; the rest are listed by group only,
/// so a node with thousands offline does not send megabytes twice a second.
pub const MAX_REPORTED_OFFLINE_REASONS: usize = 256;
/// Longest offline reason a report carries (a storage error with its path fits).
pub const MAX_OFFLINE_REASON_BYTES: usize = 300;
/// Disk a new replica needs up front: the first extent its active segment reserves once a
/// produce passes its first 4 KiB page (keel-storage `SEGMENT_EXTENT_BYTES`), plus its hard
/// state (8 KiB) and the blocks of its two directories and index files.
pub const REPLICA_UP_FRONT_DISK_BYTES: u64 = keel_storage::limits::SEGMENT_EXTENT_BYTES + 64 * 1024;
/// File descriptors an open replica holds: its active segment's `.log`, `.index` and `.offsets`
/// files (measured: 3 per replica on a fresh topic; each rolled segment kept adds 3 more, which
/// the headroom below covers).
pub const REPLICA_OPEN_FILES: u64 = 3;
/// Memory maps an open replica holds: its active segment's read-only map (one more per segment
/// kept).
pub const REPLICA_MEMORY_MAPS: u64 = 1;
/// Inodes a new replica takes: its directory, `log/`, the hard state and the three segment files.
pub const REPLICA_INODES: u64 = 6;
/// Free disk admission never hands out, as a fraction of the file system (1/20, what ext4
/// reserves for root by default): existing partitions grow into it and group 0 writes there.
pub const DISK_RESERVE_DIVISOR: u64 = 20;
/// ... and at least this much, for small file systems.
pub const MIN_DISK_RESERVE_BYTES: u64 = 8 << 20;
/// Open files and memory maps admission never hands out, as a fraction of the limit (1/10):
/// segments roll and stay open, clients and snapshots open files.
pub const HANDLE_RESERVE_DIVISOR: u64 = 10;
/// ... and at least this many.
pub const MIN_HANDLE_RESERVE: u64 = 256;
/// Inodes admission never hands out: deleted segments' replacements, snapshots, temp files.
pub const MIN_INODE_RESERVE: u64 = 256;

// Consumer groups (coordinator/): Kafka's broker defaults, so the timeouts Kafka clients are
// configured with fit and groups behave as their users expect.

/// Shortest session a member may ask for (`group.min.session.timeout.ms`): shorter, a group
/// would rebalance on every pause of a consumer.
pub const GROUP_MIN_SESSION_TIMEOUT_MS: u64 = 6_000;
/// Longest session a member may ask for (`group.max.session.timeout.ms`): longer hides a dead
/// consumer, and its partitions go unread, for too long.
pub const GROUP_MAX_SESSION_TIMEOUT_MS: u64 = 1_800_000;
/// How long a group formed from empty waits for more members (`group.initial.rebalance.delay.ms`),
/// again after each arrival within the rebalance timeout: consumers started together form one
/// generation instead of one per arrival.
pub const GROUP_INITIAL_REBALANCE_DELAY_MS: u64 = 3_000;
/// How long a new member's first join may wait (Kafka's `NewMemberJoinTimeoutMs`): a client that
/// timed out and retried under a new id leaves its abandoned join behind, which must not hold a
/// rebalance open for the whole rebalance timeout.
pub const GROUP_NEW_MEMBER_JOIN_TIMEOUT_MS: u64 = 300_000;
/// How long the offsets of an empty group are kept (`offsets.retention.minutes`, 7 days): a
/// consumer fleet down over a long weekend still resumes where it stopped.
pub const OFFSETS_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;
/// Longest metadata string an offset commit may carry (`offset.metadata.max.bytes`): it bounds
/// what one commit adds to an offsets partition's state and to every snapshot of it.
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;
/// Partitions of `__consumer_offsets` in a new cluster (Kafka's `offsets.topic.num.partitions`
/// is 50, Redpanda's 16): each is a Raft group on every replica, ticking whether or not groups
/// use it, so a small default suits the small clusters Keel starts as. Fixed once the topic
/// exists: a group's partition is its id's hash modulo this count.
pub const DEFAULT_OFFSETS_PARTITIONS: u32 = 8;
/// How often a coordinator proposes the expiry of old offsets of empty groups (Kafka's
/// `offsets.retention.check.interval.ms`).
pub const OFFSETS_EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(600);
/// An offsets partition snapshots its state (and drops the log below) every this many entries,
/// as group 0 does: commits arrive every few hundred ms per member, the state stays small.
pub const OFFSETS_SNAPSHOT_EVERY_ENTRIES: u64 = 10_000;
/// How long past its own deadline a group request waits for the coordinator's answer: the
/// coordinator answers a join at the end of its rebalance timeout, this covers the round.
pub const GROUP_ANSWER_MARGIN: Duration = Duration::from_secs(5);
/// How long a sync may wait for the leader's assignment and its commit (the coordinator removes
/// members that have not synced within the rebalance timeout, which a member chooses; this
/// bounds the request whatever it chose).
pub const GROUP_SYNC_WAIT: Duration = Duration::from_secs(300);
/// How often a coordinator refreshes its consumer-lag gauges.
pub const LAG_EXPORT_INTERVAL: Duration = Duration::from_secs(1);
