//! The one loop every Raft group runs on: the metadata group and each partition alike. It owns
//! the group's inbox, its ticker, the completion of its pipelined fdatasync and a clean shutdown
//! (hand leadership over, sync, answer). What the group's inputs mean belongs to the
//! [`GroupActor`]; what durability and ordering mean belongs to [`RaftGroup`].
//!
//! Also here: [`Waiters`], the replies a leader owes for the entries its proposals became.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keel_raft::{Index, Role, Term};
use keel_wire::ErrorCode;
use tokio::sync::{mpsc, oneshot};

use crate::group::driver::Machine;
use crate::group::storage_log::StorageLog;
use crate::group::{PeerBatch, RaftGroup};
use crate::limits::MAX_INPUTS_PER_ROUND;

/// What the loop needs to tell apart in a group's inbox; everything else is the actor's.
pub enum Control<I> {
    Peer(PeerBatch),
    Shutdown(oneshot::Sender<()>),
    Other(I),
}

/// The owner of one group's state machine and requests.
pub trait GroupActor: Machine<StorageLog> {
    type Input: Send;

    fn classify(input: Self::Input) -> Control<Self::Input>;

    /// One request from the inbox (never a peer batch or a shutdown).
    fn handle(&mut self, group: &mut RaftGroup, input: Self::Input);

    /// Once per tick, before the group's `Ready` is processed.
    fn on_tick(&mut self, _group: &mut RaftGroup) {}

    /// After every round that may have changed the group (inputs, a tick, a finished sync).
    fn after_round(&mut self, _group: &mut RaftGroup) {}

    /// The group is stopping: answer every waiting request.
    fn on_stop(&mut self) {}
}

/// Runs `group` with `actor` until a shutdown request (or until every inbox sender is gone).
/// A shutdown while this node leads first hands leadership to a caught-up follower, so clients
/// move over at once instead of waiting out an election timeout.
pub async fn run<A: GroupActor>(
    mut group: RaftGroup,
    mut inbox: mpsc::Receiver<A::Input>,
    mut actor: A,
    tick: Duration,
    campaign_at_start: bool,
) {
    if campaign_at_start {
        group.node.campaign();
    }
    group.process(&mut actor);
    actor.after_round(&mut group);
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping: Option<(Instant, oneshot::Sender<()>)> = None;
    loop {
        if let Some((deadline, _)) = &stopping {
            if group.node.role() != Role::Leader || Instant::now() >= *deadline {
                let (_, done) = stopping.take().expect("checked above");
                stop(&mut group, &mut actor);
                let _ = done.send(());
                return;
            }
        }
        let input = tokio::select! {
            input = inbox.recv() => input,
            done = group.sync_finished(), if group.is_syncing() => {
                group.complete_sync(done, &mut actor);
                actor.after_round(&mut group);
                continue;
            }
            _ = ticker.tick() => {
                group.tick();
                actor.on_tick(&mut group);
                group.process(&mut actor);
                actor.after_round(&mut group);
                continue;
            }
        };
        let Some(input) = input else { break };
        let mut next = Some(input);
        let mut handled = 0;
        while let Some(input) = next.take() {
            match A::classify(input) {
                Control::Peer(batch) => group.step(batch),
                Control::Shutdown(done) => {
                    if stopping.is_none() && group.hand_over_leadership() {
                        stopping = Some((group.handover_deadline(tick), done));
                        break;
                    }
                    stop(&mut group, &mut actor);
                    let _ = done.send(());
                    return;
                }
                Control::Other(input) => actor.handle(&mut group, input),
            }
            handled += 1;
            if handled < MAX_INPUTS_PER_ROUND {
                next = inbox.try_recv().ok();
            }
        }
        group.process(&mut actor);
        actor.after_round(&mut group);
    }
    stop(&mut group, &mut actor);
}

fn stop<A: GroupActor>(group: &mut RaftGroup, actor: &mut A) {
    actor.on_stop();
    group.sync_now();
}

/// A reply owed to a client once an entry applies.
pub type Reply<T> = oneshot::Sender<Result<T, ErrorCode>>;

/// The replies a leader owes, by the index its proposal got. An entry answers them only if it
/// carries the term the proposal was made in: another term's entry at that index means the
/// proposal was lost with its leader.
pub struct Waiters<T> {
    by_index: BTreeMap<Index, (Term, Vec<Reply<T>>)>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Waiters {
            by_index: BTreeMap::new(),
        }
    }
}

impl<T: Clone> Waiters<T> {
    pub fn insert(&mut self, index: Index, term: Term, reply: Reply<T>) {
        let previous = self.by_index.insert(index, (term, vec![reply]));
        debug_assert!(previous.is_none(), "one proposal per index and term");
    }

    /// Adds `reply` to the proposal at `index` (a retry of a request still in flight); gives it
    /// back when no proposal waits there.
    pub fn join(&mut self, index: Index, reply: Reply<T>) -> Result<(), Reply<T>> {
        match self.by_index.get_mut(&index) {
            Some((_, replies)) => {
                replies.push(reply);
                Ok(())
            }
            None => Err(reply),
        }
    }

    /// The entry at `index` of `term` applied: its waiters get `outcome()` if it is their
    /// proposal, `lost` if another leader's entry took the index.
    pub fn answer(
        &mut self,
        index: Index,
        term: Term,
        outcome: impl FnOnce() -> Result<T, ErrorCode>,
        lost: ErrorCode,
    ) {
        let Some((proposed_in, replies)) = self.by_index.remove(&index) else {
            return;
        };
        let result = if proposed_in == term {
            outcome()
        } else {
            Err(lost)
        };
        for reply in replies {
            let _ = reply.send(result.clone());
        }
    }

    /// Answers every waiter with `error` (leadership lost, or the group stopping): the client
    /// retries, and an idempotent retry of one that did commit gets its original answer.
    pub fn fail_all(&mut self, error: &ErrorCode) {
        for (_, (_, replies)) in std::mem::take(&mut self.by_index) {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_of_another_term_answers_lost_and_retries_share_the_answer() {
        let mut waiters = Waiters::<u64>::default();
        let (first, mut first_rx) = oneshot::channel();
        let (retry, mut retry_rx) = oneshot::channel();
        let (other, mut other_rx) = oneshot::channel();
        waiters.insert(5, 2, first);
        assert!(waiters.join(5, retry).is_ok());
        waiters.insert(6, 2, other);
        let (orphan, _) = oneshot::channel();
        assert!(waiters.join(7, orphan).is_err(), "no proposal waits at 7");

        waiters.answer(5, 2, || Ok(40), ErrorCode::Unavailable);
        assert_eq!(first_rx.try_recv().unwrap(), Ok(40));
        assert_eq!(retry_rx.try_recv().unwrap(), Ok(40));

        waiters.answer(6, 3, || Ok(41), ErrorCode::Unavailable);
        assert_eq!(other_rx.try_recv().unwrap(), Err(ErrorCode::Unavailable));
        assert!(waiters.is_empty());
    }

    #[test]
    fn fail_all_answers_everyone_once() {
        let mut waiters = Waiters::<u64>::default();
        let (a, mut a_rx) = oneshot::channel();
        let (b, mut b_rx) = oneshot::channel();
        waiters.insert(1, 1, a);
        waiters.insert(2, 1, b);
        waiters.fail_all(&ErrorCode::Overloaded);
        assert_eq!(a_rx.try_recv().unwrap(), Err(ErrorCode::Overloaded));
        assert_eq!(b_rx.try_recv().unwrap(), Err(ErrorCode::Overloaded));
        assert!(waiters.is_empty());
    }
}
