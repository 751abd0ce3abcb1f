//! Model test: random sequences of appends, truncations, compactions, resets, reads, syncs and
//! reopen, on small segments, checked against an in-memory model after every step.

use std::path::Path;

use keel_storage::{Entry, FsyncPolicy, Log, LogOptions, StoredEntry};
use proptest::prelude::*;

const MAX_ENTRY_BYTES: u32 = 3000;

/// Data entries (kind 1) carry their first message offset in their first 8 bytes.
fn offset_key(kind: u8, payload: &[u8]) -> Option<u64> {
    let key = payload.get(..8).filter(|_| kind == 1)?;
    Some(u64::from_le_bytes(key.try_into().expect("8 bytes")))
}

fn options(fsync: FsyncPolicy) -> LogOptions {
    LogOptions {
        segment_bytes: 64 << 10,
        max_entry_bytes: MAX_ENTRY_BYTES,
        index_interval_bytes: 1024,
        fsync,
        offset_key: Some(offset_key),
    }
}

#[derive(Debug, Clone)]
struct ModelEntry {
    term: u64,
    kind: u8,
    payload: Vec<u8>,
    offset_key: Option<u64>,
}

/// What the log must hold.
#[derive(Debug)]
struct Model {
    first_index: u64,
    entries: Vec<ModelEntry>,
    term: u64,
    next_offset: u64,
    /// Highest index handed out by `read` in this Log instance.
    watermark: u64,
}

impl Model {
    fn last_index(&self) -> u64 {
        self.first_index + self.entries.len() as u64 - 1
    }
    fn entry(&self, index: u64) -> &ModelEntry {
        &self.entries[(index - self.first_index) as usize]
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Payload sizes, and whether each entry is a keyed Data entry.
    Append {
        entries: Vec<(usize, bool)>,
        new_term: bool,
    },
    Truncate {
        back: u64,
    },
    Compact {
        fraction: u8,
    },
    Reset {
        shift: u8,
    },
    Reopen {
        fsync: FsyncPolicy,
    },
    Read {
        start: u8,
        len: u8,
        max_bytes: u64,
    },
    Sync,
    /// Seal the active segment and start an empty one (segment.ms, retention's roll).
    Roll,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let sizes = prop_oneof![
        4 => 0usize..200,
        2 => 200usize..=MAX_ENTRY_BYTES as usize,
        1 => Just(MAX_ENTRY_BYTES as usize),
    ];
    let small_batch = proptest::collection::vec((sizes.clone(), any::<bool>()), 1..12);
    let large_batch = proptest::collection::vec((sizes, any::<bool>()), 40..70);
    let fsync = prop_oneof![
        Just(FsyncPolicy::Always),
        Just(FsyncPolicy::Never),
        Just(FsyncPolicy::Interval { ms: 1 }),
    ];
    prop_oneof![
        12 => (small_batch, any::<bool>()).prop_map(|(entries, new_term)| Op::Append { entries, new_term }),
        1 => large_batch.prop_map(|entries| Op::Append { entries, new_term: false }),
        3 => (0u64..30).prop_map(|back| Op::Truncate { back }),
        2 => any::<u8>().prop_map(|fraction| Op::Compact { fraction }),
        1 => any::<u8>().prop_map(|shift| Op::Reset { shift }),
        3 => fsync.prop_map(|fsync| Op::Reopen { fsync }),
        2 => (any::<u8>(), any::<u8>(), 0u64..8000).prop_map(|(start, len, max_bytes)| Op::Read { start, len, max_bytes }),
        2 => Just(Op::Sync),
        1 => Just(Op::Roll),
    ]
}

/// Deterministic filler so payloads differ between indexes.
fn payload_for(index: u64, size: usize, key: Option<u64>) -> Vec<u8> {
    let mut payload: Vec<u8> = (0..size)
        .map(|byte| (index as usize * 31 + byte * 7) as u8)
        .collect();
    if let Some(key) = key {
        payload[..8].copy_from_slice(&key.to_le_bytes());
    }
    payload
}

fn apply_append(log: &mut Log, model: &mut Model, sizes: &[(usize, bool)], new_term: bool) {
    if new_term {
        model.term += 1;
    }
    let mut new_entries = Vec::new();
    for (number, &(size, keyed)) in sizes.iter().enumerate() {
        let index = model.last_index() + 1 + number as u64;
        let keyed = keyed && size >= 8;
        let offset_key = keyed.then_some(model.next_offset);
        if keyed {
            model.next_offset += 1 + (size % 5) as u64;
        }
        new_entries.push(ModelEntry {
            term: model.term,
            kind: u8::from(keyed),
            payload: payload_for(index, size, offset_key),
            offset_key,
        });
    }
    let batch: Vec<Entry<'_>> = new_entries
        .iter()
        .enumerate()
        .map(|(number, entry)| Entry {
            index: model.last_index() + 1 + number as u64,
            term: entry.term,
            kind: entry.kind,
            payload: &entry.payload,
            offset_key: entry.offset_key,
        })
        .collect();
    log.append(&batch).unwrap();
    model.entries.extend(new_entries);
}

fn apply_read(
    log: &Log,
    model: &mut Model,
    start: u8,
    len: u8,
    max_bytes: u64,
) -> Vec<StoredEntry> {
    let count = model.entries.len() as u64;
    let from = model.first_index + count * u64::from(start) / 256;
    let to = (from + u64::from(len) % 40).min(model.last_index() + 1);
    let read = log.read(from, to, max_bytes).unwrap();
    assert_eq!(read.is_empty(), from == to);
    let mut total_bytes = 0;
    for (entry, index) in read.iter().zip(from..) {
        let expected = model.entry(index);
        assert_eq!(
            (entry.index, entry.term, entry.kind),
            (index, expected.term, expected.kind)
        );
        assert_eq!(&entry.payload[..], &expected.payload[..]);
        total_bytes += entry.payload.len() as u64;
    }
    assert!(read.len() == 1 || total_bytes <= max_bytes, "over budget");
    let next = from + read.len() as u64;
    if next < to {
        let next_bytes = model.entry(next).payload.len() as u64;
        assert!(
            total_bytes + next_bytes > max_bytes,
            "stopped early at {next}"
        );
    }
    if let Some(last) = read.last() {
        model.watermark = model.watermark.max(last.index);
    }
    read
}

/// Everything observable without handing out bytes (which would move the watermark).
fn check(log: &Log, model: &Model) {
    assert_eq!(log.first_index(), model.first_index);
    assert_eq!(log.last_index(), model.last_index());
    let last_term = model.entries.last().map_or(0, |entry| entry.term);
    assert_eq!(log.last_term(), last_term);
    assert!(log.durable_index() <= log.last_index());
    for index in model.first_index..=model.last_index() {
        assert_eq!(
            log.term_at(index).unwrap(),
            model.entry(index).term,
            "term_at({index})"
        );
    }
    assert!(log.term_at(model.last_index() + 1).is_err());
    if model.first_index > 1 {
        assert!(log.term_at(model.first_index - 1).is_err());
    }
    check_find_offset(log, model);
}

fn check_find_offset(log: &Log, model: &Model) {
    let smallest_key = model.entries.iter().find_map(|entry| entry.offset_key);
    for offset in (0..model.next_offset + 3).step_by(3) {
        match log.find_offset(offset) {
            Some(index) => {
                assert!((model.first_index..=model.last_index()).contains(&index));
                let key = model
                    .entry(index)
                    .offset_key
                    .expect("slots name keyed entries");
                assert!(key <= offset, "find_offset({offset}) = {index} holds {key}");
            }
            None => assert!(
                smallest_key.is_none_or(|smallest| offset < smallest),
                "find_offset({offset}) = None but offset {smallest_key:?} is in the log"
            ),
        }
    }
}

fn check_held(held: &[(StoredEntry, Vec<u8>)]) {
    for (entry, bytes) in held {
        assert_eq!(
            &entry.payload[..],
            &bytes[..],
            "held payload {} changed",
            entry.index
        );
    }
}

fn run(ops: Vec<Op>, dir: &Path) {
    let (mut log, report) = Log::open(dir, options(FsyncPolicy::Always)).unwrap();
    assert_eq!(report.cut, None);
    let mut model = Model {
        first_index: 1,
        entries: Vec::new(),
        term: 1,
        next_offset: 0,
        watermark: 0,
    };
    // Payloads read earlier in this Log instance: they must never change.
    let mut held: Vec<(StoredEntry, Vec<u8>)> = Vec::new();
    for op in ops {
        match op {
            Op::Append { entries, new_term } => {
                apply_append(&mut log, &mut model, &entries, new_term)
            }
            Op::Truncate { back } => {
                let end = model.last_index() + 1;
                let from = end
                    .saturating_sub(back)
                    .max(model.watermark + 1)
                    .max(model.first_index);
                if from <= end {
                    log.truncate_suffix(from).unwrap();
                    model.entries.truncate((from - model.first_index) as usize);
                    if from < end {
                        assert_eq!(log.durable_index(), log.last_index(), "synced");
                    }
                }
            }
            Op::Compact { fraction } => {
                let up_to =
                    model.first_index + model.entries.len() as u64 * u64::from(fraction) / 256;
                let old_first = model.first_index;
                log.compact_prefix(up_to).unwrap();
                let new_first = log.first_index();
                assert!(old_first <= new_first && new_first <= old_first.max(up_to + 1));
                assert!(new_first <= model.last_index() + 1);
                model.entries.drain(..(new_first - old_first) as usize);
                model.first_index = new_first;
            }
            Op::Reset { shift } => {
                let next = (model.last_index() + 1 + u64::from(shift % 8))
                    .saturating_sub(4)
                    .max(1);
                log.reset(next).unwrap();
                model.first_index = next;
                model.entries.clear();
                model.watermark = 0;
                assert_eq!(log.durable_index(), next - 1);
            }
            Op::Reopen { fsync } => {
                drop(log);
                held.clear();
                let (reopened, report) = Log::open(dir, options(fsync)).unwrap();
                assert_eq!(report.cut, None, "a clean close never needs a cut");
                assert_eq!(report.last_index, model.last_index());
                log = reopened;
                model.watermark = 0;
                assert_eq!(log.durable_index(), log.last_index());
            }
            Op::Read {
                start,
                len,
                max_bytes,
            } => {
                let read = apply_read(&log, &mut model, start, len, max_bytes);
                held.extend(read.into_iter().map(|entry| {
                    let bytes = entry.payload.to_vec();
                    (entry, bytes)
                }));
            }
            Op::Sync => {
                log.sync_now().unwrap();
                assert_eq!(log.durable_index(), log.last_index());
            }
            Op::Roll => {
                let (last_index, last_term) = (log.last_index(), log.last_term());
                log.roll().unwrap();
                let spans = log.segment_spans();
                let active = spans.last().unwrap();
                assert_eq!(
                    active.base_index,
                    last_index + 1,
                    "the active segment is new"
                );
                assert_eq!((log.last_index(), log.last_term()), (last_index, last_term));
                // Everything written so far now sits in sealed segments: a compaction through
                // the last index can delete all of it.
                log.compact_prefix(last_index).unwrap();
                assert_eq!(log.first_index(), last_index + 1);
                model.entries.clear();
                model.first_index = last_index + 1;
            }
        }
        check(&log, &model);
        check_held(&held);
    }
    // Finally every entry's content, through one read.
    let all = log
        .read(model.first_index, model.last_index() + 1, u64::MAX)
        .unwrap();
    assert_eq!(all.len(), model.entries.len());
    for (entry, expected) in all.iter().zip(&model.entries) {
        assert_eq!(&entry.payload[..], &expected.payload[..]);
    }
}

/// 24 cases keep CI at a few seconds even on a busy disk (each case fdatasyncs ~100 times);
/// `PROPTEST_CASES=1000` runs a deeper search.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op_strategy(), 1..150)) {
        let dir = tempfile::tempdir().unwrap();
        run(ops, dir.path());
    }
}
