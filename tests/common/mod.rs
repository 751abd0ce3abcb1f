//! Black-box test harness: real `keel server` processes on 127.0.0.1 with free ports, a fresh
//! CA from `keel certs init`, and helpers to kill (SIGKILL), stop (SIGTERM), pause and restart
//! nodes. Every node's stderr goes to `<dir>/node-<id>.log`; a node is ready when its log shows
//! one more "ready" line than before it was (re)started.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod acked;
pub mod loopfs;
pub mod raw;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_client::{Client, ClientTls};

pub const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// The Raft group of the first client topic's first partition: group 0 is the metadata group,
/// and the groups after it go to `__consumer_offsets`, which the cluster creates as soon as it
/// is founded (docs/CONSUMER-GROUPS.md).
pub const FIRST_CLIENT_GROUP: u64 = 1 + keel_broker::limits::DEFAULT_OFFSETS_PARTITIONS as u64;

/// Bound on how long a node may take to log "ready".
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct TestNode {
    pub id: u64,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// TCP port of `--metrics` when the cluster serves metrics.
    pub metrics_port: Option<u16>,
    child: Option<Child>,
    ready_lines_before: usize,
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub tls_dir: PathBuf,
    pub nodes: Vec<TestNode>,
    pub extra_args: Vec<String>,
}

/// A UDP port free right now on 127.0.0.1 (the OS picks it; the socket is then released).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("binding an ephemeral UDP port")
        .port()
}

fn count_ready_lines(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|text| text.lines().filter(|line| line.contains("ready")).count())
        .unwrap_or(0)
}

impl TestCluster {
    /// Makes certificates and data directories for `count` nodes; starts none.
    pub fn new(count: u64) -> TestCluster {
        // Test data on the real disk under target/, not tmpfs: fsync must mean something.
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = tempfile::Builder::new()
            .prefix("cluster-")
            .tempdir_in(base)
            .expect("temp dir");
        let tls_dir = dir.path().join("tls");
        let status = Command::new(KEEL)
            .args(["certs", "init", "--dir"])
            .arg(&tls_dir)
            .args(["--nodes", &count.to_string()])
            .stdout(Stdio::null())
            .status()
            .expect("running keel certs init");
        assert!(status.success(), "keel certs init failed");
        let nodes = (1..=count)
            .map(|id| TestNode {
                id,
                port: free_udp_port(),
                data_dir: dir.path().join(format!("node-{id}")),
                log: dir.path().join(format!("node-{id}.log")),
                metrics_port: None,
                child: None,
                ready_lines_before: 0,
            })
            .collect();
        TestCluster {
            dir,
            tls_dir,
            nodes,
            extra_args: Vec::new(),
        }
    }

    /// Starts every node and waits until each is ready.
    pub fn start(count: u64) -> TestCluster {
        let mut cluster = TestCluster::new(count);
        for id in 1..=count {
            cluster.spawn(id);
        }
        for id in 1..=count {
            cluster.wait_ready(id);
        }
        cluster
    }

    pub fn peers_arg(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("{}=127.0.0.1:{}", node.id, node.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn bootstrap(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect()
    }

    pub fn ca(&self) -> PathBuf {
        self.tls_dir.join("ca.pem")
    }

    fn node_mut(&mut self, id: u64) -> &mut TestNode {
        self.nodes
            .iter_mut()
            .find(|node| node.id == id)
            .expect("node id in the cluster")
    }

    pub fn node(&self, id: u64) -> &TestNode {
        self.nodes
            .iter()
            .find(|node| node.id == id)
            .expect("node id in the cluster")
    }

    /// Starts node `id` (`keel server`), its stderr appended to its log.
    pub fn spawn(&mut self, id: u64) {
        let peers = self.peers_arg();
        let tls_dir = self.tls_dir.clone();
        let extra = self.extra_args.clone();
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} already running");
        let metrics: Vec<String> = node
            .metrics_port
            .map(|port| vec!["--metrics".to_string(), format!("127.0.0.1:{port}")])
            .unwrap_or_default();
        node.ready_lines_before = count_ready_lines(&node.log);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("node log");
        let child = Command::new(KEEL)
            .arg("server")
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--listen", &format!("127.0.0.1:{}", node.port)])
            .arg("--tls-dir")
            .arg(&tls_dir)
            .args(["--peers", &peers])
            .args(&extra)
            .args(&metrics)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning keel server");
        node.child = Some(child);
    }

    /// Waits until node `id` logged "ready" since it was last spawned.
    pub fn wait_ready(&self, id: u64) {
        let node = self.node(id);
        let deadline = Instant::now() + READY_TIMEOUT;
        while count_ready_lines(&node.log) <= node.ready_lines_before {
            assert!(
                Instant::now() < deadline,
                "node {id} not ready within {READY_TIMEOUT:?}; log:\n{}",
                std::fs::read_to_string(&node.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the process dies at once, keeping only what reached the page cache.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.node_mut(id).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every node dies at once (SIGKILL) and comes back; returns once all are ready again.
    pub fn restart_all(&mut self) {
        let ids: Vec<u64> = self.nodes.iter().map(|node| node.id).collect();
        for &id in &ids {
            self.kill(id);
        }
        for &id in &ids {
            self.spawn(id);
        }
        for &id in &ids {
            self.wait_ready(id);
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self, id: u64) -> std::process::ExitStatus {
        let mut child = self.node_mut(id).child.take().expect("node running");
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the node") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("node {id} did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).child.as_ref().map(Child::id)
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.node(id).child.is_some()
    }

    pub async fn client(&self) -> Client {
        let tls = ClientTls::from_ca_file(&self.ca()).expect("CA file");
        Client::connect(&self.bootstrap(), tls)
            .await
            .expect("connecting to the cluster")
    }

    /// The cluster's combined node logs, for assertion messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| {
                format!(
                    "---- node {} ----\n{}",
                    node.id,
                    std::fs::read_to_string(&node.log).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Sends `SIG<name>` to a process with the system's `kill` command.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A TCP port free right now on 127.0.0.1.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding an ephemeral TCP port")
        .port()
}

/// The Prometheus text a node serves on its `--metrics` port.
pub fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

/// A tokio runtime for a test body.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
