//! Per-call load balancing with no I/O (API skeleton; implementation in progress).

use std::sync::Arc;
use std::time::Duration;

/// An endpoint as configured or discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// `host:port`.
    pub address: String,
    /// Relative share, at least 1.
    pub weight: u32,
}

/// Balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Power of two choices on in-flight calls.
    LeastRequest,
    /// Power of two choices on peak EWMA latency × (in-flight + 1).
    P2cEwma,
    /// Weighted random.
    Random,
    /// Consistent hashing.
    RingHash,
}

/// NGINX-style passive health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveHealthPolicy {
    /// Failures within `fail_timeout` that eject; 0 = off.
    pub max_fails: u32,
    /// Window and ejection length.
    pub fail_timeout: Duration,
}

/// One endpoint with its live counters.
#[derive(Debug)]
pub struct Endpoint {
    spec: EndpointSpec,
    id: u64,
}

impl Endpoint {
    /// Unique id within the process.
    pub fn id(&self) -> u64 {
        self.id
    }
    /// The address.
    pub fn address(&self) -> &str {
        &self.spec.address
    }
    /// The weight.
    pub fn weight(&self) -> u32 {
        self.spec.weight
    }
    /// Calls in flight.
    pub fn in_flight(&self) -> u32 {
        todo!()
    }
    /// Whether passive health lets calls through now.
    pub fn is_healthy(&self) -> bool {
        todo!()
    }
    /// Starts a call.
    pub fn start_call(self: &Arc<Self>) -> CallGuard {
        todo!()
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

/// A call in flight on one endpoint.
#[derive(Debug)]
pub struct CallGuard {
    endpoint: Arc<Endpoint>,
}

impl CallGuard {
    /// The endpoint.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }
    /// Records the outcome.
    pub fn finish(self, _outcome: Outcome) {
        todo!()
    }
}

/// What a call offers the picker.
#[derive(Debug, Default, Clone, Copy)]
pub struct PickContext<'a> {
    /// Hash of the call's key (ring_hash).
    pub hash: Option<u64>,
    /// Endpoint ids already tried by this call.
    pub avoid: &'a [u64],
}

/// A picked endpoint.
#[derive(Debug, Clone)]
pub struct Pick {
    /// The endpoint.
    pub endpoint: Arc<Endpoint>,
    /// True when every endpoint was unhealthy (panic mode).
    pub panic: bool,
}

/// A cluster's endpoint set and picker.
#[derive(Debug)]
pub struct Balancer {}

impl Balancer {
    /// Creates a balancer.
    pub fn new(_policy: Policy, _passive: PassiveHealthPolicy, _endpoints: Vec<EndpointSpec>) -> Self {
        todo!()
    }
    /// Picks an endpoint.
    pub fn pick(&self, _ctx: &PickContext<'_>) -> Option<Pick> {
        todo!()
    }
    /// The current endpoints.
    pub fn endpoints(&self) -> Arc<[Arc<Endpoint>]> {
        todo!()
    }
    /// Replaces the endpoint set.
    pub fn set_endpoints(&self, _endpoints: Vec<EndpointSpec>) {
        todo!()
    }
}

/// Stable 64-bit hash of a key (FNV-1a).
pub fn hash_key(_key: &[u8]) -> u64 {
    todo!()
}
