//! Cluster status and the topic list, then a describe of each topic.
//!
//! `cargo run -p keel-client --example admin` against `keel dev` (defaults: 127.0.0.1:7070,
//! CA ./keel-data/tls/ca.pem; override with KEEL_BOOTSTRAP and KEEL_CA).

use keel_client::{Admin, Client, ClientTls};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bootstrap = std::env::var("KEEL_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:7070".into());
    let ca = std::env::var("KEEL_CA").unwrap_or_else(|_| "./keel-data/tls/ca.pem".into());
    let client = Client::connect(&[bootstrap], ClientTls::from_ca_file(ca.as_ref())?).await?;
    let admin = Admin::new(client);

    let status = admin.cluster_status().await?;
    for node in &status.nodes {
        let state = if node.up { "up" } else { "down" };
        println!("node {} at {} ({state})", node.node_id, node.address);
    }
    for topic in admin.list_topics().await? {
        let description = admin.describe_topic(&topic.name).await?;
        println!(
            "topic {} (replication {})",
            description.name, description.replication_factor
        );
        for partition in description.partitions {
            println!(
                "  partition {} leader {:?} replicas {:?} offsets {}..{}",
                partition.partition,
                partition.leader,
                partition.replicas,
                partition.log_start_offset,
                partition.high_watermark
            );
        }
    }
    Ok(())
}
