//! The proxy's own counters, kept for the admin API (`/metrics`, `/status`, the
//! dashboard): calls per route and gRPC method with their codes and latency, retries,
//! connections per listener, circuit-breaker transitions, config reloads.
//!
//! Everything the hot path touches is an atomic that the call reaches without a lookup
//! under a lock: a [`Generation`](crate::state::Generation) holds each route's
//! [`RouteStats`] and each listener's [`ListenerStats`], and a route finds a method's
//! [`MethodStats`] in a map behind an `ArcSwap` (read without locking, copied on the rare
//! write when a method is seen for the first time). Locks are taken only when a
//! generation is built and when the admin API reads.
//!
//! The counters live in one [`Stats`] for the life of the process, found by name, so a
//! reload that keeps a route, listener or cluster keeps counting on the same counters
//! (Prometheus counters never go back).
//!
//! With no `[admin]` nothing reads per-method counters, so calls skip them
//! ([`Stats::per_call`] is false): the "metrics off" side of the benchmark.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use rpcgate_balance::{BreakerState, CodeCounts, LatencyHistogram, Transition};
use tokio::time::Instant;

use crate::route::grpc_service_method;

/// Distinct `(grpc_service, grpc_method)` label pairs kept before the rest count as
/// `other` (contract §5): bounds the metrics' size whatever paths clients send.
pub const METHOD_LABEL_CAP: usize = 1000;

/// The label value of methods beyond [`METHOD_LABEL_CAP`].
pub const OTHER: &str = "other";

/// Every counter of the process, by name.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Whether calls record per-method counters (an admin API reads them).
    pub(crate) per_call: bool,
    routes: Mutex<Vec<Arc<RouteStats>>>,
    listeners: Mutex<Vec<Arc<ListenerStats>>>,
    clusters: Mutex<Vec<Arc<ClusterStats>>>,
    /// Distinct method label pairs handed out so far, over all routes.
    method_labels: Arc<AtomicUsize>,
    /// Configuration swaps that took effect.
    pub(crate) reloads_ok: AtomicU64,
    /// Configuration swaps refused (the old configuration stayed).
    pub(crate) reloads_failed: AtomicU64,
}

impl Stats {
    /// An empty registry; `per_call` says whether calls count per method.
    pub(crate) fn new(per_call: bool) -> Self {
        Self {
            per_call,
            routes: Mutex::default(),
            listeners: Mutex::default(),
            clusters: Mutex::default(),
            method_labels: Arc::default(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        }
    }

    /// The counters of a route (an empty `route` and `cluster` for the calls of a
    /// listener that no route took), made on first use.
    pub(crate) fn route(&self, listener: &str, route: &str, cluster: &str) -> Arc<RouteStats> {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = routes
            .iter()
            .find(|r| &*r.listener == listener && &*r.route == route && &*r.cluster == cluster)
        {
            return found.clone();
        }
        let made = Arc::new(RouteStats::new(
            listener,
            route,
            cluster,
            self.method_labels.clone(),
        ));
        routes.push(made.clone());
        made
    }

    /// The counters of a listener, made on first use.
    pub(crate) fn listener(&self, name: &str) -> Arc<ListenerStats> {
        let mut listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = listeners.iter().find(|l| &*l.name == name) {
            return found.clone();
        }
        let made = Arc::new(ListenerStats::new(name));
        listeners.push(made.clone());
        made
    }

    /// The counters of a cluster, made on first use.
    pub(crate) fn cluster(&self, name: &str) -> Arc<ClusterStats> {
        let mut clusters = self.clusters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = clusters.iter().find(|c| &*c.name == name) {
            return found.clone();
        }
        let made = Arc::new(ClusterStats::new(name));
        clusters.push(made.clone());
        made
    }

    /// Every route's counters, in the order they were first made.
    pub(crate) fn routes(&self) -> Vec<Arc<RouteStats>> {
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every listener's counters.
    pub(crate) fn listeners(&self) -> Vec<Arc<ListenerStats>> {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every cluster's counters.
    pub(crate) fn clusters(&self) -> Vec<Arc<ClusterStats>> {
        self.clusters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One route's calls, by gRPC method.
#[derive(Debug)]
pub(crate) struct RouteStats {
    pub(crate) listener: Arc<str>,
    pub(crate) route: Arc<str>,
    pub(crate) cluster: Arc<str>,
    /// By request path; read without a lock, replaced (copied) when a path is added.
    methods: ArcSwap<HashMap<Box<str>, Arc<MethodStats>>>,
    /// Serialises the copy-on-write additions to `methods`.
    grow: Mutex<()>,
    /// Methods beyond the label cap.
    other: Arc<MethodStats>,
    /// Requests that are not gRPC (plain HTTP/1.1 or HTTP/2).
    plain: Arc<MethodStats>,
    /// Retries made by the route's retry policy.
    pub(crate) retries: AtomicU64,
    /// Calls refused by the listener's `rate_limit` (counted on the route they took).
    pub(crate) limited_by_listener: AtomicU64,
    /// Calls refused by the route's own `rate_limit`.
    pub(crate) limited_by_route: AtomicU64,
    method_labels: Arc<AtomicUsize>,
}

impl RouteStats {
    fn new(listener: &str, route: &str, cluster: &str, method_labels: Arc<AtomicUsize>) -> Self {
        Self {
            listener: listener.into(),
            route: route.into(),
            cluster: cluster.into(),
            methods: ArcSwap::default(),
            grow: Mutex::new(()),
            other: Arc::new(MethodStats::new(OTHER, OTHER)),
            plain: Arc::new(MethodStats::new("", "")),
            retries: AtomicU64::new(0),
            limited_by_listener: AtomicU64::new(0),
            limited_by_route: AtomicU64::new(0),
            method_labels,
        }
    }

    /// The counters a call to `path` records into: its method's, `other` past the label
    /// cap, or the plain-HTTP ones.
    pub(crate) fn method(&self, path: &str, grpc: bool) -> Arc<MethodStats> {
        let Some((service, method)) = grpc.then(|| grpc_service_method(path)).flatten() else {
            return self.plain.clone();
        };
        if let Some(found) = self.methods.load().get(path) {
            return found.clone();
        }
        let _grow = self.grow.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.methods.load_full();
        if let Some(found) = current.get(path) {
            return found.clone();
        }
        if self.method_labels.fetch_add(1, Ordering::Relaxed) >= METHOD_LABEL_CAP {
            self.method_labels.fetch_sub(1, Ordering::Relaxed);
            return self.other.clone();
        }
        let made = Arc::new(MethodStats::new(service, method));
        let mut next = HashMap::clone(&current);
        next.insert(path.into(), made.clone());
        self.methods.store(Arc::new(next));
        made
    }

    /// Every method's counters (those beyond the cap and plain HTTP included when used).
    pub(crate) fn methods(&self) -> Vec<Arc<MethodStats>> {
        let mut all: Vec<_> = self.methods.load().values().cloned().collect();
        all.sort_by(|a, b| (&a.service, &a.method).cmp(&(&b.service, &b.method)));
        for extra in [&self.other, &self.plain] {
            if extra.latency.snapshot().count() > 0 {
                all.push(extra.clone());
            }
        }
        all
    }
}

/// One gRPC method's calls on one route: final codes and durations.
#[derive(Debug)]
pub(crate) struct MethodStats {
    pub(crate) service: Box<str>,
    pub(crate) method: Box<str>,
    pub(crate) codes: CodeCounts,
    pub(crate) latency: LatencyHistogram,
}

impl MethodStats {
    fn new(service: &str, method: &str) -> Self {
        Self {
            service: service.into(),
            method: method.into(),
            codes: CodeCounts::default(),
            latency: LatencyHistogram::default(),
        }
    }

    /// Records a call that ended with `code` after `duration`.
    pub(crate) fn record(&self, code: Option<u32>, duration: Duration) {
        self.codes.record(code);
        self.latency.observe(duration);
    }
}

/// How often at most a listener logs one kind of connection trouble (refusals at
/// `max_connections`, failed TLS handshakes, failed accepts): a flood of them must not
/// flood the log.
const CONNECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// At most one log line per interval, saying how many events it stands for.
#[derive(Debug)]
pub(crate) struct LogLimit {
    interval: Duration,
    /// Events since the last line, and when that line was written.
    state: Mutex<(u64, Option<Instant>)>,
}

impl LogLimit {
    /// A limit of one line per `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new((0, None)),
        }
    }

    /// Notes one event; `Some(n)` when a line may be written now for the `n` events since
    /// the last one (this one included).
    pub(crate) fn event(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 += 1;
        let now = Instant::now();
        if state
            .1
            .is_some_and(|last| now.duration_since(last) < self.interval)
        {
            return None;
        }
        let events = state.0;
        *state = (0, Some(now));
        Some(events)
    }
}

/// One listener's connections.
#[derive(Debug)]
pub(crate) struct ListenerStats {
    pub(crate) name: Arc<str>,
    /// Client connections open now.
    pub(crate) active: AtomicU64,
    /// Client connections accepted so far.
    pub(crate) accepted: AtomicU64,
    /// Connections closed at once because `max_connections` were open.
    pub(crate) refused: AtomicU64,
    /// TLS handshakes that failed or did not finish in time.
    pub(crate) tls_failures: AtomicU64,
    /// Connections from addresses the listener's `allow` / `deny` refuses.
    pub(crate) access_denied: AtomicU64,
    denied_log: LogLimit,
    refusal_log: LogLimit,
    /// Also used for failed accepts (out of file descriptors and the like).
    pub(crate) trouble_log: LogLimit,
    tls_log: LogLimit,
}

impl ListenerStats {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            active: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            tls_failures: AtomicU64::new(0),
            access_denied: AtomicU64::new(0),
            denied_log: LogLimit::new(CONNECTION_LOG_INTERVAL),
            refusal_log: LogLimit::new(CONNECTION_LOG_INTERVAL),
            trouble_log: LogLimit::new(CONNECTION_LOG_INTERVAL),
            tls_log: LogLimit::new(CONNECTION_LOG_INTERVAL),
        }
    }

    /// Counts a connection refused at `limit` and logs it at warn, at most once per
    /// [`CONNECTION_LOG_INTERVAL`] with the number refused since the last line.
    pub(crate) fn refused_at_limit(&self, limit: usize) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(refused) = self.refusal_log.event() {
            tracing::warn!(
                listener = &*self.name,
                max_connections = limit,
                refused,
                "max_connections reached: new connections are refused (closed at once) until some close; {refused} refused since the last report"
            );
        }
    }

    /// Counts a connection from an address the access list refuses, and logs it at info
    /// (rate-limited): its calls get PERMISSION_DENIED.
    pub(crate) fn denied(&self, peer: std::net::SocketAddr) {
        self.access_denied.fetch_add(1, Ordering::Relaxed);
        if let Some(denied) = self.denied_log.event() {
            tracing::info!(
                listener = &*self.name,
                %peer,
                denied,
                "client address not allowed (allow/deny): its calls get PERMISSION_DENIED ({denied} since the last report)"
            );
        }
    }

    /// Counts a failed TLS handshake and logs it at warn (the peer and why), at most once
    /// per [`CONNECTION_LOG_INTERVAL`] with the number failed since the last line.
    pub(crate) fn tls_failed(&self, peer: std::net::SocketAddr, why: &str) {
        self.tls_failures.fetch_add(1, Ordering::Relaxed);
        if let Some(failed) = self.tls_log.event() {
            tracing::warn!(
                listener = &*self.name,
                %peer,
                failed,
                "TLS handshake failed: {why}; connection closed ({failed} failed since the last report)"
            );
        }
    }
}

/// One cluster's counters that are not an endpoint's.
#[derive(Debug)]
pub(crate) struct ClusterStats {
    pub(crate) name: Arc<str>,
    /// Circuit-breaker transitions by the state entered: closed, open, half-open.
    pub(crate) circuit_transitions: [AtomicU64; 3],
}

impl ClusterStats {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            circuit_transitions: Default::default(),
        }
    }

    /// Counts a circuit-breaker state change and logs it at warn with what caused it.
    pub(crate) fn circuit_transition(&self, t: &Transition) {
        self.circuit_transitions[state_index(t.to)].fetch_add(1, Ordering::Relaxed);
        let why = match (t.from, t.to) {
            (BreakerState::Closed, _) => {
                format!("{} of the last {} calls failed", t.failures, t.requests)
            }
            (BreakerState::Open, _) => {
                "open_duration passed; letting trial calls through".to_owned()
            }
            (BreakerState::HalfOpen, BreakerState::Closed) => {
                format!("{} trial calls in a row succeeded", t.requests)
            }
            (BreakerState::HalfOpen, _) => "a trial call failed".to_owned(),
        };
        tracing::warn!(
            cluster = &*self.name,
            from = %t.from,
            to = %t.to,
            requests = t.requests,
            failures = t.failures,
            "circuit breaker {} -> {}: {why}",
            t.from,
            t.to,
        );
    }
}

/// The metrics' number of a breaker state: 0 closed, 1 open, 2 half-open (contract §5).
pub(crate) fn state_index(state: BreakerState) -> usize {
    match state {
        BreakerState::Closed => 0,
        BreakerState::Open => 1,
        BreakerState::HalfOpen => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_found_by_path_and_capped() {
        let stats = Stats::new(true);
        let route = stats.route("edge", "r", "c");
        let a = route.method("/pkg.S/A", true);
        assert!(Arc::ptr_eq(&a, &route.method("/pkg.S/A", true)));
        assert_eq!((&*a.service, &*a.method), ("pkg.S", "A"));
        let plain = route.method("/index.html", false);
        assert_eq!(&*plain.service, "");
        // The cap is process-wide: fill it from another route.
        let other_route = stats.route("edge", "r2", "c");
        for i in 1..METHOD_LABEL_CAP {
            other_route.method(&format!("/pkg.S/M{i}"), true);
        }
        let beyond = route.method("/pkg.S/Beyond", true);
        assert_eq!(&*beyond.service, OTHER);
        // Known methods still count as themselves.
        assert!(Arc::ptr_eq(&a, &route.method("/pkg.S/A", true)));
        assert!(Arc::ptr_eq(&route, &stats.route("edge", "r", "c")));
    }
}
