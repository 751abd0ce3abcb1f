//! keel-broker: everything a Keel node runs around the consensus core (docs/ARCHITECTURE.md).
//!
//! Modules, each depending only on those listed after it:
//! - [`server`]: a running `keel server`: starts the node, the client API, peer routing.
//! - [`api`]: the client request handlers.
//! - [`node`]: the node's configuration, identity and shared context; hosts the groups.
//! - [`coordinator`]: consumer groups, pure: the classic group protocol in memory and the
//!   replicated state of a `__consumer_offsets` partition (offsets, generations).
//! - [`meta`]: the metadata group (group 0): topics, placement, members, producer ids.
//! - [`partition`]: a partition's state: offsets, fetch, idempotent-producer dedup.
//! - [`group`]: what every Raft group runs on: the driver step function (`driver.rs`), the
//!   fdatasync ordering rules (`pipeline.rs`), the actor loop (`actor.rs`), the segment log as the
//!   driver's disk (`storage_log.rs`), membership reconciliation (`replace.rs`).
//! - [`transport`]: the QUIC endpoint, peer links and TLS material.
//! - [`disk`]: the data directory's free space and the line below which new data is refused.
//! - [`limits`]: every capacity, deadline and cap, with its reason.
//!
//! The broker uses keel-raft, keel-storage and keel-wire; nothing here is used by the SDK.

pub mod api;
pub mod coordinator;
pub mod disk;
pub mod group;
pub mod limits;
pub mod meta;
pub mod node;
pub mod partition;
pub mod server;
pub mod transport;
