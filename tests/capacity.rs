//! Capacity admission and offline replicas on real `keel server` processes (docs/OPERATIONS.md
//! "Capacity admission", "Offline replicas"): a 3000-partition create on small disks is refused
//! by group 0's leader with the node and the limit named, while the cluster keeps serving and
//! restarts cleanly; a partition cap from `--config` refuses too; a replica whose directory
//! cannot be made is held offline, shown by `topic describe` and `cluster status`, survives a
//! restart of its node without stopping it, and opens once the obstacle is gone; and the files
//! and maps admission charges per replica are what a real replica holds.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::loopfs::LoopFs;
use common::{TestCluster, KEEL};
use serde_json::Value;

const MIB: u64 = 1 << 20;

fn keel(cluster: &TestCluster, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(KEEL)
        .args(args)
        .arg("--bootstrap")
        .arg(cluster.bootstrap().join(","))
        .arg("--ca")
        .arg(cluster.ca())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running keel");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("writing stdin");
    }
    child.wait_with_output().expect("waiting for keel")
}

fn succeeds(cluster: &TestCluster, args: &[&str], stdin: Option<&str>) -> String {
    let output = keel(cluster, args, stdin);
    assert!(
        output.status.success(),
        "keel {args:?}: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        cluster.logs()
    );
    String::from_utf8(output.stdout).expect("utf-8 stdout")
}

/// Produces `count` lines to `topic` and reads every message of it back from the beginning.
fn produce_and_consume(cluster: &TestCluster, topic: &str, count: usize, total: usize) {
    let lines: String = (0..count).map(|i| format!("{topic}-{i}\n")).collect();
    let acks = succeeds(cluster, &["produce", topic], Some(&lines));
    assert_eq!(acks.lines().count(), count, "{acks}");
    let consumed = succeeds(
        cluster,
        &[
            "consume",
            topic,
            "--from-beginning",
            "--max",
            &total.to_string(),
            "--timeout-ms",
            "10000",
        ],
        None,
    );
    assert_eq!(consumed.lines().count(), total, "{topic}: {consumed}");
}

fn config_file(cluster: &mut TestCluster, text: &str) {
    let path = cluster.dir.path().join("keel.toml");
    std::fs::write(&path, text).unwrap();
    cluster.extra_args = vec!["--config".into(), path.display().to_string()];
}

fn start(cluster: &mut TestCluster) {
    let ids: Vec<u64> = cluster.nodes.iter().map(|node| node.id).collect();
    for &id in &ids {
        cluster.spawn(id);
    }
    for &id in &ids {
        cluster.wait_ready(id);
    }
}

/// The headline case of the issue: `keel topic create bomb --partitions 3000` on nodes whose
/// disks hold a few dozen replicas used to fill every disk and crash-loop every node.
#[test]
fn a_3000_partition_create_on_small_disks_is_refused_and_the_cluster_keeps_serving() {
    let mut cluster = TestCluster::new(3);
    let mut disks = Vec::new();
    for id in 1..=3u64 {
        let Some(disk) = LoopFs::create(cluster.dir.path(), &format!("disk-{id}"), 128 * MIB)
        else {
            return;
        };
        cluster.nodes[id as usize - 1].data_dir = disk.path().join("keel");
        disks.push(disk);
    }
    // A cap far above the create, so the disk is the limit that speaks.
    config_file(&mut cluster, "max_partition_replicas = 100000\n");
    start(&mut cluster);

    succeeds(
        &cluster,
        &["topic", "create", "before", "--partitions", "3"],
        None,
    );
    produce_and_consume(&cluster, "before", 20, 20);

    let started = Instant::now();
    let output = keel(
        &cluster,
        &["topic", "create", "bomb", "--partitions", "3000"],
        None,
    );
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("3000-partition create refused in {took:?}: {stderr}");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty());
    assert!(
        stderr.contains("error: topic create bomb: broker error: insufficient capacity on node ")
            && stderr.contains(": free disk: its data directory's file system has ")
            && stderr.contains("3000 new partition replicas"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(10), "refused in {took:?}");
    assert!(
        cluster
            .logs()
            .contains("create topic refused: insufficient capacity"),
        "the leader logs the refusal"
    );
    let topics = succeeds(&cluster, &["topic", "list"], None);
    assert!(!topics.contains("bomb"), "{topics}");
    // Nothing of it reached a disk: every disk still has almost all of its room.
    for disk in &disks {
        assert!(
            disk.available_bytes() > 80 * MIB,
            "{}",
            disk.available_bytes()
        );
    }

    succeeds(
        &cluster,
        &["topic", "create", "after", "--partitions", "2"],
        None,
    );
    produce_and_consume(&cluster, "after", 10, 10);
    produce_and_consume(&cluster, "before", 5, 25);

    // Every node stops cleanly and comes back, and the data is all there.
    for id in 1..=3 {
        let status = cluster.terminate(id);
        assert!(status.success(), "node {id} exited {status}");
    }
    start(&mut cluster);
    produce_and_consume(&cluster, "before", 5, 30);
    produce_and_consume(&cluster, "after", 5, 15);
    assert!(!cluster.logs().contains("fatal"), "{}", cluster.logs());
}

fn describe_json(cluster: &TestCluster, topic: &str) -> Value {
    let text = succeeds(cluster, &["topic", "describe", topic, "--json"], None);
    serde_json::from_str(&text).expect("describe --json")
}

fn status_json(cluster: &TestCluster) -> Value {
    let text = succeeds(cluster, &["cluster", "status", "--json"], None);
    serde_json::from_str(&text).expect("status --json")
}

fn offline_of(status: &Value, node: u64) -> Value {
    status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|entry| entry["node_id"] == node)
        .map(|entry| entry["offline_replicas"].clone())
        .unwrap_or(Value::Null)
}

/// Polls `check` until it holds or `limit` passes.
fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if Instant::now() >= deadline => panic!("{what}: {why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

#[test]
fn a_replica_that_cannot_be_opened_is_held_offline_and_shown_while_its_node_serves() {
    let mut cluster = TestCluster::new(3);
    // One partition of __consumer_offsets (group 1) keeps the numbers small.
    config_file(
        &mut cluster,
        "max_partition_replicas = 9\noffsets_partitions = 1\n",
    );
    start(&mut cluster);
    succeeds(
        &cluster,
        &["topic", "create", "small", "--partitions", "2"],
        None,
    );
    // "small" took groups 2 and 3; the next topic's partition is group 4. A file where node 2
    // would make that group's directory: its log cannot be opened there.
    let obstacle = cluster
        .node(2)
        .data_dir
        .join("groups")
        .join(format!("{:020}", 4));
    std::fs::write(&obstacle, b"in the way").unwrap();
    succeeds(
        &cluster,
        &["topic", "create", "blocked", "--partitions", "1"],
        None,
    );

    eventually(
        "describe shows the offline replica",
        Duration::from_secs(15),
        || {
            let description = describe_json(&cluster, "blocked");
            let offline = &description["partitions"][0]["offline"];
            match offline.as_array().map(Vec::as_slice) {
                Some([replica]) if replica["node_id"] == 2 => Ok(()),
                _ => Err(description.to_string()),
            }
        },
    );
    let description = describe_json(&cluster, "blocked");
    let reason = description["partitions"][0]["offline"][0]["reason"]
        .as_str()
        .expect("reason")
        .to_string();
    assert!(reason.contains("00000000000000000003"), "{reason}");
    let replicas = description["partitions"][0]["replicas"].as_array().unwrap();
    assert!(replicas.contains(&Value::from(2)), "{description}");
    let text = succeeds(&cluster, &["topic", "describe", "blocked"], None);
    assert!(
        text.lines()
            .any(|line| line.starts_with("offline partition=0 node=2 reason=")),
        "{text}"
    );
    assert!(
        text.starts_with("topic blocked partitions=1 replication=3\n"),
        "{text}"
    );
    eventually("status counts it", Duration::from_secs(15), || {
        let status = status_json(&cluster);
        let counts: Vec<Value> = (1..=3).map(|node| offline_of(&status, node)).collect();
        if counts == [Value::from(0), Value::from(1), Value::from(0)] {
            Ok(())
        } else {
            Err(status.to_string())
        }
    });
    let text = succeeds(&cluster, &["cluster", "status"], None);
    assert!(
        text.ends_with("\nnode\toffline_replicas\n1\t0\n2\t1\n3\t0\n"),
        "{text}"
    );
    assert!(
        text.starts_with("node\tincarnation\taddress\tstate\n"),
        "{text}"
    );

    // The node keeps serving: the topic works on its other two replicas, the rest as usual,
    // and node 2 itself answers.
    produce_and_consume(&cluster, "blocked", 10, 10);
    produce_and_consume(&cluster, "small", 10, 10);
    let node2 = format!("127.0.0.1:{}", cluster.node(2).port);
    let output = Command::new(KEEL)
        .args(["cluster", "status", "--bootstrap", &node2, "--ca"])
        .arg(cluster.ca())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The partition cap from --config, named with its numbers: 4 replicas here now (one of
    // them the offsets partition's), 6 more.
    let output = keel(
        &cluster,
        &["topic", "create", "big", "--partitions", "6"],
        None,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "insufficient capacity on node 1: partition cap: it would host 10 partition replicas \
             (4 now + 6 new), over its max_partition_replicas of 9"
        ),
        "{stderr}"
    );

    // A restart re-applies the create: the replica is held offline again, the node runs.
    let status = cluster.terminate(2);
    assert!(status.success(), "node 2 exited {status}");
    cluster.spawn(2);
    cluster.wait_ready(2);
    eventually(
        "still offline after the restart",
        Duration::from_secs(15),
        || {
            let status = status_json(&cluster);
            match offline_of(&status, 2) {
                value if value == 1 => Ok(()),
                _ => Err(status.to_string()),
            }
        },
    );
    produce_and_consume(&cluster, "blocked", 5, 15);

    // Once the obstacle is gone the next retry (every 10 s) opens it; its node's reports say so.
    std::fs::remove_file(&obstacle).unwrap();
    eventually("the replica opens", Duration::from_secs(30), || {
        let status = status_json(&cluster);
        let description = describe_json(&cluster, "blocked");
        let clear = description["partitions"][0]["offline"] == serde_json::json!([]);
        if offline_of(&status, 2) == 0 && clear {
            Ok(())
        } else {
            Err(format!("{status} {description}"))
        }
    });
    let log = std::fs::read_to_string(&cluster.node(2).log).unwrap();
    assert!(
        log.contains("partition replica started group=4 topic=blocked"),
        "{log}"
    );
    assert!(!cluster.logs().contains("fatal"), "{}", cluster.logs());
}

fn count_open_files(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64
}

fn count_memory_maps(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .count() as u64
}

/// Admission charges each new replica `REPLICA_OPEN_FILES` and `REPLICA_MEMORY_MAPS`: a real
/// node's replicas must not hold more, or admission would let a create through that runs out.
#[test]
fn a_new_replica_holds_no_more_files_and_maps_than_admission_charges() {
    use keel_broker::limits::{REPLICA_MEMORY_MAPS, REPLICA_OPEN_FILES};
    const PARTITIONS: u64 = 200;
    let cluster = TestCluster::start(1);
    let pid = cluster.pid(1).expect("node 1 runs");
    let (files, maps) = (count_open_files(pid), count_memory_maps(pid));
    succeeds(
        &cluster,
        &[
            "topic",
            "create",
            "many",
            "--partitions",
            &PARTITIONS.to_string(),
        ],
        None,
    );
    eventually("every replica started", Duration::from_secs(30), || {
        let log = std::fs::read_to_string(&cluster.node(1).log).unwrap();
        let started = log.matches("partition replica started").count() as u64;
        (started == PARTITIONS)
            .then_some(())
            .ok_or(format!("{started} started"))
    });
    // Measured with the topic in use, not just opened.
    produce_and_consume(&cluster, "many", 50, 50);
    let opened_files = count_open_files(pid) - files;
    let added_maps = count_memory_maps(pid).saturating_sub(maps);
    eprintln!("{PARTITIONS} replicas: {opened_files} files, {added_maps} maps");
    assert!(
        opened_files <= PARTITIONS * REPLICA_OPEN_FILES,
        "{opened_files} files for {PARTITIONS} replicas"
    );
    assert!(
        opened_files >= PARTITIONS * REPLICA_OPEN_FILES * 9 / 10,
        "the charge should be the real cost, not a guess far above it: {opened_files}"
    );
    // New runtime threads (a stack and its guard each) may come with the opens.
    assert!(
        added_maps <= PARTITIONS * REPLICA_MEMORY_MAPS + 64,
        "{added_maps} maps for {PARTITIONS} replicas"
    );
}
