//! Random proposals. Each producer has at most one proposal in flight (so its acknowledged
//! proposals must appear in the log in acknowledgement order); it sends to the node it believes
//! leads, follows redirects, backs off on `Overloaded`, and gives up on a proposal whose node
//! crashed or that was not applied in time (its outcome is then unknown, as for a client).

use bytes::Bytes;
use keel_raft::{Index, NodeId, Term};

pub const PROPOSAL_TIMEOUT_UNITS: u64 = 2_000;

#[derive(Clone, Debug)]
pub struct Pending {
    pub node: NodeId,
    pub index: Index,
    pub term: Term,
    pub payload: Bytes,
    pub deadline: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Producer {
    pub leader_guess: Option<NodeId>,
    pub pending: Option<Pending>,
    pub next_attempt_at: u64,
    pub sequence: u64,
    /// Topics this producer asked to create and has not asked to delete yet, oldest first.
    pub topics: std::collections::VecDeque<String>,
}

pub struct Workload {
    pub producers: Vec<Producer>,
    pub proposals_accepted: u64,
    pub proposals_acknowledged: u64,
}

impl Workload {
    pub fn new(producer_count: usize) -> Workload {
        Workload {
            producers: vec![Producer::default(); producer_count],
            proposals_accepted: 0,
            proposals_acknowledged: 0,
        }
    }

    /// A unique payload: producer, sequence, and padding of a length derived from both.
    pub fn next_payload(&mut self, producer: usize) -> Bytes {
        let state = &mut self.producers[producer];
        state.sequence += 1;
        let mut text = format!("p{producer}s{}", state.sequence);
        let padding = (state.sequence as usize * 7 + producer * 13) % 40;
        text.extend(std::iter::repeat_n('.', padding));
        Bytes::from(text)
    }

    /// Producers whose pending proposal died with `node`.
    pub fn node_crashed(&mut self, node: NodeId) {
        for producer in &mut self.producers {
            if producer
                .pending
                .as_ref()
                .is_some_and(|pending| pending.node == node)
            {
                producer.pending = None;
            }
        }
    }

    /// `node` applied `(index, term)`: returns the producer whose proposal that acknowledges.
    pub fn applied(
        &mut self,
        node: NodeId,
        index: Index,
        term: Term,
        payload: &Bytes,
    ) -> Option<usize> {
        for (number, producer) in self.producers.iter_mut().enumerate() {
            let Some(pending) = &producer.pending else {
                continue;
            };
            if pending.node == node && pending.index == index {
                let acknowledged = pending.term == term && pending.payload == *payload;
                producer.pending = None;
                if acknowledged {
                    self.proposals_acknowledged += 1;
                    return Some(number);
                }
            }
        }
        None
    }

    pub fn expire(&mut self, now: u64) {
        for producer in &mut self.producers {
            if producer
                .pending
                .as_ref()
                .is_some_and(|pending| pending.deadline <= now)
            {
                producer.pending = None;
            }
        }
    }

    pub fn in_flight(&self) -> usize {
        self.producers
            .iter()
            .filter(|producer| producer.pending.is_some())
            .count()
    }
}
