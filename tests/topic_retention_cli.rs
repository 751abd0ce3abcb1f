//! Per-topic retention settings through the real binary (docs/CLI.md `keel topic`,
//! docs/OPERATIONS.md "Retention"): create with flags, describe (text and --json), alter, the
//! 7-day default of a plain create, -1 as unlimited, and the refusals (bad values, alter with
//! --partitions or with nothing to change). The broker's own check is asked directly too, since
//! the SDK refuses bad values before sending.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::ask_nodes;
use common::{runtime, TestCluster, KEEL};
use keel_client::wire::messages::{AlterTopicRequest, CreateTopicRequest};
use keel_client::wire::{ErrorCode, Request, Response};
use serde_json::Value;

const SEVEN_DAYS_MS: i64 = 7 * 24 * 3600 * 1000;

fn keel(cluster: &TestCluster, args: &[&str]) -> Output {
    Command::new(KEEL)
        .args(args)
        .arg("--bootstrap")
        .arg(cluster.bootstrap().join(","))
        .arg("--ca")
        .arg(cluster.ca())
        .output()
        .expect("running keel")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn succeeds(cluster: &TestCluster, args: &[&str]) -> String {
    let output = keel(cluster, args);
    assert!(
        output.status.success(),
        "keel {args:?}: {}\n{}",
        stderr(&output),
        cluster.logs()
    );
    stdout(&output)
}

/// Exit 1 with `message` on stderr.
fn fails_with(cluster: &TestCluster, args: &[&str], code: i32, message: &str) {
    let output = keel(cluster, args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "keel {args:?}: {}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains(message),
        "keel {args:?}: expected {message:?} in {:?}",
        stderr(&output)
    );
}

/// `topic describe NAME --json` until its config is `expected` (retention.bytes, retention.ms,
/// segment.ms): any node may answer, and a follower applies the metadata change a moment after
/// the leader that acknowledged it.
fn config_becomes(cluster: &TestCluster, name: &str, expected: [i64; 3]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = keel(cluster, &["topic", "describe", name, "--json"]);
        let json: Option<Value> = serde_json::from_slice(&output.stdout).ok();
        if let Some(json) = json {
            let config = &json["config"];
            let found = [
                config["retention.bytes"].as_i64(),
                config["retention.ms"].as_i64(),
                config["segment.ms"].as_i64(),
            ];
            if found == expected.map(Some) {
                return json;
            }
            assert!(Instant::now() < deadline, "{name}: config {config}");
        } else {
            assert!(Instant::now() < deadline, "{name}: {}", stderr(&output));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn retention_settings_are_created_described_and_altered_through_the_cli() {
    let cluster = TestCluster::start(3);

    let created = succeeds(
        &cluster,
        &[
            "topic",
            "create",
            "kept",
            "--retention-bytes",
            "1048576",
            "--retention-ms",
            "3600000",
        ],
    );
    assert_eq!(created, "created topic kept partitions=1 replication=3\n");
    let json = config_becomes(&cluster, "kept", [1_048_576, 3_600_000, SEVEN_DAYS_MS]);
    assert_eq!(json["replication_factor"], 3);
    assert_eq!(json["partitions"].as_array().map(Vec::len), Some(1));
    let text = succeeds(&cluster, &["topic", "describe", "kept"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "topic kept partitions=1 replication=3");
    assert_eq!(
        lines[1],
        "partition\tleader\treplicas\tlog_start_offset\thigh_watermark"
    );
    assert_eq!(
        lines[3..],
        [
            "retention.bytes=1048576",
            "retention.ms=3600000",
            "segment.ms=604800000"
        ],
        "{text}"
    );

    // Alter changes only what it is given; -1 is unlimited.
    let altered = succeeds(
        &cluster,
        &[
            "topic",
            "alter",
            "kept",
            "--retention-ms",
            "-1",
            "--segment-ms",
            "60000",
        ],
    );
    assert_eq!(
        altered,
        "altered topic kept\nretention.bytes=1048576\nretention.ms=unlimited\nsegment.ms=60000\n"
    );
    config_becomes(&cluster, "kept", [1_048_576, -1, 60_000]);
    let altered = succeeds(
        &cluster,
        &[
            "topic",
            "alter",
            "kept",
            "--retention-bytes",
            "-1",
            "--json",
        ],
    );
    let altered: Value = serde_json::from_str(&altered).expect("alter --json");
    assert_eq!(altered["name"], "kept");
    assert_eq!(altered["config"]["retention.bytes"], -1);
    assert_eq!(altered["config"]["segment.ms"], 60_000);
    config_becomes(&cluster, "kept", [-1, -1, 60_000]);
    let text = succeeds(&cluster, &["topic", "describe", "kept"]);
    assert!(
        text.ends_with("retention.bytes=unlimited\nretention.ms=unlimited\nsegment.ms=60000\n"),
        "{text}"
    );

    // A plain create gets the cluster's default for new topics.
    succeeds(&cluster, &["topic", "create", "plain"]);
    config_becomes(&cluster, "plain", [-1, SEVEN_DAYS_MS, SEVEN_DAYS_MS]);

    // Refusals: exit 1 with the reason, and nothing created or changed.
    fails_with(
        &cluster,
        &["topic", "create", "bad", "--retention-ms", "-5"],
        1,
        "retention.ms must be -1 (unlimited) or a positive number, got -5",
    );
    fails_with(
        &cluster,
        &["topic", "create", "bad", "--retention-bytes", "0"],
        1,
        "retention.bytes must be -1 (unlimited) or a positive number, got 0",
    );
    fails_with(
        &cluster,
        &["topic", "alter", "kept", "--segment-ms", "0"],
        1,
        "segment.ms must be -1 (unlimited) or a positive number, got 0",
    );
    fails_with(
        &cluster,
        &["topic", "alter", "kept", "--partitions", "3"],
        1,
        "adding partitions is not supported yet",
    );
    fails_with(
        &cluster,
        &["topic", "alter", "missing", "--retention-ms", "5"],
        1,
        "unknown topic",
    );
    fails_with(
        &cluster,
        &["topic", "alter", "kept"],
        2,
        "nothing to change",
    );
    fails_with(&cluster, &["topic", "describe", "bad"], 1, "unknown topic");
    config_becomes(&cluster, "kept", [-1, -1, 60_000]);

    // The broker checks too, whatever a client sends.
    let rt = runtime();
    rt.block_on(async {
        let refused = |response: Response, _: Bytes| match response {
            Response::Error(code) if code.is_retriable() => None,
            other => Some(other),
        };
        let create = Request::CreateTopic(CreateTopicRequest {
            name: "bad".into(),
            partitions: 1,
            replication_factor: None,
            retention_bytes: None,
            retention_ms: Some(-5),
            segment_ms: None,
        });
        let answer = ask_nodes(&cluster, &create, &Bytes::new(), refused).await;
        assert_eq!(answer, Response::Error(ErrorCode::InvalidTopicConfig));
        let alter = Request::AlterTopic(AlterTopicRequest {
            name: "kept".into(),
            retention_bytes: Some(0),
            retention_ms: None,
            segment_ms: None,
        });
        let answer = ask_nodes(&cluster, &alter, &Bytes::new(), refused).await;
        assert_eq!(answer, Response::Error(ErrorCode::InvalidTopicConfig));
    });
    assert!(
        cluster
            .logs()
            .contains("refused: invalid retention setting"),
        "{}",
        cluster.logs()
    );
    config_becomes(&cluster, "kept", [-1, -1, 60_000]);
}
