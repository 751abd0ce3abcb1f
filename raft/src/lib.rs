//! keel-raft: the Raft consensus core, a pure state machine driven by `tick`, `step` and `propose`.
//! It never touches an async runtime, sockets, files, the wall clock or a global RNG: its
//! dependencies cannot do I/O (raft/Cargo.toml), and tests/tidy.rs keeps the standard library's
//! file system, network, thread and clock modules out of its source. Messages and ticks go in, a [`Ready`] comes out;
//! docs/ARCHITECTURE.md gives the driver contract.
//!
//! A single-node group, driven by hand:
//!
//! ```
//! use keel_raft::{Config, Configuration, MemoryLog, RaftNode, RecoveredState, Role};
//!
//! let configuration = Configuration::with_voters([1]);
//! let mut node = RaftNode::new(Config::new(1, 42), configuration, MemoryLog::new(), RecoveredState::default())
//!     .expect("valid configuration");
//! node.campaign(); // a single voter wins at once and appends its no-op
//! assert_eq!(node.role(), Role::Leader);
//! let (index, term) = node.propose(bytes::Bytes::from_static(b"hello")).expect("leader");
//!
//! // The driver's loop: write, report durability, send, apply.
//! let mut applied = Vec::new();
//! while node.has_ready() {
//!     let ready = node.ready();
//!     node.storage_mut().write(ready.truncate_from, &ready.entries);
//!     if let Some((last_index, last_term)) = ready.last_entry() {
//!         node.on_persisted(last_index, last_term);
//!     }
//!     if let Some(last) = ready.committed_entries.last() {
//!         node.on_applied(last.index);
//!     }
//!     applied.extend(ready.committed_entries);
//! }
//! assert_eq!((applied[1].index, applied[1].term), (index, term));
//! assert_eq!(&applied[1].payload[..], b"hello");
//! ```
//!
//! Files: `node.rs` (the state machine and its API), `election.rs`, `replication.rs`,
//! `progress.rs` + `inflights.rs` (flow control), `quorum.rs`, `membership.rs` (members as
//! `(node_id, incarnation)`, changes, `ReplaceNode`) + `membership_log.rs` (the configuration
//! along the log), `snapshot.rs` (compaction, InstallSnapshot), `read_index.rs` (ReadIndex and
//! leases), `transfer.rs` (leadership transfer), `replicated_log.rs` + `unstable.rs` (the log
//! view), `log.rs` (the storage trait), `ready.rs`, `message.rs`.
//! The rules it implements and the decisions behind them: docs/RAFT-CORE.md.

mod config;
mod election;
mod entry;
mod error;
mod inflights;
mod log;
mod membership;
mod membership_log;
mod memory_log;
mod message;
mod node;
mod progress;
mod quorum;
mod read_index;
mod ready;
mod replicated_log;
mod replication;
mod snapshot;
mod transfer;
mod unstable;

#[cfg(feature = "fault-injection")]
pub use config::PlantedBugs;
pub use config::{
    Config, DEFAULT_ELECTION_TIMEOUT_MIN_TICKS, DEFAULT_HEARTBEAT_INTERVAL_TICKS,
    DEFAULT_LEASE_DRIFT_MARGIN_TICKS, DEFAULT_MAX_APPEND_BYTES, DEFAULT_MAX_APPLY_BYTES,
    DEFAULT_MAX_INFLIGHT_BYTES, DEFAULT_MAX_INFLIGHT_MSGS, DEFAULT_MAX_SNAPSHOT_CHUNK_BYTES,
    DEFAULT_MAX_UNAPPLIED_ENTRIES, DEFAULT_MAX_UNCOMMITTED_BYTES,
};
pub use entry::{
    entries_size_bytes, Entry, EntryKind, HardState, Index, NodeId, Term, ENTRY_OVERHEAD_BYTES,
};
pub use error::{ConfigError, ProposeError};
pub use inflights::Inflights;
pub use log::RaftLog;
pub use membership::{
    Incarnation, Membership, MembershipChange, MembershipError, ReplaceNode, ReplaceStep,
};
pub use memory_log::MemoryLog;
pub use message::{
    AppendEntries, AppendEntriesResponse, AppendResult, ConflictHint, InstallSnapshot,
    InstallSnapshotResponse, Message, MessageBody, ReadIndexCheck, VoteRequest, VoteResponse,
};
pub use node::{RaftNode, RecoveredState, Role};
pub use progress::{Progress, ProgressState};
pub use quorum::{Configuration, VoteResult};
pub use read_index::{ReadError, ReadMode, ReadState};
pub use ready::{PeerMessages, Ready};
pub use snapshot::{CompactError, Snapshot, SnapshotMeta};
pub use transfer::TransferError;

#[cfg(test)]
mod node_tests;
