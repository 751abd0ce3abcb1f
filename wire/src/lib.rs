//! keel-wire: the formats the SDK and the broker share, so both ends use one codec and neither
//! depends on the other. The codecs are pure: no sockets, no async, no clocks; bytes in, typed
//! values out, and back.
//!
//! - [`record_batch`]: the record batch (Kafka's RecordBatch v2, with its four codecs), built
//!   by producers, checked once by [`RecordBatchView::parse`], then stored and served as the
//!   same bytes; [`record_batch::BatchHeader`] is the only reader of its header.
//! - [`frame`]: `frame_len | version | header_len | header | payload` on a QUIC stream.
//! - [`messages`]: the request and response headers and [`ErrorCode`]; [`groups`]: the
//!   consumer-group requests; [`consumer_protocol`]: Kafka's ConsumerProtocol, the
//!   subscriptions and assignments consumers put in those requests' opaque bytes.
//! - [`limits`], [`topic`]: the size limits, shared deadlines and buffer sizes; topic name rules.
//! - [`quic`]: the QUIC and TLS settings every endpoint shares (the only module that touches a
//!   socket: it binds one).
//!
//! Every decoder is total: any bytes give a value or a [`WireError`], never a panic.
//! docs/WIRE.md specifies every byte.

pub mod consumer_protocol;
pub mod error;
pub mod frame;
pub mod groups;
pub mod limits;
pub mod messages;
pub mod quic;
pub mod record_batch;
pub mod topic;
pub mod varint;

pub use error::WireError;
pub use frame::{Frame, FrameDecoder, CLIENT_ALPN, PROTOCOL_VERSION};
pub use limits::Limits;
pub use messages::{ErrorCode, Request, Response};
pub use record_batch::{ProducerStamp, Record, RecordBatchBuilder, RecordBatchView};
pub use topic::{validate_topic_name, TopicNameError};
