//! `keel topic create|list|describe|delete` (docs/CLI.md). Text output is tab-separated for
//! scripts; `--json` prints one JSON document (docs/CLIENT.md shows each shape).

use clap::{Args, Subcommand};
use keel_client::wire::messages::{TopicDescription, TopicSummary};
use keel_client::wire::ErrorCode;
use keel_client::Admin;
use serde_json::json;

use super::common::{connect, parse_topic, ConnectArgs};

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic (an existing one is an error unless --if-not-exists).
    Create(CreateArgs),
    /// List topics: "<name>\t<partitions>\t<replication>" per line, sorted by name.
    List(ListArgs),
    /// Show a topic's partitions: leader, replicas, log start, high watermark.
    Describe(NameArgs),
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
    };
    let client = connect(connect_args).await?;
    let admin = Admin::new(client.clone());
    let result = match command {
        TopicCommand::Create(args) => create(&admin, args).await,
        TopicCommand::List(args) => list(&admin, args).await,
        TopicCommand::Describe(args) => describe(&admin, args).await,
        TopicCommand::Delete(args) => delete(&admin, args).await,
    };
    client.close().await;
    result
}

async fn create(admin: &Admin, args: &CreateArgs) -> anyhow::Result<()> {
    let (summary, created) = match admin
        .create_topic(&args.name, args.partitions, args.replication)
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
            })
        })
        .collect();
    json!({
        "name": description.name,
        "replication_factor": description.replication_factor,
        "partitions": partitions,
    })
}

/// A header line, then one tab-separated line per partition (`-` for no leader).
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
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_client::wire::messages::PartitionDescription;

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
                },
                PartitionDescription {
                    partition: 1,
                    leader: None,
                    replicas: vec![2],
                    log_start_offset: 5,
                    high_watermark: 5,
                },
            ],
        };
        assert_eq!(
            description_text(&description),
            "topic orders partitions=2 replication=3\n\
             partition\tleader\treplicas\tlog_start_offset\thigh_watermark\n\
             0\t2\t1,2,3\t0\t42\n\
             1\t-\t2\t5\t5\n"
        );
        let json = description_json(&description);
        assert_eq!(json["partitions"][1]["leader"], serde_json::Value::Null);
        assert_eq!(json["partitions"][0]["high_watermark"], 42);
    }
}
