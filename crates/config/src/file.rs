//! The serde model of `rpcgate.toml`, key for key as contract §2 lists it.
//!
//! This is step 1 of loading a configuration: it only says which keys exist and what
//! TOML type each one has. Every struct is `deny_unknown_fields`, so a misspelt key is an
//! error at its location rather than a silently ignored setting. Values that validation
//! has to point at later carry a [`Spanned`] wrapper (byte offsets into the file), which
//! is how every error can say `file:line:col`.
//!
//! Durations and addresses stay strings here and are parsed in [`crate::validate`], so
//! that one bad value does not hide the other errors of the same table.
//!
//! Adding a key: `docs/adding-a-key.md` lists every file to touch, in order.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
pub use toml::Spanned;

/// A whole `rpcgate.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[server]`: process-wide settings.
    pub server: Option<Spanned<ServerFile>>,
    /// `[admin]`: the admin API; absent = no admin API.
    pub admin: Option<Spanned<AdminFile>>,
    /// `[log]`: logging and the access log.
    pub log: Option<Spanned<LogFile>>,
    /// `[[listeners]]`: the ports clients connect to, in file order.
    #[serde(default)]
    pub listeners: Vec<Spanned<ListenerFile>>,
    /// `[[clusters]]`: the backend sets routes send calls to, in file order.
    #[serde(default)]
    pub clusters: Vec<Spanned<ClusterFile>>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Worker threads; `0` means one per CPU (default: [`crate::defaults::WORKERS`]).
    pub workers: Option<Spanned<usize>>,
    /// After SIGTERM, how long in-flight calls may finish (duration; default:
    /// [`crate::defaults::DRAIN_TIMEOUT`]).
    pub drain_timeout: Option<Spanned<String>>,
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Socket address of the admin HTTP server, e.g. `"127.0.0.1:9901"`.
    pub address: Spanned<String>,
    /// Serve xDS (ADS) on the admin address (default `true`).
    pub xds: Option<Spanned<bool>>,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `error | warn | info | debug | trace` (default: [`crate::defaults::LOG_LEVEL`]).
    pub level: Option<Spanned<String>>,
    /// `stdout | stderr | off | <file path>` (default: [`crate::defaults::ACCESS_LOG`]).
    pub access_log: Option<Spanned<String>>,
    /// `json | text` (default: [`crate::defaults::LOG_FORMAT`]).
    pub format: Option<Spanned<String>>,
    /// `reason | full`: how much a proxy-made error tells the client (default:
    /// [`crate::defaults::CLIENT_ERROR_DETAIL`]).
    pub client_error_detail: Option<Spanned<String>>,
}

/// `[[listeners]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    /// Unique name, used in logs and metrics.
    pub name: Spanned<String>,
    /// Socket address to bind, e.g. `"127.0.0.1:8080"`.
    pub address: Spanned<String>,
    /// Connections held at once (default: [`crate::defaults::MAX_CONNECTIONS`]).
    pub max_connections: Option<Spanned<usize>>,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS advertised to clients (default:
    /// [`crate::defaults::MAX_CONCURRENT_STREAMS`]).
    pub max_concurrent_streams: Option<Spanned<u32>>,
    /// Largest request header block accepted, in bytes (default:
    /// [`crate::defaults::MAX_HEADER_BYTES`]).
    pub max_header_bytes: Option<Spanned<u32>>,
    /// Response bytes queued per client stream beyond what its window lets out (default:
    /// [`crate::defaults::MAX_SEND_BUFFER_BYTES`]).
    pub max_send_buffer_bytes: Option<Spanned<u32>>,
    /// Close a connection with no open call after this long (duration; default:
    /// [`crate::defaults::IDLE_TIMEOUT`]).
    pub idle_timeout: Option<Spanned<String>>,
    /// Graceful GOAWAY after this connection age, `"0s"` = never (duration).
    pub max_connection_age: Option<Spanned<String>>,
    /// Also accept gRPC-Web and bridge it to gRPC.
    pub grpc_web: Option<Spanned<bool>>,
    /// Origins allowed by CORS for gRPC-Web from browsers.
    pub cors_allowed_origins: Option<Spanned<Vec<String>>>,
    /// Gzip non-gRPC HTTP responses for clients that accept it.
    pub compression: Option<Spanned<bool>>,
    /// CIDR allow list for client addresses; `deny` wins over `allow`.
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
    /// CIDR deny list for client addresses.
    pub deny: Option<Spanned<Vec<Spanned<String>>>>,
    /// Request rate limit for this listener.
    pub rate_limit: Option<Spanned<RateLimitFile>>,
    /// How long a response may wait on a client that does not take its bytes (duration;
    /// default: [`crate::defaults::SEND_TIMEOUT`]).
    pub send_timeout: Option<Spanned<String>>,
    /// `[listeners.tls]`: present = TLS with ALPN h2 and http/1.1.
    pub tls: Option<Spanned<ListenerTlsFile>>,
    /// `[[listeners.routes]]`: first match wins, in file order.
    #[serde(default)]
    pub routes: Vec<Spanned<RouteFile>>,
}

/// A `rate_limit` table (token bucket).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    /// Tokens added per second.
    pub requests_per_second: Spanned<f64>,
    /// Bucket size: calls allowed in a burst (checked to be 1 to `u32::MAX`).
    pub burst: Option<Spanned<i64>>,
    /// `client_ip | listener`: one bucket per client address or one for all.
    pub per: Option<Spanned<String>>,
    /// `per = "client_ip"`: client addresses tracked at most (default:
    /// [`crate::defaults::RATE_LIMIT_MAX_CLIENTS`]).
    pub max_clients: Option<Spanned<u64>>,
}

/// `[listeners.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsFile {
    /// PEM certificate chain of the listener.
    pub cert: Spanned<String>,
    /// PEM private key of the listener.
    pub key: Spanned<String>,
    /// PEM CA bundle; present = verify client certificates (mutual TLS).
    pub client_ca: Option<Spanned<String>>,
    /// `required | optional` (default with `client_ca`: [`crate::defaults::CLIENT_AUTH`]).
    pub client_auth: Option<Spanned<String>>,
    /// Total time a client may take to complete the TLS handshake (duration; default:
    /// [`crate::defaults::HANDSHAKE_TIMEOUT`]).
    pub handshake_timeout: Option<Spanned<String>>,
}

/// `[[listeners.routes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Optional name for logs and metrics (default: [`crate::defaults::route_name`]).
    pub name: Option<Spanned<String>>,
    /// What a request must look like; absent or empty matches everything.
    #[serde(rename = "match")]
    pub matcher: Option<Spanned<MatchFile>>,
    /// Name of the cluster the calls go to.
    pub cluster: Spanned<String>,
    /// Upper bound on the call (duration); the client's `grpc-timeout` also applies.
    pub timeout: Option<Spanned<String>>,
    /// Retry policy for this route.
    pub retry: Option<Spanned<RetryFile>>,
    /// Request rate limit for this route.
    pub rate_limit: Option<Spanned<RateLimitFile>>,
    /// Largest gRPC message accepted from the client (bytes).
    pub max_message_bytes: Option<Spanned<u64>>,
    /// CIDR allow list for this route.
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
    /// CIDR deny list for this route (deny wins over allow).
    pub deny: Option<Spanned<Vec<Spanned<String>>>>,
    /// Headers set on the request towards the backend.
    pub request_headers: Option<Spanned<HeaderMapFile>>,
    /// Headers set on the response towards the client.
    pub response_headers: Option<Spanned<HeaderMapFile>>,
}

/// A table of header names to values, e.g. `{ "x-env" = "prod" }`.
pub type HeaderMapFile = BTreeMap<Spanned<String>, Spanned<String>>;

/// A route's `match` table; all given conditions must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    /// gRPC service: the path is `/<service>/<anything>`.
    pub service: Option<Spanned<String>>,
    /// gRPC method `pkg.Service/Method`: the path is exactly `/<method>`.
    pub method: Option<Spanned<String>>,
    /// The path is exactly this.
    pub path: Option<Spanned<String>>,
    /// The path starts with this.
    pub path_prefix: Option<Spanned<String>>,
    /// `:authority` (or `Host`) equals this, ASCII case-insensitively.
    pub authority: Option<Spanned<String>>,
    /// Each named header has exactly this value.
    pub headers: Option<Spanned<HeaderMapFile>>,
    /// `true`: only gRPC requests; `false`: only other requests.
    pub grpc: Option<Spanned<bool>>,
}

/// A route's `retry` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    /// Attempts in all, the first one included.
    pub max_attempts: Option<Spanned<u32>>,
    /// gRPC status names (snake case) that are retried, e.g. `"unavailable"`.
    pub on: Option<Spanned<Vec<Spanned<String>>>>,
    /// `linear | exponential` (default: [`crate::defaults::RETRY_BACKOFF`]).
    pub backoff: Option<Spanned<String>>,
    /// First backoff interval (duration).
    pub base_interval: Option<Spanned<String>>,
    /// Largest backoff interval (duration).
    pub max_interval: Option<Spanned<String>>,
    /// Randomise each backoff interval.
    pub jitter: Option<Spanned<bool>>,
    /// Retries allowed as a share of the route's recent calls.
    pub budget_ratio: Option<Spanned<f64>>,
    /// How long one attempt may wait for its response head before it is cancelled and,
    /// if the policy allows, retried (duration; Envoy's name).
    pub per_try_timeout: Option<Spanned<String>>,
}

/// `[[clusters]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Unique name that routes refer to.
    pub name: Spanned<String>,
    /// Static endpoints: `"host:port"` or `{ address = "host:port", weight = N }`.
    pub endpoints: Option<Spanned<Vec<Spanned<EndpointFile>>>>,
    /// `round_robin | least_request | p2c_ewma | random | ring_hash` (default:
    /// [`crate::defaults::LB`]).
    pub lb: Option<Spanned<String>>,
    /// `ring_hash` only: `header:NAME | client_ip`.
    pub hash_key: Option<Spanned<String>>,
    /// `h2c | h2 | http1` (default: [`crate::defaults::PROTOCOL`]).
    pub protocol: Option<Spanned<String>>,
    /// `:authority` sent to the backends; absent or `""` keeps the client's.
    pub authority: Option<Spanned<String>>,
    /// Bound on each step of connecting to a backend: TCP, TLS, HTTP/2 handshake (duration; default:
    /// [`crate::defaults::CONNECT_TIMEOUT`]).
    pub connect_timeout: Option<Spanned<String>>,
    /// Ramp-up time of a new or recovered endpoint (duration, `"0s"` = none).
    pub slow_start: Option<Spanned<String>>,
    /// Concurrent calls allowed to this cluster; 0 = unlimited.
    pub max_requests: Option<Spanned<u64>>,
    /// NGINX-style passive health.
    pub passive_health: Option<Spanned<PassiveHealthFile>>,
    /// gRPC health checking.
    pub active_health: Option<Spanned<ActiveHealthFile>>,
    /// Per-cluster circuit breaker.
    pub circuit_breaker: Option<Spanned<CircuitBreakerFile>>,
    /// Dynamic endpoints (replaces `endpoints`).
    pub discovery: Option<Spanned<DiscoveryFile>>,
    /// `[clusters.tls]`: upstream TLS, goes with `protocol = "h2"`.
    pub tls: Option<Spanned<ClusterTlsFile>>,
}

/// One endpoint of a cluster, in either of its two forms.
#[derive(Debug, Clone)]
pub enum EndpointFile {
    /// `"host:port"`, with the default weight ([`crate::defaults::WEIGHT`]).
    Address(String),
    /// `{ address = "host:port", weight = N }`.
    Table(EndpointTableFile),
}

/// The table form of an endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointTableFile {
    /// `host:port`.
    pub address: Spanned<String>,
    /// Relative share of calls, at least 1 (default: [`crate::defaults::WEIGHT`]). Signed
    /// so that `0` and negative
    /// values get a clear message from validation instead of a type error.
    pub weight: Option<Spanned<i64>>,
}

impl<'de> Deserialize<'de> for EndpointFile {
    /// Hand-written rather than `#[serde(untagged)]`: untagged enums buffer the value,
    /// which loses spans and turns every mistake into "did not match any variant".
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EndpointVisitor;
        impl<'de> Visitor<'de> for EndpointVisitor {
            type Value = EndpointFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""host:port" or { address = "host:port", weight = N }"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(EndpointFile::Address(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                EndpointTableFile::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(EndpointFile::Table)
            }
        }
        deserializer.deserialize_any(EndpointVisitor)
    }
}

/// `passive_health = { max_fails, fail_timeout }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthFile {
    /// Failures within `fail_timeout` that eject an endpoint; 0 turns it off (default:
    /// [`crate::defaults::PASSIVE_HEALTH_MAX_FAILS`]).
    pub max_fails: Option<Spanned<u32>>,
    /// Failure window and ejection time (duration; default:
    /// [`crate::defaults::PASSIVE_HEALTH_FAIL_TIMEOUT`]).
    pub fail_timeout: Option<Spanned<String>>,
}

/// `active_health = { ... }`: `grpc.health.v1.Health/Check` probes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveHealthFile {
    /// Time between probes (duration).
    pub interval: Option<Spanned<String>>,
    /// Time a probe may take (duration).
    pub timeout: Option<Spanned<String>>,
    /// Service name sent in the check; `""` = the whole server.
    pub grpc_service: Option<Spanned<String>>,
    /// Consecutive failures that mark an endpoint unhealthy.
    pub unhealthy_threshold: Option<Spanned<u32>>,
    /// Consecutive successes that mark it healthy again.
    pub healthy_threshold: Option<Spanned<u32>>,
}

/// `circuit_breaker = { ... }` (the gobreaker model).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerFile {
    /// Failure ratio in the window that opens the circuit.
    pub failure_ratio: Option<Spanned<f64>>,
    /// Calls that must have ended in the window before the ratio counts.
    pub min_requests: Option<Spanned<u32>>,
    /// Rolling window (duration).
    pub window: Option<Spanned<String>>,
    /// How long the circuit stays open (duration).
    pub open_duration: Option<Spanned<String>>,
    /// Trial calls let through when half-open.
    pub half_open_requests: Option<Spanned<u32>>,
}

/// `discovery = { dns = ... } | { etcd = [...], prefix = ... } | { file = ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryFile {
    /// DNS name and port whose addresses are the endpoints.
    pub dns: Option<Spanned<String>>,
    /// Re-resolve interval for `dns` (duration).
    pub refresh: Option<Spanned<String>>,
    /// `dns`: the DNS server to ask, `IP:PORT` (default: the system's, /etc/resolv.conf).
    pub resolver: Option<Spanned<String>>,
    /// etcd cluster addresses.
    pub etcd: Option<Spanned<Vec<Spanned<String>>>>,
    /// etcd key prefix holding the endpoints.
    pub prefix: Option<Spanned<String>>,
    /// Watched JSON file with an array of endpoints.
    pub file: Option<Spanned<String>>,
}

/// `[clusters.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsFile {
    /// PEM CA bundle that backends' certificates must chain to.
    pub ca: Option<Spanned<String>>,
    /// PEM client certificate; present = mutual TLS towards the backends.
    pub cert: Option<Spanned<String>>,
    /// PEM client private key.
    pub key: Option<Spanned<String>>,
    /// Name checked in the backends' certificates (and sent as SNI).
    pub server_name: Option<Spanned<String>>,
    /// DANGEROUS: accept any backend certificate (no verification); `check` warns.
    pub insecure_skip_verify: Option<Spanned<bool>>,
}
