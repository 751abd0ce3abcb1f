//! The run's history: every operation the harness performed or observed, one JSON object per
//! line (`history.jsonl`), in the order the harness saw them. The checker reads this file back
//! at the end, so a saved history can be re-checked after the fact (`keel-chaos --check FILE`).
//!
//! Messages are named by `(producer, seq)`: the value a producer sends is `p<producer>-<seq>`,
//! with `seq` counting up from 0 per producer, so every message in the final log can be traced
//! to exactly one send.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// One message's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId {
    pub producer: u32,
    pub seq: u64,
}

impl MessageId {
    /// The value sent for this message.
    pub fn value(&self) -> String {
        format!("p{}-{}", self.producer, self.seq)
    }

    /// Parses a value written by [`MessageId::value`]; `None` for anything else.
    pub fn parse(value: &[u8]) -> Option<MessageId> {
        let text = std::str::from_utf8(value).ok()?;
        let (producer, seq) = text.strip_prefix('p')?.split_once('-')?;
        Some(MessageId {
            producer: producer.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// A message as it is stored: its value parsed, or the raw text when it is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stored {
    Message(MessageId),
    Foreign(String),
}

impl Stored {
    pub fn from_value(value: &[u8]) -> Stored {
        match MessageId::parse(value) {
            Some(id) => Stored::Message(id),
            None => Stored::Foreign(String::from_utf8_lossy(value).into_owned()),
        }
    }
}

/// Everything the history records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Event {
    /// The run's parameters, first line.
    Start {
        seed: u64,
        nodes: u64,
        duration_s: u64,
        topics: Vec<(String, u32)>,
    },
    /// A producer handed a message to the SDK.
    Send {
        id: MessageId,
        topic: String,
        partition: u32,
    },
    /// The send was acknowledged at this offset.
    Ack {
        id: MessageId,
        topic: String,
        partition: u32,
        offset: u64,
    },
    /// The send failed (or never resolved): its outcome is unknown, it may have landed.
    Fail { id: MessageId, error: String },
    /// A consumer read this message at this offset while the faults ran.
    Read {
        consumer: u32,
        topic: String,
        partition: u32,
        offset: u64,
        stored: Stored,
    },
    /// A fault began (`kind`: kill, pause, partition, wipe; `detail` says which variant).
    FaultStart {
        kind: String,
        detail: String,
        nodes: Vec<u64>,
    },
    /// The fault was healed.
    FaultEnd { kind: String, detail: String },
    /// Something worth knowing in a post-mortem (a node slow to come back, a client error).
    Note { text: String },
    /// One message of the final log, read after every fault was healed.
    Final {
        topic: String,
        partition: u32,
        offset: u64,
        stored: Stored,
    },
    /// The final read finished: every partition was read up to its high watermark.
    FinalDone { complete: bool },
    /// The final read found the partition's log starting at `offset` (retention deleted what
    /// was below it): the checker judges only offsets from there on.
    LogStart {
        topic: String,
        partition: u32,
        offset: u64,
    },
    /// A member of the consumer group (group.rs) read this message at this offset.
    GroupRead {
        member: u32,
        topic: String,
        partition: u32,
        offset: u64,
        stored: Stored,
    },
    /// A member's commit of `offset` (the next offset to read) was acknowledged. Recorded after
    /// the commit returned, so every read recorded before it had happened before it.
    GroupCommit {
        member: u32,
        topic: String,
        partition: u32,
        offset: u64,
    },
    /// A member's commit of `offset` failed (refused after a rebalance, or its outcome unknown:
    /// it may still have been applied).
    GroupCommitFailed {
        member: u32,
        topic: String,
        partition: u32,
        offset: u64,
        error: String,
    },
    /// A member joined a generation of the group and was given these partitions.
    GroupAssigned {
        member: u32,
        generation: i32,
        partitions: Vec<(String, u32)>,
    },
    /// The offset watcher's fetch of the group's committed offset, sent at `started_ms` (the
    /// history's time base, as `Line::t_ms`); `None`: nothing committed.
    CommittedSeen {
        topic: String,
        partition: u32,
        offset: Option<u64>,
        started_ms: u64,
    },
    /// The group's drain after the heal ended: `complete` when its committed offset of every
    /// partition had reached the partition's high watermark.
    GroupDone { complete: bool },
}

/// A line of the history file: the event and when it happened (ms since the run started).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    pub t_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// The writer side, shared by every task of the run.
pub struct History {
    file: Mutex<BufWriter<File>>,
    start: Instant,
}

impl History {
    pub fn create(path: &Path) -> std::io::Result<History> {
        Ok(History {
            file: Mutex::new(BufWriter::new(File::create(path)?)),
            start: Instant::now(),
        })
    }

    /// Now, in the history's time base (what `record` would stamp a line with).
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn record(&self, event: Event) {
        let line = Line {
            t_ms: self.now_ms(),
            event,
        };
        let mut text = serde_json::to_string(&line).expect("history events serialise");
        text.push('\n');
        let mut file = self.file.lock().expect("history lock");
        // A history that cannot be written makes the run meaningless: stop loudly.
        file.write_all(text.as_bytes())
            .expect("writing the history file");
    }

    pub fn note(&self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("keel-chaos: {text}");
        self.record(Event::Note { text });
    }

    pub fn flush(&self) -> std::io::Result<()> {
        self.file.lock().expect("history lock").flush()
    }
}

/// Reads a history file back.
pub fn read(path: &Path) -> anyhow::Result<Vec<Line>> {
    let file = File::open(path)?;
    let mut lines = Vec::new();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&line)
            .map_err(|error| anyhow::anyhow!("{}:{}: {error}", path.display(), number + 1))?;
        lines.push(parsed);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_values_round_trip_and_foreign_values_are_kept() {
        let id = MessageId {
            producer: 3,
            seq: 1234,
        };
        assert_eq!(id.value(), "p3-1234");
        assert_eq!(MessageId::parse(b"p3-1234"), Some(id));
        assert_eq!(MessageId::parse(b"p3"), None);
        assert_eq!(MessageId::parse(b"x3-1"), None);
        assert_eq!(
            Stored::from_value(b"hello"),
            Stored::Foreign("hello".into())
        );
    }

    #[test]
    fn a_line_round_trips_through_json() {
        let line = Line {
            t_ms: 7,
            event: Event::Ack {
                id: MessageId {
                    producer: 1,
                    seq: 2,
                },
                topic: "chaos-0".into(),
                partition: 1,
                offset: 9,
            },
        };
        let text = serde_json::to_string(&line).unwrap();
        assert!(text.contains("\"op\":\"ack\""), "{text}");
        let back: Line = serde_json::from_str(&text).unwrap();
        assert_eq!(back.event, line.event);
    }
}
