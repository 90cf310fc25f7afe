//! `least_request` and `p2c_ewma`: the power of two choices.
//!
//! Draw two distinct endpoints at random (weighted), keep the cheaper one. Compared with
//! "least loaded of all" this needs no scan and no global view, and it avoids the herd
//! effect of every picker sending to the same momentarily-emptiest endpoint, while still
//! giving an exponential improvement in the maximum load over a single random choice
//! (Mitzenmacher). Linkerd, Finagle and Envoy balance this way.
//!
//! The pair is drawn by weight, and the load in the cost is divided by the weight. With
//! no load every cost ties and the first draw wins, so traffic follows the weights
//! exactly; under load the balancer equalises `in_flight / weight`, i.e. in-flight calls
//! proportional to weight.
//!
//! The peak-EWMA cost is `latency × (1 + in_flight / weight)`. For weight 1 that is
//! Linkerd's `latency × (in_flight + 1)`. We do not use `latency × (in_flight + 1) /
//! weight`: with no load it makes the heavier endpoint of every pair win outright, so a
//! 3:1 weighting turns into ~9:1 traffic at low concurrency.

use std::sync::Arc;

use tokio::time::Instant;

use super::{Weights, weighted};
use crate::Endpoint;
use crate::tier::{Env, Tier};

/// Cost of an endpoint with no latency observation, when its rival has none either.
/// Only its ratio to other costs matters; with both unknown the pair compares by load.
const DEFAULT_RTT_NS: f64 = 1_000_000.0;

/// The two flavours of cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cost {
    /// `in_flight / weight`.
    InFlight,
    /// `peak_ewma × (1 + in_flight / weight)`.
    PeakEwma,
}

/// Picks the cheaper of two distinct weighted-random endpoints in `tier` (the only
/// eligible one if there is just one).
pub(crate) fn pick(
    endpoints: &[Arc<Endpoint>],
    weights: &Weights,
    env: &mut Env<'_>,
    tier: Tier,
    exact: bool,
    cost: Cost,
) -> Option<usize> {
    let a = weighted(endpoints, weights, env, tier, None, exact)?;
    // The rival is drawn exactly when the quick draws miss: giving up on the fast path
    // here instead would favour `a`s whose rivals are easy to draw (light endpoints
    // paired with heavy ones) and skew the weights.
    let rival = if exact {
        None
    } else {
        weighted(endpoints, weights, env, tier, Some(a), false)
    }
    .or_else(|| weighted(endpoints, weights, env, tier, Some(a), true));
    // No rival: `a` is the only member of the tier.
    let Some(b) = rival else { return Some(a) };
    let (ea, eb) = (&endpoints[a], &endpoints[b]);
    let (wa, wb) = (weights.of(a), weights.of(b));
    let b_cheaper = match cost {
        Cost::InFlight => u64::from(eb.in_flight()) * wa < u64::from(ea.in_flight()) * wb,
        Cost::PeakEwma => {
            let now = env.now();
            let (ca, cb) = ewma_costs(ea, eb, wa, wb, now);
            cb < ca
        }
    };
    Some(if b_cheaper { b } else { a })
}

/// Peak-EWMA costs of a pair. An endpoint without an observation yet borrows its rival's
/// latency (so it competes on load alone and new endpoints get traffic, without being
/// flooded as an arbitrary low default would), or [`DEFAULT_RTT_NS`] if neither has one.
fn ewma_costs(a: &Endpoint, b: &Endpoint, wa: u64, wb: u64, now: Instant) -> (f64, f64) {
    let (la, lb) = match (a.ewma_ns(now), b.ewma_ns(now)) {
        (Some(la), Some(lb)) => (la, lb),
        (Some(la), None) => (la, la),
        (None, Some(lb)) => (lb, lb),
        (None, None) => (DEFAULT_RTT_NS, DEFAULT_RTT_NS),
    };
    let cost = |lat: f64, e: &Endpoint, w: u64| lat * (1.0 + f64::from(e.in_flight()) / w as f64);
    (cost(la, a, wa), cost(lb, b, wb))
}
