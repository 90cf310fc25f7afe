//! Peak EWMA latency, as in Finagle and Linkerd (`p2c_ewma`).
//!
//! Why *peak*: a plain moving average hides a backend that has just become slow behind
//! many past fast calls, so the balancer keeps feeding it. With peak EWMA an observation
//! above the current estimate replaces it at once (react to trouble immediately), while
//! lower observations pull it down only gradually, weighted by the time since the last
//! update: `next = cur·d + rtt·(1 − d)`, `d = exp(−elapsed/τ)`, τ = 10 s (Linkerd's
//! default). Reads decay the estimate toward zero by the same `d`, so an endpoint that
//! was slow once and then got no traffic becomes attractive again and is re-probed
//! instead of being starved forever.
//!
//! The estimate and its timestamp are two atomics: the update is a compare-and-swap loop
//! on the value (no lock on a call's success path) and the timestamp is raised after it.
//! A reader may briefly pair a new value with the previous timestamp, which only makes
//! that one estimate a little lower; for a load-balancing heuristic that is harmless.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Decay time constant τ (Linkerd's default).
pub(crate) const TAU: Duration = Duration::from_secs(10);

const TAU_NS: f64 = TAU.as_nanos() as f64;

/// A lock-free peak-EWMA latency estimate in nanoseconds.
#[derive(Debug, Default)]
pub(crate) struct PeakEwma {
    /// `f64` bits of the estimate as of `stamp`.
    value: AtomicU64,
    /// Nanoseconds since the endpoint epoch, plus one, of the last update; 0 = never.
    stamp: AtomicU64,
}

fn decay(now_ns: u64, stamp: u64) -> f64 {
    // `stamp` is stored plus one; 0 (never) is handled by the callers.
    let elapsed = now_ns.saturating_sub(stamp - 1);
    (-(elapsed as f64) / TAU_NS).exp()
}

impl PeakEwma {
    /// The estimate at `now_ns` (decayed toward zero since the last update), or `None`
    /// before the first observation.
    pub(crate) fn estimate_ns(&self, now_ns: u64) -> Option<f64> {
        let stamp = self.stamp.load(Ordering::Acquire);
        if stamp == 0 {
            return None;
        }
        let value = f64::from_bits(self.value.load(Ordering::Acquire));
        Some(value * decay(now_ns, stamp))
    }

    /// Records a call's latency. A failed call may raise the estimate but never lowers
    /// it, so an endpoint that fails fast does not look attractive.
    pub(crate) fn observe(&self, rtt: Duration, now_ns: u64, failure: bool) {
        let rtt_ns = rtt.as_nanos() as f64;
        let mut changed = false;
        let _ = self
            .value
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                let stamp = self.stamp.load(Ordering::Acquire);
                if stamp == 0 {
                    changed = true;
                    return Some(rtt_ns.to_bits());
                }
                let d = decay(now_ns, stamp);
                let current = f64::from_bits(bits) * d;
                if rtt_ns > current {
                    changed = true;
                    Some(rtt_ns.to_bits())
                } else if failure {
                    changed = false;
                    None
                } else {
                    changed = true;
                    Some((current * d + rtt_ns * (1.0 - d)).to_bits())
                }
            });
        if changed {
            self.stamp
                .fetch_max(now_ns.saturating_add(1), Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn ms(ns: Option<f64>) -> f64 {
        ns.unwrap_or(f64::NAN) / MS as f64
    }

    #[test]
    fn unobserved_is_none_then_first_observation_sets() {
        let e = PeakEwma::default();
        assert_eq!(e.estimate_ns(0), None);
        e.observe(Duration::from_millis(5), 0, false);
        assert!((ms(e.estimate_ns(0)) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn peak_replaces_at_once_and_low_values_pull_slowly() {
        let e = PeakEwma::default();
        e.observe(Duration::from_millis(5), 0, false);
        e.observe(Duration::from_millis(50), MS, false);
        assert!((ms(e.estimate_ns(MS)) - 50.0).abs() < 1e-9);
        // 1 ms later a fast call barely moves it.
        e.observe(Duration::from_millis(1), 2 * MS, false);
        let v = ms(e.estimate_ns(2 * MS));
        assert!(v > 49.9 && v < 50.0, "{v}");
        // After many τ a low observation dominates.
        let late = 2 * MS + 100 * TAU.as_nanos() as u64;
        e.observe(Duration::from_millis(1), late, false);
        assert!((ms(e.estimate_ns(late)) - 1.0).abs() < 1e-3);
    }

    #[test]
    fn reads_decay_toward_zero() {
        let e = PeakEwma::default();
        e.observe(Duration::from_millis(100), 0, false);
        let one_tau = TAU.as_nanos() as u64;
        let v = ms(e.estimate_ns(one_tau));
        assert!((v - 100.0 / std::f64::consts::E).abs() < 1e-6, "{v}");
    }

    #[test]
    fn failures_never_lower_the_estimate() {
        let e = PeakEwma::default();
        e.observe(Duration::from_millis(100), 0, false);
        e.observe(Duration::from_millis(1), TAU.as_nanos() as u64, true);
        let v = ms(e.estimate_ns(TAU.as_nanos() as u64));
        assert!((v - 100.0 / std::f64::consts::E).abs() < 1e-6, "{v}");
        e.observe(Duration::from_millis(500), TAU.as_nanos() as u64, true);
        assert!((ms(e.estimate_ns(TAU.as_nanos() as u64)) - 500.0).abs() < 1e-9);
    }
}
