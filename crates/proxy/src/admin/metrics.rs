//! `GET /metrics`: Prometheus text exposition (format 0.0.4) of the contract §5 metrics.
//!
//! The values live in atomics on the hot path ([`crate::stats`], the endpoints'
//! [`Outcomes`](rpcgate_balance::Outcomes)); at scrape time a [`Collector`] reads them and
//! `prometheus-client` writes the exposition (names, `_total` suffixes, escaping, buckets),
//! so the format is the crate's and the hot path never takes its locks.
//! `docs/operations.md` lists every family.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use rpcgate_balance::{CODE_SLOTS, HistogramSnapshot, NO_CODE};

use super::View;
use crate::verdict::Code;

/// The exposition's content type.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The exposition of everything `view` sees now.
pub(crate) fn encode(view: &Arc<View>) -> Result<String, fmt::Error> {
    let mut registry = Registry::with_prefix("rpcgate");
    registry.register_collector(Box::new(Scrape(view.clone())));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The collector: reads the view at each scrape.
#[derive(Debug)]
struct Scrape(Arc<View>);

/// The `grpc_code` label of a code slot: the canonical name, empty for no gRPC status.
fn code_label(slot: usize) -> &'static str {
    if slot == NO_CODE {
        ""
    } else {
        Code(u32::try_from(slot).unwrap_or(2)).name()
    }
}

impl Collector for Scrape {
    fn encode(&self, mut out: DescriptorEncoder) -> Result<(), fmt::Error> {
        let view = &self.0;
        let generation = view.generations.load();
        let routes = view.stats.routes();

        // Calls, per route and method.
        let mut requests = Vec::new();
        let mut durations = Vec::new();
        let mut retries: BTreeMap<&str, u64> = BTreeMap::new();
        for route in &routes {
            *retries.entry(&route.route).or_default() += route.retries.load(Ordering::Relaxed);
            for method in route.methods() {
                let labels = [
                    ("listener", route.listener.to_string()),
                    ("route", route.route.to_string()),
                    ("cluster", route.cluster.to_string()),
                    ("grpc_service", method.service.to_string()),
                    ("grpc_method", method.method.to_string()),
                ];
                for (slot, count) in method.codes.snapshot().into_iter().enumerate() {
                    if count > 0 {
                        let mut with_code = labels.to_vec();
                        with_code.push(("grpc_code", code_label(slot).to_owned()));
                        requests.push((with_code, count));
                    }
                }
                durations.push((labels, method.latency.snapshot()));
            }
        }
        counters(
            &mut out,
            "requests",
            "Calls that ended, by listener, route, cluster, gRPC service and method (at most 1000 route/method label sets, the rest as `other`; empty for plain HTTP and unrouted calls) and final gRPC status.",
            requests,
        )?;
        histograms(
            &mut out,
            "request_duration_seconds",
            "Call duration from the request's arrival to the end of the response.",
            durations,
        )?;
        retries.remove("");
        counters(
            &mut out,
            "retries",
            "Retries made by routes' retry policies (transparent retries not counted).",
            retries
                .into_iter()
                .map(|(route, n)| ([("route", route.to_owned())], n)),
        )?;

        // Rate limits: refusals by route (the listener's limit counts on the route the call
        // took, "" when none), and the client addresses each limit tracks.
        let mut limited = Vec::new();
        for route in &routes {
            for (limit, counter) in [
                ("listener", &route.limited_by_listener),
                ("route", &route.limited_by_route),
            ] {
                let n = counter.load(Ordering::Relaxed);
                if n > 0 {
                    limited.push((
                        [
                            ("listener", route.listener.to_string()),
                            ("route", route.route.to_string()),
                            ("limit", limit.to_owned()),
                        ],
                        n,
                    ));
                }
            }
        }
        counters(
            &mut out,
            "rate_limited",
            "Calls refused by a rate_limit (RESOURCE_EXHAUSTED / HTTP 429), by the route they took (empty: none) and whether the listener's or the route's limit refused them.",
            limited,
        )?;
        let mut tracked = Vec::new();
        for listener in generation.listeners() {
            if let Some(limit) = &listener.rate_limit {
                tracked.push((
                    [
                        ("listener", listener.name.to_string()),
                        ("route", String::new()),
                    ],
                    limit.clone(),
                ));
            }
            for route in &listener.routes {
                if let Some(limit) = &route.rate_limit {
                    tracked.push((
                        [
                            ("listener", listener.name.to_string()),
                            ("route", route.name.to_string()),
                        ],
                        limit.clone(),
                    ));
                }
            }
        }
        gauges(
            &mut out,
            "rate_limit_clients",
            "Client addresses a per-client rate_limit keeps a bucket for (idle ones are dropped every second; bounded by max_clients).",
            tracked.iter().map(|(labels, limit)| {
                (
                    labels.clone(),
                    i64::try_from(limit.tracked()).unwrap_or(i64::MAX),
                )
            }),
        )?;
        gauges(
            &mut out,
            "rate_limit_crowded",
            "1 while a per-client rate_limit tracks max_clients addresses and calls share its 1024 crowd buckets by address hash.",
            tracked
                .iter()
                .map(|(labels, limit)| (labels.clone(), i64::from(limit.crowded()))),
        )?;

        // xDS (zero without clients, or with `admin.xds = false`).
        let no_labels: [(&str, String); 0] = [];
        let xds = &self.0.xds;
        gauges(
            &mut out,
            "xds_streams",
            "ADS streams of proxyless gRPC clients open now.",
            [(
                no_labels.clone(),
                i64::try_from(xds.streams.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
            )],
        )?;
        counters(
            &mut out,
            "xds_responses",
            "xDS responses sent to proxyless clients.",
            [(no_labels.clone(), xds.responses.load(Ordering::Relaxed))],
        )?;
        counters(
            &mut out,
            "xds_nacks",
            "xDS responses proxyless clients refused (NACK); each is logged at warn with the client's reason.",
            [(no_labels, xds.nacks.load(Ordering::Relaxed))],
        )?;

        // Endpoints.
        let mut upstream = Vec::new();
        let mut upstream_durations = Vec::new();
        let mut healthy = Vec::new();
        let mut in_flight = Vec::new();
        let mut ejections = Vec::new();
        let mut circuit = Vec::new();
        for cluster in generation.clusters() {
            for endpoint in cluster.balancer.endpoints().iter() {
                let labels = [
                    ("cluster", cluster.name.to_string()),
                    ("endpoint", endpoint.address().to_owned()),
                ];
                let outcomes = endpoint.outcomes();
                let codes: [u64; CODE_SLOTS] = outcomes.codes.snapshot();
                for (slot, count) in codes.into_iter().enumerate() {
                    if count > 0 {
                        let mut with_code = labels.to_vec();
                        with_code.push(("grpc_code", code_label(slot).to_owned()));
                        upstream.push((with_code, count));
                    }
                }
                upstream_durations.push((labels.clone(), outcomes.latency.snapshot()));
                healthy.push((labels.clone(), i64::from(endpoint.is_healthy())));
                in_flight.push((labels.clone(), i64::from(endpoint.in_flight())));
                ejections.push((labels, endpoint.ejections()));
            }
            if let Some(breaker) = &cluster.limits.breaker {
                circuit.push((
                    [("cluster", cluster.name.to_string())],
                    i64::from(breaker.snapshot().state.as_gauge()),
                ));
            }
        }
        counters(
            &mut out,
            "upstream_requests",
            "Attempts on each endpoint by final gRPC status (retries and transparent retries each count).",
            upstream,
        )?;
        histograms(
            &mut out,
            "upstream_request_duration_seconds",
            "Attempt duration on each endpoint, from the attempt's start to the end of its response.",
            upstream_durations,
        )?;
        gauges(
            &mut out,
            "endpoint_healthy",
            "1 while the endpoint takes calls (not ejected by passive health, not failing active checks), else 0.",
            healthy,
        )?;
        gauges(
            &mut out,
            "endpoint_in_flight",
            "Calls in flight on the endpoint.",
            in_flight,
        )?;
        counters(
            &mut out,
            "endpoint_ejections",
            "Passive-health ejections of the endpoint.",
            ejections,
        )?;
        gauges(
            &mut out,
            "circuit_state",
            "Circuit breaker state of clusters that have one: 0 closed, 1 open, 2 half-open.",
            circuit,
        )?;
        let transitions = view.stats.clusters().into_iter().flat_map(|c| {
            ["closed", "open", "half_open"]
                .into_iter()
                .enumerate()
                .map(move |(i, to)| {
                    (
                        [("cluster", c.name.to_string()), ("to", to.to_owned())],
                        c.circuit_transitions[i].load(Ordering::Relaxed),
                    )
                })
                .collect::<Vec<_>>()
        });
        counters(
            &mut out,
            "circuit_transitions",
            "Circuit breaker state changes, by the state entered.",
            transitions.filter(|(_, n)| *n > 0),
        )?;

        // Connections and configuration.
        let listeners = view.stats.listeners();
        gauges(
            &mut out,
            "connections_active",
            "Client connections open now.",
            listeners.iter().map(|l| {
                (
                    [("listener", l.name.to_string())],
                    i64::try_from(l.active.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
                )
            }),
        )?;
        counters(
            &mut out,
            "connections",
            "Client connections accepted (those refused at max_connections not included).",
            listeners.iter().map(|l| {
                (
                    [("listener", l.name.to_string())],
                    l.accepted.load(Ordering::Relaxed),
                )
            }),
        )?;
        counters(
            &mut out,
            "connections_refused",
            "Client connections closed at once because the listener had max_connections open.",
            listeners.iter().map(|l| {
                (
                    [("listener", l.name.to_string())],
                    l.refused.load(Ordering::Relaxed),
                )
            }),
        )?;
        counters(
            &mut out,
            "access_denied",
            "Client connections from addresses the listener's allow/deny refuses (their calls get PERMISSION_DENIED).",
            listeners.iter().map(|l| {
                (
                    [("listener", l.name.to_string())],
                    l.access_denied.load(Ordering::Relaxed),
                )
            }),
        )?;
        counters(
            &mut out,
            "tls_handshake_failures",
            "TLS handshakes with clients that failed or did not finish within handshake_timeout.",
            listeners.iter().map(|l| {
                (
                    [("listener", l.name.to_string())],
                    l.tls_failures.load(Ordering::Relaxed),
                )
            }),
        )?;
        counters(
            &mut out,
            "config_reloads",
            "Configuration reloads, by result (ok: in use; error: refused, the old one kept).",
            [
                (
                    [("result", "ok".to_owned())],
                    view.stats.reloads_ok.load(Ordering::Relaxed),
                ),
                (
                    [("result", "error".to_owned())],
                    view.stats.reloads_failed.load(Ordering::Relaxed),
                ),
            ],
        )?;
        gauges(
            &mut out,
            "config_generation",
            "The configuration generation in use (1 at start, +1 per successful reload).",
            [(
                Vec::<(&str, String)>::new(),
                i64::try_from(generation.number).unwrap_or(i64::MAX),
            )],
        )?;
        counters(
            &mut out,
            "access_log_dropped",
            "Access-log lines dropped because the writer fell behind (the calls themselves were not affected).",
            [(
                Vec::<(&str, String)>::new(),
                generation.access_log.dropped(),
            )],
        )?;
        gauges(
            &mut out,
            "build_info",
            "Always 1; the version label says which rpcgate runs.",
            [([("version", env!("CARGO_PKG_VERSION").to_owned())], 1)],
        )?;
        Ok(())
    }
}

fn counters<L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), fmt::Error> {
    let samples = samples.into_iter().map(|(l, v)| (l, ConstCounter::new(v)));
    family(out, name, help, MetricType::Counter, samples)
}

fn gauges<L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, i64)>,
) -> Result<(), fmt::Error> {
    let samples = samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
    family(out, name, help, MetricType::Gauge, samples)
}

/// One family: its descriptor, then one sample per label set.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), fmt::Error> {
    let mut family = out.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn histograms<L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, HistogramSnapshot)>,
) -> Result<(), fmt::Error> {
    let mut family = out.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, histogram) in samples {
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(
                histogram.sum_seconds(),
                histogram.count(),
                &histogram.per_bucket(),
                None,
            )?;
    }
    Ok(())
}
