//! `keel`: the command line (DESIGN.md 9). Subcommands arrive with the parts they drive; today
//! that is the storage benchmark (the quick start's first command until `keel dev` exists) and
//! `keel certs init`.

mod bench_storage;
mod certs;
mod server;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "keel", version, about = "Keel: a replicated log broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks (`keel bench storage`: the segment log alone, on this disk).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Cluster certificates (`keel certs init`: a CA, node and client certificates).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Run one node (bare: a single-node cluster on 127.0.0.1:7070 with data in ./keel-data).
    Server(server::ServerArgs),
    /// Run a local cluster in one process: node i on 127.0.0.1:(7069+i), data in ./keel-data.
    Dev(server::DevArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Append fixed-size entries to a fresh log with an fsync per batch, then read them back.
    Storage(bench_storage::StorageBenchArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Bench(BenchCommand::Storage(args)) => bench_storage::run(args),
        Command::Certs(command) => certs::run(command),
        Command::Server(args) => server::run_server(args),
        Command::Dev(args) => server::run_dev(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line on stderr, exit 1 (DESIGN.md 9).
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
