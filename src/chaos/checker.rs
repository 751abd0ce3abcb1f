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
    for line in lines {
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
    report
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
