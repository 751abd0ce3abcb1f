//! Produce ten messages to topic `example` (created if missing) and print where they landed.
//!
//! `cargo run -p keel-client --example producer` against `keel dev` (defaults: 127.0.0.1:7070,
//! CA ./keel-data/tls/ca.pem; override with KEEL_BOOTSTRAP and KEEL_CA).

use bytes::Bytes;
use keel_client::wire::ErrorCode;
use keel_client::{Admin, Client, ClientTls, Producer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bootstrap = std::env::var("KEEL_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:7070".into());
    let ca = std::env::var("KEEL_CA").unwrap_or_else(|_| "./keel-data/tls/ca.pem".into());
    let client = Client::connect(&[bootstrap], ClientTls::from_ca_file(ca.as_ref())?).await?;

    match Admin::new(client.clone())
        .create_topic("example", 3, None)
        .await
    {
        Ok(_) => println!("created topic example"),
        Err(error) if error.error_code() == Some(&ErrorCode::TopicAlreadyExists) => {}
        Err(error) => return Err(error.into()),
    }

    let producer = Producer::new(client);
    // Sends pipeline: start them all, then await the acknowledgements in order.
    let deliveries: Vec<_> = (0..10)
        .map(|index| {
            let key = Bytes::from(format!("key-{}", index % 3));
            producer.send(
                "example",
                Some(key),
                Bytes::from(format!("message {index}")),
            )
        })
        .collect();
    for (index, delivery) in deliveries.into_iter().enumerate() {
        let (partition, offset) = delivery.await?;
        println!("message {index} -> partition {partition} offset {offset}");
    }
    producer.close().await;
    Ok(())
}
