//! keel-broker: everything a Keel node runs around the consensus core (docs/ARCHITECTURE.md).
//!
//! - [`transport`]: the QUIC endpoint, peer links and TLS material.
//! - [`node`]: the node: its identity, the group driver that feeds each Raft group (keel-raft)
//!   its ticks and messages and does its disk and network I/O, and membership reconciliation.
//! - [`meta`]: the metadata group (group 0): topics, placement, members, producer ids.
//! - [`partition`]: a partition's state: offsets, fetch, idempotent-producer dedup.
//! - [`api`]: the client request handlers.
//!
//! Dependencies point one way: the broker uses keel-raft, keel-storage and the wire formats;
//! nothing here is used by the SDK.

pub mod api;
pub mod group;
pub mod limits;
pub mod meta;
pub mod node;
pub mod partition;
pub mod server;
pub mod transport;
