//! Active health-check thresholds: how many probe results in a row flip an endpoint's
//! verdict.
//!
//! Why thresholds: one lost probe (a GC pause, a dropped packet) should not take an
//! endpoint out, and one lucky probe should not put a flapping one back; like NGINX's
//! `fails=`/`passes=` and Envoy's `unhealthy_threshold`/`healthy_threshold`, a verdict
//! changes only after `unhealthy` failed probes in a row (healthy → unhealthy) or
//! `healthy` successful ones in a row (unhealthy → healthy). A probe that agrees with
//! the current verdict resets the streak.
//!
//! An endpoint starts *healthy*: a newly added endpoint gets traffic at once, as NGINX
//! does without `health_check mandatory`, instead of waiting `healthy` probe intervals;
//! if it is in fact dead, passive health ejects it as soon as its calls fail and the
//! probes take it out shortly after.
//!
//! The verdict and the streak are one atomic word, updated with a compare-and-swap, so
//! a prober and readers on other threads need no lock. Feed a flip to
//! [`Endpoint::set_active_healthy`](crate::Endpoint::set_active_healthy).

use std::sync::atomic::{AtomicU64, Ordering};

/// Consecutive probe results that flip a verdict; 0 is treated as 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HealthThresholds {
    /// Failed probes in a row that make a healthy endpoint unhealthy.
    pub unhealthy: u32,
    /// Successful probes in a row that make an unhealthy endpoint healthy.
    pub healthy: u32,
}

/// Bit of the word set while the verdict is healthy; the low 32 bits are the streak of
/// probes disagreeing with the verdict.
const HEALTHY: u64 = 1 << 32;
const STREAK: u64 = u32::MAX as u64;

/// One endpoint's active health verdict (see the module docs).
#[derive(Debug)]
pub struct ActiveHealthState {
    thresholds: HealthThresholds,
    word: AtomicU64,
}

impl ActiveHealthState {
    /// A healthy verdict with no streak.
    pub fn new(thresholds: HealthThresholds) -> Self {
        Self {
            thresholds,
            word: AtomicU64::new(HEALTHY),
        }
    }

    /// A verdict that starts where another left off: a new prober of an endpoint that an
    /// earlier one already marked down (a configuration swap) continues from there.
    pub fn starting(thresholds: HealthThresholds, healthy: bool) -> Self {
        Self {
            thresholds,
            word: AtomicU64::new(if healthy { HEALTHY } else { 0 }),
        }
    }

    /// The thresholds this state applies.
    pub fn thresholds(&self) -> HealthThresholds {
        self.thresholds
    }

    /// The current verdict.
    pub fn is_healthy(&self) -> bool {
        self.word.load(Ordering::Acquire) & HEALTHY != 0
    }

    /// Records a probe result (`serving` = the endpoint answered SERVING); returns the
    /// new verdict when this probe flipped it.
    pub fn record(&self, serving: bool) -> Option<bool> {
        let mut flipped = None;
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let healthy = word & HEALTHY != 0;
                if serving == healthy {
                    flipped = None;
                    return (word & STREAK != 0).then_some(word & HEALTHY);
                }
                let threshold = if healthy {
                    self.thresholds.unhealthy
                } else {
                    self.thresholds.healthy
                };
                let streak = (word & STREAK) + 1;
                if streak >= u64::from(threshold.max(1)) {
                    flipped = Some(serving);
                    Some(if serving { HEALTHY } else { 0 })
                } else {
                    flipped = None;
                    Some((word & HEALTHY) | streak)
                }
            });
        flipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(unhealthy: u32, healthy: u32) -> ActiveHealthState {
        ActiveHealthState::new(HealthThresholds { unhealthy, healthy })
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn is_send_and_sync() {
        assert_send_sync::<ActiveHealthState>();
    }

    #[test]
    fn starts_healthy() {
        let s = state(3, 2);
        assert!(s.is_healthy());
        assert_eq!(s.record(true), None);
        assert!(s.is_healthy());
    }

    #[test]
    fn unhealthy_after_threshold_failures_in_a_row() {
        let s = state(3, 2);
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), None);
        assert!(s.is_healthy());
        assert_eq!(s.record(false), Some(false));
        assert!(!s.is_healthy());
        // Further failures change nothing.
        assert_eq!(s.record(false), None);
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let s = state(3, 2);
        for _ in 0..10 {
            assert_eq!(s.record(false), None);
            assert_eq!(s.record(false), None);
            assert_eq!(s.record(true), None);
        }
        assert!(s.is_healthy());
    }

    #[test]
    fn healthy_again_after_threshold_successes_in_a_row() {
        let s = state(1, 3);
        assert_eq!(s.record(false), Some(false));
        assert_eq!(s.record(true), None);
        assert_eq!(s.record(true), None);
        // A failure resets the success streak.
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(true), None);
        assert_eq!(s.record(true), None);
        assert_eq!(s.record(true), Some(true));
        assert!(s.is_healthy());
        // The failure streak starts from zero after the flip.
        assert_eq!(s.record(false), Some(false));
    }

    #[test]
    fn zero_thresholds_flip_on_every_disagreeing_probe() {
        let s = state(0, 0);
        assert_eq!(s.record(false), Some(false));
        assert_eq!(s.record(true), Some(true));
        assert_eq!(s.record(true), None);
    }

    #[test]
    fn concurrent_probes_flip_exactly_once() {
        let s = std::sync::Arc::new(state(100, 1));
        let flips: usize = (0..4)
            .map(|_| {
                let s = std::sync::Arc::clone(&s);
                std::thread::spawn(move || (0..50).filter(|_| s.record(false).is_some()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap_or(0))
            .sum();
        assert_eq!(flips, 1);
        assert!(!s.is_healthy());
    }
}
