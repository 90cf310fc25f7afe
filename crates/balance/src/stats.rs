//! Lock-free call statistics: counts per gRPC status code and a latency histogram, kept in
//! atomics so that the hot path pays a few relaxed `fetch_add`s per call and never a lock.
//!
//! The admin API reads them at scrape time ([`CodeCounts::snapshot`],
//! [`LatencyHistogram::snapshot`]); rates and percentiles over a recent window come from
//! the difference of two snapshots ([`HistogramSnapshot::since`]), which is how the
//! dashboard and `rpcgate status` show calls/s and p99 without a second set of counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds (the last, implicit bucket is `+Inf`).
///
/// From 0.5 ms (a call on loopback) to 60 s (a long unary call); the steps are 1-2.5-5 per
/// decade as in Prometheus' own defaults, with the low end extended because a proxy's
/// calls are often sub-millisecond.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The bucket bounds in nanoseconds, for the hot path's comparison.
const BUCKET_NANOS: [u64; 16] = {
    let mut out = [0u64; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = (LATENCY_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    out
};

/// Slots in a [`CodeCounts`]: the 17 gRPC codes and one for "no gRPC status".
pub const CODE_SLOTS: usize = 18;

/// The slot of a call that ended without a gRPC status (plain HTTP).
pub const NO_CODE: usize = 17;

/// Calls counted by their final gRPC status code.
#[derive(Debug, Default)]
pub struct CodeCounts([AtomicU64; CODE_SLOTS]);

impl CodeCounts {
    /// Counts one call that ended with `code` (`None`: no gRPC status). Codes above 16
    /// (not defined by gRPC) count as UNKNOWN (2), as gRPC clients read them.
    pub fn record(&self, code: Option<u32>) {
        let slot = match code.map(usize::try_from) {
            Some(Ok(code)) if code < NO_CODE => code,
            Some(_) => 2,
            None => NO_CODE,
        };
        self.0[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now, indexed by code ([`NO_CODE`] last).
    pub fn snapshot(&self) -> [u64; CODE_SLOTS] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// A latency histogram over [`LATENCY_BUCKETS`], plus the sum of all observations.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Non-cumulative counts per bucket; the last is `+Inf`.
    buckets: [AtomicU64; 17],
    /// Sum of the observations in nanoseconds (wraps after 584 years of latency).
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn observe(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts at one moment; subtract two for a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Non-cumulative counts per bucket of [`LATENCY_BUCKETS`], then `+Inf`.
    pub buckets: [u64; 17],
    /// Sum of the observations in nanoseconds.
    pub sum_nanos: u64,
}

impl HistogramSnapshot {
    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Sum of the observations in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }

    /// What was observed after `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
            sum_nanos: self.sum_nanos.saturating_sub(earlier.sum_nanos),
        }
    }

    /// Adds another histogram's counts (to aggregate endpoints or methods).
    pub fn add(&mut self, other: &HistogramSnapshot) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum_nanos = self.sum_nanos.wrapping_add(other.sum_nanos);
    }

    /// `(upper bound, count in that bucket alone)`, `+Inf` last: what
    /// `prometheus-client`'s histogram encoder takes (it writes the cumulative counts).
    pub fn per_bucket(&self) -> Vec<(f64, u64)> {
        LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets)
            .collect()
    }

    /// The `q` quantile (0..=1) in seconds, interpolated linearly inside its bucket as
    /// Prometheus' `histogram_quantile` does; `None` without observations. A quantile in
    /// the `+Inf` bucket reads as the largest finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = LATENCY_BUCKETS.get(i) else {
                    return Some(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1]);
                };
                let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some(lower + (upper - lower) * within);
            }
            below += n;
        }
        Some(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1])
    }
}

/// What an endpoint's answered attempts looked like: counts per final gRPC code and the
/// latency from the attempt's start to the call's end.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Attempts by final gRPC code.
    pub codes: CodeCounts,
    /// Attempt latency.
    pub latency: LatencyHistogram,
}

impl Outcomes {
    /// Records one attempt's end.
    pub fn record(&self, code: Option<u32>, latency: Duration) {
        self.codes.record(code);
        self.latency.observe(latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_bucket_whose_bound_is_not_below_them() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(500)); // exactly 0.5 ms: first bucket (le=0.0005)
        h.observe(Duration::from_micros(501));
        h.observe(Duration::from_secs(120)); // beyond 60 s: +Inf
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[16], 1);
        assert_eq!(s.count(), 3);
        let buckets = s.per_bucket();
        assert_eq!(buckets.len(), 17);
        assert_eq!(buckets[0], (0.0005, 1));
        assert_eq!(buckets[1], (0.001, 1));
        assert_eq!(buckets[16], (f64::INFINITY, 1));
        assert!((s.sum_seconds() - 120.001001).abs() < 1e-9);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let h = LatencyHistogram::default();
        for _ in 0..99 {
            h.observe(Duration::from_millis(2)); // bucket (1 ms, 2.5 ms]
        }
        h.observe(Duration::from_millis(200)); // bucket (100 ms, 250 ms]
        let s = h.snapshot();
        let p50 = s.quantile(0.5).unwrap();
        assert!((0.001..=0.0025).contains(&p50), "{p50}");
        let p99 = s.quantile(0.99).unwrap();
        assert!((0.001..=0.0025).contains(&p99), "{p99}");
        let p100 = s.quantile(1.0).unwrap();
        assert!((0.1..=0.25).contains(&p100), "{p100}");
        assert_eq!(HistogramSnapshot::default().quantile(0.99), None);
    }

    #[test]
    fn a_window_is_the_difference_of_two_snapshots() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_secs(20));
        let before = h.snapshot();
        h.observe(Duration::from_millis(3));
        let window = h.snapshot().since(&before);
        assert_eq!(window.count(), 1);
        assert!(window.quantile(0.99).unwrap() <= 0.005);
    }

    #[test]
    fn codes_count_by_slot_and_odd_codes_are_unknown() {
        let c = CodeCounts::default();
        c.record(Some(0));
        c.record(Some(14));
        c.record(Some(14));
        c.record(Some(99));
        c.record(None);
        let s = c.snapshot();
        assert_eq!((s[0], s[14], s[2], s[NO_CODE]), (1, 2, 1, 1));
    }
}
