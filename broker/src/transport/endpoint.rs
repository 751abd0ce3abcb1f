//! A node's endpoint (docs/TRANSPORT.md "One endpoint, two ALPNs"): one quinn endpoint on one UDP
//! port serving `keel-peer/1` and `keel/2`, its accept loop, and the table of peers.
//!
//! Every incoming connection gets its own task: TLS handshake (bounded by
//! `handshake_timeout_ms`), then dispatch on the negotiated ALPN:
//!
//! - `keel-peer/1`: the peer's certificate must name one node (`node-<id>`), its hello must
//!   claim that same id, the id must be in the peer table and be one that dials this node
//!   (lower ids dial). Then the connection goes to that peer's task. Otherwise it is closed
//!   with a [`CloseCode`] and a log line.
//! - `keel/2`: handed to the client API through a bounded channel (refused with `Busy` when
//!   full, so the accept loop never waits on the application).
//! - anything else: refused with `UnknownAlpn` (rustls already fails a handshake whose ALPN
//!   offer matches none of ours; this catches a handshake without ALPN).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::codec::{Hello, HELLO_BYTES};
use super::peer::{spawn_peer, PeerEntry, PeerLink, PeerMessage, PeerSender};
use super::tls::{self, NodeTls, TlsError, CLIENT_ALPN, PEER_ALPN};
use super::{dials, CloseCode, ConfigError, NodeId, TransportConfig};
use crate::limits::{MAX_LANES_PER_DIRECTION, PORT_PROBE_INTERVAL};

/// Why the transport could not start or a peer could not be added.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("TLS configuration is unusable for QUIC: {0}")]
    QuicTls(String),
    #[error("binding {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the certificate given is node {certificate_node_id}'s, not node {node_id}'s")]
    CertificateNotOurs {
        node_id: NodeId,
        certificate_node_id: NodeId,
    },
    #[error("certificate: {0}")]
    Identity(#[from] tls::IdentityError),
    #[error("node {node_id} cannot be its own peer")]
    SelfPeer { node_id: NodeId },
    #[error("node {node_id} is already a peer")]
    DuplicatePeer { node_id: NodeId },
}

/// A client connection accepted on `keel/2`, for the client API to serve.
#[derive(Debug)]
pub struct ClientConnection {
    pub connection: quinn::Connection,
    /// Whether the client presented a certificate (verified under the cluster CA).
    pub has_client_certificate: bool,
}

/// The receiving ends the node driver and the client API consume.
#[derive(Debug)]
pub struct TransportChannels {
    /// Messages from every peer, in order per (peer, group). Bounded: not reading it pushes
    /// back on the senders through QUIC flow control.
    pub peer_messages: mpsc::Receiver<PeerMessage>,
    /// Accepted client connections.
    pub client_connections: mpsc::Receiver<ClientConnection>,
}

/// State shared by the accept loop and its per-connection tasks. Holds no endpoint handle, so
/// dropping the [`Transport`] lets the UDP socket go once its tracked tasks have stopped.
struct Shared {
    config: Arc<TransportConfig>,
    peers: Mutex<HashMap<NodeId, PeerEntry>>,
    client_connections: mpsc::Sender<ClientConnection>,
}

/// A running node transport. Dropping it without [`Transport::shutdown`] aborts its tasks.
pub struct Transport {
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    dial_config: quinn::ClientConfig,
    incoming: mpsc::Sender<PeerMessage>,
    shutdown: watch::Sender<bool>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Transport {
    /// Binds the endpoint and starts serving. `tls` must be this node's certificate.
    /// Add peers with [`Transport::add_peer`].
    pub async fn start(
        config: TransportConfig,
        tls: &NodeTls,
    ) -> Result<(Transport, TransportChannels), TransportError> {
        config.validate()?;
        let certificate_node_id = tls::node_id_from_certificate(
            tls.certificate_chain
                .first()
                .ok_or(tls::IdentityError::NoCertificate)?,
        )?;
        if certificate_node_id != config.node_id {
            return Err(TransportError::CertificateNotOurs {
                node_id: config.node_id,
                certificate_node_id,
            });
        }
        let server_config = quic_server_config(&config, tls)?;
        let dial_config = quic_peer_dial_config(&config, tls)?;
        let bind_error = |source| TransportError::Bind {
            address: config.listen_address,
            source,
        };
        let socket = keel_wire::quic::bind_udp_socket(config.listen_address).map_err(bind_error)?;
        let endpoint = quinn::Endpoint::new(
            keel_wire::quic::endpoint_config(),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_error)?;
        let bound_address = endpoint
            .local_addr()
            .map_err(|source| TransportError::Bind {
                address: config.listen_address,
                source,
            })?;
        let (incoming, peer_messages) = mpsc::channel(config.incoming_capacity_messages);
        let (client_sender, client_connections) = mpsc::channel(config.client_connection_capacity);
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let config = Arc::new(config);
        let shared = Arc::new(Shared {
            config: config.clone(),
            peers: Mutex::new(HashMap::new()),
            client_connections: client_sender,
        });
        let accept_task = tokio::spawn(accept_loop(
            endpoint.clone(),
            shared.clone(),
            shutdown_receiver,
        ));
        info!(node_id = config.node_id, address = %bound_address, "transport listening");
        let transport = Transport {
            shared,
            endpoint,
            dial_config,
            incoming,
            shutdown,
            accept_task,
        };
        let channels = TransportChannels {
            peer_messages,
            client_connections,
        };
        Ok((transport, channels))
    }

    pub fn node_id(&self) -> NodeId {
        self.shared.config.node_id
    }

    /// The address the endpoint is bound to (the real port when configured with port 0).
    pub fn local_address(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .expect("a bound quinn endpoint has a local address")
    }

    /// Adds a peer and starts its task: it dials `address` if this node's id is lower,
    /// otherwise it waits for the peer to dial.
    pub fn add_peer(
        &self,
        peer_node_id: NodeId,
        address: SocketAddr,
    ) -> Result<PeerSender, TransportError> {
        if peer_node_id == self.node_id() || peer_node_id == 0 {
            return Err(TransportError::SelfPeer {
                node_id: peer_node_id,
            });
        }
        let mut peers = self.shared.peers.lock().expect("peer table lock");
        if peers.contains_key(&peer_node_id) {
            return Err(TransportError::DuplicatePeer {
                node_id: peer_node_id,
            });
        }
        let entry = spawn_peer(PeerLink {
            config: self.shared.config.clone(),
            peer_node_id,
            peer_address: address,
            endpoint: self.endpoint.clone(),
            dial_config: self.dial_config.clone(),
            incoming: self.incoming.clone(),
            shutdown: self.shutdown.subscribe(),
        });
        let sender = entry.sender.clone();
        peers.insert(peer_node_id, entry);
        Ok(sender)
    }

    /// Removes a peer: its connection closes and its sender answers `Disconnected`.
    pub fn remove_peer(&self, peer_node_id: NodeId) -> bool {
        let removed = self
            .shared
            .peers
            .lock()
            .expect("peer table lock")
            .remove(&peer_node_id);
        match removed {
            Some(entry) => {
                // Aborting drops the task's handle on the connection, which closes it.
                entry.task.abort();
                true
            }
            None => false,
        }
    }

    /// The sender towards a peer, if it is in the table.
    pub fn peer(&self, peer_node_id: NodeId) -> Option<PeerSender> {
        self.shared
            .peers
            .lock()
            .expect("peer table lock")
            .get(&peer_node_id)
            .map(|entry| entry.sender.clone())
    }

    /// Stops accepting, closes every connection (peers see `Shutdown`) and waits, at most
    /// `drain_timeout`, for the connections to drain and the UDP port to be released, so a
    /// restarted node can bind the same address as soon as this returns.
    ///
    /// Every `quinn::Connection` handle keeps the socket open, including the
    /// [`ClientConnection`]s the client API holds or has not yet received: drop them (and the
    /// [`TransportChannels`]) first, or the wait runs to `drain_timeout`.
    pub async fn shutdown(mut self, drain_timeout: Duration) {
        let deadline = tokio::time::Instant::now() + drain_timeout;
        let node_id = self.node_id();
        let address = self.local_address();
        self.shutdown.send_replace(true);
        self.endpoint
            .close(CloseCode::Shutdown.code(), b"node shutting down");
        let tasks: Vec<_> = self
            .shared
            .peers
            .lock()
            .expect("peer table lock")
            .drain()
            .map(|(_, entry)| entry.task)
            .collect();
        let drained = tokio::time::timeout_at(deadline, async {
            for task in tasks {
                let _ = task.await;
            }
            self.endpoint.wait_idle().await;
        })
        .await;
        self.accept_task.abort();
        let _ = (&mut self.accept_task).await;
        drop(self);
        // quinn's endpoint and connection drivers are tasks that drop the socket only after
        // they see the last handle go; wait for that rather than hand back a busy port.
        let released = wait_port_released(address, deadline).await;
        if drained.is_err() || !released {
            warn!(node_id, %address, "transport did not drain in time");
        }
        info!(node_id, "transport stopped");
    }
}

/// Whether `address` can be bound again before `deadline` (probing with a throwaway socket).
async fn wait_port_released(address: SocketAddr, deadline: tokio::time::Instant) -> bool {
    loop {
        if std::net::UdpSocket::bind(address).is_ok() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(PORT_PROBE_INTERVAL).await;
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        self.accept_task.abort();
        for entry in self.shared.peers.lock().expect("peer table lock").values() {
            entry.task.abort();
        }
    }
}

/// The QUIC transport parameters the server side advertises. One set serves both ALPNs (it is
/// fixed before the ALPN is known): stream windows sized for peer lanes, uni streams for
/// lanes, bidi streams for client requests. Per-ALPN connection limits are adjusted after the
/// handshake (`tune_client_connection`, `tune_peer_connection`).
fn server_transport(config: &TransportConfig) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_uni_streams(u32::from(MAX_LANES_PER_DIRECTION).into())
        .max_concurrent_bidi_streams(config.client_max_concurrent_streams.into())
        .stream_receive_window(config.peer_stream_receive_window_bytes.into())
        .receive_window(config.client_connection_receive_window_bytes.into())
        .send_window(u64::from(config.peer_connection_receive_window_bytes));
    apply_liveness(config, &mut transport);
    keel_wire::quic::discover_datagram_size(&mut transport);
    transport
}

/// The dialling side of a peer connection: lanes in, one hello stream out, peer-size windows.
fn peer_dial_transport(config: &TransportConfig) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_uni_streams(u32::from(MAX_LANES_PER_DIRECTION).into())
        .max_concurrent_bidi_streams(0_u32.into())
        .stream_receive_window(config.peer_stream_receive_window_bytes.into())
        .receive_window(config.peer_connection_receive_window_bytes.into())
        .send_window(u64::from(config.peer_connection_receive_window_bytes));
    apply_liveness(config, &mut transport);
    keel_wire::quic::discover_datagram_size(&mut transport);
    transport
}

fn apply_liveness(config: &TransportConfig, transport: &mut quinn::TransportConfig) {
    let idle_timeout = quinn::IdleTimeout::try_from(Duration::from_millis(config.idle_timeout_ms))
        .expect("idle_timeout_ms fits a QUIC varint");
    transport
        .max_idle_timeout(Some(idle_timeout))
        .keep_alive_interval(Some(Duration::from_millis(config.keep_alive_interval_ms)));
}

fn quic_server_config(
    config: &TransportConfig,
    tls: &NodeTls,
) -> Result<quinn::ServerConfig, TransportError> {
    let rustls_config = tls::server_config(tls, config.client_cert_policy)?;
    let crypto = QuicServerConfig::try_from(rustls_config)
        .map_err(|error| TransportError::QuicTls(error.to_string()))?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server_config.transport_config(Arc::new(server_transport(config)));
    Ok(server_config)
}

fn quic_peer_dial_config(
    config: &TransportConfig,
    tls: &NodeTls,
) -> Result<quinn::ClientConfig, TransportError> {
    quic_client_config(tls::peer_client_config(tls)?, peer_dial_transport(config))
}

/// Wraps a rustls client configuration for quinn with the given transport parameters.
pub fn quic_client_config(
    rustls_config: rustls::ClientConfig,
    transport: quinn::TransportConfig,
) -> Result<quinn::ClientConfig, TransportError> {
    let crypto = QuicClientConfig::try_from(rustls_config)
        .map_err(|error| TransportError::QuicTls(error.to_string()))?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
    client_config.transport_config(Arc::new(transport));
    Ok(client_config)
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
        let Some(incoming) = incoming else {
            break;
        };
        tokio::spawn(handle_incoming(incoming, shared.clone()));
    }
    debug!(node_id = shared.config.node_id, "accept loop stopped");
}

async fn handle_incoming(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let node_id = shared.config.node_id;
    let remote = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(error) => {
            debug!(node_id, %remote, %error, "incoming connection failed");
            return;
        }
    };
    let connection = match tokio::time::timeout(shared.config.handshake_timeout(), connecting).await
    {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            warn!(node_id, %remote, %error, "TLS handshake failed; connection refused");
            return;
        }
        Err(_) => {
            warn!(
                node_id,
                %remote,
                "TLS handshake timed out; connection refused"
            );
            return;
        }
    };
    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    match alpn.as_deref() {
        Some(PEER_ALPN) => accept_peer(connection, &shared).await,
        Some(CLIENT_ALPN) => accept_client(connection, &shared),
        other => {
            let alpn = other.map(|alpn| String::from_utf8_lossy(alpn).into_owned());
            warn!(node_id, %remote, ?alpn, "unknown ALPN; connection refused");
            CloseCode::UnknownAlpn.close(&connection, "unknown ALPN");
        }
    }
}

/// A peer connection refused after the TLS handshake, with the close code it gets.
#[derive(Debug, thiserror::Error)]
enum PeerRefusal {
    #[error("certificate does not identify a node: {0}")]
    Certificate(#[from] tls::IdentityError),
    #[error("hello failed: {0}")]
    Hello(String),
    #[error(
        "hello claims node {claimed_node_id} but the certificate is node {certificate_node_id}'s"
    )]
    IdentityMismatch {
        claimed_node_id: NodeId,
        certificate_node_id: NodeId,
    },
    #[error("node {node_id} is not a configured peer")]
    UnknownPeer { node_id: NodeId },
    #[error("node {node_id} dialled, but the dial rule has this node dial it")]
    WrongDialer { node_id: NodeId },
}

impl PeerRefusal {
    fn close_code(&self) -> CloseCode {
        match self {
            PeerRefusal::Certificate(_) => CloseCode::NotANodeCertificate,
            PeerRefusal::Hello(_) => CloseCode::BadHello,
            PeerRefusal::IdentityMismatch { .. } => CloseCode::IdentityMismatch,
            PeerRefusal::UnknownPeer { .. } => CloseCode::UnknownPeer,
            PeerRefusal::WrongDialer { .. } => CloseCode::WrongDialer,
        }
    }
}

async fn accept_peer(connection: quinn::Connection, shared: &Shared) {
    let node_id = shared.config.node_id;
    let remote = connection.remote_address();
    match admit_peer(&connection, shared).await {
        Ok(peer_node_id) => {
            debug!(node_id, peer_node_id, %remote, "peer connection admitted");
        }
        Err(refusal) => {
            warn!(node_id, %remote, reason = %refusal, "peer connection refused");
            refusal
                .close_code()
                .close(&connection, &refusal.to_string());
        }
    }
}

/// Checks a `keel-peer/1` connection and hands it to its peer's task.
async fn admit_peer(
    connection: &quinn::Connection,
    shared: &Shared,
) -> Result<NodeId, PeerRefusal> {
    let node_id = shared.config.node_id;
    // With optional client certificates the handshake lets a certificate-less client through;
    // a peer without one is refused here.
    let certificate_node_id = tls::peer_node_id(connection)?;
    connection.set_receive_window(shared.config.peer_connection_receive_window_bytes.into());
    let hello_exchange = async {
        let (send, mut receive) = connection.accept_bi().await.map_err(|e| e.to_string())?;
        let bytes = receive
            .read_to_end(HELLO_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let hello = Hello::decode(&mut &bytes[..]).map_err(|e| e.to_string())?;
        Ok::<_, String>((send, hello))
    };
    let (mut send, hello) = tokio::time::timeout(shared.config.handshake_timeout(), hello_exchange)
        .await
        .map_err(|_| PeerRefusal::Hello("timed out".to_string()))?
        .map_err(PeerRefusal::Hello)?;
    if hello.node_id != certificate_node_id {
        return Err(PeerRefusal::IdentityMismatch {
            claimed_node_id: hello.node_id,
            certificate_node_id,
        });
    }
    let accepted_connections = {
        let peers = shared.peers.lock().expect("peer table lock");
        let entry = peers.get(&hello.node_id).ok_or(PeerRefusal::UnknownPeer {
            node_id: hello.node_id,
        })?;
        entry.accepted_connections.clone()
    };
    if !dials(hello.node_id, node_id) {
        return Err(PeerRefusal::WrongDialer {
            node_id: hello.node_id,
        });
    }
    let mut reply = Vec::with_capacity(HELLO_BYTES);
    Hello { node_id }.encode(&mut reply);
    send.write_all(&reply)
        .await
        .map_err(|e| PeerRefusal::Hello(e.to_string()))?;
    send.finish()
        .map_err(|e| PeerRefusal::Hello(e.to_string()))?;
    // The peer task takes it over. Its slot is full only while it is switching connections;
    // the newest connection is the one to keep, so wait for the slot, but not forever.
    let handed_over = tokio::time::timeout(
        shared.config.handshake_timeout(),
        accepted_connections.send(connection.clone()),
    )
    .await;
    match handed_over {
        Ok(Ok(())) => {}
        Ok(Err(_)) => {
            return Err(PeerRefusal::UnknownPeer {
                node_id: hello.node_id,
            })
        }
        Err(_) => return Err(PeerRefusal::Hello("peer task busy".to_string())),
    }
    Ok(hello.node_id)
}

fn accept_client(connection: quinn::Connection, shared: &Shared) {
    let node_id = shared.config.node_id;
    let remote = connection.remote_address();
    // Clients speak request streams only; lanes are for peers.
    connection.set_max_concurrent_uni_streams(0_u32.into());
    let has_client_certificate = connection.peer_identity().is_some();
    let client = ClientConnection {
        connection: connection.clone(),
        has_client_certificate,
    };
    match shared.client_connections.try_send(client) {
        Ok(()) => debug!(node_id, %remote, has_client_certificate, "client connection accepted"),
        Err(_) => {
            warn!(node_id, %remote, "client API not taking connections; connection refused");
            CloseCode::Busy.close(&connection, "busy");
        }
    }
}
