//! Per-generation state: everything a call needs from the configuration, ready for the
//! hot path, in one value that is swapped as a whole.
//!
//! A [`Generation`] is built from a validated [`Config`] and lives behind an
//! [`ArcSwap`](arc_swap::ArcSwap) shared by every worker. Each call loads it once when it
//! starts and holds that `Arc` while it routes, picks and makes its attempts, so a swap
//! never changes the routes or cluster settings under a call in flight; the next call sees
//! the new generation.
//!
//! Everything is found by name, never by position: a connection knows its listener by
//! name, a route holds its cluster's `Arc`, and per-worker pools are keyed by endpoint id
//! (HTTP/2) or the cluster's [`PoolId`] (HTTP/1.1). That is what lets
//! [`Generation::build`] carry state over from the previous generation:
//!
//! - a cluster whose configuration did not change is the *same* `Arc<ClusterState>`:
//!   balancer, endpoint counters, passive-health ejections, EWMA, panic flag, pools;
//! - a cluster whose endpoints, weights or `authority` changed but whose policy, passive
//!   health and connection settings (protocol, TLS, connect timeout) did not keeps its
//!   balancer: endpoints that stay keep their state and their pooled connections, and the
//!   set is updated in place — the one thing a generation shares with the one before, so
//!   a call in flight that retries picks from the new set (as it will with discovery);
//!   its breaker, `max_requests` count and active-health prober carry over too when
//!   their own settings did not change;
//! - anything else starts fresh.
//!
//! Listeners' sockets are not part of a generation: [`crate::listeners`] keeps that set and
//! [`crate::reload`] swaps both together.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use rpcgate_balance::{Balancer, CircuitBreaker, EndpointSpec};
use rpcgate_config::{Cluster, Config, HashKey, UpstreamProtocol};
use tokio::runtime::Handle;
use tokio_rustls::TlsConnector;

use crate::access_log::AccessLog;
use crate::admission::{ClusterLimits, InFlightLimit};
use crate::error::StartError;
use crate::health_check::{self, ProbeSettings, Prober};
use crate::rate_limit::RateLimit;
use crate::retry::RetryState;
use crate::route::Router;
use crate::stats::{RouteStats, Stats};
use crate::tls;
use crate::upstream::{PoolId, UpstreamTls};

/// The current generation, swapped as a whole: loaded once per call, stored by a swap.
pub(crate) type Generations = arc_swap::ArcSwap<Generation>;

/// One configuration generation, ready for the hot path.
#[derive(Debug)]
pub(crate) struct Generation {
    /// 1 for the first, +1 per swap (for logs, and later the admin API).
    pub(crate) number: u64,
    /// The configuration it was built from (what xDS serves).
    pub(crate) config: Arc<Config>,
    /// Listeners in file order, found by name.
    listeners: Vec<ListenerState>,
    /// Clusters in file order, found by name.
    clusters: Vec<Arc<ClusterState>>,
    /// Where access-log lines go.
    pub(crate) access_log: AccessLog,
    /// The `[log]` section the access log was opened from (to reuse it when unchanged).
    pub(crate) log: rpcgate_config::Log,
    /// The process's counters (shared by every generation).
    pub(crate) stats: Arc<Stats>,
    /// When this generation was built (for `/status`).
    pub(crate) loaded_at: std::time::SystemTime,
}

/// A listener's routing table.
#[derive(Debug)]
pub(crate) struct ListenerState {
    /// The listener's name.
    pub(crate) name: Arc<str>,
    /// The compiled matches, in route order.
    router: Router,
    /// The routes, in the router's order.
    pub(crate) routes: Vec<RouteState>,
    /// The counters of calls no route took.
    pub(crate) unrouted: Arc<RouteStats>,
    /// The listener's `rate_limit`, checked for every call.
    pub(crate) rate_limit: Option<Arc<RateLimit>>,
    /// Whether compressible non-gRPC responses are gzipped.
    pub(crate) compression: bool,
}

impl ListenerState {
    /// The first route that takes the request.
    pub(crate) fn route(&self, request: &crate::route::RequestView<'_>) -> Option<&RouteState> {
        self.router.find(request).and_then(|i| self.routes.get(i))
    }
}

/// A route, ready for the hot path.
#[derive(Debug)]
pub(crate) struct RouteState {
    /// Name for logs and metrics.
    pub(crate) name: Arc<str>,
    /// The cluster its calls go to.
    pub(crate) cluster: Arc<ClusterState>,
    /// The route's upper bound on a call.
    pub(crate) timeout: Option<Duration>,
    /// Headers set towards the backend.
    pub(crate) request_headers: Vec<(HeaderName, HeaderValue)>,
    /// Headers set towards the client.
    pub(crate) response_headers: Vec<(HeaderName, HeaderValue)>,
    /// The route's retry policy, budget and counters, when it has one.
    pub(crate) retry: Option<RetryState>,
    /// Its calls' counters.
    pub(crate) stats: Arc<RouteStats>,
    /// What it matches, as the file says it (for `/status`).
    pub(crate) matcher: rpcgate_config::RouteMatch,
    /// `allow` / `deny` for this route.
    pub(crate) access: rpcgate_config::AccessList,
    /// The route's own `rate_limit`.
    pub(crate) rate_limit: Option<Arc<RateLimit>>,
    /// The largest gRPC message accepted from the client.
    pub(crate) max_message_bytes: u32,
    /// The route as the configuration gave it (for the reload's log of what changed).
    pub(crate) config: rpcgate_config::Route,
}

/// A cluster, ready for the hot path.
#[derive(Debug)]
pub(crate) struct ClusterState {
    /// The cluster's name.
    pub(crate) name: Arc<str>,
    /// Its per-worker pools' key.
    pub(crate) pool: PoolId,
    /// Endpoints, health and picking.
    pub(crate) balancer: Arc<Balancer>,
    /// The protocol spoken to the backends.
    pub(crate) protocol: UpstreamProtocol,
    /// `:authority` override towards the backends.
    pub(crate) authority: Option<http::uri::Authority>,
    /// Bound on each step of a connect (TCP, TLS, the HTTP/2 handshake).
    pub(crate) connect_timeout: Duration,
    /// Where `ring_hash` takes its key from.
    pub(crate) hash_key: Option<HashKey>,
    /// TLS towards the backends (`protocol = "h2"`).
    pub(crate) tls: Option<UpstreamTls>,
    /// Whether the last pick was in panic mode, so the log says it once per episode.
    pub(crate) in_panic: AtomicBool,
    /// `max_requests` and the circuit breaker.
    pub(crate) limits: Arc<ClusterLimits>,
    /// The active health prober, stopped with this state.
    _prober: Option<Arc<Prober>>,
    /// The discovery source that keeps the endpoints current, stopped with this state;
    /// set once the whole generation is built (see [`Deferred`]), so a reload that fails
    /// half-way never starts one.
    discovery: OnceLock<Arc<rpcgate_discovery::Watch>>,
    /// The configuration it was built from, to tell whether a new one changed it.
    config: Cluster,
}

impl Generation {
    /// Builds a generation from `config`, carrying over what `previous` has for clusters
    /// that did not change (see the module docs). Nothing of `previous` is modified
    /// unless the whole build succeeds.
    pub(crate) fn build(
        config: &Config,
        previous: Option<&Generation>,
        runtime: &Handle,
        stats: &Arc<Stats>,
    ) -> Result<Self, StartError> {
        let mut deferred = Deferred::default();
        let clusters = config
            .clusters
            .iter()
            .map(|cluster| {
                let old = previous.and_then(|p| p.cluster(&cluster.name));
                ClusterState::build(cluster, old, &mut deferred, runtime, stats)
            })
            .collect::<Result<Vec<_>, StartError>>()?;
        let listeners = config
            .listeners
            .iter()
            .map(|listener| {
                let old_listener = previous.and_then(|p| p.listener(&listener.name));
                let routes = listener
                    .routes
                    .iter()
                    .map(|route| {
                        let cluster = clusters.get(route.cluster).cloned().ok_or_else(|| {
                            StartError::Inconsistent(format!(
                                "route {} names a cluster that does not exist",
                                route.name
                            ))
                        })?;
                        let old_limit = old_listener
                            .and_then(|l| l.routes.iter().find(|r| *r.name == *route.name))
                            .and_then(|r| r.rate_limit.as_ref());
                        Ok(RouteState {
                            rate_limit: carried_limit(route.rate_limit.as_ref(), old_limit),
                            max_message_bytes: route.max_message_bytes,
                            config: route.clone(),
                            stats: stats.route(&listener.name, &route.name, &cluster.name),
                            matcher: route.matcher.clone(),
                            access: route.access.clone(),
                            name: route.name.as_str().into(),
                            cluster,
                            timeout: route.timeout,
                            request_headers: header_pairs(&route.request_headers)?,
                            response_headers: header_pairs(&route.response_headers)?,
                            retry: route.retry.as_ref().map(RetryState::new),
                        })
                    })
                    .collect::<Result<Vec<_>, StartError>>()?;
                Ok(ListenerState {
                    rate_limit: carried_limit(
                        listener.rate_limit.as_ref(),
                        old_listener.and_then(|l| l.rate_limit.as_ref()),
                    ),
                    compression: listener.compression,
                    unrouted: stats.route(&listener.name, "", ""),
                    name: listener.name.as_str().into(),
                    router: Router::new(&listener.routes),
                    routes,
                })
            })
            .collect::<Result<Vec<_>, StartError>>()?;
        let access_log = match previous {
            Some(p)
                if p.log.access_log == config.log.access_log
                    && p.log.format == config.log.format =>
            {
                p.access_log.clone()
            }
            _ => AccessLog::open(&config.log.access_log, config.log.format)
                .map_err(StartError::AccessLog)?,
        };
        // Everything is built: only now touch what the previous generation shares.
        deferred.apply(runtime);
        Ok(Self {
            number: previous.map_or(1, |p| p.number + 1),
            config: Arc::new(config.clone()),
            listeners,
            clusters,
            access_log,
            log: config.log.clone(),
            stats: stats.clone(),
            loaded_at: std::time::SystemTime::now(),
        })
    }

    /// The listener of that name.
    pub(crate) fn listener(&self, name: &str) -> Option<&ListenerState> {
        self.listeners.iter().find(|l| &*l.name == name)
    }

    /// The cluster of that name.
    pub(crate) fn cluster(&self, name: &str) -> Option<&Arc<ClusterState>> {
        self.clusters.iter().find(|c| &*c.name == name)
    }

    /// Every listener, in file order.
    pub(crate) fn listeners(&self) -> &[ListenerState] {
        &self.listeners
    }

    /// Every cluster, in file order.
    pub(crate) fn clusters(&self) -> &[Arc<ClusterState>] {
        &self.clusters
    }
}

/// The buckets for a `rate_limit`: the previous generation's when its settings did not
/// change, so a reload does not hand every client a full bucket.
fn carried_limit(
    settings: Option<&rpcgate_config::RateLimit>,
    old: Option<&Arc<RateLimit>>,
) -> Option<Arc<RateLimit>> {
    let settings = settings?;
    match old {
        Some(old) if old.settings == *settings => Some(old.clone()),
        _ => Some(Arc::new(RateLimit::new(settings))),
    }
}

/// What a new generation does to shared state only once all of it is built: a reload
/// refused half-way must leave the running generation exactly as it was.
#[derive(Default)]
struct Deferred {
    /// New endpoint sets for balancers the running generation shares.
    endpoint_updates: Vec<(Arc<Balancer>, Vec<EndpointSpec>)>,
    /// Discovery sources the new configuration replaces on a kept balancer: stopped, so
    /// the old source (alive while the old generation's calls finish) no longer sets the
    /// shared balancer's endpoints.
    replaced_sources: Vec<Arc<rpcgate_discovery::Watch>>,
    /// Clusters whose discovery source starts now.
    new_sources: Vec<Arc<ClusterState>>,
}

impl Deferred {
    fn apply(self, runtime: &Handle) {
        for (balancer, endpoints) in self.endpoint_updates {
            balancer.set_endpoints(endpoints);
        }
        for source in self.replaced_sources {
            source.stop();
        }
        for cluster in self.new_sources {
            let Some(source) = &cluster.config.discovery else {
                continue;
            };
            let target = Arc::downgrade(&cluster.balancer);
            let apply: rpcgate_discovery::Apply = Arc::new(move |endpoints| {
                if let Some(balancer) = target.upgrade() {
                    balancer.set_endpoints(endpoints);
                }
            });
            let watch = rpcgate_discovery::spawn(source, &cluster.config.name, runtime, apply);
            let _ = cluster.discovery.set(Arc::new(watch));
        }
    }
}

impl ClusterState {
    /// The state for `config`: the old one as it is when nothing changed, a new one on
    /// the old balancer when only endpoints or per-call settings changed (the endpoint
    /// set update is queued in `deferred`), else a fresh one.
    fn build(
        config: &Cluster,
        old: Option<&Arc<ClusterState>>,
        deferred: &mut Deferred,
        runtime: &Handle,
        stats: &Stats,
    ) -> Result<Arc<ClusterState>, StartError> {
        if let Some(old) = old
            && old.config == *config
        {
            return Ok(old.clone());
        }
        let (policy, hash_key) = rpcgate_discovery::policy::picker(&config.lb);
        let endpoints: Vec<EndpointSpec> = rpcgate_discovery::specs(&config.endpoints);
        let passive = rpcgate_discovery::policy::passive(&config.passive_health);
        let authority = match &config.authority {
            Some(a) => Some(
                a.parse::<http::uri::Authority>()
                    .map_err(|_| StartError::Header(format!("authority {a}")))?,
            ),
            None => None,
        };
        let tls = match &config.tls {
            Some(tls) => Some(UpstreamTls {
                connector: TlsConnector::from(
                    tls::client_config(tls)
                        .map_err(|e| StartError::Tls(format!("cluster {}: {e}", config.name)))?,
                ),
                server_name: tls.server_name.clone(),
            }),
            None => None,
        };
        let kept = old.filter(|old| {
            old.config.lb == config.lb
                && old.config.passive_health == config.passive_health
                && old.config.active_health == config.active_health
                && old.config.slow_start == config.slow_start
                && same_connections(&old.config, config)
        });
        let (balancer, pool) = match kept {
            Some(old) => {
                // The configuration replaces the set only when it knows one: a static list,
                // or the file a `discovery.file` read at load. A source that knows none
                // at load (DNS) owns the set: a reload must not empty it.
                if config.discovery.is_none() || !config.endpoints.is_empty() {
                    deferred
                        .endpoint_updates
                        .push((old.balancer.clone(), endpoints));
                }
                (old.balancer.clone(), old.pool)
            }
            None => (
                Arc::new(
                    Balancer::new(policy, passive, endpoints)
                        .with_slow_start(config.slow_start.unwrap_or_default()),
                ),
                PoolId::fresh(),
            ),
        };
        // A kept balancer keeps what watches it when its settings did not change: the
        // prober (and the verdicts it reached), the breaker and the in-flight count.
        let old_prober = kept
            .filter(|old| old.config.authority == config.authority)
            .and_then(|old| old._prober.clone());
        let limits = match kept {
            Some(old)
                if old.config.max_requests == config.max_requests
                    && old.config.circuit_breaker == config.circuit_breaker =>
            {
                old.limits.clone()
            }
            _ => Arc::new(ClusterLimits {
                stats: stats.cluster(&config.name),
                name: config.name.as_str().into(),
                max_requests: config.max_requests.map(InFlightLimit::new),
                breaker: config
                    .circuit_breaker
                    .map(|b| CircuitBreaker::new(rpcgate_discovery::policy::breaker(&b))),
            }),
        };
        let prober = old_prober.or_else(|| {
            config.active_health.as_ref().map(|policy| {
                Arc::new(health_check::spawn(
                    runtime,
                    balancer.clone(),
                    ProbeSettings {
                        cluster: config.name.as_str().into(),
                        policy: policy.clone(),
                        tls: tls.clone(),
                        authority: authority.clone(),
                        connect_timeout: config.connect_timeout,
                    },
                ))
            })
        });
        // The source goes on when the balancer and the source are the same; otherwise a
        // new one starts once the generation is built (its first set is what the
        // configuration read at load), and one it replaces on a kept balancer stops then.
        let carried = kept
            .filter(|old| old.config.discovery == config.discovery)
            .and_then(|old| old.discovery.get().cloned());
        if carried.is_none()
            && let Some(replaced) = kept.and_then(|old| old.discovery.get())
        {
            deferred.replaced_sources.push(replaced.clone());
        }
        let discovery = OnceLock::new();
        let starts = carried.is_none() && config.discovery.is_some();
        if let Some(carried) = carried {
            let _ = discovery.set(carried);
        }
        let state = Arc::new(ClusterState {
            _prober: prober,
            discovery,
            name: config.name.as_str().into(),
            pool,
            balancer,
            protocol: config.protocol,
            authority,
            connect_timeout: config.connect_timeout,
            hash_key,
            tls,
            in_panic: AtomicBool::new(false),
            limits,
            config: config.clone(),
        });
        if starts {
            deferred.new_sources.push(state.clone());
        }
        Ok(state)
    }
}

impl ClusterState {
    /// The configuration this state was built from.
    pub(crate) fn config(&self) -> &Cluster {
        &self.config
    }

    /// Why a cluster with a discovery source has no endpoints, for the message of a call
    /// that finds the set empty: what the source last said (etcd not reached, no key under
    /// the prefix, a DNS error), else that it has found none yet. `None` for a static list.
    pub(crate) fn empty_reason(&self) -> Option<String> {
        let kind = match self.config.discovery.as_ref()? {
            rpcgate_config::Discovery::File(_) => "file",
            rpcgate_config::Discovery::Dns { .. } => "DNS",
            rpcgate_config::Discovery::Etcd { .. } => "etcd",
        };
        Some(
            self.discovery
                .get()
                .and_then(|watch| watch.why_empty())
                .unwrap_or_else(|| format!("its {kind} discovery has found none yet")),
        )
    }

    /// A connect to one of the endpoints failed: a discovery source that can look again
    /// sooner (DNS) does, since a backend that went away is usually gone from it too.
    pub(crate) fn connect_failed(&self) {
        if let Some(discovery) = self.discovery.get() {
            discovery.nudge();
        }
    }

    /// Whether active health checks run for this cluster.
    pub(crate) fn actively_checked(&self) -> bool {
        self._prober.is_some()
    }
}

/// Whether connections made for `a` are right for `b` too.
fn same_connections(a: &Cluster, b: &Cluster) -> bool {
    a.protocol == b.protocol && a.tls == b.tls && a.connect_timeout == b.connect_timeout
}

fn header_pairs(pairs: &[(String, String)]) -> Result<Vec<(HeaderName, HeaderValue)>, StartError> {
    pairs
        .iter()
        .map(|(name, value)| {
            let header_name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| StartError::Header(name.clone()))?;
            let header_value =
                HeaderValue::from_str(value).map_err(|_| StartError::Header(name.clone()))?;
            Ok((header_name, header_value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clusters `one` (two endpoints) and `two`, a route to `route_to`; `one_extra` and
    /// `two_extra` are more keys for each cluster.
    fn config(route_to: &str, one_endpoints: &str, one_extra: &str, two_extra: &str) -> Config {
        let text = format!(
            r#"[log]
access_log = "off"
[[listeners]]
name = "edge"
address = "127.0.0.1:0"
[[listeners.routes]]
match.path_prefix = "/"
cluster = "{route_to}"
[[clusters]]
name = "one"
endpoints = [{one_endpoints}]
{one_extra}
[[clusters]]
name = "two"
endpoints = ["127.0.0.1:7003"]
{two_extra}
"#
        );
        rpcgate_config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    /// A generation from `config`, its probers (none here) on the test's runtime.
    fn build(config: &Config, previous: Option<&Generation>) -> Generation {
        let stats = Arc::new(Stats::new(true));
        Generation::build(config, previous, &Handle::current(), &stats)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const ENDPOINTS: &str = r#""127.0.0.1:7001", "127.0.0.1:7002""#;

    fn ids(cluster: &ClusterState) -> Vec<(String, u64)> {
        cluster
            .balancer
            .endpoints()
            .iter()
            .map(|e| (e.address().to_string(), e.id()))
            .collect()
    }

    fn cluster<'g>(generation: &'g Generation, name: &str) -> &'g Arc<ClusterState> {
        generation.cluster(name).expect("cluster")
    }

    #[tokio::test]
    async fn routes_follow_the_new_generation_and_unchanged_clusters_stay_the_same() {
        let first = build(&config("one", ENDPOINTS, "", ""), None);
        let second = build(&config("two", ENDPOINTS, "", ""), Some(&first));
        assert_eq!((first.number, second.number), (1, 2));
        let view = |g: &Generation| {
            let headers = http::HeaderMap::new();
            let request = crate::route::RequestView {
                path: "/a.B/C",
                authority: None,
                headers: &headers,
                grpc: true,
            };
            let listener = g.listener("edge").expect("listener");
            listener
                .route(&request)
                .expect("route")
                .cluster
                .name
                .to_string()
        };
        assert_eq!(view(&first), "one");
        assert_eq!(view(&second), "two");
        for name in ["one", "two"] {
            assert!(Arc::ptr_eq(cluster(&first, name), cluster(&second, name)));
        }
    }

    #[tokio::test]
    async fn endpoint_changes_keep_the_balancer_and_the_endpoints_that_stay() {
        let first = build(&config("one", ENDPOINTS, "", ""), None);
        let before = ids(cluster(&first, "one"));
        let grown = r#""127.0.0.1:7002", "127.0.0.1:7009", "127.0.0.1:7001""#;
        let second = build(&config("one", grown, "", ""), Some(&first));
        let (old, new) = (cluster(&first, "one"), cluster(&second, "one"));
        assert!(!Arc::ptr_eq(old, new), "a changed cluster gets a new state");
        assert!(Arc::ptr_eq(&old.balancer, &new.balancer));
        assert_eq!(old.pool, new.pool);
        let after = ids(new);
        for (address, id) in &before {
            assert!(
                after.contains(&(address.clone(), *id)),
                "{address} lost its state"
            );
        }
        assert_eq!(after.len(), 3);
        // Per-call settings change the same way.
        let third = build(
            &config("one", grown, r#"authority = "api.internal""#, ""),
            Some(&second),
        );
        assert!(Arc::ptr_eq(&new.balancer, &cluster(&third, "one").balancer));
    }

    #[tokio::test]
    async fn changed_connections_or_policies_start_afresh() {
        let first = build(&config("one", ENDPOINTS, "", ""), None);
        for extra in [
            r#"connect_timeout = "1s""#,
            r#"lb = "least_request""#,
            "passive_health = { max_fails = 3, fail_timeout = \"10s\" }",
        ] {
            let next = build(&config("one", ENDPOINTS, extra, ""), Some(&first));
            let (old, new) = (cluster(&first, "one"), cluster(&next, "one"));
            assert!(!Arc::ptr_eq(&old.balancer, &new.balancer), "{extra}");
            let (before, after) = (ids(old), ids(new));
            assert!(
                before.iter().zip(&after).all(|(b, a)| b.1 != a.1),
                "{extra}"
            );
            if extra.starts_with("connect_timeout") {
                assert_ne!(old.pool, new.pool);
            }
            // The other cluster did not change.
            assert!(Arc::ptr_eq(cluster(&first, "two"), cluster(&next, "two")));
        }
    }
}
