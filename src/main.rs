//! `keel`: the command line (DESIGN.md 9). Subcommands arrive with the parts they drive.
use clap::Parser;

#[derive(Parser)]
#[command(name = "keel", version, about = "Keel: a replicated log broker")]
struct Cli {}

fn main() {
    Cli::parse();
}
