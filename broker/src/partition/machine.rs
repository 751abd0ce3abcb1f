//! A partition's state as its log defines it, pure: no tokio, no files, no node. Offsets (the
//! next one a leader gives, the high watermark consumers see), the idempotent-producer table, and
//! the batches this leader proposed and has not applied yet. The actor around it (mod.rs) owns
//! the requests waiting on it; every replica that applies the same log reaches the same state.
//!
//! `end_offset` counts every batch in the log (committed or not): the next base offset a leader
//! gives. `high_watermark` counts the applied ones, which is all a consumer sees.

use keel_raft::{Entry, EntryKind, Index, RaftLog};
use keel_wire::record_batch::BatchHeader;

use super::dedup::{BatchIdentity, Dedup, Verdict};

#[derive(Debug, Default)]
pub struct PartitionMachine {
    end_offset: u64,
    high_watermark: u64,
    /// Index of the last applied entry: fetches read up to here.
    applied_index: Index,
    /// Idempotent batches this leader proposed and has not applied yet, in index order:
    /// (index, identity, base offset). The dedup table does not know them yet.
    pending: Vec<(Index, BatchIdentity, u64)>,
    dedup: Dedup,
}

impl PartitionMachine {
    /// The state of a replica that opened `log` and has applied nothing yet (state is rebuilt
    /// by replaying the log).
    pub fn open(log: &impl RaftLog) -> PartitionMachine {
        PartitionMachine {
            end_offset: end_offset_of(log, log.last_index()),
            ..PartitionMachine::default()
        }
    }

    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }

    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    /// Entries from `from` on were cut from `log`: the next offset follows what is left.
    pub fn truncated(&mut self, log: &impl RaftLog, from: Index) {
        self.end_offset = end_offset_of(log, from.saturating_sub(1));
    }

    /// Entries were appended (this leader's proposals or a leader's replication).
    pub fn appended(&mut self, entries: &[Entry]) {
        for entry in entries.iter().filter(|entry| entry.kind == EntryKind::Data) {
            if let Some(end) = batch_end_offset(&entry.payload) {
                self.end_offset = end;
            }
        }
    }

    /// A committed entry, in index order.
    pub fn apply(&mut self, entry: &Entry) {
        debug_assert!(entry.index > self.applied_index || self.applied_index == 0);
        self.applied_index = entry.index;
        if entry.kind == EntryKind::Data {
            if let Some(header) = BatchHeader::read(&entry.payload) {
                if let Some(end) = header.end_offset() {
                    debug_assert!(end >= self.high_watermark, "offsets only grow");
                    self.high_watermark = end;
                }
                let identity = BatchIdentity {
                    stamp: header.producer,
                    count: header.count,
                    max_timestamp_ms: header.max_timestamp_ms,
                };
                self.dedup.apply(&identity, header.base_offset);
            }
        }
        let applied = self
            .pending
            .iter()
            .take_while(|&&(index, _, _)| index <= entry.index)
            .count();
        self.pending.drain(..applied);
    }

    /// What a leader should do with an incoming batch of `identity`.
    pub fn judge(&self, identity: &BatchIdentity) -> Verdict {
        self.dedup.check(identity, &self.pending)
    }

    /// This leader proposed `identity`'s batch at `index` with `base_offset`: the next batch
    /// starts after it, and a retry of it is answered from the proposal until it applies.
    pub fn proposed(&mut self, index: Index, identity: BatchIdentity, base_offset: u64) {
        self.end_offset = base_offset + u64::from(identity.count);
        if identity.stamp.is_idempotent() {
            self.pending.push((index, identity, base_offset));
        }
    }

    /// Leadership was lost: this node's proposals may or may not commit, and a retry goes to
    /// the next leader, which judges it by what it applied.
    pub fn forget_proposals(&mut self) {
        self.pending.clear();
    }
}

/// Offset after the last batch at or below `last`, scanning back from it.
fn end_offset_of(log: &impl RaftLog, last: Index) -> u64 {
    let first = log.first_index();
    let mut index = last;
    while index >= first && index > 0 {
        let entries = log.entries(index, index + 1, u64::MAX);
        let Some(entry) = entries.first() else { break };
        if entry.kind == EntryKind::Data {
            if let Some(end) = batch_end_offset(&entry.payload) {
                return end;
            }
        }
        index -= 1;
    }
    0
}

/// `base_offset + count` of a stored batch.
pub fn batch_end_offset(batch: &[u8]) -> Option<u64> {
    BatchHeader::read(batch)?.end_offset()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use keel_raft::MemoryLog;
    use keel_wire::record_batch::set_base_offset;
    use keel_wire::{Limits, ProducerStamp, Record, RecordBatchBuilder};

    /// A stamped batch of `count` records from `producer` (id 0: not idempotent).
    fn batch(base_offset: u64, count: u32, producer: u64, base_sequence: u32) -> Bytes {
        let limits = Limits::default();
        let stamp = ProducerStamp {
            producer_id: producer,
            producer_epoch: 0,
            base_sequence,
        };
        let mut builder = RecordBatchBuilder::new(&limits, 64 * 1024);
        if producer != ProducerStamp::NONE.producer_id {
            builder = builder.with_producer(stamp);
        }
        for _ in 0..count {
            builder
                .append(&Record {
                    timestamp_ms: 1_000,
                    key: None,
                    value: b"v",
                    headers: &[],
                })
                .unwrap();
        }
        let mut bytes = builder.finish().unwrap().to_vec();
        set_base_offset(&mut bytes, base_offset).unwrap();
        Bytes::from(bytes)
    }

    fn data(index: Index, payload: Bytes) -> Entry {
        Entry {
            index,
            term: 1,
            kind: EntryKind::Data,
            payload,
        }
    }

    fn identity_of(payload: &[u8]) -> BatchIdentity {
        BatchIdentity::of(payload).unwrap()
    }

    #[test]
    fn offsets_follow_the_log_and_consumers_see_only_what_applied() {
        let mut machine = PartitionMachine::default();
        let entries = [
            data(1, batch(0, 3, 0, 0)),
            Entry {
                index: 2,
                term: 1,
                kind: EntryKind::NoOp,
                payload: Bytes::new(),
            },
            data(3, batch(3, 2, 0, 0)),
        ];
        machine.appended(&entries);
        assert_eq!(machine.end_offset(), 5);
        assert_eq!(machine.high_watermark(), 0, "nothing applied yet");
        machine.apply(&entries[0]);
        machine.apply(&entries[1]);
        assert_eq!((machine.high_watermark(), machine.applied_index()), (3, 2));
        machine.apply(&entries[2]);
        assert_eq!((machine.high_watermark(), machine.applied_index()), (5, 3));
    }

    #[test]
    fn a_truncation_gives_back_the_offsets_of_the_cut_batches() {
        let mut log = MemoryLog::new();
        let entries = vec![
            data(1, batch(0, 3, 0, 0)),
            data(2, batch(3, 4, 0, 0)),
            data(3, batch(7, 1, 0, 0)),
        ];
        log.append(&entries);
        let mut machine = PartitionMachine::open(&log);
        assert_eq!(machine.end_offset(), 8);
        log.truncate_suffix(2);
        machine.truncated(&log, 2);
        assert_eq!(
            machine.end_offset(),
            3,
            "the next batch reuses the cut offsets"
        );
    }

    #[test]
    fn a_retry_is_in_flight_until_applied_then_a_duplicate_with_its_offsets() {
        let mut machine = PartitionMachine::default();
        let first = batch(0, 2, 7, 0);
        let identity = identity_of(&first);
        assert_eq!(machine.judge(&identity), Verdict::Append);
        machine.proposed(1, identity, 0);
        assert_eq!(machine.end_offset(), 2);
        assert_eq!(machine.judge(&identity), Verdict::InFlight { index: 1 });
        machine.apply(&data(1, first));
        assert_eq!(
            machine.judge(&identity),
            Verdict::Duplicate {
                base_offset: 0,
                last_offset: 1
            }
        );
        let next = identity_of(&batch(0, 1, 7, 2));
        assert_eq!(
            machine.judge(&next),
            Verdict::Append,
            "the next sequence appends"
        );
    }

    #[test]
    fn a_lost_leadership_forgets_its_proposals() {
        let mut machine = PartitionMachine::default();
        let identity = identity_of(&batch(0, 1, 9, 0));
        machine.proposed(4, identity, 0);
        machine.forget_proposals();
        assert_eq!(machine.judge(&identity), Verdict::Append);
    }
}
