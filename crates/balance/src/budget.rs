//! A retry budget: retries allowed as a share of a route's recent calls.
//!
//! Why: a retry policy alone (N attempts per call) multiplies load by up to N exactly
//! when a backend is struggling, which can keep it down (a retry storm). A budget caps
//! retries at a share `ratio` of the calls made over the last `window` (Finagle's and
//! Linkerd's retry budgets, 10 s by default), so retries are plentiful while failures
//! are rare and dry up when everything fails. A floor of `min_retries` per window keeps
//! retries possible on a quiet route, where a lone failing call would otherwise never
//! have budget.
//!
//! Calls and retries are counted in the same lock-free rolling window as the breaker's
//! outcomes (ten buckets of `window / 10`, see `window.rs`), so both age out together:
//! when a burst's calls leave the window, the retries they paid for leave with them.
//! [`RetryBudget::try_spend`] checks and records a retry with one compare-and-swap, so
//! concurrent callers cannot overspend the last retry.

use std::time::Duration;

use tokio::time::Instant;

use crate::clock::nanos_since;
use crate::window::RollingCounts;

/// The default window a retry budget counts over (Finagle's and Linkerd's 10 s).
pub const RETRY_BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// The default retries allowed per window whatever the traffic. Envoy's retry budget
/// keeps a `min_retry_concurrency` of 3 and Linkerd's a minimum of retries per second,
/// for the same reason: so a lone failing call on a quiet route can still be retried.
pub const RETRY_BUDGET_MIN: u32 = 3;

/// `ratio` is kept in parts per million so the allowance is exact integer arithmetic
/// (0.2 × 100 calls is 20 retries, not 19 after a rounding error).
const PPM: u128 = 1_000_000;

/// A route's retry budget (see the module docs). `Send + Sync`, atomics only.
#[derive(Debug)]
pub struct RetryBudget {
    ratio_ppm: u128,
    min_retries: u32,
    /// Origin of the window's nanosecond timestamps.
    epoch: Instant,
    /// `a` = calls, `b` = retries.
    window: RollingCounts,
}

impl RetryBudget {
    /// A budget of `ratio` retries per call (0.2 = one retry per five calls; above 1.0
    /// allowed, negative or NaN treated as 0) over `window`, and at least `min_retries`
    /// per window.
    pub fn new(ratio: f64, min_retries: u32, window: Duration) -> Self {
        // `as` saturates: NaN → 0, huge → u128::MAX.
        let ratio_ppm = (ratio.max(0.0) * PPM as f64).round() as u128;
        Self {
            ratio_ppm,
            min_retries,
            epoch: Instant::now(),
            window: RollingCounts::new(window),
        }
    }

    fn now_ns(&self) -> u64 {
        nanos_since(self.epoch, Instant::now())
    }

    /// Retries the window allows for `calls` calls.
    fn allowance(&self, calls: u64) -> u128 {
        let share = u128::from(calls).saturating_mul(self.ratio_ppm) / PPM;
        share.max(u128::from(self.min_retries))
    }

    /// Counts a call: once per call, on its first attempt (retries are not calls).
    pub fn record_call(&self) {
        self.window.add(self.now_ns(), 1, 0);
    }

    /// Takes one retry from the budget: true (and the retry is counted) if the retries
    /// in the window are still below `max(min_retries, ratio × calls)`, else false.
    pub fn try_spend(&self) -> bool {
        self.window.try_add_b(self.now_ns(), |calls, retries| {
            u128::from(retries) < self.allowance(calls)
        })
    }

    /// Retries the budget would allow now, for metrics and the admin API.
    pub fn available(&self) -> u64 {
        let (calls, retries) = self.window.sum(self.now_ns());
        let left = self.allowance(calls).saturating_sub(u128::from(retries));
        u64::try_from(left).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn budget_is_send_and_sync() {
        assert_send_sync::<RetryBudget>();
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_is_exact_in_integers() {
        for (ratio, calls, allowed) in [(0.2, 100, 20), (0.57, 100, 57), (0.1, 30, 3)] {
            let b = RetryBudget::new(ratio, 0, RETRY_BUDGET_WINDOW);
            for _ in 0..calls {
                b.record_call();
            }
            assert_eq!(b.available(), allowed, "{ratio} × {calls}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bad_ratios_are_zero_and_big_ones_saturate() {
        let nan = RetryBudget::new(f64::NAN, 1, RETRY_BUDGET_WINDOW);
        let negative = RetryBudget::new(-1.0, 1, RETRY_BUDGET_WINDOW);
        let huge = RetryBudget::new(f64::INFINITY, 1, RETRY_BUDGET_WINDOW);
        for b in [&nan, &negative, &huge] {
            b.record_call();
        }
        assert_eq!(nan.available(), 1);
        assert_eq!(negative.available(), 1);
        assert!(huge.try_spend() && huge.try_spend());
    }
}
