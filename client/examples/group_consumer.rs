//! Read topic `example` as a member of consumer group `example-group`: the group decides which
//! partitions this process reads (start several to share them), each from the group's committed
//! offset (a new group from the beginning). Positions are committed every 5 s and on exit, which
//! comes after 10 seconds without a new record.
//!
//! `cargo run -p keel-client --example group_consumer` against `keel dev` (defaults:
//! 127.0.0.1:7070, CA ./keel-data/tls/ca.pem; override with KEEL_BOOTSTRAP and KEEL_CA).

use std::time::{Duration, Instant};

use keel_client::{AutoOffsetReset, Client, ClientTls, Consumer, GroupConfig, RebalanceListener};

/// Prints what the group gives and takes away.
struct Announce;

impl RebalanceListener for Announce {
    fn on_partitions_revoked(&mut self, partitions: &[(String, u32)]) {
        println!("revoked {partitions:?}");
    }

    fn on_partitions_assigned(&mut self, partitions: &[(String, u32)]) {
        println!("assigned {partitions:?}");
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bootstrap = std::env::var("KEEL_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:7070".into());
    let ca = std::env::var("KEEL_CA").unwrap_or_else(|_| "./keel-data/tls/ca.pem".into());
    let client = Client::connect(&[bootstrap], ClientTls::from_ca_file(ca.as_ref())?).await?;

    let mut consumer = Consumer::new(client);
    let config = GroupConfig {
        client_id: "example".into(),
        auto_offset_reset: AutoOffsetReset::Earliest,
        ..GroupConfig::default()
    };
    consumer
        .subscribe_with("example-group", &["example"], config)
        .await?;
    consumer.set_rebalance_listener(Box::new(Announce));

    // The idle clock starts once the group has assigned something (the first join waits 3 s).
    let idle_limit = Duration::from_secs(10);
    let mut last_record = Instant::now();
    while consumer.group_generation().is_none() || last_record.elapsed() < idle_limit {
        let records = consumer.poll().await?;
        if !records.is_empty() || consumer.group_generation().is_none() {
            last_record = Instant::now();
        }
        for record in records {
            println!(
                "{}/{} @{} value={:?}",
                record.topic,
                record.partition,
                record.offset,
                String::from_utf8_lossy(record.value.as_deref().unwrap_or_default())
            );
        }
    }
    consumer.close().await?; // commits the positions, then leaves the group
    Ok(())
}
