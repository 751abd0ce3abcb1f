//! `keel server` and `keel dev` (docs/CLI.md): run one node, or a local cluster of nodes in one
//! process, until SIGTERM or Ctrl-C, then shut down cleanly (groups sync, transport closes,
//! exit 0). The node itself is `keel_broker::server::RunningNode`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use keel_broker::meta::NodeInfo;
use keel_broker::node::identity::Identity;
use keel_broker::node::NodeConfig;
use keel_broker::server::RunningNode;
use keel_broker::transport::tls;
use keel_storage::FsyncPolicy;

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// This node's id (its certificate is DIR/node-<id>.pem).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    id: u64,
    /// Where the node keeps its logs and identity.
    #[arg(long, default_value = "./keel-data/server")]
    data_dir: PathBuf,
    /// UDP address of the node's QUIC endpoint (peers and clients).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Directory with ca.pem and node-<id>.{pem,key}; a development CA is made there if the
    /// node's certificate is missing.
    #[arg(long, default_value = "./keel-data/tls")]
    tls_dir: PathBuf,
    /// Every member as id=host:port, this node included (e.g. 1=127.0.0.1:7001,2=...).
    #[arg(long, value_delimiter = ',', value_parser = parse_peer)]
    peers: Vec<(u64, SocketAddr)>,
    /// Address clients are told to dial (default: the listen address).
    #[arg(long)]
    advertise: Option<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// always (default), interval:<ms> or never (benchmarks only).
    #[arg(long)]
    fsync: Option<FsyncPolicy>,
    /// Refuse clients that present no certificate signed by the cluster CA.
    #[arg(long)]
    require_client_cert: bool,
    /// A TOML file with settings (flags win): fsync, segment_bytes, max_message_bytes,
    /// max_record_batch_bytes, max_request_bytes, min_free_bytes, max_partition_replicas,
    /// offsets_partitions.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Nodes in the local cluster (node i listens on 127.0.0.1:(7069+i)).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: u64,
}

fn parse_peer(text: &str) -> Result<(u64, SocketAddr), String> {
    let (id, address) = text
        .split_once('=')
        .ok_or_else(|| format!("peer {text:?} is not id=host:port"))?;
    let id: u64 = id
        .parse()
        .map_err(|_| format!("peer id {id:?} is not a number"))?;
    if id == 0 {
        return Err("peer ids start at 1".into());
    }
    let address = std::net::ToSocketAddrs::to_socket_addrs(address)
        .map_err(|error| format!("peer address {address:?}: {error}"))?
        .next()
        .ok_or_else(|| format!("peer address {address:?} resolves to nothing"))?;
    Ok((id, address))
}

/// Settings a `--config` file may hold.
#[derive(serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    fsync: Option<String>,
    segment_bytes: Option<u64>,
    max_message_bytes: Option<u64>,
    max_record_batch_bytes: Option<u64>,
    max_request_bytes: Option<u64>,
    min_free_bytes: Option<u64>,
    max_partition_replicas: Option<u64>,
    offsets_partitions: Option<u32>,
}

pub fn run_server(args: &ServerArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let mut config = NodeConfig::new(
        args.id,
        args.data_dir.clone(),
        args.listen,
        args.tls_dir.clone(),
    );
    config.advertise = args.advertise.clone();
    config.require_client_cert = args.require_client_cert;
    config.fsync = match (&args.fsync, &file.fsync) {
        (Some(policy), _) => *policy,
        (None, Some(text)) => text
            .parse()
            .map_err(|error| anyhow::anyhow!("fsync in config: {error}"))?,
        (None, None) => FsyncPolicy::Always,
    };
    if let Some(bytes) = file.segment_bytes {
        config.segment_bytes = bytes;
    }
    config.min_free_bytes = file.min_free_bytes;
    if let Some(bytes) = file.max_message_bytes {
        config.limits.max_message_bytes = bytes;
    }
    if let Some(bytes) = file.max_record_batch_bytes {
        config.limits.max_record_batch_bytes = bytes;
    }
    if let Some(bytes) = file.max_request_bytes {
        config.limits.max_request_bytes = bytes;
    }
    match file.max_partition_replicas {
        Some(0) => bail!("max_partition_replicas in config must be at least 1"),
        Some(cap) => config.max_partition_replicas = cap,
        None => {}
    }
    match file.offsets_partitions {
        Some(0) => bail!("offsets_partitions in config must be at least 1"),
        Some(count) if count > keel_broker::limits::MAX_PARTITIONS => bail!(
            "offsets_partitions in config must be at most {}",
            keel_broker::limits::MAX_PARTITIONS
        ),
        Some(count) => config.offsets_partitions = count,
        None => {}
    }
    config
        .limits
        .validate()
        .map_err(|error| anyhow::anyhow!("limits: {error}"))?;
    let mut peers = BTreeMap::new();
    for &(id, address) in &args.peers {
        if peers.insert(id, address).is_some() {
            bail!("peer {id} is listed twice");
        }
    }
    if !peers.is_empty() && !peers.contains_key(&args.id) {
        bail!("--peers must list this node ({}) too", args.id);
    }
    config.peers = peers;
    if config.fsync == FsyncPolicy::Never {
        tracing::warn!(
            "fsync never: acknowledged messages can be lost on power failure (benchmarks only)"
        );
    }
    ensure_certificates(&args.tls_dir, &[args.id])?;
    let runtime = runtime()?;
    runtime.block_on(async {
        if let Some(address) = args.metrics {
            install_metrics(address)?;
        }
        let node = RunningNode::start(config)
            .await
            .context("starting the node")?;
        let address = node.local_address;
        tokio::select! {
            _ = node.wait_ready() => {
                tracing::info!(node_id = args.id, %address, "ready: serving clients");
            }
            _ = shutdown_signal() => {
                node.shutdown().await;
                return Ok(());
            }
        }
        shutdown_signal().await;
        tracing::info!("shutting down");
        node.shutdown().await;
        Ok(())
    })
}

pub fn run_dev(args: &DevArgs) -> anyhow::Result<()> {
    let root = PathBuf::from("./keel-data");
    let tls_dir = root.join("tls");
    let ids: Vec<u64> = (1..=args.nodes).collect();
    ensure_certificates(&tls_dir, &ids)?;
    let address = |id: u64| -> SocketAddr { SocketAddr::from(([127, 0, 0, 1], 7069 + id as u16)) };
    let peers: BTreeMap<u64, SocketAddr> = ids.iter().map(|&id| (id, address(id))).collect();
    let mut founders = Vec::new();
    let mut configs = Vec::new();
    for &id in &ids {
        let data_dir = root.join(format!("dev-{id}"));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let identity = Identity::load_or_create(&data_dir, id)?;
        founders.push(NodeInfo {
            node_id: id,
            incarnation: identity.incarnation,
            peer_address: address(id).to_string(),
            client_address: address(id).to_string(),
        });
        let mut config = NodeConfig::new(id, data_dir, address(id), tls_dir.clone());
        config.peers = peers.clone();
        configs.push(config);
    }
    let runtime = runtime()?;
    runtime.block_on(async {
        let mut nodes = Vec::new();
        for mut config in configs {
            // One process holds every founder, so the founding rule's question ("is every
            // peer empty?") is answered here and discovery is skipped.
            config.founders = Some(founders.clone());
            let id = config.node_id;
            nodes.push(
                RunningNode::start(config)
                    .await
                    .with_context(|| format!("starting node {id}"))?,
            );
        }
        let ready = async {
            for node in &nodes {
                node.wait_ready().await;
            }
        };
        tokio::select! {
            _ = ready => {}
            _ = shutdown_signal() => {
                for node in nodes { node.shutdown().await; }
                return Ok(());
            }
        }
        let bootstrap: Vec<String> = ids.iter().map(|&id| address(id).to_string()).collect();
        println!(
            "bootstrap={} ca={}",
            bootstrap.join(","),
            tls_dir.join("ca.pem").display()
        );
        tracing::info!(nodes = ids.len(), "ready: local cluster serving clients");
        shutdown_signal().await;
        tracing::info!("shutting down");
        for node in nodes {
            node.shutdown().await;
        }
        Ok(())
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A node certificate missing from `dir` means a development setup: make the development CA
/// (or reuse the one there) and the certificates. Real deployments run `keel certs init`.
fn ensure_certificates(dir: &Path, ids: &[u64]) -> anyhow::Result<()> {
    let missing = ids
        .iter()
        .any(|&id| !dir.join(tls::node_cert_file(id)).exists());
    if missing {
        tracing::info!(dir = %dir.display(), "making development certificates");
        tls::ensure_dev_certs(dir, ids)
            .with_context(|| format!("development certificates in {}", dir.display()))?;
    }
    Ok(())
}

fn install_metrics(address: SocketAddr) -> anyhow::Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(address)
        .install()
        .with_context(|| format!("serving metrics on {address}"))?;
    tracing::info!(%address, "metrics on /metrics");
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
