//! The `keel server` processes of a chaos run: certificates from `keel certs init`, a data dir
//! and a log file per node, start / SIGKILL / SIGSTOP / SIGCONT / wipe, and readiness from the
//! node's "ready" log line. Each node's peers are the relays of [`Network`] (its own entry is
//! its real address); clients dial the real addresses, which every node advertises.
//!
//! Dropping a [`Cluster`] SIGKILLs every process it started (also on panic), so a run never
//! leaves servers behind.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::limits::{NODE_SEGMENT_BYTES, READY_POLL_INTERVAL};
use crate::relay::Network;

/// The line a node logs once it serves clients (src/server.rs).
const READY_MARKER: &str = "ready: serving clients";

pub struct Node {
    pub id: u64,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    paused: bool,
    ready_lines_before: usize,
}

pub struct Cluster {
    keel: PathBuf,
    config: PathBuf,
    tls_dir: PathBuf,
    nodes: BTreeMap<u64, Node>,
    pub network: Network,
}

/// A UDP port free right now on 127.0.0.1 (the OS picks it; the socket is then released).
fn free_udp_port() -> std::io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn count_ready_lines(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|text| {
            text.lines()
                .filter(|line| line.contains(READY_MARKER))
                .count()
        })
        .unwrap_or(0)
}

/// Sends `SIG<name>` with the system's `kill` command (no unsafe, no libc in this package).
fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

impl Cluster {
    /// Makes certificates, data dirs and the relays for `count` nodes under `root`; starts none.
    pub async fn new(keel: &Path, root: &Path, count: u64) -> anyhow::Result<Cluster> {
        let tls_dir = root.join("tls");
        let status = Command::new(keel)
            .args(["certs", "init", "--dir"])
            .arg(&tls_dir)
            .args(["--nodes", &count.to_string()])
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("running {} certs init", keel.display()))?;
        if !status.success() {
            bail!("keel certs init failed");
        }
        // Small segments: a run fills many, so segment rolls happen under faults too, and a run
        // needs megabytes of disk instead of 128 MiB preallocated per log.
        let config = root.join("keel.toml");
        std::fs::write(&config, format!("segment_bytes = {NODE_SEGMENT_BYTES}\n"))
            .with_context(|| format!("writing {}", config.display()))?;
        let mut nodes = BTreeMap::new();
        for id in 1..=count {
            let listen = SocketAddr::from(([127, 0, 0, 1], free_udp_port()?));
            nodes.insert(
                id,
                Node {
                    id,
                    listen,
                    data_dir: root.join(format!("node-{id}")),
                    log: root.join(format!("node-{id}.log")),
                    child: None,
                    paused: false,
                    ready_lines_before: 0,
                },
            );
        }
        let addresses = nodes.iter().map(|(&id, node)| (id, node.listen)).collect();
        let network = Network::start(&addresses)
            .await
            .context("starting relays")?;
        Ok(Cluster {
            keel: keel.to_path_buf(),
            config,
            tls_dir,
            nodes,
            network,
        })
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn ca(&self) -> PathBuf {
        self.tls_dir.join("ca.pem")
    }

    /// Every node's real address, for clients.
    pub fn bootstrap(&self) -> Vec<String> {
        self.nodes
            .values()
            .map(|node| node.listen.to_string())
            .collect()
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&id).expect("node id in the cluster")
    }

    /// Node `id`'s `--peers`: itself at its real address, every other node behind its relay.
    fn peers_arg(&self, id: u64) -> String {
        self.nodes
            .values()
            .map(|node| {
                let address = if node.id == id {
                    node.listen
                } else {
                    self.network.relay_address(id, node.id)
                };
                format!("{}={address}", node.id)
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts node `id`; its stderr is appended to its log.
    pub fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let peers = self.peers_arg(id);
        let keel = self.keel.clone();
        let tls_dir = self.tls_dir.clone();
        let config = self.config.clone();
        let node = self.node_mut(id);
        if node.child.is_some() {
            bail!("node {id} is already running");
        }
        node.ready_lines_before = count_ready_lines(&node.log);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("opening {}", node.log.display()))?;
        let child = Command::new(keel)
            .arg("server")
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--listen", &node.listen.to_string()])
            .args(["--advertise", &node.listen.to_string()])
            .arg("--tls-dir")
            .arg(&tls_dir)
            .args(["--peers", &peers])
            .arg("--config")
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("KEEL_CHAOS_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning keel server")?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes[&id].child.is_some()
    }

    pub fn is_paused(&self, id: u64) -> bool {
        self.nodes[&id].paused
    }

    /// SIGKILL (works on a paused process too): only what reached the page cache survives.
    pub fn kill(&mut self, id: u64) {
        let node = self.node_mut(id);
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// SIGSTOP: the process freezes with its sockets open; peers see silence.
    pub fn pause(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.node_mut(id);
        let Some(child) = &node.child else {
            bail!("node {id} is not running");
        };
        signal(child.id(), "STOP")?;
        node.paused = true;
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.node_mut(id);
        if let Some(child) = &node.child {
            if node.paused {
                signal(child.id(), "CONT")?;
            }
        }
        node.paused = false;
        Ok(())
    }

    /// Deletes a stopped node's data dir (its identity and logs): it comes back as a new
    /// incarnation that must be added back with replace-node (docs/OPERATIONS.md
    /// "Replacing a node").
    pub fn wipe(&mut self, id: u64) -> anyhow::Result<()> {
        assert!(!self.is_running(id), "wipe needs a stopped node");
        let dir = &self.nodes[&id].data_dir;
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("deleting {}", dir.display()))?;
        }
        Ok(())
    }

    /// Nodes whose process ended although the harness did not kill it (a crash), with status.
    /// Their handle is dropped so they can be restarted.
    pub fn reap_crashed(&mut self) -> Vec<(u64, ExitStatus)> {
        let mut crashed = Vec::new();
        for node in self.nodes.values_mut() {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                node.paused = false;
                crashed.push((node.id, status));
            }
        }
        crashed
    }

    /// Waits (bounded) until node `id` logged "ready" since it was last spawned.
    pub async fn wait_ready(&self, id: u64, timeout: Duration) -> bool {
        let node = &self.nodes[&id];
        let deadline = Instant::now() + timeout;
        loop {
            if count_ready_lines(&node.log) > node.ready_lines_before {
                return true;
            }
            if Instant::now() >= deadline || node.child.is_none() {
                return false;
            }
            tokio::time::sleep(READY_POLL_INTERVAL).await;
        }
    }

    /// The last `lines` lines of a node's log, for reports.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Deletes every node's data dir (after a clean run: the logs and history stay).
    pub fn remove_data(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = std::fs::remove_dir_all(&node.data_dir);
        }
    }

    /// How many node logs contain `needle`.
    pub fn logs_containing(&self, needle: &str) -> usize {
        self.nodes
            .values()
            .filter(|node| {
                std::fs::read_to_string(&node.log).is_ok_and(|text| text.contains(needle))
            })
            .count()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
