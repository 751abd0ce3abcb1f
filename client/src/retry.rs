//! How the SDK retries: a bounded number of attempts, capped exponential backoff with jitter,
//! and an overall deadline. Pure (the random draw and the attempt number are arguments), so the
//! schedule is unit-tested without clocks.
//!
//! Backoff for attempt `n` (0 = the wait after the first failure), before jitter:
//! `min(initial_backoff_ms * 2^n, max_backoff_ms)`. Jitter is "equal jitter": half of that is
//! fixed, the other half uniform, so clients that failed together do not retry together, and
//! the wait never drops below half the nominal value.
//!
//! Worked example with the defaults (50 ms doubling to 2 s, 10 attempts): nominal waits are
//! 50, 100, 200, 400, 800, 1600, 2000, 2000, 2000 ms between the 10 attempts, 9.15 s in all,
//! so the real total is between 4.6 s and 9.15 s: longer than a Raft election (about 1 s).

use std::hash::{BuildHasher, Hasher};

use crate::address::BrokerAddress;
use crate::error::ClientError;
use crate::limits::{DEFAULT_INITIAL_BACKOFF_MS, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BACKOFF_MS};
use crate::wire::ErrorCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Retry schedule for retriable failures (see [`crate::ClientError::is_retriable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; at least 1.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff_ms: DEFAULT_INITIAL_BACKOFF_MS,
            max_backoff_ms: DEFAULT_MAX_BACKOFF_MS,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        initial_backoff_ms: 0,
        max_backoff_ms: 0,
    };

    /// Whether another attempt may follow attempt number `attempt` (0-based) that just failed.
    pub fn may_retry(&self, attempt: u32) -> bool {
        attempt.saturating_add(1) < self.max_attempts.max(1)
    }

    /// The nominal wait after failed attempt `attempt` (0-based), before jitter.
    pub fn nominal_backoff(&self, attempt: u32) -> Duration {
        let factor = 1u64.checked_shl(attempt.min(63)).unwrap_or(u64::MAX);
        let millis = self
            .initial_backoff_ms
            .saturating_mul(factor)
            .min(self.max_backoff_ms);
        Duration::from_millis(millis)
    }

    /// The wait after failed attempt `attempt`, with `random` (any u64) choosing the jitter:
    /// between half the nominal wait and all of it.
    pub fn backoff(&self, attempt: u32, random: u64) -> Duration {
        let nominal_ms = self.nominal_backoff(attempt).as_millis() as u64;
        let half_ms = nominal_ms / 2;
        let spread_ms = nominal_ms - half_ms;
        let jitter_ms = if spread_ms == 0 {
            0
        } else {
            random % (spread_ms + 1)
        };
        Duration::from_millis(half_ms + jitter_ms)
    }

    /// [`RetryPolicy::backoff`] with a fresh random draw.
    pub fn backoff_now(&self, attempt: u32) -> Duration {
        self.backoff(attempt, random_u64())
    }
}

/// What a request loop does after attempt `attempt` failed with some error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RetryDecision {
    /// Stop: the error is fatal, or the attempts are used up (`RetriesExhausted`).
    GiveUp(ClientError),
    /// Try again after `wait`, at `redirect` if the broker named the leader.
    Retry {
        redirect: Option<BrokerAddress>,
        wait: Duration,
    },
}

/// The retry rule every request loop follows: fatal errors end it; a retriable one is retried
/// while attempts remain; `NotLeader` with a parseable address redirects there, at once the first
/// time in a row (the broker said where to go) and after a backoff when the previous attempt was
/// itself a redirect (leadership is moving: let the election settle).
pub(crate) fn decide(
    policy: &RetryPolicy,
    attempt: u32,
    error: ClientError,
    followed_redirect: bool,
    random: u64,
) -> RetryDecision {
    if !error.is_retriable() {
        return RetryDecision::GiveUp(error);
    }
    if !policy.may_retry(attempt) {
        return RetryDecision::GiveUp(ClientError::RetriesExhausted {
            attempts: attempt.saturating_add(1),
            last: Box::new(error),
        });
    }
    let redirect = match &error {
        ClientError::Server(ErrorCode::NotLeader {
            leader_addr: Some(leader),
        }) => BrokerAddress::parse(leader).ok(),
        _ => None,
    };
    let wait = if redirect.is_some() && !followed_redirect {
        Duration::ZERO
    } else {
        policy.backoff(attempt, random)
    };
    RetryDecision::Retry { redirect, wait }
}

/// A cheap random draw for jitter only: std's randomly keyed hasher over a counter. Not for
/// anything that needs real randomness.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nominal_backoff_doubles_then_caps() {
        let policy = RetryPolicy::default();
        let waits: Vec<u64> = (0..9)
            .map(|attempt| policy.nominal_backoff(attempt).as_millis() as u64)
            .collect();
        assert_eq!(waits, [50, 100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(waits.iter().sum::<u64>(), 9_150, "the module doc's total");
        // Huge attempt numbers saturate instead of overflowing.
        assert_eq!(policy.nominal_backoff(200), Duration::from_millis(2_000));
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_nominal_wait() {
        let policy = RetryPolicy::default();
        for attempt in 0..12 {
            let nominal = policy.nominal_backoff(attempt);
            for random in [0, 1, 7, u64::MAX / 3, u64::MAX] {
                let wait = policy.backoff(attempt, random);
                assert!(wait >= nominal / 2 && wait <= nominal, "{attempt} {random}");
            }
        }
        assert_eq!(policy.backoff(0, 0), Duration::from_millis(25));
        assert_eq!(policy.backoff(0, 25), Duration::from_millis(50));
        assert_eq!(RetryPolicy::NONE.backoff(3, 99), Duration::ZERO);
    }

    fn not_leader(address: Option<&str>) -> ClientError {
        ClientError::Server(ErrorCode::NotLeader {
            leader_addr: address.map(String::from),
        })
    }

    #[test]
    fn fatal_errors_end_the_loop_unchanged() {
        let policy = RetryPolicy::default();
        let error = ClientError::Server(ErrorCode::UnknownTopic);
        assert_eq!(
            decide(&policy, 0, error.clone(), false, 0),
            RetryDecision::GiveUp(error)
        );
    }

    #[test]
    fn a_first_redirect_is_followed_at_once_and_a_second_after_a_backoff() {
        let policy = RetryPolicy::default();
        let leader = BrokerAddress::parse("127.0.0.1:7071").unwrap();
        assert_eq!(
            decide(&policy, 0, not_leader(Some("127.0.0.1:7071")), false, 0),
            RetryDecision::Retry {
                redirect: Some(leader.clone()),
                wait: Duration::ZERO
            }
        );
        assert_eq!(
            decide(&policy, 1, not_leader(Some("127.0.0.1:7071")), true, 0),
            RetryDecision::Retry {
                redirect: Some(leader),
                wait: Duration::from_millis(50)
            }
        );
        // No address, or one that does not parse: refresh and back off.
        for error in [not_leader(None), not_leader(Some("garbage"))] {
            assert_eq!(
                decide(&policy, 0, error, false, 0),
                RetryDecision::Retry {
                    redirect: None,
                    wait: Duration::from_millis(25)
                }
            );
        }
    }

    #[test]
    fn retriable_errors_stop_when_attempts_run_out() {
        let policy = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        };
        let error = ClientError::Server(ErrorCode::Unavailable);
        assert!(matches!(
            decide(&policy, 0, error.clone(), false, 0),
            RetryDecision::Retry { redirect: None, .. }
        ));
        assert_eq!(
            decide(&policy, 1, error.clone(), false, 0),
            RetryDecision::GiveUp(ClientError::RetriesExhausted {
                attempts: 2,
                last: Box::new(error)
            })
        );
    }

    #[test]
    fn attempts_are_bounded() {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(policy.may_retry(0));
        assert!(policy.may_retry(1));
        assert!(!policy.may_retry(2));
        assert!(!RetryPolicy::NONE.may_retry(0));
        let zero = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert!(!zero.may_retry(0), "0 attempts means one try, no retry");
    }
}
