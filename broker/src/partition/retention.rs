//! Retention: which log start a partition's leader picks, and when any replica rolls its active
//! segment (docs/OPERATIONS.md "Retention").
//!
//! Only the leader decides; it proposes its decision as a `SetLogStart` command, so every
//! replica compacts at the same index whatever its own segment boundaries are (each deletes the
//! whole segments at or below it). The decision is made on the leader's segments:
//!
//! - a segment goes only whole, oldest first, and only if every entry in it is applied (so
//!   committed): the log start is at most the applied index;
//! - by age: its newest entry's append time (the leader's clock when it was appended, never a
//!   client's timestamp) is older than `retention.ms`. Append times never decrease along the
//!   log (the partition machine clamps them), so the newest entry is the last Data entry;
//! - by size: the segments left after it still hold at least `retention.bytes` (Kafka's rule:
//!   keep at least that much, so at most one segment more);
//! - the active segment may go too (a quiet partition expires): the leader rolls it first, so
//!   the log start never falls inside a segment it still appends to.

use keel_raft::Index;
use keel_storage::SegmentSpan;

use crate::meta::TopicConfig;

/// The leader's decision: compact through `through`, rolling the active segment first when
/// `through` is its last entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStartDecision {
    pub through: Index,
    pub roll_active: bool,
}

/// The new log start the leader proposes, if any. `segments` are oldest first, the last one
/// active; `log_start_index` is the current one (entries at or below it are gone already).
///
/// `newest_append_time_ms` gives a segment's newest append time (`None` if it holds no Data
/// entry: nothing a consumer could miss); it reads the log, so it is asked only for segments
/// that are otherwise deletable, oldest first, and never past the first one kept.
pub fn pick_log_start(
    segments: &[SegmentSpan],
    mut newest_append_time_ms: impl FnMut(&SegmentSpan) -> Option<i64>,
    applied_index: Index,
    log_start_index: Index,
    config: &TopicConfig,
    now_ms: i64,
) -> Option<LogStartDecision> {
    if config.retention_bytes.is_none() && config.retention_ms.is_none() {
        return None;
    }
    let active = segments.last().copied();
    let live: Vec<&SegmentSpan> = segments
        .iter()
        .filter(|span| span.last_index > log_start_index)
        .filter(|span| span.last_index >= span.base_index)
        .collect();
    let mut remaining_bytes: u64 = live.iter().map(|span| span.bytes).sum();
    let mut decision = None;
    for span in live {
        if span.last_index > applied_index {
            break;
        }
        let over_size = config.retention_bytes.is_some_and(|retention_bytes| {
            remaining_bytes.saturating_sub(span.bytes) >= retention_bytes
        });
        // A segment without data (commands, no-ops: a quiet partition's last `SetLogStart`)
        // goes by age only together with a later one that holds data: alone, deleting it would
        // only append another command to delete, once a second, forever.
        let (deletable, counts) = if over_size {
            (true, true)
        } else {
            let newest = newest_append_time_ms(span);
            let expired = config.retention_ms.is_some_and(|retention_ms| {
                newest.is_none_or(|newest| {
                    now_ms.saturating_sub(newest) > i64::try_from(retention_ms).unwrap_or(i64::MAX)
                })
            });
            (expired, newest.is_some())
        };
        if !deletable {
            break;
        }
        remaining_bytes -= span.bytes;
        if counts {
            decision = Some(LogStartDecision {
                through: span.last_index,
                roll_active: Some(*span) == active,
            });
        }
    }
    debug_assert!(decision.is_none_or(|decision| decision.through <= applied_index));
    decision
}

/// Whether a replica should roll its active segment now: it holds data, and its oldest entry
/// (by append time) is older than `segment.ms`, so that once rolled, retention can judge it.
pub fn should_roll(
    active: &SegmentSpan,
    oldest_append_time_ms: Option<i64>,
    config: &TopicConfig,
    now_ms: i64,
) -> bool {
    let (Some(segment_ms), Some(oldest)) = (config.segment_ms, oldest_append_time_ms) else {
        return false;
    };
    active.last_index >= active.base_index
        && now_ms.saturating_sub(oldest) > i64::try_from(segment_ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    /// A segment's span, and (in the tests' log) its newest append time.
    fn segment(
        base_index: Index,
        last_index: Index,
        bytes: u64,
        newest: i64,
    ) -> (SegmentSpan, i64) {
        let span = SegmentSpan {
            base_index,
            last_index,
            bytes,
        };
        (span, newest)
    }

    fn config(retention_bytes: Option<u64>, retention_ms: Option<u64>) -> TopicConfig {
        TopicConfig {
            retention_bytes,
            retention_ms,
            segment_ms: None,
        }
    }

    /// Ten full 1 MiB segments (100 entries each, appended at t = 1000 * segment) and an active
    /// one holding half a MiB.
    fn log() -> Vec<(SegmentSpan, i64)> {
        let mut segments: Vec<(SegmentSpan, i64)> = (0..10)
            .map(|n| segment(n * 100 + 1, n * 100 + 100, MB, 1000 * n as i64))
            .collect();
        segments.push(segment(1001, 1050, MB / 2, 10_000));
        segments
    }

    fn pick(
        applied: Index,
        log_start: Index,
        config: &TopicConfig,
        now_ms: i64,
    ) -> Option<LogStartDecision> {
        let log = log();
        let spans: Vec<SegmentSpan> = log.iter().map(|(span, _)| *span).collect();
        let newest = |wanted: &SegmentSpan| {
            log.iter()
                .find(|(span, _)| span == wanted)
                .map(|(_, newest)| *newest)
        };
        pick_log_start(&spans, newest, applied, log_start, config, now_ms)
    }

    #[test]
    fn by_size_keeps_at_least_the_retention_in_whole_segments() {
        let decision = pick(1050, 0, &config(Some(4 * MB), None), 0);
        // 10.5 MiB held: deleting six leaves 4.5 MiB, a seventh would leave 3.5 MiB.
        assert_eq!(
            decision,
            Some(LogStartDecision {
                through: 600,
                roll_active: false
            })
        );
        // Already there: nothing more.
        assert_eq!(pick(1050, 600, &config(Some(4 * MB), None), 0), None);
    }

    #[test]
    fn by_age_uses_the_newest_append_time_of_each_segment() {
        // Retention 3.5 s at t = 9000: segments whose newest entry is before 5500 go (0..=5).
        let decision = pick(1050, 0, &config(None, Some(3500)), 9000);
        assert_eq!(decision.map(|decision| decision.through), Some(600));
    }

    #[test]
    fn never_past_the_applied_index_nor_backwards() {
        let decision = pick(450, 0, &config(Some(1), None), 0);
        assert_eq!(decision.map(|decision| decision.through), Some(400));
        assert_eq!(pick(1050, 2000, &config(Some(1), None), 0), None);
    }

    #[test]
    fn a_quiet_expired_active_segment_goes_after_a_roll() {
        let decision = pick(1050, 0, &config(None, Some(1)), 1_000_000);
        assert_eq!(
            decision,
            Some(LogStartDecision {
                through: 1050,
                roll_active: true
            })
        );
        // Not applied to its end: the active segment stays, whole.
        let decision = pick(1049, 0, &config(None, Some(1)), 1_000_000);
        assert_eq!(decision.map(|decision| decision.through), Some(1000));
    }

    #[test]
    fn a_segment_without_data_is_never_the_last_one_deleted() {
        let spans = [
            SegmentSpan {
                base_index: 1,
                last_index: 10,
                bytes: MB,
            },
            SegmentSpan {
                base_index: 11,
                last_index: 11,
                bytes: 100,
            },
        ];
        let newest = |span: &SegmentSpan| (span.base_index == 1).then_some(0);
        let by_age = config(None, Some(1));
        // The data segment goes; the command segment after it stays, though "expired".
        let decision = pick_log_start(&spans, newest, 11, 0, &by_age, 1_000);
        assert_eq!(decision.map(|decision| decision.through), Some(10));
        // Once the data is gone, the command segment alone is no reason to compact.
        assert_eq!(pick_log_start(&spans, newest, 11, 10, &by_age, 1_000), None);
    }

    #[test]
    fn unlimited_topics_never_compact() {
        assert_eq!(pick(1050, 0, &TopicConfig::UNLIMITED, i64::MAX), None);
    }

    #[test]
    fn an_old_active_segment_rolls_only_when_it_holds_data() {
        let config = TopicConfig {
            segment_ms: Some(100),
            ..TopicConfig::UNLIMITED
        };
        let active = SegmentSpan {
            base_index: 11,
            last_index: 20,
            bytes: 1000,
        };
        assert!(should_roll(&active, Some(0), &config, 101));
        assert!(!should_roll(&active, Some(0), &config, 100));
        assert!(!should_roll(&active, None, &config, 1000));
        let empty = SegmentSpan {
            base_index: 21,
            last_index: 20,
            bytes: 64,
        };
        assert!(!should_roll(&empty, Some(0), &config, 1000));
    }
}
