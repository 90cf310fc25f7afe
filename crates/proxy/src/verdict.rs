//! One verdict for every way an attempt or a call can end.
//!
//! Whatever happens to a call — refused before any backend saw it, a failed connect, a
//! reset before or after the response head, a non-gRPC HTTP error, a passed deadline, a
//! client that went away, or simply the backend's final `grpc-status` — is first written
//! down as a typed [`Cause`]. [`Verdict::new`] then classifies it, in the one table of
//! this module (`classify`), into what every consumer needs:
//!
//! - **where the fault came from** ([`Fault`]: client, upstream, proxy, or none),
//! - **whether the backend may have processed it** ([`Processing`]): only a call that
//!   provably never reached a backend may be sent again without a retry policy,
//! - **the gRPC code** ([`Code`]) the client reads and the access log records, and the HTTP
//!   status a non-gRPC client gets for an answer of the proxy's own making,
//! - **what passive health makes of it** ([`Health`]).
//!
//! Consumers never re-derive any of this: the attempt loop asks
//! [`Verdict::transparent_retry`], passive health takes [`Verdict::settle`], the access log
//! reads [`Verdict::code`], and [`crate::status`] writes the response or trailers from the
//! verdict. The cause stays typed (h2 reasons, connect errors, HTTP statuses) until a log
//! line or a `grpc-message` formats it.
//!
//! The code mappings follow gRPC's status code document
//! (<https://grpc.github.io/grpc/core/md_doc_statuscodes.html>) and its "HTTP to gRPC Status
//! Code Mapping"; `docs/contract.md` §3 has the table of the errors the proxy produces and
//! §4 what passive health counts as a failure.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use rpcgate_balance::{CallGuard, Endpoint, Outcome};

use crate::upstream::ConnectError;

/// A gRPC status code, as sent in `grpc-status`: any `u32` a backend sends, with names for
/// the canonical ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(pub u32);

impl Code {
    /// 0: success.
    pub const OK: Code = Code(0);
    /// 1: the client cancelled.
    pub const CANCELLED: Code = Code(1);
    /// 2: unknown error (an unmapped HTTP status from upstream).
    pub const UNKNOWN: Code = Code(2);
    /// 4: the call's deadline passed.
    pub const DEADLINE_EXCEEDED: Code = Code(4);
    /// 7: the client is not allowed (upstream HTTP 403).
    pub const PERMISSION_DENIED: Code = Code(7);
    /// 8: a rate or size limit was hit.
    pub const RESOURCE_EXHAUSTED: Code = Code(8);
    /// 12: no route matches (or upstream HTTP 404).
    pub const UNIMPLEMENTED: Code = Code(12);
    /// 13: internal error (a bug in rpcgate, an upstream protocol error).
    pub const INTERNAL: Code = Code(13);
    /// 14: no backend could take the call; the standard retryable code.
    pub const UNAVAILABLE: Code = Code(14);
    /// 16: upstream answered HTTP 401.
    pub const UNAUTHENTICATED: Code = Code(16);

    /// The canonical name (`OK`, `UNAVAILABLE`, …) for logs and metrics labels; codes
    /// outside 0..=16 are `UNKNOWN`, as gRPC clients read them.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "OK",
            1 => "CANCELLED",
            2 => "UNKNOWN",
            3 => "INVALID_ARGUMENT",
            4 => "DEADLINE_EXCEEDED",
            5 => "NOT_FOUND",
            6 => "ALREADY_EXISTS",
            7 => "PERMISSION_DENIED",
            8 => "RESOURCE_EXHAUSTED",
            9 => "FAILED_PRECONDITION",
            10 => "ABORTED",
            11 => "OUT_OF_RANGE",
            12 => "UNIMPLEMENTED",
            13 => "INTERNAL",
            14 => "UNAVAILABLE",
            15 => "DATA_LOSS",
            16 => "UNAUTHENTICATED",
            _ => "UNKNOWN",
        }
    }
}

/// The gRPC code for an HTTP/2 reset from upstream: REFUSED_STREAM means the call was not
/// processed (14, retryable), CANCEL is 1, anything else 13 (contract §3).
pub fn reset_code(reason: h2::Reason) -> Code {
    if reason == h2::Reason::REFUSED_STREAM {
        Code::UNAVAILABLE
    } else if reason == h2::Reason::CANCEL {
        Code::CANCELLED
    } else {
        Code::INTERNAL
    }
}

/// gRPC's mapping of an HTTP status that came without `grpc-status` to a gRPC code.
pub fn http_to_grpc(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::INTERNAL,
        401 => Code::UNAUTHENTICATED,
        403 => Code::PERMISSION_DENIED,
        404 => Code::UNIMPLEMENTED,
        429 | 502..=504 => Code::UNAVAILABLE,
        _ => Code::UNKNOWN,
    }
}

/// Reads `grpc-status` from response headers (trailers-only) or trailers.
pub fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|s| s.trim().parse().ok())
        .map(Code)
}

/// Where the fault for a call's end lies (said in the debug log today; the circuit
/// breaker and metrics are to read it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No fault: the backend answered OK (or plain HTTP without an error).
    None,
    /// The client: it cancelled, went away, or sent something no route takes.
    Client,
    /// The backend or the way to it: connect, reset, lost connection, slow answer, error
    /// status.
    Upstream,
    /// rpcgate itself or its configuration: a cluster without endpoints, a panic.
    Proxy,
}

/// Whether the backend may have acted on the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processing {
    /// Provably not: nothing reached a backend's application (connect failed, stream
    /// refused, above a GOAWAY's last stream id, or the proxy answered by itself).
    NotProcessed,
    /// It may have: replaying it could repeat its effects.
    MayHaveProcessed,
}

/// What passive health makes of an attempt's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Counts as a failure (contract §4: connect error, reset or deadline before the
    /// response, HTTP 502/503/504, grpc-status UNAVAILABLE).
    Failure,
    /// Counts as a success, latency included (application errors are successes).
    Success,
    /// Says nothing about the backend (the client went away): only `in_flight` is
    /// released.
    Ignore,
}

/// How a connect to a backend failed.
#[derive(Debug)]
pub enum ConnectFailure {
    /// The HTTP/2 pool's connect: TCP, TLS or the HTTP/2 handshake.
    H2(ConnectError),
    /// hyper's HTTP/1.1 client could not connect.
    Http1(hyper_util::client::legacy::Error),
}

/// What happened, typed; [`Verdict::new`] classifies it.
#[derive(Debug)]
pub enum Cause {
    /// The backend answered and the call ended with this final status: `grpc-status` from
    /// a trailers-only response or the trailers (`None` for plain HTTP or a gRPC response
    /// without one), and the HTTP status of the response head.
    Completed {
        /// The final `grpc-status`, if any.
        grpc_status: Option<Code>,
        /// The HTTP status the backend answered with.
        http_status: StatusCode,
    },
    /// No route of the listener matches the request path.
    NoRoute {
        /// The request path.
        path: String,
    },
    /// The cluster has no endpoint at all.
    NoEndpoint {
        /// The cluster.
        cluster: Arc<str>,
        /// When a discovery source owns the set: why it is empty, in words (what the
        /// source last said, or that it has found none yet).
        discovery: Option<String>,
    },
    /// Connecting to an endpoint failed: nothing reached it.
    Connect {
        /// The endpoint.
        endpoint: Arc<Endpoint>,
        /// How.
        error: ConnectFailure,
    },
    /// The backend refused the stream (`REFUSED_STREAM`): not processed.
    Refused {
        /// The endpoint.
        endpoint: Arc<Endpoint>,
    },
    /// The backend is going away (GOAWAY) and did not take this stream: not processed.
    GoingAway {
        /// The endpoint.
        endpoint: Arc<Endpoint>,
    },
    /// Every attempt ended before reaching a backend; the last one's cause.
    NoBackendTookIt {
        /// The cluster.
        cluster: Arc<str>,
        /// The last attempt's cause (`None` only if no attempt could be made).
        last: Option<Box<Cause>>,
    },
    /// The backend reset the stream before the response head.
    ResetBeforeHead(h2::Reason),
    /// The connection to the backend broke before the response head (HTTP/2).
    ConnectionLost {
        /// The endpoint.
        endpoint: Arc<Endpoint>,
        /// The h2 error.
        error: h2::Error,
    },
    /// The HTTP/1.1 exchange with the backend failed after connecting.
    Http1Lost {
        /// The endpoint.
        endpoint: Arc<Endpoint>,
        /// hyper's error.
        error: hyper_util::client::legacy::Error,
    },
    /// The call's deadline passed before the response head; the effective timeout.
    DeadlineBeforeHead(Duration),
    /// One attempt's `per_try_timeout` passed before its response head (the call's
    /// deadline had not).
    PerTryTimeout(Duration),
    /// The call's deadline passed while the response was streaming.
    DeadlineMidStream,
    /// The backend's stream broke after the response head went out.
    BrokenMidStream(h2::Error),
    /// The HTTP/1.1 response body from the backend failed mid-way.
    Http1BodyFailed(hyper::Error),
    /// A gRPC call answered with an HTTP error and no `grpc-status` (an HTML 502 from
    /// something in between, say).
    UpstreamHttpError(StatusCode),
    /// The client reset its request (or lost its connection) while it was being sent.
    ClientCancelled(crate::body::BoxError),
    /// The client went away before the call ended (its stream or connection closed).
    ClientGone,
    /// `send_timeout` closed the client's connection: it took none of its responses.
    SendTimeout,
    /// The client's request body broke gRPC's framing or the route's `max_message_bytes`.
    BadMessage(crate::grpc_framing::FramingError),
    /// The request could not be turned into an upstream request.
    BadRequest(http::Error),
    /// A call's task panicked (a bug in rpcgate); the process keeps running.
    Panicked,
    /// The call was still running when the shutdown drain's `drain_timeout` ran out.
    ShuttingDown,
    /// The client's address is not allowed (`allow` / `deny`) on this listener or route.
    NotAllowed {
        /// The client's address.
        client: std::net::IpAddr,
        /// Where: `listener NAME` or `route NAME`.
        on: String,
    },
    /// A `rate_limit` of the listener or route has no token for this call.
    RateLimited {
        /// Where: `listener NAME` or `route NAME`.
        on: String,
        /// The limit, in words (`50 calls/s, burst 50, per client address`).
        limit: String,
        /// How long until the bucket has a token again.
        retry_after: Duration,
    },
    /// The cluster's circuit breaker is open (or half-open with its trials in flight).
    CircuitOpen {
        /// The cluster.
        cluster: Arc<str>,
        /// How long until it lets a trial through (zero: when a trial ends).
        retry_after: Duration,
    },
    /// The cluster has `max_requests` calls in flight already.
    AtMaxRequests {
        /// The cluster.
        cluster: Arc<str>,
        /// Its `max_requests`.
        limit: u64,
    },
}

impl Cause {
    /// A short word for the access log saying why a call did not simply complete (as
    /// Envoy's response flags do): `None` for a call the backend answered.
    pub fn reason(&self) -> Option<&'static str> {
        Some(match self {
            Cause::Completed { .. } => return None,
            Cause::NoRoute { .. } => "no_route",
            Cause::NoEndpoint { .. } => "no_endpoint",
            Cause::Connect { .. } | Cause::NoBackendTookIt { .. } => "connect_failed",
            Cause::Refused { .. } => "refused",
            Cause::GoingAway { .. } => "going_away",
            Cause::ResetBeforeHead(_) | Cause::BrokenMidStream(_) => "upstream_reset",
            Cause::ConnectionLost { .. } | Cause::Http1Lost { .. } => "connection_lost",
            Cause::Http1BodyFailed(_) => "upstream_body_failed",
            Cause::DeadlineBeforeHead(_) | Cause::DeadlineMidStream => "deadline",
            Cause::PerTryTimeout(_) => "per_try_timeout",
            Cause::UpstreamHttpError(_) => "upstream_http_error",
            Cause::ClientCancelled(_) => "client_cancelled",
            Cause::ClientGone => "client_gone",
            Cause::SendTimeout => "send_timeout",
            Cause::BadMessage(error) if error.is_too_large() => "message_too_large",
            Cause::BadMessage(_) => "bad_message",
            Cause::BadRequest(_) => "bad_request",
            Cause::Panicked => "panic",
            Cause::ShuttingDown => "shutting_down",
            Cause::NotAllowed { .. } => "denied",
            Cause::RateLimited { .. } => "rate_limited",
            Cause::CircuitOpen { .. } => "circuit_open",
            Cause::AtMaxRequests { .. } => "max_requests",
        })
    }
}

impl Cause {
    /// What a failed read of the client's request body means: a framing error of
    /// [`crate::grpc_framing`], or the client cancelling (a reset, a lost connection).
    pub(crate) fn client_body_failed(error: crate::body::BoxError) -> Cause {
        match error.downcast::<crate::grpc_framing::FramingError>() {
            Ok(fault) => Cause::BadMessage(*fault),
            Err(error) => Cause::ClientCancelled(error),
        }
    }
}

impl fmt::Display for Cause {
    /// The text for `grpc-message`, plain-HTTP error bodies and log lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Completed {
                grpc_status: Some(code),
                ..
            } => write!(f, "backend answered {}", code.name()),
            Cause::Completed { http_status, .. } => {
                write!(f, "backend answered HTTP {http_status}")
            }
            Cause::NoRoute { path } => write!(f, "no route for {path}"),
            Cause::NoEndpoint {
                cluster,
                discovery: None,
            } => write!(f, "cluster {cluster} has no endpoints"),
            Cause::NoEndpoint {
                cluster,
                discovery: Some(why),
            } => write!(f, "cluster {cluster} has no endpoints: {why}"),
            Cause::Connect {
                endpoint,
                error: ConnectFailure::Http1(error),
            } => write!(f, "{}: {error}", endpoint.address()),
            Cause::Connect {
                error: ConnectFailure::H2(error),
                ..
            } => write!(f, "{error}"),
            Cause::Refused { endpoint } => write!(f, "{} refused the stream", endpoint.address()),
            Cause::GoingAway { endpoint } => write!(
                f,
                "{} is going away (GOAWAY) and did not take the stream",
                endpoint.address()
            ),
            Cause::NoBackendTookIt { cluster, last } => {
                write!(f, "no backend of cluster {cluster} could take the call: ")?;
                match last {
                    Some(last) => write!(f, "{last}"),
                    None => Ok(()),
                }
            }
            Cause::ResetBeforeHead(reason) => write!(f, "backend reset the stream: {reason}"),
            Cause::ConnectionLost { endpoint, error } => {
                write!(
                    f,
                    "backend connection lost: {}: {error}",
                    endpoint.address()
                )
            }
            Cause::Http1Lost { endpoint, error } => {
                write!(
                    f,
                    "backend connection lost: {}: {error}",
                    endpoint.address()
                )
            }
            Cause::DeadlineBeforeHead(timeout) => {
                write!(
                    f,
                    "deadline exceeded after {timeout:?} waiting for the backend"
                )
            }
            Cause::PerTryTimeout(timeout) => {
                write!(
                    f,
                    "the backend did not answer within per_try_timeout ({timeout:?})"
                )
            }
            Cause::DeadlineMidStream => {
                f.write_str("deadline exceeded while the backend was still answering")
            }
            Cause::BrokenMidStream(error) if error.is_io() || error.is_go_away() => {
                write!(f, "backend connection lost mid-call: {error}")
            }
            Cause::BrokenMidStream(error) => {
                write!(f, "backend reset the stream mid-call: {error}")
            }
            Cause::Http1BodyFailed(error) => write!(f, "backend response body failed: {error}"),
            Cause::UpstreamHttpError(status) => {
                write!(f, "backend answered HTTP {status} without a gRPC status")
            }
            Cause::ClientCancelled(error) => write!(f, "the client cancelled the call: {error}"),
            Cause::ClientGone => f.write_str("client went away"),
            Cause::SendTimeout => f.write_str(
                "the client took none of its responses for send_timeout: connection closed",
            ),
            Cause::BadMessage(error) => write!(f, "{error}"),
            Cause::BadRequest(error) => write!(f, "bad request: {error}"),
            Cause::Panicked => f.write_str("internal error in rpcgate while handling the call"),
            Cause::ShuttingDown => f.write_str(
                "rpcgate is shutting down: the call did not finish within drain_timeout",
            ),
            Cause::NotAllowed { client, on } => {
                write!(f, "client address {client} is not allowed on {on}")
            }
            Cause::RateLimited {
                on,
                limit,
                retry_after,
            } => write!(
                f,
                "rate limit of {on} exceeded ({limit}); retry in {} ms",
                retry_after.as_millis().max(1)
            ),
            Cause::CircuitOpen {
                cluster,
                retry_after,
            } if retry_after.is_zero() => write!(
                f,
                "the circuit breaker of cluster {cluster} is half-open and its trial calls are in flight"
            ),
            Cause::CircuitOpen {
                cluster,
                retry_after,
            } => write!(
                f,
                "the circuit breaker of cluster {cluster} is open: calls are refused for another {:.1}s",
                retry_after.as_secs_f64()
            ),
            Cause::AtMaxRequests { cluster, limit } => write!(
                f,
                "cluster {cluster} is at max_requests ({limit} calls in flight)"
            ),
        }
    }
}

/// A classified end of an attempt or a call.
#[derive(Debug)]
pub struct Verdict {
    /// What happened.
    pub cause: Cause,
    /// Whose fault it was.
    pub fault: Fault,
    /// Whether the backend may have acted on it.
    pub processing: Processing,
    /// The gRPC code the client reads; `None` for plain HTTP without `grpc-status`.
    pub code: Option<Code>,
    /// The HTTP status for a non-gRPC client when the proxy answers by itself (for
    /// [`Cause::Completed`], the backend's own status).
    pub http_status: StatusCode,
    /// What passive health makes of it.
    pub health: Health,
}

/// NGINX's 499 "client closed request": nobody reads it, the access log does.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// The one classification table: (fault, processing, gRPC code, HTTP status, health).
fn classify(cause: &Cause) -> (Fault, Processing, Option<Code>, StatusCode, Health) {
    use Fault as F;
    use Health as H;
    use Processing::{MayHaveProcessed as Maybe, NotProcessed as No};
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    let bad_gateway = StatusCode::BAD_GATEWAY;
    match cause {
        Cause::Completed {
            grpc_status,
            http_status,
        } => {
            let failure = *grpc_status == Some(Code::UNAVAILABLE)
                || matches!(http_status.as_u16(), 502..=504);
            let ok = grpc_status.is_none_or(|c| c == Code::OK) && http_status.as_u16() < 400;
            (
                if ok { F::None } else { F::Upstream },
                Maybe,
                *grpc_status,
                *http_status,
                if failure { H::Failure } else { H::Success },
            )
        }
        Cause::NoRoute { .. } => (
            F::Client,
            No,
            Some(Code::UNIMPLEMENTED),
            StatusCode::NOT_FOUND,
            H::Ignore,
        ),
        Cause::NoEndpoint { .. } => (
            F::Proxy,
            No,
            Some(Code::UNAVAILABLE),
            unavailable,
            H::Ignore,
        ),
        Cause::Connect { .. } | Cause::Refused { .. } => (
            F::Upstream,
            No,
            Some(Code::UNAVAILABLE),
            unavailable,
            H::Failure,
        ),
        // A backend that says goodbye politely is not failing: the next connection works.
        Cause::GoingAway { .. } => (
            F::Upstream,
            No,
            Some(Code::UNAVAILABLE),
            unavailable,
            H::Success,
        ),
        // Each attempt was settled on its own; the call's end adds nothing.
        Cause::NoBackendTookIt { .. } => (
            F::Upstream,
            No,
            Some(Code::UNAVAILABLE),
            unavailable,
            H::Ignore,
        ),
        Cause::ResetBeforeHead(reason) => (
            F::Upstream,
            Maybe,
            Some(reset_code(*reason)),
            bad_gateway,
            H::Failure,
        ),
        Cause::ConnectionLost { .. } | Cause::Http1Lost { .. } => (
            F::Upstream,
            Maybe,
            Some(Code::UNAVAILABLE),
            bad_gateway,
            H::Failure,
        ),
        Cause::DeadlineBeforeHead(_) => (
            F::Upstream,
            Maybe,
            Some(Code::DEADLINE_EXCEEDED),
            StatusCode::GATEWAY_TIMEOUT,
            H::Failure,
        ),
        // A slow answer counts against the backend like a passed deadline.
        Cause::PerTryTimeout(_) => (
            F::Upstream,
            Maybe,
            Some(Code::DEADLINE_EXCEEDED),
            StatusCode::GATEWAY_TIMEOUT,
            H::Failure,
        ),
        // After the response head the backend did answer: contract §4 counts only
        // failures before the response.
        Cause::DeadlineMidStream => (
            F::Upstream,
            Maybe,
            Some(Code::DEADLINE_EXCEEDED),
            StatusCode::GATEWAY_TIMEOUT,
            H::Success,
        ),
        Cause::BrokenMidStream(error) => {
            let code = match error.reason() {
                Some(reason) if error.is_reset() => reset_code(reason),
                _ => Code::UNAVAILABLE,
            };
            let health = match code {
                Code::UNAVAILABLE => H::Failure,
                // A CANCEL from upstream mid-call is the echo of a cancel, not a fault.
                Code::CANCELLED => H::Ignore,
                _ => H::Success,
            };
            (F::Upstream, Maybe, Some(code), bad_gateway, health)
        }
        // The head was settled when it arrived; the body's end adds nothing.
        Cause::Http1BodyFailed(_) => (F::Upstream, Maybe, None, bad_gateway, H::Ignore),
        Cause::UpstreamHttpError(status) => (
            F::Upstream,
            Maybe,
            Some(http_to_grpc(*status)),
            *status,
            if matches!(status.as_u16(), 502..=504) {
                H::Failure
            } else {
                H::Success
            },
        ),
        Cause::ClientCancelled(_) | Cause::ClientGone | Cause::SendTimeout => (
            F::Client,
            Maybe,
            Some(Code::CANCELLED),
            StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::BAD_REQUEST),
            H::Ignore,
        ),
        // gRPC's own limit and framing rules (a gRPC server would answer the same); the
        // backend saw at most the messages before.
        Cause::BadMessage(error) if error.is_too_large() => (
            F::Client,
            Maybe,
            Some(Code::RESOURCE_EXHAUSTED),
            StatusCode::PAYLOAD_TOO_LARGE,
            H::Ignore,
        ),
        Cause::BadMessage(_) => (
            F::Client,
            Maybe,
            Some(Code::INTERNAL),
            StatusCode::BAD_REQUEST,
            H::Ignore,
        ),
        // Nothing was sent: the backend is not to blame.
        Cause::BadRequest(_) => (
            F::Client,
            No,
            Some(Code::INTERNAL),
            StatusCode::BAD_REQUEST,
            H::Ignore,
        ),
        Cause::Panicked => (
            F::Proxy,
            Maybe,
            Some(Code::INTERNAL),
            StatusCode::INTERNAL_SERVER_ERROR,
            H::Ignore,
        ),
        // The backend did nothing wrong: rpcgate cut the call to stop.
        Cause::ShuttingDown => (
            F::Proxy,
            Maybe,
            Some(Code::UNAVAILABLE),
            unavailable,
            H::Ignore,
        ),
        // An access list refused the client: no backend saw the call.
        Cause::NotAllowed { .. } => (
            F::Client,
            No,
            Some(Code::PERMISSION_DENIED),
            StatusCode::FORBIDDEN,
            H::Ignore,
        ),
        // The client is over its share: no backend saw the call.
        Cause::RateLimited { .. } => (
            F::Client,
            No,
            Some(Code::RESOURCE_EXHAUSTED),
            StatusCode::TOO_MANY_REQUESTS,
            H::Ignore,
        ),
        // The proxy sparing a cluster: no backend saw the call.
        Cause::CircuitOpen { .. } | Cause::AtMaxRequests { .. } => (
            F::Proxy,
            No,
            Some(Code::UNAVAILABLE),
            unavailable,
            H::Ignore,
        ),
    }
}

impl Verdict {
    /// Classifies a cause.
    pub fn new(cause: Cause) -> Self {
        let (fault, processing, code, http_status, health) = classify(&cause);
        Self {
            cause,
            fault,
            processing,
            code,
            http_status,
            health,
        }
    }

    /// The verdict of a call that ended with the backend's final status.
    pub fn completed(grpc_status: Option<Code>, http_status: StatusCode) -> Self {
        Self::new(Cause::Completed {
            grpc_status,
            http_status,
        })
    }

    /// Whether the attempt may be repeated on another endpoint without any retry policy:
    /// the backend provably never saw it (contract §4's transparent retry).
    pub fn transparent_retry(&self) -> bool {
        self.fault == Fault::Upstream
            && self.processing == Processing::NotProcessed
            && !matches!(self.cause, Cause::NoBackendTookIt { .. })
    }

    /// Whether the way to the backend failed: connect (TCP, TLS, handshake), a lost
    /// connection or a reset stream — what the operator's log hears about.
    pub fn is_transport_failure(&self) -> bool {
        matches!(
            self.cause,
            Cause::Connect { .. }
                | Cause::ConnectionLost { .. }
                | Cause::Http1Lost { .. }
                | Cause::ResetBeforeHead(_)
                | Cause::BrokenMidStream(_)
        )
    }

    /// Whether this was a failed connect (the attempt loop does not connect twice to the
    /// same endpoint within one call, while a refused stream may be retried there).
    pub fn is_connect_failure(&self) -> bool {
        matches!(self.cause, Cause::Connect { .. })
    }

    /// What the circuit breaker makes of the call's end: `Some(true)` a failure (those of
    /// passive health, every connect failing, and DEADLINE_EXCEEDED, contract §4),
    /// `Some(false)` a success, `None` nothing (the client went away, or the cluster has
    /// no endpoint at all).
    pub fn breaker_failure(&self) -> Option<bool> {
        match (&self.cause, self.health) {
            (
                Cause::ClientCancelled(_)
                | Cause::ClientGone
                | Cause::SendTimeout
                | Cause::ShuttingDown
                | Cause::NotAllowed { .. }
                | Cause::RateLimited { .. }
                | Cause::BadMessage(_),
                _,
            ) => None,
            // No endpoint at all is a configuration matter, not a failing backend.
            (Cause::NoEndpoint { .. }, _) => None,
            (Cause::NoBackendTookIt { .. }, _) => Some(true),
            (_, Health::Failure) => Some(true),
            _ => Some(self.code == Some(Code::DEADLINE_EXCEEDED)),
        }
    }

    /// Whether the call went wrong (anything but a completed call): worth a debug line.
    pub fn is_error(&self) -> bool {
        !matches!(self.cause, Cause::Completed { .. })
    }

    /// Tells passive health and the latency estimate how the attempt on `guard`'s
    /// endpoint (of `cluster`) ended; an ejection it causes is logged at warn with the
    /// failure that caused it.
    pub fn settle(&self, guard: CallGuard, cluster: &str) {
        guard
            .endpoint()
            .outcomes()
            .record(self.code.map(|c| c.0), guard.started().elapsed());
        if self.is_transport_failure() {
            crate::upstream_log::failure(cluster, guard.endpoint(), &self.cause);
        }
        match self.health {
            Health::Failure => {
                let endpoint = guard.endpoint().clone();
                if guard.finish(Outcome::Failure) {
                    endpoint.note_ejection_cause(self.cause.reason().unwrap_or("error_status"));
                    let policy = endpoint.passive_policy();
                    tracing::warn!(
                        cluster,
                        endpoint = endpoint.address(),
                        cause = self.cause.to_string().as_str(),
                        max_fails = policy.max_fails,
                        fail_timeout = ?policy.fail_timeout,
                        "passive health: endpoint ejected for {:?} after {} failure(s) within {:?}",
                        policy.fail_timeout,
                        policy.max_fails,
                        policy.fail_timeout
                    );
                }
            }
            Health::Success => {
                let _ = guard.finish(Outcome::Success);
            }
            Health::Ignore => drop(guard),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Arc<Endpoint> {
        Arc::new(Endpoint::new(
            rpcgate_balance::EndpointSpec::new("10.0.0.1:50051"),
            rpcgate_balance::PassiveHealthPolicy::OFF,
        ))
    }

    #[test]
    fn http_statuses_map_as_grpc_documents() {
        assert_eq!(http_to_grpc(StatusCode::BAD_GATEWAY), Code::UNAVAILABLE);
        assert_eq!(
            http_to_grpc(StatusCode::SERVICE_UNAVAILABLE),
            Code::UNAVAILABLE
        );
        assert_eq!(http_to_grpc(StatusCode::GATEWAY_TIMEOUT), Code::UNAVAILABLE);
        assert_eq!(
            http_to_grpc(StatusCode::TOO_MANY_REQUESTS),
            Code::UNAVAILABLE
        );
        assert_eq!(http_to_grpc(StatusCode::NOT_FOUND), Code::UNIMPLEMENTED);
        assert_eq!(
            http_to_grpc(StatusCode::UNAUTHORIZED),
            Code::UNAUTHENTICATED
        );
        assert_eq!(http_to_grpc(StatusCode::FORBIDDEN), Code::PERMISSION_DENIED);
        assert_eq!(http_to_grpc(StatusCode::BAD_REQUEST), Code::INTERNAL);
        assert_eq!(http_to_grpc(StatusCode::IM_A_TEAPOT), Code::UNKNOWN);
    }

    #[test]
    fn resets_map_per_contract() {
        assert_eq!(reset_code(h2::Reason::REFUSED_STREAM), Code::UNAVAILABLE);
        assert_eq!(reset_code(h2::Reason::CANCEL), Code::CANCELLED);
        assert_eq!(reset_code(h2::Reason::PROTOCOL_ERROR), Code::INTERNAL);
    }

    #[test]
    fn code_names_are_canonical() {
        assert_eq!(Code::OK.name(), "OK");
        assert_eq!(Code::UNAVAILABLE.name(), "UNAVAILABLE");
        assert_eq!(Code(3).name(), "INVALID_ARGUMENT");
        assert_eq!(Code(99).name(), "UNKNOWN");
    }

    #[test]
    fn only_unprocessed_upstream_failures_retry_transparently() {
        let refused = Verdict::new(Cause::Refused {
            endpoint: endpoint(),
        });
        assert!(refused.transparent_retry());
        assert!(!refused.is_connect_failure());
        assert_eq!(refused.health, Health::Failure);

        let going_away = Verdict::new(Cause::GoingAway {
            endpoint: endpoint(),
        });
        assert!(going_away.transparent_retry());
        assert_eq!(going_away.health, Health::Success);

        for maybe in [
            Cause::ResetBeforeHead(h2::Reason::INTERNAL_ERROR),
            Cause::DeadlineBeforeHead(Duration::from_secs(1)),
            Cause::UpstreamHttpError(StatusCode::BAD_GATEWAY),
            Cause::ClientGone,
            Cause::Panicked,
        ] {
            let verdict = Verdict::new(maybe);
            assert!(!verdict.transparent_retry(), "{:?}", verdict.cause);
        }
        let exhausted = Verdict::new(Cause::NoBackendTookIt {
            cluster: "c".into(),
            last: None,
        });
        assert!(!exhausted.transparent_retry());
    }

    #[test]
    fn passive_health_counts_what_the_contract_says() {
        let completed = |grpc: Option<u32>, http: u16| {
            Verdict::completed(grpc.map(Code), StatusCode::from_u16(http).unwrap()).health
        };
        assert_eq!(completed(Some(0), 200), Health::Success);
        // Application errors are not failures.
        assert_eq!(completed(Some(3), 200), Health::Success);
        assert_eq!(completed(Some(5), 200), Health::Success);
        assert_eq!(completed(Some(14), 200), Health::Failure);
        assert_eq!(completed(None, 503), Health::Failure);
        assert_eq!(completed(None, 404), Health::Success);
        assert_eq!(
            Verdict::new(Cause::DeadlineBeforeHead(Duration::from_secs(1))).health,
            Health::Failure
        );
        assert_eq!(
            Verdict::new(Cause::ClientCancelled("reset".into())).health,
            Health::Ignore
        );
        assert_eq!(
            Verdict::new(Cause::UpstreamHttpError(StatusCode::NOT_FOUND)).health,
            Health::Success
        );
    }

    #[test]
    fn faults_say_whose_they_are() {
        assert_eq!(
            Verdict::completed(Some(Code::OK), StatusCode::OK).fault,
            Fault::None
        );
        assert_eq!(
            Verdict::completed(Some(Code(5)), StatusCode::OK).fault,
            Fault::Upstream
        );
        assert_eq!(Verdict::new(Cause::ClientGone).fault, Fault::Client);
        assert_eq!(
            Verdict::new(Cause::NoRoute { path: "/x".into() }).fault,
            Fault::Client
        );
        assert_eq!(
            Verdict::new(Cause::NoEndpoint {
                cluster: "c".into(),
                discovery: None,
            })
            .fault,
            Fault::Proxy
        );
        assert_eq!(Verdict::new(Cause::Panicked).fault, Fault::Proxy);
    }

    #[test]
    fn messages_say_what_happened() {
        let exhausted = Cause::NoBackendTookIt {
            cluster: "laptop".into(),
            last: Some(Box::new(Cause::Refused {
                endpoint: endpoint(),
            })),
        };
        assert_eq!(
            exhausted.to_string(),
            "no backend of cluster laptop could take the call: 10.0.0.1:50051 refused the stream"
        );
        assert_eq!(
            Cause::DeadlineBeforeHead(Duration::from_millis(250)).to_string(),
            "deadline exceeded after 250ms waiting for the backend"
        );
        assert_eq!(
            Cause::UpstreamHttpError(StatusCode::BAD_GATEWAY).to_string(),
            "backend answered HTTP 502 Bad Gateway without a gRPC status"
        );
    }
}
