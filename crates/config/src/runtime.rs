//! The typed runtime configuration: what the rest of rpcgate reads.
//!
//! Every value here has been validated: addresses parse, names are unique, each route's
//! cluster exists (routes refer to clusters by index), durations are positive where they
//! must be. Defaults are already applied (by [`crate::validate`], from [`crate::defaults`],
//! where each is stated once with its reason), so nothing downstream has to know what the
//! file left out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The whole validated configuration of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (for reloads and messages); `None` when parsed from text.
    pub source: Option<PathBuf>,
    /// Process-wide settings (`[server]`).
    pub server: Server,
    /// The admin endpoint (`[admin]`), when configured.
    pub admin: Option<Admin>,
    /// Logging and the access log (`[log]`).
    pub log: Log,
    /// Listeners in file order (`[[listeners]]`).
    pub listeners: Vec<Listener>,
    /// Clusters in file order (`[[clusters]]`); routes refer to them by index.
    pub clusters: Vec<Cluster>,
    /// Things that are valid but risky (`insecure_skip_verify`), one line each as
    /// `file:line:col: key: message`; `check` prints them, `run` logs them.
    pub warnings: Vec<String>,
}

/// `[server]`: process-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Worker threads, each with its own event loop; already resolved: `0` in the file
    /// becomes the number of CPUs, so this is at least 1. Default: see
    /// [`crate::defaults::WORKERS`].
    pub workers: usize,
    /// How long in-flight calls may finish after SIGTERM. Default: see
    /// [`crate::defaults::DRAIN_TIMEOUT`].
    pub drain_timeout: Duration,
}

/// `[admin]`: where the admin API listens.
#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// The address of the admin HTTP server.
    pub address: SocketAddr,
    /// `xds`: the admin address also serves Envoy's Aggregated Discovery Service to
    /// proxyless gRPC clients (contract §9). Default: on.
    pub xds: bool,
}

/// `[log]`: verbosity and the access log.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    /// `tracing` level filter: `error`, `warn`, `info`, `debug` or `trace`. Default: see
    /// [`crate::defaults::LOG_LEVEL`].
    pub level: String,
    /// Where access-log lines go. Default: see [`crate::defaults::ACCESS_LOG`].
    pub access_log: AccessLogTarget,
    /// Line format of the access log. Default: see [`crate::defaults::LOG_FORMAT`].
    pub format: LogFormat,
    /// How much a proxy-made error tells the client. Default: see
    /// [`crate::defaults::CLIENT_ERROR_DETAIL`].
    pub client_error_detail: ClientErrorDetail,
}

/// `log.client_error_detail`: what the `grpc-message` (or HTTP body) of an error the proxy
/// makes tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientErrorDetail {
    /// What happened and in which cluster, never a backend address or an internal error
    /// chain (those go to the log): what a client outside the operator's network may see.
    Reason,
    /// The full cause, backend addresses and upstream errors included: for development.
    Full,
}

/// Where the access log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// No access log.
    Off,
    /// Appended to this file.
    File(PathBuf),
}

/// Access-log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Space-separated fields, NGINX-like.
    Text,
}

/// A cluster's `discovery`: the source its endpoints follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// `file = "endpoints.json"`: a watched JSON array of endpoints (the path resolved
    /// against the configuration's folder).
    File(std::path::PathBuf),
    /// `dns = "name:port"`: every A/AAAA address of the name, with the port.
    Dns {
        /// The name to resolve.
        host: String,
        /// The port of every endpoint.
        port: u16,
        /// How often to resolve again. Default: see [`crate::defaults::DNS_REFRESH`].
        refresh: Duration,
        /// The DNS server to ask; `None`: the system's.
        resolver: Option<SocketAddr>,
    },
    /// `etcd = ["HOST:PORT", …]`: every key under `prefix` holds an endpoint in etcd's
    /// naming format (`{"Addr": "HOST:PORT", "Metadata": {"weight": N}}`).
    Etcd {
        /// etcd's client addresses, tried in turn.
        servers: Vec<String>,
        /// The key prefix; default `/rpcgate/services/CLUSTER/`.
        prefix: String,
    },
}

/// `[[listeners]]`: one port clients connect to.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// Address to bind.
    pub address: SocketAddr,
    /// Connections held at once; at the limit a new one is closed at once. Default: see
    /// [`crate::defaults::MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS advertised to clients. Default: see
    /// [`crate::defaults::MAX_CONCURRENT_STREAMS`].
    pub max_concurrent_streams: u32,
    /// Largest request header list accepted (HTTP/2 decoded size and HTTP/1.1 head).
    /// Default: see [`crate::defaults::MAX_HEADER_BYTES`].
    pub max_header_bytes: u32,
    /// Response bytes queued per client stream beyond what its flow-control window lets
    /// out. Default: see [`crate::defaults::MAX_SEND_BUFFER_BYTES`].
    pub max_send_buffer_bytes: u32,
    /// A connection with no open call for this long is closed. Default: see
    /// [`crate::defaults::IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// After this age (±10% jitter) a client connection gets a graceful GOAWAY, so
    /// long-lived HTTP/2 clients reconnect and spread over new proxies; `None` (the
    /// default, `"0s"`) never.
    pub max_connection_age: Option<Duration>,
    /// Routes in file order; the first that matches wins.
    pub routes: Vec<Route>,
    /// `[listeners.tls]`: TLS with ALPN h2 and http/1.1, when present.
    pub tls: Option<ListenerTls>,
    /// `allow` / `deny`: which client addresses may connect (checked once per connection).
    pub access: AccessList,
    /// `rate_limit`: calls allowed on this listener, when limited.
    pub rate_limit: Option<RateLimit>,
    /// `compression`: gzip compressible non-gRPC responses for clients that accept it.
    pub compression: bool,
    /// A connection whose responses wait this long on a client that takes none of their
    /// bytes is closed. Default: see [`crate::defaults::SEND_TIMEOUT`].
    pub send_timeout: Duration,
}

/// A `rate_limit` table: a token bucket (GCRA) of `burst` calls refilled at
/// `requests_per_second`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Calls per second allowed over time.
    pub requests_per_second: f64,
    /// Calls allowed at once after a quiet spell. Default: one second's worth
    /// ([`crate::defaults::rate_limit_burst`]).
    pub burst: u32,
    /// Whose calls share a bucket.
    pub per: RateLimitScope,
    /// `per = client_ip`: client addresses tracked at most; past it, new addresses share
    /// buckets. Default: see [`crate::defaults::RATE_LIMIT_MAX_CLIENTS`].
    pub max_clients: usize,
}

/// `rate_limit.per`: one bucket per client address or one for all calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitScope {
    /// One bucket per client address (an IPv6 client per /64).
    ClientIp,
    /// One bucket for all the calls of the listener (or route).
    Listener,
}

/// A PEM file named in the configuration, read when the configuration is loaded so that
/// `check` and a reload validate the TLS files too (an unreadable file is a config error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFile {
    /// The path as resolved (relative paths are relative to the config file's folder).
    pub path: PathBuf,
    /// The file's bytes.
    pub pem: Vec<u8>,
}

/// `[listeners.tls]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    /// Certificate chain, leaf first.
    pub cert: PemFile,
    /// Private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PemFile,
    /// CA bundle client certificates must chain to; present = mutual TLS.
    pub client_ca: Option<PemFile>,
    /// Whether a client certificate is required or optional (only with `client_ca`).
    /// Default: see [`crate::defaults::CLIENT_AUTH`].
    pub client_auth: ClientAuth,
    /// Total deadline for the handshake, so a stalled handshake cannot hold a connection.
    /// Default: see [`crate::defaults::HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
}

/// `client_auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for (no `client_ca`).
    None,
    /// A valid client certificate is required (the default with `client_ca`, see
    /// [`crate::defaults::CLIENT_AUTH`]).
    Required,
    /// A client certificate is verified when given; clients without one are accepted.
    Optional,
}

/// `[clusters.tls]`: TLS towards the backends (`protocol = "h2"`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterTls {
    /// CA bundle backend certificates must chain to; absent = the system's roots.
    pub ca: Option<PemFile>,
    /// Client certificate chain and key for mutual TLS towards the backends.
    pub identity: Option<(PemFile, PemFile)>,
    /// Name sent as SNI and checked in the backends' certificates; absent = the
    /// endpoint's host.
    pub server_name: Option<String>,
    /// Accept any backend certificate. Dangerous: only for tests.
    pub insecure_skip_verify: bool,
}

/// `[[listeners.routes]]`: which calls go to which cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// A name for logs and metrics: the file's `name` key if given. Default: see
    /// [`crate::defaults::route_name`].
    pub name: String,
    /// What a request must look like to take this route (all conditions must hold).
    pub matcher: RouteMatch,
    /// Index into [`Config::clusters`].
    pub cluster: usize,
    /// Upper bound on the call; the client's `grpc-timeout` also applies (smaller wins).
    pub timeout: Option<Duration>,
    /// Headers set on the request towards the backend (replacing any of the same name).
    pub request_headers: Vec<(String, String)>,
    /// Headers set on the response towards the client (replacing any of the same name).
    pub response_headers: Vec<(String, String)>,
    /// `retry`: retries beyond the transparent ones, when the route asks for them.
    pub retry: Option<RetryPolicy>,
    /// `allow` / `deny`: which client addresses may use this route.
    pub access: AccessList,
    /// `rate_limit`: calls allowed on this route, when limited.
    pub rate_limit: Option<RateLimit>,
    /// The largest gRPC message accepted from the client. Default: see
    /// [`crate::defaults::MAX_MESSAGE_BYTES`].
    pub max_message_bytes: u32,
}

/// A route's `retry` table: which final gRPC statuses are retried, how often, how far
/// apart, and within what share of the route's traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (so 1 means no retry). Default: see
    /// [`crate::defaults::RETRY_MAX_ATTEMPTS`].
    pub max_attempts: u32,
    /// The gRPC status codes (numbers) that are retried. Default: see
    /// [`crate::defaults::RETRY_ON`].
    pub on: Vec<u32>,
    /// How the wait between attempts grows. Default: see [`crate::defaults::RETRY_BACKOFF`].
    pub backoff: RetryBackoff,
    /// The first wait. Default: see [`crate::defaults::RETRY_BASE_INTERVAL`].
    pub base_interval: Duration,
    /// The longest wait. Default: 10 × `base_interval` (see
    /// [`crate::defaults::retry_max_interval`]).
    pub max_interval: Duration,
    /// Each wait is drawn uniformly between 0 and its computed value ("full jitter").
    /// Default: see [`crate::defaults::RETRY_JITTER`].
    pub jitter: bool,
    /// Retries allowed as a share of the route's calls over the last 10 s. Default: see
    /// [`crate::defaults::RETRY_BUDGET_RATIO`].
    pub budget_ratio: f64,
    /// How long one attempt may wait for its response head; `None` = only the call's
    /// deadline applies.
    pub per_try_timeout: Option<Duration>,
}

/// How the wait between retries grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryBackoff {
    /// `base_interval × n`, capped at `max_interval`; with `max_interval = base_interval`
    /// a fixed wait (go-grpc-middleware's `BackoffLinear`).
    Linear,
    /// `base_interval × 2^(n-1)`, capped at `max_interval` (gRPC's and Envoy's).
    Exponential,
}

/// The `match` table of a route. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteMatch {
    /// `match.service`: the path is `/<service>/<anything>`.
    pub service: Option<String>,
    /// `match.method`: the path is exactly `/<method>` (`pkg.Service/Method`).
    pub method: Option<String>,
    /// `match.path`: the path is exactly this.
    pub path: Option<String>,
    /// `match.path_prefix`: the path starts with this.
    pub path_prefix: Option<String>,
    /// `match.authority`: `:authority` (or `Host`) equals this, ASCII case-insensitively.
    pub authority: Option<String>,
    /// `match.headers`: each named header (lower-case name) has exactly this value.
    pub headers: Vec<(String, String)>,
    /// `match.grpc`: `true` only gRPC requests (`content-type: application/grpc*`),
    /// `false` only other requests.
    pub grpc: Option<bool>,
}

/// `[[clusters]]`: a set of identical backends and how calls are spread over them.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Unique name.
    pub name: String,
    /// Static endpoints in file order.
    pub endpoints: Vec<Endpoint>,
    /// The balancing policy. Default: see [`crate::defaults::LB`].
    pub lb: LbPolicy,
    /// Upstream protocol. Default: see [`crate::defaults::PROTOCOL`].
    pub protocol: UpstreamProtocol,
    /// `:authority` sent to the backends instead of the client's, when set.
    pub authority: Option<String>,
    /// How long each step of connecting to a backend may take (TCP, TLS, the HTTP/2
    /// handshake). Default: see
    /// [`crate::defaults::CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// Passive health (NGINX `max_fails`/`fail_timeout`). Default: see
    /// [`crate::defaults::PASSIVE_HEALTH_MAX_FAILS`] and
    /// [`crate::defaults::PASSIVE_HEALTH_FAIL_TIMEOUT`].
    pub passive_health: PassiveHealth,
    /// TLS towards the backends; `Some` exactly when `protocol` is `H2`.
    pub tls: Option<ClusterTls>,
    /// `max_requests`: calls in flight allowed to the cluster; `None` = unlimited (`0`).
    pub max_requests: Option<u64>,
    /// `circuit_breaker`, when the cluster has one.
    pub circuit_breaker: Option<CircuitBreaker>,
    /// `active_health`, when the cluster is probed.
    pub active_health: Option<ActiveHealth>,
    /// `slow_start`: how long a joining or recovered endpoint's share ramps up; `None` =
    /// off (`"0s"`, the default).
    pub slow_start: Option<Duration>,
    /// `discovery`: where the endpoints come from instead of a fixed list; `endpoints`
    /// then holds what the source gave when the configuration was loaded.
    pub discovery: Option<Discovery>,
}

/// A cluster's `active_health`: `grpc.health.v1.Health/Check` probes per endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveHealth {
    /// Time between two probes of an endpoint (a small jitter is added). Default: see
    /// [`crate::defaults::ACTIVE_HEALTH_INTERVAL`].
    pub interval: Duration,
    /// How long a probe may take. Default: see [`crate::defaults::ACTIVE_HEALTH_TIMEOUT`].
    pub timeout: Duration,
    /// The service name sent in the check; `""` asks about the whole server.
    pub grpc_service: String,
    /// Consecutive failed probes that mark an endpoint unhealthy. Default: see
    /// [`crate::defaults::ACTIVE_HEALTH_UNHEALTHY_THRESHOLD`].
    pub unhealthy_threshold: u32,
    /// Consecutive passed probes that mark it healthy again. Default: see
    /// [`crate::defaults::ACTIVE_HEALTH_HEALTHY_THRESHOLD`].
    pub healthy_threshold: u32,
}

/// A cluster's `circuit_breaker` (the gobreaker model over a rolling window).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CircuitBreaker {
    /// Failed share of the calls in the window that opens the circuit. Default: see
    /// [`crate::defaults::BREAKER_FAILURE_RATIO`].
    pub failure_ratio: f64,
    /// Calls that must have ended in the window before the ratio counts. Default: see
    /// [`crate::defaults::BREAKER_MIN_REQUESTS`].
    pub min_requests: u32,
    /// The rolling window. Default: see [`crate::defaults::BREAKER_WINDOW`].
    pub window: Duration,
    /// How long an open circuit rejects calls. Default: see
    /// [`crate::defaults::BREAKER_OPEN_DURATION`].
    pub open_duration: Duration,
    /// Trial calls let through half-open; that many consecutive successes close it.
    /// Default: see [`crate::defaults::BREAKER_HALF_OPEN_REQUESTS`].
    pub half_open_requests: u32,
}

/// One backend address with its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` as written; resolved when connecting.
    pub address: String,
    /// Relative share of calls, at least 1. Default: see [`crate::defaults::WEIGHT`].
    pub weight: u32,
}

/// How a cluster picks an endpoint for each call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbPolicy {
    /// Smooth weighted round robin (NGINX's).
    RoundRobin,
    /// Fewest in-flight calls (power of two choices, weighted).
    LeastRequest,
    /// Power of two choices over peak-EWMA latency × (in-flight + 1), as Linkerd and Finagle.
    P2cEwma,
    /// Weighted random.
    Random,
    /// Consistent hashing on a key taken from each call.
    RingHash(HashKey),
}

/// Where `ring_hash` takes its key from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The value of this request header (lower-case name); calls without it are spread at random.
    Header(String),
    /// The client's IP address.
    ClientIp,
}

/// The protocol spoken to a cluster's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/2 over plaintext TCP, prior knowledge (NGINX `grpc://`).
    H2c,
    /// HTTP/2 over TLS (NGINX `grpcs://`).
    H2,
    /// HTTP/1.1, for non-gRPC upstreams (NGINX `proxy_pass`).
    Http1,
}

/// NGINX-style passive health: after `max_fails` failures within `fail_timeout`, the
/// endpoint gets no calls for `fail_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveHealth {
    /// Failures that eject an endpoint; 0 turns passive health off.
    pub max_fails: u32,
    /// The window for counting failures and the length of an ejection.
    pub fail_timeout: Duration,
}

/// An IPv4 or IPv6 network in CIDR form (`10.0.0.0/8`, `::1/128`; a bare address is the
/// one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits cleared).
    pub network: std::net::IpAddr,
    /// The prefix length in bits.
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network. An IPv4 address written as IPv4-mapped IPv6
    /// (`::ffff:10.0.0.1`, what a dual-stack socket reports) counts as IPv4.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        };
        self.network.is_ipv4() == ip.is_ipv4() && self.masked(self.network) == self.masked(ip)
    }

    /// `ip` with the bits past this network's prefix cleared.
    pub fn masked(&self, ip: std::net::IpAddr) -> std::net::IpAddr {
        match ip {
            std::net::IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                std::net::IpAddr::V4((u32::from(v4) & mask).into())
            }
            std::net::IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                std::net::IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }
}

/// `allow` / `deny`: which client addresses may use a listener or a route. Deny wins; an
/// empty `allow` allows everyone not denied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    /// Networks allowed (empty: all).
    pub allow: Vec<Cidr>,
    /// Networks denied, whatever `allow` says.
    pub deny: Vec<Cidr>,
}

impl AccessList {
    /// Whether the list lets `ip` through.
    pub fn permits(&self, ip: std::net::IpAddr) -> bool {
        !self.deny.iter().any(|c| c.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip)))
    }

    /// Whether the list lets everyone through (nothing to check per connection or call).
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}
