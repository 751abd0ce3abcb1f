//! The acknowledged-message workload the black-box durability tests share: numbered messages
//! produced to one topic, every acknowledgement recorded, everything read back at the end and
//! checked against the promise (each ack's offset holds its message, offsets dense, producer
//! order per partition, duplicates counted).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_client::{Admin, Client, Consumer, Producer, SeekTo};

pub const TOPIC: &str = "orders";

pub async fn create_topic(client: &Client, partitions: u32) {
    let admin = Admin::new(client.clone());
    admin
        .create_topic(TOPIC, partitions, Some(3))
        .await
        .expect("creating the topic");
    // Every partition has a leader before the load starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let description = admin.describe_topic(TOPIC).await.expect("describe");
        if description.partitions.iter().all(|p| p.leader.is_some()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "partitions without leaders: {description:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn leader_of(client: &Client, partition: u32) -> Option<u64> {
    let admin = Admin::new(client.clone());
    let description = admin.describe_topic(TOPIC).await.ok()?;
    description
        .partitions
        .iter()
        .find(|p| p.partition == partition)
        .and_then(|p| p.leader)
}

/// Acknowledged messages: (partition, offset) -> sequence number.
pub type Acked = BTreeMap<(u32, u64), u64>;

/// Sends `count` messages numbered from `first`, in windows of pipelined sends, calling
/// `between(acked_so_far)` after each window. Returns what was acknowledged and how many sends
/// failed after the producer's retries.
pub async fn produce<F, Fut>(
    producer: &Producer,
    first: u64,
    count: u64,
    mut between: F,
) -> (Acked, u64)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut acked = Acked::new();
    let mut failed = 0;
    let window = 500;
    let mut next = first;
    while next < first + count {
        let end = (next + window).min(first + count);
        let sends: Vec<_> = (next..end)
            .map(|seq| {
                (
                    seq,
                    producer.send(TOPIC, None, Bytes::from(format!("m{seq}"))),
                )
            })
            .collect();
        for (seq, delivery) in sends {
            match delivery.await {
                Ok((partition, offset)) => {
                    let previous = acked.insert((partition, offset), seq);
                    assert!(
                        previous.is_none(),
                        "two acks for partition {partition} offset {offset}"
                    );
                }
                Err(error) => {
                    if failed < 3 {
                        eprintln!("send of m{seq} failed: {error}");
                    }
                    failed += 1;
                }
            }
        }
        next = end;
        between(acked.len()).await;
    }
    (acked, failed)
}

/// Reads every partition from the beginning up to its high watermark, and at least past every
/// acknowledged offset (after a restart a leader's high watermark starts low and catches up once
/// its no-op commits, so the describe answer alone may be behind).
pub async fn consume_all(
    client: &Client,
    partitions: u32,
    acked: &Acked,
) -> HashMap<u32, Vec<(u64, u64)>> {
    let mut consumer = Consumer::new(client.clone());
    let all: Vec<u32> = (0..partitions).collect();
    consumer.assign(TOPIC, &all).await.expect("assign");
    consumer.seek_all(SeekTo::Beginning);
    let admin = Admin::new(client.clone());
    let description = admin.describe_topic(TOPIC).await.expect("describe");
    let mut targets: HashMap<u32, u64> = description
        .partitions
        .iter()
        .map(|p| (p.partition, p.high_watermark))
        .collect();
    for &(partition, offset) in acked.keys() {
        let target = targets.entry(partition).or_default();
        *target = (*target).max(offset + 1);
    }
    let mut read: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = targets.iter().all(|(partition, &hw)| {
            read.get(partition)
                .and_then(|records| records.last())
                .map_or(hw == 0, |&(offset, _)| offset + 1 >= hw)
        });
        if done {
            return read;
        }
        assert!(
            Instant::now() < deadline,
            "consuming did not reach the high watermarks {targets:?}"
        );
        let records = match consumer.poll().await {
            Ok(records) => records,
            Err(error) if error.is_retriable() => continue,
            Err(error) => panic!("consume failed: {error}"),
        };
        for record in records {
            let text = std::str::from_utf8(record.value.as_deref().expect("a value"))
                .expect("utf-8 value");
            let seq: u64 = text
                .trim_start_matches('m')
                .parse()
                .expect("numbered value");
            read.entry(record.partition)
                .or_default()
                .push((record.offset, seq));
        }
    }
}

/// Checks the promise: each ack's offset holds that message; offsets are dense; acked messages
/// appear in producer order per partition. Returns the number of duplicated messages.
pub fn check(acked: &Acked, read: &HashMap<u32, Vec<(u64, u64)>>) -> usize {
    let mut duplicates = 0;
    for (partition, records) in read {
        for (expected, &(offset, _)) in records.iter().enumerate() {
            assert_eq!(
                offset, expected as u64,
                "partition {partition}: offsets not dense"
            );
        }
        let mut seen = std::collections::HashSet::new();
        for &(_, seq) in records {
            if !seen.insert(seq) {
                duplicates += 1;
            }
        }
    }
    for (&(partition, offset), &seq) in acked {
        let records = read.get(&partition).map(Vec::as_slice).unwrap_or(&[]);
        let found = records.get(offset as usize).map(|&(_, s)| s);
        assert_eq!(
            found,
            Some(seq),
            "acked message m{seq} is not at partition {partition} offset {offset}"
        );
    }
    // Producer order within a partition: acked sequence numbers grow with their offsets.
    let mut last: HashMap<u32, u64> = HashMap::new();
    for (&(partition, _), &seq) in acked {
        if let Some(&previous) = last.get(&partition) {
            assert!(
                seq > previous,
                "partition {partition}: m{seq} acked after m{previous} but stored before it"
            );
        }
        last.insert(partition, seq);
    }
    duplicates
}
