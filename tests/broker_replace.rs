//! Node replacement end to end (docs/OPERATIONS.md "Replacing a node", issue: broker part two)
//! with real `keel server` processes: a node whose data dir is deleted comes back under a new
//! incarnation, never votes while it is empty and unreplaced, is replaced with
//! `keel cluster replace-node`, catches up as a learner, is promoted, and leads a partition again;
//! no acknowledged message is lost.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::acked::{check, consume_all, create_topic, produce, TOPIC};
use common::raw::connect_client;
use common::{runtime, TestCluster, KEEL};
use keel_client::wire::messages::ReplaceNodeRequest;
use keel_client::wire::ErrorCode;
use keel_client::wire::{Request, Response};
use keel_client::{Admin, Producer, ReplaceNodeWait};

/// Group 0's leader as node `id` sees it (`None` if the node is down or knows no leader).
async fn meta_leader_seen_by(cluster: &TestCluster, id: u64) -> Option<u64> {
    let address: SocketAddr = format!("127.0.0.1:{}", cluster.node(id).port)
        .parse()
        .unwrap();
    let raw = connect_client(cluster, address).await.ok()?;
    match raw.request(Request::ClusterStatus, Bytes::new()).await.0 {
        Response::ClusterStatus(status) => status
            .partitions
            .iter()
            .find(|group| group.topic.is_none())
            .and_then(|group| group.leader),
        _ => None,
    }
}

fn wait_for_log_line(cluster: &TestCluster, id: u64, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(&cluster.node(id).log).unwrap_or_default();
        if log.contains(line) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} never logged {line:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_wiped_node_is_replaced_catches_up_is_promoted_and_leads_again() {
    let mut cluster = TestCluster::start(3);
    let rt = runtime();
    let _entered = rt.enter();
    let client = rt.block_on(cluster.client());
    // Three partitions on three nodes: node 3 is the preferred leader of one of them.
    rt.block_on(create_topic(&client, 3));
    let admin = Admin::new(client.clone());
    let before = rt.block_on(admin.cluster_status()).expect("status");
    let old_incarnation = before
        .nodes
        .iter()
        .find(|n| n.node_id == 3)
        .unwrap()
        .incarnation;
    let producer = Producer::new(client.clone());
    let (mut acked, failed) = rt.block_on(produce(&producer, 0, 3_000, |_| async {}));
    assert_eq!(failed, 0, "sends failed with every node up");

    // Disk loss: node 3 stops, its data dir is deleted, it starts again on the empty dir.
    cluster.kill(3);
    std::fs::remove_dir_all(&cluster.node(3).data_dir).expect("wiping node 3");
    cluster.spawn(3);
    wait_for_log_line(&cluster, 3, "waiting to be added");

    // While it is empty and unreplaced it never votes: with node 2 down, node 1 and the wiped
    // node 3 are two of three ids, yet no leader of group 0 may emerge.
    cluster.kill(2);
    let leaderless_since = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if meta_leader_seen_by(&cluster, 1).await.is_none() {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "node 1 kept a leader without a quorum"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    rt.block_on(async {
        // Ten election timeouts and more.
        while leaderless_since.elapsed() < Duration::from_secs(4) {
            let leader = meta_leader_seen_by(&cluster, 1).await;
            assert_eq!(
                leader,
                None,
                "a leader was elected with the wiped node's vote:\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    cluster.spawn(2);
    cluster.wait_ready(2);

    // Replace it while producers keep writing: first `--no-wait` (returns once node 3 is a
    // learner everywhere), then the full command (returns once it is promoted everywhere).
    let replace = std::thread::spawn({
        let bootstrap = cluster.bootstrap().join(",");
        let ca = cluster.ca();
        move || {
            let run = |extra: &[&str]| {
                Command::new(KEEL)
                    .args([
                        "cluster",
                        "replace-node",
                        "--id",
                        "3",
                        "--bootstrap",
                        &bootstrap,
                    ])
                    .arg("--ca")
                    .arg(&ca)
                    .args(extra)
                    .output()
                    .expect("running keel cluster replace-node")
            };
            (run(&["--no-wait"]), run(&[]))
        }
    });
    let (more, failed) = rt.block_on(produce(&producer, 3_000, 3_000, |_| async {}));
    assert_eq!(
        failed,
        0,
        "sends failed during the replacement:\n{}",
        cluster.logs()
    );
    acked.extend(more);
    let (learners, replaced) = replace.join().expect("replace thread");
    for output in [&learners, &replaced] {
        assert!(
            output.status.success(),
            "replace-node failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            cluster.logs()
        );
    }
    // Group 0, the partitions of __consumer_offsets and the topic's three.
    let groups = common::FIRST_CLIENT_GROUP + 3;
    assert_eq!(
        String::from_utf8_lossy(&learners.stdout).trim(),
        format!("node 3 added as a learner in {groups} groups")
    );
    assert_eq!(
        String::from_utf8_lossy(&replaced.stdout).trim(),
        format!("node 3 replaced in {groups} groups")
    );

    rt.block_on(async {
        let status = admin.cluster_status().await.expect("status");
        let node = status.nodes.iter().find(|n| n.node_id == 3).unwrap();
        assert_ne!(
            node.incarnation, old_incarnation,
            "the map holds the new incarnation"
        );

        // The promoted node takes back the partition it is the preferred leader of.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let description = admin.describe_topic(TOPIC).await.expect("describe");
            if description.partitions.iter().any(|p| p.leader == Some(3)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node 3 leads no partition: {description:?}\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    // Every acknowledged message, read back from the leaders (node 3 among them), exactly once.
    let read = rt.block_on(consume_all(&client, 3, &acked));
    assert_eq!(check(&acked, &read), 0, "duplicated messages");
    assert_eq!(acked.len(), 6_000);
    rt.block_on(client.close());
}

/// The incarnation node `id` logged at its latest start.
fn logged_incarnation(cluster: &TestCluster, id: u64) -> Option<u64> {
    let log = std::fs::read_to_string(&cluster.node(id).log).ok()?;
    let line = log
        .lines()
        .rev()
        .find(|line| line.contains("node identity"))?;
    let value = line.split("incarnation=").nth(1)?;
    value.split_whitespace().next()?.parse().ok()
}

#[test]
fn replace_node_right_after_a_restart_waits_for_the_new_incarnation() {
    // Regression (found by keel-chaos, seed 6): the last hello of the killed incarnation was
    // still on record, so a replace-node sent right after the wiped node restarted could answer
    // "replaced" at once for the old incarnation, and nothing was replaced.
    let mut cluster = TestCluster::start(3);
    let rt = runtime();
    let _entered = rt.enter();
    let client = rt.block_on(cluster.client());
    rt.block_on(create_topic(&client, 1));
    let admin = Admin::new(client.clone());
    let old = logged_incarnation(&cluster, 2).expect("node 2's first incarnation");
    cluster.kill(2);
    std::fs::remove_dir_all(&cluster.node(2).data_dir).expect("wiping node 2");
    // Node 1 still holds node 2's last hello from before the kill (old incarnation, a voter
    // everywhere). Asked now, with no node 2 running, it must not call that a replacement.
    let address: SocketAddr = format!("127.0.0.1:{}", cluster.node(1).port)
        .parse()
        .unwrap();
    let request = Request::ReplaceNode(ReplaceNodeRequest {
        node_id: 2,
        wait: ReplaceNodeWait::UntilReplaced,
    });
    let answer = rt.block_on(async {
        let raw = connect_client(&cluster, address)
            .await
            .expect("connect to node 1");
        raw.request(request, Bytes::new()).await.0
    });
    assert_eq!(
        answer,
        Response::Error(ErrorCode::Unavailable),
        "a node that is not running is not replaced"
    );
    // The wiped node starts, and the same request made at once replaces it.
    cluster.spawn(2);
    let response = rt
        .block_on(admin.replace_node(2, ReplaceNodeWait::UntilReplaced))
        .expect("replace-node");
    assert_eq!(
        u64::from(response.groups),
        common::FIRST_CLIENT_GROUP + 1,
        "group 0, the offsets partitions and the partition"
    );
    let new = logged_incarnation(&cluster, 2).expect("node 2's new incarnation");
    assert_ne!(new, old);
    // Asking again once it is done is harmless and answers at once.
    let again = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            admin.replace_node(2, ReplaceNodeWait::UntilReplaced),
        )
        .await
    });
    assert_eq!(
        again
            .expect("answered in time")
            .expect("replace again")
            .groups,
        2
    );
    let status = rt.block_on(admin.cluster_status()).expect("status");
    let node = status.nodes.iter().find(|n| n.node_id == 2).unwrap();
    assert_eq!(
        node.incarnation, new,
        "the map holds the running incarnation"
    );
    rt.block_on(client.close());
}
