//! The client commands of `keel` (docs/CLI.md): `topic`, `produce`, `consume`, `group`,
//! `cluster` and the end-to-end `bench` modes. Each module owns one command's arguments (a clap type) and an
//! async `run`; they all reach the cluster through the SDK (keel-client) with the connection
//! flags of `common`. docs/CLIENT.md "Command line output" records the output details.

pub mod bench;
pub mod cluster;
pub mod common;
pub mod consume;
pub mod group;
pub mod produce;
pub mod topic;

use std::fmt;
use std::future::Future;

use crate::limits::RUNTIME_SHUTDOWN_TIMEOUT;

/// A usage error found only at run time (e.g. `--offset` without `--partition` on a topic with
/// several partitions): `keel` exits 2 for it, like clap does for the ones it finds.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Runs an async command on a multi-threaded tokio runtime made for it.
pub fn block_on(command: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(command);
    // Background tasks (producer sends, fetches) must not hold the exit up.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    result
}
