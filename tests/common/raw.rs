//! A hand-driven QUIC client for black-box tests: requests written byte by byte, so a test can
//! send what the SDK never would (bad frames, wrong ALPN, foreign certificates, replayed batches).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use keel_broker::transport::endpoint::quic_client_config;
use keel_broker::transport::tls;
use keel_client::wire::{Frame, Request, Response};

use super::TestCluster;

pub struct Raw {
    pub connection: quinn::Connection,
    _endpoint: quinn::Endpoint,
}

/// A QUIC connection to `address` with the given ALPN and optional client identity files.
/// A client connection as the SDK makes it (ALPN `keel/N`, no client certificate).
pub async fn connect_client(cluster: &TestCluster, address: SocketAddr) -> Result<Raw, String> {
    connect(cluster, address, keel_client::wire::CLIENT_ALPN, None, None).await
}

pub async fn connect(
    cluster: &TestCluster,
    address: SocketAddr,
    alpn: &[u8],
    identity: Option<(&str, &str)>,
    ca_dir: Option<&std::path::Path>,
) -> Result<Raw, String> {
    let ca_dir = ca_dir.unwrap_or(&cluster.tls_dir);
    let ca = tls::load_certificates(&ca_dir.join("ca.pem")).expect("ca");
    let identity = identity.map(|(cert, key)| {
        (
            tls::load_certificates(&ca_dir.join(cert)).expect("cert"),
            tls::load_private_key(&ca_dir.join(key)).expect("key"),
        )
    });
    let mut config = tls::client_config(&ca, identity).expect("client config");
    config.alpn_protocols = vec![alpn.to_vec()];
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("endpoint");
    let client_config =
        quic_client_config(config, quinn::TransportConfig::default()).expect("quic config");
    let connecting = endpoint
        .connect_with(client_config, address, "127.0.0.1")
        .map_err(|error| error.to_string())?;
    let connection = tokio::time::timeout(Duration::from_secs(2), connecting)
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|error| error.to_string())?;
    Ok(Raw {
        connection,
        _endpoint: endpoint,
    })
}

impl Raw {
    /// Sends `bytes` as one request stream and decodes the response frame.
    pub async fn send_bytes(&self, bytes: &[u8]) -> (Response, Bytes) {
        let (mut send, mut receive) = self.connection.open_bi().await.expect("open stream");
        send.write_all(bytes).await.expect("write");
        send.finish().expect("finish");
        let answer = tokio::time::timeout(Duration::from_secs(30), receive.read_to_end(64 << 20))
            .await
            .expect("answer in time")
            .expect("read answer");
        let frame =
            Frame::<Response>::decode(&mut Bytes::from(answer), 64 << 20).expect("response frame");
        (frame.header, frame.payload)
    }

    pub async fn request(&self, request: Request, payload: Bytes) -> (Response, Bytes) {
        let bytes = Frame::new(request, payload).to_bytes().expect("encode");
        self.send_bytes(&bytes).await
    }
}

/// Sends `request` to each node in turn, every 100 ms for up to 30 s, until `accept` takes an
/// answer; nodes that are down or answer with something `accept` refuses are skipped.
pub async fn ask_nodes<T>(
    cluster: &TestCluster,
    request: &Request,
    payload: &Bytes,
    mut accept: impl FnMut(Response, Bytes) -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        for address in cluster.bootstrap() {
            let address: SocketAddr = address.parse().expect("node address");
            let Ok(raw) = connect_client(cluster, address).await else {
                continue;
            };
            let (response, answer_payload) = raw.request(request.clone(), payload.clone()).await;
            if let Some(value) = accept(response, answer_payload) {
                return value;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no node gave an acceptable answer to {request:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
