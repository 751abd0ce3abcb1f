//! The idempotent producer's duplicate table (docs/DECISIONS.md "Idempotent produce"): per
//! producer id, its epoch and the sequence and offset ranges of its last [`RETAINED_BATCHES`]
//! batches.
//!
//! The table is built by applying committed batches, so every replica holds the same one and a
//! new leader inherits it; after a restart it is rebuilt by replaying the log (partitions are
//! not compacted yet; with retention it moves into the partition snapshot). The leader checks a
//! new batch against the table plus the batches it has proposed but not yet applied
//! ([`Dedup::check`] takes those), and only once everything from earlier terms is applied, so a
//! retry can never slip past an entry the table has not seen yet.
//!
//! Sequences are Kafka's non-negative `i32`s and a producer's batches must continue exactly where
//! its last one ended, wrapping from `i32::MAX` to 0 as Kafka's do. Producers expire by the
//! leader's append time of their last batch (the log's clock, the same on every replica).

use std::collections::{BTreeMap, VecDeque};

use keel_wire::record_batch::{next_sequence, BatchHeader};
use keel_wire::{ErrorCode, ProducerStamp};

use serde::{Deserialize, Serialize};

use crate::limits::{PRODUCER_EXPIRY_MS, PRODUCER_SWEEP_EVERY_BATCHES, RETAINED_BATCHES};

/// One batch as the table remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRange {
    pub first_sequence: u32,
    pub last_sequence: u32,
    pub base_offset: u64,
    pub last_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProducerEntry {
    epoch: u16,
    batches: VecDeque<BatchRange>,
    last_append_time_ms: i64,
}

/// The idempotence fields and sizes of a stored or incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchIdentity {
    pub stamp: ProducerStamp,
    pub count: u32,
}

impl BatchIdentity {
    /// Reads the header of a batch whose CRC and framing were already checked (or that was
    /// stored after such a check). `None` if it is too short to have a header.
    pub fn of(batch: &[u8]) -> Option<BatchIdentity> {
        let header = BatchHeader::read(batch)?;
        Some(BatchIdentity {
            stamp: header.producer,
            count: header.count,
        })
    }

    fn last_sequence(&self) -> Option<u32> {
        Some(next_sequence(
            self.stamp.base_sequence,
            self.count.checked_sub(1)?,
        ))
    }
}

/// What the leader should do with an incoming batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// New and in sequence: append it.
    Append,
    /// Already in the log: answer with these offsets, append nothing.
    Duplicate {
        base_offset: u64,
        last_offset: u64,
    },
    /// Already proposed by this leader and not yet applied: answer when that entry applies.
    InFlight {
        index: u64,
    },
    Reject(ErrorCode),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dedup {
    producers: BTreeMap<u64, ProducerEntry>,
    applied_since_sweep: u32,
}

impl Dedup {
    /// Records a committed batch stored at `base_offset`, appended at `append_time_ms`.
    pub fn apply(&mut self, identity: &BatchIdentity, base_offset: u64, append_time_ms: i64) {
        if !identity.stamp.is_idempotent() {
            return;
        }
        let Some(last_sequence) = identity.last_sequence() else {
            return;
        };
        let range = BatchRange {
            first_sequence: identity.stamp.base_sequence,
            last_sequence,
            base_offset,
            last_offset: base_offset + u64::from(identity.count) - 1,
        };
        let entry = self
            .producers
            .entry(identity.stamp.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: identity.stamp.producer_epoch,
                batches: VecDeque::new(),
                last_append_time_ms: append_time_ms,
            });
        if identity.stamp.producer_epoch != entry.epoch {
            entry.epoch = identity.stamp.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(range);
        while entry.batches.len() > RETAINED_BATCHES {
            entry.batches.pop_front();
        }
        entry.last_append_time_ms = entry.last_append_time_ms.max(append_time_ms);
        self.applied_since_sweep += 1;
        if self.applied_since_sweep >= PRODUCER_SWEEP_EVERY_BATCHES {
            self.applied_since_sweep = 0;
            // Expiry is judged by append times, which are in the log, so every replica forgets
            // the same producers at the same point.
            let now = append_time_ms;
            self.producers.retain(|_, entry| {
                now.saturating_sub(entry.last_append_time_ms) < PRODUCER_EXPIRY_MS
            });
        }
    }

    /// Judges an incoming batch against the table and `pending`: this leader's proposed but not
    /// yet applied idempotent batches, in proposal order, as (index, identity, base_offset).
    pub fn check(
        &self,
        identity: &BatchIdentity,
        pending: &[(u64, BatchIdentity, u64)],
    ) -> Verdict {
        let stamp = identity.stamp;
        if !stamp.is_idempotent() {
            return Verdict::Append;
        }
        let Some(last_sequence) = identity.last_sequence() else {
            return Verdict::Reject(ErrorCode::CorruptBatch);
        };
        // The producer's batches as this leader sees them: committed, then pending.
        let mut epoch = self
            .producers
            .get(&stamp.producer_id)
            .map(|entry| entry.epoch);
        let mut batches: Vec<(Option<u64>, BatchRange)> = self
            .producers
            .get(&stamp.producer_id)
            .map(|entry| entry.batches.iter().map(|range| (None, *range)).collect())
            .unwrap_or_default();
        for (index, pending_identity, base_offset) in pending {
            if pending_identity.stamp.producer_id != stamp.producer_id {
                continue;
            }
            if Some(pending_identity.stamp.producer_epoch) != epoch {
                epoch = Some(pending_identity.stamp.producer_epoch);
                batches.clear();
            }
            if let Some(pending_last) = pending_identity.last_sequence() {
                batches.push((
                    Some(*index),
                    BatchRange {
                        first_sequence: pending_identity.stamp.base_sequence,
                        last_sequence: pending_last,
                        base_offset: *base_offset,
                        last_offset: base_offset + u64::from(pending_identity.count) - 1,
                    },
                ));
            }
        }
        match epoch {
            Some(current) if stamp.producer_epoch < current => {
                return Verdict::Reject(ErrorCode::ProducerFenced)
            }
            Some(current) if stamp.producer_epoch > current => {
                return if stamp.base_sequence == 0 {
                    Verdict::Append
                } else {
                    Verdict::Reject(ErrorCode::OutOfOrderSequence {
                        expected_sequence: 0,
                    })
                };
            }
            None => {
                return if stamp.base_sequence == 0 {
                    Verdict::Append
                } else {
                    // Unknown to this partition (new, or forgotten after expiry) and not at its
                    // start: the producer must start over with a new id.
                    Verdict::Reject(ErrorCode::UnknownProducerId)
                };
            }
            Some(_) => {}
        }
        for (index, range) in &batches {
            if range.first_sequence == stamp.base_sequence && range.last_sequence == last_sequence {
                return match index {
                    Some(index) => Verdict::InFlight { index: *index },
                    None => Verdict::Duplicate {
                        base_offset: range.base_offset,
                        last_offset: range.last_offset,
                    },
                };
            }
        }
        let expected = batches
            .last()
            .map_or(0, |(_, range)| next_sequence(range.last_sequence, 1));
        if stamp.base_sequence == expected {
            Verdict::Append
        } else {
            Verdict::Reject(ErrorCode::OutOfOrderSequence {
                expected_sequence: expected,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(producer_id: u64, epoch: u16, base_sequence: u32, count: u32) -> BatchIdentity {
        BatchIdentity {
            stamp: ProducerStamp {
                producer_id,
                producer_epoch: epoch,
                base_sequence,
            },
            count,
        }
    }

    #[test]
    fn sequences_continue_duplicates_answer_with_offsets_and_gaps_are_refused() {
        let mut dedup = Dedup::default();
        assert_eq!(dedup.check(&identity(7, 0, 0, 3), &[]), Verdict::Append);
        dedup.apply(&identity(7, 0, 0, 3), 10, 0);
        assert_eq!(
            dedup.check(&identity(7, 0, 0, 3), &[]),
            Verdict::Duplicate {
                base_offset: 10,
                last_offset: 12
            }
        );
        assert_eq!(dedup.check(&identity(7, 0, 3, 1), &[]), Verdict::Append);
        assert_eq!(
            dedup.check(&identity(7, 0, 5, 1), &[]),
            Verdict::Reject(ErrorCode::OutOfOrderSequence {
                expected_sequence: 3
            })
        );
        // In flight at this leader: answered when it applies.
        let pending = [(42, identity(7, 0, 3, 2), 13)];
        assert_eq!(
            dedup.check(&identity(7, 0, 3, 2), &pending),
            Verdict::InFlight { index: 42 }
        );
        assert_eq!(
            dedup.check(&identity(7, 0, 5, 1), &pending),
            Verdict::Append
        );
    }

    #[test]
    fn epochs_fence_zombies_and_unknown_producers_must_start_at_zero() {
        let mut dedup = Dedup::default();
        assert_eq!(
            dedup.check(&identity(1, 0, 4, 1), &[]),
            Verdict::Reject(ErrorCode::UnknownProducerId)
        );
        dedup.apply(&identity(1, 2, 0, 1), 0, 0);
        assert_eq!(
            dedup.check(&identity(1, 1, 1, 1), &[]),
            Verdict::Reject(ErrorCode::ProducerFenced)
        );
        assert_eq!(dedup.check(&identity(1, 3, 0, 1), &[]), Verdict::Append);
        // A batch without a producer id is never deduplicated.
        assert_eq!(
            dedup.check(
                &BatchIdentity {
                    stamp: ProducerStamp::NONE,
                    count: 1,
                },
                &[]
            ),
            Verdict::Append
        );
    }

    #[test]
    fn only_the_last_batches_are_retained() {
        let mut dedup = Dedup::default();
        for batch in 0..(RETAINED_BATCHES as u32 + 2) {
            dedup.apply(&identity(9, 0, batch, 1), u64::from(batch), 0);
        }
        assert!(matches!(
            dedup.check(&identity(9, 0, 0, 1), &[]),
            Verdict::Reject(ErrorCode::OutOfOrderSequence { .. })
        ));
        assert!(matches!(
            dedup.check(&identity(9, 0, 6, 1), &[]),
            Verdict::Duplicate { .. }
        ));
    }

    #[test]
    fn sequences_wrap_past_i32_max_and_producers_expire_by_append_time() {
        let mut dedup = Dedup::default();
        let near_wrap = i32::MAX as u32 - 1;
        dedup.apply(&identity(3, 0, 0, 1), 0, 0);
        // Pretend the producer got near the wrap: a batch of 4 from i32::MAX - 1 covers
        // i32::MAX - 1, i32::MAX, 0 and 1.
        dedup
            .producers
            .get_mut(&3)
            .unwrap()
            .batches
            .back_mut()
            .unwrap()
            .last_sequence = near_wrap - 1;
        assert_eq!(
            dedup.check(&identity(3, 0, near_wrap, 4), &[]),
            Verdict::Append
        );
        dedup.apply(&identity(3, 0, near_wrap, 4), 1, 0);
        assert_eq!(dedup.check(&identity(3, 0, 2, 1), &[]), Verdict::Append);
        assert!(matches!(
            dedup.check(&identity(3, 0, near_wrap, 4), &[]),
            Verdict::Duplicate { .. }
        ));

        // A sweep at an append time past the expiry forgets a producer idle since time 0,
        // whatever timestamps its records carried.
        for batch in 0..PRODUCER_SWEEP_EVERY_BATCHES {
            dedup.apply(
                &identity(4, 0, batch, 1),
                10 + u64::from(batch),
                PRODUCER_EXPIRY_MS,
            );
        }
        assert!(!dedup.producers.contains_key(&3));
        assert!(dedup.producers.contains_key(&4));
    }
}
