//! `keel produce TOPIC [--partition P] [--key K | --key-separator SEP]` (docs/CLI.md): one
//! message per stdin line (split on `\n` only; an empty line is an empty message; a last line
//! without `\n` still counts), sent pipelined through the SDK producer. stdout gets exactly one
//! line per input line, in input order: `<partition>\t<offset>` or `!\t<error>`. Exit 0 iff
//! every line was acknowledged.
//!
//! Three stages, each bounded: a thread reads stdin (blocking reads stay off the runtime), the
//! sender hands lines to the producer (waiting for buffer room), and the printer awaits the
//! acknowledgements in input order. At most `MAX_PENDING_LINES` lines are between the sender and
//! the printer, and lines longer than a message can be are not kept in memory.

use std::io::{self, BufRead, Write};

use anyhow::bail;
use bytes::Bytes;
use clap::Args;
use keel_client::{DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use tokio::sync::mpsc;

use super::common::{connect, is_closed_pipe, one_line, parse_topic, CompressionArg, ConnectArgs};
use crate::limits::{MAX_PENDING_LINES, READ_AHEAD_LINES};

#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[arg(value_parser = parse_topic)]
    topic: String,
    /// Send every message to this partition (default: by key hash, or spread without a key).
    #[arg(long)]
    partition: Option<u32>,
    /// The key of every message.
    #[arg(long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// Split each line at the first SEP: key before, value after (a line without SEP has no key).
    #[arg(long, value_name = "SEP", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    key_separator: Option<String>,
    /// Compress each batch's records (consumers decompress; the broker stores them as sent).
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// One stdin line, or why it cannot be sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Text(Vec<u8>),
    TooLong { length_bytes: u64 },
}

enum Outcome {
    Pending(DeliveryFuture),
    Failed(String),
}

pub async fn run(args: &ProduceArgs) -> anyhow::Result<()> {
    let client = connect(&args.connect).await?;
    let max_line_bytes = client.config().limits.max_message_bytes;
    let producer = Producer::with_config(
        client.clone(),
        ProducerConfig {
            compression: args.compression.codec(),
            ..ProducerConfig::default()
        },
    );

    let (lines_sender, mut lines) = mpsc::channel::<io::Result<Line>>(READ_AHEAD_LINES);
    std::thread::spawn(move || {
        let stdin = io::stdin();
        let mut reader = stdin.lock();
        loop {
            let line = read_line(&mut reader, max_line_bytes);
            let last = !matches!(line, Ok(Some(_)));
            let item = match line {
                Ok(Some(line)) => Ok(line),
                Ok(None) => break,
                Err(error) => Err(error),
            };
            if lines_sender.blocking_send(item).is_err() || last {
                break;
            }
        }
    });

    let (outcomes_sender, outcomes) = mpsc::channel::<Outcome>(MAX_PENDING_LINES);
    let printer = tokio::spawn(print_outcomes(outcomes));
    while let Some(line) = lines.recv().await {
        let line = line?;
        let outcome = match line {
            Line::TooLong { length_bytes } => Outcome::Failed(format!(
                "line of {length_bytes} bytes exceeds max_message_bytes {max_line_bytes}"
            )),
            Line::Text(text) => {
                let (key, value) =
                    split_key(text, args.key.as_deref(), args.key_separator.as_deref());
                let mut record = ProducerRecord::new(args.topic.clone(), key, value);
                record.partition = args.partition;
                producer.wait_for_capacity().await;
                Outcome::Pending(producer.send_record(record))
            }
        };
        if outcomes_sender.send(outcome).await.is_err() {
            break; // the printer stopped: stdout is gone
        }
    }
    drop(outcomes_sender);
    let (lines_total, failed) = printer.await??;
    producer.close().await;
    client.close().await;
    if failed > 0 {
        bail!("{failed} of {lines_total} messages were not acknowledged");
    }
    Ok(())
}

/// Prints each outcome in input order; returns (lines, failures).
async fn print_outcomes(mut outcomes: mpsc::Receiver<Outcome>) -> anyhow::Result<(u64, u64)> {
    let mut lines_total = 0u64;
    let mut failed = 0u64;
    // Not a StdoutLock: this task is spawned, and the lock is not Send.
    let mut buffered = io::BufWriter::new(io::stdout());
    while let Some(outcome) = outcomes.recv().await {
        lines_total += 1;
        let line = match outcome {
            Outcome::Pending(delivery) => match delivery.await {
                Ok((partition, offset)) => format!("{partition}\t{offset}\n"),
                Err(error) => {
                    failed += 1;
                    format!("!\t{}\n", one_line(&error.to_string()))
                }
            },
            Outcome::Failed(reason) => {
                failed += 1;
                format!("!\t{}\n", one_line(&reason))
            }
        };
        let mut written = buffered.write_all(line.as_bytes());
        // Flush whenever nothing else is ready, so interactive use sees each acknowledgement.
        if written.is_ok() && outcomes.is_empty() {
            written = buffered.flush();
        }
        if let Err(error) = written {
            if is_closed_pipe(&error) {
                return Ok((lines_total, failed));
            }
            return Err(error.into());
        }
    }
    match buffered.flush() {
        Err(error) if !is_closed_pipe(&error) => Err(error.into()),
        _ => Ok((lines_total, failed)),
    }
}

/// The key and value of a line: `--key` for every line, or the text before the first
/// `--key-separator` (a line without it has no key and is all value).
pub fn split_key(
    line: Vec<u8>,
    key: Option<&str>,
    separator: Option<&str>,
) -> (Option<Bytes>, Bytes) {
    if let Some(key) = key {
        return (
            Some(Bytes::copy_from_slice(key.as_bytes())),
            Bytes::from(line),
        );
    }
    let Some(separator) = separator
        .map(str::as_bytes)
        .filter(|separator| !separator.is_empty())
    else {
        return (None, Bytes::from(line));
    };
    match line
        .windows(separator.len())
        .position(|window| window == separator)
    {
        Some(at) => {
            let line = Bytes::from(line);
            (Some(line.slice(..at)), line.slice(at + separator.len()..))
        }
        None => (None, Bytes::from(line)),
    }
}

/// Reads one line (without its `\n`); `None` at the end of input. A line longer than
/// `max_bytes` is consumed but not kept: `Line::TooLong`.
pub fn read_line(reader: &mut impl BufRead, max_bytes: u64) -> io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut length_bytes = 0u64;
    let mut read_any = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break;
        }
        read_any = true;
        let (chunk, found_newline) = match available.iter().position(|&byte| byte == b'\n') {
            Some(at) => (&available[..at], true),
            None => (available, false),
        };
        length_bytes += chunk.len() as u64;
        if length_bytes <= max_bytes {
            line.extend_from_slice(chunk);
        }
        let consumed = chunk.len() + usize::from(found_newline);
        reader.consume(consumed);
        if found_newline {
            break;
        }
    }
    if !read_any {
        return Ok(None);
    }
    if length_bytes > max_bytes {
        return Ok(Some(Line::TooLong { length_bytes }));
    }
    Ok(Some(Line::Text(line)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max_bytes: u64) -> Vec<Line> {
        // A tiny buffer so lines straddle refills.
        let mut reader = io::BufReader::with_capacity(3, input);
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut reader, max_bytes).unwrap() {
            lines.push(line);
        }
        lines
    }

    fn text(value: &str) -> Line {
        Line::Text(value.as_bytes().to_vec())
    }

    #[test]
    fn stdin_splits_on_newline_only_and_empty_lines_are_messages() {
        assert_eq!(lines(b"", 100), []);
        assert_eq!(lines(b"a\nb\n", 100), [text("a"), text("b")]);
        assert_eq!(
            lines(b"a\nb", 100),
            [text("a"), text("b")],
            "last line without \\n"
        );
        assert_eq!(lines(b"a\n\n", 100), [text("a"), text("")]);
        assert_eq!(lines(b"\n", 100), [text("")]);
        assert_eq!(
            lines(b"x\r\n", 100),
            [text("x\r")],
            "\\r is part of the message"
        );
    }

    #[test]
    fn over_long_lines_are_reported_and_skipped() {
        assert_eq!(
            lines(b"12345678\nok\n", 5),
            [Line::TooLong { length_bytes: 8 }, text("ok")]
        );
        assert_eq!(lines(b"12345\n", 5), [text("12345")]);
    }

    #[test]
    fn keys_come_from_the_flag_or_before_the_first_separator() {
        let split = |line: &str, key, separator| {
            let (key, value) = split_key(line.as_bytes().to_vec(), key, separator);
            (
                key.map(|key| String::from_utf8(key.to_vec()).unwrap()),
                String::from_utf8(value.to_vec()).unwrap(),
            )
        };
        assert_eq!(
            split("a:b:c", None, Some(":")),
            (Some("a".into()), "b:c".into())
        );
        assert_eq!(split("abc", None, Some(":")), (None, "abc".into()));
        assert_eq!(
            split(":v", None, Some(":")),
            (Some(String::new()), "v".into())
        );
        assert_eq!(
            split("k=>v", None, Some("=>")),
            (Some("k".into()), "v".into())
        );
        assert_eq!(
            split("a:b", Some("K"), None),
            (Some("K".into()), "a:b".into())
        );
        assert_eq!(split("a:b", None, None), (None, "a:b".into()));
    }
}
