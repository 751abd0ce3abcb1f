//! The checker: reads a whole history (history.rs) and judges it against Keel's promise
//! (docs/CHAOS.md "The checker"): within one partition, messages acknowledged to one producer
//! appear in the order that producer sent them, each exactly once, at the offset they were
//! acknowledged with; consumers only ever see committed messages.
//!
//! The final log (the `Final` events, read after every fault was healed) is the truth. Against
//! it the checker counts:
//! - lost: acknowledged messages that are not at their acknowledged offset (absent, or
//!   elsewhere: `lost_elsewhere` says how many of them exist at another offset);
//! - duplicated: copies beyond the first of any message in the final log;
//! - reordered: acknowledged messages of one producer in one partition that follow (by first
//!   offset) a message of the same producer with a higher sequence number;
//! - dirty reads: distinct (partition, offset, message) a consumer read that the final log
//!   does not hold at that offset;
//! - unacked landed: messages whose send failed or never resolved but that are in the final
//!   log (allowed: their outcome was unknown);
//! - phantoms: messages in the final log that no producer sent (corruption), and offset gaps.
//!
//! And for the consumer group (group.rs; docs/CHAOS.md "The consumer group"), whose members
//! read the main topic and commit what they read while an offset watcher fetches the committed
//! offsets:
//! - group lost: acknowledged messages below their partition's final committed offset (the
//!   last one the watcher saw) that no member ever read: at least once across rebalances;
//! - group gap: acknowledged commits of offset c while a message of the final log below c had
//!   not been read by any member yet (in history order): a commit never skips a message;
//! - offset fetch stale: a fetched committed offset below a commit acknowledged before the
//!   fetch was sent, or one no member ever tried to commit (made up);
//! - group dirty: distinct (partition, offset, message) a member read that the final log does
//!   not hold there;
//! - a drain that did not reach every high watermark; duplicate reads are counted, not judged.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::history::{Event, Line, MessageId, Stored};
use crate::limits::MAX_EXAMPLES;

type TopicPartition = (String, u32);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The run's parameters, from the history's `start` line.
    pub seed: u64,
    pub nodes: u64,
    pub duration_s: u64,
    pub acked: u64,
    pub lost: u64,
    pub lost_elsewhere: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub dirty_reads: u64,
    pub unacked_landed: u64,
    pub phantoms: u64,
    pub offset_gaps: u64,
    pub sent: u64,
    pub failed: u64,
    pub reads: u64,
    /// Acknowledged messages below their partition's final log start: deleted by retention, so
    /// neither lost nor checked.
    pub expired: u64,
    /// Whether the final read reached every partition's high watermark.
    pub final_complete: bool,
    /// Messages the group's members read (`group_read` lines), and reads of an offset beyond
    /// the first (rebalances and failed commits make them: at least once, not exactly once).
    pub group_reads: u64,
    pub group_duplicates: u64,
    /// Acknowledged and failed commits, one per partition of a commit.
    pub group_commits: u64,
    pub group_commit_failures: u64,
    /// Distinct generations the members were assigned partitions in.
    pub group_generations: u64,
    /// The watcher's fetched offsets (`committed_seen` lines).
    pub committed_seen: u64,
    pub group_lost: u64,
    pub group_gap: u64,
    pub offset_fetch_stale: u64,
    pub group_dirty: u64,
    /// Whether the group's drain after the heal reached every high watermark (`None`: the run
    /// had no group, as histories from before it).
    pub group_drained: Option<bool>,
    /// Faults started, per kind.
    pub faults: BTreeMap<String, u64>,
    /// A few examples of each violation, for the post-mortem.
    pub examples: Vec<String>,
}

impl Report {
    /// Whether the history shows a safety violation (or a final log that was not fully read,
    /// which would make the other counts meaningless).
    pub fn violations(&self) -> u64 {
        self.lost
            + self.duplicated
            + self.reordered
            + self.dirty_reads
            + self.phantoms
            + self.offset_gaps
            + u64::from(!self.final_complete)
            + self.group_lost
            + self.group_gap
            + self.offset_fetch_stale
            + self.group_dirty
            + u64::from(self.group_drained == Some(false))
    }

    pub fn fault_count(&self, kind: &str) -> u64 {
        self.faults.get(kind).copied().unwrap_or(0)
    }

    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }

    fn example(&mut self, text: String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(text);
        }
    }
}

/// Judges a history.
pub fn check(lines: &[Line]) -> Report {
    let mut report = Report::default();
    let mut sent: HashSet<MessageId> = HashSet::new();
    let mut acks: BTreeMap<MessageId, (TopicPartition, u64)> = BTreeMap::new();
    let mut reads: HashSet<(TopicPartition, u64, Stored)> = HashSet::new();
    let mut final_log: BTreeMap<TopicPartition, BTreeMap<u64, Stored>> = BTreeMap::new();
    // Where each partition's log started when the final read reached it (0 unless retention
    // deleted a prefix): offsets below it are gone by design and not judged.
    let mut log_start: HashMap<TopicPartition, u64> = HashMap::new();
    let mut group = GroupHistory::default();
    for (index, line) in lines.iter().enumerate() {
        match &line.event {
            Event::Send { id, .. } => {
                sent.insert(*id);
            }
            Event::Ack {
                id,
                topic,
                partition,
                offset,
            } => {
                acks.insert(*id, ((topic.clone(), *partition), *offset));
            }
            Event::Fail { .. } => report.failed += 1,
            Event::Read {
                topic,
                partition,
                offset,
                stored,
                ..
            } => {
                report.reads += 1;
                reads.insert(((topic.clone(), *partition), *offset, stored.clone()));
            }
            Event::FaultStart { kind, .. } => *report.faults.entry(kind.clone()).or_default() += 1,
            Event::Final {
                topic,
                partition,
                offset,
                stored,
            } => {
                final_log
                    .entry((topic.clone(), *partition))
                    .or_default()
                    .insert(*offset, stored.clone());
            }
            Event::FinalDone { complete } => report.final_complete = *complete,
            Event::LogStart {
                topic,
                partition,
                offset,
            } => {
                let start = log_start.entry((topic.clone(), *partition)).or_default();
                *start = (*start).max(*offset);
            }
            Event::Start {
                seed,
                nodes,
                duration_s,
                ..
            } => {
                report.seed = *seed;
                report.nodes = *nodes;
                report.duration_s = *duration_s;
            }
            Event::GroupRead {
                topic,
                partition,
                offset,
                stored,
                ..
            } => group.reads.push(GroupRead {
                line: index,
                tp: (topic.clone(), *partition),
                offset: *offset,
                stored: stored.clone(),
            }),
            Event::GroupCommit {
                member,
                topic,
                partition,
                offset,
            } => {
                let tp = (topic.clone(), *partition);
                group.attempted.insert((tp.clone(), *offset));
                group.commits.push(GroupCommit {
                    line: index,
                    t_ms: line.t_ms,
                    member: *member,
                    tp,
                    offset: *offset,
                });
            }
            Event::GroupCommitFailed {
                topic,
                partition,
                offset,
                ..
            } => {
                report.group_commit_failures += 1;
                group
                    .attempted
                    .insert(((topic.clone(), *partition), *offset));
            }
            Event::GroupAssigned { generation, .. } => {
                group.generations.insert(*generation);
            }
            Event::CommittedSeen {
                topic,
                partition,
                offset,
                started_ms,
            } => group.seen.push(CommittedSeen {
                line: index,
                tp: (topic.clone(), *partition),
                offset: *offset,
                started_ms: *started_ms,
            }),
            Event::GroupDone { complete } => report.group_drained = Some(*complete),
            Event::FaultEnd { .. } | Event::Note { .. } => {}
        }
    }
    report.sent = sent.len() as u64;
    report.acked = acks.len() as u64;

    // Where each message sits in the final log (every copy), and the log's shape.
    let mut copies: HashMap<MessageId, Vec<(TopicPartition, u64)>> = HashMap::new();
    let floor = |tp: &TopicPartition| log_start.get(tp).copied().unwrap_or(0);
    for (tp, log) in final_log.iter_mut() {
        // A final read that met a moving log start may hold a few offsets below the last one
        // it met; they are not judged either.
        let start = floor(tp);
        log.retain(|&offset, _| offset >= start);
    }
    for (tp, log) in &final_log {
        for (expected, (&offset, stored)) in (floor(tp)..).zip(log.iter()) {
            if offset != expected {
                report.offset_gaps += 1;
                report.example(format!(
                    "{}/{}: final log has offset {offset} where {expected} was expected",
                    tp.0, tp.1
                ));
                break;
            }
            match stored {
                Stored::Message(id) => copies.entry(*id).or_default().push((tp.clone(), offset)),
                Stored::Foreign(text) => {
                    report.phantoms += 1;
                    report.example(format!(
                        "{}/{} offset {offset}: unknown value {text:?}",
                        tp.0, tp.1
                    ));
                }
            }
        }
    }
    for (id, places) in &copies {
        if !sent.contains(id) {
            report.phantoms += 1;
            report.example(format!(
                "{} is in the final log but was never sent",
                id.value()
            ));
        }
        if places.len() > 1 {
            report.duplicated += places.len() as u64 - 1;
            report.example(format!("{} duplicated at {places:?}", id.value()));
        }
        if !acks.contains_key(id) {
            report.unacked_landed += 1;
        }
    }

    for (id, (tp, offset)) in &acks {
        if *offset < floor(tp) {
            report.expired += 1;
            continue;
        }
        let at_offset = final_log.get(tp).and_then(|log| log.get(offset));
        if at_offset == Some(&Stored::Message(*id)) {
            continue;
        }
        report.lost += 1;
        let elsewhere = copies.get(id);
        if elsewhere.is_some() {
            report.lost_elsewhere += 1;
        }
        report.example(format!(
            "{} acked at {}/{} offset {offset}, final log there holds {at_offset:?}, copies at {elsewhere:?}",
            id.value(),
            tp.0,
            tp.1
        ));
    }

    // Producer order within a partition, over acknowledged messages at their first copy.
    for (tp, log) in &final_log {
        let mut highest: HashMap<u32, u64> = HashMap::new();
        let mut seen: HashSet<MessageId> = HashSet::new();
        for (offset, stored) in log {
            let Stored::Message(id) = stored else {
                continue;
            };
            if !acks.contains_key(id) || !seen.insert(*id) {
                continue;
            }
            let previous = highest.entry(id.producer).or_insert(id.seq);
            if id.seq < *previous {
                report.reordered += 1;
                report.example(format!(
                    "{}/{} offset {offset}: {} after p{}-{}",
                    tp.0,
                    tp.1,
                    id.value(),
                    id.producer,
                    previous
                ));
            } else {
                *previous = id.seq;
            }
        }
    }

    for (tp, offset, stored) in &reads {
        if *offset < floor(tp) {
            continue; // deleted by retention before the final read: nothing to compare with
        }
        let at_offset = final_log.get(tp).and_then(|log| log.get(offset));
        if at_offset != Some(stored) {
            report.dirty_reads += 1;
            report.example(format!(
                "{}/{} offset {offset}: a consumer read {stored:?}, final log holds {at_offset:?}",
                tp.0, tp.1
            ));
        }
    }
    check_group(&mut report, &group, &acks, &final_log, &floor);
    report
}

/// A member's read, at its line of the history.
struct GroupRead {
    line: usize,
    tp: TopicPartition,
    offset: u64,
    stored: Stored,
}

/// An acknowledged commit of one partition.
struct GroupCommit {
    line: usize,
    t_ms: u64,
    member: u32,
    tp: TopicPartition,
    offset: u64,
}

/// One partition's committed offset as the watcher fetched it.
struct CommittedSeen {
    line: usize,
    tp: TopicPartition,
    offset: Option<u64>,
    started_ms: u64,
}

/// The consumer group's part of a history.
#[derive(Default)]
struct GroupHistory {
    reads: Vec<GroupRead>,
    commits: Vec<GroupCommit>,
    /// Every (partition, offset) some member sent a commit of, acknowledged or not.
    attempted: HashSet<(TopicPartition, u64)>,
    generations: HashSet<i32>,
    seen: Vec<CommittedSeen>,
}

/// The consumer group's rules (module comment). `floor` is a partition's final log start.
fn check_group(
    report: &mut Report,
    group: &GroupHistory,
    acks: &BTreeMap<MessageId, (TopicPartition, u64)>,
    final_log: &BTreeMap<TopicPartition, BTreeMap<u64, Stored>>,
    floor: &dyn Fn(&TopicPartition) -> u64,
) {
    report.group_reads = group.reads.len() as u64;
    report.group_commits = group.commits.len() as u64;
    report.group_generations = group.generations.len() as u64;
    report.committed_seen = group.seen.len() as u64;

    // Dirty and duplicate reads; the line of each offset's first read.
    let mut first_read: HashMap<(TopicPartition, u64), usize> = HashMap::new();
    let mut read_values: HashSet<(TopicPartition, u64, Stored)> = HashSet::new();
    let mut dirty: HashSet<(TopicPartition, u64, Stored)> = HashSet::new();
    for read in &group.reads {
        match first_read.entry((read.tp.clone(), read.offset)) {
            std::collections::hash_map::Entry::Occupied(_) => report.group_duplicates += 1,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(read.line);
            }
        }
        read_values.insert((read.tp.clone(), read.offset, read.stored.clone()));
        if read.offset < floor(&read.tp) {
            continue; // deleted before the final read: nothing to compare with
        }
        let at_offset = final_log
            .get(&read.tp)
            .and_then(|log| log.get(&read.offset));
        if at_offset != Some(&read.stored)
            && dirty.insert((read.tp.clone(), read.offset, read.stored.clone()))
        {
            report.group_dirty += 1;
            report.example(format!(
                "{}/{} offset {}: a group member read {:?} (history line {}), final log holds {at_offset:?}",
                read.tp.0,
                read.tp.1,
                read.offset,
                read.stored,
                read.line + 1
            ));
        }
    }

    // At least once: everything acknowledged below the final committed offset was read.
    // The highest offset fetched: committed offsets only move forward (a fetch that went back
    // is judged below), and the drain's last fetches are among the watcher's.
    let mut final_committed: HashMap<&TopicPartition, u64> = HashMap::new();
    for seen in &group.seen {
        if let Some(offset) = seen.offset {
            let committed = final_committed.entry(&seen.tp).or_default();
            *committed = (*committed).max(offset);
        }
    }
    for (id, (tp, offset)) in acks {
        let committed = final_committed.get(tp).copied().unwrap_or(0);
        if *offset < floor(tp) || *offset >= committed {
            continue;
        }
        if !read_values.contains(&(tp.clone(), *offset, Stored::Message(*id))) {
            report.group_lost += 1;
            report.example(format!(
                "{} acked at {}/{} offset {offset}, below the group's final committed offset {committed}, was never read by a member",
                id.value(),
                tp.0,
                tp.1
            ));
        }
    }

    // No skipped message: per partition, the latest line by which every final-log offset up
    // to each one had been read (usize::MAX: one of them never was).
    let mut read_by: HashMap<&TopicPartition, Vec<(u64, usize)>> = HashMap::new();
    for (tp, log) in final_log {
        let start = floor(tp);
        let mut latest = 0_usize;
        let prefix = log
            .keys()
            .filter(|offset| **offset >= start)
            .map(|offset| {
                let line = first_read
                    .get(&(tp.clone(), *offset))
                    .copied()
                    .unwrap_or(usize::MAX);
                latest = latest.max(line);
                (*offset, latest)
            })
            .collect();
        read_by.insert(tp, prefix);
    }
    for commit in &group.commits {
        let Some(prefix) = read_by.get(&commit.tp) else {
            continue;
        };
        // The offsets of the final log below the committed one.
        let below = prefix.partition_point(|(offset, _)| *offset < commit.offset);
        if below == 0 || prefix[below - 1].1 < commit.line {
            continue;
        }
        report.group_gap += 1;
        let unread = prefix[..below]
            .iter()
            .map(|(offset, _)| *offset)
            .find(|offset| {
                first_read
                    .get(&(commit.tp.clone(), *offset))
                    .is_none_or(|line| *line >= commit.line)
            });
        report.example(format!(
            "member {} committed {}/{} offset {} (history line {}) before offset {unread:?} was read",
            commit.member,
            commit.tp.0,
            commit.tp.1,
            commit.offset,
            commit.line + 1
        ));
    }

    // Offset fetches: at least the last commit acknowledged before the fetch was sent, and
    // never an offset nobody tried to commit. Per partition, commits by acknowledgement time
    // with the highest offset acknowledged up to each.
    let mut acknowledged: HashMap<&TopicPartition, Vec<(u64, u64, usize)>> = HashMap::new();
    for commit in &group.commits {
        acknowledged
            .entry(&commit.tp)
            .or_default()
            .push((commit.t_ms, commit.offset, commit.line));
    }
    for commits in acknowledged.values_mut() {
        commits.sort_unstable();
        let mut highest: Option<(u64, usize)> = None;
        for entry in commits.iter_mut() {
            if highest.is_none_or(|(offset, _)| entry.1 > offset) {
                highest = Some((entry.1, entry.2));
            }
            (entry.1, entry.2) = highest.expect("set above");
        }
    }
    for seen in &group.seen {
        if let Some(offset) = seen.offset {
            if !group.attempted.contains(&(seen.tp.clone(), offset)) {
                report.offset_fetch_stale += 1;
                report.example(format!(
                    "{}/{}: an offset fetch (history line {}) answered {offset}, which no member ever committed",
                    seen.tp.0,
                    seen.tp.1,
                    seen.line + 1
                ));
                continue;
            }
        }
        let Some(commits) = acknowledged.get(&seen.tp) else {
            continue;
        };
        // Commits acknowledged strictly before the fetch was sent (ms truncation keeps a
        // strict comparison honest: equal stamps may be either order).
        let before = commits.partition_point(|(t_ms, _, _)| *t_ms < seen.started_ms);
        if before == 0 {
            continue;
        }
        let (_, required, commit_line) = commits[before - 1];
        if seen.offset.is_none_or(|offset| offset < required) {
            report.offset_fetch_stale += 1;
            report.example(format!(
                "{}/{}: an offset fetch sent at {} ms (history line {}) answered {:?}, below the commit of {required} acknowledged before it (history line {})",
                seen.tp.0,
                seen.tp.1,
                seen.started_ms,
                seen.line + 1,
                seen.offset,
                commit_line + 1
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(producer: u32, seq: u64) -> MessageId {
        MessageId { producer, seq }
    }

    fn line(event: Event) -> Line {
        Line { t_ms: 0, event }
    }

    fn send(message: MessageId) -> Line {
        line(Event::Send {
            id: message,
            topic: "t".into(),
            partition: 0,
        })
    }

    fn ack(message: MessageId, offset: u64) -> Line {
        line(Event::Ack {
            id: message,
            topic: "t".into(),
            partition: 0,
            offset,
        })
    }

    fn stored_at(offset: u64, message: MessageId) -> Line {
        line(Event::Final {
            topic: "t".into(),
            partition: 0,
            offset,
            stored: Stored::Message(message),
        })
    }

    fn read(offset: u64, message: MessageId) -> Line {
        line(Event::Read {
            consumer: 0,
            topic: "t".into(),
            partition: 0,
            offset,
            stored: Stored::Message(message),
        })
    }

    fn done() -> Line {
        line(Event::FinalDone { complete: true })
    }

    #[test]
    fn a_clean_history_has_no_violations() {
        let history = vec![
            send(id(0, 0)),
            send(id(0, 1)),
            ack(id(0, 0), 0),
            ack(id(0, 1), 1),
            read(0, id(0, 0)),
            stored_at(0, id(0, 0)),
            stored_at(1, id(0, 1)),
            done(),
        ];
        let report = check(&history);
        assert_eq!(report.violations(), 0, "{report:?}");
        assert_eq!(report.acked, 2);
    }

    fn log_start(offset: u64) -> Line {
        line(Event::LogStart {
            topic: "t".into(),
            partition: 0,
            offset,
        })
    }

    #[test]
    fn below_the_log_start_nothing_is_judged_and_above_it_everything_is() {
        // Retention deleted offsets 0 and 1; 2 and 3 were read back.
        let mut history = vec![
            send(id(0, 0)),
            send(id(0, 1)),
            send(id(0, 2)),
            send(id(0, 3)),
            ack(id(0, 0), 0),
            ack(id(0, 1), 1),
            ack(id(0, 2), 2),
            ack(id(0, 3), 3),
            read(0, id(0, 0)),
            log_start(2),
            stored_at(2, id(0, 2)),
            stored_at(3, id(0, 3)),
            done(),
        ];
        let report = check(&history);
        assert_eq!(report.violations(), 0, "{report:?}");
        assert_eq!((report.expired, report.offset_gaps), (2, 0));
        // An acknowledged message above the log start that is missing is still lost.
        history.retain(|line| !matches!(line.event, Event::Final { offset: 3, .. }));
        let report = check(&history);
        assert_eq!((report.lost, report.expired), (1, 2));
        // And a final log with a hole above the log start still has a gap.
        history.push(stored_at(4, id(0, 3)));
        assert_eq!(check(&history).offset_gaps, 1);
    }

    #[test]
    fn an_acknowledged_message_missing_from_the_final_log_is_lost() {
        let history = vec![
            send(id(0, 0)),
            send(id(0, 1)),
            ack(id(0, 0), 0),
            ack(id(0, 1), 1),
            stored_at(0, id(0, 0)),
            done(),
        ];
        let report = check(&history);
        assert_eq!(report.lost, 1);
        assert_eq!(report.lost_elsewhere, 0);
    }

    #[test]
    fn an_acknowledged_message_at_another_offset_is_lost_elsewhere() {
        let history = vec![
            send(id(0, 0)),
            send(id(1, 0)),
            ack(id(0, 0), 0),
            stored_at(0, id(1, 0)),
            stored_at(1, id(0, 0)),
            done(),
        ];
        let report = check(&history);
        assert_eq!((report.lost, report.lost_elsewhere), (1, 1));
        assert_eq!(report.unacked_landed, 1, "p1-0 was never acked but landed");
    }

    #[test]
    fn copies_beyond_the_first_are_duplicates() {
        let history = vec![
            send(id(0, 0)),
            ack(id(0, 0), 1),
            stored_at(0, id(0, 0)),
            stored_at(1, id(0, 0)),
            stored_at(2, id(0, 0)),
            done(),
        ];
        let report = check(&history);
        assert_eq!(report.duplicated, 2);
        assert_eq!(report.lost, 0);
    }

    #[test]
    fn a_producer_s_acknowledged_messages_out_of_send_order_are_reordered() {
        let history = vec![
            send(id(0, 0)),
            send(id(0, 1)),
            send(id(1, 0)),
            ack(id(0, 0), 2),
            ack(id(0, 1), 0),
            ack(id(1, 0), 1),
            stored_at(0, id(0, 1)),
            stored_at(1, id(1, 0)),
            stored_at(2, id(0, 0)),
            done(),
        ];
        let report = check(&history);
        assert_eq!(report.reordered, 1);
        assert_eq!(report.lost, 0);
    }

    #[test]
    fn a_read_the_final_log_does_not_hold_is_dirty() {
        let history = vec![
            send(id(0, 0)),
            send(id(0, 1)),
            ack(id(0, 1), 0),
            read(0, id(0, 0)),
            read(0, id(0, 0)),
            read(5, id(0, 1)),
            stored_at(0, id(0, 1)),
            done(),
        ];
        let report = check(&history);
        assert_eq!(
            report.dirty_reads, 2,
            "distinct dirty reads: offsets 0 and 5"
        );
    }

    fn group_read(offset: u64, message: MessageId) -> Line {
        line(Event::GroupRead {
            member: 0,
            topic: "t".into(),
            partition: 0,
            offset,
            stored: Stored::Message(message),
        })
    }

    fn group_commit(t_ms: u64, offset: u64) -> Line {
        Line {
            t_ms,
            event: Event::GroupCommit {
                member: 0,
                topic: "t".into(),
                partition: 0,
                offset,
            },
        }
    }

    fn seen(started_ms: u64, offset: Option<u64>) -> Line {
        Line {
            t_ms: started_ms + 5,
            event: Event::CommittedSeen {
                topic: "t".into(),
                partition: 0,
                offset,
                started_ms,
            },
        }
    }

    /// Three acknowledged messages, read and committed in two steps by the group, watched and
    /// drained: every group rule holds.
    fn clean_group_history() -> Vec<Line> {
        vec![
            send(id(0, 0)),
            send(id(0, 1)),
            send(id(0, 2)),
            ack(id(0, 0), 0),
            ack(id(0, 1), 1),
            ack(id(0, 2), 2),
            seen(10, None),
            group_read(0, id(0, 0)),
            group_read(1, id(0, 1)),
            group_commit(20, 2),
            seen(30, Some(2)),
            // A rebalance: the next member starts at the committed offset, and reads offset 1
            // again too (a duplicate, allowed).
            group_read(1, id(0, 1)),
            group_read(2, id(0, 2)),
            group_commit(40, 3),
            seen(50, Some(3)),
            stored_at(0, id(0, 0)),
            stored_at(1, id(0, 1)),
            stored_at(2, id(0, 2)),
            done(),
            line(Event::GroupDone { complete: true }),
        ]
    }

    #[test]
    fn a_clean_group_history_has_no_violations() {
        let report = check(&clean_group_history());
        assert_eq!(report.violations(), 0, "{report:?}");
        assert_eq!((report.group_reads, report.group_commits), (4, 2));
        assert_eq!(report.group_duplicates, 1);
        assert_eq!(report.committed_seen, 3);
        assert_eq!(report.group_drained, Some(true));
    }

    #[test]
    fn an_acknowledged_message_below_the_committed_offset_that_no_member_read_is_group_lost() {
        let mut history = clean_group_history();
        // Nobody read offset 2, yet the group ends committed past it (the commit itself then
        // skips it too).
        history.retain(|line| !matches!(line.event, Event::GroupRead { offset: 2, .. }));
        let report = check(&history);
        assert_eq!(report.group_lost, 1, "{report:?}");
        assert_eq!(report.group_gap, 1, "{report:?}");
        // Unread but above the final committed offset: not yet due, not lost.
        let mut history = clean_group_history();
        history.retain(|line| {
            !matches!(
                line.event,
                Event::GroupRead { offset: 2, .. }
                    | Event::GroupCommit { offset: 3, .. }
                    | Event::CommittedSeen {
                        offset: Some(3),
                        ..
                    }
            )
        });
        let report = check(&history);
        assert_eq!((report.group_lost, report.group_gap), (0, 0), "{report:?}");
    }

    #[test]
    fn a_commit_past_a_message_no_member_had_read_yet_is_a_group_gap() {
        let mut history = clean_group_history();
        // Offset 2 is read only after the commit of 3 that covers it.
        let read_2 = history
            .iter()
            .position(|line| matches!(line.event, Event::GroupRead { offset: 2, .. }))
            .unwrap();
        let late = history.remove(read_2);
        history.insert(history.len() - 2, late);
        let report = check(&history);
        assert_eq!(report.group_gap, 1, "{report:?}");
        assert_eq!(report.group_lost, 0, "it was read in the end");
        assert!(report.violations() > 0);
    }

    #[test]
    fn an_offset_fetch_below_an_earlier_acknowledged_commit_is_stale() {
        let mut history = clean_group_history();
        // Sent at 45 ms, after the commit of 3 was acknowledged (40 ms), answered 2.
        history.insert(history.len() - 2, seen(45, Some(2)));
        assert_eq!(check(&history).offset_fetch_stale, 1);
        // Answered "nothing committed" after a commit: stale too.
        let mut history = clean_group_history();
        history.insert(history.len() - 2, seen(45, None));
        assert_eq!(check(&history).offset_fetch_stale, 1);
        // Sent at the commit's own millisecond: either order, so not judged.
        let mut history = clean_group_history();
        history.insert(history.len() - 2, seen(40, Some(2)));
        assert_eq!(check(&history).offset_fetch_stale, 0);
    }

    #[test]
    fn an_offset_fetch_answering_an_offset_nobody_committed_is_stale() {
        let mut history = clean_group_history();
        history.insert(history.len() - 2, seen(60, Some(7)));
        let report = check(&history);
        assert_eq!(report.offset_fetch_stale, 1, "{report:?}");
        // A failed commit's offset may have been applied: fetching it is not made up.
        let mut history = clean_group_history();
        history.push(line(Event::GroupCommitFailed {
            member: 1,
            topic: "t".into(),
            partition: 0,
            offset: 3,
            error: "timed out".into(),
        }));
        history.retain(|line| !matches!(line.event, Event::GroupCommit { offset: 3, .. }));
        let report = check(&history);
        assert_eq!(report.offset_fetch_stale, 0, "{report:?}");
        assert_eq!(report.group_commit_failures, 1);
    }

    #[test]
    fn a_group_read_the_final_log_does_not_hold_is_group_dirty() {
        let mut history = clean_group_history();
        history.insert(7, group_read(0, id(9, 9)));
        let report = check(&history);
        assert_eq!(report.group_dirty, 1, "{report:?}");
        assert_eq!(
            report.dirty_reads, 0,
            "plain consumers' reads are judged apart"
        );
    }

    #[test]
    fn a_drain_that_did_not_finish_fails_the_run_and_old_histories_have_none() {
        let mut history = clean_group_history();
        history.pop();
        history.push(line(Event::GroupDone { complete: false }));
        assert_eq!(check(&history).violations(), 1);
        // A history from before consumer groups: no group events, no group verdict.
        let report = check(&[
            send(id(0, 0)),
            ack(id(0, 0), 0),
            stored_at(0, id(0, 0)),
            done(),
        ]);
        assert_eq!(report.violations(), 0);
        assert_eq!(report.group_drained, None);
    }

    #[test]
    fn an_incomplete_final_read_or_a_phantom_fails_the_run() {
        let history = vec![
            send(id(0, 0)),
            stored_at(0, id(0, 0)),
            stored_at(1, id(7, 7)),
            line(Event::FinalDone { complete: false }),
        ];
        let report = check(&history);
        assert_eq!(report.phantoms, 1);
        assert!(!report.final_complete);
        assert_eq!(report.violations(), 2);
    }
}
