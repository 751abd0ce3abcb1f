//! A small ext4 file system in an image file, loop-mounted, for tests that need a disk that
//! really fills: fallocate, writeback and ENOSPC behave there as on a real disk, which a tmpfs
//! or an injected error does not show.
//!
//! Mounting needs root, `mkfs.ext4` and loop devices. Without them a test skips with a line on
//! stderr, unless `KEEL_REQUIRE_LOOP_TESTS=1` (set by .ci/run), which makes the skip a failure:
//! CI must never pass by skipping what it is there to check.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct LoopFs {
    image: PathBuf,
    mount: PathBuf,
}

impl LoopFs {
    /// Makes a `bytes`-sized ext4 image under `dir` and mounts it at `dir/<name>`. `None` when
    /// this machine cannot (see the module comment).
    pub fn create(dir: &Path, name: &str, bytes: u64) -> Option<LoopFs> {
        let image = dir.join(format!("{name}.img"));
        let mount = dir.join(name);
        let made = std::fs::File::create(&image)
            .and_then(|file| file.set_len(bytes))
            .and_then(|()| std::fs::create_dir_all(&mount));
        if let Err(error) = made {
            return skip(&format!("cannot create {}: {error}", image.display()));
        }
        // No reserved blocks for root: the node runs as root here, and the test wants the file
        // system to be full when `df` says so.
        let mkfs = run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image));
        if let Err(why) = mkfs {
            return skip(&format!("mkfs.ext4 failed: {why}"));
        }
        let mounted = run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount));
        if let Err(why) = mounted {
            return skip(&format!("mount -o loop failed: {why}"));
        }
        Some(LoopFs { image, mount })
    }

    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// Bytes an unprivileged writer may still allocate.
    pub fn available_bytes(&self) -> u64 {
        let stat = rustix::fs::statvfs(&self.mount).expect("statvfs on the loop mount");
        stat.f_bavail * stat.f_frsize
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // Lazy: a node killed a moment ago may still hold files open.
        let _ = run(Command::new("umount").arg("-l").arg(&self.mount));
        let _ = std::fs::remove_file(&self.image);
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    match command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Err(error.to_string()),
    }
}

fn skip(why: &str) -> Option<LoopFs> {
    if std::env::var("KEEL_REQUIRE_LOOP_TESTS").is_ok_and(|value| value == "1") {
        panic!("a loop-mounted file system is required here (KEEL_REQUIRE_LOOP_TESTS=1): {why}");
    }
    eprintln!("skipped: no loop-mounted file system on this machine ({why})");
    None
}
