//! The QUIC and TLS settings every Keel endpoint shares, SDK and broker alike: one crypto provider
//! and cipher order, one socket buffer size, one datagram ceiling. Kept beside the formats so the
//! broker needs only this crate, never the SDK, to speak to clients the way they speak to it.

use std::net::SocketAddr;

/// Kernel buffer asked for on every QUIC socket, each direction. Linux's default (about 208 KiB)
/// holds about 2 ms of a 100 MB/s stream: a receiving task that waits that long for a CPU
/// drops datagrams, and QUIC's loss recovery then shrinks the congestion window for all
/// traffic on the socket. The kernel caps the request at `net.core.rmem_max` / `wmem_max`.
pub const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

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

/// Largest UDP payload a Keel endpoint sends or accepts, found per path by QUIC's MTU discovery
/// (starting from the 1,200 bytes every path carries, so a 1,500-byte network settles at what
/// it allows). Why larger than Ethernet: on loopback and jumbo-frame networks a 6,000-byte
/// datagram carries five times what a 1,200-byte one does for the same per-packet work
/// (header, encryption call, loss tracking, ACK), and with 1,452-byte datagrams that work was
/// a fifth of the CPU of the 4-producer bench (BENCHMARKS.md, "100,000 msgs/s"). Why not larger: quinn sends up
/// to 10 datagrams in one GSO `sendmsg`, which the kernel refuses past 64 KiB in total
/// (EMSGSIZE, dropped silently by quinn-udp: the long tails of an earlier 16 KiB experiment).
pub const MAX_UDP_PAYLOAD_BYTES: u16 = 6000;

const _: () = assert!(MAX_UDP_PAYLOAD_BYTES as usize * 10 <= 65_507);

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
