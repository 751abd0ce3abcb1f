//! Tidy: the consensus core stays sans-I/O (DESIGN.md 2, STYLE.md 1 and 12). The text of every
//! file under broker/src/raft/ must not mention an async runtime, a socket library, the file
//! system, a clock read or an unseeded RNG. Seeded RNGs (`ChaCha8Rng::seed_from_u64`) are fine.

use std::path::{Path, PathBuf};

/// Strings the core must never contain, with the reason.
const FORBIDDEN: &[(&str, &str)] = &[
    ("tokio", "an async runtime"),
    ("quinn", "a socket library"),
    ("std::fs", "the file system"),
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
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("broker/src/raft");
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
    assert_eq!(
        offences("use std::time::SystemTime; tokio::spawn(x);").len(),
        2
    );
}
