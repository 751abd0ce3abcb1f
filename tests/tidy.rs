//! Tidy: the consensus core stays sans-I/O (docs/ARCHITECTURE.md). keel-raft's manifest may name
//! only dependencies that cannot do I/O, so the compiler refuses a tokio or quinn call; the text of
//! every file under raft/src/ must still not reach the standard library's file system, network,
//! threads or clocks, nor an unseeded RNG. Seeded RNGs (`ChaCha8Rng::seed_from_u64`) are fine.

use std::path::{Path, PathBuf};

/// Strings the core must never contain, with the reason.
const FORBIDDEN: &[(&str, &str)] = &[
    ("tokio", "an async runtime"),
    ("quinn", "a socket library"),
    ("std::fs", "the file system"),
    ("std::net", "the network"),
    ("std::thread", "a thread"),
    ("std::time", "a clock"),
    ("Instant::now", "a clock read"),
    ("SystemTime", "a clock read"),
    ("thread_rng", "an unseeded RNG"),
    ("rand::random", "an unseeded RNG"),
    ("OsRng", "an unseeded RNG"),
    ("from_entropy", "an unseeded RNG"),
];

/// Every forbidden string in `text`, as "`string` (reason)" descriptions.
fn offences(text: &str) -> Vec<String> {
    FORBIDDEN
        .iter()
        .filter(|(needle, _)| text.contains(needle))
        .map(|(needle, reason)| format!("`{needle}` ({reason})"))
        .collect()
}

fn rust_files_under(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in std::fs::read_dir(&directory).expect("readable directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn raft_core_does_no_io_and_reads_no_clock_or_unseeded_rng() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("raft/src");
    let files = rust_files_under(&core);
    assert!(
        files.len() >= 10,
        "expected the core's files under {core:?}, found {files:?}"
    );
    let mut failures = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable source file");
        for offence in offences(&text) {
            failures.push(format!("{}: {offence}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "the Raft core must stay sans-I/O:\n{}",
        failures.join("\n")
    );
}

#[test]
fn tidy_catches_each_forbidden_string() {
    for (needle, _) in FORBIDDEN {
        let text = format!("fn offending() {{ let _ = {needle}; }}");
        assert_eq!(offences(&text).len(), 1, "tidy must catch `{needle}`");
    }
    assert!(offences("let rng = ChaCha8Rng::seed_from_u64(seed);").is_empty());
    // `std::time`, `SystemTime` and `tokio`.
    assert_eq!(
        offences("use std::time::SystemTime; tokio::spawn(x);").len(),
        3
    );
}

/// The crates keel-raft may depend on: none of them opens a file or socket, spawns a thread or reads
/// a clock on the core's behalf. Adding one is a decision to write down in docs/ARCHITECTURE.md.
const RAFT_DEPENDENCIES: &[&str] = &[
    "bytes",
    "rand",
    "rand_chacha",
    "serde",
    "thiserror",
    "tracing",
];

#[test]
fn raft_core_depends_only_on_crates_that_do_no_io() {
    let manifest_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("raft/Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path).expect("raft/Cargo.toml");
    let mut section = "";
    let mut unexpected = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section != "[dependencies]" || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
        if !RAFT_DEPENDENCIES.contains(&name) {
            unexpected.push(name.to_string());
        }
    }
    assert!(
        unexpected.is_empty(),
        "keel-raft must not depend on {unexpected:?} (see RAFT_DEPENDENCIES)"
    );
    assert!(
        manifest.contains("[dependencies]"),
        "no [dependencies] in {manifest_path:?}"
    );
}
