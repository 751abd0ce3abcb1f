//! Every deadline, interval, retry count, queue size and cap the `keel` command line uses, with
//! the reason for its value. The node's own limits are keel-broker's, the SDK's keel-client's.

use std::time::Duration;

// Every client command.

/// Connect timeout of one-shot commands: a person is waiting, so a dead address fails fast.
pub const CLI_CONNECT_TIMEOUT_MS: u64 = 3_000;
/// Attempts of one-shot commands: with the SDK's backoff a dead cluster fails within about half
/// a minute rather than the SDK's default patience.
pub const CLI_MAX_ATTEMPTS: u32 = 6;
/// How long a command's runtime waits for background tasks (producer sends, fetches) at exit:
/// they must not hold the exit up.
pub const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(100);

// `keel produce` and `keel consume`.

/// Lines sent but not yet printed: enough to keep the producer's batches full, bounded so a slow
/// stdout holds back stdin instead of growing memory.
pub const MAX_PENDING_LINES: usize = 16 * 1024;
/// Lines read ahead of the sender: a whole default batch's worth of short lines.
pub const READ_AHEAD_LINES: usize = 1024;
/// Longest a single fetch waits on the broker: also how late an idle timeout may be noticed.
pub const CONSUME_MAX_WAIT_MS: u32 = 500;

// `keel cluster replace-node`.

/// Redraw period of the replace-node spinner: visibly alive, yet cheap for a wait of minutes.
pub const SPINNER_TICK_INTERVAL: Duration = Duration::from_millis(200);

// `keel bench`.

/// Highest latency the histogram records (longer ones are clamped): 10 minutes.
pub const BENCH_MAX_LATENCY_US: u64 = 600_000_000;
/// A consume or e2e run fails after this long without a new message.
pub const BENCH_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages a `--sync` producer keeps in flight: one, so each latency is a lone round trip.
pub const BENCH_SYNC_WINDOW: usize = 1;
/// Redraw period of the progress bar on a terminal: smooth, and cheap next to the bench itself.
pub const PROGRESS_BAR_INTERVAL: Duration = Duration::from_millis(100);
/// Period of the plain progress line when stderr is not a terminal: one line a second keeps a
/// log readable.
pub const PROGRESS_LINE_INTERVAL: Duration = Duration::from_millis(1000);

// `keel bench storage`.

/// Highest batch latency the storage bench records (longer ones are clamped): a minute.
pub const STORAGE_BENCH_MAX_LATENCY_US: u64 = 60_000_000;
/// Bytes of entries read per call in the storage bench's read-back: large sequential reads, as a
/// follower catching up does them.
pub const STORAGE_BENCH_READ_CHUNK_BYTES: u64 = 4 << 20;
/// How often `keel consume --group` commits what it printed (at most): often enough that a
/// restarted consumer repeats little, rare enough not to load the coordinator.
pub const CLI_GROUP_COMMIT_INTERVAL_MS: u64 = 100;
/// The `client_id` the CLI's group members announce (member ids start with it).
pub const CLI_GROUP_CLIENT_ID: &str = "keel-cli";
