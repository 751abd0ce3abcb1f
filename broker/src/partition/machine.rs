//! A partition's state as its log defines it, pure: no tokio, no files, no node. Offsets (the
//! next one a leader gives, the high watermark consumers see), the idempotent-producer table, and
//! the batches this leader proposed and has not applied yet. The actor around it (mod.rs) owns
//! the requests waiting on it; every replica that applies the same log reaches the same state.
//!
//! `end_offset` counts every batch in the log (committed or not): the next base offset a leader
//! gives. `high_watermark` counts the applied ones, which is all a consumer sees.
//! `last_append_time_ms` is the append time of the last Data entry in the log, so a leader's
//! append times never go backwards, even after a clock step or a change of leader.

use bytes::Bytes;
use keel_raft::{Entry, EntryKind, Index, RaftLog};
use serde::{Deserialize, Serialize};

use super::dedup::{BatchIdentity, Dedup, Verdict};
use super::entry::DataEntry;

/// A partition's own Raft commands, postcard-encoded in entries of kind `Meta` (docs/FORMAT.md
/// "Partition entries"). New variants go at the end: the tag is positional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionCommand {
    /// The leader's retention decision: entries up to and including `through` go (a snapshot
    /// at `through` replaces them). Ignored unless it moves the log start forward, so the log
    /// start never moves backwards, whoever proposed what.
    SetLogStart { through: Index },
}

impl PartitionCommand {
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("a command always encodes"))
    }

    pub fn decode(payload: &[u8]) -> Option<PartitionCommand> {
        postcard::from_bytes(payload).ok()
    }
}

/// What applying the log up to `applied_index` made: everything a replica needs to continue
/// from there, and exactly what a snapshot holds. Folding entries into it is the one way it
/// changes, whether a replica applies committed entries or builds the snapshot at a new log
/// start from the previous snapshot and the entries being deleted ([`Applied::fold`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub high_watermark: u64,
    /// Append time of the last Data entry applied.
    pub last_append_time_ms: i64,
    pub applied_index: Index,
    /// Entries up to here are replaced by a snapshot; offsets below `log_start_offset` are gone.
    pub log_start_index: Index,
    pub log_start_offset: u64,
    pub dedup: Dedup,
}

impl Applied {
    /// One committed entry, in index order. Returns the log start a `SetLogStart` asks for when
    /// it moves the log start forward (the caller compacts; [`Applied::compacted`] records it).
    pub fn apply(&mut self, entry: &Entry) -> Option<Index> {
        debug_assert!(entry.index > self.applied_index || self.applied_index == 0);
        self.applied_index = entry.index;
        match entry.kind {
            EntryKind::Data => {
                let data = DataEntry::read(&entry.payload);
                if let Some((data, header)) = data.and_then(|data| Some((data, data.header()?))) {
                    if let Some(end) = header.end_offset() {
                        debug_assert!(end >= self.high_watermark, "offsets only grow");
                        self.high_watermark = end;
                    }
                    let identity = BatchIdentity {
                        stamp: header.producer,
                        count: header.count,
                    };
                    self.dedup
                        .apply(&identity, header.base_offset, data.append_time_ms);
                    self.last_append_time_ms = data.append_time_ms;
                }
                None
            }
            EntryKind::Meta => match PartitionCommand::decode(&entry.payload) {
                // Only a committed, applied prefix can be compacted: `through` is below this
                // entry's index by construction (the leader picks at most its applied index).
                Some(PartitionCommand::SetLogStart { through })
                    if through > self.log_start_index && through < entry.index =>
                {
                    Some(through)
                }
                Some(PartitionCommand::SetLogStart { .. }) => None,
                None => {
                    tracing::error!(
                        index = entry.index,
                        "an undecodable partition command; ignored on every replica alike"
                    );
                    None
                }
            },
            EntryKind::NoOp | EntryKind::Config => None,
        }
    }

    /// Folds the entries after this state into it, in index order (entries it already covers
    /// are skipped). How the snapshot at a new log start S is built: the previous snapshot with
    /// the entries up to S folded in, read from the log before they go; never a later state
    /// relabelled as S's, which would count the entries after S twice once they are replayed
    /// over it. A `SetLogStart` among them asks nothing of a fold: the caller records the log
    /// start it folds to ([`Applied::compacted`]).
    pub fn fold(&mut self, entries: &[Entry]) {
        for entry in entries {
            if entry.index <= self.applied_index {
                continue;
            }
            debug_assert_eq!(entry.index, self.applied_index + 1, "a fold skips no entry");
            self.apply(entry);
        }
    }

    /// The snapshot at the new log start `through`: this state (the previous snapshot) with the
    /// entries of `log` after it, up to `through`, folded in, read `read_bytes` at a time, and
    /// the log start moved there. The one way a snapshot is built, by a replica compacting
    /// (partition/mod.rs) and by the simulator (tests/sim), so what the simulator checks is what
    /// the product does. The entries must still be in `log`: a caller folds before it deletes.
    pub fn fold_log(
        mut self,
        log: &impl RaftLog,
        through: Index,
        read_bytes: u64,
    ) -> Result<Applied, MissingEntries> {
        let mut next = self.applied_index + 1;
        // `RaftLog::entries` asserts that the range is held; a log that lost the entries is the
        // caller's to report.
        let missing = MissingEntries {
            from: next,
            through,
        };
        if next <= through && (next < log.first_index() || through > log.last_index()) {
            return Err(missing);
        }
        while next <= through {
            let entries = log.entries(next, through + 1, read_bytes);
            let Some(last) = entries.last().map(|entry| entry.index) else {
                return Err(MissingEntries {
                    from: next,
                    through,
                });
            };
            self.fold(&entries);
            next = last + 1;
        }
        self.compacted(through, self.high_watermark);
        Ok(self)
    }

    /// The log now starts after `through`, at offset `offset` (the high watermark there).
    pub fn compacted(&mut self, through: Index, offset: u64) {
        if through > self.log_start_index {
            self.log_start_index = through;
            self.log_start_offset = self.log_start_offset.max(offset);
        }
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("a snapshot always encodes"))
    }

    pub fn decode(bytes: &[u8]) -> Option<Applied> {
        postcard::from_bytes(bytes).ok()
    }
}

/// Entries a snapshot needs folded in are no longer in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingEntries {
    pub from: Index,
    pub through: Index,
}

impl std::fmt::Display for MissingEntries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let MissingEntries { from, through } = self;
        write!(f, "entries {from}..={through} to fold are missing")
    }
}

impl std::error::Error for MissingEntries {}

#[derive(Debug, Default)]
pub struct PartitionMachine {
    applied: Applied,
    end_offset: u64,
    /// Append time of the last Data entry in the log (applied or not).
    last_append_time_ms: i64,
    /// Idempotent batches this leader proposed and has not applied yet, in index order:
    /// (index, identity, base offset). The dedup table does not know them yet.
    pending: Vec<(Index, BatchIdentity, u64)>,
    /// A log start an applied `SetLogStart` asked for, until the actor compacts to it.
    compact_to: Option<Index>,
}

impl PartitionMachine {
    /// The state of a replica that opened `log` and has applied nothing yet (state is rebuilt
    /// by replaying the log).
    pub fn open(log: &impl RaftLog) -> PartitionMachine {
        let (end_offset, last_append_time_ms) = last_batch_of(log, log.last_index());
        PartitionMachine {
            end_offset,
            last_append_time_ms,
            ..PartitionMachine::default()
        }
    }

    /// The applied state as of [`PartitionMachine::applied_index`]: what a replica needs to
    /// continue from there (the proposals in flight are a leader's, not the log's, and the next
    /// offset follows from the log).
    pub fn applied(&self) -> &Applied {
        &self.applied
    }

    /// The applied state, encoded: what [`PartitionMachine::restore`] takes back.
    pub fn snapshot(&self) -> Bytes {
        self.applied.encode()
    }

    /// The state a snapshot recorded, over `log` (which holds the entries after it, if any).
    /// `None` if the bytes are not a snapshot.
    pub fn restore(log: &impl RaftLog, snapshot: &[u8]) -> Option<PartitionMachine> {
        let applied = Applied::decode(snapshot)?;
        let (end_offset, last_append_time_ms) = last_batch_of(log, log.last_index());
        Some(PartitionMachine {
            end_offset: end_offset.max(applied.high_watermark),
            last_append_time_ms: last_append_time_ms.max(applied.last_append_time_ms),
            applied,
            pending: Vec::new(),
            compact_to: None,
        })
    }

    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }

    pub fn high_watermark(&self) -> u64 {
        self.applied.high_watermark
    }

    pub fn applied_index(&self) -> Index {
        self.applied.applied_index
    }

    pub fn log_start_offset(&self) -> u64 {
        self.applied.log_start_offset
    }

    pub fn log_start_index(&self) -> Index {
        self.applied.log_start_index
    }

    /// The append time a leader gives its next entry, given its clock reads `now_ms`: never
    /// earlier than the last entry's.
    pub fn next_append_time_ms(&self, now_ms: i64) -> i64 {
        now_ms.max(self.last_append_time_ms)
    }

    /// Entries from `from` on were cut from `log`: the next offset follows what is left. A cut
    /// never reaches committed entries, so it never goes below the high watermark; that is also
    /// the answer when what is left holds no batch above a compaction point (the simulator found
    /// a leader stamping offset 0 there).
    pub fn truncated(&mut self, log: &impl RaftLog, from: Index) {
        let (end_offset, _) = last_batch_of(log, from.saturating_sub(1));
        self.end_offset = end_offset.max(self.applied.high_watermark);
    }

    /// Entries were appended (this leader's proposals or a leader's replication).
    pub fn appended(&mut self, entries: &[Entry]) {
        for entry in entries.iter().filter(|entry| entry.kind == EntryKind::Data) {
            let Some(data) = DataEntry::read(&entry.payload) else {
                continue;
            };
            if let Some(end) = data.header().and_then(|header| header.end_offset()) {
                self.end_offset = end;
            }
            self.last_append_time_ms = self.last_append_time_ms.max(data.append_time_ms);
        }
    }

    /// A committed entry, in index order.
    pub fn apply(&mut self, entry: &Entry) {
        if let Some(through) = self.applied.apply(entry) {
            self.compact_to = Some(self.compact_to.map_or(through, |to| to.max(through)));
        }
        let applied = self
            .pending
            .iter()
            .take_while(|&&(index, _, _)| index <= entry.index)
            .count();
        self.pending.drain(..applied);
    }

    /// The log start an applied `SetLogStart` asks this replica to compact to, once.
    pub fn take_compaction(&mut self) -> Option<Index> {
        self.compact_to.take()
    }

    /// This replica compacted its log through `through` (its snapshot there holds `offset` as
    /// the log start offset).
    pub fn compacted(&mut self, through: Index, offset: u64) {
        self.applied.compacted(through, offset);
    }

    /// What a leader should do with an incoming batch of `identity`.
    pub fn judge(&self, identity: &BatchIdentity) -> Verdict {
        self.applied.dedup.check(identity, &self.pending)
    }

    /// This leader proposed `identity`'s batch at `index` with `base_offset`, appended at
    /// `append_time_ms`: the next batch starts after it, no later proposal gets an earlier time
    /// (even before this one reaches the log), and a retry of it is answered from the proposal
    /// until it applies.
    pub fn proposed(
        &mut self,
        index: Index,
        identity: BatchIdentity,
        base_offset: u64,
        append_time_ms: i64,
    ) {
        self.end_offset = base_offset + u64::from(identity.count);
        self.last_append_time_ms = self.last_append_time_ms.max(append_time_ms);
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

/// Offset after, and append time of, the last batch at or below `last`, scanning back from it.
fn last_batch_of(log: &impl RaftLog, last: Index) -> (u64, i64) {
    let first = log.first_index();
    let mut index = last;
    while index >= first && index > 0 {
        let entries = log.entries(index, index + 1, u64::MAX);
        let Some(entry) = entries.first() else { break };
        if entry.kind == EntryKind::Data {
            if let Some(data) = DataEntry::read(&entry.payload) {
                if let Some(end) = data.header().and_then(|header| header.end_offset()) {
                    return (end, data.append_time_ms);
                }
            }
        }
        index -= 1;
    }
    (0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_raft::MemoryLog;
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
                    value: Some(b"v"),
                    headers: &[],
                })
                .unwrap();
        }
        let mut payload = super::super::entry::unstamped(&builder.finish().unwrap());
        super::super::entry::stamp(&mut payload, 1_000, base_offset, 1).unwrap();
        payload.freeze()
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
        BatchIdentity::of(super::super::entry::batch_of(payload)).unwrap()
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
    fn a_truncation_above_a_compaction_point_keeps_the_committed_offsets() {
        let mut machine = PartitionMachine::default();
        let committed = data(1, batch(0, 4, 0, 0));
        machine.appended(std::slice::from_ref(&committed));
        machine.apply(&committed);
        // The log was compacted through 1 and holds only a no-op of a deposed leader at 2.
        let mut log = MemoryLog::new();
        log.append(&[committed]);
        log.compact(1);
        let no_op = Entry {
            index: 2,
            term: 1,
            kind: EntryKind::NoOp,
            payload: Bytes::new(),
        };
        log.append(&[no_op]);
        machine.truncated(&log, 3);
        assert_eq!(machine.end_offset(), 4, "not 0: offsets 0-3 are committed");
    }

    #[test]
    fn a_retry_is_in_flight_until_applied_then_a_duplicate_with_its_offsets() {
        let mut machine = PartitionMachine::default();
        let first = batch(0, 2, 7, 0);
        let identity = identity_of(&first);
        assert_eq!(machine.judge(&identity), Verdict::Append);
        machine.proposed(1, identity, 0, 1_000);
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
    fn a_snapshot_restores_offsets_and_the_dedup_table() {
        let mut machine = PartitionMachine::default();
        let first = batch(0, 2, 7, 0);
        machine.appended(&[data(1, first.clone())]);
        machine.apply(&data(1, first.clone()));
        let snapshot = machine.snapshot();
        let mut log = MemoryLog::new();
        log.append(&[data(1, first.clone()), data(2, batch(2, 3, 0, 0))]);
        let restored = PartitionMachine::restore(&log, &snapshot).unwrap();
        assert_eq!(
            (
                restored.high_watermark(),
                restored.applied_index(),
                restored.end_offset()
            ),
            (2, 1, 5),
            "the next offset follows the log beyond the snapshot"
        );
        assert!(matches!(
            restored.judge(&identity_of(&first)),
            Verdict::Duplicate { base_offset: 0, .. }
        ));
        assert!(PartitionMachine::restore(&log, b"\xff\xff").is_none());
    }

    #[test]
    fn a_lost_leadership_forgets_its_proposals() {
        let mut machine = PartitionMachine::default();
        let identity = identity_of(&batch(0, 1, 9, 0));
        machine.proposed(4, identity, 0, 1_000);
        machine.forget_proposals();
        assert_eq!(machine.judge(&identity), Verdict::Append);
    }

    #[test]
    fn append_times_never_go_backwards_whatever_the_clock_says() {
        let mut machine = PartitionMachine::default();
        assert_eq!(machine.next_append_time_ms(500), 500);
        // Two proposals in one round, the clock stepping back between them: the second must
        // not be earlier, though the first has not reached the log yet.
        let identity = identity_of(&batch(0, 1, ProducerStamp::NONE.producer_id, 0));
        machine.proposed(1, identity, 0, 2_000);
        assert_eq!(machine.next_append_time_ms(1_500), 2_000);
        assert_eq!(machine.next_append_time_ms(2_500), 2_500);

        // A replica reopening its log continues from the last entry's time (the batch helper
        // stamps 1,000 ms).
        let mut log = MemoryLog::new();
        log.append(&[data(1, batch(0, 2, 0, 0))]);
        let reopened = PartitionMachine::open(&log);
        assert_eq!(reopened.next_append_time_ms(10), 1_000);
        let mut follower = PartitionMachine::default();
        follower.appended(&[data(1, batch(0, 2, 0, 0))]);
        assert_eq!(follower.next_append_time_ms(10), 1_000);
    }

    #[test]
    fn a_fold_needs_every_entry_after_the_previous_snapshot() {
        let mut log = MemoryLog::new();
        log.append(&[data(1, batch(0, 2, 0, 0)), data(2, batch(2, 3, 0, 0))]);
        log.compact(1);
        assert_eq!(
            Applied::default().fold_log(&log, 2, u64::MAX),
            Err(MissingEntries {
                from: 1,
                through: 2
            }),
            "entry 1 went before the fold read it"
        );
        let nothing = Applied::default()
            .fold_log(&MemoryLog::new(), 0, u64::MAX)
            .unwrap();
        assert_eq!(nothing, Applied::default(), "nothing to fold");
        let mut full = MemoryLog::new();
        full.append(&[data(1, batch(0, 2, 0, 0)), data(2, batch(2, 3, 0, 0))]);
        let folded = Applied::default().fold_log(&full, 1, 1).unwrap();
        assert_eq!(
            (folded.applied_index, folded.high_watermark),
            (1, 2),
            "entry 2 is after the log start: not folded"
        );
        assert_eq!((folded.log_start_index, folded.log_start_offset), (1, 2));
    }

    /// One step of a partition's log in the property test below.
    #[derive(Debug, Clone)]
    enum Step {
        /// A batch of `count` records from producer `producer` (0: not idempotent), appended
        /// `after_ms` after the previous entry.
        Batch {
            producer: u64,
            count: u32,
            after_ms: i64,
        },
        /// A `SetLogStart` through an earlier index (`back` entries before this one).
        SetLogStart {
            back: u64,
        },
        NoOp,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            8 => (0u64..4, 1u32..4, prop_oneof![0i64..5_000, 0i64..(3 * 24 * 3600 * 1000)])
                .prop_map(|(producer, count, after_ms)| Step::Batch { producer, count, after_ms }),
            2 => (1u64..40).prop_map(|back| Step::SetLogStart { back }),
            1 => Just(Step::NoOp),
        ]
    }

    /// The log the steps make, each batch stamped as a leader would (offsets dense, sequences
    /// continuing per producer, append times never decreasing).
    fn log_of(steps: &[Step]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let (mut end_offset, mut now_ms) = (0u64, 1_000i64);
        let mut sequences = std::collections::HashMap::new();
        for step in steps {
            let index = entries.len() as Index + 1;
            let entry = match *step {
                Step::Batch {
                    producer,
                    count,
                    after_ms,
                } => {
                    now_ms += after_ms;
                    let sequence = sequences.entry(producer).or_insert(0u32);
                    let raw = batch(end_offset, count, producer, *sequence);
                    *sequence += count;
                    let mut payload = raw.to_vec();
                    super::super::entry::stamp(&mut payload, now_ms, end_offset, 1).unwrap();
                    end_offset += u64::from(count);
                    data(index, Bytes::from(payload))
                }
                Step::SetLogStart { back } => Entry {
                    index,
                    term: 1,
                    kind: EntryKind::Meta,
                    payload: PartitionCommand::SetLogStart {
                        through: index.saturating_sub(back),
                    }
                    .encode(),
                },
                Step::NoOp => Entry {
                    index,
                    term: 1,
                    kind: EntryKind::NoOp,
                    payload: Bytes::new(),
                },
            };
            entries.push(entry);
        }
        entries
    }

    /// Applies `entries` (the log from `start.applied_index + 1` on) as a replica does: every
    /// compaction an applied `SetLogStart` asks for folds the previous snapshot with the entries
    /// up to the new log start, as partition/mod.rs does. Returns the state and the snapshots
    /// taken, by their index.
    fn replay(
        log: &[Entry],
        mut snapshot: Applied,
        upto: Index,
    ) -> (PartitionMachine, Vec<(Index, Bytes)>) {
        let mut machine = PartitionMachine {
            applied: snapshot.clone(),
            ..PartitionMachine::default()
        };
        let mut taken = Vec::new();
        let mut held = MemoryLog::new();
        held.append(log);
        let from = machine.applied_index() as usize;
        for entry in &log[from..upto as usize] {
            machine.apply(entry);
            if let Some(through) = machine.take_compaction() {
                // A few entries per read: the fold continues across reads.
                snapshot = snapshot.fold_log(&held, through, 256).unwrap();
                machine.compacted(through, snapshot.log_start_offset);
                taken.push((through, snapshot.encode()));
            }
        }
        (machine, taken)
    }

    proptest::proptest! {
        /// restore(S) + replay(S+1..N) is the live state at N, for every snapshot S a replica
        /// took on the way: the snapshot at a log start is exactly the state there, built by
        /// folding, whatever came after it.
        #[test]
        fn a_snapshot_at_the_log_start_plus_the_rest_of_the_log_is_the_live_state(
            steps in proptest::collection::vec(step(), 1..120)
        ) {
            let log = log_of(&steps);
            let last = log.len() as Index;
            let (live, snapshots) = replay(&log, Applied::default(), last);
            for (through, bytes) in snapshots {
                let restored = Applied::decode(&bytes).unwrap();
                proptest::prop_assert_eq!(restored.applied_index, through);
                proptest::prop_assert_eq!(restored.log_start_index, through);
                // The offsets below the log start are exactly those of the entries it covers.
                let (at_s, _) = replay(&log, Applied::default(), through);
                proptest::prop_assert_eq!(restored.high_watermark, at_s.high_watermark());
                proptest::prop_assert_eq!(restored.log_start_offset, at_s.high_watermark());
                let (continued, _) = replay(&log, restored, last);
                proptest::prop_assert_eq!(continued.applied(), live.applied());
            }
        }
    }
}
