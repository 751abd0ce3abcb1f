//! The transport over real QUIC on 127.0.0.1 (docs/TRANSPORT.md): nodes exchange messages on
//! many groups in order, every kind of impostor or garbage is refused without disturbing the
//! other connections, a stalled peer fills only its own queue, and a restarted peer is
//! reconnected. Certificates are made fresh in a temporary directory; ports are picked by the
//! OS; every test is bounded by a timeout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use keel_broker::transport::endpoint::quic_client_config;
use keel_broker::transport::peer::exchange_hello;
use keel_broker::transport::tls::{self, generate_cluster_certs, node_server_name, NodeTls};
use keel_broker::transport::{
    ClientCertPolicy, CloseCode, NodeId, PeerMessage, SendError, Transport, TransportChannels,
    TransportConfig,
};
use tokio::time::{sleep, timeout, Instant};

/// Upper bound of any one test.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a refused impostor is given to (wrongly) get through.
const REFUSAL_WAIT: Duration = Duration::from_millis(1_500);
/// How long shutting a node down may take.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// Everything logged by any test of this binary, so a test can check that a refusal was
/// logged (the log line is part of the contract: docs/TRANSPORT.md "Peer admission"). Also echoed
/// to stderr.
static LOG_LINES: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct CaptureWriter;

impl std::io::Write for CaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOG_LINES.lock().expect("log lock").extend_from_slice(bytes);
        std::io::stderr().write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(|| CaptureWriter)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
}

/// Waits (briefly) for a log line containing every one of `needles`.
async fn assert_logged(needles: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = {
            let log = LOG_LINES.lock().expect("log lock");
            String::from_utf8_lossy(&log)
                .lines()
                .any(|line| needles.iter().all(|needle| line.contains(needle)))
        };
        if found {
            return;
        }
        assert!(Instant::now() < deadline, "no log line with {needles:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

fn any_local_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

fn test_config(node_id: NodeId, address: SocketAddr) -> TransportConfig {
    let mut config = TransportConfig::new(node_id, address);
    // Fast retries keep the reconnect test short.
    config.reconnect_backoff_min_ms = 20;
    config.reconnect_backoff_max_ms = 200;
    config.handshake_timeout_ms = 2_000;
    config
}

struct Node {
    transport: Transport,
    channels: TransportChannels,
}

impl Node {
    async fn start(tls_dir: &Path, config: TransportConfig) -> Node {
        let tls = NodeTls::load(tls_dir, config.node_id).expect("node certificates");
        let (transport, channels) = Transport::start(config, &tls).await.expect("start");
        Node {
            transport,
            channels,
        }
    }

    fn address(&self) -> SocketAddr {
        self.transport.local_address()
    }

    /// Sends, retrying while the queue is full, so the test's order is the wire order.
    async fn send(&self, peer: NodeId, group: u64, sequence: u64) {
        let sender = self.transport.peer(peer).expect("known peer");
        loop {
            match sender.try_send(group, payload(group, sequence)) {
                Ok(()) => return,
                Err(SendError::Full) => sleep(Duration::from_millis(1)).await,
                Err(error) => panic!("send to node {peer}: {error}"),
            }
        }
    }

    async fn receive(&mut self, count: usize) -> Vec<PeerMessage> {
        let mut messages = Vec::with_capacity(count);
        while messages.len() < count {
            let message = self
                .channels
                .peer_messages
                .recv()
                .await
                .expect("transport running");
            messages.push(message);
        }
        messages
    }
}

fn payload(group: u64, sequence: u64) -> Bytes {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&group.to_be_bytes());
    bytes.extend_from_slice(&sequence.to_be_bytes());
    Bytes::from(bytes)
}

fn parse_payload(payload: &[u8]) -> (u64, u64) {
    let group = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
    let sequence = u64::from_be_bytes(payload[8..16].try_into().expect("8 bytes"));
    (group, sequence)
}

/// Adds every node to every other's peer table and waits until all links are up.
async fn connect_mesh(nodes: &BTreeMap<NodeId, Node>) {
    for (node_id, node) in nodes {
        for (peer_id, peer) in nodes {
            if peer_id != node_id {
                node.transport
                    .add_peer(*peer_id, peer.address())
                    .expect("add peer");
            }
        }
    }
    wait_mesh_connected(nodes).await;
}

async fn wait_mesh_connected(nodes: &BTreeMap<NodeId, Node>) {
    for (node_id, node) in nodes {
        for peer_id in nodes.keys().filter(|peer_id| *peer_id != node_id) {
            let sender = node.transport.peer(*peer_id).expect("peer");
            assert!(sender.wait_connected().await, "transport stopped");
        }
    }
}

async fn start_cluster(tls_dir: &Path, node_ids: &[NodeId]) -> BTreeMap<NodeId, Node> {
    let mut nodes = BTreeMap::new();
    for &node_id in node_ids {
        nodes.insert(
            node_id,
            Node::start(tls_dir, test_config(node_id, any_local_port())).await,
        );
    }
    connect_mesh(&nodes).await;
    nodes
}

/// Every node sends `per_group` messages on each of `groups` groups to every other node, and
/// every node receives all of them, each group's in sending order.
async fn exchange_everywhere(nodes: &mut BTreeMap<NodeId, Node>, groups: u64, per_group: u64) {
    let node_ids: Vec<NodeId> = nodes.keys().copied().collect();
    for sequence in 0..per_group {
        for group in 0..groups {
            for &from in &node_ids {
                for &to in node_ids.iter().filter(|to| **to != from) {
                    nodes[&from].send(to, group, sequence).await;
                }
            }
        }
    }
    let expected_per_node = (node_ids.len() as u64 - 1) * groups * per_group;
    for (node_id, node) in nodes.iter_mut() {
        let messages = node.receive(expected_per_node as usize).await;
        let mut next_sequence: BTreeMap<(NodeId, u64), u64> = BTreeMap::new();
        for message in messages {
            let (group, sequence) = parse_payload(&message.payload);
            assert_eq!(group, message.group, "group travels with its payload");
            let expected = next_sequence.entry((message.from, group)).or_insert(0);
            assert_eq!(
                sequence, *expected,
                "node {node_id}: group {group} from node {} out of order",
                message.from
            );
            *expected += 1;
        }
        assert!(next_sequence.values().all(|next| *next == per_group));
    }
}

async fn bounded(test: impl std::future::Future<Output = ()>) {
    init_logging();
    timeout(TEST_TIMEOUT, test).await.expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_messages_on_several_groups_both_ways_in_order() {
    bounded(async {
        let tls_dir = tempfile::tempdir().expect("tempdir");
        generate_cluster_certs(tls_dir.path(), 2, &[]).expect("certs");
        let mut nodes = start_cluster(tls_dir.path(), &[1, 2]).await;
        exchange_everywhere(&mut nodes, 9, 200).await;
        for (_, node) in nodes {
            node.transport.shutdown(SHUTDOWN_DRAIN).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_messages_on_several_groups_both_ways_in_order() {
    bounded(async {
        let tls_dir = tempfile::tempdir().expect("tempdir");
        generate_cluster_certs(tls_dir.path(), 3, &[]).expect("certs");
        let mut nodes = start_cluster(tls_dir.path(), &[1, 2, 3]).await;
        exchange_everywhere(&mut nodes, 7, 100).await;
        for (_, node) in nodes {
            node.transport.shutdown(SHUTDOWN_DRAIN).await;
        }
    })
    .await;
}

/// A bare quinn endpoint for playing a misbehaving peer or client.
fn raw_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client(any_local_port()).expect("client endpoint")
}

fn peer_transport() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(10)).expect("idle timeout"),
    ));
    transport
}

/// A raw `keel-peer/1` dialler presenting `tls`'s certificate.
fn raw_peer_config(tls: &NodeTls) -> quinn::ClientConfig {
    quic_client_config(
        tls::peer_client_config(tls).expect("peer config"),
        peer_transport(),
    )
    .expect("quic config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_signed_by_another_ca_is_refused() {
    bounded(async {
        let cluster_dir = tempfile::tempdir().expect("tempdir");
        let foreign_dir = tempfile::tempdir().expect("tempdir");
        generate_cluster_certs(cluster_dir.path(), 2, &[]).expect("certs");
        generate_cluster_certs(foreign_dir.path(), 2, &[]).expect("foreign certs");
        let mut node_2 = Node::start(cluster_dir.path(), test_config(2, any_local_port())).await;
        // The impostor runs a real transport as node 1 with the foreign CA's certificate.
        let impostor = Node::start(foreign_dir.path(), test_config(1, any_local_port())).await;
        node_2
            .transport
            .add_peer(1, impostor.address())
            .expect("add peer");
        let impostor_sender = impostor
            .transport
            .add_peer(2, node_2.address())
            .expect("add peer");
        assert!(
            timeout(REFUSAL_WAIT, impostor_sender.wait_connected())
                .await
                .is_err(),
            "a foreign CA's node must never connect"
        );
        assert_eq!(
            impostor_sender.try_send(0, Bytes::from_static(b"x")),
            Err(SendError::Disconnected)
        );
        // A foreign client certificate fails the handshake directly as well.
        let foreign_tls = NodeTls::load(foreign_dir.path(), 1).expect("foreign tls");
        let endpoint = raw_endpoint();
        let connecting = endpoint
            .connect_with(
                raw_peer_config(&foreign_tls),
                node_2.address(),
                // Even naming the right server, the foreign CA does not vouch for node 2.
                &node_server_name(2),
            )
            .expect("connect");
        assert!(connecting.await.is_err(), "handshake must fail");
        assert!(node_2.channels.peer_messages.try_recv().is_err());
        impostor.transport.shutdown(SHUTDOWN_DRAIN).await;
        node_2.transport.shutdown(SHUTDOWN_DRAIN).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_presenting_another_nodes_certificate_is_refused() {
    bounded(async {
        let tls_dir = tempfile::tempdir().expect("tempdir");
        generate_cluster_certs(tls_dir.path(), 4, &[]).expect("certs");
        let node_4 = Node::start(tls_dir.path(), test_config(4, any_local_port())).await;
        // Node 4 waits for 2 and 3 to dial it (lower ids dial).
        node_4
            .transport
            .add_peer(2, any_local_port())
            .expect("add peer");
        let sender_3 = node_4
            .transport
            .add_peer(3, any_local_port())
            .expect("add peer");
        // Node 2's certificate, claiming to be node 3.
        let node_2_tls = NodeTls::load(tls_dir.path(), 2).expect("tls");
        let endpoint = raw_endpoint();
        let connection = endpoint
            .connect_with(
                raw_peer_config(&node_2_tls),
                node_4.address(),
                &node_server_name(4),
            )
            .expect("connect")
            .await
            .expect("TLS itself succeeds: the certificate is valid");
        assert!(exchange_hello(&connection, 3).await.is_err());
        let error = connection.closed().await;
        assert_eq!(CloseCode::of(&error), Some(CloseCode::IdentityMismatch));
        assert_logged(&[
            "peer connection refused",
            "hello claims node 3 but the certificate is node 2's",
        ])
        .await;
        assert!(!sender_3.is_connected());

        // A client certificate is valid under the CA but names no node: refused as a peer.
        let client_chain =
            tls::load_certificates(&tls_dir.path().join(tls::CLIENT_CERT_FILE)).expect("client");
        let client_key =
            tls::load_private_key(&tls_dir.path().join(tls::CLIENT_KEY_FILE)).expect("key");
        let client_as_peer = NodeTls {
            node_id: 3,
            ca_certificates: node_2_tls.ca_certificates.clone(),
            certificate_chain: client_chain,
            private_key: client_key,
        };
        let connection = endpoint
            .connect_with(
                raw_peer_config(&client_as_peer),
                node_4.address(),
                &node_server_name(4),
            )
            .expect("connect")
            .await
            .expect("TLS succeeds");
        let error = connection.closed().await;
        assert_eq!(CloseCode::of(&error), Some(CloseCode::NotANodeCertificate));

        // And the honest node 2 dialling with its own id gets in.
        let connection = endpoint
            .connect_with(
                raw_peer_config(&node_2_tls),
                node_4.address(),
                &node_server_name(4),
            )
            .expect("connect")
            .await
            .expect("handshake");
        let reply = exchange_hello(&connection, 2).await.expect("hello");
        assert_eq!(reply.node_id, 4);
        connection.close(CloseCode::Shutdown.code(), b"done");
        node_4.transport.shutdown(SHUTDOWN_DRAIN).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_alpn_is_refused() {
    bounded(async {
        let tls_dir = tempfile::tempdir().expect("tempdir");
        generate_cluster_certs(tls_dir.path(), 1, &[]).expect("certs");
        let node_1 = Node::start(tls_dir.path(), test_config(1, any_local_port())).await;
        let ca = tls::load_certificates(&tls_dir.path().join(tls::CA_CERT_FILE)).expect("ca");
        let endpoint = raw_endpoint();

        // An ALPN the server does not serve fails the TLS handshake.
        let mut bogus = tls::client_config(&ca, None).expect("client config");
        bogus.alpn_protocols = vec![b"bogus/1".to_vec()];
        let connecting = endpoint
            .connect_with(
                quic_client_config(bogus, peer_transport()).expect("quic"),
                node_1.address(),
                "localhost",
            )
            .expect("connect");
        assert!(connecting.await.is_err(), "unknown ALPN must be refused");
        assert_logged(&["TLS handshake failed; connection refused"]).await;

        // No ALPN at all: refused either in the handshake or right after it.
        let mut none = tls::client_config(&ca, None).expect("client config");
        none.alpn_protocols = Vec::new();
        let connecting = endpoint
            .connect_with(
                quic_client_config(none, peer_transport()).expect("quic"),
                node_1.address(),
                "localhost",
            )
            .expect("connect");
        if let Ok(connection) = connecting.await {
            let error = connection.closed().await;
            assert_eq!(CloseCode::of(&error), Some(CloseCode::UnknownAlpn));
        }

        // The right client ALPN is served (certificate optional by default).
        let client = tls::client_config(&ca, None).expect("client config");
        let connection = endpoint
            .connect_with(
                quic_client_config(client, peer_transport()).expect("quic"),
                node_1.address(),
                "localhost",
            )
            .expect("connect")
            .await
            .expect("client handshake");
        let mut node_1 = node_1;
        let accepted = node_1
            .channels
            .client_connections
            .recv()
            .await
            .expect("client connection handed to the client API");
        assert!(!accepted.has_client_certificate);
        connection.close(CloseCode::Shutdown.code(), b"done");
        drop(accepted);
        node_1.transport.shutdown(SHUTDOWN_DRAIN).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_on_a_lane_close_that_connection_and_others_keep_flowing() {
    bounded(async {
        let tls_dir = tempfile::tempdir().expect("tempdir");
        generate_cluster_certs(tls_dir.path(), 3, &[]).expect("certs");
        let mut node_3 = Node::start(tls_dir.path(), test_config(3, any_local_port())).await;
        let node_2 = Node::start(tls_dir.path(), test_config(2, any_local_port())).await;
        node_3
            .transport
            .add_peer(1, any_local_port())
            .expect("add peer");
        node_3
            .transport
            .add_peer(2, node_2.address())
            .expect("add peer");
        let sender_2_to_3 = node_2
            .transport
            .add_peer(3, node_3.address())
            .expect("add peer");
        assert!(sender_2_to_3.wait_connected().await);

        // Node 1, honest in TLS and hello, then writes garbage on a lane.
        let node_1_tls = NodeTls::load(tls_dir.path(), 1).expect("tls");
        let endpoint = raw_endpoint();
        let connection = endpoint
            .connect_with(
                raw_peer_config(&node_1_tls),
                node_3.address(),
                &node_server_name(3),
            )
            .expect("connect")
            .await
            .expect("handshake");
        assert_eq!(
            exchange_hello(&connection, 1).await.expect("hello").node_id,
            3
        );
        let mut lane = connection.open_uni().await.expect("lane");
        // Seeded "random" bytes; the first four claim a multi-gigabyte frame.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut garbage = vec![0xff, 0xff, 0xff, 0xfe];
        garbage.extend((0..256).map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            (state >> 56) as u8
        }));
        lane.write_all(&garbage).await.expect("write garbage");
        let _ = lane.finish();
        let error = timeout(Duration::from_secs(10), connection.closed())
            .await
            .expect("connection closed");
        assert_eq!(CloseCode::of(&error), Some(CloseCode::MalformedFrame));
        assert_logged(&["malformed frame on a peer lane", "peer_node_id=1"]).await;

        // Node 2's link was not disturbed.
        for sequence in 0..50 {
            node_2.send(3, sequence % 5, sequence).await;
        }
        let messages = node_3.receive(50).await;
        assert!(messages.iter().all(|message| message.from == 2));
        node_2.transport.shutdown(SHUTDOWN_DRAIN).await;
        node_3.transport.shutdown(SHUTDOWN_DRAIN).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_receiver_fills_only_its_own_queue() {
    bounded(async {
        let tls_dir = tempfile::tempdir().expect("tempdir");
        generate_cluster_certs(tls_dir.path(), 3, &[]).expect("certs");
        let small_buffers = |node_id| {
            let mut config = test_config(node_id, any_local_port());
            config.incoming_capacity_messages = 16;
            config.peer_queue_capacity_messages = 64;
            config.peer_stream_receive_window_bytes = 64 * 1024;
            config.peer_connection_receive_window_bytes = 256 * 1024;
            config
        };
        let mut nodes = BTreeMap::new();
        for node_id in 1..=3 {
            nodes.insert(
                node_id,
                Node::start(tls_dir.path(), small_buffers(node_id)).await,
            );
        }
        connect_mesh(&nodes).await;
        let mut node_3 = nodes.remove(&3).expect("node 3");
        let node_2 = nodes.remove(&2).expect("node 2"); // never reads: stalled
        let node_1 = nodes.remove(&1).expect("node 1");
        let to_2 = node_1.transport.peer(2).expect("peer 2");
        let to_3 = node_1.transport.peer(3).expect("peer 3");

        // Fill until try_send has answered Full for a while: a momentary Full only means
        // the sender task has not caught up yet; a lasting one means node 2 pushes back.
        let big_payload = Bytes::from(vec![7_u8; 16 * 1024]);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut sent_to_2 = 0_u64;
        let mut last_accepted = Instant::now();
        while last_accepted.elapsed() < Duration::from_millis(500) {
            match to_2.try_send(sent_to_2 % 8, big_payload.clone()) {
                Ok(()) => {
                    sent_to_2 += 1;
                    last_accepted = Instant::now();
                }
                Err(SendError::Full) => sleep(Duration::from_millis(5)).await,
                Err(error) => panic!("unexpected {error}"),
            }
            assert!(
                Instant::now() < deadline,
                "queue to a stalled peer never filled"
            );
        }
        assert!(sent_to_2 > 0);

        // Node 3 still receives everything node 1 sends it, while node 2 stays stalled.
        let receiver = tokio::spawn(async move {
            let messages = node_3.receive(200).await;
            (node_3, messages)
        });
        for sequence in 0..200 {
            node_1.send(3, sequence % 4, sequence).await;
        }
        let (node_3, messages) = receiver.await.expect("receiver");
        assert!(messages.iter().all(|message| message.from == 1));
        assert_eq!(
            to_2.try_send(0, big_payload.clone()),
            Err(SendError::Full),
            "node 2 is still not reading"
        );
        assert!(to_3.is_connected());
        for node in [node_1, node_2, node_3] {
            node.transport.shutdown(SHUTDOWN_DRAIN).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_peer_on_the_same_port_is_reconnected() {
    bounded(async {
        let tls_dir = tempfile::tempdir().expect("tempdir");
        generate_cluster_certs(tls_dir.path(), 2, &[]).expect("certs");
        let mut nodes = start_cluster(tls_dir.path(), &[1, 2]).await;
        exchange_everywhere(&mut nodes, 3, 10).await;

        // Restart each side in turn: node 2 is dialled (node 1 must redial), node 1 dials.
        for restarted in [2, 1] {
            let other = 3 - restarted;
            let node = nodes.remove(&restarted).expect("node");
            let address = node.address();
            node.transport.shutdown(SHUTDOWN_DRAIN).await;
            let to_restarted = nodes[&other].transport.peer(restarted).expect("peer");
            while to_restarted.is_connected() {
                sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(
                to_restarted.try_send(0, payload(0, 0)),
                Err(SendError::Disconnected)
            );
            let node = Node::start(tls_dir.path(), test_config(restarted, address)).await;
            assert_eq!(node.address(), address);
            node.transport
                .add_peer(other, nodes[&other].address())
                .expect("add peer");
            nodes.insert(restarted, node);
            wait_mesh_connected(&nodes).await;
            exchange_everywhere(&mut nodes, 3, 10).await;
        }
        for (_, node) in nodes {
            node.transport.shutdown(SHUTDOWN_DRAIN).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificate_turns_anonymous_clients_away() {
    bounded(async {
        let tls_dir = tempfile::tempdir().expect("tempdir");
        generate_cluster_certs(tls_dir.path(), 1, &[]).expect("certs");
        let mut config = test_config(1, any_local_port());
        config.client_cert_policy = ClientCertPolicy::Required;
        let mut node_1 = Node::start(tls_dir.path(), config).await;
        let ca = tls::load_certificates(&tls_dir.path().join(tls::CA_CERT_FILE)).expect("ca");
        let endpoint = raw_endpoint();

        // In TLS 1.3 the client may finish its side before the server rejects its (missing)
        // certificate, so the refusal shows either as a failed handshake or a prompt close.
        let anonymous = tls::client_config(&ca, None).expect("client config");
        let connecting = endpoint
            .connect_with(
                quic_client_config(anonymous, peer_transport()).expect("quic"),
                node_1.address(),
                "127.0.0.1",
            )
            .expect("connect");
        if let Ok(connection) = connecting.await {
            timeout(Duration::from_secs(5), connection.closed())
                .await
                .expect("anonymous client closed");
        }
        assert!(node_1.channels.client_connections.try_recv().is_err());

        // With client.pem it is served.
        let chain =
            tls::load_certificates(&tls_dir.path().join(tls::CLIENT_CERT_FILE)).expect("client");
        let key = tls::load_private_key(&tls_dir.path().join(tls::CLIENT_KEY_FILE)).expect("key");
        let authenticated = tls::client_config(&ca, Some((chain, key))).expect("client config");
        let connection = endpoint
            .connect_with(
                quic_client_config(authenticated, peer_transport()).expect("quic"),
                node_1.address(),
                "127.0.0.1",
            )
            .expect("connect")
            .await
            .expect("handshake");
        let accepted = node_1
            .channels
            .client_connections
            .recv()
            .await
            .expect("accepted");
        assert!(accepted.has_client_certificate);
        connection.close(CloseCode::Shutdown.code(), b"done");
        drop(accepted);
        node_1.transport.shutdown(SHUTDOWN_DRAIN).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_node_does_not_start_a_transport() {
    bounded(async {
        let tls_dir = tempfile::tempdir().expect("tempdir");
        generate_cluster_certs(tls_dir.path(), 2, &[]).expect("certs");
        let tls = NodeTls::load(tls_dir.path(), 2).expect("tls");
        let result = Transport::start(test_config(1, any_local_port()), &tls).await;
        assert!(result.is_err());
    })
    .await;
}
