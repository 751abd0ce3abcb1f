//! `keel group list|describe|reset-offsets|delete` (docs/CLI.md): consumer-group administration
//! through the SDK's `Admin`. Text output is tab-separated for scripts; `--json` prints one JSON
//! document. Members' assignments are decoded from Kafka's ConsumerProtocol; lag is a
//! partition's high watermark (from topic describe) minus the group's committed offset.

use std::collections::{BTreeMap, BTreeSet};

use clap::{ArgGroup, Args, Subcommand};
use keel_client::wire::consumer_protocol::Assignment;
use keel_client::wire::groups::{GroupDescriptionView, PartitionOffset};
use keel_client::wire::messages::TopicDescription;
use keel_client::wire::ErrorCode;
use keel_client::{Admin, ClientError};
use serde_json::json;

use super::common::{connect, parse_topic, ConnectArgs};
use super::consume::parse_group;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List the cluster's consumer groups: "<group>\t<state>\t<protocol_type>\t<members>".
    List(ListArgs),
    /// Show a group's state, members and their partitions, and per partition its committed
    /// offset, high watermark and lag.
    Describe(GroupArgs),
    /// Set a group's committed offsets for a topic (only while the group has no members).
    ResetOffsets(ResetArgs),
    /// Delete a group and its committed offsets (only while it has no members).
    Delete(GroupArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct GroupArgs {
    #[arg(value_parser = parse_group)]
    group: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("to").required(true).args(["to_earliest", "to_latest", "to_offset"])))]
pub struct ResetArgs {
    #[arg(value_parser = parse_group)]
    group: String,
    /// The topic whose partitions are reset (every partition of it).
    #[arg(long, value_parser = parse_topic)]
    topic: String,
    /// Each partition's log start.
    #[arg(long)]
    to_earliest: bool,
    /// Each partition's high watermark.
    #[arg(long)]
    to_latest: bool,
    /// This offset in every partition, kept within the partition's log start and high
    /// watermark.
    #[arg(long, value_name = "O")]
    to_offset: Option<u64>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn run(command: &GroupCommand) -> anyhow::Result<()> {
    let connect_args = match command {
        GroupCommand::List(args) => &args.connect,
        GroupCommand::Describe(args) | GroupCommand::Delete(args) => &args.connect,
        GroupCommand::ResetOffsets(args) => &args.connect,
    };
    let client = connect(connect_args).await?;
    let admin = Admin::new(client.clone());
    let result = match command {
        GroupCommand::List(args) => list(&admin, args).await,
        GroupCommand::Describe(args) => describe(&admin, args).await,
        GroupCommand::ResetOffsets(args) => reset(&admin, args).await,
        GroupCommand::Delete(args) => delete(&admin, args).await,
    };
    client.close().await;
    result
}

async fn list(admin: &Admin, args: &ListArgs) -> anyhow::Result<()> {
    let groups = admin
        .list_groups()
        .await
        .map_err(|error| anyhow::Error::new(error).context("group list"))?;
    if args.json {
        let groups: Vec<_> = groups
            .iter()
            .map(|group| {
                json!({
                    "group": group.group,
                    "state": group.state.as_str(),
                    "protocol_type": group.protocol_type,
                    "members": group.members,
                })
            })
            .collect();
        println!("{}", json!(groups));
    } else {
        for group in &groups {
            println!(
                "{}\t{}\t{}\t{}",
                group.group,
                group.state.as_str(),
                if group.protocol_type.is_empty() {
                    "-"
                } else {
                    &group.protocol_type
                },
                group.members
            );
        }
    }
    Ok(())
}

/// One partition's row in a description.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionRow {
    topic: String,
    partition: u32,
    committed: Option<u64>,
    high_watermark: Option<u64>,
    member: Option<String>,
}

impl PartitionRow {
    /// High watermark minus committed; none when either is unknown. A committed offset past
    /// the high watermark (a reset ahead of the log) has no lag.
    fn lag(&self) -> Option<u64> {
        Some(self.high_watermark?.saturating_sub(self.committed?))
    }
}

/// A member with its decoded assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MemberRow {
    member_id: String,
    client_id: String,
    /// Topic -> partitions.
    assigned: BTreeMap<String, Vec<u32>>,
}

/// Each member's decoded assignment. Bytes that do not decode show as no partitions (the
/// broker never checks them; a foreign client may use another protocol type).
fn member_assignments(view: &GroupDescriptionView) -> Vec<MemberRow> {
    view.members
        .iter()
        .map(|member| {
            let partitions =
                if view.protocol_type == keel_client::wire::groups::CONSUMER_PROTOCOL_TYPE {
                    Assignment::decode(&member.assignment)
                        .map(|assignment| {
                            assignment
                                .partitions
                                .into_iter()
                                .map(|entry| (entry.topic, entry.partitions))
                                .collect()
                        })
                        .unwrap_or_default()
                } else {
                    BTreeMap::new()
                };
            MemberRow {
                member_id: member.member_id.clone(),
                client_id: member.client_id.clone(),
                assigned: partitions,
            }
        })
        .collect()
}

/// Every partition the group has an offset for or assigns, sorted, with its owner and high
/// watermark (`topics`: the descriptions of the topics involved that exist).
fn partition_rows(
    view: &GroupDescriptionView,
    members: &[MemberRow],
    topics: &BTreeMap<String, TopicDescription>,
) -> Vec<PartitionRow> {
    let mut keys: BTreeSet<(String, u32)> = view
        .offsets
        .iter()
        .map(|offset| (offset.topic.clone(), offset.partition))
        .collect();
    let mut owners: BTreeMap<(String, u32), String> = BTreeMap::new();
    for MemberRow {
        member_id,
        assigned,
        ..
    } in members
    {
        for (topic, partitions) in assigned {
            for &partition in partitions {
                keys.insert((topic.clone(), partition));
                owners.insert((topic.clone(), partition), member_id.clone());
            }
        }
    }
    keys.into_iter()
        .map(|(topic, partition)| {
            let committed = view
                .offsets
                .iter()
                .find(|offset| offset.topic == topic && offset.partition == partition)
                .and_then(|offset| offset.offset);
            let high_watermark = topics.get(&topic).and_then(|description| {
                description
                    .partitions
                    .iter()
                    .find(|p| p.partition == partition)
                    .map(|p| p.high_watermark)
            });
            let member = owners.get(&(topic.clone(), partition)).cloned();
            PartitionRow {
                topic,
                partition,
                committed,
                high_watermark,
                member,
            }
        })
        .collect()
}

fn assignment_text(assigned: &BTreeMap<String, Vec<u32>>) -> String {
    let parts: Vec<String> = assigned
        .iter()
        .flat_map(|(topic, partitions)| partitions.iter().map(move |p| format!("{topic}/{p}")))
        .collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(",")
    }
}

fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |value| value.to_string())
}

async fn describe(admin: &Admin, args: &GroupArgs) -> anyhow::Result<()> {
    let context = || format!("group describe {}", args.group);
    let view = admin
        .describe_group(&args.group)
        .await
        .map_err(|error| anyhow::Error::new(error).context(context()))?;
    let members = member_assignments(&view);
    let mut topic_names: BTreeSet<String> = view.offsets.iter().map(|o| o.topic.clone()).collect();
    for member in &members {
        topic_names.extend(member.assigned.keys().cloned());
    }
    let mut topics = BTreeMap::new();
    for topic in topic_names {
        match admin.describe_topic(&topic).await {
            Ok(description) => {
                topics.insert(topic, description);
            }
            // Offsets can outlive their topic: its rows show no high watermark and no lag.
            Err(error) if error.error_code() == Some(&ErrorCode::UnknownTopic) => {}
            Err(ClientError::UnknownTopic { .. }) => {}
            Err(error) => return Err(anyhow::Error::new(error).context(context())),
        }
    }
    let rows = partition_rows(&view, &members, &topics);
    if args.json {
        println!("{}", description_json(&view, &members, &rows));
        return Ok(());
    }
    println!(
        "group {} state={} generation={} protocol_type={} protocol={} leader={}",
        view.group,
        view.state.as_str(),
        view.generation,
        if view.protocol_type.is_empty() {
            "-"
        } else {
            &view.protocol_type
        },
        if view.protocol.is_empty() {
            "-"
        } else {
            &view.protocol
        },
        view.leader.as_deref().unwrap_or("-"),
    );
    println!("member\tclient_id\tassignment");
    for member in &members {
        println!(
            "{}\t{}\t{}",
            member.member_id,
            member.client_id,
            assignment_text(&member.assigned)
        );
    }
    println!();
    println!("topic\tpartition\tcommitted\thigh_watermark\tlag\tmember");
    for row in &rows {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            row.topic,
            row.partition,
            or_dash(row.committed),
            or_dash(row.high_watermark),
            or_dash(row.lag()),
            row.member.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}

fn description_json(
    view: &GroupDescriptionView,
    members: &[MemberRow],
    rows: &[PartitionRow],
) -> serde_json::Value {
    json!({
        "group": view.group,
        "state": view.state.as_str(),
        "generation": view.generation,
        "protocol_type": view.protocol_type,
        "protocol": view.protocol,
        "leader": view.leader,
        "members": members.iter().map(|member| json!({
            "member_id": member.member_id,
            "client_id": member.client_id,
            "assignment": member.assigned.iter().map(|(topic, partitions)| json!({
                "topic": topic,
                "partitions": partitions,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "offsets": rows.iter().map(|row| json!({
            "topic": row.topic,
            "partition": row.partition,
            "committed": row.committed,
            "high_watermark": row.high_watermark,
            "lag": row.lag(),
            "member": row.member,
        })).collect::<Vec<_>>(),
    })
}

/// The offsets a reset sets: per partition of the topic, its log start, its high watermark, or
/// the given offset kept within the two (Kafka's `--to-offset` clamps the same way: an offset
/// past the high watermark would wait for records that may never come).
fn reset_targets(description: &TopicDescription, args: &ResetArgs) -> Vec<PartitionOffset> {
    description
        .partitions
        .iter()
        .map(|partition| {
            let offset = if args.to_earliest {
                partition.log_start_offset
            } else if args.to_latest {
                partition.high_watermark
            } else {
                args.to_offset.unwrap_or_default().clamp(
                    partition.log_start_offset,
                    partition.high_watermark.max(partition.log_start_offset),
                )
            };
            PartitionOffset {
                topic: description.name.clone(),
                partition: partition.partition,
                offset,
                leader_epoch: None,
                metadata: String::new(),
            }
        })
        .collect()
}

async fn reset(admin: &Admin, args: &ResetArgs) -> anyhow::Result<()> {
    let context = || format!("group reset-offsets {}", args.group);
    let description = admin
        .describe_topic(&args.topic)
        .await
        .map_err(|error| anyhow::Error::new(error).context(context()))?;
    let offsets = reset_targets(&description, args);
    let reset = admin
        .reset_group_offsets(&args.group, offsets.clone())
        .await;
    refused_while_members(reset, &args.group, &context())?;
    if args.json {
        let offsets: Vec<_> = offsets
            .iter()
            .map(|o| json!({"topic": o.topic, "partition": o.partition, "offset": o.offset}))
            .collect();
        println!("{}", json!({"group": args.group, "offsets": offsets}));
    } else {
        for offset in &offsets {
            println!("{}\t{}\t{}", offset.topic, offset.partition, offset.offset);
        }
    }
    Ok(())
}

/// An operator's change to a group, which the coordinator refuses while the group has members
/// (NonEmptyGroup): said so in words an operator acts on.
fn refused_while_members(
    result: Result<(), ClientError>,
    group: &str,
    context: &str,
) -> anyhow::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(error) if error.error_code() == Some(&ErrorCode::NonEmptyGroup) => {
            anyhow::bail!("{context}: group {group} has active members; stop its consumers first")
        }
        Err(error) => Err(anyhow::Error::new(error).context(context.to_string())),
    }
}

async fn delete(admin: &Admin, args: &GroupArgs) -> anyhow::Result<()> {
    let context = || format!("group delete {}", args.group);
    let deleted = admin.delete_group(&args.group).await;
    refused_while_members(deleted, &args.group, &context())?;
    if args.json {
        println!("{}", json!({"group": args.group, "deleted": true}));
    } else {
        println!("deleted group {}", args.group);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_client::wire::consumer_protocol::TopicPartitions;
    use keel_client::wire::groups::{CommittedPartitionOffset, GroupMemberView, GroupStateView};
    use keel_client::wire::messages::{PartitionDescription, TopicConfigView};

    fn view() -> GroupDescriptionView {
        let assignment = Assignment::new(vec![TopicPartitions {
            topic: "t".into(),
            partitions: vec![0, 1],
        }])
        .encode()
        .unwrap();
        GroupDescriptionView {
            group: "g".into(),
            state: GroupStateView::Stable,
            generation: 3,
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            leader: Some("m1".into()),
            members: vec![GroupMemberView {
                member_id: "m1".into(),
                client_id: "keel-cli".into(),
                metadata: Vec::new(),
                assignment,
            }],
            offsets: vec![
                CommittedPartitionOffset {
                    topic: "t".into(),
                    partition: 0,
                    offset: Some(4),
                    leader_epoch: None,
                    metadata: String::new(),
                },
                CommittedPartitionOffset {
                    topic: "gone".into(),
                    partition: 0,
                    offset: Some(9),
                    leader_epoch: None,
                    metadata: String::new(),
                },
            ],
        }
    }

    fn topic(high_watermarks: &[u64]) -> TopicDescription {
        TopicDescription {
            name: "t".into(),
            replication_factor: 1,
            partitions: high_watermarks
                .iter()
                .enumerate()
                .map(|(partition, &high_watermark)| PartitionDescription {
                    partition: partition as u32,
                    leader: Some(1),
                    replicas: vec![1],
                    log_start_offset: 2,
                    high_watermark,
                    offline: Vec::new(),
                })
                .collect(),
            config: TopicConfigView {
                retention_bytes: -1,
                retention_ms: -1,
                segment_ms: -1,
            },
        }
    }

    #[test]
    fn rows_cover_committed_and_assigned_partitions_with_lag() {
        let view = view();
        let members = member_assignments(&view);
        assert_eq!(assignment_text(&members[0].assigned), "t/0,t/1");
        let topics = BTreeMap::from([("t".to_string(), topic(&[10, 7]))]);
        let rows = partition_rows(&view, &members, &topics);
        let summary: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.topic.as_str(),
                    r.partition,
                    r.committed,
                    r.high_watermark,
                    r.lag(),
                    r.member.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("gone", 0, Some(9), None, None, None),
                ("t", 0, Some(4), Some(10), Some(6), Some("m1".to_string())),
                ("t", 1, None, Some(7), None, Some("m1".to_string())),
            ]
        );
        let json = description_json(&view, &members, &rows);
        assert_eq!(
            json["members"][0]["assignment"][0]["partitions"],
            json!([0, 1])
        );
        assert_eq!(json["offsets"][1]["lag"], json!(6));
        assert_eq!(json["offsets"][2]["committed"], serde_json::Value::Null);
    }

    #[test]
    fn reset_targets_resolve_earliest_latest_and_clamp_an_offset() {
        let args = |earliest, latest, offset| ResetArgs {
            group: "g".into(),
            topic: "t".into(),
            to_earliest: earliest,
            to_latest: latest,
            to_offset: offset,
            json: false,
            connect: crate::cli::common::ConnectArgs {
                bootstrap: crate::cli::common::Bootstrap(Vec::new()),
                ca: "ca.pem".into(),
                cert: None,
                cert_key: None,
            },
        };
        let description = topic(&[10, 7]);
        let offsets = |a: &ResetArgs| -> Vec<u64> {
            reset_targets(&description, a)
                .iter()
                .map(|o| o.offset)
                .collect()
        };
        assert_eq!(offsets(&args(true, false, None)), [2, 2]);
        assert_eq!(offsets(&args(false, true, None)), [10, 7]);
        assert_eq!(offsets(&args(false, false, Some(8))), [8, 7]);
        assert_eq!(offsets(&args(false, false, Some(0))), [2, 2]);
    }
}
