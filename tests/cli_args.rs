//! The client commands' argument handling through the real binary, with no server (docs/CLI.md):
//! usage errors exit 2 before anything is dialled, and errors found before the network (a missing
//! CA file) exit 1 with one line on stderr.

use std::process::{Command, Output};

fn keel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        // The environment must not supply connection flags behind the test's back.
        .env_remove("KEEL_BOOTSTRAP")
        .env_remove("KEEL_CA")
        .env_remove("KEEL_CERT")
        .env_remove("KEEL_CERT_KEY")
        .output()
        .expect("run keel")
}

fn assert_usage_error(args: &[&str]) {
    let output = keel(args);
    assert_eq!(
        output.status.code(),
        Some(2),
        "keel {args:?}: stderr {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout.is_empty(), "keel {args:?} printed on stdout");
}

#[test]
fn missing_or_invalid_arguments_are_usage_errors() {
    for args in [
        &["topic", "create"][..],
        &["topic", "create", "bad/name"],
        &["topic", "create", ".."],
        &["topic", "create", "t", "--partitions", "0"],
        &["topic", "create", "t", "--replication", "0"],
        &["topic", "describe"],
        &["topic", "delete", "a b"],
        &["produce"],
        &["produce", "t", "--key", "k", "--key-separator", ":"],
        &["produce", "t", "--key-separator", ""],
        &["consume", "t", "--from-beginning", "--offset", "3"],
        &["consume", "t", "--with-offsets", "--json"],
        &["consume", "t", "--max", "-1"],
        &["cluster", "replace-node"],
        &["cluster", "replace-node", "--id", "0"],
        &["cluster", "status", "--bogus"],
        &["bench", "produce", "--producers", "0"],
        &["bench", "produce", "--messages", "0"],
        &["bench", "e2e", "--topic", "a/b"],
    ] {
        assert_usage_error(args);
    }
}

#[test]
fn connection_flags_are_checked_while_parsing() {
    assert_usage_error(&["topic", "list", "--bootstrap", "nonsense"]);
    assert_usage_error(&["topic", "list", "--bootstrap", "host:0"]);
    assert_usage_error(&["topic", "list", "--bootstrap", ","]);
    assert_usage_error(&["topic", "list", "--cert", "client.pem"]);
    assert_usage_error(&["topic", "list", "--cert-key", "client.key"]);
    // `--key` is a message key, never the certificate's key.
    assert_usage_error(&["topic", "list", "--key", "client.key"]);
    let output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["topic", "list"])
        .env("KEEL_BOOTSTRAP", "no-port-here")
        .output()
        .expect("run keel");
    assert_eq!(
        output.status.code(),
        Some(2),
        "KEEL_BOOTSTRAP is parsed like --bootstrap"
    );
}

/// `keel produce` takes both a message key (`--key`) and a client certificate (`--cert` with
/// `--cert-key`): the two must not be one flag.
#[test]
fn produce_takes_a_message_key_and_a_client_certificate_together() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| directory.path().join(name).to_str().unwrap().to_string();
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client.key"));
    let output = keel(&[
        "produce",
        "t",
        "--key",
        "k",
        "--bootstrap",
        "127.0.0.1:9",
        "--ca",
        &ca,
        "--cert",
        &cert,
        "--cert-key",
        &key,
    ]);
    // Parsing succeeds; the command then fails on the missing CA file (exit 1, not 2 or a panic).
    assert_eq!(
        output.status.code(),
        Some(1),
        "stderr {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_missing_ca_file_is_a_one_line_error_with_exit_1() {
    let directory = tempfile::tempdir().expect("tempdir");
    let ca = directory.path().join("missing-ca.pem");
    let output = keel(&[
        "topic",
        "list",
        "--bootstrap",
        "127.0.0.1:9",
        "--ca",
        ca.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error:"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("missing-ca.pem"), "{stderr}");
}

#[test]
fn help_lists_the_client_commands() {
    let output = keel(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["topic", "produce", "consume", "cluster", "bench"] {
        assert!(help.contains(command), "{command} missing from --help");
    }
    let bench = String::from_utf8_lossy(&keel(&["bench", "--help"]).stdout).to_string();
    for mode in ["produce", "consume", "e2e", "storage"] {
        assert!(bench.contains(mode), "bench {mode} missing");
    }
}

/// `consume --group` and `keel group` (docs/CLI.md): a group member's partitions and offsets are
/// the group's, so naming them is a usage error, as are a bad group id, a session timeout out of
/// the broker's range, and a reset without exactly one target.
#[test]
fn group_flags_are_checked_while_parsing() {
    for args in [
        &["consume", "t", "--group", "g", "--partition", "0"][..],
        &["consume", "t", "--group", "g", "--offset", "3"],
        &[
            "consume",
            "t",
            "--group",
            "g",
            "--partition",
            "0",
            "--offset",
            "3",
        ],
        &["consume", "t", "--group", ""],
        &["consume", "t", "--session-timeout-ms", "10000"],
        &[
            "consume",
            "t",
            "--group",
            "g",
            "--session-timeout-ms",
            "5999",
        ],
        &[
            "consume",
            "t",
            "--group",
            "g",
            "--session-timeout-ms",
            "1800001",
        ],
        &["consume", "t", "--group", "g", "--with-offsets", "--json"],
        &["group"],
        &["group", "describe"],
        &["group", "delete"],
        &["group", "list", "extra"],
        &["group", "reset-offsets", "g", "--topic", "t"],
        &[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-earliest",
            "--to-latest",
        ],
        &[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-offset",
            "-1",
        ],
        &["group", "reset-offsets", "g", "--to-earliest"],
        &[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "a/b",
            "--to-latest",
        ],
        &["bench", "consume", "--consumers", "2"],
        &["bench", "consume", "--group", "g", "--consumers", "0"],
    ] {
        assert_usage_error(args);
    }
    let long = "g".repeat(256);
    assert_usage_error(&["group", "describe", &long]);
    // Found at run time, before anything is dialled: --group is for bench consume only.
    let output = keel(&[
        "bench",
        "produce",
        "--group",
        "g",
        "--bootstrap",
        "127.0.0.1:9",
        "--ca",
        "missing.pem",
    ]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[test]
fn group_commands_parse_and_then_need_the_cluster() {
    let directory = tempfile::tempdir().expect("tempdir");
    let ca = directory.path().join("missing-ca.pem");
    let ca = ca.to_str().expect("utf-8 path");
    for args in [
        &["group", "list", "--json"][..],
        &["group", "describe", "g", "--json"],
        &["group", "delete", "g"],
        &[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-offset",
            "5",
        ],
        &[
            "consume",
            "t",
            "--group",
            "g",
            "--session-timeout-ms",
            "6000",
            "--max",
            "1",
        ],
    ] {
        let mut full = args.to_vec();
        full.extend(["--bootstrap", "127.0.0.1:9", "--ca", ca]);
        let output = keel(&full);
        // Parsing succeeded: the failure is the missing CA file (exit 1, one line).
        assert_eq!(output.status.code(), Some(1), "keel {full:?}: {output:?}");
        assert!(output.stdout.is_empty());
    }
    let help = String::from_utf8_lossy(&keel(&["group", "--help"]).stdout).to_string();
    for command in ["list", "describe", "reset-offsets", "delete"] {
        assert!(
            help.contains(command),
            "group {command} missing from --help"
        );
    }
}
