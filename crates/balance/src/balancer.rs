//! The balancer: an atomically swapped snapshot of the endpoint set and its picker state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::endpoint::{Endpoint, EndpointSpec};
use crate::passive::PassiveHealthPolicy;
use crate::pickers::p2c::{self, Cost};
use crate::pickers::ring_hash::Ring;
use crate::pickers::round_robin::RoundRobin;
use crate::pickers::{Weights, weighted};
use crate::tier::{Env, Tier};

/// Picks of ramping endpoints redrawn before the last draw stands (bounds the cost of a
/// pick while many endpoints ramp).
const SLOW_START_REDRAWS: usize = 4;

/// Balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Smooth weighted round robin (NGINX's), from a precomputed schedule.
    RoundRobin,
    /// Power of two choices on in-flight calls per unit of weight.
    LeastRequest,
    /// Power of two choices on peak EWMA latency × (1 + in-flight / weight).
    P2cEwma,
    /// Weighted random.
    Random,
    /// Consistent hashing on `PickContext::hash` (weighted random without one).
    RingHash,
}

/// What a call offers the picker.
#[derive(Debug, Default, Clone, Copy)]
pub struct PickContext<'a> {
    /// Hash of the call's key (ring_hash); compute it with [`hash_key`](crate::hash_key).
    pub hash: Option<u64>,
    /// Endpoint ids already tried by this call, so a retry goes elsewhere when it can.
    pub avoid: &'a [u64],
}

/// A picked endpoint.
#[derive(Debug, Clone)]
pub struct Pick {
    /// The endpoint.
    pub endpoint: Arc<Endpoint>,
    /// True when every endpoint was unhealthy (panic mode): the proxy should log it.
    pub panic: bool,
}

/// Policy-specific state, rebuilt with every endpoint set.
#[derive(Debug)]
enum Picker {
    RoundRobin(RoundRobin),
    LeastRequest,
    P2cEwma,
    Random,
    RingHash(Ring),
}

/// One immutable endpoint set with everything precomputed for picking from it.
#[derive(Debug)]
struct Snapshot {
    endpoints: Arc<[Arc<Endpoint>]>,
    weights: Weights,
    picker: Picker,
}

impl Snapshot {
    fn build(policy: Policy, endpoints: Vec<Arc<Endpoint>>) -> Self {
        let w: Vec<u32> = endpoints.iter().map(|e| e.weight()).collect();
        let picker = match policy {
            Policy::RoundRobin => Picker::RoundRobin(RoundRobin::new(&w)),
            Policy::LeastRequest => Picker::LeastRequest,
            Policy::P2cEwma => Picker::P2cEwma,
            Policy::Random => Picker::Random,
            Policy::RingHash => Picker::RingHash(Ring::new(&endpoints, &w)),
        };
        Self {
            endpoints: endpoints.into(),
            weights: Weights::new(&w),
            picker,
        }
    }

    fn pick_in(
        &self,
        tier: Tier,
        hash: Option<u64>,
        env: &mut Env<'_>,
        exact: bool,
    ) -> Option<usize> {
        let eps = &self.endpoints[..];
        let weights = &self.weights;
        match (&self.picker, hash) {
            (Picker::RoundRobin(rr), _) => rr.pick(eps, env, tier, exact),
            (Picker::LeastRequest, _) => p2c::pick(eps, weights, env, tier, exact, Cost::InFlight),
            (Picker::P2cEwma, _) => p2c::pick(eps, weights, env, tier, exact, Cost::PeakEwma),
            (Picker::RingHash(ring), Some(h)) => ring.pick(h, eps, env, tier, exact),
            (Picker::Random | Picker::RingHash(_), _) => {
                weighted(eps, weights, env, tier, None, exact)
            }
        }
    }

    fn pick(&self, ctx: &PickContext<'_>) -> Option<Pick> {
        if self.endpoints.is_empty() {
            return None;
        }
        let mut env = Env::new(ctx.avoid);
        let (index, tier) = match self.pick_in(Tier::Preferred, ctx.hash, &mut env, false) {
            Some(i) => (i, Tier::Preferred),
            None => {
                let tier = env.best_tier(&self.endpoints);
                let i = self
                    .pick_in(tier, ctx.hash, &mut env, true)
                    // Unreachable: `tier` has a member, so the exact path finds one.
                    // Fall back to a scan rather than trusting that with a panic.
                    .or_else(|| self.endpoints.iter().position(|e| env.eligible(e, tier)))
                    .unwrap_or(0);
                (i, tier)
            }
        };
        Some(Pick {
            endpoint: Arc::clone(&self.endpoints[index]),
            panic: tier.is_panic(),
        })
    }
}

/// A cluster's endpoint set and picker.
///
/// `Send + Sync`: share it in an `Arc` between worker threads. [`pick`](Self::pick) is
/// lock-free and allocation-free; [`set_endpoints`](Self::set_endpoints) builds a new
/// snapshot off to the side and swaps it in.
#[derive(Debug)]
pub struct Balancer {
    policy: Policy,
    passive: PassiveHealthPolicy,
    /// Slow start: how long a joining or recovered endpoint's share ramps up (zero = off).
    slow_start: Duration,
    state: ArcSwap<Snapshot>,
    /// Serialises writers so two concurrent updates cannot both reuse endpoints from the
    /// same old snapshot and lose one another's. Never taken by `pick`.
    update: Mutex<()>,
}

impl Balancer {
    /// Creates a balancer. Weights of 0 count as 1; of specs with the same address only
    /// the first is kept.
    pub fn new(policy: Policy, passive: PassiveHealthPolicy, endpoints: Vec<EndpointSpec>) -> Self {
        let endpoints = normalize(endpoints)
            .into_iter()
            .map(|spec| Arc::new(Endpoint::new(spec, passive)))
            .collect();
        Self {
            policy,
            passive,
            slow_start: Duration::ZERO,
            state: ArcSwap::from_pointee(Snapshot::build(policy, endpoints)),
            update: Mutex::new(()),
        }
    }

    /// The same balancer with slow start: an endpoint that joins the set later (through
    /// [`Self::set_endpoints`]) or recovers from an ejection or a failed health check gets
    /// a share that ramps up linearly over `window` (from [`crate::SLOW_START_FLOOR`] of
    /// its weight). The endpoints given to [`Self::new`] start at full weight: they all
    /// start together. `ring_hash` ignores it: moving a key's calls away and back would
    /// break the affinity the policy exists for.
    pub fn with_slow_start(mut self, window: Duration) -> Self {
        self.slow_start = window;
        self
    }

    /// The slow-start window (zero = off).
    pub fn slow_start(&self) -> Duration {
        self.slow_start
    }

    /// The policy this balancer applies.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The passive health policy new endpoints get.
    pub fn passive(&self) -> PassiveHealthPolicy {
        self.passive
    }

    /// Picks an endpoint for one call (or one attempt of it).
    ///
    /// Prefers endpoints that are healthy and not in `ctx.avoid`; then healthy ones even
    /// if avoided; if none is healthy, any endpoint (non-avoided first) with
    /// `Pick::panic` set. `None` only when the set is empty: the caller answers
    /// UNAVAILABLE. Starting the call (`pick.endpoint.start_call()`) is the caller's.
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<Pick> {
        let state = self.state.load();
        let pick = state.pick(ctx)?;
        if self.slow_start.is_zero() || self.policy == Policy::RingHash || pick.panic {
            return Some(pick);
        }
        self.warm_pick(&state, ctx, pick)
    }

    /// Slow start by rejection: a pick of a ramping endpoint stands with probability
    /// equal to its factor, else the policy picks again (a few times at most), which
    /// scales that endpoint's share by its factor for every weighing policy.
    fn warm_pick(&self, state: &Snapshot, ctx: &PickContext<'_>, mut pick: Pick) -> Option<Pick> {
        let now = Instant::now();
        for _ in 0..SLOW_START_REDRAWS {
            let factor = pick.endpoint.slow_start_factor(now, self.slow_start);
            if factor >= 1.0 || fastrand::f64() < factor {
                return Some(pick);
            }
            pick = state.pick(ctx)?;
        }
        Some(pick)
    }

    /// The current endpoints, in the order given.
    pub fn endpoints(&self) -> Arc<[Arc<Endpoint>]> {
        Arc::clone(&self.state.load().endpoints)
    }

    /// Replaces the endpoint set (for discovery and reloads).
    ///
    /// An endpoint whose address stays keeps its `Arc<Endpoint>`, id and counters (its
    /// weight and metadata are updated); new addresses get fresh endpoints; the picker state
    /// is rebuilt.
    /// Calls in flight on removed endpoints finish normally on the `Arc` they hold. A set
    /// equal to the current one (addresses, weights and order) changes nothing, so a
    /// periodic re-resolution does not reset the round-robin position.
    pub fn set_endpoints(&self, endpoints: Vec<EndpointSpec>) {
        let specs = normalize(endpoints);
        let _writer = self.update.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.state.load_full();
        let unchanged = current.endpoints.len() == specs.len()
            && current.endpoints.iter().zip(&specs).all(|(e, s)| {
                e.address() == s.address && e.weight() == s.weight && *e.metadata() == s.metadata
            });
        if unchanged {
            return;
        }
        let by_address: HashMap<&str, &Arc<Endpoint>> =
            current.endpoints.iter().map(|e| (e.address(), e)).collect();
        let endpoints = specs
            .into_iter()
            .map(|spec| match by_address.get(spec.address.as_str()) {
                Some(&kept) => {
                    kept.set_weight(spec.weight);
                    kept.set_metadata(spec.metadata);
                    Arc::clone(kept)
                }
                None => {
                    let endpoint = Endpoint::new(spec, self.passive);
                    if !self.slow_start.is_zero() {
                        endpoint.start_warming(Instant::now());
                    }
                    Arc::new(endpoint)
                }
            })
            .collect();
        self.state
            .store(Arc::new(Snapshot::build(self.policy, endpoints)));
    }
}

/// Weight 0 → 1; drop later duplicates of an address.
fn normalize(specs: Vec<EndpointSpec>) -> Vec<EndpointSpec> {
    let mut seen = std::collections::HashSet::with_capacity(specs.len());
    specs
        .into_iter()
        .filter(|s| seen.insert(s.address.clone()))
        .map(|s| EndpointSpec {
            weight: s.weight.max(1),
            ..s
        })
        .collect()
}
