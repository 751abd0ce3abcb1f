//! The simulated network: every message is delayed by a random number of time units (so
//! messages reorder), may be dropped or duplicated, and crosses only links that are not cut.
//! A cut link is one-way (`from -> to`); a symmetric partition cuts both directions.

use std::collections::{BTreeMap, BTreeSet};

use keel_raft::{Incarnation, Message, NodeId};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Copy, Debug)]
pub struct NetworkFaults {
    pub drop_probability: f64,
    pub duplicate_probability: f64,
    /// Delays are drawn from `1..=max_delay_units`.
    pub max_delay_units: u64,
}

impl NetworkFaults {
    pub const NONE: NetworkFaults = NetworkFaults {
        drop_probability: 0.0,
        duplicate_probability: 0.0,
        max_delay_units: 1,
    };
}

pub struct Envelope {
    pub from: NodeId,
    /// The sender's incarnation, as the real transport carries it (`RaftNode::step_from`).
    pub from_incarnation: Incarnation,
    pub to: NodeId,
    pub message: Message,
}

pub struct Network {
    pub faults: NetworkFaults,
    cut_links: BTreeSet<(NodeId, NodeId)>,
    /// Keyed by (delivery time, sequence number): delivery order is deterministic.
    in_flight: BTreeMap<(u64, u64), Envelope>,
    sequence: u64,
    pub messages_sent: u64,
}

impl Network {
    pub fn new(faults: NetworkFaults) -> Network {
        Network {
            faults,
            cut_links: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            sequence: 0,
            messages_sent: 0,
        }
    }

    pub fn send(&mut self, rng: &mut ChaCha8Rng, now: u64, envelope: Envelope) {
        self.messages_sent += 1;
        if self.is_cut(envelope.from, envelope.to) || rng.random_bool(self.faults.drop_probability)
        {
            return;
        }
        if rng.random_bool(self.faults.duplicate_probability) {
            let copy = Envelope {
                from: envelope.from,
                from_incarnation: envelope.from_incarnation,
                to: envelope.to,
                message: envelope.message.clone(),
            };
            self.enqueue(rng, now, copy);
        }
        self.enqueue(rng, now, envelope);
    }

    fn enqueue(&mut self, rng: &mut ChaCha8Rng, now: u64, envelope: Envelope) {
        let delay = rng.random_range(1..=self.faults.max_delay_units);
        self.sequence += 1;
        self.in_flight
            .insert((now + delay, self.sequence), envelope);
    }

    /// The next message due at or before `now` whose link is still open (messages on a link
    /// cut while they were in flight are lost).
    pub fn next_due(&mut self, now: u64) -> Option<Envelope> {
        loop {
            let (&key, _) = self.in_flight.first_key_value()?;
            if key.0 > now {
                return None;
            }
            let envelope = self.in_flight.remove(&key).expect("key just seen");
            if !self.is_cut(envelope.from, envelope.to) {
                return Some(envelope);
            }
        }
    }

    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut_links.contains(&(from, to))
    }

    pub fn cut(&mut self, from: NodeId, to: NodeId) {
        self.cut_links.insert((from, to));
    }

    /// Cuts every link between the two sides, both ways.
    pub fn partition(&mut self, side_a: &[NodeId], side_b: &[NodeId]) {
        for &a in side_a {
            for &b in side_b {
                self.cut(a, b);
                self.cut(b, a);
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut_links.clear();
    }

    pub fn has_cuts(&self) -> bool {
        !self.cut_links.is_empty()
    }

    pub fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }
}
