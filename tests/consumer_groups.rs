//! Consumer groups against real `keel server` processes, spoken in raw requests so every error
//! path is reachable (docs/CONSUMER-GROUPS.md): the coordinator found and followed, Kafka's
//! classic membership (join, sync, heartbeat, leave), commits fenced by member and generation,
//! committed offsets that survive a kill -9 of the coordinator's node and a full restart, and the
//! reserved `__` topic names.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::{ask_nodes, connect_client, Raw};
use common::{runtime, TestCluster};
use keel_client::wire::groups::{
    DeleteGroupRequest, DescribeGroupRequest, FindCoordinatorRequest, GroupAssignment,
    GroupProtocol, GroupStateView, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest, PartitionOffset,
    ResetOffsetsRequest, SyncGroupRequest, TopicPartitionRef, NO_GENERATION,
};
use keel_client::wire::messages::{CreateTopicRequest, DeleteTopicRequest, DescribeTopicRequest};
use keel_client::wire::{ErrorCode, Request, Response};

/// The coordinator of `group`: (node id, address), asked of any node.
async fn find(cluster: &TestCluster, group: &str) -> (u64, SocketAddr) {
    let request = Request::FindCoordinator(FindCoordinatorRequest {
        group: group.into(),
    });
    ask_nodes(
        cluster,
        &request,
        &Bytes::new(),
        |response, _| match response {
            Response::FindCoordinator(found) => {
                Some((found.node_id, found.address.parse().expect("address")))
            }
            _ => None,
        },
    )
    .await
}

/// Errors a client answers by finding the coordinator again.
fn moved(response: &Response) -> bool {
    matches!(
        response,
        Response::Error(
            ErrorCode::NotCoordinator
                | ErrorCode::CoordinatorLoadInProgress
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::Unavailable
        )
    )
}

/// Sends `request` to `group`'s coordinator, following it while it moves (up to 30 s).
async fn call(cluster: &TestCluster, group: &str, request: Request) -> Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, address) = find(cluster, group).await;
        if let Ok(raw) = connect_client(cluster, address).await {
            let (response, _) = raw.request(request.clone(), Bytes::new()).await;
            if !moved(&response) {
                return response;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no coordinator answered {request:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn join(group: &str, member_id: Option<&str>) -> Request {
    Request::JoinGroup(JoinGroupRequest {
        group: group.into(),
        member_id: member_id.map(str::to_string),
        client_id: "test".into(),
        session_timeout_ms: 6_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![GroupProtocol {
            name: "range".into(),
            metadata: b"subscription".to_vec(),
        }],
    })
}

fn joined(response: Response) -> JoinGroupResponse {
    match response {
        Response::JoinGroup(joined) => joined,
        other => panic!("join answered {other:?}"),
    }
}

fn sync(group: &str, member_id: &str, generation: i32, assignments: &[(&str, &[u8])]) -> Request {
    Request::SyncGroup(SyncGroupRequest {
        group: group.into(),
        member_id: member_id.into(),
        generation,
        protocol_type: Some("consumer".into()),
        protocol: Some("range".into()),
        assignments: assignments
            .iter()
            .map(|(member_id, assignment)| GroupAssignment {
                member_id: member_id.to_string(),
                assignment: assignment.to_vec(),
            })
            .collect(),
    })
}

fn heartbeat(group: &str, member_id: &str, generation: i32) -> Request {
    Request::Heartbeat(HeartbeatRequest {
        group: group.into(),
        member_id: member_id.into(),
        generation,
    })
}

fn commit(group: &str, member_id: &str, generation: i32, offset: u64) -> Request {
    Request::OffsetCommit(OffsetCommitRequest {
        group: group.into(),
        member_id: member_id.into(),
        generation,
        offsets: vec![PartitionOffset {
            topic: "orders".into(),
            partition: 0,
            offset,
            leader_epoch: None,
            metadata: format!("from {member_id:?}"),
        }],
    })
}

/// The committed offset of orders/0 in `group` (`None`: nothing committed).
async fn committed(cluster: &TestCluster, group: &str) -> Option<u64> {
    let request = Request::OffsetFetch(OffsetFetchRequest {
        group: group.into(),
        partitions: Some(vec![TopicPartitionRef {
            topic: "orders".into(),
            partition: 0,
        }]),
    });
    match call(cluster, group, request).await {
        Response::OffsetFetch(fetched) => {
            assert_eq!(fetched.offsets.len(), 1, "{fetched:?}");
            fetched.offsets[0].offset
        }
        other => panic!("offset fetch answered {other:?}"),
    }
}

fn error(response: Response) -> ErrorCode {
    match response {
        Response::Error(code) => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A node that is not `group`'s coordinator.
async fn other_node(cluster: &TestCluster, group: &str) -> Raw {
    let (coordinator, _) = find(cluster, group).await;
    let node = cluster
        .nodes
        .iter()
        .find(|node| node.id != coordinator)
        .expect("another node");
    let address = format!("127.0.0.1:{}", node.port).parse().unwrap();
    connect_client(cluster, address).await.expect("connect")
}

#[test]
fn members_join_sync_and_commit_and_stale_requests_are_fenced() {
    let cluster = TestCluster::start(3);
    runtime().block_on(async {
        const G: &str = "fenced";
        // Two new members: both answered when the join phase ends (after the initial delay).
        let (a, b) = tokio::join!(call(&cluster, G, join(G, None)), async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            call(&cluster, G, join(G, None)).await
        });
        let (a, b) = (joined(a), joined(b));
        assert_eq!(a.generation, 1);
        assert_eq!(b.generation, 1);
        assert_eq!(a.leader, b.leader);
        // The first to reach the coordinator leads (a retry may have reordered them): call it a.
        let (a, b) = if a.leader == a.member_id {
            (a, b)
        } else {
            (b, a)
        };
        assert_eq!(a.leader, a.member_id);
        assert_eq!(
            a.members.len(),
            2,
            "the leader sees every member's metadata"
        );
        assert!(b.members.is_empty(), "followers see none");
        assert_eq!(a.protocol, "range");

        // The leader's assignment reaches each member once stored.
        let (synced_a, synced_b) = tokio::join!(
            call(
                &cluster,
                G,
                sync(
                    G,
                    &a.member_id,
                    1,
                    &[(&a.member_id, b"A"), (&b.member_id, b"B")]
                )
            ),
            call(&cluster, G, sync(G, &b.member_id, 1, &[]))
        );
        match (synced_a, synced_b) {
            (Response::SyncGroup(sa), Response::SyncGroup(sb)) => {
                assert_eq!(sa.assignment, b"A");
                assert_eq!(sb.assignment, b"B");
            }
            other => panic!("sync answered {other:?}"),
        }
        assert_eq!(
            call(&cluster, G, heartbeat(G, &a.member_id, 1)).await,
            Response::Heartbeat
        );
        assert_eq!(
            call(&cluster, G, commit(G, &a.member_id, 1, 40)).await,
            Response::OffsetCommit
        );
        assert_eq!(committed(&cluster, G).await, Some(40));

        // Error paths.
        assert_eq!(
            error(call(&cluster, G, commit(G, &a.member_id, 0, 1)).await),
            ErrorCode::IllegalGeneration,
            "a stale generation's commit"
        );
        assert_eq!(
            error(call(&cluster, G, heartbeat(G, &b.member_id, 7)).await),
            ErrorCode::IllegalGeneration
        );
        assert_eq!(
            error(call(&cluster, G, heartbeat(G, "nobody", 1)).await),
            ErrorCode::UnknownMemberId
        );
        assert_eq!(
            error(call(&cluster, G, commit(G, "nobody", 1, 1)).await),
            ErrorCode::UnknownMemberId
        );
        assert_eq!(
            error(call(&cluster, G, commit(G, "", NO_GENERATION, 1)).await),
            ErrorCode::UnknownMemberId,
            "a simple commit into a group with members"
        );
        let (response, _) = other_node(&cluster, G)
            .await
            .request(commit(G, &a.member_id, 1, 41), Bytes::new())
            .await;
        assert_eq!(error(response), ErrorCode::NotCoordinator);
        let reset = Request::ResetOffsets(ResetOffsetsRequest {
            group: G.into(),
            offsets: vec![PartitionOffset {
                topic: "orders".into(),
                partition: 0,
                offset: 0,
                leader_epoch: None,
                metadata: String::new(),
            }],
        });
        assert_eq!(
            error(call(&cluster, G, reset.clone()).await),
            ErrorCode::NonEmptyGroup
        );
        let delete = Request::DeleteGroup(DeleteGroupRequest { group: G.into() });
        assert_eq!(
            error(call(&cluster, G, delete.clone()).await),
            ErrorCode::NonEmptyGroup
        );
        assert_eq!(
            committed(&cluster, G).await,
            Some(40),
            "nothing refused landed"
        );

        // B leaves: A learns of the rebalance from its heartbeat, rejoins alone into
        // generation 2, and its commits of generation 1 are refused from then on.
        let leave = |member_id: &str| {
            Request::LeaveGroup(LeaveGroupRequest {
                group: G.into(),
                member_id: member_id.into(),
            })
        };
        assert_eq!(
            call(&cluster, G, leave(&b.member_id)).await,
            Response::LeaveGroup
        );
        assert_eq!(
            error(call(&cluster, G, heartbeat(G, &a.member_id, 1)).await),
            ErrorCode::RebalanceInProgress
        );
        let again = joined(call(&cluster, G, join(G, Some(&a.member_id))).await);
        assert_eq!(again.generation, 2);
        assert_eq!(
            error(call(&cluster, G, commit(G, &a.member_id, 1, 50)).await),
            ErrorCode::IllegalGeneration,
            "generation 1 is fenced once generation 2 exists"
        );
        match call(
            &cluster,
            G,
            sync(G, &a.member_id, 2, &[(&a.member_id, b"AB")]),
        )
        .await
        {
            Response::SyncGroup(synced) => assert_eq!(synced.assignment, b"AB"),
            other => panic!("sync answered {other:?}"),
        }
        assert_eq!(
            call(&cluster, G, commit(G, &a.member_id, 2, 50)).await,
            Response::OffsetCommit
        );

        // Empty: reset and delete are allowed.
        assert_eq!(
            call(&cluster, G, leave(&a.member_id)).await,
            Response::LeaveGroup
        );
        let describe = Request::DescribeGroup(DescribeGroupRequest { group: G.into() });
        match call(&cluster, G, describe.clone()).await {
            Response::DescribeGroup(described) => {
                assert_eq!(described.state, GroupStateView::Empty);
                assert!(described.members.is_empty());
                assert_eq!(described.offsets.len(), 1);
                assert_eq!(described.offsets[0].offset, Some(50));
            }
            other => panic!("describe answered {other:?}"),
        }
        assert_eq!(call(&cluster, G, reset).await, Response::ResetOffsets);
        assert_eq!(committed(&cluster, G).await, Some(0));
        assert_eq!(
            call(&cluster, G, delete.clone()).await,
            Response::DeleteGroup
        );
        assert_eq!(committed(&cluster, G).await, None);
        assert_eq!(
            error(call(&cluster, G, delete).await),
            ErrorCode::GroupIdNotFound
        );
    });
}

#[test]
fn committed_offsets_and_generations_survive_a_coordinator_kill_and_a_full_restart() {
    let mut cluster = TestCluster::start(3);
    let rt = runtime();
    const SIMPLE: &str = "simple";
    const MEMBERS: &str = "members";
    let member = rt.block_on(async {
        assert_eq!(
            call(&cluster, SIMPLE, commit(SIMPLE, "", NO_GENERATION, 17)).await,
            Response::OffsetCommit
        );
        let member = joined(call(&cluster, MEMBERS, join(MEMBERS, None)).await);
        match call(
            &cluster,
            MEMBERS,
            sync(
                MEMBERS,
                &member.member_id,
                member.generation,
                &[(&member.member_id, b"all")],
            ),
        )
        .await
        {
            Response::SyncGroup(synced) => assert_eq!(synced.assignment, b"all"),
            other => panic!("sync answered {other:?}"),
        }
        assert_eq!(
            call(
                &cluster,
                MEMBERS,
                commit(MEMBERS, &member.member_id, member.generation, 5)
            )
            .await,
            Response::OffsetCommit
        );
        member
    });

    let (coordinator, _) = rt.block_on(find(&cluster, SIMPLE));
    cluster.kill(coordinator);
    rt.block_on(async {
        assert_eq!(committed(&cluster, SIMPLE).await, Some(17));
        // The new coordinator rebuilt the group from its stored generation: the member goes on
        // without rejoining, and its commits are accepted.
        assert_eq!(
            call(
                &cluster,
                MEMBERS,
                heartbeat(MEMBERS, &member.member_id, member.generation)
            )
            .await,
            Response::Heartbeat
        );
        assert_eq!(
            call(
                &cluster,
                MEMBERS,
                commit(MEMBERS, &member.member_id, member.generation, 6)
            )
            .await,
            Response::OffsetCommit
        );
    });
    cluster.spawn(coordinator);
    cluster.wait_ready(coordinator);

    cluster.restart_all();
    rt.block_on(async {
        assert_eq!(committed(&cluster, SIMPLE).await, Some(17));
        assert_eq!(committed(&cluster, MEMBERS).await, Some(6));
    });
}

#[test]
fn reserved_topic_names_are_refused_to_clients() {
    let cluster = TestCluster::start(1);
    runtime().block_on(async {
        let address = cluster.bootstrap()[0].parse().unwrap();
        let raw = connect_client(&cluster, address).await.expect("connect");
        let create = Request::CreateTopic(CreateTopicRequest {
            name: "__mine".into(),
            partitions: 1,
            replication_factor: None,
            retention_bytes: None,
            retention_ms: None,
            segment_ms: None,
        });
        let (response, _) = raw.request(create, Bytes::new()).await;
        assert_eq!(error(response), ErrorCode::InvalidTopicName);
        let delete = Request::DeleteTopic(DeleteTopicRequest {
            name: "__consumer_offsets".into(),
        });
        let (response, _) = raw.request(delete, Bytes::new()).await;
        assert_eq!(error(response), ErrorCode::NotAuthorized);

        // The cluster made it when founded; it is described when named, never listed.
        let describe = Request::DescribeTopic(DescribeTopicRequest {
            name: "__consumer_offsets".into(),
        });
        let described = ask_nodes(
            &cluster,
            &describe,
            &Bytes::new(),
            |response, _| match response {
                Response::DescribeTopic(description) => Some(description),
                _ => None,
            },
        )
        .await;
        assert_eq!(described.partitions.len(), 8);
        assert_eq!(described.replication_factor, 1);
        let (response, _) = raw.request(Request::ListTopics, Bytes::new()).await;
        match response {
            Response::ListTopics(list) => assert!(list.topics.is_empty(), "{list:?}"),
            other => panic!("list answered {other:?}"),
        }
    });
}

/// The coordinator's node exports each group's lag per partition: the high watermark less the
/// committed offset.
#[test]
fn the_coordinator_exports_consumer_lag_per_group_and_partition() {
    let mut cluster = TestCluster::new(1);
    let port = common::free_tcp_port();
    cluster.nodes[0].metrics_port = Some(port);
    cluster.spawn(1);
    cluster.wait_ready(1);
    runtime().block_on(async {
        let client = cluster.client().await;
        keel_client::Admin::new(client.clone())
            .create_topic("orders", 1, Some(1))
            .await
            .expect("create");
        let producer = keel_client::Producer::new(client.clone());
        for i in 0..10 {
            producer
                .send("orders", None, Bytes::from(format!("m{i}")))
                .await
                .expect("produce");
        }
        assert_eq!(
            call(&cluster, "lagging", commit("lagging", "", NO_GENERATION, 4)).await,
            Response::OffsetCommit
        );
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = common::scrape(port);
        let lag = text.lines().find(|line| {
            line.starts_with("keel_consumer_group_lag{")
                && line.contains("group=\"lagging\"")
                && line.contains("topic=\"orders\"")
                && line.contains("partition=\"0\"")
        });
        if let Some(line) = lag {
            if line.ends_with(" 6") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no lag of 6 exported:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
