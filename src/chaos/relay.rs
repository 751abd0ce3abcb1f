//! The fault-injecting network between nodes: one UDP relay per ordered node pair.
//!
//! Node `i` is told (`--peers`) that node `j` lives at relay `(i, j)`; the relay forwards every
//! datagram to `j`'s real port from a socket of its own and sends the answers back. QUIC runs
//! over UDP, so this carries the whole peer connection, both directions: datagrams from the
//! dialling side are traffic `i -> j`, answers are `j -> i`. Each direction of each pair has a
//! [`Link`] the nemesis sets: blocked (dropped) or delayed. Clients dial nodes directly.
//!
//! ```text
//!   node i ──► relay (i,j) listen socket ──[link i->j]──► upstream socket ──► node j
//!   node i ◄── relay (i,j) listen socket ◄─[link j->i]─── upstream socket ◄── node j
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use crate::limits::{MAX_DATAGRAM_BYTES, MAX_SESSIONS_PER_RELAY, RELAY_ERROR_PAUSE};

/// One direction of one node pair.
#[derive(Debug, Default)]
pub struct Link {
    blocked: AtomicBool,
    delay_ms: AtomicU64,
}

impl Link {
    /// `None`: drop the datagram; else how long to hold it.
    fn verdict(&self) -> Option<Duration> {
        if self.blocked.load(Ordering::Relaxed) {
            None
        } else {
            Some(Duration::from_millis(self.delay_ms.load(Ordering::Relaxed)))
        }
    }
}

/// Every link of the cluster and the relays that obey them. Dropping it stops the relays.
pub struct Network {
    links: BTreeMap<(u64, u64), Arc<Link>>,
    relay_addresses: BTreeMap<(u64, u64), SocketAddr>,
    tasks: JoinSet<()>,
}

impl Network {
    /// Starts a relay for every ordered pair of `nodes` (id -> real listen address).
    pub async fn start(nodes: &BTreeMap<u64, SocketAddr>) -> std::io::Result<Network> {
        let mut links = BTreeMap::new();
        for &from in nodes.keys() {
            for &to in nodes.keys() {
                if from != to {
                    links.insert((from, to), Arc::new(Link::default()));
                }
            }
        }
        let mut network = Network {
            links,
            relay_addresses: BTreeMap::new(),
            tasks: JoinSet::new(),
        };
        for (&from, _) in nodes.iter() {
            for (&to, &target) in nodes.iter() {
                if from == to {
                    continue;
                }
                let listen = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
                network
                    .relay_addresses
                    .insert((from, to), listen.local_addr()?);
                let forward = network.links[&(from, to)].clone();
                let backward = network.links[&(to, from)].clone();
                network
                    .tasks
                    .spawn(relay(listen, target, forward, backward));
            }
        }
        Ok(network)
    }

    /// The address node `from` dials to reach node `to`.
    pub fn relay_address(&self, from: u64, to: u64) -> SocketAddr {
        self.relay_addresses[&(from, to)]
    }

    /// Drops every datagram from `from` to `to` (one direction).
    pub fn block(&self, from: u64, to: u64) {
        self.links[&(from, to)]
            .blocked
            .store(true, Ordering::Relaxed);
    }

    /// Blocks both directions between every node of `side_a` and every node of `side_b`.
    pub fn cut(&self, side_a: &[u64], side_b: &[u64]) {
        for &a in side_a {
            for &b in side_b {
                self.block(a, b);
                self.block(b, a);
            }
        }
    }

    /// Holds every datagram from `from` to `to` for `delay` before forwarding it.
    pub fn delay(&self, from: u64, to: u64, delay: Duration) {
        self.links[&(from, to)]
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Every link clear, no delay.
    pub fn heal(&self) {
        for link in self.links.values() {
            link.blocked.store(false, Ordering::Relaxed);
            link.delay_ms.store(0, Ordering::Relaxed);
        }
    }
}

/// Forwards for one ordered pair until the task is aborted (when the [`Network`] drops).
async fn relay(
    listen: Arc<UdpSocket>,
    target: SocketAddr,
    forward: Arc<Link>,
    backward: Arc<Link>,
) {
    let mut sessions: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    // Dropping this set (when the relay task is aborted) aborts the answer readers.
    let mut readers = JoinSet::new();
    let mut buffer = vec![0_u8; MAX_DATAGRAM_BYTES];
    loop {
        let Ok((length, source)) = listen.recv_from(&mut buffer).await else {
            // ICMP-induced errors (a node that is down) are transient on Linux UDP sockets.
            tokio::time::sleep(RELAY_ERROR_PAUSE).await;
            continue;
        };
        let upstream = match sessions.get(&source) {
            Some(upstream) => upstream.clone(),
            None => {
                if sessions.len() >= MAX_SESSIONS_PER_RELAY {
                    continue;
                }
                let Ok(upstream) = open_upstream(target).await else {
                    continue;
                };
                let upstream = Arc::new(upstream);
                sessions.insert(source, upstream.clone());
                readers.spawn(answer(
                    upstream.clone(),
                    listen.clone(),
                    source,
                    backward.clone(),
                ));
                upstream
            }
        };
        let datagram = buffer[..length].to_vec();
        deliver(forward.verdict(), datagram, move |bytes| {
            let upstream = upstream.clone();
            async move {
                let _ = upstream.send(&bytes).await;
            }
        })
        .await;
    }
}

async fn open_upstream(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(target).await?;
    Ok(socket)
}

/// Carries answers from the target back to `client` until aborted.
async fn answer(
    upstream: Arc<UdpSocket>,
    listen: Arc<UdpSocket>,
    client: SocketAddr,
    link: Arc<Link>,
) {
    let mut buffer = vec![0_u8; MAX_DATAGRAM_BYTES];
    loop {
        let Ok(length) = upstream.recv(&mut buffer).await else {
            // "Connection refused" while the target node is down: keep listening.
            tokio::time::sleep(RELAY_ERROR_PAUSE).await;
            continue;
        };
        let datagram = buffer[..length].to_vec();
        let listen = listen.clone();
        deliver(link.verdict(), datagram, move |bytes| async move {
            let _ = listen.send_to(&bytes, client).await;
        })
        .await;
    }
}

/// Sends now (in line, which keeps the order), later (a task of its own per datagram), or never,
/// as the link says.
async fn deliver<F, Fut>(verdict: Option<Duration>, datagram: Vec<u8>, send: F)
where
    F: FnOnce(Vec<u8>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    match verdict {
        None => {}
        Some(delay) if delay.is_zero() => send(datagram).await,
        Some(delay) => {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                send(datagram).await;
            });
        }
    }
}
