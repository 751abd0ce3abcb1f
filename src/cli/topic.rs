//! `keel topic create|list|describe|alter|delete` (docs/CLI.md). Text output is tab-separated for
//! scripts; `--json` prints one JSON document (docs/CLIENT.md shows each shape).

use clap::{Args, Subcommand};
use keel_client::wire::messages::{
    TopicConfigView, TopicDescription, TopicSettings, TopicSummary, UNLIMITED,
};
use keel_client::wire::ErrorCode;
use keel_client::Admin;
use serde_json::json;

use super::common::{connect, parse_topic, ConnectArgs};
use super::UsageError;

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic (an existing one is an error unless --if-not-exists).
    Create(CreateArgs),
    /// List topics: "<name>\t<partitions>\t<replication>" per line, sorted by name.
    List(ListArgs),
    /// Show a topic's retention settings and partitions: leader, replicas, log start, high
    /// watermark.
    Describe(NameArgs),
    /// Change a topic's retention settings (those not given stay as they are).
    Alter(AlterArgs),
    /// Delete a topic and its messages.
    Delete(NameArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[arg(value_parser = parse_topic)]
    name: String,
    /// Number of partitions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    partitions: u32,
    /// Replicas per partition [default: the server decides, min(3, nodes)].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    replication: Option<u16>,
    /// An existing topic is not an error.
    #[arg(long)]
    if_not_exists: bool,
    #[command(flatten)]
    settings: SettingArgs,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// The retention flags of create and alter. Plain i64s: a value that is neither -1 nor positive
/// is refused by the SDK with the setting's name (exit 1), the same message the broker logs.
#[derive(Args, Debug)]
pub struct SettingArgs {
    /// Bytes kept per partition, at least (-1: unlimited) [create default: unlimited].
    #[arg(long, value_name = "B", allow_negative_numbers = true)]
    retention_bytes: Option<i64>,
    /// Age after which whole segments are deleted, by append time (-1: unlimited) [create
    /// default: 604800000, 7 days].
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    retention_ms: Option<i64>,
    /// Age after which a non-empty active segment rolls (-1: never) [create default:
    /// 604800000, 7 days].
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    segment_ms: Option<i64>,
}

impl SettingArgs {
    fn settings(&self) -> TopicSettings {
        TopicSettings {
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
            segment_ms: self.segment_ms,
        }
    }
}

#[derive(Args, Debug)]
pub struct AlterArgs {
    #[arg(value_parser = parse_topic)]
    name: String,
    #[command(flatten)]
    settings: SettingArgs,
    /// Grow the topic to N partitions (only more). Not supported yet: refused.
    #[arg(long, value_name = "N")]
    partitions: Option<u32>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct NameArgs {
    #[arg(value_parser = parse_topic)]
    name: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn run(command: &TopicCommand) -> anyhow::Result<()> {
    let connect_args = match command {
        TopicCommand::Create(args) => &args.connect,
        TopicCommand::List(args) => &args.connect,
        TopicCommand::Describe(args) | TopicCommand::Delete(args) => &args.connect,
        TopicCommand::Alter(args) => {
            // Refused before connecting: neither needs the cluster to be told apart.
            check_alter(args)?;
            &args.connect
        }
    };
    let client = connect(connect_args).await?;
    let admin = Admin::new(client.clone());
    let result = match command {
        TopicCommand::Create(args) => create(&admin, args).await,
        TopicCommand::List(args) => list(&admin, args).await,
        TopicCommand::Describe(args) => describe(&admin, args).await,
        TopicCommand::Delete(args) => delete(&admin, args).await,
        TopicCommand::Alter(args) => alter(&admin, args).await,
    };
    client.close().await;
    result
}

async fn create(admin: &Admin, args: &CreateArgs) -> anyhow::Result<()> {
    let (summary, created) = match admin
        .create_topic_with_settings(
            &args.name,
            args.partitions,
            args.replication,
            args.settings.settings(),
        )
        .await
    {
        Ok(summary) => (summary, true),
        Err(error)
            if args.if_not_exists && error.error_code() == Some(&ErrorCode::TopicAlreadyExists) =>
        {
            let description = admin.describe_topic(&args.name).await?;
            let summary = TopicSummary {
                name: description.name,
                partitions: description.partitions.len() as u32,
                replication_factor: description.replication_factor,
            };
            (summary, false)
        }
        Err(error) => {
            return Err(anyhow::Error::new(error).context(format!("topic create {}", args.name)))
        }
    };
    if args.json {
        let mut object = summary_json(&summary);
        object["created"] = json!(created);
        println!("{object}");
    } else if created {
        println!(
            "created topic {} partitions={} replication={}",
            summary.name, summary.partitions, summary.replication_factor
        );
    } else {
        println!(
            "topic {} already exists partitions={} replication={}",
            summary.name, summary.partitions, summary.replication_factor
        );
    }
    Ok(())
}

async fn list(admin: &Admin, args: &ListArgs) -> anyhow::Result<()> {
    let topics = admin.list_topics().await?;
    if args.json {
        let array: Vec<_> = topics.iter().map(summary_json).collect();
        println!("{}", serde_json::Value::Array(array));
    } else {
        for topic in &topics {
            println!(
                "{}\t{}\t{}",
                topic.name, topic.partitions, topic.replication_factor
            );
        }
    }
    Ok(())
}

async fn describe(admin: &Admin, args: &NameArgs) -> anyhow::Result<()> {
    let description = admin.describe_topic(&args.name).await.map_err(|error| {
        anyhow::Error::new(error).context(format!("topic describe {}", args.name))
    })?;
    if args.json {
        println!("{}", description_json(&description));
    } else {
        print!("{}", description_text(&description));
    }
    Ok(())
}

/// `--partitions` is in the command's contract (docs/CLI.md) but growing a topic is not built:
/// it fails (exit 1) rather than being ignored, so a script relying on it learns at once.
fn check_alter(args: &AlterArgs) -> anyhow::Result<()> {
    if let Some(partitions) = args.partitions {
        anyhow::bail!(
            "topic alter {}: --partitions {partitions}: adding partitions is not supported yet",
            args.name
        );
    }
    if args.settings.settings().is_empty() {
        return Err(UsageError(format!(
            "topic alter {}: nothing to change: give --retention-bytes, --retention-ms or --segment-ms",
            args.name
        ))
        .into());
    }
    Ok(())
}

async fn alter(admin: &Admin, args: &AlterArgs) -> anyhow::Result<()> {
    let altered = admin
        .alter_topic(&args.name, args.settings.settings())
        .await
        .map_err(|error| anyhow::Error::new(error).context(format!("topic alter {}", args.name)))?;
    if args.json {
        println!(
            "{}",
            json!({ "name": altered.name, "config": config_json(&altered.config) })
        );
    } else {
        print!(
            "altered topic {}\n{}",
            altered.name,
            config_text(&altered.config)
        );
    }
    Ok(())
}

async fn delete(admin: &Admin, args: &NameArgs) -> anyhow::Result<()> {
    admin.delete_topic(&args.name).await.map_err(|error| {
        anyhow::Error::new(error).context(format!("topic delete {}", args.name))
    })?;
    if args.json {
        println!("{}", json!({ "name": args.name, "deleted": true }));
    } else {
        println!("deleted topic {}", args.name);
    }
    Ok(())
}

fn summary_json(summary: &TopicSummary) -> serde_json::Value {
    json!({
        "name": summary.name,
        "partitions": summary.partitions,
        "replication_factor": summary.replication_factor,
    })
}

pub fn description_json(description: &TopicDescription) -> serde_json::Value {
    let partitions: Vec<_> = description
        .partitions
        .iter()
        .map(|partition| {
            json!({
                "partition": partition.partition,
                "leader": partition.leader,
                "replicas": partition.replicas,
                "log_start_offset": partition.log_start_offset,
                "high_watermark": partition.high_watermark,
                "offline": partition
                    .offline
                    .iter()
                    .map(|replica| json!({ "node_id": replica.node_id, "reason": replica.reason }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "name": description.name,
        "replication_factor": description.replication_factor,
        "partitions": partitions,
        "config": config_json(&description.config),
    })
}

/// Kafka's setting names as keys; -1 for unlimited, as on the wire.
fn config_json(config: &TopicConfigView) -> serde_json::Value {
    json!({
        "retention.bytes": config.retention_bytes,
        "retention.ms": config.retention_ms,
        "segment.ms": config.segment_ms,
    })
}

/// One `setting=value` line per setting, `unlimited` for -1.
fn config_text(config: &TopicConfigView) -> String {
    let show = |value: i64| {
        if value == UNLIMITED {
            "unlimited".to_string()
        } else {
            value.to_string()
        }
    };
    format!(
        "retention.bytes={}\nretention.ms={}\nsegment.ms={}\n",
        show(config.retention_bytes),
        show(config.retention_ms),
        show(config.segment_ms)
    )
}

/// A header line, then one tab-separated line per partition (`-` for no leader), then the
/// retention settings (after the partitions, so scripts reading the first lines see what they
/// always did), then one `offline` line per replica held offline (none when all are open).
pub fn description_text(description: &TopicDescription) -> String {
    let mut text = format!(
        "topic {} partitions={} replication={}\npartition\tleader\treplicas\tlog_start_offset\thigh_watermark\n",
        description.name,
        description.partitions.len(),
        description.replication_factor
    );
    for partition in &description.partitions {
        let leader = partition
            .leader
            .map_or_else(|| "-".to_string(), |leader| leader.to_string());
        let replicas: Vec<String> = partition.replicas.iter().map(u64::to_string).collect();
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            partition.partition,
            leader,
            replicas.join(","),
            partition.log_start_offset,
            partition.high_watermark
        ));
    }
    text.push_str(&config_text(&description.config));
    for partition in &description.partitions {
        for replica in &partition.offline {
            // One line each: a reason with a newline or tab would break the line format.
            let reason: String = (replica.reason.chars())
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            text.push_str(&format!(
                "offline partition={} node={} reason={}\n",
                partition.partition, replica.node_id, reason
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_client::wire::messages::{OfflineReplica, PartitionDescription};

    #[test]
    fn describe_text_and_json_shapes() {
        let description = TopicDescription {
            name: "orders".into(),
            replication_factor: 3,
            partitions: vec![
                PartitionDescription {
                    partition: 0,
                    leader: Some(2),
                    replicas: vec![1, 2, 3],
                    log_start_offset: 0,
                    high_watermark: 42,
                    offline: vec![],
                },
                PartitionDescription {
                    partition: 1,
                    leader: None,
                    replicas: vec![2],
                    log_start_offset: 5,
                    high_watermark: 5,
                    offline: vec![OfflineReplica {
                        node_id: 2,
                        reason: "create groups/3:\tNot a directory".into(),
                    }],
                },
            ],
            config: TopicConfigView {
                retention_bytes: UNLIMITED,
                retention_ms: 604_800_000,
                segment_ms: 3_600_000,
            },
        };
        assert_eq!(
            description_text(&description),
            "topic orders partitions=2 replication=3\n\
             partition\tleader\treplicas\tlog_start_offset\thigh_watermark\n\
             0\t2\t1,2,3\t0\t42\n\
             1\t-\t2\t5\t5\n\
             retention.bytes=unlimited\n\
             retention.ms=604800000\n\
             segment.ms=3600000\n\
             offline partition=1 node=2 reason=create groups/3: Not a directory\n"
        );
        let json = description_json(&description);
        assert_eq!(json["partitions"][1]["leader"], serde_json::Value::Null);
        assert_eq!(json["partitions"][0]["high_watermark"], 42);
        assert_eq!(json["config"]["retention.bytes"], -1);
        assert_eq!(json["config"]["retention.ms"], 604_800_000);
        assert_eq!(json["config"]["segment.ms"], 3_600_000);
        assert_eq!(json["partitions"][0]["offline"], serde_json::json!([]));
        assert_eq!(json["partitions"][1]["offline"][0]["node_id"], 2);
        assert_eq!(
            json["partitions"][1]["offline"][0]["reason"],
            "create groups/3:\tNot a directory"
        );
    }
}
