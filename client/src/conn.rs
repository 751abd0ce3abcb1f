//! Connections to brokers: one QUIC connection per broker address, made on first use and cached
//! until it closes, and one request per bidirectional stream (docs/CLIENT.md "Connections"): open
//! a stream, write the request frame, finish, read the response frame to the end of the stream.
//! Every step is bounded: the connect by `connect_timeout_ms`, the whole exchange by the caller's
//! timeout, the response by `max_response_bytes`.
//!
//! Nothing here retries or routes; `client.rs` does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::QuicClientConfig;

use crate::address::BrokerAddress;
use crate::error::ClientError;
use crate::limits::{CONNECTION_WINDOW_RESPONSES, MAX_CONNECTIONS, MAX_RESOLVED_ADDRESSES};
use crate::wire::quic::{bind_udp_socket, discover_datagram_size, endpoint_config};
use crate::wire::{Frame, Request, Response};

/// QUIC settings of client connections. Idle timeout and keep-alive match the broker's
/// (docs/TRANSPORT.md) so an idle but healthy connection stays up.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionConfig {
    pub connect_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub keep_alive_interval_ms: u64,
    /// Largest response frame accepted (the broker's `max_request_bytes`, 16 MiB by default).
    pub max_response_bytes: u64,
}

/// The pool: one quinn endpoint per address family and a slot per broker address.
pub(crate) struct Connections {
    config: ConnectionConfig,
    quic_config: quinn::ClientConfig,
    endpoints: Mutex<Endpoints>,
    slots: Mutex<HashMap<BrokerAddress, Arc<tokio::sync::Mutex<Option<quinn::Connection>>>>>,
}

#[derive(Default)]
struct Endpoints {
    v4: Option<quinn::Endpoint>,
    v6: Option<quinn::Endpoint>,
}

impl Connections {
    pub(crate) fn new(
        rustls_config: rustls::ClientConfig,
        config: ConnectionConfig,
    ) -> Result<Connections, ClientError> {
        let crypto = QuicClientConfig::try_from(rustls_config)
            .map_err(|error| ClientError::Tls(error.to_string()))?;
        let mut transport = quinn::TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(Duration::from_millis(config.idle_timeout_ms))
            .map_err(|error| ClientError::InvalidArgument(format!("idle timeout: {error}")))?;
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(Duration::from_millis(config.keep_alive_interval_ms)))
            // The broker never opens streams towards a client.
            .max_concurrent_bidi_streams(0_u32.into())
            .max_concurrent_uni_streams(0_u32.into())
            // Room for a whole fetch response in flight without stalling on window updates.
            .stream_receive_window(
                quinn::VarInt::from_u64(config.max_response_bytes).unwrap_or(quinn::VarInt::MAX),
            )
            .receive_window(
                quinn::VarInt::from_u64(
                    config
                        .max_response_bytes
                        .saturating_mul(CONNECTION_WINDOW_RESPONSES),
                )
                .unwrap_or(quinn::VarInt::MAX),
            );
        discover_datagram_size(&mut transport);
        let mut quic_config = quinn::ClientConfig::new(Arc::new(crypto));
        quic_config.transport_config(Arc::new(transport));
        Ok(Connections {
            config,
            quic_config,
            endpoints: Mutex::new(Endpoints::default()),
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// Sends one request to `address` and returns its response frame. A `Response::Error` is
    /// returned as a frame, not as an error: the caller decides what it means.
    pub(crate) async fn request(
        &self,
        address: &BrokerAddress,
        request: &Request,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Frame<Response>, ClientError> {
        let frame = Frame::new(request, payload)
            .to_chunks()
            .map_err(ClientError::Encode)?;
        let exchange = async move {
            let connection = self.connection(address).await?;
            let result =
                exchange(&connection, address, frame, self.config.max_response_bytes).await;
            if let Err(ClientError::Connection { .. }) = &result {
                // The next request dials again instead of reusing a broken connection.
                self.forget(address, &connection);
            }
            result
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                address: address.to_string(),
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// The cached connection to `address`, or a new one.
    async fn connection(&self, address: &BrokerAddress) -> Result<quinn::Connection, ClientError> {
        let slot = {
            let mut slots = self.slots.lock().expect("connection slots lock");
            if !slots.contains_key(address) && slots.len() >= MAX_CONNECTIONS {
                // Drop closed connections' slots before refusing.
                slots.retain(|_, slot| {
                    slot.try_lock()
                        .map(|guard| guard.as_ref().is_some_and(|c| c.close_reason().is_none()))
                        .unwrap_or(true)
                });
                if slots.len() >= MAX_CONNECTIONS {
                    return Err(ClientError::Connect {
                        address: address.to_string(),
                        reason: format!("already {MAX_CONNECTIONS} broker connections open"),
                    });
                }
            }
            slots.entry(address.clone()).or_default().clone()
        };
        // One connect per address at a time; others wait for it and share the result.
        let mut guard = slot.lock().await;
        if let Some(connection) = guard.as_ref() {
            if connection.close_reason().is_none() {
                return Ok(connection.clone());
            }
        }
        *guard = None;
        let connect_timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let connection = tokio::time::timeout(connect_timeout, self.connect(address))
            .await
            .map_err(|_| ClientError::Connect {
                address: address.to_string(),
                reason: format!("no handshake within {} ms", self.config.connect_timeout_ms),
            })??;
        *guard = Some(connection.clone());
        Ok(connection)
    }

    /// Dials `address`: every address its host resolves to in turn (IPv4 first: Keel listens
    /// on 127.0.0.1 by default, and `localhost` often resolves to `::1` first), each bounded by
    /// an equal share of the connect timeout.
    async fn connect(&self, address: &BrokerAddress) -> Result<quinn::Connection, ClientError> {
        let connect_error = |reason: String| ClientError::Connect {
            address: address.to_string(),
            reason,
        };
        let targets = resolve(address).await?;
        let share =
            Duration::from_millis(self.config.connect_timeout_ms / targets.len().max(1) as u64);
        let mut last_error = String::from("no address to dial");
        for target in targets {
            let endpoint = self.endpoint(target).map_err(connect_error)?;
            let connecting = endpoint
                .connect_with(self.quic_config.clone(), target, address.server_name())
                .map_err(|error| connect_error(error.to_string()))?;
            match tokio::time::timeout(share, connecting).await {
                Ok(Ok(connection)) => return Ok(connection),
                Ok(Err(error)) => last_error = format!("{target}: {error}"),
                Err(_) => {
                    last_error = format!("{target}: no handshake within {} ms", share.as_millis())
                }
            }
        }
        Err(connect_error(last_error))
    }

    /// The client endpoint for the address family of `target`, bound on first use.
    fn endpoint(&self, target: SocketAddr) -> Result<quinn::Endpoint, String> {
        let mut endpoints = self.endpoints.lock().expect("endpoints lock");
        let (slot, bind) = if target.is_ipv4() {
            (&mut endpoints.v4, "0.0.0.0:0")
        } else {
            (&mut endpoints.v6, "[::]:0")
        };
        if let Some(endpoint) = slot {
            return Ok(endpoint.clone());
        }
        let bind: SocketAddr = bind.parse().expect("constant address");
        let socket = bind_udp_socket(bind).map_err(|error| error.to_string())?;
        let endpoint = quinn::Endpoint::new(
            endpoint_config(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|error| error.to_string())?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }

    fn forget(&self, address: &BrokerAddress, connection: &quinn::Connection) {
        let slots = self.slots.lock().expect("connection slots lock");
        if let Some(slot) = slots.get(address) {
            if let Ok(mut guard) = slot.try_lock() {
                if guard
                    .as_ref()
                    .is_some_and(|cached| cached.stable_id() == connection.stable_id())
                {
                    *guard = None;
                }
            }
        }
    }

    /// Closes every connection (the client is done) and waits, at most `grace`, until the
    /// brokers were told, so they free the connections at once instead of after their idle
    /// timeout. In-flight requests fail.
    pub(crate) async fn close(&self, grace: Duration) {
        let endpoints: Vec<quinn::Endpoint> = {
            let endpoints = self.endpoints.lock().expect("endpoints lock");
            [&endpoints.v4, &endpoints.v6]
                .into_iter()
                .flatten()
                .cloned()
                .collect()
        };
        for endpoint in &endpoints {
            endpoint.close(0_u32.into(), b"client closed");
        }
        for endpoint in &endpoints {
            let _ = tokio::time::timeout(grace, endpoint.wait_idle()).await;
        }
    }
}

/// One request on its own bidirectional stream.
async fn exchange(
    connection: &quinn::Connection,
    address: &BrokerAddress,
    mut frame: [Bytes; 2],
    max_response_bytes: u64,
) -> Result<Frame<Response>, ClientError> {
    let broken = |reason: String| ClientError::Connection {
        address: address.to_string(),
        reason,
    };
    let (mut send, mut receive) = connection
        .open_bi()
        .await
        .map_err(|error| broken(error.to_string()))?;
    // Chunks go to QUIC without a copy (`write_all` would copy the whole batch once more).
    send.write_all_chunks(&mut frame)
        .await
        .map_err(|error| broken(error.to_string()))?;
    send.finish().map_err(|error| broken(error.to_string()))?;
    let response = receive
        .read_to_end(usize::try_from(max_response_bytes).unwrap_or(usize::MAX))
        .await
        .map_err(|error| match error {
            quinn::ReadToEndError::TooLong => {
                ClientError::protocol(address, format!("response over {max_response_bytes} bytes"))
            }
            quinn::ReadToEndError::Read(error) => broken(error.to_string()),
        })?;
    let mut response = Bytes::from(response);
    let frame = Frame::<Response>::decode(&mut response, max_response_bytes)
        .map_err(|error| ClientError::protocol(address, error))?;
    if !response.is_empty() {
        return Err(ClientError::protocol(
            address,
            format!("{} bytes after the response frame", response.len()),
        ));
    }
    Ok(frame)
}

/// The socket addresses of `address`, IPv4 first, at most [`MAX_RESOLVED_ADDRESSES`].
async fn resolve(address: &BrokerAddress) -> Result<Vec<SocketAddr>, ClientError> {
    if let Ok(ip) = address.host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, address.port)]);
    }
    let resolved = tokio::net::lookup_host((address.host.as_str(), address.port))
        .await
        .map_err(|error| ClientError::Connect {
            address: address.to_string(),
            reason: format!("cannot resolve: {error}"),
        })?;
    let mut targets: Vec<SocketAddr> = Vec::new();
    for target in resolved {
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    // Stable sort: IPv4 first, the resolver's order otherwise.
    targets.sort_by_key(|target| target.is_ipv6());
    targets.truncate(MAX_RESOLVED_ADDRESSES);
    if targets.is_empty() {
        return Err(ClientError::Connect {
            address: address.to_string(),
            reason: "resolves to no address".into(),
        });
    }
    Ok(targets)
}
