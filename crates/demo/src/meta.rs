//! The metadata keys the backends set and obey.
//!
//! Tests drive a backend *through the proxy* by request metadata, so one listening port
//! is enough and the proxy's forwarding of headers is exercised at the same time. Every
//! name here is lower case, as HTTP/2 requires.

/// Response header on every reply: the backend's name, so a test sees who served.
pub const BACKEND: &str = "x-backend";
/// Trailer on every reply (a header of a trailers-only reply): the backend's name, so a
/// test sees that trailers pass.
pub const BACKEND_TRAILER: &str = "x-backend-trailer";

/// Request: fail the call with this gRPC status code (decimal), message
/// `"requested failure"`, before any handler runs (a trailers-only response). With
/// [`FAIL_AFTER`], the streaming-response methods fail after that many replies instead.
pub const FAIL_CODE: &str = "x-fail-code";
/// Request: with [`FAIL_CODE`] (or [`HTTP_STATUS`]), fail only the first this many attempts of the call and
/// answer the next ones: attempts are counted per `x-request-id` across every backend of
/// the process (the proxy keeps a call's request id on its retries), so a flaky backend
/// that recovers — or a cluster one of whose attempts fails — can be played through the
/// proxy.
pub const FAIL_ATTEMPTS: &str = "x-fail-attempts";
/// Request: with [`DELAY_MS`], delay only the first this many attempts of the call
/// (counted as for [`FAIL_ATTEMPTS`]): a backend that is slow once, for per-try timeouts.
pub const DELAY_ATTEMPTS: &str = "x-delay-attempts";
/// Request: bytes to return as `grpc-status-details-bin` of a [`FAIL_CODE`] failure.
pub const FAIL_DETAILS_BIN: &str = "x-fail-details-bin";
/// Request: with [`FAIL_CODE`], `SayHelloStream` and `SayHelloBidi` send this many
/// replies and then end with the failure (in trailers); other methods ignore it and
/// succeed.
pub const FAIL_AFTER: &str = "x-fail-after";
/// Request: sleep this many milliseconds before handling the call (deadline and
/// cancellation tests). The backend itself does not enforce `grpc-timeout` (it only
/// reports it, see [`SEEN_GRPC_TIMEOUT`]), so a deadline that passes is the proxy's or
/// the client's doing.
pub const DELAY_MS: &str = "x-delay-ms";
/// Request: reset the stream (RST_STREAM) with this HTTP/2 error code (decimal; 7 is
/// REFUSED_STREAM, 8 CANCEL, 2 INTERNAL_ERROR) instead of answering.
pub const RESET_STREAM: &str = "x-reset-stream";
/// Request: with [`RESET_STREAM`], send this many DATA frames of the response first
/// (one per reply when the replies are spaced, e.g. by `interval_ms`), then reset the
/// stream when the next frame (or the trailers) would go.
pub const RESET_AFTER_FRAMES: &str = "x-reset-after-frames";

/// Request: answer with this HTTP status (e.g. 503) and a `text/plain` body instead of
/// gRPC, as a misbehaving server or an HTTP middlebox would; no `grpc-status` at all.
pub const HTTP_STATUS: &str = "x-http-status";

/// Request: `1` makes the response headers report what the backend received: every
/// request key starting with [`ECHO_PREFIX`] or ending in `-bin` (except `grpc-*`) is
/// copied back as is, and the `x-seen-*` headers below are set when the request had them.
pub const ECHO_METADATA: &str = "x-echo-metadata";
/// Request keys with this prefix are echoed back under [`ECHO_METADATA`].
pub const ECHO_PREFIX: &str = "x-echo-";
/// Echo: every request header name, in order, comma-separated (pseudo-headers excluded).
pub const SEEN_HEADERS: &str = "x-seen-headers";
/// Echo: the request's `:authority` (or `host`).
pub const SEEN_AUTHORITY: &str = "x-seen-authority";
/// Echo: the request's `te`.
pub const SEEN_TE: &str = "x-seen-te";
/// Echo: the request's `x-forwarded-for` (all values, joined by ", ").
pub const SEEN_FORWARDED_FOR: &str = "x-seen-forwarded-for";
/// Echo: the request's `x-request-id`.
pub const SEEN_REQUEST_ID: &str = "x-seen-request-id";
/// Echo: the request's `grpc-timeout`.
pub const SEEN_GRPC_TIMEOUT: &str = "x-seen-grpc-timeout";
/// Echo: the request's `connection` (a proxy must have removed it).
pub const SEEN_CONNECTION: &str = "x-seen-connection";
/// Echo: the request's `x-forwarded-client-cert`.
pub const SEEN_FORWARDED_CLIENT_CERT: &str = "x-seen-forwarded-client-cert";
/// Echo: the request's `user-agent`.
pub const SEEN_USER_AGENT: &str = "x-seen-user-agent";
/// Echo: the request's `grpc-encoding`.
pub const SEEN_GRPC_ENCODING: &str = "x-seen-grpc-encoding";

/// The `(request header, echo header)` pairs reported under [`ECHO_METADATA`].
pub(crate) const SEEN: &[(&str, &str)] = &[
    ("te", SEEN_TE),
    ("x-forwarded-for", SEEN_FORWARDED_FOR),
    ("x-request-id", SEEN_REQUEST_ID),
    ("grpc-timeout", SEEN_GRPC_TIMEOUT),
    ("connection", SEEN_CONNECTION),
    ("x-forwarded-client-cert", SEEN_FORWARDED_CLIENT_CERT),
    ("user-agent", SEEN_USER_AGENT),
    ("grpc-encoding", SEEN_GRPC_ENCODING),
];
