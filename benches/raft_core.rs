//! Benchmark of the Raft core alone (no I/O): a 3-node cluster in memory, one thread,
//! synchronous in-memory persistence, messages delivered in order. It keeps 1,000 proposals in
//! flight at the leader and measures committed entries per second and messages per committed
//! entry, with batching and pipelining on and off. `cargo bench --bench raft_core`.
//!
//! Batching off = `max_append_bytes = 1` (every AppendEntries carries one entry); pipelining
//! off = `max_inflight_msgs = 1`. Messages counted: every message any node sends (AppendEntries
//! and their responses; no ticks run after the election, so no heartbeats).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use keel_raft::{
    Config, Configuration, MemoryLog, Message, NodeId, RaftNode, RecoveredState, Role,
};

const CONCURRENT_PROPOSALS: u64 = 1_000;
const PAYLOAD_BYTES: usize = 100;

struct Setting {
    name: &'static str,
    batching: bool,
    pipelining: bool,
    entries_to_commit: u64,
}

struct Figures {
    entries_per_second: f64,
    messages_per_entry: f64,
}

fn cluster(setting: &Setting) -> Vec<RaftNode<MemoryLog>> {
    (1..=3)
        .map(|id| {
            let mut config = Config::new(id, id);
            if !setting.batching {
                config.max_append_bytes = 1;
            }
            if !setting.pipelining {
                config.max_inflight_msgs = 1;
            }
            let configuration = Configuration::with_voters([1, 2, 3]);
            RaftNode::new(
                config,
                configuration,
                MemoryLog::new(),
                RecoveredState::default(),
            )
            .expect("valid")
        })
        .collect()
}

/// Handles every node's Ready (persist at once, then send everything, then apply); returns the
/// number of messages sent and the leader's newly applied entries.
fn drive(
    nodes: &mut [RaftNode<MemoryLog>],
    network: &mut VecDeque<(NodeId, NodeId, Message)>,
) -> (u64, u64) {
    let (mut sent, mut applied_at_leader) = (0, 0);
    for node in nodes.iter_mut() {
        while node.has_ready() {
            let ready = node.ready();
            node.storage_mut()
                .write(ready.truncate_from, &ready.entries);
            if let Some((index, term)) = ready.last_entry() {
                node.on_persisted(index, term);
            }
            for batch in ready
                .messages
                .into_iter()
                .chain(ready.messages_after_persist)
            {
                for message in batch.messages {
                    sent += 1;
                    network.push_back((node.id(), batch.to, message));
                }
            }
            if let Some(last) = ready.committed_entries.last() {
                if node.role() == Role::Leader {
                    applied_at_leader += ready.committed_entries.len() as u64;
                }
                node.on_applied(last.index);
            }
        }
    }
    (sent, applied_at_leader)
}

fn run(setting: &Setting) -> Figures {
    let mut nodes = cluster(setting);
    let mut network = VecDeque::new();
    nodes[0].campaign();
    while nodes[0].role() != Role::Leader || nodes[0].commit_index() == 0 {
        drive(&mut nodes, &mut network);
        while let Some((from, to, message)) = network.pop_front() {
            nodes[(to - 1) as usize].step(from, message);
        }
    }
    let payload = Bytes::from(vec![7u8; PAYLOAD_BYTES]);
    let (mut proposed, mut committed, mut messages) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    while committed < setting.entries_to_commit {
        while proposed - committed < CONCURRENT_PROPOSALS && proposed < setting.entries_to_commit {
            nodes[0]
                .propose(payload.clone())
                .expect("the leader accepts");
            proposed += 1;
        }
        let (sent, applied) = drive(&mut nodes, &mut network);
        messages += sent;
        committed += applied;
        while let Some((from, to, message)) = network.pop_front() {
            nodes[(to - 1) as usize].step(from, message);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    Figures {
        entries_per_second: committed as f64 / elapsed,
        messages_per_entry: messages as f64 / committed as f64,
    }
}

fn main() {
    let settings = [
        Setting {
            name: "batching on,  pipelining on ",
            batching: true,
            pipelining: true,
            entries_to_commit: 1_000_000,
        },
        Setting {
            name: "batching on,  pipelining off",
            batching: true,
            pipelining: false,
            entries_to_commit: 1_000_000,
        },
        Setting {
            name: "batching off, pipelining on ",
            batching: false,
            pipelining: true,
            entries_to_commit: 200_000,
        },
        Setting {
            name: "batching off, pipelining off",
            batching: false,
            pipelining: false,
            entries_to_commit: 100_000,
        },
    ];
    println!("raft core, 3 nodes in memory, {CONCURRENT_PROPOSALS} proposals in flight, {PAYLOAD_BYTES}-byte payloads");
    let mut figures = Vec::new();
    for setting in &settings {
        let result = run(setting);
        println!(
            "{}: {:>12.0} committed entries/s  {:>8.4} messages/committed entry",
            setting.name, result.entries_per_second, result.messages_per_entry
        );
        figures.push(result);
    }
    let reduction = figures[2].messages_per_entry / figures[0].messages_per_entry;
    println!("batching cuts messages per committed entry {reduction:.0}x (pipelining on)");
    assert!(
        reduction >= 10.0,
        "batching must cut messages per committed entry at least 10x"
    );
}
