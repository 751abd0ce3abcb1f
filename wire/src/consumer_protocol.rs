//! Kafka's ConsumerProtocol: the bytes consumers put in a group's protocol metadata (their
//! [`Subscription`]) and in the assignments the leader hands out ([`Assignment`]). The broker
//! never reads them ([`crate::groups`]); only members do, so a Keel consumer and a Kafka
//! consumer of the same group (through a Kafka front end) understand each other.
//!
//! Layout (big-endian, Kafka's `ConsumerProtocolSubscription` / `ConsumerProtocolAssignment`
//! schemas, non-flexible): an `i16` version, then the fields of that version. Strings are an
//! `i16` length and UTF-8 bytes (nullable ones use -1 for null); bytes are an `i32` length (-1
//! null); arrays an `i32` count (never null here). A version newer than this module knows is
//! read as the newest it knows, ignoring what follows, as Kafka's `ConsumerProtocol` does so
//! that old members read new members' metadata; trailing bytes are ignored for the same reason.
//! docs/WIRE.md "Consumer groups".
//!
//! Decoders are total: any bytes give a value or a [`ConsumerProtocolError`], never a panic, and
//! never allocate more than the input can fill (a declared count is only trusted as far as the
//! bytes go).

/// The newest subscription version this module reads (v3 adds the rack id).
pub const SUBSCRIPTION_MAX_VERSION: i16 = 3;
/// The version [`Subscription::encode`] writes: v1 carries the owned partitions, and every
/// Kafka consumer since 2.4 reads it (v2's generation and v3's rack are unused by eager
/// assignors, the only kind Keel's SDK runs).
pub const SUBSCRIPTION_ENCODE_VERSION: i16 = 1;
/// The newest assignment version this module reads (v0..v3 share one layout).
pub const ASSIGNMENT_MAX_VERSION: i16 = 3;
/// The version [`Assignment::encode`] writes: all versions have the same fields, and v0 is the
/// one every Kafka consumer reads.
pub const ASSIGNMENT_ENCODE_VERSION: i16 = 0;

/// Kafka's default generation in a subscription that carries none (versions before 2).
pub const NO_GENERATION_ID: i32 = -1;

/// Partitions of one topic, as both messages list them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartitions {
    pub topic: String,
    pub partitions: Vec<u32>,
}

/// A member's protocol metadata: what it wants to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The version it was decoded from (or is to be encoded at).
    pub version: i16,
    pub topics: Vec<String>,
    pub user_data: Option<Vec<u8>>,
    /// v1+: the partitions the member owns now (cooperative assignors use them).
    pub owned_partitions: Vec<TopicPartitions>,
    /// v2+: the member's generation, [`NO_GENERATION_ID`] when absent.
    pub generation_id: i32,
    /// v3: the member's rack.
    pub rack_id: Option<String>,
}

impl Subscription {
    /// A subscription to `topics` with nothing else, at [`SUBSCRIPTION_ENCODE_VERSION`].
    pub fn new(topics: Vec<String>) -> Subscription {
        Subscription {
            version: SUBSCRIPTION_ENCODE_VERSION,
            topics,
            user_data: None,
            owned_partitions: Vec::new(),
            generation_id: NO_GENERATION_ID,
            rack_id: None,
        }
    }

    /// Encodes at `self.version` (0..=3); fields newer than it are left out.
    pub fn encode(&self) -> Result<Vec<u8>, ConsumerProtocolError> {
        let version = self.version;
        if !(0..=SUBSCRIPTION_MAX_VERSION).contains(&version) {
            return Err(ConsumerProtocolError::UnsupportedVersion { version });
        }
        let mut out = Vec::new();
        out.extend_from_slice(&version.to_be_bytes());
        put_array(&mut out, "topics", &self.topics, |out, topic| {
            put_string(out, "topic", topic)
        })?;
        put_nullable_bytes(&mut out, "user_data", self.user_data.as_deref())?;
        if version >= 1 {
            put_topic_partitions(&mut out, &self.owned_partitions)?;
        }
        if version >= 2 {
            out.extend_from_slice(&self.generation_id.to_be_bytes());
        }
        if version >= 3 {
            put_nullable_string(&mut out, "rack_id", self.rack_id.as_deref())?;
        }
        Ok(out)
    }

    /// Decodes any version from 0 (newer ones as v3, the rest ignored).
    pub fn decode(bytes: &[u8]) -> Result<Subscription, ConsumerProtocolError> {
        let mut reader = Reader { bytes, at: 0 };
        let version = reader.i16("version")?;
        if version < 0 {
            return Err(ConsumerProtocolError::UnsupportedVersion { version });
        }
        let read_as = version.min(SUBSCRIPTION_MAX_VERSION);
        let topics = reader.array("topics", 2, |reader| reader.string("topic"))?;
        let user_data = reader.nullable_bytes("user_data")?;
        let owned_partitions = if read_as >= 1 {
            reader.topic_partitions("owned_partitions")?
        } else {
            Vec::new()
        };
        let generation_id = if read_as >= 2 {
            reader.i32("generation_id")?
        } else {
            NO_GENERATION_ID
        };
        let rack_id = if read_as >= 3 {
            reader.nullable_string("rack_id")?
        } else {
            None
        };
        Ok(Subscription {
            version,
            topics,
            user_data,
            owned_partitions,
            generation_id,
            rack_id,
        })
    }
}

/// What the leader gives one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The version it was decoded from (or is to be encoded at).
    pub version: i16,
    pub partitions: Vec<TopicPartitions>,
    pub user_data: Option<Vec<u8>>,
}

impl Assignment {
    /// An assignment of `partitions` at [`ASSIGNMENT_ENCODE_VERSION`].
    pub fn new(partitions: Vec<TopicPartitions>) -> Assignment {
        Assignment {
            version: ASSIGNMENT_ENCODE_VERSION,
            partitions,
            user_data: None,
        }
    }

    /// Encodes at `self.version` (0..=3; all share one layout).
    pub fn encode(&self) -> Result<Vec<u8>, ConsumerProtocolError> {
        let version = self.version;
        if !(0..=ASSIGNMENT_MAX_VERSION).contains(&version) {
            return Err(ConsumerProtocolError::UnsupportedVersion { version });
        }
        let mut out = Vec::new();
        out.extend_from_slice(&version.to_be_bytes());
        put_topic_partitions(&mut out, &self.partitions)?;
        put_nullable_bytes(&mut out, "user_data", self.user_data.as_deref())?;
        Ok(out)
    }

    /// Decodes any version from 0. Empty bytes are an empty assignment: the coordinator gives
    /// them to members the leader left out (Kafka's consumer treats them the same way).
    pub fn decode(bytes: &[u8]) -> Result<Assignment, ConsumerProtocolError> {
        if bytes.is_empty() {
            return Ok(Assignment::new(Vec::new()));
        }
        let mut reader = Reader { bytes, at: 0 };
        let version = reader.i16("version")?;
        if version < 0 {
            return Err(ConsumerProtocolError::UnsupportedVersion { version });
        }
        let partitions = reader.topic_partitions("assigned_partitions")?;
        let user_data = reader.nullable_bytes("user_data")?;
        Ok(Assignment {
            version,
            partitions,
            user_data,
        })
    }
}

/// Why bytes are not a subscription or assignment, or why a value cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumerProtocolError {
    #[error("the bytes end inside {field}")]
    Truncated { field: &'static str },
    /// Negative versions are never valid; encoding takes only the versions this module knows.
    #[error("unsupported consumer protocol version {version}")]
    UnsupportedVersion { version: i16 },
    /// A length or count below its null value (-1), or a null where the schema allows none.
    #[error("invalid length {length} for {field}")]
    InvalidLength { field: &'static str, length: i64 },
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 { field: &'static str },
    /// Kafka's partitions are non-negative `i32`s.
    #[error("negative partition {partition}")]
    NegativePartition { partition: i32 },
    /// A value too long for its length field (`i16` strings, `i32` bytes and arrays), or a
    /// partition above `i32::MAX`.
    #[error("{field} too large to encode ({length})")]
    TooLarge { field: &'static str, length: u64 },
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, len: usize) -> Result<&'a [u8], ConsumerProtocolError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(ConsumerProtocolError::Truncated { field })?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, ConsumerProtocolError> {
        let bytes = self.take(field, 2)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, ConsumerProtocolError> {
        let bytes = self.take(field, 4)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn utf8(&mut self, field: &'static str, len: usize) -> Result<String, ConsumerProtocolError> {
        let bytes = self.take(field, len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ConsumerProtocolError::InvalidUtf8 { field })
    }

    fn string(&mut self, field: &'static str) -> Result<String, ConsumerProtocolError> {
        let len = self.i16(field)?;
        let len = usize::try_from(len).map_err(|_| ConsumerProtocolError::InvalidLength {
            field,
            length: i64::from(len),
        })?;
        self.utf8(field, len)
    }

    fn nullable_string(
        &mut self,
        field: &'static str,
    ) -> Result<Option<String>, ConsumerProtocolError> {
        match self.i16(field)? {
            -1 => Ok(None),
            len if len < 0 => Err(ConsumerProtocolError::InvalidLength {
                field,
                length: i64::from(len),
            }),
            len => self.utf8(field, len as usize).map(Some),
        }
    }

    fn nullable_bytes(
        &mut self,
        field: &'static str,
    ) -> Result<Option<Vec<u8>>, ConsumerProtocolError> {
        match self.i32(field)? {
            -1 => Ok(None),
            len if len < 0 => Err(ConsumerProtocolError::InvalidLength {
                field,
                length: i64::from(len),
            }),
            len => Ok(Some(self.take(field, len as usize)?.to_vec())),
        }
    }

    /// A non-nullable array whose elements each take at least `min_element_bytes`: the
    /// capacity reserved up front is what the remaining bytes could hold, never the count a
    /// peer declares.
    fn array<T>(
        &mut self,
        field: &'static str,
        min_element_bytes: usize,
        mut element: impl FnMut(&mut Self) -> Result<T, ConsumerProtocolError>,
    ) -> Result<Vec<T>, ConsumerProtocolError> {
        let count = self.i32(field)?;
        let count = usize::try_from(count).map_err(|_| ConsumerProtocolError::InvalidLength {
            field,
            length: i64::from(count),
        })?;
        let mut items = Vec::with_capacity(count.min(self.remaining() / min_element_bytes));
        for _ in 0..count {
            items.push(element(self)?);
        }
        Ok(items)
    }

    fn topic_partitions(
        &mut self,
        field: &'static str,
    ) -> Result<Vec<TopicPartitions>, ConsumerProtocolError> {
        // A topic entry is at least a string length and an array count: 6 bytes.
        self.array(field, 6, |reader| {
            let topic = reader.string("topic")?;
            let partitions = reader.array("partitions", 4, |reader| {
                let partition = reader.i32("partition")?;
                u32::try_from(partition)
                    .map_err(|_| ConsumerProtocolError::NegativePartition { partition })
            })?;
            Ok(TopicPartitions { topic, partitions })
        })
    }
}

fn too_large(field: &'static str, length: usize) -> ConsumerProtocolError {
    ConsumerProtocolError::TooLarge {
        field,
        length: length as u64,
    }
}

fn put_string(
    out: &mut Vec<u8>,
    field: &'static str,
    text: &str,
) -> Result<(), ConsumerProtocolError> {
    let len = i16::try_from(text.len()).map_err(|_| too_large(field, text.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn put_nullable_string(
    out: &mut Vec<u8>,
    field: &'static str,
    text: Option<&str>,
) -> Result<(), ConsumerProtocolError> {
    match text {
        None => {
            out.extend_from_slice(&(-1i16).to_be_bytes());
            Ok(())
        }
        Some(text) => put_string(out, field, text),
    }
}

fn put_nullable_bytes(
    out: &mut Vec<u8>,
    field: &'static str,
    bytes: Option<&[u8]>,
) -> Result<(), ConsumerProtocolError> {
    match bytes {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(bytes) => {
            let len = i32::try_from(bytes.len()).map_err(|_| too_large(field, bytes.len()))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
    Ok(())
}

fn put_array<T>(
    out: &mut Vec<u8>,
    field: &'static str,
    items: &[T],
    mut element: impl FnMut(&mut Vec<u8>, &T) -> Result<(), ConsumerProtocolError>,
) -> Result<(), ConsumerProtocolError> {
    let count = i32::try_from(items.len()).map_err(|_| too_large(field, items.len()))?;
    out.extend_from_slice(&count.to_be_bytes());
    for item in items {
        element(out, item)?;
    }
    Ok(())
}

fn put_topic_partitions(
    out: &mut Vec<u8>,
    topics: &[TopicPartitions],
) -> Result<(), ConsumerProtocolError> {
    put_array(out, "topic_partitions", topics, |out, entry| {
        put_string(out, "topic", &entry.topic)?;
        put_array(out, "partitions", &entry.partitions, |out, &partition| {
            let partition =
                i32::try_from(partition).map_err(|_| too_large("partition", partition as usize))?;
            out.extend_from_slice(&partition.to_be_bytes());
            Ok(())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v0_subscription_byte_for_byte() {
        let subscription = Subscription {
            version: 0,
            ..Subscription::new(vec!["ab".into()])
        };
        let bytes = subscription.encode().unwrap();
        assert_eq!(
            bytes,
            [0, 0, 0, 0, 0, 1, 0, 2, b'a', b'b', 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(Subscription::decode(&bytes).unwrap(), subscription);
    }

    #[test]
    fn a_v1_subscription_carries_owned_partitions() {
        let subscription = Subscription {
            owned_partitions: vec![TopicPartitions {
                topic: "t".into(),
                partitions: vec![0, 2],
            }],
            user_data: Some(vec![7]),
            ..Subscription::new(vec!["t".into()])
        };
        let bytes = subscription.encode().unwrap();
        assert_eq!(&bytes[..2], &[0, 1]);
        assert_eq!(Subscription::decode(&bytes).unwrap(), subscription);
    }

    #[test]
    fn a_newer_version_is_read_as_v3_and_its_extra_fields_are_ignored() {
        let mut subscription = Subscription {
            version: 3,
            generation_id: 12,
            rack_id: Some("r1".into()),
            ..Subscription::new(vec!["t".into()])
        };
        let mut bytes = subscription.encode().unwrap();
        bytes[..2].copy_from_slice(&9i16.to_be_bytes());
        bytes.extend_from_slice(b"a field of version 9");
        subscription.version = 9;
        assert_eq!(Subscription::decode(&bytes).unwrap(), subscription);
    }

    #[test]
    fn an_assignment_round_trips_and_empty_bytes_are_no_partitions() {
        let assignment = Assignment::new(vec![TopicPartitions {
            topic: "orders".into(),
            partitions: vec![1, 3, 5],
        }]);
        let bytes = assignment.encode().unwrap();
        assert_eq!(Assignment::decode(&bytes).unwrap(), assignment);
        assert_eq!(Assignment::decode(&[]).unwrap().partitions, Vec::new());
    }

    #[test]
    fn bad_bytes_are_typed_errors() {
        assert_eq!(
            Subscription::decode(&[0]),
            Err(ConsumerProtocolError::Truncated { field: "version" })
        );
        assert_eq!(
            Subscription::decode(&[0xff, 0xfe]),
            Err(ConsumerProtocolError::UnsupportedVersion { version: -2 })
        );
        // A count of 2^31-1 topics with nothing after it: truncated, and nothing huge reserved.
        assert_eq!(
            Subscription::decode(&[0, 0, 0x7f, 0xff, 0xff, 0xff]),
            Err(ConsumerProtocolError::Truncated { field: "topic" })
        );
        assert_eq!(
            Subscription::decode(&[0, 0, 0xff, 0xff, 0xff, 0xff]),
            Err(ConsumerProtocolError::InvalidLength {
                field: "topics",
                length: -1
            })
        );
        let negative_partition = [
            0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff,
        ];
        assert_eq!(
            Assignment::decode(&negative_partition),
            Err(ConsumerProtocolError::NegativePartition { partition: -1 })
        );
        let bad_utf8 = [0, 0, 0, 0, 0, 1, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            Subscription::decode(&bad_utf8),
            Err(ConsumerProtocolError::InvalidUtf8 { field: "topic" })
        );
        let unknown = Subscription {
            version: 4,
            ..Subscription::new(Vec::new())
        };
        assert_eq!(
            unknown.encode(),
            Err(ConsumerProtocolError::UnsupportedVersion { version: 4 })
        );
    }
}
