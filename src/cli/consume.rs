//! `keel consume TOPIC [--partition P] [--from-beginning | --offset O] [--max N]
//! [--timeout-ms T] [--with-offsets | --json]` and `keel consume TOPIC --group G
//! [--session-timeout-ms MS]` (docs/CLI.md). One message per stdout line in offset order per
//! partition. Without a start flag it starts at the end (new messages only). Stops after N
//! messages or T ms without a new one (exit 0 either way); with neither it runs until
//! interrupted. A closed stdout (`| head`) also ends it with exit 0.
//!
//! With `--group` the partitions are the group's to give, and positions start at its committed
//! offsets. What is committed is always "last printed + 1", and only once those lines are
//! flushed: the SDK's automatic commit (every 100 ms, and before a rebalance) commits the
//! positions at the start of a poll, when everything the previous poll returned has been
//! printed and flushed; on exit (--max, idle timeout, a closed stdout, SIGINT, SIGTERM) the
//! printed offsets are committed explicitly and the member leaves the group.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use clap::Args;
use keel_client::{
    AutoOffsetReset, Client, Consumer, ConsumerConfig, ConsumerRecord, GroupConfig,
    RebalanceListener, SeekTo,
};
use serde_json::json;

use super::common::{connect, is_closed_pipe, parse_topic, ConnectArgs};
use super::UsageError;
use crate::limits::{CLI_GROUP_CLIENT_ID, CLI_GROUP_COMMIT_INTERVAL_MS, CONSUME_MAX_WAIT_MS};

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[arg(value_parser = parse_topic)]
    topic: String,
    /// Read only this partition (default: all of them).
    #[arg(long)]
    partition: Option<u32>,
    /// Start at the oldest retained message.
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset (needs --partition when the topic has several partitions).
    #[arg(long)]
    offset: Option<u64>,
    /// Read as a member of consumer group G: the partitions the group assigns, from its
    /// committed offsets (a new group starts at the end, or the beginning with
    /// --from-beginning); commits what was printed.
    #[arg(long, value_name = "G", conflicts_with_all = ["partition", "offset"], value_parser = parse_group)]
    group: Option<String>,
    /// The member's session timeout (6000 to 1800000; default 10000).
    #[arg(long, value_name = "MS", requires = "group", value_parser = clap::value_parser!(u32).range(6_000..=1_800_000))]
    session_timeout_ms: Option<u32>,
    /// Stop after N messages.
    #[arg(long, value_name = "N")]
    max: Option<u64>,
    /// Stop after T milliseconds without a new message.
    #[arg(long, value_name = "T")]
    timeout_ms: Option<u64>,
    /// Print "<partition>\t<offset>\t<value>".
    #[arg(long, conflicts_with = "json")]
    with_offsets: bool,
    /// Print one JSON object per message: partition, offset, timestamp_ms, key, value.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Value,
    WithOffsets,
    Json,
}

/// A group id as the broker accepts it (1 to 255 bytes), checked while parsing.
pub fn parse_group(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > keel_client::wire::groups::MAX_GROUP_ID_BYTES {
        return Err(format!(
            "a group id is 1 to {} bytes",
            keel_client::wire::groups::MAX_GROUP_ID_BYTES
        ));
    }
    Ok(text.to_string())
}

pub async fn run(args: &ConsumeArgs) -> anyhow::Result<()> {
    if args.max == Some(0) {
        return Ok(());
    }
    let client = connect(&args.connect).await?;
    let result = match &args.group {
        Some(group) => consume_group(&client, args, group).await,
        None => consume_with(&client, args).await,
    };
    client.close().await;
    result
}

fn fetch_wait_ms(timeout_ms: Option<u64>) -> u32 {
    match timeout_ms {
        Some(timeout_ms) => CONSUME_MAX_WAIT_MS.min(u32::try_from(timeout_ms).unwrap_or(u32::MAX)),
        None => CONSUME_MAX_WAIT_MS,
    }
}

fn format_of(args: &ConsumeArgs) -> Format {
    if args.json {
        Format::Json
    } else if args.with_offsets {
        Format::WithOffsets
    } else {
        Format::Value
    }
}

/// The last offset printed per partition, since the last rebalance: what the exit commit may
/// claim. A rebalance forgets it (the automatic commit before the rejoin has committed it, and
/// a partition that comes back may have moved on under another member).
type Printed = Arc<Mutex<BTreeMap<u32, u64>>>;

struct ForgetOnRebalance(Printed);

impl RebalanceListener for ForgetOnRebalance {
    fn on_partitions_revoked(&mut self, _partitions: &[(String, u32)]) {
        self.0.lock().expect("printed lock").clear();
    }

    fn on_partitions_assigned(&mut self, partitions: &[(String, u32)]) {
        let list: Vec<String> = partitions.iter().map(|(_, p)| p.to_string()).collect();
        tracing::info!(partitions = %list.join(","), "the group assigned partitions");
    }
}

async fn consume_group(client: &Client, args: &ConsumeArgs, group: &str) -> anyhow::Result<()> {
    // An unknown topic is an error at once, not a member waiting for a topic to appear.
    client.partition_count(&args.topic).await?;
    let mut consumer = Consumer::with_config(
        client.clone(),
        ConsumerConfig {
            max_wait_ms: fetch_wait_ms(args.timeout_ms),
            ..ConsumerConfig::default()
        },
    );
    let defaults = GroupConfig::default();
    consumer
        .subscribe_with(
            group,
            &[args.topic.as_str()],
            GroupConfig {
                client_id: CLI_GROUP_CLIENT_ID.to_string(),
                session_timeout_ms: args
                    .session_timeout_ms
                    .unwrap_or(defaults.session_timeout_ms),
                auto_commit_interval_ms: Some(CLI_GROUP_COMMIT_INTERVAL_MS),
                auto_offset_reset: if args.from_beginning {
                    AutoOffsetReset::Earliest
                } else {
                    AutoOffsetReset::Latest
                },
                ..defaults
            },
        )
        .await?;
    let printed: Printed = Arc::default();
    consumer.set_rebalance_listener(Box::new(ForgetOnRebalance(printed.clone())));
    let outcome = consume_as_member(&mut consumer, args, &printed).await;
    // Whatever ended the loop, what was printed (and flushed) is committed and the member
    // leaves, so the group rebalances now rather than after a session timeout.
    let to_commit: Vec<(&str, u32, u64)> = {
        let assigned = consumer.assignment();
        let printed = printed.lock().expect("printed lock");
        printed
            .iter()
            .filter(|(partition, _)| assigned.iter().any(|(_, p)| p == *partition))
            .map(|(&partition, &offset)| (args.topic.as_str(), partition, offset + 1))
            .collect()
    };
    let committed = if to_commit.is_empty() || consumer.group_generation().is_none() {
        Ok(())
    } else {
        consumer.commit_offsets(&to_commit).await
    };
    let left = consumer.leave().await;
    outcome?;
    committed.with_context(|| format!("committing the printed offsets of group {group}"))?;
    left.with_context(|| format!("leaving group {group}"))?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM (or never, if the handlers cannot be installed).
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn consume_as_member(
    consumer: &mut Consumer,
    args: &ConsumeArgs,
    printed: &Printed,
) -> anyhow::Result<()> {
    let format = format_of(args);
    let idle_timeout = args.timeout_ms.map(Duration::from_millis);
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut count = 0u64;
    let mut last_message = Instant::now();
    let interrupt = interrupted();
    tokio::pin!(interrupt);
    loop {
        // The idle clock runs only while the member holds a generation: the first join alone
        // takes the coordinator's initial delay (3 s), and a join cut short by the timeout
        // would leave a member behind in the group for nothing.
        let joined = consumer.group_generation().is_some();
        if !joined {
            last_message = Instant::now();
        }
        let left = match idle_timeout {
            Some(idle) if joined => Some(idle.saturating_sub(last_message.elapsed())),
            _ => None,
        };
        if left.is_some_and(|left| left.is_zero()) {
            break;
        }
        let poll = async {
            match left {
                Some(left) => tokio::time::timeout(left, consumer.poll()).await.ok(),
                None => Some(consumer.poll().await),
            }
        };
        let records = tokio::select! {
            biased;
            _ = &mut interrupt => break,
            polled = poll => match polled {
                Some(records) => records?,
                None => break,
            },
        };
        if !records.is_empty() {
            last_message = Instant::now();
        }
        for record in &records {
            if let Err(error) = write_record(&mut out, record, format) {
                return closed_pipe_is_success(error);
            }
            count += 1;
            if args.max.is_some_and(|max| count >= max) {
                // Only what reached stdout may be committed.
                out.flush().or_else(closed_pipe_is_success)?;
                note_printed(printed, &records, record.offset, record.partition);
                return Ok(());
            }
        }
        if let Err(error) = out.flush() {
            return closed_pipe_is_success(error);
        }
        note_all_printed(printed, &records);
    }
    closed_pipe_is_success_or_flush(&mut out)
}

fn note_all_printed(printed: &Printed, records: &[ConsumerRecord]) {
    let mut printed = printed.lock().expect("printed lock");
    for record in records {
        printed.insert(record.partition, record.offset);
    }
}

/// Notes the records up to and including (`partition`, `offset`), where --max stopped.
fn note_printed(printed: &Printed, records: &[ConsumerRecord], offset: u64, partition: u32) {
    let end = records
        .iter()
        .position(|r| r.partition == partition && r.offset == offset)
        .map_or(records.len(), |at| at + 1);
    note_all_printed(printed, &records[..end]);
}

async fn consume_with(client: &Client, args: &ConsumeArgs) -> anyhow::Result<()> {
    let partitions = client.partition_count(&args.topic).await?;
    let mut consumer = Consumer::with_config(
        client.clone(),
        ConsumerConfig {
            max_wait_ms: fetch_wait_ms(args.timeout_ms),
            ..ConsumerConfig::default()
        },
    );
    let start = match (args.from_beginning, args.offset) {
        (true, _) => SeekTo::Beginning,
        (false, Some(offset)) => SeekTo::Offset(offset),
        (false, None) => SeekTo::End,
    };
    match args.partition {
        Some(partition) => {
            consumer.assign(&args.topic, &[partition]).await?;
        }
        None if args.offset.is_some() && partitions > 1 => {
            return Err(UsageError(format!(
                "--offset needs --partition: topic {} has {partitions} partitions",
                args.topic
            ))
            .into());
        }
        None => {
            consumer.assign_all(&args.topic).await?;
        }
    }
    consumer.seek_all(start);
    let format = format_of(args);
    consume(
        &mut consumer,
        format,
        args.max,
        args.timeout_ms.map(Duration::from_millis),
    )
    .await
}

async fn consume(
    consumer: &mut Consumer,
    format: Format,
    max: Option<u64>,
    idle_timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let mut last_message = Instant::now();
    loop {
        let records = match idle_timeout {
            Some(idle_timeout) => {
                let left = idle_timeout.saturating_sub(last_message.elapsed());
                if left.is_zero() {
                    break;
                }
                match tokio::time::timeout(left, consumer.poll()).await {
                    Ok(records) => records?,
                    Err(_) => break,
                }
            }
            None => consumer.poll().await?,
        };
        if !records.is_empty() {
            last_message = Instant::now();
        }
        for record in &records {
            if let Err(error) = write_record(&mut out, record, format) {
                return closed_pipe_is_success(error);
            }
            printed += 1;
            if max.is_some_and(|max| printed >= max) {
                return closed_pipe_is_success_or_flush(&mut out);
            }
        }
        if let Err(error) = out.flush() {
            return closed_pipe_is_success(error);
        }
    }
    closed_pipe_is_success_or_flush(&mut out)
}

fn closed_pipe_is_success(error: io::Error) -> anyhow::Result<()> {
    if is_closed_pipe(&error) {
        Ok(())
    } else {
        Err(error.into())
    }
}

fn closed_pipe_is_success_or_flush(out: &mut impl Write) -> anyhow::Result<()> {
    out.flush().or_else(closed_pipe_is_success)
}

fn write_record(out: &mut impl Write, record: &ConsumerRecord, format: Format) -> io::Result<()> {
    match format {
        // A null value prints as an empty line here; --json tells the two apart.
        Format::Value => {
            out.write_all(record.value.as_deref().unwrap_or_default())?;
            out.write_all(b"\n")
        }
        Format::WithOffsets => {
            write!(out, "{}\t{}\t", record.partition, record.offset)?;
            out.write_all(record.value.as_deref().unwrap_or_default())?;
            out.write_all(b"\n")
        }
        Format::Json => writeln!(out, "{}", record_json(record)),
    }
}

/// `{"partition","offset","timestamp_ms","key","value"}`; key and value are strings when valid
/// UTF-8, else base64 (standard alphabet, padded) under `key_b64` / `value_b64`. A record
/// without a key has `"key": null`, one with a null value `"value": null`.
pub fn record_json(record: &ConsumerRecord) -> serde_json::Value {
    let mut object = json!({
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
    });
    match &record.key {
        None => object["key"] = serde_json::Value::Null,
        Some(key) => put_bytes(&mut object, "key", key),
    }
    match &record.value {
        None => object["value"] = serde_json::Value::Null,
        Some(value) => put_bytes(&mut object, "value", value),
    }
    object
}

fn put_bytes(object: &mut serde_json::Value, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object[name] = json!(text),
        Err(_) => {
            object[format!("{name}_b64")] =
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;

    fn record(key: Option<&'static [u8]>, value: &'static [u8]) -> ConsumerRecord {
        ConsumerRecord {
            topic: Arc::from("t"),
            partition: 2,
            offset: 7,
            timestamp_ms: 1_700_000_000_000,
            key: key.map(Bytes::from_static),
            value: Some(Bytes::from_static(value)),
            headers: Vec::new(),
        }
    }

    #[test]
    fn json_uses_strings_for_utf8_and_base64_otherwise() {
        let utf8 = record_json(&record(Some(b"k"), b"hello"));
        assert_eq!(
            utf8,
            json!({"partition": 2, "offset": 7, "timestamp_ms": 1_700_000_000_000i64, "key": "k", "value": "hello"})
        );
        let binary = record_json(&record(None, b"\xff\x00"));
        assert_eq!(binary["key"], serde_json::Value::Null);
        assert_eq!(binary["value_b64"], "/wA=");
        assert!(binary.get("value").is_none());
        let binary_key = record_json(&record(Some(b"\xc3"), b""));
        assert_eq!(binary_key["key_b64"], "ww==");
        assert_eq!(binary_key["value"], "");
    }

    #[test]
    fn text_formats_write_raw_values() {
        let mut out = Vec::new();
        write_record(&mut out, &record(None, b"v\xff"), Format::Value).unwrap();
        write_record(&mut out, &record(None, b"w"), Format::WithOffsets).unwrap();
        assert_eq!(out, b"v\xff\n2\t7\tw\n");
    }
}
