//! The clients of a chaos run: producers sending uniquely numbered messages at a steady rate,
//! consumers reading their assigned partitions from offset 0 while the faults run, and the
//! final read of every partition after the cluster has healed. Each has its own [`Client`]
//! (its own connections), as separate applications would. Everything they see goes into the
//! history; nothing here judges it.
//!
//! A producer never re-sends a message itself: a failed send is recorded as `fail` (outcome
//! unknown) and the next message gets the next sequence number, so every value in the log
//! names exactly one send. Within a producer, messages cycle over all partitions; sends to one
//! partition keep their order in the SDK (one batch in flight per partition).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_client::{
    Client, ClientConfig, ClientTls, ConsumeError, Consumer, ConsumerConfig, Producer,
    ProducerConfig, ProducerRecord, SeekTo,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::history::{Event, History, MessageId, Stored};
use crate::limits::{
    ASSIGN_ATTEMPTS, ASSIGN_RETRY_INTERVAL, CLIENT_CONNECT_TIMEOUT_MS, CLIENT_REQUEST_TIMEOUT_MS,
    CONNECT_ATTEMPTS, CONNECT_RETRY_INTERVAL, CONSUMER_ERROR_NOTE_INTERVAL, CONSUMER_ERROR_PAUSE,
    CONSUMER_MAX_WAIT_MS, DELIVERY_TIMEOUT_MS, DRAIN_TIMEOUT,
    FINAL_READ_CAUGHT_UP_POLLS_PER_PARTITION, FINAL_READ_MAX_WAIT_MS, LEADER_QUERY_TIMEOUT,
    LEADER_WAIT_INTERVAL, MAX_OUTSTANDING_SENDS, PRODUCER_LINGER_MS, PRODUCE_TIMEOUT_MS,
};

/// The topic partitions of the run, in a fixed order.
pub type Partitions = Arc<Vec<(String, u32)>>;

/// Client settings for a cluster under faults: short request timeouts, so a request stuck on
/// a paused or cut-off node is retried elsewhere well within the delivery timeout.
pub fn client_config() -> ClientConfig {
    ClientConfig {
        request_timeout_ms: CLIENT_REQUEST_TIMEOUT_MS,
        connect_timeout_ms: CLIENT_CONNECT_TIMEOUT_MS,
        ..ClientConfig::default()
    }
}

/// Connects, retrying (bounded) while the cluster is still coming up.
pub async fn connect(bootstrap: &[String], ca: &std::path::Path) -> anyhow::Result<Client> {
    let mut last_error = None;
    for _attempt in 0..CONNECT_ATTEMPTS {
        let tls = ClientTls::from_ca_file(ca)?;
        match Client::connect_with(bootstrap, tls, client_config()).await {
            Ok(client) => return Ok(client),
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(CONNECT_RETRY_INTERVAL).await;
    }
    Err(anyhow::anyhow!(
        "connecting to {bootstrap:?}: {}",
        last_error.map_or_else(String::new, |error| error.to_string())
    ))
}

/// Runs producer `index` at `rate_per_s` messages per second until `stop` turns true, then
/// waits (bounded) for its outstanding sends.
pub async fn run_producer(
    index: u32,
    client: Client,
    partitions: Partitions,
    rate_per_s: u32,
    mut stop: watch::Receiver<bool>,
    history: Arc<History>,
) {
    let producer = Producer::with_config(
        client,
        ProducerConfig {
            linger_ms: PRODUCER_LINGER_MS,
            request_timeout_ms: PRODUCE_TIMEOUT_MS,
            delivery_timeout_ms: DELIVERY_TIMEOUT_MS,
            ..ProducerConfig::default()
        },
    );
    let mut outstanding: JoinSet<(MessageId, String, u32, Result<u64, String>)> = JoinSet::new();
    let mut pending_ids: BTreeMap<MessageId, ()> = BTreeMap::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate_per_s)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let record = |history: &History, result: (MessageId, String, u32, Result<u64, String>)| {
        let (id, topic, partition, outcome) = result;
        history.record(match outcome {
            Ok(offset) => Event::Ack {
                id,
                topic,
                partition,
                offset,
            },
            Err(error) => Event::Fail { id, error },
        });
        id
    };
    let mut seq = 0_u64;
    while !*stop.borrow() {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        while let Some(Ok(result)) = outstanding.try_join_next() {
            pending_ids.remove(&record(&history, result));
        }
        if outstanding.len() >= MAX_OUTSTANDING_SENDS {
            // Backpressure: the cluster is slow (a fault); wait for one answer first.
            if let Some(Ok(result)) = outstanding.join_next().await {
                pending_ids.remove(&record(&history, result));
            }
        }
        let id = MessageId {
            producer: index,
            seq,
        };
        seq += 1;
        let (topic, partition) =
            partitions[(seq as usize + index as usize) % partitions.len()].clone();
        history.record(Event::Send {
            id,
            topic: topic.clone(),
            partition,
        });
        let delivery = producer.send_record(
            ProducerRecord::new(topic.clone(), None, Bytes::from(id.value()))
                .with_partition(partition),
        );
        pending_ids.insert(id, ());
        outstanding.spawn(async move {
            let outcome = match delivery.await {
                Ok((acked_partition, offset)) if acked_partition == partition => Ok(offset),
                Ok((acked_partition, _)) => Err(format!(
                    "acknowledged on partition {acked_partition}, sent to {partition}"
                )),
                Err(error) => Err(error.to_string()),
            };
            (id, topic, partition, outcome)
        });
    }
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while let Ok(Some(Ok(result))) =
        tokio::time::timeout_at(deadline, outstanding.join_next()).await
    {
        pending_ids.remove(&record(&history, result));
    }
    outstanding.abort_all();
    for (id, ()) in pending_ids {
        history.record(Event::Fail {
            id,
            error: "unresolved when the producer stopped".into(),
        });
    }
}

/// Runs consumer `index` over `assignment` from offset 0 until `stop` turns true.
pub async fn run_consumer(
    index: u32,
    client: Client,
    assignment: Vec<(String, u32)>,
    mut stop: watch::Receiver<bool>,
    history: Arc<History>,
) {
    let mut consumer = Consumer::with_config(
        client,
        ConsumerConfig {
            max_wait_ms: CONSUMER_MAX_WAIT_MS,
            ..ConsumerConfig::default()
        },
    );
    for (topic, partition) in &assignment {
        // Bounded: the topic exists (the harness created it before starting clients).
        for _attempt in 0..ASSIGN_ATTEMPTS {
            if consumer.assign(topic, &[*partition]).await.is_ok() {
                break;
            }
            tokio::time::sleep(ASSIGN_RETRY_INTERVAL).await;
        }
        consumer.seek(topic, *partition, SeekTo::Offset(0));
    }
    let mut last_error_note = Instant::now() - Duration::from_secs(60);
    while !*stop.borrow() {
        let polled = tokio::select! {
            polled = consumer.poll() => polled,
            _ = stop.changed() => break,
        };
        match polled {
            Ok(records) => {
                for record in records {
                    history.record(Event::Read {
                        consumer: index,
                        topic: record.topic.to_string(),
                        partition: record.partition,
                        offset: record.offset,
                        stored: Stored::from_value(record.value.as_deref().unwrap_or_default()),
                    });
                }
            }
            // Retention deleted what this consumer had not read yet: go on from the log start,
            // as a Kafka consumer with `auto.offset.reset=earliest` does.
            Err(ConsumeError::OffsetOutOfRange {
                topic,
                partition,
                log_start_offset,
                ..
            }) => {
                consumer.seek(&topic, partition, SeekTo::Offset(log_start_offset));
            }
            Err(error) => {
                if last_error_note.elapsed() > CONSUMER_ERROR_NOTE_INTERVAL {
                    history.note(format!("consumer {index}: {error}"));
                    last_error_note = Instant::now();
                }
                tokio::time::sleep(CONSUMER_ERROR_PAUSE).await;
            }
        }
    }
}

/// What the final read reached: whether every partition got to its high watermark, and the
/// next offset it would have read of each (the high watermark, when complete).
pub struct FinalRead {
    pub complete: bool,
    pub reached: BTreeMap<(String, u32), u64>,
}

/// Reads every partition from offset 0 up to its high watermark (as the leaders report it in
/// fetch answers), recording each message as `final`.
pub async fn read_final(
    client: Client,
    partitions: &[(String, u32)],
    history: &History,
    timeout: Duration,
) -> FinalRead {
    let mut next: BTreeMap<(String, u32), u64> =
        partitions.iter().map(|tp| (tp.clone(), 0)).collect();
    let complete = read_final_into(client, partitions, history, timeout, &mut next).await;
    FinalRead {
        complete,
        reached: next,
    }
}

/// [`read_final`]'s loop; `next` holds the next offset to read of each partition. Returns
/// whether it reached every high watermark in time.
async fn read_final_into(
    client: Client,
    partitions: &[(String, u32)],
    history: &History,
    timeout: Duration,
    next: &mut BTreeMap<(String, u32), u64>,
) -> bool {
    let mut consumer = Consumer::with_config(
        client,
        ConsumerConfig {
            max_wait_ms: FINAL_READ_MAX_WAIT_MS,
            ..ConsumerConfig::default()
        },
    );
    let deadline = Instant::now() + timeout;
    for (topic, partition) in partitions {
        while consumer.assign(topic, &[*partition]).await.is_err() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(ASSIGN_RETRY_INTERVAL).await;
        }
        consumer.seek(topic, *partition, SeekTo::Offset(0));
    }
    // Polls that found every partition at its high watermark, in a row: a couple of them make
    // sure no late commit (a batch of a failed send surviving a leader change) is missed.
    let mut caught_up_polls = 0;
    while Instant::now() < deadline {
        match consumer.poll().await {
            Ok(records) => {
                for record in records {
                    let key = (record.topic.to_string(), record.partition);
                    let expected = next.entry(key).or_default();
                    if record.offset < *expected {
                        continue;
                    }
                    *expected = record.offset + 1;
                    history.record(Event::Final {
                        topic: record.topic.to_string(),
                        partition: record.partition,
                        offset: record.offset,
                        stored: Stored::from_value(record.value.as_deref().unwrap_or_default()),
                    });
                }
            }
            // The log starts later (retention): read from there, and tell the checker, which
            // judges only offsets from there on.
            Err(ConsumeError::OffsetOutOfRange {
                topic,
                partition,
                log_start_offset,
                ..
            }) => {
                history.record(Event::LogStart {
                    topic: topic.clone(),
                    partition,
                    offset: log_start_offset,
                });
                let expected = next.entry((topic.clone(), partition)).or_default();
                *expected = (*expected).max(log_start_offset);
                consumer.seek(&topic, partition, SeekTo::Offset(log_start_offset));
                continue;
            }
            Err(error) => {
                history.note(format!("final read: {error}"));
                tokio::time::sleep(ASSIGN_RETRY_INTERVAL).await;
                continue;
            }
        }
        let caught_up = partitions.iter().all(|(topic, partition)| {
            match consumer.high_watermark(topic, *partition) {
                Some(high_watermark) => next[&(topic.clone(), *partition)] >= high_watermark,
                None => false,
            }
        });
        caught_up_polls = if caught_up { caught_up_polls + 1 } else { 0 };
        if caught_up_polls >= FINAL_READ_CAUGHT_UP_POLLS_PER_PARTITION * partitions.len() {
            return true;
        }
    }
    false
}

/// Who leads each partition, asked of every node: a node only knows the leaders of the
/// partitions it replicates (with 5 nodes and 3 replicas, no single node knows them all).
#[derive(Clone)]
pub struct LeaderView {
    /// One client per node, bootstrapped from that node alone.
    clients: Vec<Client>,
}

impl LeaderView {
    pub async fn connect(bootstrap: &[String], ca: &std::path::Path) -> anyhow::Result<LeaderView> {
        let mut clients = Vec::new();
        for address in bootstrap {
            clients.push(connect(std::slice::from_ref(address), ca).await?);
        }
        Ok(LeaderView { clients })
    }

    /// The leader of each partition of `topic` that some node reports (the first answer wins).
    pub async fn leaders(&self, topic: &str) -> BTreeMap<u32, u64> {
        let mut queries = JoinSet::new();
        for client in &self.clients {
            let admin = keel_client::Admin::new(client.clone());
            let topic = topic.to_string();
            queries.spawn(async move {
                tokio::time::timeout(LEADER_QUERY_TIMEOUT, admin.describe_topic(&topic)).await
            });
        }
        let mut leaders = BTreeMap::new();
        while let Some(answer) = queries.join_next().await {
            let Ok(Ok(Ok(description))) = answer else {
                continue;
            };
            for partition in description.partitions {
                if let Some(leader) = partition.leader {
                    leaders.entry(partition.partition).or_insert(leader);
                }
            }
        }
        leaders
    }

    /// The metadata group's leader, as the first node that knows it reports.
    pub async fn metadata_leader(&self) -> Option<u64> {
        let mut queries = JoinSet::new();
        for client in &self.clients {
            let admin = keel_client::Admin::new(client.clone());
            queries.spawn(async move {
                tokio::time::timeout(LEADER_QUERY_TIMEOUT, admin.cluster_status()).await
            });
        }
        while let Some(answer) = queries.join_next().await {
            let Ok(Ok(Ok(status))) = answer else {
                continue;
            };
            let leader = status
                .partitions
                .iter()
                .find(|group| group.topic.is_none())
                .and_then(|group| group.leader);
            if leader.is_some() {
                return leader;
            }
        }
        None
    }

    /// Waits (bounded by `timeout`) until every partition of every topic has a leader.
    pub async fn wait_for_leaders(&self, topics: &[(String, u32)], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        for (topic, partitions) in topics {
            loop {
                if self.leaders(topic).await.len() as u32 >= *partitions {
                    break;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(LEADER_WAIT_INTERVAL).await;
            }
        }
        true
    }
}
