//! Snapshots and log compaction (docs/RAFT-CORE.md "Snapshots"): the snapshot a node
//! takes of its own state machine (`RaftNode::compact`), the chunked InstallSnapshot transfer
//! from a leader to a follower behind the leader's first index, and the follower's install.
//!
//! The core never sees the state machine: snapshot data is opaque bytes the driver produces
//! (`compact`) and consumes (`Ready::snapshot`). The core keeps the latest snapshot in memory
//! (`bytes::Bytes`, shared, never copied) to stream it to followers.
//!
//! ```text
//!  leader                                    follower
//!  Progress -> Snapshot (next < first_index)
//!  InstallSnapshot{offset 0, chunk}   ---->  starts a new transfer
//!                                    <----   {received_bytes}
//!  InstallSnapshot{offset n, ..., done} -->  complete: install (keep a consistent suffix)
//!                                    <----   {done} (after the snapshot is durable)
//!  Progress -> Probe at index + 1; the next AppendEntries has prev = (index, term)
//! ```

use bytes::{Bytes, BytesMut};

use crate::entry::{Index, NodeId, Term};
use crate::log::RaftLog;
use crate::membership::Membership;
use crate::message::{InstallSnapshot, InstallSnapshotResponse, Message, MessageBody};
use crate::node::{RaftNode, Role, SendWhen};
use crate::progress::ProgressState;
use crate::replicated_log::InstalledSuffix;

/// What a snapshot covers: everything up to `(last_included_index, last_included_term)`, and
/// the configuration as of that index.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotMeta {
    pub last_included_index: Index,
    pub last_included_term: Term,
    pub membership: Membership,
}

/// A snapshot: its description and the state machine's opaque bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Bytes,
}

/// Why `compact` refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error("index {index} is not applied yet (applied {applied_index})")]
    NotApplied { index: Index, applied_index: Index },
    #[error("index {index} is below the current snapshot ({snapshot_index})")]
    BelowSnapshot { index: Index, snapshot_index: Index },
}

impl<L: RaftLog> RaftNode<L> {
    /// The driver captured its state machine at applied `index` as `data`. The core keeps the
    /// snapshot (to send to followers) and from now on reads no entry at or below `index`; the
    /// driver persists the returned snapshot and then deletes those entries, when it likes.
    pub fn compact(&mut self, index: Index, data: Bytes) -> Result<Snapshot, CompactError> {
        if index > self.log.applied_index() {
            return Err(CompactError::NotApplied {
                index,
                applied_index: self.log.applied_index(),
            });
        }
        if index < self.log.snapshot_index() || self.log.installing_snapshot().is_some() {
            return Err(CompactError::BelowSnapshot {
                index,
                snapshot_index: self.log.snapshot_index(),
            });
        }
        let membership = self.membership_at(index);
        let term = self.log.compact(index);
        self.forget_memberships_through(index);
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last_included_index: index,
                last_included_term: term,
                membership,
            },
            data,
        };
        self.snapshot = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// The driver persisted the snapshot of the last `Ready::snapshot` and replaced its state
    /// machine with it.
    pub fn on_snapshot_done(&mut self, index: Index) {
        if self.log.snapshot_installed(index) {
            self.maybe_end_abstention();
        }
    }

    /// The latest snapshot this node holds (taken or installed).
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// Leader: `to` needs entries below the first index still held.
    pub(crate) fn needs_snapshot(&self, next_index: Index) -> bool {
        next_index < self.log.first_index()
    }

    /// Leader: sends the next chunk of the snapshot to `to` (in Snapshot state) unless one is
    /// in flight; `resend` sends the unacknowledged chunk again (a heartbeat's job).
    pub(crate) fn maybe_send_snapshot_chunk(&mut self, to: NodeId, resend: bool) {
        let Some(snapshot) = &self.snapshot else {
            tracing::error!(to, "a follower needs a snapshot but none is held");
            return;
        };
        let meta = snapshot.meta.clone();
        let data = snapshot.data.clone();
        let chunk_bytes = self.config.max_snapshot_chunk_bytes;
        let term = self.term;
        let Some(progress) = self.progress.get_mut(&to) else {
            return;
        };
        if progress.state != ProgressState::Snapshot
            || progress.snapshot_index != meta.last_included_index
        {
            progress.become_snapshot(meta.last_included_index);
        }
        if progress.probe_sent && !resend {
            return;
        }
        let offset = progress.snapshot_offset.min(data.len() as u64);
        let end = (offset + chunk_bytes).min(data.len() as u64);
        progress.probe_sent = true;
        let chunk = InstallSnapshot {
            meta,
            offset,
            data: data.slice(offset as usize..end as usize),
            done: end == data.len() as u64,
        };
        let body = MessageBody::InstallSnapshot(chunk);
        self.send(to, SendWhen::Now, Message { term, body });
    }

    /// Follower: one chunk of the leader's snapshot.
    pub(crate) fn handle_install_snapshot(&mut self, from: NodeId, chunk: InstallSnapshot) {
        if self.role == Role::Leader {
            tracing::error!(
                from,
                term = self.term,
                "InstallSnapshot from another leader of our term"
            );
            return;
        }
        self.become_follower(self.term, Some(from));
        let index = chunk.meta.last_included_index;
        let respond = |node: &mut Self, received_bytes: u64, done: bool, when: SendWhen| {
            let response = InstallSnapshotResponse {
                last_included_index: index,
                received_bytes,
                done,
            };
            let term = node.term;
            let body = MessageBody::InstallSnapshotResponse(response);
            node.send(from, when, Message { term, body });
        };
        if index <= self.log.commit_index() {
            // Everything it covers is committed here already, so held and matching.
            self.incoming_snapshot = None;
            return respond(self, 0, true, SendWhen::AfterPersist);
        }
        let same_transfer = self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|(meta, _)| *meta == chunk.meta);
        if chunk.offset == 0 && !same_transfer {
            self.incoming_snapshot = Some((chunk.meta.clone(), BytesMut::new()));
        }
        let Some((_, received)) = self.incoming_snapshot.as_mut() else {
            return respond(self, 0, false, SendWhen::Now);
        };
        let held = received.len() as u64;
        if chunk.offset != held || !same_transfer && chunk.offset != 0 {
            // A lost, duplicated or reordered chunk: tell the leader where we are.
            let held = if same_transfer { held } else { 0 };
            return respond(self, held, false, SendWhen::Now);
        }
        received.extend_from_slice(&chunk.data);
        let held = received.len() as u64;
        if !chunk.done {
            return respond(self, held, false, SendWhen::Now);
        }
        let (meta, data) = self.incoming_snapshot.take().expect("checked above");
        self.install_snapshot(Snapshot {
            meta,
            data: data.freeze(),
        });
        respond(self, held, true, SendWhen::AfterPersist);
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = &snapshot.meta;
        let suffix = self
            .log
            .install_snapshot(meta.last_included_index, meta.last_included_term);
        if suffix == InstalledSuffix::Discarded {
            self.truncate_memberships_from(meta.last_included_index + 1);
        }
        self.replace_memberships_through(meta.last_included_index, meta.membership.clone());
        self.snapshot = Some(snapshot.clone());
        self.snapshot_to_install = Some(snapshot);
    }

    /// Leader: a follower's answer to a chunk.
    pub(crate) fn handle_install_snapshot_response(
        &mut self,
        from: NodeId,
        response: InstallSnapshotResponse,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        if response.done {
            progress.maybe_update(response.last_included_index);
            if progress.state == ProgressState::Snapshot {
                progress.become_probe();
            }
            self.maybe_commit();
            return;
        }
        if progress.state == ProgressState::Snapshot
            && progress.snapshot_index == response.last_included_index
        {
            progress.snapshot_offset = response.received_bytes;
            progress.probe_sent = false;
        }
    }
}
