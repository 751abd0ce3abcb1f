//! What every client command shares: the connection flags (`--bootstrap`, `--ca`, `--cert`,
//! `--cert-key`, docs/CLI.md), connecting, topic-name checking at parse time (a bad name is a usage
//! error, exit 2), and writing to stdout where a closed pipe (`| head`) ends the command quietly.

use std::io;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use keel_client::{BrokerAddress, Client, ClientConfig, ClientTls, RetryPolicy};

use crate::limits::{CLI_CONNECT_TIMEOUT_MS, CLI_MAX_ATTEMPTS};

#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Brokers to bootstrap from.
    #[arg(
        long,
        env = "KEEL_BOOTSTRAP",
        default_value = "127.0.0.1:7070",
        value_name = "HOST:PORT[,HOST:PORT]",
        value_parser = parse_bootstrap
    )]
    pub bootstrap: Bootstrap,
    /// CA certificate that signs the brokers' certificates.
    #[arg(
        long,
        env = "KEEL_CA",
        default_value = "./keel-data/tls/ca.pem",
        value_name = "FILE"
    )]
    pub ca: PathBuf,
    /// Client certificate (for brokers run with --require-client-cert).
    #[arg(long, env = "KEEL_CERT", value_name = "FILE", requires = "cert_key")]
    pub cert: Option<PathBuf>,
    /// Private key of --cert. Not `--key`: that always means a message key (`keel produce`).
    #[arg(long, env = "KEEL_CERT_KEY", value_name = "FILE", requires = "cert")]
    pub cert_key: Option<PathBuf>,
}

/// A parsed, non-empty `--bootstrap` list.
#[derive(Debug, Clone)]
pub struct Bootstrap(pub Vec<BrokerAddress>);

fn parse_bootstrap(text: &str) -> Result<Bootstrap, String> {
    BrokerAddress::parse_list(text)
        .map(Bootstrap)
        .map_err(|error| error.to_string())
}

/// A topic name valid by docs/WIRE.md "Topic names", checked while parsing arguments.
/// `--compression none|lz4|zstd`: the codecs the CLI's producers offer (docs/CLI.md). The SDK can
/// also write gzip and snappy, and reads all four.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompressionArg {
    #[default]
    None,
    Lz4,
    Zstd,
}

impl CompressionArg {
    pub fn codec(self) -> keel_client::wire::record_batch::Compression {
        use keel_client::wire::record_batch::Compression;
        match self {
            CompressionArg::None => Compression::None,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

pub fn parse_topic(text: &str) -> Result<String, String> {
    keel_client::wire::validate_topic_name(text)
        .map(|()| text.to_string())
        .map_err(|error| error.to_string())
}

/// Settings for one-shot commands: a person is waiting, so a dead address fails within about
/// half a minute rather than the SDK's default patience.
pub fn cli_client_config() -> ClientConfig {
    ClientConfig {
        connect_timeout_ms: CLI_CONNECT_TIMEOUT_MS,
        retry: RetryPolicy {
            max_attempts: CLI_MAX_ATTEMPTS,
            ..RetryPolicy::default()
        },
        ..ClientConfig::default()
    }
}

pub async fn connect(args: &ConnectArgs) -> anyhow::Result<Client> {
    connect_with(args, cli_client_config()).await
}

pub async fn connect_with(args: &ConnectArgs, config: ClientConfig) -> anyhow::Result<Client> {
    let tls = ClientTls::from_files(&args.ca, args.cert.as_deref(), args.cert_key.as_deref())?;
    let bootstrap: Vec<String> = args.bootstrap.0.iter().map(ToString::to_string).collect();
    Client::connect_with(&bootstrap, tls, config)
        .await
        .with_context(|| format!("connecting to {}", bootstrap.join(",")))
}

/// Whether an output error means the reader went away (`keel consume | head`): the command
/// then stops with success instead of reporting an error.
pub fn is_closed_pipe(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::BrokenPipe
}

/// One line for a message: errors from the SDK can nest causes; stdout lines must stay lines.
pub fn one_line(text: &str) -> String {
    text.replace(['\n', '\r', '\t'], " ")
}
