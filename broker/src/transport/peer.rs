//! Node-to-node links (docs/TRANSPORT.md): one QUIC connection per node pair, shared by every Raft
//! group, with a fixed set of long-lived unidirectional lanes in each direction.
//!
//! Each peer has a [`PeerSender`] (cheap to clone, never blocks) feeding a bounded queue, and
//! one task that owns the connection to that peer:
//!
//! ```text
//!            try_send ──► queue (bounded) ──► peer task ──► lane g % lanes ──► QUIC
//!                                               │
//!   dial rule: lower id ─ dials with backoff ───┤   higher id ─ waits for the accept loop
//!                                               │               to hand it the connection
//!   every lane the remote opens ──► lane reader ──► incoming channel (bounded) ──► driver
//! ```
//!
//! A stalled remote stops granting flow-control credit, the task's lane write waits, the queue
//! fills and `try_send` answers `Full`: only that peer is affected. A lost connection answers
//! `Disconnected` and drops what was queued; Raft falls back to probing and re-sends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::codec::{self, Hello, HELLO_BYTES};
use super::tls::node_server_name;
use super::{dials, lane_of, CloseCode, GroupId, NodeId, TransportConfig};
use crate::limits::{
    ACCEPTED_CONNECTION_QUEUE, LANE_READ_CHUNK_BYTES, MAX_LANE_BATCH_BYTES,
    ZERO_COPY_MIN_PAYLOAD_BYTES,
};

/// A message received from a peer, for the node driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerMessage {
    pub from: NodeId,
    pub group: GroupId,
    pub payload: Bytes,
}

/// Why a message was not queued. The caller treats every variant as a lost message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The peer's queue is full (it is slow or stalled); the message was dropped.
    #[error("queue to the peer is full")]
    Full,
    /// No connection to the peer right now (or the transport is shut down).
    #[error("peer is not connected")]
    Disconnected,
    /// The payload exceeds `max_payload_bytes`; it would be refused by the receiver.
    #[error("payload of {payload_bytes} bytes exceeds the limit of {max_payload_bytes}")]
    TooLarge {
        payload_bytes: usize,
        max_payload_bytes: u32,
    },
}

/// The sending half towards one peer. Cloning shares the queue.
#[derive(Debug, Clone)]
pub struct PeerSender {
    peer_node_id: NodeId,
    queue: mpsc::Sender<QueuedFrame>,
    connected: watch::Receiver<bool>,
    max_payload_bytes: u32,
}

impl PeerSender {
    pub fn peer_node_id(&self) -> NodeId {
        self.peer_node_id
    }

    /// Queues a message for the peer without waiting. On `Err` the message is dropped.
    pub fn try_send(&self, group: GroupId, payload: Bytes) -> Result<(), SendError> {
        self.try_send_chunks(group, vec![payload])
    }

    /// Queues a message whose payload is `chunks` back to back (one frame on the wire). Chunks
    /// of `ZERO_COPY_MIN_PAYLOAD_BYTES` or more reach QUIC as they are, not copied. On `Err`
    /// the message is dropped.
    pub fn try_send_chunks(&self, group: GroupId, chunks: Vec<Bytes>) -> Result<(), SendError> {
        let payload_bytes: usize = chunks.iter().map(Bytes::len).sum();
        if payload_bytes > self.max_payload_bytes as usize {
            return Err(SendError::TooLarge {
                payload_bytes,
                max_payload_bytes: self.max_payload_bytes,
            });
        }
        if !*self.connected.borrow() {
            return Err(SendError::Disconnected);
        }
        self.queue
            .try_send(QueuedFrame {
                group,
                payload_bytes,
                chunks,
            })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => SendError::Full,
                mpsc::error::TrySendError::Closed(_) => SendError::Disconnected,
            })
    }

    /// Whether a connection to the peer is up (its lanes are open).
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Waits until the peer is connected; `false` if the transport shut down first.
    pub async fn wait_connected(&self) -> bool {
        let mut connected = self.connected.clone();
        let result = connected.wait_for(|connected| *connected).await.is_ok();
        result
    }
}

/// What the peer task needs from the rest of the transport.
pub(crate) struct PeerLink {
    pub(crate) config: Arc<TransportConfig>,
    pub(crate) peer_node_id: NodeId,
    pub(crate) peer_address: SocketAddr,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) dial_config: quinn::ClientConfig,
    pub(crate) incoming: mpsc::Sender<PeerMessage>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// The accept loop's handle on a peer task: where to hand a connection the peer dialled.
pub(crate) struct PeerEntry {
    pub(crate) sender: PeerSender,
    pub(crate) accepted_connections: mpsc::Sender<quinn::Connection>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

/// Starts the task owning the link to one peer.
pub(crate) fn spawn_peer(link: PeerLink) -> PeerEntry {
    let (queue_sender, queue) = mpsc::channel(link.config.peer_queue_capacity_messages);
    let (connected_sender, connected) = watch::channel(false);
    // A newer connection replaces the one waiting, the accept loop never blocks.
    let (accepted_connections, accepted) = mpsc::channel(ACCEPTED_CONNECTION_QUEUE);
    let sender = PeerSender {
        peer_node_id: link.peer_node_id,
        queue: queue_sender,
        connected,
        max_payload_bytes: link.config.max_payload_bytes,
    };
    let task = PeerTask {
        link,
        queue,
        accepted,
        connected: connected_sender,
    };
    PeerEntry {
        sender,
        accepted_connections,
        task: tokio::spawn(task.run()),
    }
}

/// A frame waiting for its lane: its payload is `chunks` back to back.
#[derive(Debug, Clone)]
struct QueuedFrame {
    group: GroupId,
    payload_bytes: usize,
    chunks: Vec<Bytes>,
}

struct PeerTask {
    link: PeerLink,
    queue: mpsc::Receiver<QueuedFrame>,
    accepted: mpsc::Receiver<quinn::Connection>,
    connected: watch::Sender<bool>,
}

/// How a served connection ended.
enum ConnectionEnd {
    /// Lost or failed; obtain a new one.
    Lost,
    /// The peer dialled again; serve this one next.
    Replaced(quinn::Connection),
    Shutdown,
}

impl PeerTask {
    async fn run(mut self) {
        let local_node_id = self.link.config.node_id;
        let peer_node_id = self.link.peer_node_id;
        let mut backoff = Backoff::new(&self.link.config);
        let mut next_connection = None;
        loop {
            let connection = match next_connection.take() {
                Some(connection) => connection,
                None => match self.obtain_connection(&mut backoff).await {
                    Some(connection) => connection,
                    None => break,
                },
            };
            match self.serve(connection).await {
                ConnectionEnd::Lost => {}
                ConnectionEnd::Replaced(connection) => next_connection = Some(connection),
                ConnectionEnd::Shutdown => break,
            }
        }
        self.connected.send_replace(false);
        debug!(local_node_id, peer_node_id, "peer task stopped");
    }

    /// The next connection: dialled (with backoff) if this node dials the peer, else the next
    /// one the accept loop hands over. `None` on shutdown.
    async fn obtain_connection(&mut self, backoff: &mut Backoff) -> Option<quinn::Connection> {
        let local_node_id = self.link.config.node_id;
        let peer_node_id = self.link.peer_node_id;
        if !dials(local_node_id, peer_node_id) {
            return tokio::select! {
                connection = self.accepted.recv() => connection,
                _ = self.link.shutdown.wait_for(|stop| *stop) => None,
            };
        }
        loop {
            match dial_peer(&self.link).await {
                Ok(connection) => {
                    backoff.reset();
                    return Some(connection);
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    debug!(
                        local_node_id,
                        peer_node_id,
                        address = %self.link.peer_address,
                        %error,
                        retry_in_ms = delay.as_millis() as u64,
                        "dialling peer failed"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = self.link.shutdown.wait_for(|stop| *stop) => return None,
                    }
                }
            }
        }
    }

    async fn serve(&mut self, connection: quinn::Connection) -> ConnectionEnd {
        let local_node_id = self.link.config.node_id;
        let peer_node_id = self.link.peer_node_id;
        let readers = tokio::spawn(read_lanes(
            connection.clone(),
            peer_node_id,
            self.link.incoming.clone(),
            self.link.config.max_payload_bytes,
        ));
        let end = match open_lanes(&connection, self.link.config.lanes_per_direction).await {
            Ok(lanes) => {
                info!(local_node_id, peer_node_id, remote = %connection.remote_address(), "peer connected");
                self.connected.send_replace(true);
                self.pump(&connection, lanes).await
            }
            Err(error) => {
                warn!(local_node_id, peer_node_id, %error, "opening lanes failed");
                ConnectionEnd::Lost
            }
        };
        self.connected.send_replace(false);
        match &end {
            ConnectionEnd::Lost => {}
            ConnectionEnd::Replaced(_) => CloseCode::Replaced.close(&connection, "replaced"),
            ConnectionEnd::Shutdown => CloseCode::Shutdown.close(&connection, "shutdown"),
        }
        readers.abort();
        // Queued messages were meant for a link that is gone; Raft re-sends after probing.
        let mut dropped_messages = 0_usize;
        while self.queue.try_recv().is_ok() {
            dropped_messages += 1;
        }
        info!(
            local_node_id,
            peer_node_id, dropped_messages, "peer disconnected"
        );
        end
    }

    /// Moves queued messages onto the lanes until the connection ends.
    async fn pump(
        &mut self,
        connection: &quinn::Connection,
        mut lanes: Vec<quinn::SendStream>,
    ) -> ConnectionEnd {
        let lane_count = self.link.config.lanes_per_direction;
        let mut lane_batches: Vec<LaneBatch> = lanes.iter().map(|_| LaneBatch::default()).collect();
        loop {
            let first = tokio::select! {
                biased;
                _ = self.link.shutdown.wait_for(|stop| *stop) => return ConnectionEnd::Shutdown,
                error = connection.closed() => {
                    info!(peer_node_id = self.link.peer_node_id, %error, "peer connection closed");
                    return ConnectionEnd::Lost;
                }
                replacement = self.accepted.recv() => match replacement {
                    Some(replacement) => return ConnectionEnd::Replaced(replacement),
                    None => return ConnectionEnd::Shutdown,
                },
                message = self.queue.recv() => match message {
                    Some(message) => message,
                    None => return ConnectionEnd::Shutdown,
                },
            };
            // Coalesce what is already queued into one write per lane.
            let mut batch_bytes = 0_usize;
            let mut message = Some(first);
            while let Some(frame) = message.take() {
                batch_bytes += codec::encoded_frame_bytes(frame.payload_bytes);
                let lane = lane_of(frame.group, lane_count);
                lane_batches[lane].push(frame);
                if batch_bytes < MAX_LANE_BATCH_BYTES {
                    message = self.queue.try_recv().ok();
                }
            }
            for (lane, batch) in lanes.iter_mut().zip(lane_batches.iter_mut()) {
                let chunks = batch.chunks();
                if chunks.is_empty() {
                    continue;
                }
                let written = lane.write_all_chunks(chunks).await;
                chunks.clear();
                if let Err(error) = written {
                    info!(peer_node_id = self.link.peer_node_id, %error, "writing to a lane failed");
                    return ConnectionEnd::Lost;
                }
            }
        }
    }
}

/// One round of frames for one lane, as the chunks of one `write_all_chunks`: frame headers and
/// small payloads are packed into a shared buffer, large payloads follow their header as their
/// own chunk (the `Bytes` the sender queued, not a copy).
#[derive(Debug, Default)]
struct LaneBatch {
    packed: BytesMut,
    chunks: Vec<Bytes>,
}

impl LaneBatch {
    fn push(&mut self, frame: QueuedFrame) {
        codec::encode_frame_header(frame.group, frame.payload_bytes, &mut self.packed);
        for chunk in frame.chunks {
            if chunk.len() < ZERO_COPY_MIN_PAYLOAD_BYTES {
                self.packed.extend_from_slice(&chunk);
            } else {
                if !self.packed.is_empty() {
                    self.chunks.push(self.packed.split().freeze());
                }
                self.chunks.push(chunk);
            }
        }
    }

    /// The round's chunks in wire order; the caller writes and then clears them.
    fn chunks(&mut self) -> &mut Vec<Bytes> {
        if !self.packed.is_empty() {
            self.chunks.push(self.packed.split().freeze());
        }
        &mut self.chunks
    }
}

async fn open_lanes(
    connection: &quinn::Connection,
    lane_count: u8,
) -> Result<Vec<quinn::SendStream>, quinn::ConnectionError> {
    let mut lanes = Vec::with_capacity(usize::from(lane_count));
    for _ in 0..lane_count {
        lanes.push(connection.open_uni().await?);
    }
    Ok(lanes)
}

/// Why dialling a peer (or its hello) failed; the peer task logs it and retries after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("hello stream: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("hello stream: {0}")]
    Read(#[from] quinn::ReadToEndError),
    #[error("hello stream: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("hello: {0}")]
    Hello(#[from] codec::DecodeError),
    #[error("the peer answered as node {answered}")]
    WrongPeer { answered: NodeId },
    #[error("timed out")]
    Timeout,
}

/// Dials the peer, proving the server is `node-<peer>` (TLS server name), and exchanges hellos.
async fn dial_peer(link: &PeerLink) -> Result<quinn::Connection, DialError> {
    let connecting = link.endpoint.connect_with(
        link.dial_config.clone(),
        link.peer_address,
        &node_server_name(link.peer_node_id),
    )?;
    let handshake = async {
        let connection = connecting.await?;
        let answered = exchange_hello(&connection, link.config.node_id).await;
        match answered {
            Ok(hello) if hello.node_id == link.peer_node_id => Ok(connection),
            Ok(hello) => {
                CloseCode::BadHello.close(&connection, "unexpected node");
                Err(DialError::WrongPeer {
                    answered: hello.node_id,
                })
            }
            Err(error) => {
                CloseCode::BadHello.close(&connection, "hello failed");
                Err(error)
            }
        }
    };
    tokio::time::timeout(link.config.handshake_timeout(), handshake)
        .await
        .map_err(|_| DialError::Timeout)?
}

/// The dialling side of the hello: sends ours on a new bidirectional stream, reads theirs.
pub async fn exchange_hello(
    connection: &quinn::Connection,
    local_node_id: NodeId,
) -> Result<Hello, DialError> {
    let (mut send, mut receive) = connection.open_bi().await?;
    let mut hello = Vec::with_capacity(HELLO_BYTES);
    Hello {
        node_id: local_node_id,
    }
    .encode(&mut hello);
    send.write_all(&hello).await?;
    send.finish()?;
    let reply = receive.read_to_end(HELLO_BYTES).await?;
    Ok(Hello::decode(&mut &reply[..])?)
}

/// Accepts every lane the remote opens on `connection` and reads each in its own task.
async fn read_lanes(
    connection: quinn::Connection,
    peer_node_id: NodeId,
    incoming: mpsc::Sender<PeerMessage>,
    max_payload_bytes: u32,
) {
    let mut lane_readers = tokio::task::JoinSet::new();
    while let Ok(stream) = connection.accept_uni().await {
        // Reap lanes the remote finished so the set stays as small as the open lanes.
        while lane_readers.try_join_next().is_some() {}
        lane_readers.spawn(read_lane(
            stream,
            connection.clone(),
            peer_node_id,
            incoming.clone(),
            max_payload_bytes,
        ));
    }
    // Dropping the set aborts the lane readers of a connection that is gone.
}

/// Decodes one lane, delivering each frame in order. Bad bytes close the whole connection:
/// a peer that sends them is broken or hostile, and the dialler will reconnect cleanly.
async fn read_lane(
    mut stream: quinn::RecvStream,
    connection: quinn::Connection,
    peer_node_id: NodeId,
    incoming: mpsc::Sender<PeerMessage>,
    max_payload_bytes: u32,
) {
    let mut buffer = BytesMut::new();
    loop {
        loop {
            match codec::decode_frame(&mut buffer, max_payload_bytes) {
                Ok(Some(frame)) => {
                    let message = PeerMessage {
                        from: peer_node_id,
                        group: frame.group,
                        payload: frame.payload,
                    };
                    // Waiting here is the back-pressure: an unread lane stops granting credit.
                    if incoming.send(message).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    warn!(peer_node_id, remote = %connection.remote_address(), %error,
                        "malformed frame on a peer lane; closing the connection");
                    CloseCode::MalformedFrame.close(&connection, "malformed frame");
                    return;
                }
            }
        }
        match stream.read_chunk(LANE_READ_CHUNK_BYTES, true).await {
            Ok(Some(chunk)) => buffer.extend_from_slice(&chunk.bytes),
            Ok(None) if buffer.is_empty() => return,
            Ok(None) => {
                warn!(peer_node_id, remote = %connection.remote_address(),
                    buffered_bytes = buffer.len(),
                    "peer lane ended inside a frame; closing the connection");
                CloseCode::MalformedFrame.close(&connection, "truncated frame");
                return;
            }
            Err(error) => {
                debug!(peer_node_id, %error, "peer lane closed");
                return;
            }
        }
    }
}

/// Capped exponential backoff between dial attempts.
struct Backoff {
    min_delay: Duration,
    max_delay: Duration,
    next_delay: Duration,
}

impl Backoff {
    fn new(config: &TransportConfig) -> Backoff {
        let min_delay = Duration::from_millis(config.reconnect_backoff_min_ms);
        Backoff {
            min_delay,
            max_delay: Duration::from_millis(config.reconnect_backoff_max_ms),
            next_delay: min_delay,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next_delay;
        self.next_delay = (self.next_delay * 2).min(self.max_delay);
        delay
    }

    fn reset(&mut self) {
        self.next_delay = self.min_delay;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::codec::LaneFrame;

    #[test]
    fn lane_batch_chunks_are_the_encoded_frames_and_large_payloads_are_not_copied() {
        let sizes = [
            0,
            10,
            ZERO_COPY_MIN_PAYLOAD_BYTES - 1,
            ZERO_COPY_MIN_PAYLOAD_BYTES,
            3,
            1 << 20,
            1 << 20,
            7,
        ];
        let frames: Vec<LaneFrame> = sizes
            .iter()
            .enumerate()
            .map(|(number, &size)| LaneFrame {
                group: number as u64 * 4 + 1,
                payload: Bytes::from(vec![number as u8 + 1; size]),
            })
            .collect();
        // Each frame queued as one chunk, and the last one also as three (small, large, small).
        let queued = |frame: &LaneFrame| QueuedFrame {
            group: frame.group,
            payload_bytes: frame.payload.len(),
            chunks: vec![frame.payload.clone()],
        };
        let split_payload = Bytes::from(vec![9u8; 2 * ZERO_COPY_MIN_PAYLOAD_BYTES + 20]);
        let split_frame = LaneFrame {
            group: 99,
            payload: split_payload.clone(),
        };
        let split_chunks = vec![
            split_payload.slice(..10),
            split_payload.slice(10..10 + 2 * ZERO_COPY_MIN_PAYLOAD_BYTES),
            split_payload.slice(10 + 2 * ZERO_COPY_MIN_PAYLOAD_BYTES..),
        ];
        let large_chunk = split_chunks[1].clone();
        let mut batch = LaneBatch::default();
        // Two rounds through the same batch, as the pump reuses it.
        for _round in 0..2 {
            for frame in &frames {
                batch.push(queued(frame));
            }
            batch.push(QueuedFrame {
                group: split_frame.group,
                payload_bytes: split_frame.payload.len(),
                chunks: split_chunks.clone(),
            });
            let chunks = batch.chunks();
            let mut expected = BytesMut::new();
            for frame in frames.iter().chain([&split_frame]) {
                codec::encode_frame(frame.group, &frame.payload, &mut expected);
            }
            let wire: Vec<u8> = chunks
                .iter()
                .flat_map(|chunk| chunk.iter().copied())
                .collect();
            assert_eq!(
                wire,
                expected.to_vec(),
                "the chunks are the frames, in order"
            );
            for frame in frames
                .iter()
                .filter(|f| f.payload.len() >= ZERO_COPY_MIN_PAYLOAD_BYTES)
            {
                assert!(
                    chunks
                        .iter()
                        .any(|chunk| chunk.as_ptr() == frame.payload.as_ptr()
                            && chunk.len() == frame.payload.len()),
                    "a {}-byte payload is sent as queued, not copied",
                    frame.payload.len()
                );
            }
            assert!(
                chunks
                    .iter()
                    .any(|chunk| chunk.as_ptr() == large_chunk.as_ptr()),
                "a large chunk of a multi-chunk payload is not copied either"
            );
            let mut decode_buffer = BytesMut::from(&wire[..]);
            for frame in frames.iter().chain([&split_frame]) {
                let decoded = codec::decode_frame(
                    &mut decode_buffer,
                    crate::limits::DEFAULT_MAX_PAYLOAD_BYTES,
                )
                .expect("valid")
                .expect("complete");
                assert_eq!(&decoded, frame);
            }
            assert!(decode_buffer.is_empty());
            chunks.clear();
        }
        assert!(batch.chunks().is_empty(), "nothing left after a round");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut config = TransportConfig::new(1, "127.0.0.1:0".parse().expect("address"));
        config.reconnect_backoff_min_ms = 50;
        config.reconnect_backoff_max_ms = 300;
        let mut backoff = Backoff::new(&config);
        let delays_ms: Vec<u128> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays_ms, [50, 100, 200, 300, 300]);
        backoff.reset();
        assert_eq!(backoff.next_delay().as_millis(), 50);
    }
}
