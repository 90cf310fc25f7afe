//! Endpoints, their live counters, and the guard that brackets one call.
//!
//! An [`Endpoint`] is shared (`Arc`) by every snapshot of the balancer that contains it,
//! so its counters survive endpoint-set changes. Everything a call touches is an atomic:
//! `start_call` bumps `in_flight` and `requests`; finishing records latency into the
//! peak EWMA with a compare-and-swap; only a *failure* takes the small passive-health
//! mutex.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::clock::nanos_since;
use crate::ewma::PeakEwma;
use crate::passive::{Ejection, PassiveHealthPolicy, PassiveState};
use crate::stats::Outcomes;

/// An endpoint as configured or discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// `host:port`.
    pub address: String,
    /// Relative share, at least 1 (0 is treated as 1, so a typo never silences a backend).
    pub weight: u32,
    /// Labels a discovery source attached (etcd's `Metadata`, an xDS locality, a zone):
    /// carried to `/status` and xDS, never read by the pickers. Empty for static endpoints.
    pub metadata: Metadata,
}

/// An endpoint's labels, sorted by key so two sets compare equal regardless of order.
pub type Metadata = BTreeMap<String, String>;

impl EndpointSpec {
    /// A spec with weight 1, the common case for discovered endpoints.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            weight: 1,
            metadata: Metadata::new(),
        }
    }

    /// The same spec with another weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The same spec with these labels.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// Source of process-unique endpoint ids; starts at 1 so 0 never names an endpoint.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One endpoint with its live counters.
///
/// Created by [`Balancer`](crate::Balancer) (or [`Endpoint::new`] for a caller that
/// manages its own sets); ids are unique within the process, so a call can remember which
/// endpoints it already tried (`PickContext::avoid`) across endpoint-set changes.
#[derive(Debug)]
pub struct Endpoint {
    id: u64,
    address: String,
    /// Current weight; changed in place when discovery reports a new weight.
    weight: AtomicU32,
    /// Labels from discovery; replaced in place when a new set reports other labels.
    metadata: ArcSwap<Metadata>,
    /// Origin of the nanosecond timestamps kept in atomics below.
    epoch: Instant,
    in_flight: AtomicU32,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Active health verdict, set by a health checker; true until told otherwise.
    active_up: AtomicBool,
    /// When slow start began, in ns since `epoch` plus one (0 = not ramping): set when
    /// the endpoint joins a set or recovers from an ejection or a failed health check.
    warming_since: AtomicU64,
    passive: PassiveState,
    ewma: PeakEwma,
    /// Answered attempts by final code and their latency (for metrics and `/status`).
    outcomes: Outcomes,
    /// Why passive health last ejected it (a short reason word); taken only on ejection.
    ejection_cause: Mutex<Option<&'static str>>,
}

impl Endpoint {
    /// Creates an endpoint with fresh counters and a new id.
    pub fn new(spec: EndpointSpec, passive: PassiveHealthPolicy) -> Self {
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            address: spec.address,
            weight: AtomicU32::new(spec.weight.max(1)),
            metadata: ArcSwap::from_pointee(spec.metadata),
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            active_up: AtomicBool::new(true),
            warming_since: AtomicU64::new(0),
            passive: PassiveState::new(passive),
            ewma: PeakEwma::default(),
            outcomes: Outcomes::default(),
            ejection_cause: Mutex::new(None),
        }
    }

    /// Unique id within the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The weight (at least 1).
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub(crate) fn set_weight(&self, weight: u32) {
        self.weight.store(weight.max(1), Ordering::Relaxed);
    }

    /// The labels discovery attached (empty for static endpoints).
    pub fn metadata(&self) -> Arc<Metadata> {
        self.metadata.load_full()
    }

    pub(crate) fn set_metadata(&self, metadata: Metadata) {
        if **self.metadata.load() != metadata {
            self.metadata.store(Arc::new(metadata));
        }
    }

    /// Attempts on this endpoint by final gRPC code, with their latency; recorded by the
    /// proxy when an attempt's outcome is known, read by the admin API.
    pub fn outcomes(&self) -> &Outcomes {
        &self.outcomes
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Calls started on this endpoint so far (for `/status` and metrics).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Failures recorded so far, by `finish(Outcome::Failure)` or [`Self::mark_failure`].
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// How many times passive health has ejected this endpoint.
    pub fn ejections(&self) -> u64 {
        self.passive.ejections()
    }

    /// How long the current passive ejection lasts still; `None` when not ejected.
    pub fn ejection_remaining(&self) -> Option<std::time::Duration> {
        self.passive.remaining(self.epoch, Instant::now())
    }

    /// Notes why passive health ejected the endpoint (for `/status`), as the caller that
    /// saw the ejecting failure knows it.
    pub fn note_ejection_cause(&self, cause: &'static str) {
        *self
            .ejection_cause
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(cause);
    }

    /// Why passive health last ejected the endpoint, if it ever did and the caller said.
    pub fn ejection_cause(&self) -> Option<&'static str> {
        *self
            .ejection_cause
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The passive health policy this endpoint applies.
    pub fn passive_policy(&self) -> PassiveHealthPolicy {
        self.passive.policy()
    }

    /// The peak-EWMA latency estimate in milliseconds as of now, 0.0 before the first
    /// observation. It decays toward zero while no call finishes (see the `ewma` design
    /// notes in the crate docs).
    pub fn ewma_ms(&self) -> f64 {
        self.ewma_ns(Instant::now()).map_or(0.0, |ns| ns / 1e6)
    }

    /// The estimate in nanoseconds at `now`, `None` before the first observation.
    pub(crate) fn ewma_ns(&self, now: Instant) -> Option<f64> {
        self.ewma.estimate_ns(nanos_since(self.epoch, now))
    }

    /// Whether passive health has this endpoint ejected right now.
    pub fn passive_ejected(&self) -> bool {
        let now = Instant::now();
        match self.passive.check(self.epoch, || now) {
            Ejection::Ejected => true,
            Ejection::None => false,
            Ejection::JustEnded => {
                self.start_warming(now);
                false
            }
        }
    }

    /// The active health verdict (true unless a checker said otherwise).
    pub fn active_healthy(&self) -> bool {
        self.active_up.load(Ordering::Relaxed)
    }

    /// Sets the active health verdict; an actively unhealthy endpoint gets no calls
    /// (except in panic mode), like a passively ejected one. For the health checker.
    pub fn set_active_healthy(&self, healthy: bool) {
        let was = self.active_up.swap(healthy, Ordering::Relaxed);
        if healthy && !was {
            self.start_warming(Instant::now());
        }
    }

    /// Starts slow start now (a balancer with `slow_start` ramps this endpoint's share).
    pub fn start_warming(&self, now: Instant) {
        self.warming_since.store(
            nanos_since(self.epoch, now).saturating_add(1),
            Ordering::Relaxed,
        );
    }

    /// The slow-start factor of this endpoint at `now` under a ramp of `window`: 1.0
    /// unless it is ramping (see [`crate::slow_start_factor`]). Ends the ramp once done.
    pub fn slow_start_factor(&self, now: Instant, window: std::time::Duration) -> f64 {
        let since = self.warming_since.load(Ordering::Relaxed);
        if since == 0 {
            return 1.0;
        }
        let elapsed =
            std::time::Duration::from_nanos(nanos_since(self.epoch, now).saturating_sub(since - 1));
        if elapsed >= window {
            let _ =
                self.warming_since
                    .compare_exchange(since, 0, Ordering::Relaxed, Ordering::Relaxed);
            return 1.0;
        }
        crate::slow_start::slow_start_factor(elapsed, window)
    }

    /// Whether health lets calls through now: not ejected by passive health and not
    /// marked down by active health.
    pub fn is_healthy(&self) -> bool {
        self.healthy_with(Instant::now)
    }

    /// [`Self::is_healthy`] with a lazily read clock, so a pick reads the clock at most
    /// once and only when some endpoint is ejected.
    pub(crate) fn healthy_with(&self, now: impl FnOnce() -> Instant) -> bool {
        if !self.active_healthy() {
            return false;
        }
        // The clock is read at most once, and only if an ejection was recorded.
        let mut now = Some(now);
        let mut read = None;
        let mut clock = move || -> Instant {
            *read.get_or_insert_with(|| now.take().map_or_else(Instant::now, |f| f()))
        };
        match self.passive.check(self.epoch, &mut clock) {
            Ejection::Ejected => false,
            Ejection::None => true,
            Ejection::JustEnded => {
                // Back from an ejection: ramp its share up again (slow start).
                self.start_warming(clock());
                true
            }
        }
    }

    /// Starts a call: counts it in `in_flight` and `requests` and notes the start time.
    /// Finish it with [`CallGuard::finish`]; dropping the guard instead (a cancelled
    /// call) only releases `in_flight`.
    pub fn start_call(self: &Arc<Self>) -> CallGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        CallGuard {
            endpoint: Arc::clone(self),
            started: Instant::now(),
        }
    }

    /// Records a failure that happened outside a started call (e.g. a connect error
    /// before any stream was opened): counts it in `failures` and feeds passive health,
    /// but does not count a request nor touch the latency estimate. When a call was
    /// started, use `finish(Outcome::Failure)` instead. Returns true when this failure
    /// ejected the endpoint (for the caller's log).
    pub fn mark_failure(&self) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.passive.record_failure(self.epoch, Instant::now())
    }

    fn finish_call(&self, started: Instant, outcome: Outcome) -> bool {
        let now = Instant::now();
        let failure = outcome == Outcome::Failure;
        self.ewma.observe(
            now.saturating_duration_since(started),
            nanos_since(self.epoch, now),
            failure,
        );
        if failure {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return self.passive.record_failure(self.epoch, now);
        }
        false
    }
}

/// How a call ended, for passive health and latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Success or an application error.
    Success,
    /// A failure in the sense of passive health.
    Failure,
}

/// A call in flight on one endpoint; releases `in_flight` when dropped.
///
/// Holding the guard for the life of the call (including streaming) keeps
/// `least_request` and `p2c_ewma` informed; being a drop guard it also covers calls that
/// are cancelled or whose future is dropped.
#[derive(Debug)]
#[must_use = "dropping the guard ends the call at once; keep it until the call completes"]
pub struct CallGuard {
    endpoint: Arc<Endpoint>,
    started: Instant,
}

impl CallGuard {
    /// The endpoint.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// When the call started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Records the outcome: latency into the peak EWMA and, on `Failure`, a failure for
    /// passive health. `in_flight` is released when `self` drops right after. Returns true
    /// when this failure ejected the endpoint (the balancer does no I/O: logging it is the
    /// caller's).
    pub fn finish(self, outcome: Outcome) -> bool {
        self.endpoint.finish_call(self.started, outcome)
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
