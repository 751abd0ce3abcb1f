//! `keel cluster status [--json]` and `keel cluster replace-node --id N [--no-wait]`
//! (docs/CLI.md; docs/OPERATIONS.md "Replacing a node").

use std::io::IsTerminal;

use clap::{Args, Subcommand};
use keel_client::wire::messages::ClusterStatusResponse;
use keel_client::{Admin, ReplaceNodeWait};
use serde_json::json;

use super::common::{connect, ConnectArgs};
use crate::limits::SPINNER_TICK_INTERVAL;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Nodes (id, incarnation, address, up), the leader of each partition, follower lag.
    Status(StatusArgs),
    /// Replace node N's old incarnation with the new one in every Raft group it was in.
    ReplaceNode(ReplaceNodeArgs),
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args, Debug)]
pub struct ReplaceNodeArgs {
    /// The node id whose data directory was replaced.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    id: u64,
    /// Return once the new incarnation is a learner everywhere, before the swap completes.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn run(command: &ClusterCommand) -> anyhow::Result<()> {
    let connect_args = match command {
        ClusterCommand::Status(args) => &args.connect,
        ClusterCommand::ReplaceNode(args) => &args.connect,
    };
    let client = connect(connect_args).await?;
    let admin = Admin::new(client.clone());
    let result = match command {
        ClusterCommand::Status(args) => status(&admin, args).await,
        ClusterCommand::ReplaceNode(args) => replace_node(&admin, args).await,
    };
    client.close().await;
    result
}

async fn status(admin: &Admin, args: &StatusArgs) -> anyhow::Result<()> {
    let status = admin.cluster_status().await?;
    if args.json {
        println!("{}", status_json(&status));
    } else {
        print!("{}", status_text(&status));
    }
    Ok(())
}

async fn replace_node(admin: &Admin, args: &ReplaceNodeArgs) -> anyhow::Result<()> {
    let wait = if args.no_wait {
        ReplaceNodeWait::UntilLearnersAdded
    } else {
        ReplaceNodeWait::UntilReplaced
    };
    // Long work says so on stderr (docs/CLI.md "Conventions"): the broker answers only when it is
    // done.
    let progress = std::io::stderr().is_terminal().then(|| {
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.set_message(format!("replacing node {}", args.id));
        spinner.enable_steady_tick(SPINNER_TICK_INTERVAL);
        spinner
    });
    if progress.is_none() {
        eprintln!("replacing node {} (waiting for the cluster)", args.id);
    }
    let response = admin.replace_node(args.id, wait).await;
    if let Some(spinner) = progress {
        spinner.finish_and_clear();
    }
    let response = response
        .map_err(|error| anyhow::Error::new(error).context(format!("replace node {}", args.id)))?;
    if args.no_wait {
        println!(
            "node {} added as a learner in {} groups",
            args.id, response.groups
        );
    } else {
        println!("node {} replaced in {} groups", args.id, response.groups);
    }
    Ok(())
}

/// The metadata group (no topic) is shown as `_meta/0`.
fn group_name(topic: Option<&str>, partition: u32) -> String {
    format!("{}/{partition}", topic.unwrap_or("_meta"))
}

pub fn status_text(status: &ClusterStatusResponse) -> String {
    let mut text = String::from("node\tincarnation\taddress\tstate\n");
    for node in &status.nodes {
        text.push_str(&format!(
            "{}\t{:016x}\t{}\t{}\n",
            node.node_id,
            node.incarnation,
            node.address,
            if node.up { "up" } else { "down" }
        ));
    }
    text.push_str("\ngroup\tleader\tfollower_lag\n");
    for group in &status.partitions {
        let leader = group
            .leader
            .map_or_else(|| "-".to_string(), |leader| leader.to_string());
        let lags: Vec<String> = group
            .followers
            .iter()
            .map(|follower| format!("{}:{}", follower.node_id, follower.lag_entries))
            .collect();
        text.push_str(&format!(
            "{}\t{}\t{}\n",
            group_name(group.topic.as_deref(), group.partition),
            leader,
            if lags.is_empty() {
                "-".to_string()
            } else {
                lags.join(",")
            }
        ));
    }
    // Added after the groups so the sections before read as they always did.
    text.push_str("\nnode\toffline_replicas\n");
    for node in &status.nodes {
        let offline = node
            .offline_replicas
            .map_or_else(|| "-".to_string(), |count| count.to_string());
        text.push_str(&format!("{}\t{offline}\n", node.node_id));
    }
    text
}

pub fn status_json(status: &ClusterStatusResponse) -> serde_json::Value {
    let nodes: Vec<_> = status
        .nodes
        .iter()
        .map(|node| {
            json!({
                "node_id": node.node_id,
                "incarnation": node.incarnation,
                "address": node.address,
                "up": node.up,
                "offline_replicas": node.offline_replicas,
            })
        })
        .collect();
    let partitions: Vec<_> = status
        .partitions
        .iter()
        .map(|group| {
            let followers: Vec<_> = group
                .followers
                .iter()
                .map(|follower| json!({ "node_id": follower.node_id, "lag_entries": follower.lag_entries }))
                .collect();
            json!({
                "topic": group.topic,
                "partition": group.partition,
                "leader": group.leader,
                "followers": followers,
            })
        })
        .collect();
    json!({ "nodes": nodes, "partitions": partitions })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_client::wire::messages::{FollowerLag, NodeStatus, PartitionStatus};

    #[test]
    fn status_text_lists_nodes_then_groups() {
        let status = ClusterStatusResponse {
            nodes: vec![NodeStatus {
                node_id: 1,
                incarnation: 0xab,
                address: "127.0.0.1:7070".into(),
                up: true,
                offline_replicas: Some(2),
            }],
            partitions: vec![
                PartitionStatus {
                    topic: None,
                    partition: 0,
                    leader: Some(1),
                    followers: vec![FollowerLag {
                        node_id: 2,
                        lag_entries: 3,
                    }],
                },
                PartitionStatus {
                    topic: Some("orders".into()),
                    partition: 1,
                    leader: None,
                    followers: vec![],
                },
            ],
        };
        assert_eq!(
            status_text(&status),
            "node\tincarnation\taddress\tstate\n1\t00000000000000ab\t127.0.0.1:7070\tup\n\
             \ngroup\tleader\tfollower_lag\n_meta/0\t1\t2:3\norders/1\t-\t-\n\
             \nnode\toffline_replicas\n1\t2\n"
        );
        let json = status_json(&status);
        assert_eq!(json["partitions"][0]["topic"], serde_json::Value::Null);
        assert_eq!(json["nodes"][0]["up"], true);
        assert_eq!(json["nodes"][0]["offline_replicas"], 2);
        let unknown = ClusterStatusResponse {
            nodes: vec![NodeStatus {
                offline_replicas: None,
                ..status.nodes[0].clone()
            }],
            partitions: vec![],
        };
        assert!(status_text(&unknown).ends_with("\nnode\toffline_replicas\n1\t-\n"));
        assert_eq!(
            status_json(&unknown)["nodes"][0]["offline_replicas"],
            serde_json::Value::Null
        );
    }
}
