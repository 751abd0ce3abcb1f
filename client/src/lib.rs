//! keel-client: the Rust SDK for Keel (`Client`, `Producer`, `Consumer`, `Admin`). The formats it
//! speaks are keel-wire's, re-exported as [`wire`] so SDK users need one dependency.
//!
//! The client never depends on the broker, and the broker never on the client: both depend on
//! keel-wire.
//!
//! - [`Client`] (`client.rs`, `conn.rs`, `metadata.rs`): QUIC connections (one per broker, one
//!   request per stream), the cluster map, routing to partition leaders, retries.
//! - [`Producer`] (`producer.rs`, `accumulator.rs`, `partitioner.rs`): batching, partitioning,
//!   pipelined sends.
//! - [`Consumer`] (`consumer.rs`): assigned partitions, long-poll fetches, seeks; or, after
//!   [`Consumer::subscribe`], a consumer-group member ([`group`]: coordinator, membership,
//!   assignors) reading what its group assigns from the committed offsets, with commits.
//! - [`Admin`] (`admin.rs`): topics, cluster and consumer-group management.
//! - Errors (`error.rs`) say whether they are retriable. docs/CLIENT.md records the choices.
//!
//! Producing and consuming (needs a running cluster, so not run as a test):
//!
//! ```no_run
//! use bytes::Bytes;
//! use keel_client::{Client, ClientTls, Consumer, Producer, SeekTo};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = ClientTls::from_ca_file("keel-data/tls/ca.pem".as_ref())?;
//! let client = Client::connect(&["127.0.0.1:7070"], tls).await?;
//! let producer = Producer::new(client.clone());
//! let (partition, offset) = producer.send("orders", None, Bytes::from("hello")).await?;
//! let mut consumer = Consumer::new(client);
//! consumer.assign("orders", &[partition]).await?;
//! consumer.seek("orders", partition, SeekTo::Offset(offset));
//! let records = consumer.poll().await?;
//! # Ok(()) }
//! ```
//!
//! A consumer-group member (needs a running cluster):
//!
//! ```no_run
//! use keel_client::{AutoOffsetReset, Client, ClientTls, Consumer, GroupConfig};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = ClientTls::from_ca_file("keel-data/tls/ca.pem".as_ref())?;
//! let client = Client::connect(&["127.0.0.1:7070"], tls).await?;
//! let mut consumer = Consumer::new(client);
//! let config = GroupConfig { auto_offset_reset: AutoOffsetReset::Earliest, ..GroupConfig::default() };
//! consumer.subscribe_with("billing", &["orders"], config).await?;
//! for _ in 0..10 {
//!     for record in consumer.poll().await? {
//!         println!("{}/{} {:?}", record.partition, record.offset, record.value);
//!     }
//! }
//! consumer.close().await?; // commits the positions and leaves the group
//! # Ok(()) }
//! ```
//!
//! A producer's batch, framed as a produce request, and read back the way the broker does:
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use keel_client::wire::messages::{Acks, ProduceRequest};
//! use keel_client::wire::{Frame, FrameDecoder, Limits, Record, RecordBatchBuilder, RecordBatchView, Request};
//!
//! let limits = Limits::default();
//! let mut builder = RecordBatchBuilder::new(&limits, 64 * 1024);
//! builder.append(&Record { timestamp_ms: 1_000, key: None, value: Some(b"hello"), headers: &[] })?;
//! let request = Request::Produce(ProduceRequest {
//!     topic: "orders".into(),
//!     partition: 0,
//!     acks: Acks::Committed,
//!     timeout_ms: 30_000,
//! });
//! let mut stream = BytesMut::new();
//! Frame::new(request, builder.finish()?).encode(&mut stream)?;
//!
//! let frame = FrameDecoder::new(limits.max_request_bytes).decode::<Request>(&mut stream)?.unwrap();
//! let batch = RecordBatchView::parse_within(frame.payload, &limits)?;
//! let records = batch.decode()?;
//! assert_eq!(records.iter().next().and_then(|record| record.value), Some(&b"hello"[..]));
//! # Ok::<(), keel_client::wire::WireError>(())
//! ```

pub use keel_wire as wire;

mod accumulator;
pub mod address;
mod admin;
mod client;
mod conn;
mod consumer;
pub mod error;
pub mod group;
pub mod limits;
mod metadata;
pub mod partitioner;
mod producer;
pub mod retry;
mod tls;

pub use address::{AddressError, BrokerAddress};
pub use admin::{Admin, REPLACE_NODE_TIMEOUT_MS};
pub use client::{Client, ClientConfig};
pub use consumer::{CommitHandle, Consumer, ConsumerConfig, ConsumerRecord, SeekTo};
pub use error::{ClientError, ConsumeError, ProduceError};
pub use group::{Assignor, AutoOffsetReset, GroupConfig, RebalanceListener};
pub use limits::UNKNOWN_TOPIC_TTL;
pub use producer::{Delivery, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
pub use retry::RetryPolicy;
pub use tls::ClientTls;
pub use wire::messages::{Acks, ReplaceNodeWait};
