//! Unit tests of `RaftNode` one message at a time: what each consensus rule (election, replication
//! and commit, flow control; docs/ARCHITECTURE.md "Consensus rules") makes a single node do, read
//! off its `Ready`.

use bytes::Bytes;

use crate::{
    AppendEntries, AppendEntriesResponse, AppendResult, Config, Configuration, Entry, EntryKind,
    HardState, Index, MemoryLog, Message, MessageBody, NodeId, ProposeError, RaftNode, Ready,
    RecoveredState, Role, Term, VoteRequest, VoteResponse,
};

fn entry(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Data,
        payload: Bytes::from(format!("{index}/{term}")),
    }
}

/// Node `id` of a group of `voters`, over a log holding entries of the given terms (index 1..).
fn node_with(
    id: NodeId,
    voters: u64,
    log_terms: &[Term],
    recovered: RecoveredState,
    config: Option<Config>,
) -> RaftNode<MemoryLog> {
    let mut log = MemoryLog::new();
    let entries: Vec<Entry> = log_terms
        .iter()
        .enumerate()
        .map(|(i, &term)| entry(i as Index + 1, term))
        .collect();
    log.append(&entries);
    // These nodes model members in the middle of their life, past the vote hold of a restart
    // (a_restarted_node_ignores_elections_for_one_election_timeout tests the hold).
    let config = config.unwrap_or_else(|| {
        let mut config = Config::new(id, id * 31);
        config.vote_hold_after_restart = false;
        config
    });
    RaftNode::new(
        config,
        Configuration::with_voters(1..=voters),
        log,
        recovered,
    )
    .expect("valid")
}

fn follower(id: NodeId, voters: u64, log_terms: &[Term], term: Term) -> RaftNode<MemoryLog> {
    let recovered = RecoveredState {
        hard_state: HardState { term, vote: None },
        ..RecoveredState::default()
    };
    node_with(id, voters, log_terms, recovered, None)
}

/// Takes a Ready and does the driver's writes and acknowledgements (but sends nothing).
fn drive(node: &mut RaftNode<MemoryLog>) -> Ready {
    let ready = node.ready();
    node.storage_mut()
        .write(ready.truncate_from, &ready.entries);
    if let Some((index, term)) = ready.last_entry() {
        node.on_persisted(index, term);
    }
    if let Some(last) = ready.committed_entries.last() {
        node.on_applied(last.index);
    }
    node.validate();
    ready
}

fn messages_to(batches: &[crate::PeerMessages], to: NodeId) -> Vec<Message> {
    batches
        .iter()
        .filter(|batch| batch.to == to)
        .flat_map(|batch| batch.messages.clone())
        .collect()
}

fn append(
    term: Term,
    prev: (Index, Term),
    entries: &[(Index, Term)],
    leader_commit: Index,
) -> Message {
    Message {
        term,
        body: MessageBody::AppendEntries(AppendEntries {
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries: entries
                .iter()
                .map(|&(index, term)| entry(index, term))
                .collect(),
            leader_commit,
        }),
    }
}

fn vote_request(term: Term, last: (Index, Term), pre_vote: bool) -> Message {
    let request = VoteRequest {
        last_log_index: last.0,
        last_log_term: last.1,
    };
    let body = if pre_vote {
        MessageBody::PreVote(request)
    } else {
        MessageBody::RequestVote(request)
    };
    Message { term, body }
}

fn granted(message: &Message) -> bool {
    match message.body {
        MessageBody::PreVoteResponse(VoteResponse { granted })
        | MessageBody::RequestVoteResponse(VoteResponse { granted }) => granted,
        _ => panic!("not a vote response: {message:?}"),
    }
}

/// A leader of a `voters` group in term 2 whose no-op (index 1) is committed by node 2.
fn leader(voters: u64, config: Option<Config>) -> RaftNode<MemoryLog> {
    let mut node = node_with(1, voters, &[], RecoveredState::default(), config);
    node.campaign();
    for voter in 2..=voters {
        node.step(
            voter,
            Message {
                term: 1,
                body: MessageBody::PreVoteResponse(VoteResponse { granted: true }),
            },
        );
    }
    drive(&mut node);
    for voter in 2..=voters {
        node.step(
            voter,
            Message {
                term: 1,
                body: MessageBody::RequestVoteResponse(VoteResponse { granted: true }),
            },
        );
    }
    assert_eq!(node.role(), Role::Leader);
    drive(&mut node);
    for voter in 2..=voters {
        acknowledge(&mut node, voter, 1);
    }
    drive(&mut node);
    assert_eq!(node.commit_index(), 1);
    node
}

fn acknowledge(node: &mut RaftNode<MemoryLog>, from: NodeId, match_index: Index) {
    let term = node.term();
    let response = AppendEntriesResponse {
        result: AppendResult::Accepted { match_index },
        applied_index: 0,
    };
    node.step(
        from,
        Message {
            term,
            body: MessageBody::AppendEntriesResponse(response),
        },
    );
}

#[test]
fn a_vote_is_persisted_before_the_reply_leaves() {
    let mut node = follower(2, 3, &[1], 1);
    node.step(1, vote_request(2, (1, 1), false));
    let ready = node.ready();
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: 2,
            vote: Some(1)
        })
    );
    assert!(
        ready.messages.is_empty(),
        "nothing may leave before the vote is durable"
    );
    let replies = messages_to(&ready.messages_after_persist, 1);
    assert_eq!(replies.len(), 1);
    assert!(granted(&replies[0]));
}

#[test]
fn a_candidate_asks_for_votes_only_after_its_own_vote_is_durable() {
    let mut node = follower(1, 3, &[], 0);
    node.campaign();
    let ready = node.ready();
    assert_eq!(ready.hard_state, None, "pre-vote changes no durable state");
    assert_eq!(
        messages_to(&ready.messages, 2).len(),
        1,
        "PreVote goes out at once"
    );
    node.step(
        2,
        Message {
            term: 1,
            body: MessageBody::PreVoteResponse(VoteResponse { granted: true }),
        },
    );
    assert_eq!(node.role(), Role::Candidate);
    let ready = node.ready();
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: 1,
            vote: Some(1)
        })
    );
    assert!(ready.messages.is_empty());
    assert!(matches!(
        messages_to(&ready.messages_after_persist, 3)[0].body,
        MessageBody::RequestVote(_)
    ));
    assert_eq!(
        node.ready().hard_state,
        None,
        "the hard state is handed out only when it changes"
    );
}

#[test]
fn pre_vote_raises_nobodys_term() {
    let mut node = follower(2, 3, &[1], 1);
    node.step(3, vote_request(2, (1, 1), true));
    assert_eq!((node.term(), node.vote()), (1, None));
    let ready = node.ready();
    assert_eq!(ready.hard_state, None);
    let replies = messages_to(&ready.messages, 3);
    assert!(granted(&replies[0]));
    assert_eq!(
        replies[0].term, 2,
        "a granted pre-vote answers in the proposed term"
    );
}

#[test]
fn leader_stickiness_ignores_vote_requests_while_the_leader_is_live() {
    let mut node = follower(2, 3, &[1], 1);
    node.step(1, append(1, (1, 1), &[], 1));
    drive(&mut node);
    for pre_vote in [true, false] {
        node.step(3, vote_request(2, (5, 1), pre_vote));
        assert_eq!(node.term(), 1, "the term is not raised");
        let ready = node.ready();
        assert!(
            ready.messages.is_empty() && ready.messages_after_persist.is_empty(),
            "no reply at all"
        );
    }
    for _ in 0..node.config().election_timeout_min_ticks {
        node.tick();
    }
    node.step(3, vote_request(2, (5, 1), false));
    assert_eq!(
        (node.term(), node.vote()),
        (2, Some(3)),
        "after election_min without the leader it votes"
    );
}

#[test]
fn the_up_to_date_check_compares_last_term_then_length() {
    // (voter's log terms, candidate's (last index, last term), granted)
    let table: &[(&[Term], (Index, Term), bool)] = &[
        (&[1, 1], (2, 1), true),
        (&[1, 1], (1, 1), false),
        (&[1, 1], (1, 2), true),
        (&[1, 2], (5, 1), false),
        (&[1, 2], (2, 2), true),
        (&[], (0, 0), true),
    ];
    for &(log_terms, last, expected) in table {
        let mut node = follower(2, 3, log_terms, 2);
        node.step(1, vote_request(3, last, false));
        let replies = messages_to(&node.ready().messages_after_persist, 1);
        assert_eq!(
            granted(&replies[0]),
            expected,
            "voter {log_terms:?}, candidate {last:?}"
        );
    }
}

#[test]
fn one_vote_per_term_first_come_first_served() {
    let mut node = follower(2, 3, &[], 0);
    node.step(1, vote_request(1, (0, 0), false));
    node.step(3, vote_request(1, (0, 0), false));
    node.step(1, vote_request(1, (0, 0), false));
    let ready = node.ready();
    assert!(granted(&messages_to(&ready.messages_after_persist, 1)[0]));
    assert!(!granted(&messages_to(&ready.messages_after_persist, 3)[0]));
    assert!(
        granted(&messages_to(&ready.messages_after_persist, 1)[1]),
        "a repeated request is granted again"
    );
}

#[test]
fn an_abstaining_node_neither_votes_nor_campaigns_until_its_log_reaches_the_index() {
    let recovered = RecoveredState {
        hard_state: HardState {
            term: 1,
            vote: None,
        },
        applied_index: 0,
        abstain_until_index: Some(3),
    };
    let mut node = node_with(2, 3, &[1], recovered, None);
    node.step(1, vote_request(2, (5, 1), false));
    assert!(!granted(
        &messages_to(&node.ready().messages_after_persist, 1)[0]
    ));
    for _ in 0..3 * node.config().election_timeout_min_ticks {
        node.tick();
    }
    assert_eq!(node.role(), Role::Follower, "it never campaigns");
    assert!(node.ready().messages.is_empty());
    node.step(1, append(2, (1, 1), &[(2, 2), (3, 2)], 0));
    drive(&mut node);
    assert_eq!(
        node.abstain_until_index(),
        None,
        "replication brought the log to index 3"
    );
    node.campaign();
    assert_eq!(node.role(), Role::PreCandidate, "it may campaign again");
}

#[test]
fn election_timeouts_are_drawn_anew_at_every_reset() {
    let mut node = follower(1, 3, &[], 0);
    let mut timeouts = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let mut ticks = 0;
        while node.role() == Role::Follower {
            node.tick();
            ticks += 1;
        }
        let minimum = node.config().election_timeout_min_ticks;
        assert!(
            (minimum..2 * minimum).contains(&ticks),
            "timeout {ticks} out of range"
        );
        timeouts.insert(ticks);
        node.step(2, append(node.term() + 1, (0, 0), &[], 0)); // back to follower; timer reset
        drive(&mut node);
    }
    assert!(timeouts.len() >= 3, "timeouts must vary: {timeouts:?}");
}

#[test]
fn a_new_leader_appends_a_noop_of_its_term_and_sends_it() {
    let mut node = leader(3, None);
    let no_op = &node.entries(1, 2)[0];
    assert_eq!(
        (no_op.index, no_op.term, no_op.kind),
        (1, 1, EntryKind::NoOp)
    );
    node.propose(Bytes::from_static(b"x")).expect("leader");
    let ready = drive(&mut node);
    assert_eq!(ready.entries.len(), 1);
    for to in [2, 3] {
        let MessageBody::AppendEntries(append) = &messages_to(&ready.messages, to)[0].body else {
            panic!("an AppendEntries");
        };
        assert_eq!(
            (
                append.prev_log_index,
                append.entries.len(),
                append.leader_commit
            ),
            (1, 1, 1)
        );
    }
}

#[test]
fn a_follower_redirects_proposals_to_the_leader_it_knows() {
    let mut node = follower(2, 3, &[], 0);
    assert_eq!(
        node.propose(Bytes::new()),
        Err(ProposeError::NotLeader { leader_hint: None })
    );
    node.step(3, append(1, (0, 0), &[], 0));
    assert_eq!(
        node.propose(Bytes::new()),
        Err(ProposeError::NotLeader {
            leader_hint: Some(3)
        })
    );
}

#[test]
fn proposals_get_overloaded_past_the_uncommitted_byte_limit() {
    let mut config = Config::new(1, 5);
    config.max_append_bytes = 100;
    config.max_uncommitted_bytes = 300;
    let mut node = leader(3, Some(config));
    let payload = Bytes::from(vec![0u8; 75]); // 100 bytes with the entry overhead
    for _ in 0..3 {
        node.propose(payload.clone()).expect("within the limit");
    }
    assert!(matches!(
        node.propose(payload.clone()),
        Err(ProposeError::Overloaded { .. })
    ));
    assert!(matches!(
        node.propose(Bytes::from(vec![0u8; 400])),
        Err(ProposeError::PayloadTooLarge { .. })
    ));
    drive(&mut node);
    acknowledge(&mut node, 2, 4);
    drive(&mut node);
    assert_eq!(node.commit_index(), 4);
    assert_eq!(node.uncommitted_bytes(), 0);
    node.propose(payload).expect("commits made room again");
}

#[test]
fn a_conflicting_suffix_is_truncated_and_the_ready_says_so_first() {
    let mut node = follower(2, 3, &[1, 1, 2, 2], 2);
    node.step(1, append(3, (2, 1), &[(3, 3)], 2));
    let ready = drive(&mut node);
    assert_eq!(ready.truncate_from, Some(3));
    assert_eq!(
        ready
            .entries
            .iter()
            .map(|e| (e.index, e.term))
            .collect::<Vec<_>>(),
        vec![(3, 3)]
    );
    assert_eq!((node.last_index(), node.term_at(3)), (3, Some(3)));
    let reply = &messages_to(&ready.messages_after_persist, 1)[0];
    assert!(matches!(
        reply.body,
        MessageBody::AppendEntriesResponse(AppendEntriesResponse {
            result: AppendResult::Accepted { match_index: 3 },
            ..
        })
    ));
}

#[test]
fn entries_already_held_are_not_rewritten() {
    let mut node = follower(2, 3, &[1, 1, 1], 1);
    node.step(1, append(1, (1, 1), &[(2, 1), (3, 1)], 0));
    let ready = drive(&mut node);
    assert_eq!((ready.truncate_from, ready.entries.len()), (None, 0));
}

#[test]
fn a_rejection_hint_lets_the_leader_skip_a_whole_term() {
    // The follower holds terms [1, 2, 2, 2, 2] and is asked about index 5 with term 3.
    let mut node = follower(2, 3, &[1, 2, 2, 2, 2], 3);
    node.step(1, append(3, (5, 3), &[], 0));
    let ready = drive(&mut node);
    let MessageBody::AppendEntriesResponse(response) =
        messages_to(&ready.messages_after_persist, 1)[0].body
    else {
        panic!("a response");
    };
    let AppendResult::Rejected {
        rejected_index,
        hint,
    } = response.result
    else {
        panic!("a rejection");
    };
    assert_eq!(rejected_index, 5);
    assert_eq!(
        (
            hint.last_index,
            hint.conflict_term,
            hint.conflict_term_first_index
        ),
        (5, Some(2), 2)
    );
}

#[test]
fn a_follower_commits_up_to_the_last_new_entry_only() {
    let mut node = follower(2, 3, &[1, 1, 1, 1], 1);
    node.step(1, append(1, (2, 1), &[], 4));
    assert_eq!(
        node.commit_index(),
        2,
        "only the prefix the message proved matching"
    );
    node.step(1, append(1, (3, 1), &[(4, 1)], 9));
    assert_eq!(node.commit_index(), 4);
}

#[test]
fn the_leader_commits_only_entries_of_its_current_term_by_counting() {
    // Node 1 leads term 3 over a log [1, 2]; a majority acknowledging index 2 (term 2) is not
    // enough, the no-op at index 3 (term 3) must be acknowledged.
    let recovered = RecoveredState {
        hard_state: HardState {
            term: 2,
            vote: None,
        },
        ..RecoveredState::default()
    };
    let mut node = node_with(1, 3, &[1, 2], recovered, None);
    node.campaign();
    node.step(
        2,
        Message {
            term: 3,
            body: MessageBody::PreVoteResponse(VoteResponse { granted: true }),
        },
    );
    drive(&mut node);
    node.step(
        2,
        Message {
            term: 3,
            body: MessageBody::RequestVoteResponse(VoteResponse { granted: true }),
        },
    );
    assert_eq!((node.role(), node.term()), (Role::Leader, 3));
    drive(&mut node);
    acknowledge(&mut node, 2, 2);
    assert_eq!(
        node.commit_index(),
        0,
        "index 2 has term 2: not committed by counting"
    );
    acknowledge(&mut node, 2, 3);
    assert_eq!(
        node.commit_index(),
        3,
        "the current-term no-op commits everything before it"
    );
}

#[test]
fn pipelining_is_bounded_by_max_inflight_msgs_and_batches_by_max_append_bytes() {
    let mut config = Config::new(1, 9);
    config.max_append_bytes = 250; // ten 25-byte empty entries
    config.max_inflight_msgs = 3;
    let mut node = leader(2, Some(config));
    for _ in 0..100 {
        node.propose(Bytes::new()).expect("leader");
    }
    let ready = drive(&mut node);
    let appends = messages_to(&ready.messages, 2);
    assert_eq!(appends.len(), 3, "three messages in flight at most");
    for message in &appends {
        let MessageBody::AppendEntries(append) = &message.body else {
            panic!("append")
        };
        assert_eq!(
            append.entries.len(),
            10,
            "each batch fills max_append_bytes"
        );
    }
    acknowledge(&mut node, 2, 11);
    let ready = drive(&mut node);
    assert_eq!(
        messages_to(&ready.messages, 2).len(),
        1,
        "one acknowledgement frees one slot"
    );
}

#[test]
fn the_leader_holds_back_a_follower_with_a_large_unapplied_backlog() {
    let mut config = Config::new(1, 9);
    config.max_unapplied_entries = 5;
    let mut node = leader(2, Some(config));
    for _ in 0..10 {
        node.propose(Bytes::new()).expect("leader");
    }
    drive(&mut node);
    acknowledge(&mut node, 2, 11); // persisted and committed, applied index still 0
    drive(&mut node);
    node.propose(Bytes::new()).expect("leader");
    let ready = drive(&mut node);
    let sent_entries: usize = messages_to(&ready.messages, 2)
        .iter()
        .map(|message| match &message.body {
            MessageBody::AppendEntries(append) => append.entries.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(
        sent_entries, 0,
        "11 committed entries unapplied > max_unapplied_entries"
    );
    let term = node.term();
    let response = AppendEntriesResponse {
        result: AppendResult::Accepted { match_index: 11 },
        applied_index: 11,
    };
    node.step(
        2,
        Message {
            term,
            body: MessageBody::AppendEntriesResponse(response),
        },
    );
    let ready = drive(&mut node);
    assert!(
        !messages_to(&ready.messages, 2).is_empty(),
        "applying caught up: sending resumes"
    );
}

#[test]
fn check_quorum_demotes_a_leader_that_hears_from_no_majority() {
    let mut node = leader(3, None);
    for _ in 0..2 * node.config().election_timeout_min_ticks {
        node.tick();
    }
    assert_eq!((node.role(), node.term()), (Role::Follower, 1));
}

// ---- Membership (docs/RAFT-CORE.md "Membership") ----

use crate::{Membership, MembershipChange, MembershipError};

fn add_learner(id: NodeId, incarnation: u64) -> MembershipChange {
    MembershipChange::AddLearner { id, incarnation }
}

#[test]
fn a_membership_change_waits_for_the_leaders_own_term_entry_and_the_previous_change() {
    let mut node = node_with(1, 3, &[], RecoveredState::default(), None);
    node.campaign();
    for voter in [2, 3] {
        let body = MessageBody::PreVoteResponse(VoteResponse { granted: true });
        node.step(voter, Message { term: 1, body });
    }
    drive(&mut node);
    let body = MessageBody::RequestVoteResponse(VoteResponse { granted: true });
    node.step(2, Message { term: 1, body });
    drive(&mut node);
    assert_eq!(node.role(), Role::Leader);
    assert_eq!(
        node.propose_membership_change(add_learner(4, 0)),
        Err(MembershipError::OwnTermNotCommitted),
        "the no-op is not committed yet"
    );
    acknowledge(&mut node, 2, 1);
    drive(&mut node);
    assert_eq!(node.commit_index(), 1);
    let (index, _) = node
        .propose_membership_change(add_learner(4, 0))
        .expect("allowed once the no-op committed");
    assert_eq!(
        node.membership().learners.get(&4),
        Some(&0),
        "in effect when appended"
    );
    assert!(
        node.progress(4).is_some(),
        "the learner gets a progress at once"
    );
    assert_eq!(
        node.propose_membership_change(MembershipChange::RemoveVoter {
            id: 3,
            incarnation: 0
        }),
        Err(MembershipError::ChangePending { index })
    );
    drive(&mut node);
    acknowledge(&mut node, 2, index);
    drive(&mut node);
    assert!(!node.membership_change_pending());
    node.propose_membership_change(MembershipChange::RemoveVoter {
        id: 3,
        incarnation: 0,
    })
    .expect("the previous change committed");
}

#[test]
fn a_learner_neither_counts_toward_commit_nor_campaigns() {
    let mut node = leader(3, None);
    let (index, _) = node
        .propose_membership_change(add_learner(4, 0))
        .expect("ok");
    drive(&mut node);
    acknowledge(&mut node, 4, index);
    drive(&mut node);
    assert!(
        node.commit_index() < index,
        "a learner's acknowledgement counts for nothing"
    );
    acknowledge(&mut node, 2, index);
    drive(&mut node);
    assert_eq!(node.commit_index(), index);

    let mut learner = RaftNode::with_membership(
        Config::new(4, 4),
        node.membership().clone(),
        MemoryLog::new(),
        RecoveredState::default(),
    )
    .expect("a learner may start");
    for _ in 0..100 {
        learner.tick();
    }
    assert_eq!(learner.role(), Role::Follower);
    assert!(
        learner.ready().messages.is_empty(),
        "a learner never campaigns"
    );
}

#[test]
fn a_leader_that_removes_itself_steps_down_once_the_change_commits() {
    let mut node = leader(3, None);
    let (index, _) = node
        .propose_membership_change(MembershipChange::RemoveVoter {
            id: 1,
            incarnation: 0,
        })
        .expect("ok");
    drive(&mut node);
    assert_eq!(
        node.role(),
        Role::Leader,
        "it leads until the change commits"
    );
    acknowledge(&mut node, 2, index);
    drive(&mut node);
    assert!(
        node.commit_index() < index,
        "it does not count itself any more"
    );
    acknowledge(&mut node, 3, index);
    drive(&mut node);
    assert_eq!(node.commit_index(), index);
    assert_eq!(node.role(), Role::Follower);
    for _ in 0..100 {
        node.tick();
    }
    assert_ne!(
        node.role(),
        Role::PreCandidate,
        "a removed node never campaigns"
    );
}

#[test]
fn messages_from_a_lost_incarnation_are_ignored() {
    // Voters 1, 2, 3 at incarnation 7; node 3 lost its disk and came back as incarnation 8.
    let membership = Membership::with_voters([(1, 7), (2, 7), (3, 7)]);
    let mut config = Config::new(1, 1);
    config.incarnation = 7;
    let mut node = RaftNode::with_membership(
        config,
        membership,
        MemoryLog::new(),
        RecoveredState::default(),
    )
    .expect("valid");
    node.campaign();
    let body = MessageBody::PreVoteResponse(VoteResponse { granted: true });
    node.step_from(3, 8, Message { term: 1, body });
    assert_eq!(
        node.role(),
        Role::PreCandidate,
        "the new incarnation's pre-vote does not count"
    );
    let body = MessageBody::PreVoteResponse(VoteResponse { granted: true });
    node.step_from(2, 7, Message { term: 1, body });
    assert_eq!(node.role(), Role::Candidate);
    drive(&mut node);
    let body = MessageBody::RequestVoteResponse(VoteResponse { granted: true });
    node.step_from(3, 8, Message { term: 1, body });
    assert_eq!(node.role(), Role::Candidate, "nor does its vote");
    let body = MessageBody::RequestVoteResponse(VoteResponse { granted: true });
    node.step_from(2, 7, Message { term: 1, body });
    assert_eq!(node.role(), Role::Leader);
    drive(&mut node);
    let response = AppendEntriesResponse {
        result: AppendResult::Accepted { match_index: 1 },
        applied_index: 0,
    };
    let body = MessageBody::AppendEntriesResponse(response);
    node.step_from(3, 8, Message { term: 1, body });
    drive(&mut node);
    assert_eq!(node.commit_index(), 0, "nor does its acknowledgement");
    // An answer with a higher term from the lost incarnation does not depose the leader.
    let body = MessageBody::RequestVoteResponse(VoteResponse { granted: false });
    node.step_from(3, 8, Message { term: 9, body });
    assert_eq!((node.role(), node.term()), (Role::Leader, 1));
}

#[test]
fn a_follower_uses_the_latest_configuration_in_its_log_and_drops_it_with_a_truncation() {
    let mut node = follower(2, 3, &[1], 1);
    let with_learner = Membership::from_configuration(&Configuration::with_voters(1..=3))
        .apply(add_learner(4, 0))
        .expect("ok");
    let config_entry = Entry {
        index: 2,
        term: 1,
        kind: EntryKind::Config,
        payload: with_learner.encode(),
    };
    let message = Message {
        term: 1,
        body: MessageBody::AppendEntries(AppendEntries {
            prev_log_index: 1,
            prev_log_term: 1,
            entries: vec![config_entry],
            leader_commit: 1,
        }),
    };
    node.step(1, message);
    drive(&mut node);
    assert_eq!(
        node.membership(),
        &with_learner,
        "in effect before it commits"
    );
    node.step(1, append(2, (1, 1), &[(2, 2)], 1));
    drive(&mut node);
    assert_eq!(
        node.membership(),
        &Membership::from_configuration(&Configuration::with_voters(1..=3)),
        "the truncated configuration is gone"
    );
}

#[test]
fn a_malformed_append_is_ignored() {
    let mut node = follower(2, 3, &[1], 1);
    node.step(1, append(1, (1, 1), &[(3, 1)], 0));
    node.step(1, append(1, (1, 1), &[(2, 5)], 0));
    let ready = drive(&mut node);
    assert!(ready.entries.is_empty() && ready.messages_after_persist.is_empty());
    assert_eq!(node.last_index(), 1);
}

#[test]
fn a_restarted_node_ignores_elections_for_one_election_timeout() {
    // Before its crash it may have answered a lease round; the promise must outlive the crash.
    let recovered = RecoveredState {
        hard_state: HardState {
            term: 3,
            vote: None,
        },
        ..RecoveredState::default()
    };
    let mut node = node_with(2, 3, &[1], recovered, Some(Config::new(2, 7)));
    node.step(1, vote_request(4, (5, 3), true));
    node.step(1, vote_request(4, (5, 3), false));
    let ready = drive(&mut node);
    assert_eq!(ready.message_count(), 0, "no answer during the hold");
    assert_eq!(node.term(), 3);
    for _ in 0..node.config().election_timeout_min_ticks {
        node.tick();
    }
    drive(&mut node);
    node.step(1, vote_request(4, (5, 3), false));
    let ready = drive(&mut node);
    assert!(granted(&messages_to(&ready.messages_after_persist, 1)[0]));
}

/// An acknowledgement queued for a deposed leader must not outlive a truncation by the new
/// one: in one Ready it would leave after the writes and claim entries the log no longer holds
/// (found by the simulator, seed 37529).
#[test]
fn an_acknowledgement_of_truncated_entries_is_never_sent() {
    let mut node = follower(3, 5, &[1, 1], 1);
    // Leader 5 of term 2 sends entries 3 and 4; before the driver takes a Ready, leader 2 of
    // term 3 overrules them with its own entry 3.
    node.step(5, append(2, (2, 1), &[(3, 2), (4, 2)], 2));
    node.step(2, append(3, (2, 1), &[(3, 3)], 2));
    let ready = drive(&mut node);
    let stale = messages_to(&ready.messages_after_persist, 5);
    assert!(
        stale.iter().all(|message| !matches!(
            message.body,
            MessageBody::AppendEntriesResponse(AppendEntriesResponse {
                result: AppendResult::Accepted { match_index },
                ..
            }) if match_index > 3
        )),
        "a stale leader is told of entries the log no longer holds: {stale:?}"
    );
    let to_new = messages_to(&ready.messages_after_persist, 2);
    assert!(
        to_new.iter().any(|message| matches!(
            message.body,
            MessageBody::AppendEntriesResponse(AppendEntriesResponse {
                result: AppendResult::Accepted { match_index: 3 },
                ..
            })
        )),
        "the new leader hears its entry: {to_new:?}"
    );
    assert_eq!(node.last_index(), 3);
}
