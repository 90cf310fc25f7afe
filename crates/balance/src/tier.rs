//! Which endpoints a pick may return, in preference order, and the per-pick context the
//! pickers share. Both the balancer and every picker use these, so they live here, below
//! both, instead of in `balancer` (which imports the pickers).

use std::sync::Arc;

use tokio::time::Instant;

use crate::endpoint::Endpoint;

/// Preference order of the endpoints a pick may return; the first non-empty tier wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    /// Healthy and not avoided.
    Preferred,
    /// Healthy, even if avoided (a retry back to the same endpoint beats no retry).
    Healthy,
    /// Panic mode: nothing is healthy; not avoided.
    PanicFresh,
    /// Panic mode: anything.
    PanicAny,
}

impl Tier {
    pub(crate) fn is_panic(self) -> bool {
        matches!(self, Tier::PanicFresh | Tier::PanicAny)
    }
}

/// Per-pick context for the pickers: the avoid list and a clock read at most once.
#[derive(Debug)]
pub(crate) struct Env<'a> {
    avoid: &'a [u64],
    now: Option<Instant>,
}

impl<'a> Env<'a> {
    pub(crate) fn new(avoid: &'a [u64]) -> Self {
        Self { avoid, now: None }
    }

    /// The time of this pick, read on first use.
    pub(crate) fn now(&mut self) -> Instant {
        *self.now.get_or_insert_with(Instant::now)
    }

    fn healthy(&mut self, ep: &Endpoint) -> bool {
        let now = &mut self.now;
        ep.healthy_with(|| *now.get_or_insert_with(Instant::now))
    }

    fn avoided(&self, ep: &Endpoint) -> bool {
        !self.avoid.is_empty() && self.avoid.contains(&ep.id())
    }

    /// Whether `ep` belongs to `tier`.
    pub(crate) fn eligible(&mut self, ep: &Endpoint, tier: Tier) -> bool {
        match tier {
            Tier::Preferred => !self.avoided(ep) && self.healthy(ep),
            Tier::Healthy => self.healthy(ep),
            Tier::PanicFresh => !self.avoided(ep),
            Tier::PanicAny => true,
        }
    }

    /// The best tier with at least one member, in one pass. `endpoints` is not empty.
    pub(crate) fn best_tier(&mut self, endpoints: &[Arc<Endpoint>]) -> Tier {
        let (mut healthy, mut fresh) = (false, false);
        for ep in endpoints {
            let h = self.healthy(ep);
            let f = !self.avoided(ep);
            if h && f {
                return Tier::Preferred;
            }
            healthy |= h;
            fresh |= f;
        }
        if healthy {
            Tier::Healthy
        } else if fresh {
            Tier::PanicFresh
        } else {
            Tier::PanicAny
        }
    }
}
