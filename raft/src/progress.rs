//! `Progress`: what a leader knows about one follower and how it sends to it (etcd
//! `tracker/progress.go`).
//!
//! ```text
//!            probe accepted (match known)
//!   +-------+ -----------------------------> +-----------+
//!   | Probe |                                | Replicate |
//!   +-------+ <----------------------------- +-----------+
//!    one message      rejection / lost          pipelined, bounded by Inflights
//!    in flight        acknowledged entries      (max_inflight_msgs, max_inflight_bytes)
//! ```
//!
//! Snapshot: the follower needs entries the leader has compacted away. Chunks of the leader's
//! snapshot go one at a time (`probe_sent` marks the chunk in flight, resent at each heartbeat);
//! no entries are sent. When the follower has it: Probe from the snapshot's index + 1.

use crate::entry::Index;
use crate::inflights::Inflights;
use crate::membership::Incarnation;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The follower's position is unknown: one AppendEntries at a time.
    Probe,
    /// The follower's log matches up to `match_index`: send ahead optimistically.
    Replicate,
    /// An InstallSnapshot transfer is in progress; no entries are sent.
    Snapshot,
}

#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known durable and matching on the follower.
    pub match_index: Index,
    /// Next index to send.
    pub next_index: Index,
    pub state: ProgressState,
    /// Probe: a message is in flight, send nothing more until a response.
    pub probe_sent: bool,
    pub inflights: Inflights,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// The follower's last reported applied index.
    pub applied_index: Index,
    /// The commit index carried by the last AppendEntries sent to it.
    pub commit_sent: Index,
    /// The incarnation this progress tracks: answers from any other are ignored, and it counts
    /// for a voter only if the voter has this incarnation (docs/RAFT-CORE.md
    /// "Incarnations on the wire").
    pub incarnation: Incarnation,
    /// Snapshot state: the index the snapshot being sent ends at, and the bytes the follower
    /// has acknowledged.
    pub snapshot_index: Index,
    pub snapshot_offset: u64,
}

impl Progress {
    pub fn new(next_index: Index, max_inflight_msgs: usize, max_inflight_bytes: u64) -> Progress {
        assert!(next_index >= 1);
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(max_inflight_msgs, max_inflight_bytes),
            recent_active: false,
            applied_index: 0,
            commit_sent: 0,
            incarnation: 0,
            snapshot_index: 0,
            snapshot_offset: 0,
        }
    }

    pub fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// Starts sending the snapshot that ends at `snapshot_index` from its first byte.
    pub fn become_snapshot(&mut self, snapshot_index: Index) {
        self.state = ProgressState::Snapshot;
        self.snapshot_index = snapshot_index;
        self.snapshot_offset = 0;
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// No entries may be sent now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot => true,
        }
    }

    /// Records an AppendEntries sent with entries up to `last_index` (`bytes` of entries, none
    /// for an empty message).
    pub fn sent_append(&mut self, last_index: Option<Index>, bytes: u64) {
        match self.state {
            ProgressState::Probe | ProgressState::Snapshot => self.probe_sent = true,
            ProgressState::Replicate => {
                if let Some(last_index) = last_index {
                    self.next_index = last_index + 1;
                    self.inflights.add(last_index, bytes);
                }
            }
        }
    }

    /// An acknowledgement of `index`. Returns true when it raised `match_index`.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        updated
    }

    /// A rejection of `rejected_index` with the leader's estimate `next_hint` of where the logs
    /// agree, and the follower's `follower_last_index`. Returns false for a stale rejection.
    pub fn maybe_decrease_to(
        &mut self,
        rejected_index: Index,
        next_hint: Index,
        follower_last_index: Index,
    ) -> bool {
        if rejected_index <= self.match_index {
            if follower_last_index >= self.match_index {
                return false; // stale: a reply to a message sent before the last acknowledgement
            }
            // The follower holds less than it acknowledged: its recovery cut a damaged tail
            // (it abstains from votes meanwhile). Start over from what it still holds.
            self.match_index = follower_last_index;
            self.become_probe();
            self.next_index = next_hint.clamp(self.match_index + 1, follower_last_index + 1);
            return true;
        }
        match self.state {
            ProgressState::Snapshot => return false, // answers to appends sent before it
            ProgressState::Replicate => {
                self.become_probe();
                self.next_index = next_hint.clamp(self.match_index + 1, rejected_index);
            }
            ProgressState::Probe => {
                if self.next_index - 1 != rejected_index {
                    return false; // stale: not the probe in flight
                }
                self.next_index = next_hint.clamp(self.match_index + 1, rejected_index);
                self.probe_sent = false;
            }
        }
        true
    }

    /// Entries the follower could apply but has not: it holds them durably and they are
    /// committed. (Counting uncommitted entries too would deadlock: a follower cannot apply
    /// what the leader cannot commit without sending it more.)
    pub fn unapplied_entries(&self, commit_index: Index) -> u64 {
        self.match_index
            .min(commit_index)
            .saturating_sub(self.applied_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(state: ProgressState, match_index: Index, next_index: Index) -> Progress {
        let mut progress = Progress::new(next_index, 4, 1_000);
        progress.state = state;
        progress.match_index = match_index;
        progress
    }

    #[test]
    fn probe_pauses_after_one_message_and_resumes_on_acknowledgement() {
        let mut progress = progress(ProgressState::Probe, 0, 5);
        assert!(!progress.is_paused());
        progress.sent_append(Some(7), 30);
        assert!(progress.is_paused());
        assert_eq!(
            progress.next_index, 5,
            "probe does not advance next optimistically"
        );
        assert!(progress.maybe_update(7));
        assert!(!progress.is_paused());
        assert_eq!((progress.match_index, progress.next_index), (7, 8));
    }

    #[test]
    fn replicate_pipelines_until_inflights_are_full() {
        let mut progress = progress(ProgressState::Replicate, 4, 5);
        for last in [6, 8, 10, 12] {
            assert!(!progress.is_paused());
            progress.sent_append(Some(last), 10);
        }
        assert!(
            progress.is_paused(),
            "four messages fill max_inflight_msgs = 4"
        );
        assert_eq!(progress.next_index, 13);
        progress.maybe_update(8);
        progress.inflights.free_to(8);
        assert!(!progress.is_paused());
    }

    #[test]
    fn rejections_table() {
        // (state, match, next, rejected, next_hint, follower_last) -> (changed, state, match, next)
        #[allow(clippy::type_complexity)]
        let table: &[(
            (ProgressState, Index, Index, Index, Index, Index),
            (bool, ProgressState, Index, Index),
        )] = &[
            // Probe: the rejection of the probe in flight moves next to the hint.
            (
                (ProgressState::Probe, 0, 10, 9, 4, 3),
                (true, ProgressState::Probe, 0, 4),
            ),
            // Probe: a rejection of an older probe is stale.
            (
                (ProgressState::Probe, 0, 10, 7, 4, 3),
                (false, ProgressState::Probe, 0, 10),
            ),
            // Probe: the hint never goes at or below match.
            (
                (ProgressState::Probe, 5, 10, 9, 2, 8),
                (true, ProgressState::Probe, 5, 6),
            ),
            // Replicate: a rejection above match falls back to probe.
            (
                (ProgressState::Replicate, 5, 20, 12, 9, 11),
                (true, ProgressState::Probe, 5, 9),
            ),
            // Replicate: a rejection at or below match is stale when the follower is not shorter.
            (
                (ProgressState::Replicate, 5, 20, 5, 3, 7),
                (false, ProgressState::Replicate, 5, 20),
            ),
            // A follower shorter than its match lost acknowledged entries: start over.
            (
                (ProgressState::Replicate, 9, 20, 9, 4, 6),
                (true, ProgressState::Probe, 6, 7),
            ),
        ];
        for &((state, match_index, next_index, rejected, next_hint, follower_last), expected) in
            table
        {
            let mut progress = progress(state, match_index, next_index);
            let changed = progress.maybe_decrease_to(rejected, next_hint, follower_last);
            assert_eq!(
                (changed, progress.state, progress.match_index, progress.next_index),
                expected,
                "{state:?} match {match_index} next {next_index} rejected {rejected} hint {next_hint}"
            );
        }
    }

    #[test]
    fn unapplied_entries_counts_committed_entries_the_follower_holds_but_has_not_applied() {
        let mut progress = progress(ProgressState::Replicate, 50, 51);
        progress.applied_index = 20;
        assert_eq!(progress.unapplied_entries(100), 30);
        assert_eq!(
            progress.unapplied_entries(40),
            20,
            "uncommitted entries cannot be applied yet"
        );
        progress.applied_index = 60;
        assert_eq!(progress.unapplied_entries(100), 0);
    }
}
