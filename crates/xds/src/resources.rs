//! rpcgate's configuration and live endpoint view as xDS resources, the way gRPC's xDS
//! client reads them (gRFC A27, A28, A42, A48):
//!
//! - **LDS**: a Listener per rpcgate listener and per cluster, each an `api_listener` with
//!   an `HttpConnectionManager` whose route table is inline (no RDS round trip) and whose
//!   last filter is the router. A listener's routes keep their order; a cluster's Listener
//!   sends every call to that cluster. The target `xds:///NAME` picks the Listener NAME.
//! - **CDS**: a Cluster per rpcgate cluster, `type EDS` over ADS, its `lb` as a
//!   `load_balancing_policy` gRPC knows (`round_robin`/`random` → round robin;
//!   `least_request`/`p2c_ewma` → least request, round robin for older clients; both
//!   inside `wrr_locality`; `ring_hash` → ring hash with xxHash), `max_requests` as the
//!   circuit breaker's `max_requests`.
//! - **EDS**: a ClusterLoadAssignment per cluster, every endpoint as an IP literal with
//!   its `health_status` from rpcgate's view. gRPC's round robin ignores endpoint weights,
//!   so when weights differ each endpoint is a locality of its own with its weight as the
//!   locality weight (`wrr_locality` honours those); otherwise, and for ring hash, one
//!   locality with every endpoint.
//!
//! What gRPC cannot express is left out (see `docs/proxyless.md`): routes with
//! `match.authority` or `match.grpc = false`, clusters that are not h2c (and the routes
//! to them), ACLs, rate limits, headers set on requests and responses, passive health of
//! the clients' own calls, and slow start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::load_balancing_policies::least_request::v3::LeastRequest;
use envoy_types::pb::envoy::extensions::load_balancing_policies::ring_hash::v3::RingHash;
use envoy_types::pb::envoy::extensions::load_balancing_policies::round_robin::v3::RoundRobin;
use envoy_types::pb::envoy::extensions::load_balancing_policies::wrr_locality::v3::WrrLocality;
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use prost::{Message, Name};
use rpcgate_config::{Config, HashKey, LbPolicy, RetryPolicy, RouteMatch};

/// The type URLs of the four resource kinds.
pub mod type_url {
    /// Listener (LDS).
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// RouteConfiguration (RDS; rpcgate inlines route tables, so none is served).
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// Cluster (CDS).
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// ClusterLoadAssignment (EDS).
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
}

/// One endpoint as rpcgate sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    /// Its address, resolved to an IP literal.
    pub address: SocketAddr,
    /// Relative share (≥ 1).
    pub weight: u32,
    /// Whether rpcgate sends it calls now (active health, passive health, breaker).
    pub healthy: bool,
}

/// What the xDS resources are built from: the configuration in use, and each cluster's
/// endpoints now. Two snapshots that compare equal give the same resources.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The configuration generation's number, for logs.
    pub generation: u64,
    /// The configuration.
    pub config: std::sync::Arc<Config>,
    /// Each cluster's endpoints, by cluster name.
    pub endpoints: BTreeMap<String, Vec<EndpointView>>,
}

/// Every resource of every kind, by name, each as the `Any` a response carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// By type URL, then name.
    pub by_type: BTreeMap<&'static str, BTreeMap<String, Any>>,
}

impl Resources {
    /// The resources of `type_url` (empty for a kind rpcgate does not serve).
    pub fn of(&self, type_url: &str) -> Option<&BTreeMap<String, Any>> {
        self.by_type.get(type_url)
    }

    /// A version for the resources of a kind: a hash of them all, so equal content means
    /// an equal version in every rpcgate of a fleet and across restarts.
    pub fn version(&self, type_url: &str) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        if let Some(resources) = self.of(type_url) {
            for (name, any) in resources {
                for byte in name.bytes().chain([0]).chain(any.value.iter().copied()) {
                    hash ^= u64::from(byte);
                    hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
                }
            }
        }
        format!("{hash:016x}")
    }
}

/// `m` as an `Any`.
fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// A protobuf `Duration`.
fn duration(d: Duration) -> envoy_types::pb::google::protobuf::Duration {
    envoy_types::pb::google::protobuf::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Builds every resource from a snapshot.
pub fn build(snapshot: &Snapshot) -> Resources {
    let config = &snapshot.config;
    let mut listeners = BTreeMap::new();
    for l in &config.listeners {
        let routes = l
            .routes
            .iter()
            .filter_map(|r| {
                let cluster = config.clusters.get(r.cluster).filter(|c| served(c))?;
                xds_route(
                    &r.matcher,
                    &cluster.name,
                    r.timeout,
                    r.retry.as_ref(),
                    &cluster.lb,
                )
            })
            .collect();
        listeners.insert(l.name.clone(), any(&api_listener(&l.name, routes)));
    }
    for c in config.clusters.iter().filter(|c| served(c)) {
        if listeners.contains_key(&c.name) {
            // A listener of the same name wins: its routes are what the file says.
            continue;
        }
        let all = xds_route(&RouteMatch::default(), &c.name, None, None, &c.lb);
        listeners.insert(
            c.name.clone(),
            any(&api_listener(&c.name, all.into_iter().collect())),
        );
    }
    let mut clusters = BTreeMap::new();
    let mut assignments = BTreeMap::new();
    for c in config.clusters.iter().filter(|c| served(c)) {
        clusters.insert(c.name.clone(), any(&xds_cluster(c)));
        let endpoints = snapshot
            .endpoints
            .get(&c.name)
            .map_or(&[][..], Vec::as_slice);
        let ring = matches!(c.lb, LbPolicy::RingHash(_));
        assignments.insert(
            c.name.clone(),
            any(&load_assignment(&c.name, endpoints, ring)),
        );
    }
    let mut by_type = BTreeMap::new();
    by_type.insert(type_url::LISTENER, listeners);
    by_type.insert(type_url::CLUSTER, clusters);
    by_type.insert(type_url::ENDPOINT, assignments);
    by_type.insert(type_url::ROUTE, BTreeMap::new());
    Resources { by_type }
}

/// Whether proxyless clients can call the cluster's backends as rpcgate does: h2c only.
/// TLS backends (`protocol = "h2"`) would need the client's own certificates (xDS
/// certificate providers, not served), and `http1` backends speak no gRPC; both are left
/// out, with the routes to them, rather than served as plaintext that cannot work.
fn served(cluster: &rpcgate_config::Cluster) -> bool {
    cluster.protocol == rpcgate_config::UpstreamProtocol::H2c
}

/// A Listener for the target NAME: an HTTP connection manager with an inline route table
/// and the router filter.
fn api_listener(name: &str, routes: Vec<route::Route>) -> listener::Listener {
    let manager = hcm::HttpConnectionManager {
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(
            route::RouteConfiguration {
                name: name.to_owned(),
                virtual_hosts: vec![route::VirtualHost {
                    name: name.to_owned(),
                    domains: vec!["*".to_owned()],
                    routes,
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        http_filters: vec![hcm::HttpFilter {
            name: "envoy.filters.http.router".to_owned(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
                &Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    listener::Listener {
        name: name.to_owned(),
        api_listener: Some(listener::ApiListener {
            api_listener: Some(any(&manager)),
        }),
        ..Default::default()
    }
}

/// The path condition of a route, or `None` when its conditions cannot all hold for a
/// gRPC call (so the route is left out).
fn path_specifier(m: &RouteMatch) -> Option<route::route_match::PathSpecifier> {
    use route::route_match::PathSpecifier;
    // A gRPC client never sends a non-gRPC request, and picks no route by authority (its
    // target picks the Listener): such routes cannot be expressed, so they are left out.
    if m.grpc == Some(false) || m.authority.is_some() {
        return None;
    }
    let exact = m
        .path
        .clone()
        .or_else(|| m.method.as_ref().map(|method| format!("/{method}")));
    let prefixes: Vec<String> = m
        .service
        .as_ref()
        .map(|s| format!("/{s}/"))
        .into_iter()
        .chain(m.path_prefix.clone())
        .collect();
    if let Some(path) = exact {
        if let Some(method) = &m.method
            && m.path.as_ref().is_some_and(|p| *p != format!("/{method}"))
        {
            return None;
        }
        return prefixes
            .iter()
            .all(|p| path.starts_with(p.as_str()))
            .then_some(PathSpecifier::Path(path));
    }
    // The longest prefix, when the others are prefixes of it; otherwise none matches both.
    let longest = prefixes
        .iter()
        .max_by_key(|p| p.len())
        .cloned()
        .unwrap_or_default();
    prefixes
        .iter()
        .all(|p| longest.starts_with(p.as_str()))
        .then_some(PathSpecifier::Prefix(longest))
}

/// A route: its match, and the action sending calls to `cluster`.
fn xds_route(
    m: &RouteMatch,
    cluster: &str,
    timeout: Option<Duration>,
    retry: Option<&RetryPolicy>,
    lb: &LbPolicy,
) -> Option<route::Route> {
    let headers = m
        .headers
        .iter()
        .map(|(name, value)| route::HeaderMatcher {
            name: name.clone(),
            header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(
                StringMatcher {
                    match_pattern: Some(MatchPattern::Exact(value.clone())),
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .collect();
    let hash_policy = match lb {
        LbPolicy::RingHash(HashKey::Header(name)) => vec![route::route_action::HashPolicy {
            policy_specifier: Some(route::route_action::hash_policy::PolicySpecifier::Header(
                route::route_action::hash_policy::Header {
                    header_name: name.clone(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }],
        _ => Vec::new(),
    };
    let action = route::RouteAction {
        cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(
            cluster.to_owned(),
        )),
        max_stream_duration: timeout.map(|t| route::route_action::MaxStreamDuration {
            max_stream_duration: Some(duration(t)),
            ..Default::default()
        }),
        retry_policy: retry.map(retry_policy).filter(|p| !p.retry_on.is_empty()),
        hash_policy,
        ..Default::default()
    };
    Some(route::Route {
        r#match: Some(route::RouteMatch {
            path_specifier: Some(path_specifier(m)?),
            headers,
            ..Default::default()
        }),
        action: Some(route::route::Action::Route(action)),
        ..Default::default()
    })
}

/// The gRPC status names gRPC's xDS retry policy understands (gRFC A44).
fn retry_on(codes: &[u32]) -> String {
    codes
        .iter()
        .filter_map(|code| match code {
            1 => Some("cancelled"),
            4 => Some("deadline-exceeded"),
            8 => Some("resource-exhausted"),
            13 => Some("internal"),
            14 => Some("unavailable"),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A route's `retry` table as gRPC's retry policy.
fn retry_policy(retry: &RetryPolicy) -> route::RetryPolicy {
    route::RetryPolicy {
        retry_on: retry_on(&retry.on),
        num_retries: Some(UInt32Value {
            value: retry.max_attempts.saturating_sub(1),
        }),
        retry_back_off: Some(route::retry_policy::RetryBackOff {
            base_interval: Some(duration(retry.base_interval)),
            max_interval: Some(duration(retry.max_interval)),
        }),
        ..Default::default()
    }
}

/// One entry of a `load_balancing_policy` list.
fn policy<M: Message + Name>(name: &str, config: &M) -> cluster::load_balancing_policy::Policy {
    cluster::load_balancing_policy::Policy {
        typed_extension_config: Some(core::TypedExtensionConfig {
            name: name.to_owned(),
            typed_config: Some(any(config)),
        }),
    }
}

/// The cluster's `lb` as a `load_balancing_policy` gRPC's xDS client knows (gRFC A52).
fn load_balancing(lb: &LbPolicy) -> cluster::LoadBalancingPolicy {
    let pickers = match lb {
        LbPolicy::RingHash(_) => {
            return cluster::LoadBalancingPolicy {
                policies: vec![policy(
                    "envoy.load_balancing_policies.ring_hash",
                    &RingHash {
                        hash_function: envoy_types::pb::envoy::extensions::load_balancing_policies::ring_hash::v3::ring_hash::HashFunction::XxHash as i32,
                        ..Default::default()
                    },
                )],
            };
        }
        LbPolicy::LeastRequest | LbPolicy::P2cEwma => vec![
            policy(
                "envoy.load_balancing_policies.least_request",
                &LeastRequest::default(),
            ),
            policy(
                "envoy.load_balancing_policies.round_robin",
                &RoundRobin::default(),
            ),
        ],
        LbPolicy::RoundRobin | LbPolicy::Random => vec![policy(
            "envoy.load_balancing_policies.round_robin",
            &RoundRobin::default(),
        )],
    };
    cluster::LoadBalancingPolicy {
        policies: vec![policy(
            "envoy.load_balancing_policies.wrr_locality",
            &WrrLocality {
                endpoint_picking_policy: Some(cluster::LoadBalancingPolicy { policies: pickers }),
            },
        )],
    }
}

/// A Cluster: EDS over ADS, its policy and its in-flight limit.
fn xds_cluster(c: &rpcgate_config::Cluster) -> cluster::Cluster {
    cluster::Cluster {
        name: c.name.clone(),
        cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
            cluster::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::cluster::EdsClusterConfig {
            eds_config: Some(core::ConfigSource {
                config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
                    core::AggregatedConfigSource::default(),
                )),
                resource_api_version: core::ApiVersion::V3 as i32,
                ..Default::default()
            }),
            service_name: String::new(),
        }),
        load_balancing_policy: Some(load_balancing(&c.lb)),
        circuit_breakers: c.max_requests.map(|max| cluster::CircuitBreakers {
            thresholds: vec![cluster::circuit_breakers::Thresholds {
                max_requests: Some(UInt32Value {
                    value: u32::try_from(max).unwrap_or(u32::MAX),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An endpoint's address and health as an `LbEndpoint`.
fn lb_endpoint(e: &EndpointView, weight: Option<u32>) -> endpoint::LbEndpoint {
    endpoint::LbEndpoint {
        host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
            endpoint::Endpoint {
                address: Some(core::Address {
                    address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                        address: e.address.ip().to_string(),
                        port_specifier: Some(core::socket_address::PortSpecifier::PortValue(
                            u32::from(e.address.port()),
                        )),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            },
        )),
        health_status: if e.healthy {
            core::HealthStatus::Healthy as i32
        } else {
            core::HealthStatus::Unhealthy as i32
        },
        load_balancing_weight: weight.map(|value| UInt32Value { value }),
        ..Default::default()
    }
}

/// A ClusterLoadAssignment. With weights that differ (and no ring hash), a locality per
/// endpoint weighted as the endpoint, since gRPC's round robin ignores endpoint weights
/// but `wrr_locality` honours locality weights; otherwise one locality with every
/// endpoint (and its weight, which ring hash honours), so round robin and least request
/// pick among all of them.
fn load_assignment(
    name: &str,
    endpoints: &[EndpointView],
    ring: bool,
) -> endpoint::ClusterLoadAssignment {
    let locality = |sub_zone: String, weight: u32, members: Vec<endpoint::LbEndpoint>| {
        endpoint::LocalityLbEndpoints {
            locality: Some(core::Locality {
                sub_zone,
                ..Default::default()
            }),
            lb_endpoints: members,
            load_balancing_weight: Some(UInt32Value {
                value: weight.max(1),
            }),
            ..Default::default()
        }
    };
    let equal = endpoints.windows(2).all(|w| w[0].weight == w[1].weight);
    let localities = if endpoints.is_empty() {
        Vec::new()
    } else if ring || equal {
        vec![locality(
            name.to_owned(),
            1,
            endpoints
                .iter()
                .map(|e| lb_endpoint(e, Some(e.weight.max(1))))
                .collect(),
        )]
    } else {
        endpoints
            .iter()
            .map(|e| locality(e.address.to_string(), e.weight, vec![lb_endpoint(e, None)]))
            .collect()
    };
    endpoint::ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        endpoints: localities,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests fail loudly

    use std::sync::Arc;

    use super::*;

    fn snapshot(toml: &str, endpoints: &[(&str, &str, u32)]) -> Snapshot {
        let mut by_cluster: BTreeMap<String, Vec<EndpointView>> = BTreeMap::new();
        for (cluster, address, weight) in endpoints {
            by_cluster
                .entry((*cluster).to_owned())
                .or_default()
                .push(EndpointView {
                    address: address.parse().unwrap(),
                    weight: *weight,
                    healthy: true,
                });
        }
        Snapshot {
            generation: 1,
            config: Arc::new(rpcgate_config::parse(toml, "t.toml").unwrap()),
            endpoints: by_cluster,
        }
    }

    fn decode<M: Message + Default>(any: &Any) -> M {
        M::decode(any.value.as_slice()).unwrap()
    }

    fn routes(resources: &Resources, listener: &str) -> Vec<route::Route> {
        let l: listener::Listener = decode(&resources.of(type_url::LISTENER).unwrap()[listener]);
        let manager: hcm::HttpConnectionManager =
            decode(l.api_listener.unwrap().api_listener.as_ref().unwrap());
        match manager.route_specifier.unwrap() {
            hcm::http_connection_manager::RouteSpecifier::RouteConfig(c) => {
                c.virtual_hosts[0].routes.clone()
            }
            other => panic!("{other:?}"),
        }
    }

    const TWO: &str = r#"
[[listeners]]
name = "edge"
address = "127.0.0.1:0"
[[listeners.routes]]
match.authority = "api.example.com"
cluster = "a"
[[listeners.routes]]
match.service = "pkg.S"
cluster = "b"
[[listeners.routes]]
match.path_prefix = "/"
cluster = "a"
retry = { on = ["not_found"] }
[[clusters]]
name = "a"
endpoints = ["127.0.0.1:1", "127.0.0.1:2"]
[[clusters]]
name = "b"
protocol = "http1"
endpoints = ["127.0.0.1:3"]
"#;

    #[test]
    fn routes_grpc_cannot_take_are_left_out_and_so_are_non_h2c_clusters() {
        let r = build(&snapshot(
            TWO,
            &[("a", "127.0.0.1:1", 1), ("b", "127.0.0.1:3", 1)],
        ));
        let edge = routes(&r, "edge");
        assert_eq!(
            edge.len(),
            1,
            "the authority route and the http1 cluster's route go: {edge:#?}"
        );
        assert_eq!(
            edge[0].r#match.as_ref().unwrap().path_specifier,
            Some(route::route_match::PathSpecifier::Prefix("/".into()))
        );
        let route::route::Action::Route(action) = edge[0].action.clone().unwrap() else {
            panic!()
        };
        assert!(action.retry_policy.is_none(), "no code gRPC retries on");
        let clusters = r.of(type_url::CLUSTER).unwrap();
        assert!(clusters.contains_key("a") && !clusters.contains_key("b"));
    }

    #[test]
    fn weights_become_localities_only_when_they_differ() {
        let toml = TWO;
        let equal = build(&snapshot(
            toml,
            &[("a", "127.0.0.1:1", 2), ("a", "127.0.0.1:2", 2)],
        ));
        let cla: endpoint::ClusterLoadAssignment =
            decode(&equal.of(type_url::ENDPOINT).unwrap()["a"]);
        assert_eq!(cla.endpoints.len(), 1);
        assert_eq!(cla.endpoints[0].lb_endpoints.len(), 2);
        let unequal = build(&snapshot(
            toml,
            &[("a", "127.0.0.1:1", 1), ("a", "127.0.0.1:2", 3)],
        ));
        let cla: endpoint::ClusterLoadAssignment =
            decode(&unequal.of(type_url::ENDPOINT).unwrap()["a"]);
        let weights: Vec<u32> = cla
            .endpoints
            .iter()
            .map(|l| l.load_balancing_weight.as_ref().unwrap().value)
            .collect();
        assert_eq!(weights, [1, 3]);
        // Equal content, equal version; different content, different version.
        assert_eq!(
            equal.version(type_url::ENDPOINT),
            build(&snapshot(
                toml,
                &[("a", "127.0.0.1:1", 2), ("a", "127.0.0.1:2", 2)]
            ))
            .version(type_url::ENDPOINT)
        );
        assert_ne!(
            equal.version(type_url::ENDPOINT),
            unequal.version(type_url::ENDPOINT)
        );
    }
}
