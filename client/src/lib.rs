//! keel-client: the Rust SDK for Keel (`Client`, `Producer`, `Consumer`, `Admin`) and, under
//! `wire`, the pure protocol codecs shared with the broker.
//!
//! The client never depends on the broker: the broker depends on `keel_client::wire`. Nothing
//! here is written yet; the SDK lands with the broker (DESIGN.md sections 7 and 8).
