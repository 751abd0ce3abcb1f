//! The replicated state of one `__consumer_offsets` partition, pure: every group that hashes to
//! it (coordinator/mod.rs `offsets_partition_for`), with its committed offsets and the generation
//! its coordinator stored last (members, leader, protocol, assignments). Every replica applies
//! the same committed [`OffsetsEntry`]s in the same order and reaches the same state; the leader
//! is the groups' coordinator and hands each waiting request the typed result of its entry.
//!
//! Apply is deterministic and total: it reads nothing but the state and the entry (time comes
//! from the entry, stamped by the proposer's wall clock, never from the replica's), and a command
//! that may not apply (a commit from a stale generation, a reset of a group with members) yields
//! a typed [`GroupError`] and changes nothing but the partition's clock. Fencing happens here, at apply, not only when the
//! coordinator accepts a request for proposal: a commit proposed before a rebalance that lands
//! after the new generation is refused, because the log orders the two.
//!
//! The state is compacted by snapshots ([`OffsetsState::snapshot`], [`OffsetsState::restore`]),
//! never by retention: offsets leave only by expiry, reset or delete, all of them commands.

use std::collections::BTreeMap;

use bytes::Bytes;
use keel_raft::{Entry, EntryKind, Index};
use serde::{Deserialize, Serialize};

use super::{check_group_id, Generation, GroupError, MemberId, Protocol};
use crate::limits::OFFSET_METADATA_MAX_BYTES;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

/// What a consumer commits for one partition: Kafka's `OffsetAndMetadata`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetAndMetadata {
    /// The next offset to read.
    pub offset: u64,
    /// The leader epoch of the last record consumed, when the client knows it (Kafka's
    /// `committedLeaderEpoch`, -1 on the wire for none).
    pub leader_epoch: Option<i32>,
    /// Opaque to Keel, at most [`OFFSET_METADATA_MAX_BYTES`].
    pub metadata: String,
}

/// A committed offset as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: OffsetAndMetadata,
    /// The time of the entry that committed it (the proposer's wall clock, clamped so it never
    /// goes backwards within the partition).
    pub commit_time_ms: u64,
}

/// One member of a stored generation: enough for a new coordinator to serve it as a Stable
/// group without a rebalance (Kafka stores the same in its group metadata record, except that
/// Kafka keeps only the chosen protocol's metadata: see `protocols`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub member_id: MemberId,
    pub client_id: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    /// Every protocol the member joined with, not only the chosen one: a new coordinator then
    /// admits a joining member that shares any of them with everyone, as the old one did
    /// (Kafka's takeover knows only the chosen protocol and refuses such a join).
    pub protocols: Vec<Protocol>,
    /// What the leader assigned it.
    pub assignment: Bytes,
}

/// A group as the offsets partition knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The last generation stored (0 for a group only simple commits or resets created).
    pub generation: Generation,
    /// `None` for a group that never had members (standalone commits only).
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<MemberId>,
    /// The stored generation's members, less those removed since. Empty: the group is empty,
    /// and only then may simple commits, resets and deletes apply.
    pub members: Vec<MemberRecord>,
    /// Members were removed since the generation was stored: their partitions are unassigned,
    /// so a coordinator that takes the group over rebalances it rather than trusting it Stable.
    pub members_removed: bool,
    /// When the group last became empty (or was created empty): with a commit's time, the
    /// start of its offsets' retention.
    pub empty_since_ms: u64,
    pub offsets: BTreeMap<TopicPartition, CommittedOffset>,
}

impl GroupRecord {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn has_member(&self, member_id: &str) -> bool {
        self.members.iter().any(|m| m.member_id == member_id)
    }
}

/// A command for an offsets partition. New variants go at the end: the postcard tag is
/// positional.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OffsetsCommand {
    /// A consumer's commit. From a member: `member_id` must be in the stored generation and
    /// `generation` equal to it. With [`NO_GENERATION`](super::NO_GENERATION) and an empty member id (Kafka's simple
    /// consumers and admin tools): only while the group has no members.
    CommitOffsets {
        group: String,
        member_id: MemberId,
        generation: Generation,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    },
    /// A rebalance completed (the leader's assignment, or no members left): the coordinator's
    /// new generation. Applies only if newer than the stored one.
    GroupGeneration {
        group: String,
        generation: Generation,
        protocol_type: String,
        /// `None` exactly when `members` is empty.
        protocol: Option<String>,
        leader: Option<MemberId>,
        members: Vec<MemberRecord>,
    },
    /// Members left or timed out: their commits are refused from here on. By member id alone,
    /// since ids are never reused, whatever generation it lands in.
    RemoveMembers {
        group: String,
        members: Vec<MemberId>,
    },
    /// An operator's reset: only while the group has no members.
    ResetOffsets {
        group: String,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    },
    /// An operator's delete: only while the group has no members.
    DeleteGroup { group: String },
    /// The leader's periodic expiry: offsets of empty groups older than `retention_ms` at the
    /// entry's time go, and with them any group left with no offsets.
    ExpireGroups { retention_ms: u64 },
}

/// What an offsets partition's `Meta` entries hold: a command and its proposer's wall-clock time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetsEntry {
    pub at_ms: u64,
    pub command: OffsetsCommand,
}

impl OffsetsEntry {
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("a command always encodes"))
    }

    pub fn decode(payload: &[u8]) -> Result<OffsetsEntry, GroupError> {
        postcard::from_bytes(payload).map_err(|_| GroupError::CorruptCommand)
    }
}

/// What an applied command did, for the request waiting on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffsetsOutcome {
    Committed,
    GenerationStored,
    MembersRemoved {
        removed: usize,
    },
    OffsetsReset,
    GroupDeleted {
        offsets: usize,
    },
    /// `deleted_groups` had no offsets left (or none at all): the coordinator drops their
    /// in-memory state too.
    Expired {
        offsets: usize,
        deleted_groups: Vec<String>,
    },
}

/// A snapshot that does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an offsets snapshot that does not decode")]
pub struct CorruptSnapshot;

/// Everything applying an offsets partition's log up to `applied_index` made, and exactly what a
/// snapshot holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetsState {
    pub applied_index: Index,
    /// The latest entry time applied: an entry stamped earlier (a new leader whose clock is
    /// behind) counts as this, so times never go backwards and nothing expires early or late
    /// by a clock step.
    pub clock_ms: u64,
    pub groups: BTreeMap<String, GroupRecord>,
}

impl OffsetsState {
    /// One committed entry, in index order. `None` for entries that are not commands (no-ops,
    /// configurations); a `Meta` entry always yields its command's result, an undecodable one
    /// [`GroupError::CorruptCommand`] on every replica alike.
    pub fn apply(&mut self, entry: &Entry) -> Option<Result<OffsetsOutcome, GroupError>> {
        debug_assert!(
            entry.index > self.applied_index,
            "entries apply in index order"
        );
        self.applied_index = entry.index;
        match entry.kind {
            EntryKind::Meta => Some(match OffsetsEntry::decode(&entry.payload) {
                Ok(OffsetsEntry { at_ms, command }) => self.execute(at_ms, command),
                Err(error) => {
                    tracing::error!(
                        index = entry.index,
                        "an undecodable offsets command; refused on every replica alike"
                    );
                    Err(error)
                }
            }),
            EntryKind::NoOp | EntryKind::Config | EntryKind::Data => None,
        }
    }

    /// Folds the entries after this state into it, in index order (entries it already covers
    /// are skipped): how the snapshot at index S is built from the previous one, never by
    /// relabelling a later live state.
    pub fn fold(&mut self, entries: &[Entry]) {
        for entry in entries {
            if entry.index <= self.applied_index {
                continue;
            }
            debug_assert_eq!(entry.index, self.applied_index + 1, "a fold skips no entry");
            self.apply(entry);
        }
    }

    pub fn snapshot(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("a snapshot always encodes"))
    }

    pub fn restore(bytes: &[u8]) -> Result<OffsetsState, CorruptSnapshot> {
        postcard::from_bytes(bytes).map_err(|_| CorruptSnapshot)
    }

    pub fn group(&self, group: &str) -> Option<&GroupRecord> {
        self.groups.get(group)
    }

    /// The committed offset of `group` for `partition` (an offset fetch).
    pub fn committed(&self, group: &str, partition: &TopicPartition) -> Option<&CommittedOffset> {
        self.groups.get(group)?.offsets.get(partition)
    }

    /// Applies one command at the proposer's time `at_ms`.
    pub fn execute(
        &mut self,
        at_ms: u64,
        command: OffsetsCommand,
    ) -> Result<OffsetsOutcome, GroupError> {
        let now = at_ms.max(self.clock_ms);
        self.clock_ms = now;
        match command {
            OffsetsCommand::CommitOffsets {
                group,
                member_id,
                generation,
                offsets,
            } => self.commit(now, group, &member_id, generation, offsets),
            OffsetsCommand::GroupGeneration {
                group,
                generation,
                protocol_type,
                protocol,
                leader,
                members,
            } => {
                check_group_id(&group)?;
                if let Some(record) = self.groups.get(&group) {
                    // A generation is stored once; an older one (a deposed coordinator's) never
                    // overwrites a newer one.
                    if generation <= record.generation {
                        return Err(GroupError::IllegalGeneration);
                    }
                }
                // What a takeover rebuilds the group from must make sense: a protocol exactly
                // when there are members, one every member joined with.
                let supported = protocol.as_ref().is_none_or(|protocol| {
                    members
                        .iter()
                        .all(|m| m.protocols.iter().any(|p| &p.name == protocol))
                });
                if members.is_empty() != protocol.is_none()
                    || protocol_type.is_empty()
                    || !supported
                {
                    return Err(GroupError::InconsistentGroupProtocol);
                }
                let leader_known = match &leader {
                    Some(leader) => members.iter().any(|m| &m.member_id == leader),
                    None => members.is_empty(),
                };
                if !leader_known {
                    return Err(GroupError::UnknownMemberId);
                }
                let record = self.groups.entry(group).or_default();
                record.generation = generation;
                record.protocol_type = Some(protocol_type);
                record.protocol = protocol;
                record.leader = leader;
                record.members = members;
                record.members_removed = false;
                if record.members.is_empty() {
                    record.empty_since_ms = now;
                }
                Ok(OffsetsOutcome::GenerationStored)
            }
            OffsetsCommand::RemoveMembers { group, members } => {
                let Some(record) = self.groups.get_mut(&group) else {
                    return Ok(OffsetsOutcome::MembersRemoved { removed: 0 });
                };
                let before = record.members.len();
                record.members.retain(|m| !members.contains(&m.member_id));
                let removed = before - record.members.len();
                if record.leader.as_ref().is_some_and(|l| members.contains(l)) {
                    record.leader = None;
                }
                if removed > 0 {
                    record.members_removed = true;
                    if record.members.is_empty() {
                        record.empty_since_ms = now;
                    }
                }
                Ok(OffsetsOutcome::MembersRemoved { removed })
            }
            OffsetsCommand::ResetOffsets { group, offsets } => {
                check_group_id(&group)?;
                check_metadata(&offsets)?;
                if self.groups.get(&group).is_some_and(|r| !r.is_empty()) {
                    return Err(GroupError::NonEmptyGroup);
                }
                let record = self.groups.entry(group).or_insert_with(|| GroupRecord {
                    empty_since_ms: now,
                    ..GroupRecord::default()
                });
                store(record, now, offsets);
                Ok(OffsetsOutcome::OffsetsReset)
            }
            OffsetsCommand::DeleteGroup { group } => match self.groups.get(&group) {
                None => Err(GroupError::GroupIdNotFound),
                Some(record) if !record.is_empty() => Err(GroupError::NonEmptyGroup),
                Some(_) => {
                    let record = self.groups.remove(&group).expect("present");
                    Ok(OffsetsOutcome::GroupDeleted {
                        offsets: record.offsets.len(),
                    })
                }
            },
            OffsetsCommand::ExpireGroups { retention_ms } => Ok(self.expire(now, retention_ms)),
        }
    }

    fn commit(
        &mut self,
        now: u64,
        group: String,
        member_id: &str,
        generation: Generation,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> Result<OffsetsOutcome, GroupError> {
        check_group_id(&group)?;
        check_metadata(&offsets)?;
        // Kafka's validateOffsetCommit, at apply: a negative generation commits while the group
        // is empty whatever the member id; otherwise member and generation must be the stored
        // ones; an anonymous commit to a group with members is refused.
        match self.groups.get(&group) {
            None if generation < 0 => {}
            // A member's commit to a group with no stored generation comes from a generation
            // this partition never stored (or one expired or deleted since).
            None => return Err(GroupError::IllegalGeneration),
            Some(record) if generation < 0 && record.is_empty() => {}
            Some(record) if generation >= 0 || !member_id.is_empty() => {
                if !record.has_member(member_id) {
                    return Err(GroupError::UnknownMemberId);
                }
                if generation != record.generation {
                    return Err(GroupError::IllegalGeneration);
                }
            }
            Some(_) => return Err(GroupError::UnknownMemberId),
        }
        let record = self.groups.entry(group).or_insert_with(|| GroupRecord {
            empty_since_ms: now,
            ..GroupRecord::default()
        });
        store(record, now, offsets);
        Ok(OffsetsOutcome::Committed)
    }

    /// An offset of an empty group expires `retention_ms` after the later of its commit and the
    /// moment its group last became empty: Kafka's rule for consumer groups (from the group's
    /// Empty timestamp) and standalone ones (from the commit), except that an offset written
    /// while the group is empty (a reset, a simple commit) gets its whole retention. Groups with
    /// members keep everything.
    fn expire(&mut self, now: u64, retention_ms: u64) -> OffsetsOutcome {
        let mut expired = 0;
        let mut deleted_groups = Vec::new();
        for (name, record) in self.groups.iter_mut().filter(|(_, r)| r.is_empty()) {
            let empty_since = record.empty_since_ms;
            let before = record.offsets.len();
            record.offsets.retain(|_, committed| {
                let base = committed.commit_time_ms.max(empty_since);
                now.saturating_sub(base) < retention_ms
            });
            expired += before - record.offsets.len();
            // A group with neither members nor offsets is gone (Kafka's Dead), once it has
            // been empty as long as an offset would be kept: a group that was just emptied by
            // a rebalance keeps its generation meanwhile.
            if record.offsets.is_empty() && now.saturating_sub(empty_since) >= retention_ms {
                deleted_groups.push(name.clone());
            }
        }
        for name in &deleted_groups {
            self.groups.remove(name);
        }
        OffsetsOutcome::Expired {
            offsets: expired,
            deleted_groups,
        }
    }
}

fn check_metadata(offsets: &[(TopicPartition, OffsetAndMetadata)]) -> Result<(), GroupError> {
    if offsets
        .iter()
        .any(|(_, o)| o.metadata.len() > OFFSET_METADATA_MAX_BYTES)
    {
        return Err(GroupError::OffsetMetadataTooLarge);
    }
    Ok(())
}

fn store(record: &mut GroupRecord, now: u64, offsets: Vec<(TopicPartition, OffsetAndMetadata)>) {
    for (partition, offset) in offsets {
        record.offsets.insert(
            partition,
            CommittedOffset {
                offset,
                commit_time_ms: now,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::NO_GENERATION;

    const G: &str = "g";

    fn tp(topic: &str, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    fn offset(offset: u64) -> OffsetAndMetadata {
        OffsetAndMetadata {
            offset,
            leader_epoch: Some(3),
            metadata: "m".into(),
        }
    }

    fn member(id: &str) -> MemberRecord {
        MemberRecord {
            member_id: id.into(),
            client_id: "c".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocols: vec![Protocol {
                name: "range".into(),
                metadata: Bytes::from_static(b"sub"),
            }],
            assignment: Bytes::from_static(b"asg"),
        }
    }

    fn generation(generation: Generation, members: &[&str]) -> OffsetsCommand {
        OffsetsCommand::GroupGeneration {
            group: G.into(),
            generation,
            protocol_type: "consumer".into(),
            protocol: (!members.is_empty()).then(|| "range".into()),
            leader: members.first().map(|m| m.to_string()),
            members: members.iter().map(|m| member(m)).collect(),
        }
    }

    fn commit(member_id: &str, generation: Generation, at: u64) -> OffsetsCommand {
        OffsetsCommand::CommitOffsets {
            group: G.into(),
            member_id: member_id.into(),
            generation,
            offsets: vec![(tp("t", 0), offset(at))],
        }
    }

    fn committed(state: &OffsetsState) -> Option<u64> {
        state.committed(G, &tp("t", 0)).map(|c| c.offset.offset)
    }

    #[test]
    fn a_member_of_the_stored_generation_commits() {
        let mut state = OffsetsState::default();
        assert_eq!(
            state.execute(1, generation(1, &["a", "b"])),
            Ok(OffsetsOutcome::GenerationStored)
        );
        assert_eq!(
            state.execute(2, commit("b", 1, 42)),
            Ok(OffsetsOutcome::Committed)
        );
        let stored = state.committed(G, &tp("t", 0)).unwrap();
        assert_eq!(stored.offset, offset(42));
        assert_eq!(stored.commit_time_ms, 2);
    }

    #[test]
    fn a_commit_from_a_stale_generation_is_refused_at_apply() {
        let mut state = OffsetsState::default();
        state.execute(1, generation(1, &["a", "b"])).unwrap();
        // "a" was accepted for proposal in generation 1, but the rebalance to generation 2
        // landed first in the log: the commit must not land after it.
        state.execute(2, generation(2, &["a"])).unwrap();
        assert_eq!(
            state.execute(3, commit("a", 1, 10)),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            state.execute(3, commit("a", 3, 10)),
            Err(GroupError::IllegalGeneration),
            "nor a generation not stored yet"
        );
        assert_eq!(committed(&state), None);
        assert_eq!(
            state.execute(4, commit("a", 2, 11)),
            Ok(OffsetsOutcome::Committed)
        );
    }

    #[test]
    fn a_commit_from_an_unknown_or_removed_member_is_refused() {
        let mut state = OffsetsState::default();
        state.execute(1, generation(1, &["a", "b"])).unwrap();
        assert_eq!(
            state.execute(2, commit("x", 1, 10)),
            Err(GroupError::UnknownMemberId)
        );
        // "b"'s session expired: the coordinator stored its removal.
        let removal = OffsetsCommand::RemoveMembers {
            group: G.into(),
            members: vec!["b".into()],
        };
        assert_eq!(
            state.execute(3, removal),
            Ok(OffsetsOutcome::MembersRemoved { removed: 1 })
        );
        assert_eq!(
            state.execute(4, commit("b", 1, 10)),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(
            state.execute(5, commit("a", 1, 10)),
            Ok(OffsetsOutcome::Committed)
        );
    }

    #[test]
    fn a_member_commit_to_a_group_with_no_stored_generation_is_refused() {
        let mut state = OffsetsState::default();
        assert_eq!(
            state.execute(1, commit("a", 1, 10)),
            Err(GroupError::IllegalGeneration)
        );
        assert!(state.groups.is_empty());
    }

    #[test]
    fn simple_commits_only_while_the_group_has_no_members() {
        let mut state = OffsetsState::default();
        // A standalone consumer creates the group with its first commit.
        assert_eq!(
            state.execute(1, commit("", NO_GENERATION, 5)),
            Ok(OffsetsOutcome::Committed)
        );
        assert_eq!(state.group(G).unwrap().protocol_type, None);
        state.execute(2, generation(1, &["a"])).unwrap();
        assert_eq!(
            state.execute(3, commit("", NO_GENERATION, 6)),
            Err(GroupError::UnknownMemberId)
        );
        // A negative generation with a member id is a member's commit, checked as one.
        assert_eq!(
            state.execute(3, commit("a", NO_GENERATION, 6)),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(committed(&state), Some(5));
        state.execute(4, generation(2, &[])).unwrap();
        assert_eq!(
            state.execute(5, commit("", NO_GENERATION, 7)),
            Ok(OffsetsOutcome::Committed)
        );
        assert_eq!(committed(&state), Some(7));
    }

    #[test]
    fn a_generation_is_stored_once_and_never_goes_back() {
        let mut state = OffsetsState::default();
        state.execute(1, generation(3, &["a"])).unwrap();
        assert_eq!(
            state.execute(2, generation(3, &["b"])),
            Err(GroupError::IllegalGeneration)
        );
        assert_eq!(
            state.execute(2, generation(2, &["b"])),
            Err(GroupError::IllegalGeneration)
        );
        let record = state.group(G).unwrap();
        assert_eq!(
            (record.generation, record.members[0].member_id.as_str()),
            (3, "a")
        );
        // Malformed generations from a buggy proposer are refused, not stored.
        let no_protocol = OffsetsCommand::GroupGeneration {
            group: G.into(),
            generation: 4,
            protocol_type: "consumer".into(),
            protocol: None,
            leader: Some("a".into()),
            members: vec![member("a")],
        };
        assert_eq!(
            state.execute(3, no_protocol),
            Err(GroupError::InconsistentGroupProtocol)
        );
        let unsupported = OffsetsCommand::GroupGeneration {
            group: G.into(),
            generation: 4,
            protocol_type: "consumer".into(),
            protocol: Some("sticky".into()),
            leader: Some("a".into()),
            members: vec![member("a")],
        };
        assert_eq!(
            state.execute(3, unsupported),
            Err(GroupError::InconsistentGroupProtocol)
        );
        let stranger_leads = OffsetsCommand::GroupGeneration {
            group: G.into(),
            generation: 4,
            protocol_type: "consumer".into(),
            protocol: Some("range".into()),
            leader: Some("z".into()),
            members: vec![member("a")],
        };
        assert_eq!(
            state.execute(3, stranger_leads),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(state.group(G).unwrap().generation, 3);
    }

    #[test]
    fn reset_and_delete_only_while_the_group_is_empty() {
        let mut state = OffsetsState::default();
        state.execute(1, generation(1, &["a"])).unwrap();
        state.execute(2, commit("a", 1, 100)).unwrap();
        let reset = OffsetsCommand::ResetOffsets {
            group: G.into(),
            offsets: vec![(tp("t", 0), offset(0))],
        };
        let delete = OffsetsCommand::DeleteGroup { group: G.into() };
        assert_eq!(
            state.execute(3, reset.clone()),
            Err(GroupError::NonEmptyGroup)
        );
        assert_eq!(
            state.execute(3, delete.clone()),
            Err(GroupError::NonEmptyGroup)
        );
        assert_eq!(committed(&state), Some(100));

        state.execute(4, generation(2, &[])).unwrap();
        assert_eq!(state.execute(5, reset), Ok(OffsetsOutcome::OffsetsReset));
        assert_eq!(committed(&state), Some(0));
        assert_eq!(
            state.execute(6, delete.clone()),
            Ok(OffsetsOutcome::GroupDeleted { offsets: 1 })
        );
        assert!(state.group(G).is_none());
        assert_eq!(state.execute(7, delete), Err(GroupError::GroupIdNotFound));
        // A deleted group starts over: its first generation is stored again.
        assert_eq!(
            state.execute(8, generation(1, &["b"])),
            Ok(OffsetsOutcome::GenerationStored)
        );
    }

    #[test]
    fn a_reset_may_create_the_group() {
        let mut state = OffsetsState::default();
        let reset = OffsetsCommand::ResetOffsets {
            group: G.into(),
            offsets: vec![(tp("t", 0), offset(9))],
        };
        assert_eq!(state.execute(1, reset), Ok(OffsetsOutcome::OffsetsReset));
        assert_eq!(committed(&state), Some(9));
    }

    #[test]
    fn offsets_of_a_group_that_stays_empty_expire_and_then_the_group() {
        let day = 24 * 3600 * 1000;
        let retention = 7 * day;
        let expire = OffsetsCommand::ExpireGroups {
            retention_ms: retention,
        };
        let mut state = OffsetsState::default();
        state.execute(0, generation(1, &["a"])).unwrap();
        state.execute(day, commit("a", 1, 1)).unwrap();
        // With members, nothing expires, however old.
        assert_eq!(
            state.execute(30 * day, expire.clone()),
            Ok(OffsetsOutcome::Expired {
                offsets: 0,
                deleted_groups: vec![]
            })
        );
        // The group becomes empty at day 30: its offsets are kept 7 days from then.
        state.execute(30 * day, generation(2, &[])).unwrap();
        state
            .execute(
                32 * day,
                OffsetsCommand::CommitOffsets {
                    group: G.into(),
                    member_id: String::new(),
                    generation: NO_GENERATION,
                    offsets: vec![(tp("t", 1), offset(5))],
                },
            )
            .unwrap();
        assert_eq!(
            state.execute(37 * day - 1, expire.clone()),
            Ok(OffsetsOutcome::Expired {
                offsets: 0,
                deleted_groups: vec![]
            })
        );
        assert_eq!(
            state.execute(37 * day, expire.clone()),
            Ok(OffsetsOutcome::Expired {
                offsets: 1,
                deleted_groups: vec![]
            }),
            "the member's offset goes; the one committed while empty has two more days"
        );
        assert_eq!(committed(&state), None);
        assert_eq!(
            state.execute(39 * day, expire),
            Ok(OffsetsOutcome::Expired {
                offsets: 1,
                deleted_groups: vec![G.to_string()]
            })
        );
        assert!(state.group(G).is_none());
    }

    #[test]
    fn an_entry_stamped_by_a_clock_behind_counts_as_the_latest_time() {
        let mut state = OffsetsState::default();
        state.execute(1_000, commit("", NO_GENERATION, 1)).unwrap();
        // A new leader whose clock is 400 ms behind.
        state.execute(600, commit("", NO_GENERATION, 2)).unwrap();
        assert_eq!(
            state.committed(G, &tp("t", 0)).unwrap().commit_time_ms,
            1_000
        );
        assert_eq!(state.clock_ms, 1_000);
    }

    #[test]
    fn bad_input_is_refused_with_a_typed_error() {
        let mut state = OffsetsState::default();
        let long = OffsetsCommand::CommitOffsets {
            group: G.into(),
            member_id: String::new(),
            generation: NO_GENERATION,
            offsets: vec![(
                tp("t", 0),
                OffsetAndMetadata {
                    offset: 1,
                    leader_epoch: None,
                    metadata: "x".repeat(OFFSET_METADATA_MAX_BYTES + 1),
                },
            )],
        };
        assert_eq!(
            state.execute(1, long),
            Err(GroupError::OffsetMetadataTooLarge)
        );
        let nameless = OffsetsCommand::CommitOffsets {
            group: String::new(),
            member_id: String::new(),
            generation: NO_GENERATION,
            offsets: vec![],
        };
        assert_eq!(state.execute(1, nameless), Err(GroupError::InvalidGroupId));
        let garbage = Entry {
            index: 1,
            term: 1,
            kind: EntryKind::Meta,
            payload: Bytes::from_static(b"\xff\xff\xff\xff\xff"),
        };
        assert_eq!(state.apply(&garbage), Some(Err(GroupError::CorruptCommand)));
        assert_eq!(state.applied_index, 1);
        assert!(state.groups.is_empty());
        assert_eq!(OffsetsState::restore(b"\xff\xff"), Err(CorruptSnapshot));
    }

    // Property test: a snapshot at any index, restored and replayed over the rest of the log,
    // is the live state, with the same result for every entry replayed.

    /// A command over small pools of members and generations, so that commits hit every
    /// fencing path: current and stale generations, known, removed and unknown members.
    fn command() -> impl proptest::strategy::Strategy<Value = OffsetsCommand> {
        use proptest::prelude::*;
        let group = prop_oneof![Just("g1".to_string()), Just("g2".to_string())];
        let members = proptest::sample::subsequence(vec!["a", "b", "c"], 0..=3);
        let offsets = proptest::collection::vec(
            (
                0u32..3,
                0u64..1_000,
                prop_oneof![Just(None), (0i32..5).prop_map(Some)],
            )
                .prop_map(|(partition, offset, leader_epoch)| {
                    (
                        TopicPartition {
                            topic: "t".into(),
                            partition,
                        },
                        OffsetAndMetadata {
                            offset,
                            leader_epoch,
                            metadata: format!("m{offset}"),
                        },
                    )
                }),
            0..3,
        );
        prop_oneof![
            6 => (group.clone(), prop_oneof![Just(""), Just("a"), Just("b"), Just("x")], -1i32..4, offsets.clone())
                .prop_map(|(group, member, generation, offsets)| OffsetsCommand::CommitOffsets {
                    group,
                    member_id: member.into(),
                    generation,
                    offsets,
                }),
            3 => (group.clone(), 0i32..5, members.clone()).prop_map(|(group, generation, members)| {
                OffsetsCommand::GroupGeneration {
                    group,
                    generation,
                    protocol_type: "consumer".into(),
                    protocol: (!members.is_empty()).then(|| "range".into()),
                    leader: members.first().map(|m| m.to_string()),
                    members: members.iter().map(|m| member(m)).collect(),
                }
            }),
            1 => (group.clone(), members).prop_map(|(group, members)| OffsetsCommand::RemoveMembers {
                group,
                members: members.into_iter().map(String::from).collect(),
            }),
            1 => (group.clone(), offsets).prop_map(|(group, offsets)| OffsetsCommand::ResetOffsets { group, offsets }),
            1 => group.prop_map(|group| OffsetsCommand::DeleteGroup { group }),
            1 => (1u64..50).prop_map(|retention_ms| OffsetsCommand::ExpireGroups { retention_ms }),
        ]
    }

    #[derive(Debug, Clone)]
    enum Step {
        Command {
            after_ms: u64,
            command: OffsetsCommand,
        },
        NoOp,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            // Times also step backwards (a new leader's clock behind the last one's).
            10 => (0u64..20, any::<bool>(), command()).prop_map(|(delta, back, command)| Step::Command {
                after_ms: if back { 0 } else { delta },
                command,
            }),
            1 => Just(Step::NoOp),
        ]
    }

    fn log_of(steps: &[Step]) -> Vec<Entry> {
        let mut now = 1_000u64;
        steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let index = i as Index + 1;
                match step {
                    Step::Command { after_ms, command } => {
                        now += after_ms;
                        // Every fifth entry comes from a proposer whose clock is behind.
                        let skew = if index % 5 == 0 { 15 } else { 0 };
                        Entry {
                            index,
                            term: 1,
                            kind: EntryKind::Meta,
                            payload: OffsetsEntry {
                                at_ms: now.saturating_sub(skew),
                                command: command.clone(),
                            }
                            .encode(),
                        }
                    }
                    Step::NoOp => Entry {
                        index,
                        term: 1,
                        kind: EntryKind::NoOp,
                        payload: Bytes::new(),
                    },
                }
            })
            .collect()
    }

    fn replay(
        state: &mut OffsetsState,
        entries: &[Entry],
    ) -> Vec<Option<Result<OffsetsOutcome, GroupError>>> {
        entries.iter().map(|entry| state.apply(entry)).collect()
    }

    proptest::proptest! {
        #[test]
        fn a_snapshot_at_any_index_plus_the_rest_of_the_log_is_the_live_state(
            steps in proptest::collection::vec(step(), 1..80),
            cut in 0usize..80,
        ) {
            let log = log_of(&steps);
            let cut = cut.min(log.len());
            let mut live = OffsetsState::default();
            let live_results = replay(&mut live, &log);

            let mut at_cut = OffsetsState::default();
            at_cut.fold(&log[..cut]);
            proptest::prop_assert_eq!(at_cut.applied_index, cut as Index);
            let mut restored = OffsetsState::restore(&at_cut.snapshot()).unwrap();
            proptest::prop_assert_eq!(&restored, &at_cut);
            let results = replay(&mut restored, &log[cut..]);
            proptest::prop_assert_eq!(&restored, &live);
            proptest::prop_assert_eq!(&results[..], &live_results[cut..]);

            // Whatever was refused, the state keeps its invariants.
            for record in live.groups.values() {
                if !record.members.is_empty() {
                    proptest::prop_assert!(record.protocol.is_some() && record.protocol_type.is_some());
                }
                if let Some(leader) = &record.leader {
                    proptest::prop_assert!(record.has_member(leader));
                }
            }
        }
    }
}
