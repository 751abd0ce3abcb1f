//! Kafka's ConsumerProtocol (keel_wire::consumer_protocol) against its properties and against
//! an independent implementation, the `kafka-protocol` crate: no bytes make a decoder panic;
//! every value encoded at any version decodes to itself (minus the fields that version lacks);
//! what kafka-protocol writes Keel reads, and what Keel writes kafka-protocol reads.

use bytes::BytesMut;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as KafkaAssigned;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as KafkaOwned;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use keel_wire::consumer_protocol::{Assignment, Subscription, TopicPartitions, NO_GENERATION_ID};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{1,12}"
}

fn topic_partitions() -> impl Strategy<Value = Vec<TopicPartitions>> {
    prop::collection::vec(
        (name(), prop::collection::vec(0u32..=i32::MAX as u32, 0..6))
            .prop_map(|(topic, partitions)| TopicPartitions { topic, partitions }),
        0..5,
    )
}

fn user_data() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop::collection::vec(any::<u8>(), 0..20))
}

fn subscription() -> impl Strategy<Value = Subscription> {
    (
        0i16..=3,
        prop::collection::vec(name(), 0..5),
        user_data(),
        topic_partitions(),
        any::<i32>(),
        prop::option::of(name()),
    )
        .prop_map(
            |(version, topics, user_data, owned, generation_id, rack_id)| Subscription {
                version,
                topics,
                user_data,
                // Only what the version carries: the rest decodes as the defaults.
                owned_partitions: if version >= 1 { owned } else { Vec::new() },
                generation_id: if version >= 2 {
                    generation_id
                } else {
                    NO_GENERATION_ID
                },
                rack_id: if version >= 3 { rack_id } else { None },
            },
        )
}

fn assignment() -> impl Strategy<Value = Assignment> {
    (0i16..=3, topic_partitions(), user_data()).prop_map(|(version, partitions, user_data)| {
        Assignment {
            version,
            partitions,
            user_data,
        }
    })
}

fn kafka_str(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn to_kafka_subscription(subscription: &Subscription) -> ConsumerProtocolSubscription {
    ConsumerProtocolSubscription::default()
        .with_topics(subscription.topics.iter().map(|t| kafka_str(t)).collect())
        .with_user_data(subscription.user_data.clone().map(Into::into))
        .with_owned_partitions(
            subscription
                .owned_partitions
                .iter()
                .map(|entry| {
                    KafkaOwned::default()
                        .with_topic(TopicName(kafka_str(&entry.topic)))
                        .with_partitions(entry.partitions.iter().map(|&p| p as i32).collect())
                })
                .collect(),
        )
        .with_generation_id(subscription.generation_id)
        .with_rack_id(subscription.rack_id.as_deref().map(kafka_str))
}

fn to_kafka_assignment(assignment: &Assignment) -> ConsumerProtocolAssignment {
    ConsumerProtocolAssignment::default()
        .with_assigned_partitions(
            assignment
                .partitions
                .iter()
                .map(|entry| {
                    KafkaAssigned::default()
                        .with_topic(TopicName(kafka_str(&entry.topic)))
                        .with_partitions(entry.partitions.iter().map(|&p| p as i32).collect())
                })
                .collect(),
        )
        .with_user_data(assignment.user_data.clone().map(Into::into))
}

/// Kafka's `ConsumerProtocol.serialize*`: the version, then the message at that version.
fn kafka_bytes(version: i16, message: &impl Encodable) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.extend_from_slice(&version.to_be_bytes());
    message.encode(&mut out, version).unwrap();
    out.to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = Subscription::decode(&bytes);
        let _ = Assignment::decode(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_valid_prefixes_and_flips(
        subscription in subscription(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let bytes = subscription.encode().unwrap();
        let _ = Subscription::decode(&bytes[..cut.index(bytes.len() + 1)]);
        let mut flipped = bytes.clone();
        let at = flip.index(flipped.len());
        flipped[at] ^= 1 << bit;
        let _ = Subscription::decode(&flipped);
        let _ = Assignment::decode(&flipped);
    }

    #[test]
    fn subscriptions_round_trip_and_match_kafka(subscription in subscription()) {
        let bytes = subscription.encode().unwrap();
        prop_assert_eq!(&Subscription::decode(&bytes).unwrap(), &subscription);
        let kafka = to_kafka_subscription(&subscription);
        prop_assert_eq!(&kafka_bytes(subscription.version, &kafka), &bytes);
        let mut body = bytes::Bytes::copy_from_slice(&bytes[2..]);
        let decoded = ConsumerProtocolSubscription::decode(&mut body, subscription.version).unwrap();
        prop_assert_eq!(decoded, kafka);
    }

    #[test]
    fn assignments_round_trip_and_match_kafka(assignment in assignment()) {
        let bytes = assignment.encode().unwrap();
        prop_assert_eq!(&Assignment::decode(&bytes).unwrap(), &assignment);
        let kafka = to_kafka_assignment(&assignment);
        prop_assert_eq!(&kafka_bytes(assignment.version, &kafka), &bytes);
        let mut body = bytes::Bytes::copy_from_slice(&bytes[2..]);
        let decoded = ConsumerProtocolAssignment::decode(&mut body, assignment.version).unwrap();
        prop_assert_eq!(decoded, kafka);
    }
}
