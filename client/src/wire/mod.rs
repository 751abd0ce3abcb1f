//! The client protocol, pure: no sockets, no async, no clocks. Bytes in, typed values out, and
//! back. The broker depends on this module (DESIGN.md 1), so both ends share one codec.
//!
//! - [`record_batch`]: the record batch of DESIGN.md 4, built by producers, checked once by
//!   [`RecordBatchView::parse`], then stored and served as the same bytes.
//! - [`frame`]: `frame_len | version | header_len | header | payload` on a QUIC stream.
//! - [`messages`]: the request and response headers and [`ErrorCode`].
//! - [`limits`], [`topic`]: the size limits and topic name rules of DESIGN.md 4.
//!
//! Every decoder is total (STYLE.md rule 3): any bytes give a value or a [`WireError`], never a
//! panic. docs/WIRE.md specifies every byte.

pub mod error;
pub mod frame;
pub mod limits;
pub mod messages;
pub mod record_batch;
pub mod topic;
pub mod varint;

pub use error::WireError;
pub use frame::{Frame, FrameDecoder, CLIENT_ALPN, PROTOCOL_VERSION};
pub use limits::Limits;
pub use messages::{ErrorCode, Request, Response};
pub use record_batch::{ProducerStamp, Record, RecordBatchBuilder, RecordBatchView};
pub use topic::{validate_topic_name, TopicNameError};
