//! Per-call load balancing with no I/O: endpoint sets, pickers and passive health.
//!
//! This crate is shared by the rpcgate proxy and by `rpcgate-client`, so it depends on
//! nothing but `arc-swap`, `fastrand` and tokio's clock (`tokio::time::Instant`, so tests
//! can drive time with tokio's paused clock). It does no I/O and spawns nothing.
//!
//! # Use
//!
//! ```
//! use std::time::Duration;
//! use rpcgate_balance::{Balancer, EndpointSpec, Outcome, PassiveHealthPolicy, PickContext, Policy};
//!
//! let lb = Balancer::new(
//!     Policy::RoundRobin,
//!     PassiveHealthPolicy { max_fails: 1, fail_timeout: Duration::from_secs(10) },
//!     vec![EndpointSpec::new("10.0.0.1:50051"), EndpointSpec::new("10.0.0.2:50051").with_weight(2)],
//! );
//! let mut tried = Vec::new();
//! let pick = lb.pick(&PickContext { hash: None, avoid: &tried }).expect("endpoints configured");
//! if pick.panic { /* log: every endpoint is unhealthy */ }
//! let call = pick.endpoint.start_call();      // in_flight += 1
//! // ... run the call, then:
//! tried.push(call.endpoint().id());            // for a retry's `avoid`
//! call.finish(Outcome::Success);               // latency → EWMA; Failure → passive health
//! ```
//!
//! A failure before a call exists (a connect error) can be reported with
//! [`Endpoint::mark_failure`]; otherwise start the call and `finish(Outcome::Failure)`.
//! Dropping a [`CallGuard`] without finishing it (a cancelled call) only releases
//! `in_flight`.
//!
//! # Design
//!
//! **Lock-free pick.** `pick` runs on every call, from every worker thread. The balancer
//! keeps an immutable *snapshot* (the endpoints plus everything precomputed for picking
//! from them) in an [`arc_swap::ArcSwap`]: a pick is one `ArcSwap::load` (no lock, no
//! reference-count contention), a few atomic loads and at most one clock read, and it
//! allocates nothing except the returned `Arc` clone. Per-endpoint state (in-flight,
//! counters, EWMA, ejection deadline) lives in atomics on the shared [`Endpoint`], so a
//! call's start and successful end take no lock either; only a *failure* takes a tiny
//! per-endpoint mutex to update NGINX's failure window.
//!
//! **Schedules rebuilt on change.** Whatever can be computed from the endpoint set alone
//! is computed when the set changes ([`Balancer::set_endpoints`]), not per pick: the
//! smooth-weighted-round-robin cycle (walked with one `fetch_add`), the weighted-random
//! prefix sums, the hash ring. Endpoints that keep their address keep their `Arc` and
//! counters across a change; the picker state is simply rebuilt and swapped in. Health
//! is *not* part of the snapshot (it changes by the second and per call); pickers skip
//! unhealthy or avoided endpoints as they meet them. Each pick first tries, with bounded
//! effort, to find a healthy non-avoided endpoint; only when that fails does it scan the
//! set once to find the best non-empty tier (healthy and not avoided → healthy → panic
//! mode: anything, non-avoided first) and pick exactly within it.
//!
//! **Why peak EWMA.** `p2c_ewma` weighs in-flight calls by each endpoint's latency, so a
//! backend that slows down sheds load before it fails. A plain average reacts slowly to a
//! backend that *just* became slow; peak EWMA (Finagle, Linkerd) takes any observation
//! above the estimate at once and forgets it over τ = 10 s. Estimates decay toward zero
//! while an endpoint gets no traffic, so a once-slow endpoint is eventually re-probed
//! rather than starved. An endpoint with no observation yet borrows its rival's latency
//! in the comparison, so new endpoints get traffic without being flooded.
//!
//! **Passive health** follows NGINX's `max_fails`/`fail_timeout` (see [`PassiveHealthPolicy`]);
//! an active health checker can also mark an endpoint down with
//! [`Endpoint::set_active_healthy`].
//!
//! **Resilience state machines** for the proxy, with the same rules (no I/O, tokio's
//! clock, atomics on the hot path): [`CircuitBreaker`] (per cluster, gobreaker's
//! closed/open/half-open over a rolling window; [`BreakerPolicy`], [`BreakerTicket`],
//! [`Transition`], [`BreakerSnapshot`]), [`Backoff`] (linear or exponential wait before a
//! retry, capped, optional full jitter), [`RetryBudget`] (retries as a share of a route's
//! recent calls, with a floor), [`ActiveHealthState`] (consecutive-probe
//! [`HealthThresholds`] for active health checks) and [`slow_start_factor`] (a new
//! endpoint's weight ramp).

mod active;
mod backoff;
mod balancer;
mod breaker;
mod budget;
mod clock;
mod endpoint;
mod ewma;
mod hash;
mod passive;
mod pickers;
mod slow_start;
mod stats;
mod tier;
mod window;

pub use active::{ActiveHealthState, HealthThresholds};
pub use backoff::{Backoff, BackoffKind};
pub use balancer::{Balancer, Pick, PickContext, Policy};
pub use breaker::{
    Admission, BreakerPolicy, BreakerSnapshot, BreakerState, BreakerTicket, CircuitBreaker,
    Rejected, Transition,
};
pub use budget::{RETRY_BUDGET_MIN, RETRY_BUDGET_WINDOW, RetryBudget};
pub use endpoint::{CallGuard, Endpoint, EndpointSpec, Metadata, Outcome};
pub use hash::hash_key;
pub use passive::PassiveHealthPolicy;
pub use slow_start::{SLOW_START_FLOOR, slow_start_factor};
pub use stats::{
    CODE_SLOTS, CodeCounts, HistogramSnapshot, LATENCY_BUCKETS, LatencyHistogram, NO_CODE, Outcomes,
};

/// The peak-EWMA decay time constant τ used by `p2c_ewma` (Linkerd's default, 10 s).
pub const EWMA_DECAY: std::time::Duration = ewma::TAU;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn shared_types_are_send_and_sync() {
        assert_send_sync::<Balancer>();
        assert_send_sync::<Endpoint>();
        assert_send_sync::<CallGuard>();
        assert_send_sync::<Pick>();
    }
}
