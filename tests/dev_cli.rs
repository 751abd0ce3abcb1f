//! The quick start, through the real binary: `keel dev` (a local 3-node cluster on its fixed
//! ports 7070-7072), then `keel topic create t`, `echo hi | keel produce t` and
//! `keel consume t --from-beginning --max 1` with no other flags print `hi`. This is the one
//! test that uses fixed ports (they are the contract of `keel dev`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::KEEL;

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keel(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(KEEL)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running keel");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("writing stdin");
        }
    }
    child.wait_with_output().expect("keel output")
}

#[test]
fn keel_dev_then_topic_produce_consume_with_no_flags() {
    let dir = tempfile::Builder::new()
        .prefix("dev-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir");
    let mut dev = KillOnDrop(
        Command::new(KEEL)
            .arg("dev")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting keel dev"),
    );
    let stdout = dev.0.stdout.take().expect("stdout");
    let (line_sender, line) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = line_sender.send(first);
    });
    let first = line
        .recv_timeout(Duration::from_secs(60))
        .expect("keel dev prints its bootstrap line");
    assert_eq!(
        first.trim_end(),
        "bootstrap=127.0.0.1:7070,127.0.0.1:7071,127.0.0.1:7072 ca=./keel-data/tls/ca.pem"
    );

    let create = keel(dir.path(), &["topic", "create", "t"], None);
    assert!(
        create.status.success(),
        "topic create: {}",
        String::from_utf8_lossy(&create.stderr)
    );
    let again = keel(dir.path(), &["topic", "create", "t"], None);
    assert_eq!(
        again.status.code(),
        Some(1),
        "an existing topic is an error"
    );
    let again = keel(
        dir.path(),
        &["topic", "create", "t", "--if-not-exists"],
        None,
    );
    assert!(again.status.success());

    let produce = keel(dir.path(), &["produce", "t"], Some("hi\n"));
    assert!(
        produce.status.success(),
        "produce: {}",
        String::from_utf8_lossy(&produce.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&produce.stdout), "0\t0\n");

    let started = Instant::now();
    let consume = keel(
        dir.path(),
        &["consume", "t", "--from-beginning", "--max", "1"],
        None,
    );
    assert!(
        consume.status.success(),
        "consume: {}",
        String::from_utf8_lossy(&consume.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&consume.stdout), "hi\n");
    assert!(started.elapsed() < Duration::from_secs(30));

    let status = keel(dir.path(), &["cluster", "status", "--json"], None);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = String::from_utf8_lossy(&status.stdout);
    for id in 1..=3 {
        assert!(
            text.contains(&format!("\"node_id\":{id}"))
                || text.contains(&format!("\"node_id\": {id}")),
            "{text}"
        );
    }
}
