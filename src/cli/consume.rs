//! `keel consume TOPIC [--partition P] [--from-beginning | --offset O] [--max N]
//! [--timeout-ms T] [--with-offsets | --json]` (docs/CLI.md). One message per stdout line in
//! offset order per partition. Without a start flag it starts at the end (new messages only).
//! Stops after N messages or T ms without a new one (exit 0 either way); with neither it runs
//! until interrupted. A closed stdout (`| head`) also ends it with exit 0.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use base64::Engine;
use clap::Args;
use keel_client::{Client, Consumer, ConsumerConfig, ConsumerRecord, SeekTo};
use serde_json::json;

use super::common::{connect, is_closed_pipe, parse_topic, ConnectArgs};
use super::UsageError;
use crate::limits::CONSUME_MAX_WAIT_MS;

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
    /// Consumer group (not supported yet).
    #[arg(long, value_name = "G")]
    group: Option<String>,
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

pub async fn run(args: &ConsumeArgs) -> anyhow::Result<()> {
    if args.group.is_some() {
        return Err(UsageError("consumer groups (--group) are not supported yet".into()).into());
    }
    if args.max == Some(0) {
        return Ok(());
    }
    let client = connect(&args.connect).await?;
    let result = consume_with(&client, args).await;
    client.close().await;
    result
}

async fn consume_with(client: &Client, args: &ConsumeArgs) -> anyhow::Result<()> {
    let partitions = client.partition_count(&args.topic).await?;
    let max_wait_ms = match args.timeout_ms {
        Some(timeout_ms) => CONSUME_MAX_WAIT_MS.min(u32::try_from(timeout_ms).unwrap_or(u32::MAX)),
        None => CONSUME_MAX_WAIT_MS,
    };
    let mut consumer = Consumer::with_config(
        client.clone(),
        ConsumerConfig {
            max_wait_ms,
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
    let format = if args.json {
        Format::Json
    } else if args.with_offsets {
        Format::WithOffsets
    } else {
        Format::Value
    };
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
