//! `Inflights`: the ring of AppendEntries a leader has in flight to one follower, bounded by
//! message count and by bytes (etcd `tracker/inflights.go`).
//!
//! Each slot records the last index and the entry bytes of one message. An acknowledgement of
//! index N frees every slot whose last index is at most N, oldest first:
//!
//! ```text
//!   add(5, 100) add(9, 300) add(12, 50)   -> [5:100, 9:300, 12:50]  bytes 450
//!   free_to(9)                            -> [12:50]                bytes 50
//! ```

use std::collections::VecDeque;

use crate::config::INFLIGHTS_MAX_INITIAL_SLOTS;
use crate::entry::Index;

#[derive(Clone, Debug)]
pub struct Inflights {
    slots: VecDeque<(Index, u64)>,
    bytes: u64,
    max_messages: usize,
    max_bytes: u64,
}

impl Inflights {
    pub fn new(max_messages: usize, max_bytes: u64) -> Inflights {
        assert!(max_messages >= 1);
        Inflights {
            slots: VecDeque::with_capacity(max_messages.min(INFLIGHTS_MAX_INITIAL_SLOTS)),
            bytes: 0,
            max_messages,
            max_bytes,
        }
    }

    /// Records a message whose last entry is `last_index` carrying `bytes` of entries. Indexes
    /// must grow; the ring must not be full.
    pub fn add(&mut self, last_index: Index, bytes: u64) {
        assert!(!self.is_full(), "adding to a full inflights ring");
        if let Some(&(previous, _)) = self.slots.back() {
            assert!(last_index > previous, "inflight indexes must grow");
        }
        self.slots.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose last index is at most `index`.
    pub fn free_to(&mut self, index: Index) {
        while let Some(&(last_index, bytes)) = self.slots.front() {
            if last_index > index {
                break;
            }
            self.slots.pop_front();
            self.bytes -= bytes;
        }
    }

    pub fn reset(&mut self) {
        self.slots.clear();
        self.bytes = 0;
    }

    /// No more messages may be sent: the count or the byte limit is reached.
    pub fn is_full(&self) -> bool {
        self.slots.len() >= self.max_messages || self.bytes >= self.max_bytes
    }

    pub fn count(&self) -> usize {
        self.slots.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_by_message_count() {
        let mut inflights = Inflights::new(3, 1_000_000);
        for index in [5, 9, 12] {
            assert!(!inflights.is_full());
            inflights.add(index, 10);
        }
        assert!(inflights.is_full());
        inflights.free_to(4);
        assert!(inflights.is_full(), "nothing at or below 4 is in flight");
        inflights.free_to(5);
        assert!(!inflights.is_full());
        assert_eq!(inflights.count(), 2);
    }

    #[test]
    fn full_by_bytes() {
        let mut inflights = Inflights::new(100, 500);
        inflights.add(5, 100);
        inflights.add(9, 300);
        assert!(!inflights.is_full());
        inflights.add(12, 100);
        assert!(inflights.is_full(), "500 bytes reach the limit");
        inflights.free_to(9);
        assert_eq!((inflights.count(), inflights.bytes()), (1, 100));
        assert!(!inflights.is_full());
    }

    #[test]
    fn free_to_frees_oldest_first_and_reset_empties() {
        // (messages added, free_to, count and bytes left)
        #[allow(clippy::type_complexity)]
        let table: &[(&[(Index, u64)], Index, usize, u64)] = &[
            (&[(5, 100), (9, 300), (12, 50)], 9, 1, 50),
            (&[(5, 100), (9, 300), (12, 50)], 12, 0, 0),
            (&[(5, 100), (9, 300), (12, 50)], 100, 0, 0),
            (&[(5, 100), (9, 300), (12, 50)], 8, 2, 350),
            (&[], 3, 0, 0),
        ];
        for (added, free_to, count, bytes) in table {
            let mut inflights = Inflights::new(10, 10_000);
            for &(index, size) in *added {
                inflights.add(index, size);
            }
            inflights.free_to(*free_to);
            assert_eq!(
                (inflights.count(), inflights.bytes()),
                (*count, *bytes),
                "{added:?} free_to {free_to}"
            );
        }
        let mut inflights = Inflights::new(2, 100);
        inflights.add(1, 200);
        inflights.reset();
        assert_eq!(
            (inflights.count(), inflights.bytes(), inflights.is_full()),
            (0, 0, false)
        );
    }

    #[test]
    #[should_panic(expected = "full")]
    fn adding_to_a_full_ring_is_a_bug() {
        let mut inflights = Inflights::new(1, 100);
        inflights.add(1, 1);
        inflights.add(2, 1);
    }
}
