//! The partition assignors a group leader runs (pure): Kafka's `RangeAssignor` ("range") and
//! `RoundRobinAssignor` ("roundrobin"), with their exact semantics so that a group mixing Keel
//! and Kafka consumers, led by either, hands out the same partitions.
//!
//! Both take every member's subscribed topics and each topic's partition count, and give every
//! member an entry (possibly empty). Topics whose partition count is unknown (not in the
//! cluster) are skipped, as Kafka skips topics missing from its metadata. Members are ordered
//! by member id (Kafka orders by group instance id first; Keel has no static membership).

use std::collections::{BTreeMap, BTreeSet};

/// Member id -> the topics it subscribed to.
pub type Subscriptions = BTreeMap<String, Vec<String>>;
/// Member id -> topic -> its partitions, ascending.
pub type Assignments = BTreeMap<String, BTreeMap<String, Vec<u32>>>;

/// Kafka's two eager assignors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Assignor {
    Range,
    RoundRobin,
}

impl Assignor {
    /// The protocol name members announce in their joins (Kafka's `name()`).
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
        }
    }

    /// The assignor of a protocol name, if this SDK has it.
    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "range" => Some(Assignor::Range),
            "roundrobin" => Some(Assignor::RoundRobin),
            _ => None,
        }
    }

    pub fn assign(
        self,
        partition_counts: &BTreeMap<String, u32>,
        members: &Subscriptions,
    ) -> Assignments {
        match self {
            Assignor::Range => range(partition_counts, members),
            Assignor::RoundRobin => round_robin(partition_counts, members),
        }
    }
}

fn empty_assignments(members: &Subscriptions) -> Assignments {
    members
        .keys()
        .map(|member| (member.clone(), BTreeMap::new()))
        .collect()
}

/// Kafka's RangeAssignor: per topic, its subscribers sorted by member id share the partitions
/// in contiguous ranges of `n / m`, and the first `n % m` take one more.
///
/// Worked example: 7 partitions, members a, b, c: a gets 0..=2, b 3..=4, c 5..=6.
pub fn range(partition_counts: &BTreeMap<String, u32>, members: &Subscriptions) -> Assignments {
    let mut assignments = empty_assignments(members);
    let mut subscribers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (member, topics) in members {
        // A member listing a topic twice still counts once (Kafka holds subscriptions in sets).
        let topics: BTreeSet<&str> = topics.iter().map(String::as_str).collect();
        for topic in topics {
            subscribers.entry(topic).or_default().push(member);
        }
    }
    for (topic, consumers) in subscribers {
        let Some(&partitions) = partition_counts.get(topic) else {
            continue;
        };
        // BTreeMap iteration already sorted the members by id.
        let count = consumers.len() as u32;
        let per_consumer = partitions / count;
        let extra = partitions % count;
        for (index, member) in consumers.into_iter().enumerate() {
            let index = index as u32;
            let start = per_consumer * index + index.min(extra);
            let length = per_consumer + u32::from(index < extra);
            if length > 0 {
                assignments
                    .entry(member.to_string())
                    .or_default()
                    .insert(topic.to_string(), (start..start + length).collect());
            }
        }
    }
    assignments
}

/// Kafka's RoundRobinAssignor: every subscribed topic's partitions, topics in name order and
/// partitions ascending, dealt one at a time to the members sorted by id in a circle; a member
/// not subscribed to the partition's topic is skipped (the circle moves past it).
///
/// Worked example: topics t0 (3 partitions, members a and b) and t1 (2, member b only):
/// t0/0 a, t0/1 b, t0/2 a, t1/0 b, t1/1 b.
pub fn round_robin(
    partition_counts: &BTreeMap<String, u32>,
    members: &Subscriptions,
) -> Assignments {
    let mut assignments = empty_assignments(members);
    let subscribed: BTreeMap<&str, BTreeSet<&str>> = members
        .iter()
        .map(|(member, topics)| (member.as_str(), topics.iter().map(String::as_str).collect()))
        .collect();
    let all_topics: BTreeSet<&str> = subscribed.values().flatten().copied().collect();
    let circle: Vec<&str> = subscribed.keys().copied().collect();
    let mut next = 0usize;
    for topic in all_topics {
        let Some(&partitions) = partition_counts.get(topic) else {
            continue;
        };
        for partition in 0..partitions {
            // Some member subscribes to `topic` (it came from a subscription), so this finds
            // one within one turn of the circle.
            let Some(turn) = (0..circle.len())
                .find(|turn| subscribed[circle[(next + turn) % circle.len()]].contains(topic))
            else {
                break;
            };
            let member = circle[(next + turn) % circle.len()];
            next = (next + turn + 1) % circle.len();
            assignments
                .entry(member.to_string())
                .or_default()
                .entry(topic.to_string())
                .or_default()
                .push(partition);
        }
    }
    assignments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn members(pairs: &[(&str, &[&str])]) -> Subscriptions {
        pairs
            .iter()
            .map(|(m, topics)| {
                (
                    m.to_string(),
                    topics.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect()
    }

    fn of(assignments: &Assignments, member: &str, topic: &str) -> Vec<u32> {
        assignments[member].get(topic).cloned().unwrap_or_default()
    }

    #[test]
    fn range_worked_example_first_members_take_the_extra_partitions() {
        let members = members(&[("c", &["t"]), ("a", &["t"]), ("b", &["t"])]);
        let result = range(&counts(&[("t", 7)]), &members);
        assert_eq!(of(&result, "a", "t"), [0, 1, 2]);
        assert_eq!(of(&result, "b", "t"), [3, 4]);
        assert_eq!(of(&result, "c", "t"), [5, 6]);
    }

    #[test]
    fn range_is_per_topic_so_the_first_members_get_more_of_every_topic() {
        // Kafka's documented example: t0 and t1 with 3 partitions each, C0 and C1.
        let members = members(&[("C0", &["t0", "t1"]), ("C1", &["t0", "t1"])]);
        let result = range(&counts(&[("t0", 3), ("t1", 3)]), &members);
        assert_eq!(of(&result, "C0", "t0"), [0, 1]);
        assert_eq!(of(&result, "C0", "t1"), [0, 1]);
        assert_eq!(of(&result, "C1", "t0"), [2]);
        assert_eq!(of(&result, "C1", "t1"), [2]);
    }

    #[test]
    fn range_with_more_members_than_partitions_leaves_the_last_empty() {
        let members = members(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let result = range(&counts(&[("t", 2)]), &members);
        assert_eq!(of(&result, "a", "t"), [0]);
        assert_eq!(of(&result, "b", "t"), [1]);
        assert!(result["c"].is_empty());
    }

    #[test]
    fn round_robin_deals_sorted_partitions_to_sorted_members() {
        // Kafka's documented example: C0, C1 on t0 and t1 with 3 partitions each.
        let members = members(&[("C1", &["t0", "t1"]), ("C0", &["t0", "t1"])]);
        let result = round_robin(&counts(&[("t0", 3), ("t1", 3)]), &members);
        assert_eq!(of(&result, "C0", "t0"), [0, 2]);
        assert_eq!(of(&result, "C0", "t1"), [1]);
        assert_eq!(of(&result, "C1", "t0"), [1]);
        assert_eq!(of(&result, "C1", "t1"), [0, 2]);
    }

    #[test]
    fn round_robin_skips_members_not_subscribed() {
        // Kafka's documented example: C0 on t0; C1 on t0, t1; C2 on t0, t1, t2; t0 has 1
        // partition, t1 2, t2 3. C0: t0-0; C1: t1-0; C2: t1-1, t2-0, t2-1, t2-2.
        let members = members(&[
            ("C0", &["t0"]),
            ("C1", &["t0", "t1"]),
            ("C2", &["t0", "t1", "t2"]),
        ]);
        let result = round_robin(&counts(&[("t0", 1), ("t1", 2), ("t2", 3)]), &members);
        assert_eq!(of(&result, "C0", "t0"), [0]);
        assert_eq!(of(&result, "C1", "t1"), [0]);
        assert_eq!(of(&result, "C2", "t1"), [1]);
        assert_eq!(of(&result, "C2", "t2"), [0, 1, 2]);
        assert!(of(&result, "C1", "t0").is_empty());
    }

    #[test]
    fn unknown_topics_are_skipped_and_every_member_gets_an_entry() {
        let members = members(&[("a", &["missing"]), ("b", &["t"])]);
        for assignor in [Assignor::Range, Assignor::RoundRobin] {
            let result = assignor.assign(&counts(&[("t", 2)]), &members);
            assert!(result["a"].is_empty(), "{assignor:?}");
            assert_eq!(of(&result, "b", "t"), [0, 1], "{assignor:?}");
        }
    }

    #[test]
    fn every_partition_goes_to_exactly_one_subscriber() {
        let members = members(&[
            ("m1", &["x", "y"]),
            ("m2", &["y"]),
            ("m3", &["x", "y", "z"]),
            ("m4", &["z"]),
        ]);
        let partition_counts = counts(&[("x", 5), ("y", 8), ("z", 3)]);
        for assignor in [Assignor::Range, Assignor::RoundRobin] {
            let result = assignor.assign(&partition_counts, &members);
            for (topic, &count) in &partition_counts {
                let mut seen: Vec<u32> = Vec::new();
                for (member, topics) in &result {
                    if let Some(partitions) = topics.get(topic) {
                        assert!(members[member].contains(topic), "{assignor:?}");
                        seen.extend(partitions);
                    }
                }
                seen.sort_unstable();
                assert_eq!(seen, (0..count).collect::<Vec<_>>(), "{assignor:?} {topic}");
            }
        }
        assert_eq!(Assignor::from_name("range"), Some(Assignor::Range));
        assert_eq!(
            Assignor::from_name(Assignor::RoundRobin.name()),
            Some(Assignor::RoundRobin)
        );
        assert_eq!(Assignor::from_name("sticky"), None);
    }
}
