//! The run's trace: with `KEEL_SIM_TRACE=1` every event is printed as it happens; always, a
//! hash of the events is kept so a replay can be shown identical (same seed, same hash).

use keel_raft::{Message, MessageBody, NodeId};

pub struct Trace {
    print: bool,
    hash: u64,
    pub events: u64,
}

const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Trace {
    pub fn from_environment() -> Trace {
        Trace {
            print: std::env::var("KEEL_SIM_TRACE").is_ok_and(|value| value == "1"),
            hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn hash_event(&mut self, now: u64, kind: u64, a: u64, b: u64) {
        self.events += 1;
        for word in [now, kind, a, b] {
            self.hash = (self.hash ^ word).wrapping_mul(FNV_PRIME);
        }
    }

    pub fn line(&mut self, now: u64, text: impl FnOnce() -> String) {
        if self.print {
            println!("{now:>7} {}", text());
        }
    }

    pub fn delivered(&mut self, now: u64, from: NodeId, to: NodeId, message: &Message) {
        let detail = match &message.body {
            MessageBody::AppendEntries(append) => {
                append.prev_log_index * 1_000 + append.entries.len() as u64
            }
            MessageBody::AppendEntriesResponse(response) => match response.result {
                keel_raft::AppendResult::Accepted { match_index } => match_index,
                keel_raft::AppendResult::Rejected { rejected_index, .. } => {
                    rejected_index + (1 << 40)
                }
            },
            MessageBody::PreVoteResponse(response) | MessageBody::RequestVoteResponse(response) => {
                u64::from(response.granted)
            }
            MessageBody::PreVote(request) | MessageBody::RequestVote(request) => {
                request.last_log_index
            }
            MessageBody::InstallSnapshot(chunk) => {
                chunk.meta.last_included_index * 1_000 + chunk.offset
            }
            MessageBody::InstallSnapshotResponse(response) => {
                response.last_included_index * 1_000 + response.received_bytes
            }
            MessageBody::ReadIndexCheck(check) | MessageBody::ReadIndexCheckResponse(check) => {
                check.round
            }
            MessageBody::TimeoutNow => 0,
            MessageBody::ForcedRequestVote(request) => request.last_log_index + (1 << 40),
        };
        self.hash_event(now, from * 100 + to, message.term, detail);
        if self.print {
            println!(
                "{now:>7} {from} -> {to} term {} {:?}",
                message.term, message.body
            );
        }
    }
}
