//! `GET /status`: the proxy's state as JSON (contract §5), which the dashboard and
//! `rpcgate status` render. The fields of the contract first; besides them each cluster
//! carries its recent rates and chart series, and each endpoint why it is down, its
//! slow-start factor and its own rates.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rpcgate_config::{LbPolicy, RouteMatch};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::View;
use super::history::{Rates, Recent, round};
use crate::state::ClusterState;

/// The whole status document.
pub(crate) fn render(view: &View) -> Value {
    let generation = view.generations.load();
    let recent = view.history.recent();
    let listeners: Vec<Value> = view
        .core
        .listeners
        .borrow()
        .iter()
        .map(|l| {
            json!({
                "name": &*l.name,
                "address": l.address.to_string(),
                "tls": l.tls.is_some(),
                "connections_active": l.stats.active.load(Ordering::Relaxed),
                "connections_refused": l.stats.refused.load(Ordering::Relaxed),
            })
        })
        .collect();
    let routes: Vec<Value> = generation
        .listeners()
        .iter()
        .flat_map(|l| {
            l.routes.iter().map(|r| {
                json!({
                    "listener": &*l.name,
                    "name": &*r.name,
                    "cluster": &*r.cluster.name,
                    "match": describe(&r.matcher),
                    "retries": r.stats.retries.load(Ordering::Relaxed),
                })
            })
        })
        .collect();
    let clusters: Vec<Value> = generation
        .clusters()
        .iter()
        .map(|c| cluster(view, c, &recent))
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "generation": generation.number,
        "loaded_at": humantime::format_rfc3339_seconds(generation.loaded_at).to_string(),
        "uptime_s": round(view.started.elapsed().as_secs_f64()),
        "ready": view.ready.load(Ordering::Relaxed),
        "listeners": listeners,
        "routes": routes,
        "clusters": clusters,
    })
}

fn cluster(view: &View, cluster: &ClusterState, recent: &Recent) -> Value {
    let rates = recent
        .clusters
        .get(&cluster.name)
        .copied()
        .unwrap_or_default();
    let (calls, errors) = view.history.series(&cluster.name);
    let slow_start = cluster.balancer.slow_start();
    let checked = cluster.actively_checked();
    let now = Instant::now();
    let endpoints: Vec<Value> = cluster
        .balancer
        .endpoints()
        .iter()
        .map(|e| {
            let ejected = e.ejection_remaining();
            let active = e.active_healthy();
            let warming = (!slow_start.is_zero())
                .then(|| e.slow_start_factor(now, slow_start))
                .filter(|f| *f < 1.0);
            let down_reason = down_reason(e, ejected, checked && !active);
            let rates = recent.endpoints.get(&e.id()).copied().unwrap_or_default();
            let mut value = json!({
                "address": e.address(),
                "weight": e.weight(),
                "healthy": super::lookaside::healthy(e),
                "passive": if ejected.is_some() { "ejected" } else { "ok" },
                "active": match (checked, active) { (false, _) => "off", (true, true) => "up", (true, false) => "down" },
                "slow_start": warming.map(round),
                "down_reason": down_reason,
                "in_flight": e.in_flight(),
                "ewma_ms": round(e.ewma_ms()),
                "requests": e.requests(),
                "failures": e.failures(),
                "ejections": e.ejections(),
            });
            add_rates(&mut value, &rates);
            value
        })
        .collect();
    let in_flight: u32 = cluster
        .balancer
        .endpoints()
        .iter()
        .map(|e| e.in_flight())
        .sum();
    let breaker = cluster.limits.breaker.as_ref().map(|b| b.snapshot());
    let mut value = json!({
        "name": &*cluster.name,
        "lb": lb_name(&cluster.config().lb),
        "circuit": breaker.map_or("off", |b| b.state.as_str()),
        "discovery": cluster.config().discovery.as_ref().map(describe_discovery),
        "in_flight": in_flight,
        "error_ratio": if rates.calls_per_s > 0.0 { round(rates.errors_per_s / rates.calls_per_s) } else { 0.0 },
        "history": { "interval_s": 1, "calls_per_s": calls, "errors_per_s": errors },
        "endpoints": endpoints,
    });
    add_rates(&mut value, &rates);
    value
}

/// Where a cluster's endpoints come from, in words (`null` for a static list).
fn describe_discovery(discovery: &rpcgate_config::Discovery) -> String {
    match discovery {
        rpcgate_config::Discovery::File(path) => format!("file {}", path.display()),
        rpcgate_config::Discovery::Dns {
            host,
            port,
            refresh,
            ..
        } => format!(
            "DNS {host}:{port} every {}",
            humantime::format_duration(*refresh)
        ),
        rpcgate_config::Discovery::Etcd { servers, prefix } => {
            format!("etcd {} under {prefix}", servers.join(","))
        }
    }
}

fn add_rates(value: &mut Value, rates: &Rates) {
    if let Some(object) = value.as_object_mut() {
        object.insert("calls_per_s".into(), json!(round(rates.calls_per_s)));
        object.insert("errors_per_s".into(), json!(round(rates.errors_per_s)));
        object.insert("p99_ms".into(), json!(rates.p99_ms.map(round)));
    }
}

/// Why an endpoint gets no calls, in words; `None` while it is in rotation.
fn down_reason(
    endpoint: &rpcgate_balance::Endpoint,
    ejected: Option<Duration>,
    actively_down: bool,
) -> Option<String> {
    let mut reasons = Vec::new();
    if let Some(left) = ejected {
        let policy = endpoint.passive_policy();
        let cause = endpoint
            .ejection_cause()
            .map_or_else(String::new, |c| format!(" ({c})"));
        reasons.push(format!(
            "passive health: ejected after {} failure(s) within {:?}{cause}; back in {:.1}s",
            policy.max_fails,
            policy.fail_timeout,
            left.as_secs_f64()
        ));
    }
    if actively_down {
        reasons.push("active health check failing".to_owned());
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// The `lb` value as the file spells it.
pub(crate) fn lb_name(lb: &LbPolicy) -> &'static str {
    match lb {
        LbPolicy::RoundRobin => "round_robin",
        LbPolicy::LeastRequest => "least_request",
        LbPolicy::P2cEwma => "p2c_ewma",
        LbPolicy::Random => "random",
        LbPolicy::RingHash(_) => "ring_hash",
    }
}

/// A route's match in a few words, e.g. `service=pkg.Svc`, `prefix=/`.
fn describe(m: &RouteMatch) -> String {
    let mut parts = Vec::new();
    let fields = [
        ("service", &m.service),
        ("method", &m.method),
        ("path", &m.path),
        ("prefix", &m.path_prefix),
        ("authority", &m.authority),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            parts.push(format!("{name}={value}"));
        }
    }
    for (name, value) in &m.headers {
        parts.push(format!("header {name}={value}"));
    }
    if let Some(grpc) = m.grpc {
        parts.push(format!("grpc={grpc}"));
    }
    if parts.is_empty() {
        "everything".to_owned()
    } else {
        parts.join(" ")
    }
}
