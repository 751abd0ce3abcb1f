//! The QUIC and TLS settings every Keel endpoint shares, SDK and broker alike: one crypto provider
//! and cipher order, one socket buffer size, one datagram ceiling. Kept beside the formats so the
//! broker needs only this crate, never the SDK, to speak to clients the way they speak to it.

use std::net::SocketAddr;

use crate::limits::{MAX_UDP_PAYLOAD_BYTES, SOCKET_BUFFER_BYTES};

/// A UDP socket bound to `address` with [`SOCKET_BUFFER_BYTES`] of kernel buffer each way (as
/// much as the kernel grants; a refusal is logged, not fatal). Shared by the broker's endpoint.
pub fn bind_udp_socket(address: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(address)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    if let Err(error) = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER_BYTES) {
        tracing::warn!(%error, "could not raise the UDP receive buffer");
    }
    if let Err(error) = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER_BYTES) {
        tracing::warn!(%error, "could not raise the UDP send buffer");
    }
    Ok(socket)
}

/// The endpoint settings every Keel endpoint (SDK and broker) shares: accept datagrams up to
/// [`MAX_UDP_PAYLOAD_BYTES`].
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD_BYTES)
        .expect("a constant within QUIC's limits");
    config
}

/// Lets MTU discovery grow a connection's datagrams up to [`MAX_UDP_PAYLOAD_BYTES`].
pub fn discover_datagram_size(transport: &mut quinn::TransportConfig) {
    let mut discovery = quinn::MtuDiscoveryConfig::default();
    discovery.upper_bound(MAX_UDP_PAYLOAD_BYTES);
    transport.mtu_discovery_config(Some(discovery));
}

/// The ring provider (the only one Keel compiles in) with AES-128-GCM preferred for TLS 1.3:
/// every byte a broker moves is sealed once per hop, and AES-128 does 10 rounds where AES-256
/// does 14 (AES-256-GCM comes first in rustls' default order). Both ends use this order, and a
/// peer that insists on another suite still gets one of the standard three.
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::cipher_suite;
    rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    }
}
