//! The producer's batching logic, pure: records go into one open batch per partition; a batch
//! closes when the next record does not fit `batch_bytes` and becomes sendable once closed, or
//! once it has lingered `linger` since its first record, or when a flush asks for everything.
//! Batches of one partition leave in the order they were opened, and at most
//! `max_in_flight` of them are out at once (1 by default: with retries and no idempotence yet,
//! that is what keeps a partition's order).
//!
//! Time is an argument (`now`), never read here, so the linger rules are unit-tested. Each
//! record carries a caller token (the producer's reply channel) that comes back with its batch,
//! in record order: token `i` of a batch answers for offset `base_offset + i`.
//!
//! ```text
//!   append ──► open batch ──(full: next record does not fit)──► closed queue ──► drain ──► in flight
//!                  │                                              ▲                          │
//!                  └──(linger elapsed, or flush)─────────────────┘      complete() ◄────────┘
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::wire::record_batch::Compression;
use crate::wire::{Limits, ProducerStamp, Record, RecordBatchBuilder, WireError};

/// A topic partition, the unit of batching and ordering.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: u32,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchConfig {
    pub linger: Duration,
    pub batch_bytes: u64,
    pub limits: Limits,
    pub max_in_flight: u32,
    pub compression: Compression,
}

/// A batch ready to send (or that failed to finish), with its records' tokens in order.
#[derive(Debug)]
pub(crate) struct ClosedBatch<T> {
    pub topic_partition: TopicPartition,
    pub id: u64,
    pub bytes: Result<Bytes, WireError>,
    pub tokens: Vec<T>,
    /// When the batch's first record arrived (for the delivery timeout).
    pub opened_at: Instant,
}

#[derive(Debug)]
struct OpenBatch<T> {
    id: u64,
    builder: RecordBatchBuilder,
    tokens: Vec<T>,
    opened_at: Instant,
}

#[derive(Debug)]
struct PartitionQueue<T> {
    closed: VecDeque<ClosedBatch<T>>,
    open: Option<OpenBatch<T>>,
    in_flight: u32,
}

impl<T> Default for PartitionQueue<T> {
    fn default() -> Self {
        PartitionQueue {
            closed: VecDeque::new(),
            open: None,
            in_flight: 0,
        }
    }
}

/// What `append` did besides taking the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    /// The partition's previous open batch was full and is now closed.
    pub closed_a_batch: bool,
}

#[derive(Debug)]
pub(crate) struct Accumulator<T> {
    config: BatchConfig,
    partitions: HashMap<TopicPartition, PartitionQueue<T>>,
    next_batch_id: u64,
    /// Batches with an id below this are sendable regardless of linger (a flush asked).
    flush_below: u64,
}

impl<T> Accumulator<T> {
    pub(crate) fn new(config: BatchConfig) -> Self {
        Accumulator {
            config,
            partitions: HashMap::new(),
            next_batch_id: 0,
            flush_below: 0,
        }
    }

    /// Adds a record to `topic_partition`'s open batch, closing that batch first if the record
    /// does not fit. A record that can never be sent (over `max_message_bytes`, or a timestamp
    /// the batch cannot express) is refused with its token. Returns the id of the batch that
    /// took the record.
    pub(crate) fn append(
        &mut self,
        topic_partition: &TopicPartition,
        record: &Record<'_>,
        token: T,
        now: Instant,
    ) -> Result<(u64, Appended), (WireError, T)> {
        let queue = self.partitions.entry(topic_partition.clone()).or_default();
        let mut closed_a_batch = false;
        for _ in 0..2 {
            let open = queue.open.get_or_insert_with(|| {
                let id = self.next_batch_id;
                self.next_batch_id += 1;
                OpenBatch {
                    id,
                    builder: RecordBatchBuilder::new(&self.config.limits, self.config.batch_bytes)
                        .with_producer(ProducerStamp::NONE)
                        .with_compression(self.config.compression),
                    tokens: Vec::new(),
                    opened_at: now,
                }
            });
            match open.builder.append(record) {
                Ok(_) => {
                    open.tokens.push(token);
                    return Ok((open.id, Appended { closed_a_batch }));
                }
                Err(WireError::BatchFull { .. }) if !open.builder.is_empty() => {
                    let full = queue.open.take().expect("open batch present");
                    queue.closed.push_back(close(topic_partition, full));
                    closed_a_batch = true;
                }
                Err(error) => {
                    if open.builder.is_empty() {
                        // Do not leave an empty batch behind: it would never close.
                        queue.open = None;
                    }
                    if queue.open.is_none() && queue.closed.is_empty() && queue.in_flight == 0 {
                        self.partitions.remove(topic_partition);
                    }
                    return Err((error, token));
                }
            }
        }
        unreachable!("a record refused by an empty batch returns an error above")
    }

    /// Makes every batch that exists now sendable at once (closing open ones as they are
    /// drained). Returns the flush target: the flush is done when no batch with a smaller id
    /// remains (queued or in flight).
    pub(crate) fn flush(&mut self) -> u64 {
        self.flush_below = self.next_batch_id;
        self.flush_below
    }

    /// Takes the batches that may be sent now, oldest first per partition, up to each
    /// partition's in-flight limit, and counts them as in flight.
    pub(crate) fn drain(&mut self, now: Instant) -> Vec<ClosedBatch<T>> {
        let mut ready = Vec::new();
        for (topic_partition, queue) in &mut self.partitions {
            while queue.in_flight < self.config.max_in_flight {
                if let Some(batch) = queue.closed.pop_front() {
                    queue.in_flight += 1;
                    ready.push(batch);
                    continue;
                }
                let lingered = queue.open.as_ref().is_some_and(|open| {
                    now.saturating_duration_since(open.opened_at) >= self.config.linger
                        || open.id < self.flush_below
                });
                if !lingered {
                    break;
                }
                let open = queue.open.take().expect("checked above");
                queue.in_flight += 1;
                ready.push(close(topic_partition, open));
            }
        }
        // Oldest first across partitions too: fair when many partitions are ready at once.
        ready.sort_by_key(|batch| batch.id);
        ready
    }

    /// A batch of `topic_partition` is no longer in flight (acknowledged or failed for good).
    pub(crate) fn complete(&mut self, topic_partition: &TopicPartition) {
        if let Some(queue) = self.partitions.get_mut(topic_partition) {
            debug_assert!(queue.in_flight > 0, "completion without a batch in flight");
            queue.in_flight = queue.in_flight.saturating_sub(1);
            if queue.in_flight == 0 && queue.open.is_none() && queue.closed.is_empty() {
                self.partitions.remove(topic_partition);
            }
        }
    }

    /// When the next open batch finishes lingering, among partitions that could send it.
    /// `None`: nothing is waiting on time (only on completions or new records).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.partitions
            .values()
            .filter(|queue| queue.in_flight < self.config.max_in_flight && queue.closed.is_empty())
            .filter_map(|queue| queue.open.as_ref())
            .map(|open| open.opened_at + self.config.linger)
            .min()
    }

    /// No record is waiting to be sent or in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.partitions.is_empty()
    }
}

fn close<T>(topic_partition: &TopicPartition, open: OpenBatch<T>) -> ClosedBatch<T> {
    ClosedBatch {
        topic_partition: topic_partition.clone(),
        id: open.id,
        bytes: open.builder.finish(),
        tokens: open.tokens,
        opened_at: open.opened_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::RecordBatchView;

    fn config(batch_bytes: u64) -> BatchConfig {
        BatchConfig {
            linger: Duration::from_millis(5),
            batch_bytes,
            limits: Limits::default(),
            max_in_flight: 1,
            compression: Compression::None,
        }
    }

    fn partition(partition: u32) -> TopicPartition {
        TopicPartition {
            topic: Arc::from("t"),
            partition,
        }
    }

    fn record(value: &[u8]) -> Record<'_> {
        Record {
            timestamp_ms: 1_000,
            key: None,
            value: Some(value),
            headers: &[],
        }
    }

    #[test]
    fn a_batch_waits_for_linger_then_leaves_with_its_tokens_in_order() {
        let start = Instant::now();
        let mut accumulator = Accumulator::new(config(16 * 1024));
        for token in 0..3 {
            accumulator
                .append(&partition(0), &record(b"v"), token, start)
                .unwrap();
        }
        assert!(accumulator
            .drain(start + Duration::from_millis(4))
            .is_empty());
        assert_eq!(
            accumulator.next_deadline(),
            Some(start + Duration::from_millis(5))
        );
        let ready = accumulator.drain(start + Duration::from_millis(5));
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].tokens, [0, 1, 2]);
        let batch = RecordBatchView::parse(ready[0].bytes.clone().unwrap()).unwrap();
        assert_eq!(batch.count(), 3);
        assert_eq!(accumulator.next_deadline(), None);
        assert!(!accumulator.is_idle(), "in flight until completed");
        accumulator.complete(&partition(0));
        assert!(accumulator.is_idle());
    }

    #[test]
    fn a_full_batch_closes_and_is_sendable_before_linger() {
        let start = Instant::now();
        // Header 61 bytes + 17-byte records: two fit in 100 bytes (95), a third does not (112).
        let mut accumulator = Accumulator::new(config(100));
        let value = [7u8; 10];
        let (first_id, appended) = accumulator
            .append(&partition(0), &record(&value), 0, start)
            .unwrap();
        assert!(!appended.closed_a_batch);
        accumulator
            .append(&partition(0), &record(&value), 1, start)
            .unwrap();
        let (second_id, appended) = accumulator
            .append(&partition(0), &record(&value), 2, start)
            .unwrap();
        assert!(appended.closed_a_batch);
        assert_ne!(first_id, second_id);
        let ready = accumulator.drain(start);
        assert_eq!(
            ready.len(),
            1,
            "the full batch leaves at once, the new one lingers"
        );
        assert_eq!(ready[0].tokens, [0, 1]);
    }

    #[test]
    fn in_flight_limit_holds_later_batches_of_the_partition_back_in_order() {
        let start = Instant::now();
        let later = start + Duration::from_secs(1);
        let mut accumulator = Accumulator::new(config(60));
        // Each 5-byte record fills a 60-byte batch alone.
        for token in 0..3 {
            accumulator
                .append(&partition(0), &record(b"12345"), token, start)
                .unwrap();
        }
        accumulator
            .append(&partition(1), &record(b"x"), 10, start)
            .unwrap();
        let ready = accumulator.drain(later);
        let tokens: Vec<_> = ready.iter().map(|batch| batch.tokens.clone()).collect();
        assert_eq!(tokens, [vec![0], vec![10]], "one per partition in flight");
        assert!(accumulator.drain(later).is_empty());
        accumulator.complete(&partition(0));
        let ready = accumulator.drain(later);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].tokens, [1]);
        accumulator.complete(&partition(0));
        assert_eq!(accumulator.drain(later)[0].tokens, [2]);
    }

    #[test]
    fn flush_sends_open_batches_without_waiting_for_linger() {
        let start = Instant::now();
        let mut accumulator = Accumulator::new(config(16 * 1024));
        let (id, _) = accumulator
            .append(&partition(0), &record(b"a"), 0, start)
            .unwrap();
        let target = accumulator.flush();
        assert!(id < target);
        let ready = accumulator.drain(start);
        assert_eq!(ready.len(), 1);
        // A batch opened after the flush lingers as usual.
        accumulator
            .append(&partition(1), &record(b"b"), 1, start)
            .unwrap();
        assert!(accumulator.drain(start).is_empty());
    }

    #[test]
    fn an_oversized_record_is_refused_with_its_token_and_leaves_nothing_behind() {
        let start = Instant::now();
        let mut accumulator = Accumulator::new(config(16 * 1024));
        let huge = vec![0u8; 2 << 20];
        let (error, token) = accumulator
            .append(&partition(0), &record(&huge), 42, start)
            .unwrap_err();
        assert!(matches!(error, WireError::MessageTooLarge { .. }));
        assert_eq!(token, 42);
        assert!(accumulator.is_idle());
        assert_eq!(accumulator.next_deadline(), None);
        // A big record that fits max_message_bytes gets a batch of its own beyond batch_bytes.
        let big = vec![0u8; 512 * 1024];
        accumulator
            .append(&partition(0), &record(b"small"), 1, start)
            .unwrap();
        let (_, appended) = accumulator
            .append(&partition(0), &record(&big), 2, start)
            .unwrap();
        assert!(appended.closed_a_batch);
        let ready = accumulator.drain(start + Duration::from_secs(1));
        assert_eq!(ready[0].tokens, [1]);
    }

    /// One step of a random producer schedule.
    #[derive(Debug, Clone)]
    enum Step {
        Append { partition: u32, value_bytes: usize },
        Advance { millis: u64 },
        Complete { partition: u32 },
        Flush,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..3u32, 0..300usize).prop_map(|(partition, value_bytes)| Step::Append { partition, value_bytes }),
            1 => (0..10u64).prop_map(|millis| Step::Advance { millis }),
            1 => (0..3u32).prop_map(|partition| Step::Complete { partition }),
            1 => Just(Step::Flush),
        ]
    }

    proptest::proptest! {
        /// Under any schedule: every record leaves exactly once, in append order per partition,
        /// in batches that respect batch_bytes (a lone record excepted) and the in-flight limit.
        #[test]
        fn records_leave_once_in_order_within_limits(steps in proptest::collection::vec(step(), 1..200)) {
            let batch_bytes = 400;
            let start = Instant::now();
            let mut now = start;
            let mut accumulator =
                Accumulator::new(BatchConfig { max_in_flight: 2, ..config(batch_bytes) });
            let mut appended: Vec<Vec<u64>> = vec![Vec::new(); 3];
            let mut sent: Vec<Vec<u64>> = vec![Vec::new(); 3];
            let mut in_flight = [0u32; 3];
            let mut next_token = 0u64;
            let take = |accumulator: &mut Accumulator<u64>,
                        now: Instant,
                        sent: &mut Vec<Vec<u64>>,
                        in_flight: &mut [u32; 3]| {
                for batch in accumulator.drain(now) {
                    let partition = batch.topic_partition.partition as usize;
                    in_flight[partition] += 1;
                    assert!(in_flight[partition] <= 2, "in-flight limit");
                    let bytes = batch.bytes.expect("batch finishes");
                    let view = RecordBatchView::parse(bytes.clone()).expect("valid batch");
                    assert_eq!(view.count() as usize, batch.tokens.len());
                    assert!(bytes.len() as u64 <= batch_bytes || view.count() == 1, "batch_bytes");
                    sent[partition].extend(batch.tokens);
                }
            };
            for step in steps {
                match step {
                    Step::Append { partition, value_bytes } => {
                        let value = vec![1u8; value_bytes];
                        accumulator
                            .append(&super::tests::partition(partition), &record(&value), next_token, now)
                            .expect("fits");
                        appended[partition as usize].push(next_token);
                        next_token += 1;
                    }
                    Step::Advance { millis } => now += Duration::from_millis(millis),
                    Step::Complete { partition } => {
                        if in_flight[partition as usize] > 0 {
                            in_flight[partition as usize] -= 1;
                            accumulator.complete(&super::tests::partition(partition));
                        }
                    }
                    Step::Flush => {
                        accumulator.flush();
                    }
                }
                take(&mut accumulator, now, &mut sent, &mut in_flight);
            }
            // Drain everything: complete whatever is in flight, flush, repeat.
            for _ in 0..1000 {
                for partition in 0..3u32 {
                    while in_flight[partition as usize] > 0 {
                        in_flight[partition as usize] -= 1;
                        accumulator.complete(&super::tests::partition(partition));
                    }
                }
                accumulator.flush();
                take(&mut accumulator, now, &mut sent, &mut in_flight);
                if accumulator.is_idle() {
                    break;
                }
            }
            proptest::prop_assert!(accumulator.is_idle());
            proptest::prop_assert_eq!(sent, appended);
        }
    }
}
