//! Cluster admission: whether a call may go to a cluster at all, before any endpoint is
//! picked — `max_requests` (calls in flight) and the circuit breaker (contract §4).
//!
//! Both answer at once, with UNAVAILABLE and no backend seeing the call, when the cluster
//! must be spared. An admitted call carries an [`Admitted`] to its end: it holds the
//! in-flight slot and the breaker ticket, and [`Admitted::finish`] tells the breaker how
//! the call ended (from the verdict: [`Verdict::breaker_failure`]). Every breaker state
//! change is logged at warn with the counts that caused it. A cluster with neither pays
//! one branch per call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rpcgate_balance::{BreakerTicket, CircuitBreaker};

use crate::stats::ClusterStats;
use crate::verdict::{Cause, Verdict};

/// `max_requests`: calls in flight to a cluster, and its limit.
#[derive(Debug)]
pub(crate) struct InFlightLimit {
    limit: u64,
    in_flight: Arc<AtomicU64>,
}

impl InFlightLimit {
    /// A limit of `limit` calls in flight.
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            in_flight: Arc::new(AtomicU64::new(0)),
        }
    }

    fn try_acquire(&self) -> Option<InFlightPermit> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= self.limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlightPermit(self.in_flight.clone()))
    }
}

/// One call's slot under `max_requests`, freed when dropped.
#[derive(Debug)]
struct InFlightPermit(Arc<AtomicU64>);

impl Drop for InFlightPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What an admitted call holds until it ends.
#[derive(Debug)]
pub(crate) struct Admitted {
    cluster: Arc<ClusterStats>,
    ticket: Option<BreakerTicket>,
    _permit: Option<InFlightPermit>,
}

impl Admitted {
    /// Tells the breaker how the call ended; the in-flight slot is freed with `self`.
    pub(crate) fn finish(self, verdict: &Verdict) {
        let Some(ticket) = self.ticket else { return };
        // A call the client abandoned says nothing about the cluster: the ticket is
        // dropped unrecorded (which also frees a half-open trial slot).
        if let Some(failure) = verdict.breaker_failure()
            && let Some(transition) = ticket.record(!failure)
        {
            self.cluster.circuit_transition(&transition);
        }
    }
}

/// A cluster's admission limits.
#[derive(Debug)]
pub(crate) struct ClusterLimits {
    /// The cluster (for messages and logs).
    pub(crate) name: Arc<str>,
    /// Its counters (circuit transitions), which also log the transitions.
    pub(crate) stats: Arc<ClusterStats>,
    /// `max_requests`, when set.
    pub(crate) max_requests: Option<InFlightLimit>,
    /// The circuit breaker, when configured.
    pub(crate) breaker: Option<CircuitBreaker>,
}

/// Admits a call to a cluster with these limits, or answers why not.
pub(crate) fn admit(cluster: &ClusterLimits) -> Result<Option<Admitted>, Verdict> {
    if cluster.max_requests.is_none() && cluster.breaker.is_none() {
        return Ok(None);
    }
    let permit = match &cluster.max_requests {
        Some(limit) => Some(limit.try_acquire().ok_or_else(|| {
            Verdict::new(Cause::AtMaxRequests {
                cluster: cluster.name.clone(),
                limit: limit.limit,
            })
        })?),
        None => None,
    };
    let ticket = match &cluster.breaker {
        Some(breaker) => Some(ticket(breaker, cluster)?),
        None => None,
    };
    Ok(Some(Admitted {
        cluster: cluster.stats.clone(),
        ticket,
        _permit: permit,
    }))
}

fn ticket(breaker: &CircuitBreaker, cluster: &ClusterLimits) -> Result<BreakerTicket, Verdict> {
    match breaker.admit() {
        Ok(admission) => {
            if let Some(transition) = &admission.transition {
                cluster.stats.circuit_transition(transition);
            }
            Ok(admission.ticket)
        }
        Err(rejected) => {
            if let Some(transition) = &rejected.transition {
                cluster.stats.circuit_transition(transition);
            }
            Err(Verdict::new(Cause::CircuitOpen {
                cluster: cluster.name.clone(),
                retry_after: rejected.retry_after,
            }))
        }
    }
}
