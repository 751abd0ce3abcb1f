//! Which partition a produced record goes to (docs/CLIENT.md "Producer"):
//!
//! - an explicit partition, if the caller gave one;
//! - else, with a key: `(murmur2(key) & 0x7fff_ffff) % partitions`, Kafka's default
//!   partitioner bit for bit (same seed `0x9747b28c`, same mixing), so a key lands on the
//!   partition a Kafka producer would pick for it. Stable across processes, versions and
//!   platforms: the test vectors below are Kafka's own;
//! - else (no key): "sticky" round-robin per batch: every keyless record goes to the topic's
//!   current sticky partition until the batch there is closed (full or sent), then the topic
//!   moves to the next partition. Fewer, fuller batches than per-record round-robin, and still
//!   an even spread over time. The first sticky partition is chosen at random so that many
//!   producers do not all start on partition 0.

use std::collections::HashMap;

/// Kafka's murmur2 (32-bit MurmurHash2, seed `0x9747b28c`), as `org.apache.kafka.common.utils.
/// Utils.murmur2` computes it.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut hash = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        hash = hash.wrapping_mul(M);
        hash ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        hash ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        hash ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        hash ^= u32::from(tail[0]);
        hash = hash.wrapping_mul(M);
    }
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(M);
    hash ^= hash >> 15;
    hash
}

/// The partition of a keyed record among `partitions` (> 0).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// The sticky choice for keyless records, per topic.
#[derive(Debug, Default)]
pub(crate) struct StickyPartitioner {
    current: HashMap<String, u32>,
}

impl StickyPartitioner {
    /// The partition keyless records of `topic` go to now; `random` picks the first one.
    pub(crate) fn current(&mut self, topic: &str, partitions: u32, random: u64) -> u32 {
        assert!(partitions > 0, "a topic has at least one partition");
        let current = self
            .current
            .entry(topic.to_string())
            .or_insert((random % u64::from(partitions)) as u32);
        if *current >= partitions {
            // The topic's partition count changed under us: start over inside the range.
            *current %= partitions;
        }
        *current
    }

    /// The batch on `topic`/`partition` was closed: if keyless records were sticking to it,
    /// they move on to the next partition.
    pub(crate) fn batch_closed(&mut self, topic: &str, partition: u32, partitions: u32) {
        if let Some(current) = self.current.get_mut(topic) {
            if *current == partition && partitions > 0 {
                *current = (partition + 1) % partitions;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `UtilsTest.testMurmur2` vectors (Java ints, so negative values are the same bits).
    #[test]
    fn murmur2_matches_kafka() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, expected) in cases {
            assert_eq!(
                murmur2(data) as i32,
                *expected,
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn keyed_records_always_land_on_the_same_partition_in_range() {
        for partitions in [1, 2, 3, 7, 64] {
            for key in [&b""[..], b"k", b"user-42", b"\xff\x00\x80"] {
                let partition = partition_for_key(key, partitions);
                assert!(partition < partitions);
                assert_eq!(partition, partition_for_key(key, partitions));
            }
        }
        // Pinned: a change here moves every keyed record of every user to another partition.
        assert_eq!(
            partition_for_key(b"foobar", 10),
            (((-790_332_482i32) as u32) & 0x7fff_ffff) % 10
        );
    }

    #[test]
    fn keyless_records_stick_until_the_batch_closes_then_rotate() {
        let mut sticky = StickyPartitioner::default();
        assert_eq!(
            sticky.current("t", 3, 4),
            1,
            "first pick: random % partitions"
        );
        assert_eq!(sticky.current("t", 3, 99), 1, "sticks");
        sticky.batch_closed("t", 0, 3);
        assert_eq!(
            sticky.current("t", 3, 0),
            1,
            "another partition's batch does not move it"
        );
        sticky.batch_closed("t", 1, 3);
        assert_eq!(sticky.current("t", 3, 0), 2);
        sticky.batch_closed("t", 2, 3);
        assert_eq!(sticky.current("t", 3, 0), 0, "wraps around");
        assert_eq!(sticky.current("u", 1, 12345), 0, "topics are independent");
        assert_eq!(
            sticky.current("t", 1, 0),
            0,
            "a shrunk count stays in range"
        );
    }
}
