//! keel-broker: everything a Keel node runs.
//!
//! - [`raft`]: the sans-I/O consensus core. It owns no thread, clock, socket or file: ticks and
//!   messages go in, a `Ready` comes out (DESIGN.md 2, shared RAFT.md).
//! - [`transport`]: the QUIC endpoint, peer links and TLS material (DESIGN.md 7).
//!
//! The transport, node driver, partitions, metadata group and client API land in later issues
//! (DESIGN.md 1). Dependencies point one way: the broker uses keel-storage and the client's wire
//! codecs; nothing here is used by the client.

pub mod api;
pub mod meta;
pub mod node;
pub mod partition;
pub mod raft;
pub mod transport;
