//! The SDK's errors. [`ClientError`] is what a request can fail with; [`ProduceError`] and
//! [`ConsumeError`] add what only producers and consumers meet. Each says whether it is
//! retriable: the same operation may succeed later without anyone changing anything (the SDK
//! has usually retried already, within its [`crate::RetryPolicy`]).
//!
//! Errors are `Clone` (one produce failure answers every record of its batch), so causes from
//! other crates are kept as their messages.

use crate::address::AddressError;
use crate::wire::{ErrorCode, TopicNameError, WireError};

/// Why a request, a connection or the client's setup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A bootstrap or advertised address does not parse. Fatal.
    #[error("invalid address: {0}")]
    Address(#[from] AddressError),
    /// A certificate or key file could not be read or used. Fatal.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The address does not resolve, or the QUIC/TLS handshake failed. Retriable (the node may be
    /// restarting); a certificate that does not verify fails the same way every time.
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    /// The connection or stream broke mid-request. Retriable. The request's outcome is unknown.
    #[error("connection to {address} failed: {reason}")]
    Connection { address: String, reason: String },
    /// No answer within the request timeout. Retriable. The request's outcome is unknown.
    #[error("request to {address} timed out after {timeout_ms} ms")]
    Timeout { address: String, timeout_ms: u64 },
    /// The broker answered with an error code; retriable iff [`ErrorCode::is_retriable`].
    #[error("broker error: {0}")]
    Server(ErrorCode),
    /// The broker's answer is not a valid response to the request (bad frame, wrong response
    /// type, a fetch payload that does not parse). Fatal: a bug or a mismatched peer.
    #[error("protocol error from {address}: {reason}")]
    Protocol { address: String, reason: String },
    /// The request itself could not be encoded (e.g. over the frame limit). Fatal.
    #[error("cannot encode request: {0}")]
    Encode(WireError),
    #[error("invalid topic name {name:?}: {source}")]
    InvalidTopicName {
        name: String,
        source: TopicNameError,
    },
    /// The topic is unknown to the cluster map. Fatal (create it first).
    #[error("unknown topic {topic:?}")]
    UnknownTopic { topic: String },
    /// The partition number is not below the topic's partition count. Fatal.
    #[error("topic {topic:?} has {partitions} partitions, no partition {partition}")]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    /// The partition has no leader in the cluster map (election in progress). Retriable.
    #[error("no leader for {topic}/{partition}")]
    NoLeader { topic: String, partition: u32 },
    /// Every attempt failed with a retriable error; `last` is the final one.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        attempts: u32,
        last: Box<ClientError>,
    },
    /// An invalid argument to the SDK (e.g. a zero partition count). Fatal.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// Whether the same operation may succeed later, unchanged. `RetriesExhausted` says no:
    /// the SDK already spent its retry budget; a caller may still start over.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Connection { .. }
            | ClientError::Timeout { .. }
            | ClientError::NoLeader { .. } => true,
            ClientError::Server(code) => code.is_retriable(),
            ClientError::Address(_)
            | ClientError::Tls(_)
            | ClientError::Protocol { .. }
            | ClientError::Encode(_)
            | ClientError::InvalidTopicName { .. }
            | ClientError::UnknownTopic { .. }
            | ClientError::UnknownPartition { .. }
            | ClientError::RetriesExhausted { .. }
            | ClientError::InvalidArgument(_) => false,
        }
    }

    /// The broker's error code, if this error (or the last retried one) carries one.
    pub fn error_code(&self) -> Option<&ErrorCode> {
        match self {
            ClientError::Server(code) => Some(code),
            ClientError::RetriesExhausted { last, .. } => last.error_code(),
            _ => None,
        }
    }

    /// Whether the request may have taken effect although it failed (so a retry may apply it
    /// twice): a lost connection or a timeout after the request was sent.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ClientError::Connection { .. }
                | ClientError::Timeout { .. }
                | ClientError::Server(ErrorCode::Timeout)
        )
    }

    pub(crate) fn protocol(address: impl ToString, reason: impl ToString) -> ClientError {
        ClientError::Protocol {
            address: address.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Why a produced record was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The record can never be sent: over `max_message_bytes`. Fatal.
    #[error("message too large: {0}")]
    MessageTooLarge(WireError),
    /// The producer's buffer holds `max_buffered_bytes` already. Retriable: wait for earlier
    /// sends to complete (or [`crate::Producer::wait_for_capacity`]) and send again.
    #[error("producer buffer full ({buffered_bytes} bytes buffered)")]
    BufferFull { buffered_bytes: u64 },
    /// The record was not acknowledged within `delivery_timeout_ms`. Retriable; the outcome is
    /// unknown (it may have been written).
    #[error("not acknowledged within the delivery timeout of {timeout_ms} ms")]
    DeliveryTimeout { timeout_ms: u64 },
    /// The producer was closed (or its task ended) before the record was acknowledged. Fatal.
    #[error("producer closed")]
    Closed,
}

impl ProduceError {
    pub fn is_retriable(&self) -> bool {
        match self {
            ProduceError::Client(error) => error.is_retriable(),
            ProduceError::BufferFull { .. } | ProduceError::DeliveryTimeout { .. } => true,
            ProduceError::MessageTooLarge(_) | ProduceError::Closed => false,
        }
    }
}

/// Why a consumer could not deliver records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumeError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The position is below the partition's log start (retention removed it). Fatal for the
    /// position: seek somewhere valid.
    #[error("{topic}/{partition}: offset {offset} is below the log start {log_start_offset}")]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        log_start_offset: u64,
    },
    /// A fetched batch failed its checks (CRC, framing). Fatal: the bytes are not trusted.
    #[error("{topic}/{partition}: corrupt batch from the broker: {source}")]
    CorruptBatch {
        topic: String,
        partition: u32,
        source: WireError,
    },
    /// `poll` was called with nothing assigned. Fatal.
    #[error("no partitions assigned")]
    NothingAssigned,
    /// A group call (commit, subscribe) on a consumer that is not a member of a group: not
    /// subscribed, or not yet given a generation by its first `poll`. Fatal for the call.
    #[error("not a member of a consumer group (subscribe, then poll until the group assigns partitions)")]
    NotInGroup,
    /// The coordinator refused a commit because the group rebalanced (`RebalanceInProgress`,
    /// `IllegalGeneration`, `UnknownMemberId`): the partitions may belong to another member
    /// now. The next `poll` rejoins; commit again after it. Not retriable as is.
    #[error("commit refused: the group rebalanced ({code})")]
    CommitFailed { code: ErrorCode },
    /// `assign` after `subscribe` or the reverse: a consumer either names its partitions or
    /// lets a group choose them (Kafka refuses the mix too). Fatal.
    #[error("{0}")]
    InvalidState(&'static str),
}

impl ConsumeError {
    pub fn is_retriable(&self) -> bool {
        match self {
            ConsumeError::Client(error) => error.is_retriable(),
            ConsumeError::OffsetOutOfRange { .. }
            | ConsumeError::CorruptBatch { .. }
            | ConsumeError::NothingAssigned
            | ConsumeError::NotInGroup
            | ConsumeError::CommitFailed { .. }
            | ConsumeError::InvalidState(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriability_follows_the_broker_code_and_the_transport() {
        assert!(ClientError::Server(ErrorCode::Unavailable).is_retriable());
        assert!(!ClientError::Server(ErrorCode::UnknownTopic).is_retriable());
        assert!(ClientError::Timeout {
            address: "a:1".into(),
            timeout_ms: 5
        }
        .is_retriable());
        let exhausted = ClientError::RetriesExhausted {
            attempts: 3,
            last: Box::new(ClientError::Server(ErrorCode::Overloaded)),
        };
        assert!(!exhausted.is_retriable());
        assert_eq!(exhausted.error_code(), Some(&ErrorCode::Overloaded));
        assert!(ProduceError::BufferFull { buffered_bytes: 1 }.is_retriable());
        assert!(!ProduceError::Closed.is_retriable());
        assert!(ConsumeError::Client(ClientError::NoLeader {
            topic: "t".into(),
            partition: 0
        })
        .is_retriable());
    }
}
