//! [`Producer`]: batches records per partition and sends them to the partition leaders.
//!
//! `send` is synchronous: it hands the record to the producer's task at once (so the order of
//! `send` calls is the order within each partition) and returns a [`DeliveryFuture`] that
//! resolves to `(partition, offset)` once the batch is acknowledged. Sends therefore pipeline:
//! keep many futures alive and await them in any order.
//!
//! One task owns the batching state (`accumulator.rs`) and the sticky partitioner; each batch it
//! sends runs in its own task, retrying through [`Client`] (leader changes, redirects) within
//! the retry policy and the delivery timeout. Up to `max_in_flight_per_partition` (default 1,
//! at most 5) batches of a partition are in flight at once; their sequence numbers let the
//! leader hold one that overtook its predecessor until the predecessor arrives, so neither
//! separate streams nor retries reorder a partition. Without idempotence the producer sends one
//! at a time.
//!
//! Idempotence (on by default, docs/DECISIONS.md "Idempotent produce"): the producer gets a
//! producer id from the cluster (`InitProducerId`) and stamps each batch, when it is dispatched,
//! with that id, epoch 0 and the partition's next sequence number. A retry resends the same bytes,
//! so the partition leader recognises it and answers with the original offsets: each record lands
//! once. A batch that fails for good leaves a hole in its partition's sequence (the leader may or
//! may not have it), so the producer then starts over with a new producer id, whose sequences
//! start at 0.
//!
//! Memory is bounded by `max_buffered_bytes`: a `send` while the buffer is at or above it
//! resolves to [`ProduceError::BufferFull`] at once; [`Producer::wait_for_capacity`] waits for
//! room (one record over the limit is allowed, so a sender that waits first always gets in).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::debug;

use crate::accumulator::{Accumulator, BatchConfig, ClosedBatch, TopicPartition};
use crate::client::{check_topic_name, unexpected, Client};
use crate::error::{ClientError, ProduceError};
use crate::limits::{
    DEFAULT_BATCH_BYTES, DEFAULT_DELIVERY_TIMEOUT_MS, DEFAULT_LINGER_MS,
    DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_IN_FLIGHT_PER_PARTITION, DEFAULT_PRODUCE_TIMEOUT_MS,
    MAX_IN_FLIGHT_PER_PARTITION, RECORD_OVERHEAD_BYTES,
};
use crate::partitioner::{partition_for_key, StickyPartitioner};
use crate::retry::random_u64;
use crate::wire::messages::{Acks, ProduceRequest};
use crate::wire::record_batch::{next_sequence, set_producer_stamp, Compression, Header};
use crate::wire::{ProducerStamp, Record, Request, Response, WireError};

/// A record's acknowledgement: the partition it went to and its offset there.
pub type Delivery = (u32, u64);

#[derive(Debug, Clone, Copy)]
pub struct ProducerConfig {
    /// How long a batch waits for more records after its first (0 = send as soon as possible;
    /// records that arrive while a batch is in flight still batch up).
    pub linger_ms: u64,
    /// Target batch size; a batch closes when the next record would not fit. A record larger
    /// than this gets a batch of its own (up to `max_record_batch_bytes`).
    pub batch_bytes: u64,
    /// Batches of one partition in flight at once (at most 5). More than one only with
    /// idempotence: its sequence numbers let the leader put a batch that overtook its
    /// predecessor (separate streams, or a retry) back in order; without idempotence the
    /// producer sends one at a time, since a retry could reorder the partition.
    pub max_in_flight_per_partition: u32,
    /// Bound on the keys and values buffered and in flight (plus [`RECORD_OVERHEAD_BYTES`] each).
    pub max_buffered_bytes: u64,
    pub acks: Acks,
    /// How long a leader may wait for the commit of one produce request.
    pub request_timeout_ms: u32,
    /// Bound on a record's whole life in the producer: batching, retries, leader changes.
    pub delivery_timeout_ms: u64,
    /// Exactly-once delivery per partition across retries (producer id + sequence numbers).
    pub idempotence: bool,
    /// The codec each batch's records are compressed with (the broker stores them compressed;
    /// consumers decompress). A batch that would not shrink goes uncompressed.
    pub compression: Compression,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger_ms: DEFAULT_LINGER_MS,
            // With one batch in flight per partition, throughput is what one round trip can
            // carry: a big ceiling lets a busy partition send everything that waited during
            // the last round at once, while a quiet one still sends after `linger_ms`.
            batch_bytes: DEFAULT_BATCH_BYTES,
            max_in_flight_per_partition: DEFAULT_MAX_IN_FLIGHT_PER_PARTITION,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            acks: Acks::Committed,
            request_timeout_ms: DEFAULT_PRODUCE_TIMEOUT_MS,
            delivery_timeout_ms: DEFAULT_DELIVERY_TIMEOUT_MS,
            idempotence: true,
            compression: Compression::None,
        }
    }
}

/// A record to produce, with the optional choices `send` does not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    pub topic: String,
    /// `None`: chosen by the partitioner (key hash, or sticky round-robin without a key).
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    /// `None` is a null value (a tombstone), distinct from an empty one.
    pub value: Option<Bytes>,
    /// Application headers in order; a header value may be null.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
    /// `None`: now (milliseconds since the Unix epoch).
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// `value` is a `Bytes` or an `Option<Bytes>` (`None`: a null value).
    pub fn new(
        topic: impl Into<String>,
        key: Option<Bytes>,
        value: impl Into<Option<Bytes>>,
    ) -> Self {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key,
            value: value.into(),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    pub fn with_header(mut self, key: Bytes, value: Option<Bytes>) -> Self {
        self.headers.push((key, value));
        self
    }

    pub fn with_timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Resolves to the record's `(partition, offset)` once its batch is acknowledged.
#[must_use = "a send's outcome is only known by awaiting its future"]
pub struct DeliveryFuture {
    state: DeliveryState,
}

enum DeliveryState {
    Done(Option<ProduceError>),
    Waiting(oneshot::Receiver<Result<Delivery, ProduceError>>),
}

impl Future for DeliveryFuture {
    type Output = Result<Delivery, ProduceError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            DeliveryState::Done(error) => {
                Poll::Ready(Err(error.take().unwrap_or(ProduceError::Closed)))
            }
            DeliveryState::Waiting(receiver) => Pin::new(receiver)
                .poll(context)
                .map(|result| result.unwrap_or(Err(ProduceError::Closed))),
        }
    }
}

/// Batching producer. Dropping it sends what is buffered in the background (within the
/// delivery timeout); [`Producer::close`] does the same and waits.
pub struct Producer {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

struct Shared {
    config: ProducerConfig,
    buffered_bytes: AtomicU64,
    /// Signalled whenever buffered bytes are released.
    space: Notify,
}

enum Command {
    Send(PendingRecord),
    Flush(oneshot::Sender<()>),
}

struct PendingRecord {
    record: ProducerRecord,
    reply: Reply,
}

/// What answers one record: its channel and the bytes it holds in the buffer.
struct Reply {
    sender: oneshot::Sender<Result<Delivery, ProduceError>>,
    charged_bytes: u64,
}

impl Producer {
    /// A producer on `client` with the default [`ProducerConfig`].
    pub fn new(client: Client) -> Producer {
        Producer::with_config(client, ProducerConfig::default())
    }

    /// Must be called inside a tokio runtime: it starts the producer's task.
    pub fn with_config(client: Client, config: ProducerConfig) -> Producer {
        let shared = Arc::new(Shared {
            config,
            buffered_bytes: AtomicU64::new(0),
            space: Notify::new(),
        });
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(client, shared.clone(), receiver));
        Producer { commands, shared }
    }

    /// Sends `value` (with `key`) to `topic`, partitioned by key hash or sticky round-robin.
    pub fn send(&self, topic: &str, key: Option<Bytes>, value: Bytes) -> DeliveryFuture {
        self.send_record(ProducerRecord::new(topic, key, value))
    }

    /// Sends a record with every option (explicit partition, timestamp).
    pub fn send_record(&self, record: ProducerRecord) -> DeliveryFuture {
        let charged_bytes = RECORD_OVERHEAD_BYTES
            + record.value.as_ref().map_or(0, |value| value.len() as u64)
            + record.key.as_ref().map_or(0, |key| key.len() as u64)
            + record
                .headers
                .iter()
                .map(|(key, value)| {
                    key.len() as u64 + value.as_ref().map_or(0, |value| value.len() as u64)
                })
                .sum::<u64>();
        let limit = self.shared.config.max_buffered_bytes;
        let previous = self
            .shared
            .buffered_bytes
            .fetch_add(charged_bytes, Ordering::AcqRel);
        // A buffer below its limit takes one more record whatever its size, so one sender that
        // waits for capacity before each send is never refused, and the buffer overshoots by at
        // most one record per concurrent sender.
        if previous >= limit {
            self.shared.release(charged_bytes);
            return DeliveryFuture {
                state: DeliveryState::Done(Some(ProduceError::BufferFull {
                    buffered_bytes: previous,
                })),
            };
        }
        let (sender, receiver) = oneshot::channel();
        let pending = PendingRecord {
            record,
            reply: Reply {
                sender,
                charged_bytes,
            },
        };
        match self.commands.send(Command::Send(pending)) {
            Ok(()) => DeliveryFuture {
                state: DeliveryState::Waiting(receiver),
            },
            Err(mpsc::error::SendError(Command::Send(pending))) => {
                self.shared.release(pending.reply.charged_bytes);
                DeliveryFuture {
                    state: DeliveryState::Done(Some(ProduceError::Closed)),
                }
            }
            Err(_) => unreachable!("the failed command is the one sent"),
        }
    }

    /// Waits until the buffer holds less than `max_buffered_bytes`, so the next `send` is
    /// accepted (unless other tasks fill the buffer first).
    pub async fn wait_for_capacity(&self) {
        loop {
            let notified = self.shared.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.buffered_bytes.load(Ordering::Acquire)
                < self.shared.config.max_buffered_bytes
            {
                return;
            }
            notified.await;
        }
    }

    /// Bytes buffered or in flight now.
    pub fn buffered_bytes(&self) -> u64 {
        self.shared.buffered_bytes.load(Ordering::Acquire)
    }

    /// Sends everything buffered now without waiting for linger, and waits until all of it is
    /// acknowledged or failed. Records sent meanwhile may be included.
    pub async fn flush(&self) {
        let (sender, receiver) = oneshot::channel();
        if self.commands.send(Command::Flush(sender)).is_ok() {
            let _ = receiver.await;
        }
    }

    /// Flushes, then stops the producer.
    pub async fn close(self) {
        self.flush().await;
    }
}

impl Shared {
    fn release(&self, bytes: u64) {
        self.buffered_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.space.notify_waiters();
    }
}

/// A batch's send finished: its partition may send the next one.
struct Completion {
    topic_partition: TopicPartition,
    batch_id: u64,
    /// The batch failed for good: its sequence numbers may be a hole in the partition.
    failed: bool,
}

/// The idempotent producer's identity and each partition's next sequence number.
struct Idempotence {
    producer_id: u64,
    epoch: u16,
    sequences: HashMap<TopicPartition, u32>,
}

impl Idempotence {
    async fn init(client: &Client) -> Result<Idempotence, ClientError> {
        let frame = client.request(&Request::InitProducerId).await?;
        let Response::InitProducerId(response) = frame.header else {
            return Err(unexpected(&Request::InitProducerId, &frame.header));
        };
        debug!(producer_id = response.producer_id, "idempotent producer id");
        Ok(Idempotence {
            producer_id: response.producer_id,
            epoch: response.producer_epoch,
            sequences: HashMap::new(),
        })
    }

    /// Stamps `batch` with the next sequence of its partition.
    fn stamp(
        &mut self,
        topic_partition: &TopicPartition,
        batch: Bytes,
        count: usize,
    ) -> Result<Bytes, WireError> {
        let sequence = self.sequences.entry(topic_partition.clone()).or_insert(0);
        // The builder's buffer is this batch's alone: the stamp is written in place.
        let mut bytes = batch
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        set_producer_stamp(
            &mut bytes,
            ProducerStamp {
                producer_id: self.producer_id,
                producer_epoch: self.epoch,
                base_sequence: *sequence,
            },
        )?;
        *sequence = next_sequence(*sequence, count as u32);
        Ok(bytes.freeze())
    }
}

/// The producer's task: takes records in `send` order, batches them, dispatches sendable
/// batches, and answers flushes. Ends once the producer is dropped and everything is done.
async fn run(client: Client, shared: Arc<Shared>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let config = shared.config;
    let mut accumulator: Accumulator<Reply> = Accumulator::new(BatchConfig {
        linger: Duration::from_millis(config.linger_ms),
        batch_bytes: config.batch_bytes,
        compression: config.compression,
        limits: client.config().limits,
        max_in_flight: if config.idempotence {
            config
                .max_in_flight_per_partition
                .clamp(1, MAX_IN_FLIGHT_PER_PARTITION)
        } else {
            1
        },
    });
    let mut sticky = StickyPartitioner::default();
    // Every batch that exists (open, queued or in flight), by id: flushes wait on these.
    let mut outstanding: BTreeSet<u64> = BTreeSet::new();
    let mut flush_waiters: Vec<(u64, oneshot::Sender<()>)> = Vec::new();
    let (completions_sender, mut completions) = mpsc::unbounded_channel::<Completion>();
    let mut producer_dropped = false;
    let mut idempotence: Option<Idempotence> = None;
    // Batches dispatched and not completed, over all partitions.
    let mut in_flight = 0usize;
    // A batch failed for good: the batches still in flight under the old producer id may yet
    // land (after the failed one, if it landed after all), so nothing goes out under a new
    // producer id until they are done; otherwise a later batch could overtake them.
    let mut restarting = false;

    loop {
        // While restarting, only completions (and new records) matter: no deadline to wake on.
        let deadline = if restarting && in_flight > 0 {
            None
        } else {
            accumulator.next_deadline()
        };
        tokio::select! {
            command = commands.recv(), if !producer_dropped => match command {
                Some(Command::Send(pending)) => {
                    let id = append(&client, &shared, &mut accumulator, &mut sticky, pending).await;
                    outstanding.extend(id);
                }
                Some(Command::Flush(reply)) => flush_waiters.push((accumulator.flush(), reply)),
                None => {
                    producer_dropped = true;
                    accumulator.flush();
                }
            },
            Some(completion) = completions.recv() => {
                accumulator.complete(&completion.topic_partition);
                outstanding.remove(&completion.batch_id);
                in_flight -= 1;
                if completion.failed && idempotence.is_some() {
                    // Start over under a new producer id rather than send after a hole.
                    idempotence = None;
                    restarting = true;
                }
            }
            () = sleep_until(deadline), if deadline.is_some() => {}
        }
        if restarting && in_flight > 0 {
            continue;
        }
        restarting = false;
        for mut batch in accumulator.drain(Instant::now()) {
            in_flight += 1;
            if config.idempotence && batch.bytes.is_ok() {
                if idempotence.is_none() {
                    match Idempotence::init(&client).await {
                        Ok(state) => idempotence = Some(state),
                        Err(error) => {
                            fail_batch(&shared, batch, error.into(), &completions_sender);
                            continue;
                        }
                    }
                }
                if let (Some(state), Ok(bytes)) = (&mut idempotence, &mut batch.bytes) {
                    // Taken, not cloned, so the stamp needs no copy of the batch.
                    let unstamped = std::mem::take(bytes);
                    let count = batch.tokens.len();
                    batch.bytes = state.stamp(&batch.topic_partition, unstamped, count);
                }
            }
            if let Ok(partitions) = client.partition_count(&batch.topic_partition.topic).await {
                sticky.batch_closed(
                    &batch.topic_partition.topic,
                    batch.topic_partition.partition,
                    partitions,
                );
            }
            tokio::spawn(send_batch(
                client.clone(),
                shared.clone(),
                batch,
                completions_sender.clone(),
            ));
        }
        let oldest = outstanding.first().copied().unwrap_or(u64::MAX);
        flush_waiters.retain_mut(|(target, _)| oldest < *target);
        // retain_mut dropped the finished waiters' senders: dropping one wakes its flush().
        if producer_dropped && accumulator.is_idle() {
            debug!("producer stopped");
            return;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Partitions a record and appends it; answers it at once if it cannot be sent. Returns the id
/// of the batch that took it.
async fn append(
    client: &Client,
    shared: &Shared,
    accumulator: &mut Accumulator<Reply>,
    sticky: &mut StickyPartitioner,
    pending: PendingRecord,
) -> Option<u64> {
    let PendingRecord { record, reply } = pending;
    let fail = |reply: Reply, error: ProduceError| {
        shared.release(reply.charged_bytes);
        let _ = reply.sender.send(Err(error));
        None
    };
    if let Err(error) = check_topic_name(&record.topic) {
        return fail(reply, error.into());
    }
    let partitions = match client.partition_count(&record.topic).await {
        Ok(partitions) => partitions,
        Err(error) => return fail(reply, error.into()),
    };
    let partition = match (record.partition, &record.key) {
        (Some(partition), _) if partition >= partitions => {
            let error = ClientError::UnknownPartition {
                topic: record.topic.clone(),
                partition,
                partitions,
            };
            return fail(reply, error.into());
        }
        (Some(partition), _) => partition,
        (None, Some(key)) => partition_for_key(key, partitions),
        (None, None) => sticky.current(&record.topic, partitions, random_u64()),
    };
    let topic_partition = TopicPartition {
        topic: Arc::from(record.topic.as_str()),
        partition,
    };
    let headers: Vec<Header<'_>> = record
        .headers
        .iter()
        .map(|(key, value)| Header {
            key,
            value: value.as_deref(),
        })
        .collect();
    let wire_record = Record {
        timestamp_ms: record.timestamp_ms.unwrap_or_else(now_ms),
        key: record.key.as_deref(),
        value: record.value.as_deref(),
        headers: &headers,
    };
    match accumulator.append(&topic_partition, &wire_record, reply, Instant::now()) {
        Ok((batch_id, appended)) => {
            if appended.closed_a_batch && record.partition.is_none() && record.key.is_none() {
                sticky.batch_closed(&record.topic, partition, partitions);
            }
            Some(batch_id)
        }
        Err((
            error @ (WireError::MessageTooLarge { .. } | WireError::RecordBatchTooLarge { .. }),
            reply,
        )) => fail(reply, ProduceError::MessageTooLarge(error)),
        Err((error, reply)) => fail(reply, ClientError::Encode(error).into()),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Answers every record of a batch that cannot be sent with `error`.
fn fail_batch(
    shared: &Shared,
    batch: ClosedBatch<Reply>,
    error: ProduceError,
    completions: &mpsc::UnboundedSender<Completion>,
) {
    let mut released = 0;
    for reply in batch.tokens {
        released += reply.charged_bytes;
        let _ = reply.sender.send(Err(error.clone()));
    }
    shared.release(released);
    let _ = completions.send(Completion {
        topic_partition: batch.topic_partition,
        batch_id: batch.id,
        failed: true,
    });
}

/// Sends one batch (retrying inside the client), answers its records, reports completion.
async fn send_batch(
    client: Client,
    shared: Arc<Shared>,
    batch: ClosedBatch<Reply>,
    completions: mpsc::UnboundedSender<Completion>,
) {
    let ClosedBatch {
        topic_partition,
        id,
        bytes,
        tokens,
        opened_at,
    } = batch;
    let config = shared.config;
    let result = match bytes {
        Err(error) => Err(ProduceError::Client(ClientError::Encode(error))),
        Ok(bytes) => {
            let deadline = opened_at + Duration::from_millis(config.delivery_timeout_ms);
            let remaining = deadline.saturating_duration_since(Instant::now());
            let produce = produce(&client, &config, &topic_partition, bytes, tokens.len());
            match tokio::time::timeout(remaining, produce).await {
                Ok(result) => result,
                Err(_) => Err(ProduceError::DeliveryTimeout {
                    timeout_ms: config.delivery_timeout_ms,
                }),
            }
        }
    };
    let mut released = 0;
    for (index, reply) in tokens.into_iter().enumerate() {
        released += reply.charged_bytes;
        let answer = match &result {
            Ok(base_offset) => Ok((topic_partition.partition, base_offset + index as u64)),
            Err(error) => Err(error.clone()),
        };
        let _ = reply.sender.send(answer);
    }
    shared.release(released);
    let _ = completions.send(Completion {
        topic_partition,
        batch_id: id,
        failed: result.is_err(),
    });
}

/// One produce request through the client's leader routing; returns the batch's base offset.
async fn produce(
    client: &Client,
    config: &ProducerConfig,
    topic_partition: &TopicPartition,
    batch: Bytes,
    count: usize,
) -> Result<u64, ProduceError> {
    let request = Request::Produce(ProduceRequest {
        topic: topic_partition.topic.to_string(),
        partition: topic_partition.partition,
        acks: config.acks,
        timeout_ms: config.request_timeout_ms,
    });
    // The broker may take its whole commit timeout; the network gets the client's on top.
    let timeout =
        client.request_timeout() + Duration::from_millis(u64::from(config.request_timeout_ms));
    let frame = client
        .request_leader(
            &topic_partition.topic,
            topic_partition.partition,
            &request,
            batch,
            timeout,
        )
        .await?;
    let Response::Produce(response) = frame.header else {
        return Err(unexpected(&request, &frame.header).into());
    };
    check_produce_response(response.base_offset, response.last_offset, count)?;
    Ok(response.base_offset)
}

/// The acknowledged offsets must cover exactly the batch's records.
fn check_produce_response(
    base_offset: u64,
    last_offset: u64,
    count: usize,
) -> Result<(), ClientError> {
    let expected_last = (count as u64)
        .checked_sub(1)
        .and_then(|delta| base_offset.checked_add(delta));
    if expected_last != Some(last_offset) {
        return Err(ClientError::protocol(
            "partition leader",
            format!(
                "produce acknowledged offsets {base_offset}..={last_offset} for {count} records"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledged_offsets_must_match_the_record_count() {
        assert!(check_produce_response(10, 12, 3).is_ok());
        assert!(check_produce_response(0, 0, 1).is_ok());
        assert!(check_produce_response(10, 11, 3).is_err());
        assert!(check_produce_response(u64::MAX, u64::MAX, 2).is_err());
        assert!(check_produce_response(5, 5, 0).is_err());
    }

    #[test]
    fn stamping_writes_the_next_sequences_in_place() {
        use crate::wire::{Limits, RecordBatchBuilder, RecordBatchView};
        let limits = Limits::default();
        let unstamped = |values: &[&str]| {
            let mut builder = RecordBatchBuilder::new(&limits, 1 << 16);
            for value in values {
                builder
                    .append(&Record {
                        timestamp_ms: 1,
                        key: None,
                        value: Some(value.as_bytes()),
                        headers: &[],
                    })
                    .unwrap();
            }
            builder.finish().unwrap()
        };
        let mut state = Idempotence {
            producer_id: 7,
            epoch: 0,
            sequences: HashMap::new(),
        };
        let partition = TopicPartition {
            topic: Arc::from("t"),
            partition: 0,
        };
        let first = unstamped(&["a", "b"]);
        let buffer = first.as_ptr();
        let stamped = state.stamp(&partition, first, 2).unwrap();
        assert_eq!(
            stamped.as_ptr(),
            buffer,
            "a batch nobody else holds is not copied"
        );
        let view = RecordBatchView::parse(stamped).expect("the CRC covers the stamp");
        assert_eq!(view.producer().producer_id, 7);
        assert_eq!(view.producer().base_sequence, 0);
        // A batch still shared elsewhere is copied, and sequences continue.
        let second = unstamped(&["c"]);
        let _other_holder = second.clone();
        let stamped = state.stamp(&partition, second, 1).unwrap();
        let view = RecordBatchView::parse(stamped).expect("valid batch");
        assert_eq!(view.producer().base_sequence, 2);
    }
}
