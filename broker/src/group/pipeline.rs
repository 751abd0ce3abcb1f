//! The ordering rules of a group's pipelined fdatasync, as a pure state machine: no tokio, no
//! files. The driver (group/driver.rs) tells it what it wrote, which sync it started and which
//! finished; it answers what became durable (for the core's `on_persisted`) and which messages
//! may now leave. Kept apart from the I/O so its rules are tested on their own, under every
//! interleaving of writes, sync starts, sync completions and truncations (tests below).
//!
//! The rules:
//! - At most one sync runs; it covers exactly what was written when it started.
//! - Durability is reported only for the last entry a finished sync covered, never beyond.
//! - A message that needs durability leaves only once every write before it is durable, and
//!   such messages leave in the order the core produced them.
//! - A truncation or shutdown first settles everything: the sync in flight finishes, the log
//!   syncs the rest as its policy says, and every waiting message leaves.

use keel_raft::{Index, PeerMessages, Term};

/// What a finished sync (or a settle) releases.
#[derive(Debug, Default)]
pub struct Released {
    /// Entries now durable, in order, for the core's `on_persisted` (a settle reports the
    /// sync in flight's last entry and then the newest write, since a truncation may make the
    /// core refuse the second).
    pub persisted: Vec<(Index, Term)>,
    /// Messages that waited for that durability, in the order the core produced them.
    pub messages: Vec<PeerMessages>,
}

#[derive(Debug)]
struct InFlight {
    /// The last entry written when the sync began: what its end makes durable.
    last: (Index, Term),
    /// Messages queued before the sync started: its end releases them.
    messages: Vec<PeerMessages>,
}

/// Planted bugs in the pipeline, for proving that the tests catch them (docs/ARCHITECTURE.md
/// "Testing"). Compiled only with the `fault-injection` feature; all off by default.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverBugs {
    /// A finished sync reports the newest write durable instead of what the sync covered: an
    /// acknowledgement can then claim entries a crash loses.
    pub release_unsynced: bool,
    /// Messages that need durability leave at once, before any sync covers the writes before
    /// them: a follower acknowledges entries a crash loses.
    pub release_messages_early: bool,
    /// Messages that claim entries the disk refused leave anyway (group/driver.rs): a follower
    /// with a full disk acknowledges entries it never stored.
    pub acknowledge_refused_writes: bool,
}

#[derive(Debug, Default)]
pub struct SyncPipeline {
    in_flight: Option<InFlight>,
    /// The last entry written and not yet covered by a sync.
    unsynced: Option<(Index, Term)>,
    /// Messages that need durability of writes no sync covers yet (or that queued behind the
    /// sync in flight).
    waiting: Vec<PeerMessages>,
    #[cfg(feature = "fault-injection")]
    bugs: DriverBugs,
}

impl SyncPipeline {
    #[cfg(feature = "fault-injection")]
    pub fn bugs(&self) -> DriverBugs {
        self.bugs
    }

    #[cfg(feature = "fault-injection")]
    pub fn plant(&mut self, bugs: DriverBugs) {
        if bugs != DriverBugs::default() {
            tracing::warn!(?bugs, "planted driver bugs on");
        }
        self.bugs = bugs;
    }

    /// Entries up to `last` were written, not yet durable.
    pub fn written(&mut self, last: (Index, Term)) {
        // A truncation settles first, so writes only ever move forward between settles.
        debug_assert!(
            self.unsynced.is_none_or(|previous| previous.0 <= last.0)
                && self
                    .in_flight
                    .as_ref()
                    .is_none_or(|sync| sync.last.0 <= last.0),
            "a write behind an unsettled one"
        );
        self.unsynced = Some(last);
    }

    /// Messages that may leave only once everything written so far is durable: those that may
    /// go at once come back, the rest wait.
    #[must_use]
    pub fn after_persist(&mut self, messages: Vec<PeerMessages>) -> Vec<PeerMessages> {
        #[cfg(feature = "fault-injection")]
        if self.bugs.release_messages_early {
            return messages;
        }
        if self.unsynced.is_some() || self.in_flight.is_some() {
            self.waiting.extend(messages);
            Vec::new()
        } else {
            messages
        }
    }

    /// Starts a sync if nothing runs and something is unsynced: returns the last entry it
    /// covers. The driver runs it and reports its end with [`SyncPipeline::finished`].
    pub fn start(&mut self) -> Option<(Index, Term)> {
        if self.in_flight.is_some() {
            return None;
        }
        let last = self.unsynced.take()?;
        self.in_flight = Some(InFlight {
            last,
            messages: std::mem::take(&mut self.waiting),
        });
        Some(last)
    }

    /// The log counts the unsynced writes durable without a sync (the `never` policy, `interval`
    /// between its syncs, or nothing dirty to sync): released as if a sync had covered them.
    /// Only while no sync runs, so the order of releases holds.
    pub fn durable_without_sync(&mut self) -> Released {
        debug_assert!(self.in_flight.is_none());
        Released {
            persisted: self.unsynced.take().into_iter().collect(),
            messages: std::mem::take(&mut self.waiting),
        }
    }

    /// Whether a sync runs.
    pub fn is_syncing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether anything is written and not covered by a finished sync.
    pub fn has_unsynced(&self) -> bool {
        self.unsynced.is_some()
    }

    /// The sync in flight finished: what it covered is durable.
    pub fn finished(&mut self) -> Released {
        let Some(in_flight) = self.in_flight.take() else {
            // A sync ended that was never started: a bug. Releasing nothing claims nothing.
            debug_assert!(false, "finished a sync that is not in flight");
            return Released::default();
        };
        let mut released = Released {
            persisted: vec![in_flight.last],
            messages: in_flight.messages,
        };
        #[cfg(feature = "fault-injection")]
        if self.bugs.release_unsynced {
            // Planted bug: report the newest write durable, not what the sync covered.
            if let Some(last) = self.unsynced {
                released.persisted = vec![last];
            }
        }
        if self.unsynced.is_none() {
            // Nothing written since the sync began: what queued behind it only needed it.
            released.messages.append(&mut self.waiting);
        }
        released
    }

    /// The driver finished the sync in flight (if any) and had the log sync every other write
    /// as its policy says (before a truncation or a snapshot, at shutdown): everything counts as
    /// durable and every message leaves.
    pub fn settled(&mut self) -> Released {
        let mut released = Released::default();
        if let Some(in_flight) = self.in_flight.take() {
            released.persisted.push(in_flight.last);
            released.messages = in_flight.messages;
        }
        if let Some(last) = self.unsynced.take() {
            released.persisted.push(last);
        }
        released.messages.append(&mut self.waiting);
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_raft::{Message, MessageBody, VoteResponse};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A message tagged with the last index written before the core produced it: it may leave
    /// only once that index is durable.
    fn tagged(needs: Index) -> PeerMessages {
        PeerMessages {
            to: needs,
            messages: vec![Message {
                term: 1,
                body: MessageBody::RequestVoteResponse(VoteResponse { granted: true }),
            }],
        }
    }

    /// A model disk under the pipeline: what is written, what the sync in flight began over, and
    /// what is durable. Checks every release against it.
    #[derive(Default)]
    struct Model {
        written: Index,
        durable: Index,
        sync_began_at: Option<Index>,
        last_persisted: Index,
        last_message: Index,
        messages_sent: usize,
    }

    impl Model {
        fn check(&mut self, released: Released) -> Result<(), String> {
            for (index, _) in released.persisted {
                if index > self.durable {
                    return Err(format!(
                        "persisted {index} reported, durable only {}",
                        self.durable
                    ));
                }
                self.last_persisted = self.last_persisted.max(index);
            }
            for message in released.messages {
                let needs = message.to;
                if needs > self.durable {
                    return Err(format!(
                        "a message needing {needs} left at {}",
                        self.durable
                    ));
                }
                if needs < self.last_message {
                    return Err(format!(
                        "message for {needs} after one for {}",
                        self.last_message
                    ));
                }
                self.last_message = needs;
                self.messages_sent += 1;
            }
            Ok(())
        }
    }

    /// One seeded run of random writes, sync starts and completions, settles and policy syncs.
    fn run(seed: u64, pipeline: SyncPipeline) -> Result<usize, String> {
        let mut pipeline = pipeline;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut model = Model::default();
        // The sync in flight, as the driver would hold it.
        let mut ticket = None;
        let mut queued = 0usize;
        for _ in 0..200 {
            match rng.random_range(0..10) {
                0..=2 => {
                    model.written += rng.random_range(1..4);
                    pipeline.written((model.written, 1));
                }
                3..=4 => {
                    queued += 1;
                    let now = pipeline.after_persist(vec![tagged(model.written)]);
                    model.check(Released {
                        persisted: Vec::new(),
                        messages: now,
                    })?;
                }
                5 if ticket.is_none() && rng.random_bool(0.3) => {
                    // The log's policy counts the writes durable without a sync.
                    model.durable = model.written;
                    model.check(pipeline.durable_without_sync())?;
                }
                5..=6 => {
                    if let Some(started) = pipeline.start() {
                        if started.0 != model.written {
                            return Err("a sync must cover everything written".into());
                        }
                        model.sync_began_at = Some(model.written);
                        ticket = Some(started);
                    }
                }
                7..=8 => {
                    if ticket.take().is_some() {
                        model.durable = model.sync_began_at.take().expect("a sync began");
                        model.check(pipeline.finished())?;
                    }
                }
                _ => {
                    // A truncation or shutdown: settle. The driver syncs everything.
                    model.durable = model.written;
                    model.sync_began_at = None;
                    ticket = None;
                    model.check(pipeline.settled())?;
                }
            }
        }
        model.durable = model.written;
        model.check(pipeline.settled())?;
        if model.messages_sent != queued {
            return Err(format!(
                "{queued} messages queued, {} sent",
                model.messages_sent
            ));
        }
        Ok(queued)
    }

    #[test]
    fn releases_never_run_ahead_of_durability_and_keep_their_order() {
        let mut messages = 0;
        for seed in 0..2_000 {
            messages += run(seed, SyncPipeline::default())
                .map_err(|error| format!("seed {seed}: {error}"))
                .unwrap();
        }
        assert!(messages > 10_000, "the schedule must exercise messages");
    }

    /// The property test above is not vacuous: with the planted bug (durability reported for the
    /// newest write instead of what the sync covered) it fails within a few seeds.
    #[cfg(feature = "fault-injection")]
    #[test]
    fn the_planted_bug_is_caught() {
        let planted = || {
            let mut pipeline = SyncPipeline::default();
            pipeline.plant(DriverBugs {
                release_unsynced: true,
                ..DriverBugs::default()
            });
            pipeline
        };
        let caught = (0..2_000).find(|&seed| run(seed, planted()).is_err());
        assert!(caught.is_some(), "the planted bug went unnoticed");
    }

    #[test]
    fn messages_wait_only_while_something_is_unsynced_or_syncing() {
        let mut pipeline = SyncPipeline::default();
        assert_eq!(pipeline.after_persist(vec![tagged(0)]).len(), 1);
        pipeline.written((5, 1));
        assert!(pipeline.after_persist(vec![tagged(5)]).is_empty());
        assert_eq!(pipeline.start(), Some((5, 1)));
        assert!(pipeline.start().is_none(), "one sync at a time");
        let released = pipeline.finished();
        assert_eq!(released.persisted, vec![(5, 1)]);
        assert_eq!(released.messages.len(), 1);
        assert!(!pipeline.is_syncing() && !pipeline.has_unsynced());
    }
}
