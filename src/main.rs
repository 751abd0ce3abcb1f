//! `keel`: the command line (docs/CLI.md): the node (`server`, `dev`), the client commands
//! (`topic`, `produce`, `consume`, `group`, `cluster`, `bench`; in `cli/`) and `certs init`.

mod bench_storage;
mod certs;
mod cli;
mod limits;
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
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(cli::topic::TopicCommand),
    /// Send one message per stdin line; print "<partition>\t<offset>" per line.
    Produce(cli::produce::ProduceArgs),
    /// Print messages of a topic, one per line.
    Consume(cli::consume::ConsumeArgs),
    /// Cluster status and node replacement.
    #[command(subcommand)]
    Cluster(cli::cluster::ClusterCommand),
    /// Consumer groups: list, describe, reset offsets, delete.
    #[command(subcommand)]
    Group(cli::group::GroupCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Append fixed-size entries to a fresh log with an fsync per batch, then read them back.
    Storage(bench_storage::StorageBenchArgs),
    /// Produce messages to a running cluster: throughput and send-to-acknowledgement latency.
    Produce(cli::bench::BenchArgs),
    /// Consume messages from the beginning of a topic: throughput and fetch latency.
    Consume(cli::bench::BenchArgs),
    /// Produce and consume at once: send-to-consume latency.
    E2e(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Bench(BenchCommand::Storage(args)) => bench_storage::run(args),
        Command::Certs(command) => certs::run(command),
        Command::Server(args) => server::run_server(args),
        Command::Dev(args) => server::run_dev(args),
        Command::Bench(BenchCommand::Produce(args)) => {
            cli::block_on(cli::bench::run(cli::bench::Mode::Produce, args))
        }
        Command::Bench(BenchCommand::Consume(args)) => {
            cli::block_on(cli::bench::run(cli::bench::Mode::Consume, args))
        }
        Command::Bench(BenchCommand::E2e(args)) => {
            cli::block_on(cli::bench::run(cli::bench::Mode::EndToEnd, args))
        }
        Command::Topic(command) => cli::block_on(cli::topic::run(command)),
        Command::Produce(args) => cli::block_on(cli::produce::run(args)),
        Command::Consume(args) => cli::block_on(cli::consume::run(args)),
        Command::Cluster(command) => cli::block_on(cli::cluster::run(command)),
        Command::Group(command) => cli::block_on(cli::group::run(command)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.downcast_ref::<cli::UsageError>().is_some() => {
            // A usage error found at run time: exit 2, like clap's own (docs/CLI.md
            // "Conventions").
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
        Err(error) => {
            // One line on stderr, exit 1 (docs/CLI.md "Conventions").
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
