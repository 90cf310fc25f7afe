//! The wait before a retry: linear or exponential, capped, optionally with full jitter.
//!
//! Why jitter: when many calls fail at once (a backend restart), retries that all wait
//! the same computed delay arrive together again and fail together again. "Full jitter"
//! (AWS Architecture Blog, "Exponential Backoff and Jitter") draws each wait uniformly
//! from `[0, delay]`, which spreads them out and, for the same cap, does the least work
//! overall.
//!
//! go-grpc-middleware's `BackoffLinear(d)` waits a fixed `d` before every retry; that is
//! [`BackoffKind::Linear`] with `base = max = d`. Its `BackoffExponential(d)` is
//! [`BackoffKind::Exponential`] with base `d` and no cap (`max = Duration::MAX`).

use std::time::Duration;

/// How the wait grows with the retry number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackoffKind {
    /// `base × retry`: 1, 2, 3… times `base`.
    Linear,
    /// `base × 2^(retry − 1)`: 1, 2, 4… times `base`.
    Exponential,
}

/// A backoff schedule (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backoff {
    /// How the wait grows.
    pub kind: BackoffKind,
    /// The wait before the first retry.
    pub base: Duration,
    /// The longest wait, whatever the retry number (applied before jitter).
    pub max: Duration,
    /// Full jitter: draw each wait uniformly from `[0, computed]`.
    pub jitter: bool,
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A duration from nanoseconds that the caller knows fit in a `Duration`.
fn from_nanos(ns: u128) -> Duration {
    let secs = u64::try_from(ns / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it fits in u32.
    Duration::new(secs, (ns % NANOS_PER_SEC) as u32)
}

impl Backoff {
    /// The wait before retry number `retry` (1 = the first retry). Retry 0, the first
    /// attempt itself, waits nothing. Never overflows: a product beyond `max` is `max`.
    pub fn delay(&self, retry: u32) -> Duration {
        if retry == 0 {
            return Duration::ZERO;
        }
        let computed = match self.kind {
            BackoffKind::Linear => self.base.checked_mul(retry),
            BackoffKind::Exponential => {
                // 2^(retry − 1) as u128 exists up to retry 128; beyond that, or when the
                // product overflows, the wait is past any `max`.
                1u128
                    .checked_shl(retry - 1)
                    .and_then(|factor| self.base.as_nanos().checked_mul(factor))
                    .filter(|&ns| ns < self.max.as_nanos())
                    .map(from_nanos)
            }
        };
        let capped = computed.map_or(self.max, |d| d.min(self.max));
        if self.jitter {
            from_nanos(fastrand::u128(0..=capped.as_nanos()))
        } else {
            capped
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn backoff(kind: BackoffKind, base_ms: u64, max_ms: u64) -> Backoff {
        Backoff {
            kind,
            base: Duration::from_millis(base_ms),
            max: Duration::from_millis(max_ms),
            jitter: false,
        }
    }

    fn sequence(b: &Backoff, n: u32) -> Vec<Duration> {
        (1..=n).map(|r| b.delay(r)).collect()
    }

    #[test]
    fn linear_grows_by_base_up_to_max() {
        let b = backoff(BackoffKind::Linear, 100, 350);
        assert_eq!(sequence(&b, 5), [100, 200, 300, 350, 350].map(|n| n * MS));
    }

    #[test]
    fn exponential_doubles_up_to_max() {
        let b = backoff(BackoffKind::Exponential, 100, 1_000);
        assert_eq!(
            sequence(&b, 6),
            [100, 200, 400, 800, 1_000, 1_000].map(|n| n * MS)
        );
    }

    #[test]
    fn fixed_wait_is_linear_with_base_equal_to_max() {
        let b = backoff(BackoffKind::Linear, 250, 250);
        assert_eq!(sequence(&b, 4), [250 * MS; 4]);
    }

    #[test]
    fn retry_zero_waits_nothing() {
        for kind in [BackoffKind::Linear, BackoffKind::Exponential] {
            assert_eq!(backoff(kind, 100, 1_000).delay(0), Duration::ZERO);
        }
    }

    #[test]
    fn large_retry_numbers_do_not_overflow() {
        for kind in [BackoffKind::Linear, BackoffKind::Exponential] {
            let b = backoff(kind, 100, 30_000);
            // Linear reaches the cap at 300; exponential's factor leaves u32 at 33 and
            // u128 at 129.
            for retry in [300, 1_000, u32::MAX].into_iter().chain(match kind {
                BackoffKind::Linear => vec![],
                BackoffKind::Exponential => vec![33, 64, 127, 128, 129],
            }) {
                assert_eq!(
                    b.delay(retry),
                    30 * Duration::from_secs(1),
                    "{kind:?} {retry}"
                );
            }
            let huge = Backoff {
                kind,
                base: Duration::MAX,
                max: Duration::MAX,
                jitter: false,
            };
            assert_eq!(huge.delay(1_000), Duration::MAX);
            let jittered = Backoff {
                jitter: true,
                ..huge
            };
            assert!(jittered.delay(u32::MAX) <= Duration::MAX);
        }
        // Without a practical cap the doubling stays exact while it fits.
        let b = backoff(BackoffKind::Exponential, 1, u64::MAX);
        assert_eq!(b.delay(31), (1 << 30) * MS);
        assert_eq!(b.delay(1_000), b.max);
    }

    #[test]
    fn base_above_max_is_capped() {
        assert_eq!(
            backoff(BackoffKind::Exponential, 500, 200).delay(1),
            200 * MS
        );
        assert_eq!(backoff(BackoffKind::Linear, 500, 200).delay(1), 200 * MS);
    }

    #[test]
    fn jitter_draws_are_spread_within_bounds() {
        let b = Backoff {
            jitter: true,
            ..backoff(BackoffKind::Exponential, 100, 1_000)
        };
        let draws: Vec<Duration> = (0..200).map(|_| b.delay(3)).collect();
        assert!(draws.iter().all(|&d| d <= 400 * MS));
        assert!(draws.iter().any(|&d| d != draws[0]), "jitter should vary");
    }

    fn kind() -> impl Strategy<Value = BackoffKind> {
        prop_oneof![Just(BackoffKind::Linear), Just(BackoffKind::Exponential)]
    }

    proptest! {
        #[test]
        fn jittered_wait_never_exceeds_the_computed_one(
            kind in kind(),
            base_ns in 0u64..10_000_000_000,
            max_ns in 0u64..100_000_000_000,
            retry in 0u32..200,
        ) {
            let plain = Backoff {
                kind,
                base: Duration::from_nanos(base_ns),
                max: Duration::from_nanos(max_ns),
                jitter: false,
            };
            let computed = plain.delay(retry);
            prop_assert!(computed <= plain.max);
            let jittered = Backoff { jitter: true, ..plain }.delay(retry);
            prop_assert!(jittered <= computed);
        }

        #[test]
        fn waits_never_shrink_with_the_retry_number(
            kind in kind(),
            base_ns in 0u64..10_000_000_000,
            max_ns in 0u64..100_000_000_000,
            retry in 0u32..200,
        ) {
            let b = Backoff {
                kind,
                base: Duration::from_nanos(base_ns),
                max: Duration::from_nanos(max_ns),
                jitter: false,
            };
            prop_assert!(b.delay(retry) <= b.delay(retry + 1));
        }
    }
}
