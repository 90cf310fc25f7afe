//! Slow start: a newly added (or newly healthy) endpoint's share of traffic ramps up
//! over a window instead of jumping to full weight.
//!
//! Why: a backend that just started has cold caches, an unwarmed JIT and empty
//! connection pools; sent its full share at once, it can fail or time out and be ejected
//! again (NGINX's `slow_start`, Envoy's `slow_start_config`). The factor multiplies the
//! endpoint's weight.
//!
//! The ramp is linear from [`SLOW_START_FLOOR`] to 1.0. The floor is 0.1, Envoy's
//! default `min_weight_percent` (10 %): starting at zero would give a new endpoint no
//! traffic at all for the first moments (a weighted picker rounds a tiny share to
//! nothing), so it would not warm up early in the window; 10 % warms it without
//! overloading it. Envoy computes `max(10 %, t / window)` (flat for the first tenth of
//! the window); this ramp interpolates `floor + (1 − floor) · t / window` instead, so
//! the share grows from the first instant.

use std::time::Duration;

/// The factor at the start of the ramp (Envoy's default `min_weight_percent`, 10 %), so
/// an endpoint in slow start is never starved.
pub const SLOW_START_FLOOR: f64 = 0.1;

/// The weight factor for an endpoint that entered slow start `elapsed` ago, ramping
/// linearly from [`SLOW_START_FLOOR`] to 1.0 over `window`: 1.0 once `elapsed >= window`,
/// and always 1.0 when `window` is zero (slow start off).
pub fn slow_start_factor(elapsed: Duration, window: Duration) -> f64 {
    if window.is_zero() || elapsed >= window {
        return 1.0;
    }
    let progress = elapsed.as_secs_f64() / window.as_secs_f64();
    (SLOW_START_FLOOR + (1.0 - SLOW_START_FLOOR) * progress).min(1.0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn ramps_linearly_from_the_floor_to_one() {
        let w = 10 * SECOND;
        assert!(close(slow_start_factor(Duration::ZERO, w), 0.1));
        assert!(close(slow_start_factor(5 * SECOND, w), 0.55));
        assert!(close(slow_start_factor(9 * SECOND, w), 0.91));
        assert_eq!(slow_start_factor(w, w), 1.0);
        assert_eq!(slow_start_factor(20 * SECOND, w), 1.0);
    }

    #[test]
    fn a_zero_window_means_full_weight() {
        assert_eq!(slow_start_factor(Duration::ZERO, Duration::ZERO), 1.0);
        assert_eq!(slow_start_factor(SECOND, Duration::ZERO), 1.0);
    }

    #[test]
    fn extreme_durations_stay_in_range() {
        let f = slow_start_factor(Duration::from_nanos(1), Duration::MAX);
        assert!((SLOW_START_FLOOR..=1.0).contains(&f));
        let f = slow_start_factor(Duration::MAX - Duration::from_nanos(1), Duration::MAX);
        assert!((SLOW_START_FLOOR..=1.0).contains(&f));
    }

    proptest! {
        #[test]
        fn never_decreases_and_stays_between_floor_and_one(
            a in 0u64..20_000_000_000,
            b in 0u64..20_000_000_000,
            window in 0u64..10_000_000_000,
        ) {
            let (lo, hi) = (a.min(b), a.max(b));
            let w = Duration::from_nanos(window);
            let f_lo = slow_start_factor(Duration::from_nanos(lo), w);
            let f_hi = slow_start_factor(Duration::from_nanos(hi), w);
            prop_assert!(f_lo <= f_hi, "{lo} ns → {f_lo}, {hi} ns → {f_hi}");
            prop_assert!((SLOW_START_FLOOR..=1.0).contains(&f_lo));
            prop_assert!((SLOW_START_FLOOR..=1.0).contains(&f_hi));
        }
    }
}
