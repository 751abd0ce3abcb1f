//! `keel certs init` (docs/CLI.md): a new cluster CA with node and client certificates in one
//! directory. The work is `keel_broker::transport::tls::generate_cluster_certs`, shared with the
//! development CA that `keel server` and `keel dev` create on first start.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use keel_broker::transport::tls::{self, DEFAULT_NODE_COUNT};

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Make DIR/ca.pem + ca.key, node-<i>.pem + .key for i in 1..=N, client.pem + client.key.
    Init(InitArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// Directory for the files (created if missing; an existing CA there is never replaced).
    #[arg(long)]
    dir: PathBuf,
    /// Number of node certificates (node ids 1..=N).
    #[arg(long, default_value_t = DEFAULT_NODE_COUNT, value_parser = clap::value_parser!(u64).range(1..))]
    nodes: u64,
    /// A DNS name or IP address added to every node certificate (repeatable).
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
}

pub fn run(command: &CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init(args) => init(args),
    }
}

fn init(args: &InitArgs) -> anyhow::Result<()> {
    tls::generate_cluster_certs(&args.dir, args.nodes, &args.hosts)
        .with_context(|| format!("certs init in {}", args.dir.display()))?;
    // One line for scripts and people: where the CA is and how many nodes it covers.
    println!(
        "ca={} nodes={} client={}",
        args.dir.join(tls::CA_CERT_FILE).display(),
        args.nodes,
        args.dir.join(tls::CLIENT_CERT_FILE).display()
    );
    Ok(())
}
