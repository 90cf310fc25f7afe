//! Every default of the configuration, each stated once with the reason for it.
//!
//! When `rpcgate.toml` leaves a key out, [`crate::validate`] puts the value from here into
//! the runtime [`Config`](crate::Config); the doc comments of [`crate::runtime`] and
//! [`crate::file`] point here instead of repeating the numbers, so changing a default is a
//! change to this file alone (and to the tests that pin it).
//!
//! Keys whose absence means "none" have no constant: no `[admin]` is no admin API, no
//! `[listeners.tls]` is plaintext, no route `timeout` is no limit beyond the client's
//! `grpc-timeout`, no `match` matches every request, no cluster `authority` (or `""`)
//! keeps the client's, and `protocol = "h2"` without `[clusters.tls]` verifies the
//! backends against the system's roots with the endpoint's host as the server name
//! ([`ClusterTls::default`](crate::ClusterTls)).

use std::time::Duration;

use crate::runtime::{
    AccessLogTarget, ClientAuth, ClientErrorDetail, LbPolicy, LogFormat, RetryBackoff,
    UpstreamProtocol,
};

/// `server.workers`: `0`, one worker thread per CPU (as NGINX's `worker_processes auto`),
/// so the proxy uses the machine without tuning. Validation resolves it, so
/// [`Server::workers`](crate::Server::workers) is the real count (1 when the CPU count is
/// unknown).
pub const WORKERS: usize = 0;

/// `server.drain_timeout`: 30 s, how long in-flight calls may finish after SIGTERM:
/// Kubernetes' default termination grace period, so a drain ends before the pod is killed.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// `log.level`: `info`, so start-up, warnings and errors are seen without per-call noise
/// (the access log carries the calls).
pub const LOG_LEVEL: &str = "info";

/// `log.access_log`: stdout, as NGINX's `access_log` in containers.
pub const ACCESS_LOG: AccessLogTarget = AccessLogTarget::Stdout;

/// `log.format`: JSON, since the access log is read by machines first.
pub const LOG_FORMAT: LogFormat = LogFormat::Json;

/// `log.client_error_detail`: `reason`, so that clients learn what happened and in which
/// cluster but never the addresses or errors of the network behind the proxy (Envoy and
/// NGINX also keep upstream details out of client responses by default).
pub const CLIENT_ERROR_DETAIL: ClientErrorDetail = ClientErrorDetail::Reason;

/// `listeners.max_connections`: 10 000 (the value in the contract's key listing). A finite
/// bound, so a flood of connections is refused (closed at once) instead of exhausting file
/// descriptors and memory; multiplexing gRPC clients need few connections each.
pub const MAX_CONNECTIONS: usize = 10_000;

/// `listeners.max_concurrent_streams`: 256. Finite (the `h2` crate has no limit by default and
/// tonic removes hyper's), high enough for multiplexing clients.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

/// `listeners.max_header_bytes`: 16 KiB, NGINX's `large_client_header_buffers` order of
/// size. Edge-safe: hyper's own default is 16 MiB, an HPACK-bomb risk.
pub const MAX_HEADER_BYTES: u32 = 16 * 1024;

/// `listeners.max_send_buffer_bytes`: 400 KiB per client stream, h2's own default: room
/// for a 1 MiB message to stream without stalls, while a client that does not read holds
/// at most this (times `max_concurrent_streams` per connection) in rpcgate's memory;
/// the backend is read only as fast as the client takes bytes.
pub const MAX_SEND_BUFFER_BYTES: u32 = 400 * 1024;

/// `listeners.idle_timeout`: 5 min. Frees idle connections without churning healthy
/// pools (Envoy's stream idle default).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// `listeners.tls.handshake_timeout`: 10 s, a total deadline for the TLS handshake, so a
/// client that stalls or dribbles its handshake cannot hold a connection slot (slowloris).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `listeners.tls.client_auth` when `client_ca` is given: a client certificate is
/// required, since naming a CA for clients and then letting anonymous clients in would be
/// a surprise; `"optional"` has to be asked for. Without `client_ca` it is
/// [`ClientAuth::None`]: there is nothing to verify a certificate against.
pub const CLIENT_AUTH: ClientAuth = ClientAuth::Required;

/// `clusters.lb`: `round_robin`, NGINX's default; smooth weighted, so weights interleave
/// instead of bursting.
pub const LB: LbPolicy = LbPolicy::RoundRobin;

/// `clusters.protocol`: `h2c`, plaintext HTTP/2 with prior knowledge (NGINX's `grpc://`),
/// what gRPC backends on a private network usually speak; TLS towards the backends is
/// asked for with `"h2"`.
pub const PROTOCOL: UpstreamProtocol = UpstreamProtocol::H2c;

/// `clusters.connect_timeout`: 2 s. On a LAN a connect takes < 1 ms; 2 s fails fast while
/// surviving a SYN retry.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// `clusters.passive_health.max_fails`: 1, NGINX's default (`max_fails=1`), so a migrated
/// config behaves the same.
pub const PASSIVE_HEALTH_MAX_FAILS: u32 = 1;

/// `clusters.passive_health.fail_timeout`: 10 s, NGINX's default (`fail_timeout=10s`), so
/// a migrated config behaves the same.
pub const PASSIVE_HEALTH_FAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// An endpoint's `weight` (and the weight of the `"host:port"` form): 1, so endpoints
/// share calls equally unless told otherwise.
pub const WEIGHT: u32 = 1;

/// `routes.retry.max_attempts`: 3 attempts in all (the contract's listing value): two
/// retries ride out one restarting backend without tripling a struggling cluster's load.
pub const RETRY_MAX_ATTEMPTS: u32 = 3;

/// `routes.retry.on`: UNAVAILABLE only, the one code gRPC documents as "safe to retry"
/// for any call; others (RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, …) must be asked for.
pub const RETRY_ON: &[u32] = &[14];

/// `routes.retry.backoff`: exponential, as gRPC's own retry policy and Envoy.
pub const RETRY_BACKOFF: RetryBackoff = RetryBackoff::Exponential;

/// `routes.retry.base_interval`: 25 ms, Envoy's default: short enough to fit a retry into
/// a typical unary deadline, long enough for a restarted backend to accept again.
pub const RETRY_BASE_INTERVAL: std::time::Duration = Duration::from_millis(25);

/// `routes.retry.max_interval` when not given: 10 × `base_interval`, Envoy's rule.
pub fn retry_max_interval(base_interval: Duration) -> Duration {
    base_interval.saturating_mul(10)
}

/// `routes.retry.jitter`: on, so the retries of many clients after one outage do not
/// arrive in lockstep (full jitter, as gRPC and the AWS backoff study recommend).
pub const RETRY_JITTER: bool = true;

/// `routes.retry.budget_ratio`: 0.2, Linkerd's default: retries add at most 20% load to a
/// failing cluster.
pub const RETRY_BUDGET_RATIO: f64 = 0.2;

/// The most attempts a `retry` table may ask for: gRPC's retry policy caps
/// `maxAttempts` at 5; rpcgate allows up to 10 for slow-restarting fleets.
pub const RETRY_MAX_ATTEMPTS_LIMIT: u32 = 10;

/// `clusters.circuit_breaker.failure_ratio`: 0.6, the walkthrough's gobreaker
/// `ReadyToTrip` (failures / requests ≥ 0.6): most calls failing, not a few.
pub const BREAKER_FAILURE_RATIO: f64 = 0.6;

/// `clusters.circuit_breaker.min_requests`: 10, so two unlucky calls on a quiet cluster
/// do not open it.
pub const BREAKER_MIN_REQUESTS: u32 = 10;

/// `clusters.circuit_breaker.window`: 10 s, long enough to hold `min_requests` calls on a
/// modest service, short enough to forget an old incident.
pub const BREAKER_WINDOW: Duration = Duration::from_secs(10);

/// `clusters.circuit_breaker.open_duration`: 5 s (the walkthrough's gobreaker `Timeout`
/// is 4 s): a restarting backend gets a few seconds without traffic.
pub const BREAKER_OPEN_DURATION: Duration = Duration::from_secs(5);

/// `clusters.circuit_breaker.half_open_requests`: 3, the walkthrough's gobreaker
/// `MaxRequests`: three trial calls in a row must succeed before traffic flows again.
pub const BREAKER_HALF_OPEN_REQUESTS: u32 = 3;

/// `clusters.active_health.interval`: 2 s (the contract's listing): a dead backend is
/// known within a few seconds, at one small call per endpoint every 2 s.
pub const ACTIVE_HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// `clusters.active_health.timeout`: 1 s: a health check answers in milliseconds; one
/// that takes a second is a backend to stop sending calls to.
pub const ACTIVE_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// `clusters.active_health.unhealthy_threshold`: 2 failed probes in a row, so one lost
/// probe does not take an endpoint out.
pub const ACTIVE_HEALTH_UNHEALTHY_THRESHOLD: u32 = 2;

/// `clusters.active_health.healthy_threshold`: 1 passed probe brings an endpoint back
/// (NGINX's `passes=1`): a recovered backend gets traffic again at once.
pub const ACTIVE_HEALTH_HEALTHY_THRESHOLD: u32 = 1;

/// A route's `name` when the file gives none: `"<listener>/<index>"`, which names the
/// listener in logs and metrics and stays the same as long as the routes keep their order.
pub fn route_name(listener: &str, index: usize) -> String {
    format!("{listener}/{index}")
}

/// `listeners.send_timeout`: 60 s, how long responses may wait on a client that takes none
/// of their bytes (it stopped reading, or keeps its HTTP/2 window shut) before its
/// connection is closed and the backend streams it held are cancelled. NGINX's
/// `send_timeout` default; long enough for a slow consumer of a stream, short enough that
/// a stalled reader cannot pin backend streams for long.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// `routes.max_message_bytes`: 4 MiB, gRPC's own default receive limit, so a message a
/// gRPC server would refuse anyway is refused before it costs a backend anything.
pub const MAX_MESSAGE_BYTES: u32 = 4 * 1024 * 1024;

/// `rate_limit.max_clients`: 100 000 client addresses tracked per limit (about 10 MB).
/// Idle buckets are dropped every second; past the cap, new addresses share a fixed set
/// of buckets, so an attacker with many addresses cannot grow memory without bound.
pub const RATE_LIMIT_MAX_CLIENTS: u64 = 100_000;

/// `rate_limit.burst`: one second's worth of calls (at least 1), so a client can spend a
/// second's budget at once after a quiet spell, as Envoy's token bucket with
/// `max_tokens` = tokens per fill.
pub fn rate_limit_burst(requests_per_second: f64) -> u32 {
    // Validation bounds the rate, so the cast is exact enough.
    (requests_per_second.ceil() as u32).max(1)
}

/// The largest `rate_limit.requests_per_second` accepted: one call per microsecond.
pub const RATE_LIMIT_MAX_RATE: f64 = 1_000_000.0;

/// `discovery.refresh`: 5 s between DNS resolutions (sooner after a failed connect): new
/// backends of an autoscaled name are in use within seconds, at one query per cluster
/// every few seconds.
pub const DNS_REFRESH: Duration = Duration::from_secs(5);
