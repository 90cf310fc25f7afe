//! Passive health with NGINX's `max_fails` / `fail_timeout` semantics.
//!
//! Failures are counted in a window that opens at the first failure and lasts
//! `fail_timeout`; a failure after the window closes opens a new one with a count of 1.
//! When the count reaches `max_fails` the endpoint is ejected for `fail_timeout`, after
//! which it is healthy again with a fresh count. Failures reported while an endpoint is
//! ejected (calls started before the ejection, or calls sent in panic mode) are ignored:
//! the ejection already says what they would say, and extending it would keep an endpoint
//! out for as long as panic traffic keeps failing, even after it has recovered.
//!
//! The hot path only reads one atomic (`ejected_until`, 0 when not ejected), so checking
//! health needs no clock read in the common case. The window itself sits behind a small
//! mutex that only failures touch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::nanos_since;

/// NGINX-style passive health: after `max_fails` failures within `fail_timeout`, an
/// endpoint gets no calls for `fail_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveHealthPolicy {
    /// Failures within `fail_timeout` that eject; 0 = off.
    pub max_fails: u32,
    /// Window and ejection length.
    pub fail_timeout: Duration,
}

impl PassiveHealthPolicy {
    /// Passive health switched off: endpoints are never ejected by failures.
    pub const OFF: Self = Self {
        max_fails: 0,
        fail_timeout: Duration::ZERO,
    };

    /// Whether failures can eject at all (`max_fails > 0` and a non-zero timeout).
    pub fn is_enabled(&self) -> bool {
        self.max_fails > 0 && !self.fail_timeout.is_zero()
    }
}

/// What a health check of the passive state found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ejection {
    /// Not ejected.
    None,
    /// Ejected now.
    Ejected,
    /// The ejection has just ended (reported once).
    JustEnded,
}

/// The failure window, touched only when a failure is recorded.
#[derive(Debug, Default)]
struct Window {
    /// When the current window opened; `None` when no failure is counted.
    start: Option<Instant>,
    /// Failures counted in the current window.
    fails: u32,
}

/// Per-endpoint passive health state.
#[derive(Debug)]
pub(crate) struct PassiveState {
    policy: PassiveHealthPolicy,
    /// Nanoseconds since the endpoint's epoch at which the ejection ends; 0 = not ejected.
    ejected_until: AtomicU64,
    /// Number of ejections so far, for metrics.
    ejections: AtomicU64,
    window: Mutex<Window>,
}

impl PassiveState {
    pub(crate) fn new(policy: PassiveHealthPolicy) -> Self {
        Self {
            policy,
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            window: Mutex::new(Window::default()),
        }
    }

    pub(crate) fn policy(&self) -> PassiveHealthPolicy {
        self.policy
    }

    pub(crate) fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// How long the current ejection lasts still at `now`; `None` when not ejected. Reads
    /// only: the end of an ejection is still seen by [`Self::check`].
    pub(crate) fn remaining(&self, epoch: Instant, now: Instant) -> Option<std::time::Duration> {
        let until = self.ejected_until.load(Ordering::Acquire);
        let now_ns = nanos_since(epoch, now);
        (until != 0 && now_ns < until).then(|| std::time::Duration::from_nanos(until - now_ns))
    }

    /// Whether the endpoint is ejected now, and the one check that sees an ejection end.
    /// `now` is only called when an ejection is recorded, so healthy endpoints cost one
    /// atomic load.
    pub(crate) fn check(&self, epoch: Instant, now: impl FnOnce() -> Instant) -> Ejection {
        let until = self.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            return Ejection::None;
        }
        if nanos_since(epoch, now()) < until {
            return Ejection::Ejected;
        }
        // Expired: clear it so later checks take the fast path again. If a new ejection
        // was stored meanwhile the exchange fails, which is what we want.
        match self
            .ejected_until
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => Ejection::JustEnded,
            Err(_) => Ejection::None,
        }
    }

    /// Counts a failure at `now`; returns true when this failure ejected the endpoint.
    pub(crate) fn record_failure(&self, epoch: Instant, now: Instant) -> bool {
        if !self.policy.is_enabled() {
            return false;
        }
        let now_ns = nanos_since(epoch, now);
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let until = self.ejected_until.load(Ordering::Acquire);
        if until != 0 && now_ns < until {
            return false;
        }
        match window.start {
            Some(start) if now.saturating_duration_since(start) < self.policy.fail_timeout => {
                window.fails = window.fails.saturating_add(1);
            }
            _ => {
                window.start = Some(now);
                window.fails = 1;
            }
        }
        if window.fails < self.policy.max_fails {
            return false;
        }
        let timeout_ns = u64::try_from(self.policy.fail_timeout.as_nanos()).unwrap_or(u64::MAX);
        self.ejected_until
            .store(now_ns.saturating_add(timeout_ns).max(1), Ordering::Release);
        *window = Window::default();
        self.ejections.fetch_add(1, Ordering::Relaxed);
        true
    }
}
