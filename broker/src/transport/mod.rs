//! The QUIC transport of a Keel node (docs/TRANSPORT.md): one quinn endpoint (one UDP port)
//! serving node-to-node traffic (ALPN `keel-peer/1`, mutual TLS) and clients (ALPN `keel/2`).
//!
//! - [`codec`]: lane framing `len u32 | group u64 | payload` and the peer hello.
//! - [`tls`]: certificate generation (`keel certs init`), loading, rustls configurations and the
//!   node identity in a certificate.
//! - [`endpoint`]: the [`Transport`] a node starts: the endpoint, its accept loop dispatching by
//!   ALPN, and the peer table.
//! - [`peer`]: one connection per node pair, its lanes, the per-peer sender task with its
//!   bounded queue, reconnection with backoff.
//!
//! Payloads are opaque bytes: the Raft message codec and the client request frames sit on top.
//! docs/TRANSPORT.md records the decisions (who dials, lane count, window sizes, close codes).

pub mod codec;
pub mod endpoint;
pub mod peer;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

pub use endpoint::{ClientConnection, Transport, TransportChannels, TransportError};
pub use keel_raft::NodeId;
pub use peer::{PeerMessage, PeerSender, SendError};
pub use tls::{ClientCertPolicy, NodeTls};

use crate::limits::{
    DEFAULT_CLIENT_CONNECTION_CAPACITY, DEFAULT_CLIENT_CONNECTION_RECEIVE_WINDOW_BYTES,
    DEFAULT_CLIENT_MAX_CONCURRENT_STREAMS, DEFAULT_HANDSHAKE_TIMEOUT_MS, DEFAULT_IDLE_TIMEOUT_MS,
    DEFAULT_INCOMING_CAPACITY_MESSAGES, DEFAULT_KEEP_ALIVE_INTERVAL_MS,
    DEFAULT_LANES_PER_DIRECTION, DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_PEER_CONNECTION_RECEIVE_WINDOW_BYTES, DEFAULT_PEER_QUEUE_CAPACITY_MESSAGES,
    DEFAULT_PEER_STREAM_RECEIVE_WINDOW_BYTES, DEFAULT_RECONNECT_BACKOFF_MAX_MS,
    DEFAULT_RECONNECT_BACKOFF_MIN_MS, MAX_LANES_PER_DIRECTION,
};

/// Identifies a Raft group on the wire (group 0 is the metadata group, docs/FORMAT.md
/// "Node data directory").
pub type GroupId = u64;

/// Settings of a node's transport. [`TransportConfig::new`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's id; its certificate must be `node-<node_id>`'s.
    pub node_id: NodeId,
    /// The UDP address the endpoint binds (port 0 picks a free one).
    pub listen_address: SocketAddr,
    /// Unidirectional streams per direction per peer connection; group `g` uses lane
    /// `g % lanes_per_direction`, so a group's messages stay in order.
    pub lanes_per_direction: u8,
    /// Messages waiting for one peer's sender task; beyond it `try_send` returns `Full`.
    pub peer_queue_capacity_messages: usize,
    /// Received peer messages waiting for the node driver; when full, lane readers stop
    /// reading and QUIC flow control pushes back on the senders.
    pub incoming_capacity_messages: usize,
    /// Accepted client connections waiting for the client API; beyond it new ones are refused.
    pub client_connection_capacity: usize,
    /// Largest lane payload accepted or sent.
    pub max_payload_bytes: u32,
    /// Flow-control window of each peer lane (QUIC stream receive window).
    pub peer_stream_receive_window_bytes: u32,
    /// Flow-control window of a whole peer connection (QUIC connection receive window).
    pub peer_connection_receive_window_bytes: u32,
    /// Connection receive window of a client connection.
    pub client_connection_receive_window_bytes: u32,
    /// Bidirectional streams (requests) a client may have open at once.
    pub client_max_concurrent_streams: u32,
    /// First wait before redialling a peer; doubles per failure up to the maximum.
    pub reconnect_backoff_min_ms: u64,
    pub reconnect_backoff_max_ms: u64,
    /// Bound on the TLS handshake plus the peer hello exchange.
    pub handshake_timeout_ms: u64,
    /// A connection silent this long is dead (QUIC idle timeout).
    pub idle_timeout_ms: u64,
    /// Keep-alive period, well under `idle_timeout_ms`, so idle but healthy peers stay connected.
    pub keep_alive_interval_ms: u64,
    /// Whether clients must present a certificate (`--require-client-cert`).
    pub client_cert_policy: ClientCertPolicy,
}

impl TransportConfig {
    pub fn new(node_id: NodeId, listen_address: SocketAddr) -> TransportConfig {
        TransportConfig {
            node_id,
            listen_address,
            lanes_per_direction: DEFAULT_LANES_PER_DIRECTION,
            peer_queue_capacity_messages: DEFAULT_PEER_QUEUE_CAPACITY_MESSAGES,
            incoming_capacity_messages: DEFAULT_INCOMING_CAPACITY_MESSAGES,
            client_connection_capacity: DEFAULT_CLIENT_CONNECTION_CAPACITY,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            peer_stream_receive_window_bytes: DEFAULT_PEER_STREAM_RECEIVE_WINDOW_BYTES,
            peer_connection_receive_window_bytes: DEFAULT_PEER_CONNECTION_RECEIVE_WINDOW_BYTES,
            client_connection_receive_window_bytes: DEFAULT_CLIENT_CONNECTION_RECEIVE_WINDOW_BYTES,
            client_max_concurrent_streams: DEFAULT_CLIENT_MAX_CONCURRENT_STREAMS,
            reconnect_backoff_min_ms: DEFAULT_RECONNECT_BACKOFF_MIN_MS,
            reconnect_backoff_max_ms: DEFAULT_RECONNECT_BACKOFF_MAX_MS,
            handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
            // A restarted peer cannot reset the old connection (its reset key is new), so the
            // survivors notice only by this timeout, and until then a lower id does not redial:
            // keep it short so a restarted node rejoins within seconds.
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            keep_alive_interval_ms: DEFAULT_KEEP_ALIVE_INTERVAL_MS,
            client_cert_policy: ClientCertPolicy::Optional,
        }
    }

    /// Checks the relationships between the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, message: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError(message))
            }
        };
        check(self.node_id != 0, "node_id must be at least 1")?;
        check(
            (1..=MAX_LANES_PER_DIRECTION).contains(&self.lanes_per_direction),
            "lanes_per_direction must be in 1..=MAX_LANES_PER_DIRECTION",
        )?;
        check(
            self.peer_queue_capacity_messages > 0,
            "peer_queue_capacity_messages must be positive",
        )?;
        check(
            self.incoming_capacity_messages > 0,
            "incoming_capacity_messages must be positive",
        )?;
        check(
            self.client_connection_capacity > 0,
            "client_connection_capacity must be positive",
        )?;
        check(
            self.max_payload_bytes <= codec::MAX_REPRESENTABLE_PAYLOAD_BYTES,
            "max_payload_bytes exceeds what a lane frame can carry",
        )?;
        check(
            self.peer_stream_receive_window_bytes > 0
                && self.peer_stream_receive_window_bytes
                    <= self.peer_connection_receive_window_bytes,
            "peer_stream_receive_window_bytes must be positive and at most the connection window",
        )?;
        check(
            self.client_connection_receive_window_bytes > 0,
            "client_connection_receive_window_bytes must be positive",
        )?;
        check(
            self.reconnect_backoff_min_ms > 0
                && self.reconnect_backoff_min_ms <= self.reconnect_backoff_max_ms,
            "reconnect backoff needs 0 < min <= max",
        )?;
        check(
            self.handshake_timeout_ms > 0,
            "handshake_timeout_ms must be positive",
        )?;
        check(
            self.keep_alive_interval_ms > 0 && self.keep_alive_interval_ms < self.idle_timeout_ms,
            "keep_alive_interval_ms must be positive and below idle_timeout_ms",
        )
    }

    fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
}

/// A transport setting that contradicts another or is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transport config: {0}")]
pub struct ConfigError(pub &'static str);

/// QUIC application close codes Keel sends, so the other side (and a test) learns why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CloseCode {
    /// The node is shutting down or the peer was removed.
    Shutdown = 0,
    /// A newer connection from the same peer took this one's place.
    Replaced = 1,
    /// The client API is not taking more connections right now.
    Busy = 2,
    /// The peer presented no certificate or one that names no single node.
    NotANodeCertificate = 0x10,
    /// The node id in the peer's hello is not the one its certificate names.
    IdentityMismatch = 0x11,
    /// The peer is not a configured member of this node's peer table.
    UnknownPeer = 0x12,
    /// The peer dialled although the dial rule says this node dials it.
    WrongDialer = 0x13,
    /// The hello was missing, malformed or late.
    BadHello = 0x14,
    /// The negotiated ALPN is none Keel serves.
    UnknownAlpn = 0x15,
    /// A lane carried bytes that are not a valid frame.
    MalformedFrame = 0x16,
}

impl CloseCode {
    pub fn code(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as u32)
    }

    /// The close code a connection error carries, if the other side closed it with one of ours.
    pub fn of(error: &quinn::ConnectionError) -> Option<CloseCode> {
        let quinn::ConnectionError::ApplicationClosed(close) = error else {
            return None;
        };
        [
            CloseCode::Shutdown,
            CloseCode::Replaced,
            CloseCode::Busy,
            CloseCode::NotANodeCertificate,
            CloseCode::IdentityMismatch,
            CloseCode::UnknownPeer,
            CloseCode::WrongDialer,
            CloseCode::BadHello,
            CloseCode::UnknownAlpn,
            CloseCode::MalformedFrame,
        ]
        .into_iter()
        .find(|code| code.code() == close.error_code)
    }

    /// Closes `connection` with this code and a short reason for the other side's logs.
    pub fn close(self, connection: &quinn::Connection, reason: &str) {
        connection.close(self.code(), reason.as_bytes());
    }
}

/// The dial rule: of two nodes, the one with the lower id dials, so a pair has exactly one
/// connection and neither side races the other.
pub fn dials(local_node_id: NodeId, peer_node_id: NodeId) -> bool {
    local_node_id < peer_node_id
}

/// The lane a group's messages travel on, fixed for the life of a connection.
pub fn lane_of(group: GroupId, lanes_per_direction: u8) -> usize {
    assert!(lanes_per_direction > 0);
    (group % u64::from(lanes_per_direction)) as usize
}
