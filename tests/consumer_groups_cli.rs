//! Consumer groups through the real binary against real `keel server` processes (docs/CLI.md
//! `keel consume --group`, `keel group`): members of one group split a topic's partitions and
//! together print every message once, in order per partition; a member that stops resumes at
//! what it committed (last printed + 1); SIGTERM commits and leaves; an operator's reset is
//! refused while the group has members and works once it has none; list, describe and delete.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{signal, TestCluster, KEEL};
use serde_json::Value;

fn command(cluster: &TestCluster, args: &[&str]) -> Command {
    let mut command = Command::new(KEEL);
    command
        .args(args)
        .arg("--bootstrap")
        .arg(cluster.bootstrap().join(","))
        .arg("--ca")
        .arg(cluster.ca())
        .env_remove("KEEL_BOOTSTRAP")
        .env_remove("KEEL_CA");
    command
}

fn keel(cluster: &TestCluster, args: &[&str]) -> Output {
    command(cluster, args).output().expect("running keel")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn succeeds(cluster: &TestCluster, args: &[&str]) -> String {
    let output = keel(cluster, args);
    assert!(
        output.status.success(),
        "keel {args:?}: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Produces `lines` to `topic` (one message each) with `keel produce`, keyed so they spread.
fn produce(cluster: &TestCluster, topic: &str, lines: &[String]) {
    let mut child = command(cluster, &["produce", topic, "--key-separator", ":"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning keel produce");
    let mut stdin = child.stdin.take().expect("stdin");
    for line in lines {
        writeln!(stdin, "{line}").expect("writing to keel produce");
    }
    drop(stdin);
    let output = child.wait_with_output().expect("keel produce");
    assert!(output.status.success(), "produce: {}", text(&output.stderr));
    assert_eq!(text(&output.stdout).lines().count(), lines.len());
}

/// `<partition>\t<offset>\t<value>` lines -> (partition, offset, value).
fn parse_lines(stdout: &str) -> Vec<(u32, u64, String)> {
    stdout
        .lines()
        .map(|line| {
            let mut fields = line.splitn(3, '\t');
            let partition = fields.next().unwrap().parse().expect("partition");
            let offset = fields.next().unwrap().parse().expect("offset");
            (
                partition,
                offset,
                fields.next().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn describe(cluster: &TestCluster, group: &str) -> Value {
    serde_json::from_str(&succeeds(cluster, &["group", "describe", group, "--json"]))
        .expect("describe --json")
}

/// Waits until `group describe` shows `state` with `members` members.
fn wait_for_state(cluster: &TestCluster, group: &str, state: &str, members: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let json = describe(cluster, group);
        if json["state"] == state && json["members"].as_array().map(Vec::len) == Some(members) {
            return json;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} never became {state} with {members} members: {json}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_exit(child: Child, within: Duration) -> Output {
    let pid = child.id();
    let deadline = Instant::now() + within;
    let waiter = std::thread::spawn(move || child.wait_with_output().expect("waiting for keel"));
    while !waiter.is_finished() {
        if Instant::now() >= deadline {
            signal(pid, "KILL");
            panic!("keel (pid {pid}) did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    waiter.join().expect("waiter thread")
}

#[test]
fn three_members_split_the_partitions_and_print_every_message_once_in_order() {
    let cluster = TestCluster::start(3);
    succeeds(
        &cluster,
        &["topic", "create", "orders", "--partitions", "6"],
    );
    let lines: Vec<String> = (0..600).map(|i| format!("k{i}:m{i}")).collect();
    produce(&cluster, "orders", &lines);

    let members: Vec<Child> = (0..3)
        .map(|_| {
            command(
                &cluster,
                &[
                    "consume",
                    "orders",
                    "--group",
                    "g",
                    "--from-beginning",
                    "--with-offsets",
                    "--timeout-ms",
                    "6000",
                ],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning keel consume --group")
        })
        .collect();
    let outputs: Vec<Output> = members
        .into_iter()
        .map(|child| wait_exit(child, Duration::from_secs(90)))
        .collect();

    let mut seen: BTreeMap<(u32, u64), String> = BTreeMap::new();
    let mut owners: Vec<BTreeSet<u32>> = Vec::new();
    for output in &outputs {
        assert!(output.status.success(), "member: {}", text(&output.stderr));
        let printed = parse_lines(&text(&output.stdout));
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        for (partition, offset, value) in &printed {
            if let Some(previous) = last.insert(*partition, *offset) {
                assert!(*offset > previous, "partition {partition} out of order");
            }
            let earlier = seen.insert((*partition, *offset), value.clone());
            assert!(earlier.is_none(), "{partition}/{offset} printed twice");
        }
        owners.push(last.keys().copied().collect());
    }
    assert_eq!(seen.len(), 600, "every message printed exactly once");
    let values: BTreeSet<&String> = seen.values().collect();
    assert_eq!(values.len(), 600);
    for (index, partitions) in owners.iter().enumerate() {
        assert!(
            !partitions.is_empty(),
            "member {index} printed nothing: {owners:?}"
        );
    }
    let all: BTreeSet<u32> = owners.iter().flatten().copied().collect();
    assert_eq!(all, (0..6).collect(), "{owners:?}");

    // Everyone left after committing what it printed: no lag anywhere.
    let json = wait_for_state(&cluster, "g", "Empty", 0);
    let offsets = json["offsets"].as_array().expect("offsets");
    assert_eq!(offsets.len(), 6, "{json}");
    for offset in offsets {
        assert_eq!(offset["lag"], 0, "{json}");
        assert_eq!(offset["committed"], offset["high_watermark"], "{json}");
    }
    let list = succeeds(&cluster, &["group", "list"]);
    assert!(
        list.lines()
            .any(|line| line.starts_with("g\tEmpty\t") && line.ends_with("\t0")),
        "{list}"
    );
}

#[test]
fn a_member_that_stops_resumes_at_what_it_printed() {
    let cluster = TestCluster::start(1);
    succeeds(&cluster, &["topic", "create", "events"]);
    let batch =
        |from: usize, to: usize| -> Vec<String> { (from..to).map(|i| format!("k:e{i}")).collect() };
    produce(&cluster, "events", &batch(0, 10));
    let consume = |extra: &[&str]| {
        let mut args = vec![
            "consume",
            "events",
            "--group",
            "resume",
            "--timeout-ms",
            "3000",
        ];
        args.extend_from_slice(extra);
        succeeds(&cluster, &args)
    };
    // --max stops in the middle of a fetched batch: only the printed four are committed.
    assert_eq!(
        consume(&["--from-beginning", "--max", "4"]),
        "e0\ne1\ne2\ne3\n"
    );
    let json = wait_for_state(&cluster, "resume", "Empty", 0);
    assert_eq!(json["offsets"][0]["committed"], 4, "{json}");
    assert_eq!(json["offsets"][0]["lag"], 6, "{json}");
    // A restarted member starts at the committed offset (not at the end, not the beginning).
    let expected: String = (4..10).map(|i| format!("e{i}\n")).collect();
    assert_eq!(consume(&[]), expected);
    produce(&cluster, "events", &batch(10, 13));
    assert_eq!(consume(&["--from-beginning"]), "e10\ne11\ne12\n");
    // A new group without --from-beginning starts at the end: nothing old.
    let fresh = succeeds(
        &cluster,
        &[
            "consume",
            "events",
            "--group",
            "fresh",
            "--timeout-ms",
            "2000",
        ],
    );
    assert_eq!(fresh, "");
}

#[test]
fn resets_are_refused_while_members_run_and_sigterm_commits_and_leaves() {
    let cluster = TestCluster::start(1);
    succeeds(&cluster, &["topic", "create", "audit", "--partitions", "2"]);
    produce(
        &cluster,
        "audit",
        &(0..20).map(|i| format!("k{i}:a{i}")).collect::<Vec<_>>(),
    );
    let member = command(
        &cluster,
        &["consume", "audit", "--group", "ops", "--from-beginning"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawning keel consume --group");
    let pid = member.id();
    let json = wait_for_state(&cluster, "ops", "Stable", 1);
    assert_eq!(json["members"][0]["client_id"], "keel-cli", "{json}");
    let assigned = &json["members"][0]["assignment"][0];
    assert_eq!(assigned["topic"], "audit");
    assert_eq!(assigned["partitions"], serde_json::json!([0, 1]));

    let refused = keel(
        &cluster,
        &[
            "group",
            "reset-offsets",
            "ops",
            "--topic",
            "audit",
            "--to-earliest",
        ],
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("active members"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    let refused = keel(&cluster, &["group", "delete", "ops"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");

    // Let it print everything, then SIGTERM: it commits what it printed and leaves at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while describe(&cluster, "ops")["offsets"]
        .as_array()
        .is_none_or(|offsets| offsets.iter().any(|o| o["lag"] != 0))
    {
        assert!(Instant::now() < deadline, "the member never caught up");
        std::thread::sleep(Duration::from_millis(200));
    }
    signal(pid, "TERM");
    let output = wait_exit(member, Duration::from_secs(20));
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).lines().count(), 20);
    wait_for_state(&cluster, "ops", "Empty", 0);

    let reset = succeeds(
        &cluster,
        &[
            "group",
            "reset-offsets",
            "ops",
            "--topic",
            "audit",
            "--to-earliest",
        ],
    );
    assert_eq!(reset, "audit\t0\t0\naudit\t1\t0\n");
    let again = succeeds(
        &cluster,
        &["consume", "audit", "--group", "ops", "--timeout-ms", "3000"],
    );
    assert_eq!(again.lines().count(), 20, "{again}");
    let latest = succeeds(
        &cluster,
        &[
            "group",
            "reset-offsets",
            "ops",
            "--topic",
            "audit",
            "--to-latest",
            "--json",
        ],
    );
    let latest: Value = serde_json::from_str(&latest).expect("json");
    let total: u64 = latest["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .map(|o| o["offset"].as_u64().expect("offset"))
        .sum();
    assert_eq!(total, 20);

    assert_eq!(
        succeeds(&cluster, &["group", "delete", "ops"]),
        "deleted group ops\n"
    );
    let gone = keel(&cluster, &["group", "delete", "ops"]);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
}

#[test]
fn bench_consume_with_a_group_reads_every_message() {
    let cluster = TestCluster::start(1);
    succeeds(
        &cluster,
        &[
            "bench",
            "produce",
            "--topic",
            "b",
            "--partitions",
            "4",
            "--messages",
            "2000",
            "--size",
            "16",
        ],
    );
    let line = succeeds(
        &cluster,
        &[
            "bench",
            "consume",
            "--topic",
            "b",
            "--messages",
            "2000",
            "--group",
            "bench",
            "--consumers",
            "3",
        ],
    );
    assert!(
        line.starts_with("bench consume: 2000 messages of 16 bytes"),
        "{line}"
    );
}

/// What each member printed so far, from its stdout file.
fn printed(files: &[std::path::PathBuf]) -> Vec<Vec<(u32, u64, String)>> {
    files
        .iter()
        .map(|file| parse_lines(&std::fs::read_to_string(file).unwrap_or_default()))
        .collect()
}

fn distinct_values(outputs: &[Vec<(u32, u64, String)>]) -> BTreeSet<String> {
    outputs
        .iter()
        .flatten()
        .map(|(_, _, value)| value.clone())
        .collect()
}

/// kill -9 of one of three members: the others take its partitions within the session timeout
/// plus one rebalance, and together with what it printed they cover every message. It was killed
/// after a quiet moment, so it had committed everything it printed: nobody prints anything
/// twice. Then the committed offsets survive a full-cluster kill -9 and restart: a new member
/// resumes exactly after them.
#[test]
fn a_killed_member_s_partitions_move_and_commits_survive_a_cluster_restart() {
    const SESSION_MS: u64 = 6_000;
    let mut cluster = TestCluster::start(3);
    succeeds(&cluster, &["topic", "create", "jobs", "--partitions", "6"]);
    let files: Vec<_> = (0..3)
        .map(|i| cluster.dir.path().join(format!("member-{i}.out")))
        .collect();
    let session = SESSION_MS.to_string();
    let mut members: Vec<Child> = files
        .iter()
        .map(|file| {
            command(
                &cluster,
                &[
                    "consume",
                    "jobs",
                    "--group",
                    "workers",
                    "--from-beginning",
                    "--with-offsets",
                    "--session-timeout-ms",
                    &session,
                ],
            )
            .stdout(std::fs::File::create(file).expect("member output"))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning keel consume")
        })
        .collect();
    wait_for_state(&cluster, "workers", "Stable", 3);
    let batch = |from: usize, to: usize| -> Vec<String> {
        (from..to).map(|i| format!("k{i}:j{i}")).collect()
    };
    let wait_for_all = |count: usize, within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            let outputs = printed(&files);
            if distinct_values(&outputs).len() == count {
                return outputs;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} messages printed: {outputs:?}",
                distinct_values(&outputs).len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    produce(&cluster, "jobs", &batch(0, 300));
    let before = wait_for_all(300, Duration::from_secs(30));
    let victim_partitions: BTreeSet<u32> = before[0].iter().map(|(p, ..)| *p).collect();
    assert!(
        !victim_partitions.is_empty(),
        "member 0 was assigned nothing"
    );
    // A quiet moment: the CLI commits what it printed within 100 ms.
    std::thread::sleep(Duration::from_millis(500));
    signal(members[0].id(), "KILL");
    let killed_at = Instant::now();
    let _ = members[0].wait();
    produce(&cluster, "jobs", &batch(300, 600));
    let after = wait_for_all(600, Duration::from_secs(60));
    let moved_within = killed_at.elapsed();
    eprintln!("member killed: every message printed {moved_within:?} later");
    assert!(
        moved_within < Duration::from_millis(SESSION_MS) + Duration::from_secs(12),
        "the killed member's partitions took {moved_within:?} to move"
    );
    let survivors: BTreeSet<u32> = after[1..].iter().flatten().map(|(p, ..)| *p).collect();
    assert!(
        victim_partitions.is_subset(&survivors),
        "its partitions {victim_partitions:?} were taken over: {survivors:?}"
    );
    let total: usize = after.iter().map(Vec::len).sum();
    assert_eq!(
        total, 600,
        "no message printed twice (everything printed was committed)"
    );
    for output in &after {
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        for (partition, offset, _) in output {
            if let Some(previous) = last.insert(*partition, *offset) {
                assert!(
                    *offset > previous,
                    "partition {partition} out of order: {output:?}"
                );
            }
        }
    }

    // The survivors commit and leave on SIGTERM; then the whole cluster dies and comes back.
    for member in members.drain(1..) {
        signal(member.id(), "TERM");
        let output = wait_exit(member, Duration::from_secs(20));
        assert!(output.status.success(), "member exit {}", output.status);
    }
    cluster.restart_all();
    produce(&cluster, "jobs", &batch(600, 660));
    let resumed = succeeds(
        &cluster,
        &[
            "consume",
            "jobs",
            "--group",
            "workers",
            "--timeout-ms",
            "5000",
            "--max",
            "60",
        ],
    );
    let values: BTreeSet<&str> = resumed.lines().collect();
    let expected: Vec<String> = (600..660).map(|i| format!("j{i}")).collect();
    assert_eq!(resumed.lines().count(), 60, "{resumed}");
    assert!(
        expected.iter().all(|value| values.contains(value.as_str())),
        "a new member resumes after the commits, with nothing old: {resumed}"
    );
}
