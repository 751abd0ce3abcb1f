//! keel-client: the Rust SDK for Keel (`Client`, `Producer`, `Consumer`, `Admin`) and, under
//! [`wire`], the pure protocol codecs shared with the broker.
//!
//! The client never depends on the broker: the broker depends on `keel_client::wire`. Only the
//! wire layer exists so far; the SDK lands with the broker (DESIGN.md sections 7 and 8).
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
//! builder.append(&Record { timestamp_ms: 1_000, key: None, value: b"hello", headers: &[] })?;
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
//! assert_eq!(batch.records().next().map(|record| record.value), Some(&b"hello"[..]));
//! # Ok::<(), keel_client::wire::WireError>(())
//! ```

pub mod wire;
