//! Read topic `example` from the beginning of every partition and print each record, stopping
//! after 3 seconds without a new one.
//!
//! `cargo run -p keel-client --example consumer` against `keel dev` (defaults: 127.0.0.1:7070,
//! CA ./keel-data/tls/ca.pem; override with KEEL_BOOTSTRAP and KEEL_CA).

use std::time::{Duration, Instant};

use keel_client::{Client, ClientTls, Consumer, SeekTo};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bootstrap = std::env::var("KEEL_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:7070".into());
    let ca = std::env::var("KEEL_CA").unwrap_or_else(|_| "./keel-data/tls/ca.pem".into());
    let client = Client::connect(&[bootstrap], ClientTls::from_ca_file(ca.as_ref())?).await?;

    let mut consumer = Consumer::new(client);
    let partitions = consumer.assign_all("example").await?;
    consumer.seek_all(SeekTo::Beginning);
    println!("reading partitions {partitions:?} of example");

    let idle_limit = Duration::from_secs(3);
    let mut last_record = Instant::now();
    while last_record.elapsed() < idle_limit {
        let records = consumer.poll().await?;
        if !records.is_empty() {
            last_record = Instant::now();
        }
        for record in records {
            println!(
                "{}/{} @{} key={:?} value={:?}",
                record.topic,
                record.partition,
                record.offset,
                record.key.as_deref().map(String::from_utf8_lossy),
                String::from_utf8_lossy(record.value.as_deref().unwrap_or_default())
            );
        }
    }
    Ok(())
}
