//! Running one call: route, deadline, pick, attempts, streaming both ways.
//!
//! [`handle`] is the service hyper calls for every request (every HTTP/2 stream is its
//! own call, so calls from one client connection spread over all endpoints). Read it top
//! to bottom: route → deadline → headers → per attempt: pick an endpoint, take a stream
//! slot on a pooled connection, send the head, pump the request body until the response
//! head arrives → hand the response body to the client.
//!
//! **Transparent retry** (SPEC §4): an attempt that provably never reached a backend —
//! connect failure, `REFUSED_STREAM`, a stream above a GOAWAY's last stream id — is
//! repeated on another endpoint without any retry configuration, as long as the request
//! body sent so far is still held (up to [`REPLAY_LIMIT`]). Anything else is never
//! replayed, since the backend may have acted on it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::{BodyExt, Either, Empty};
use hyper::body::Incoming;
use rpcgate_balance::{Balancer, CallGuard, Outcome, PickContext, hash_key};
use rpcgate_config::{HashKey, UpstreamProtocol};
use tokio::time::Instant;

use crate::access_log::{AccessLog, AccessRecord};
use crate::body::{ProxyBody, UpstreamBody, grpc_status};
use crate::deadline::{effective_timeout, format_grpc_timeout, parse_grpc_timeout};
use crate::route::{RequestView, Router, grpc_service_method};
use crate::status::{Code, ProxyError, http_to_grpc};
use crate::upstream::{StreamSlot, Upstreams};

/// Request bytes kept for replaying a call on another endpoint (SPEC §4: 64 KiB).
pub const REPLAY_LIMIT: usize = 64 * 1024;
/// Most attempts one call makes (1 + transparent retries).
const MAX_ATTEMPTS: usize = 5;

/// Everything a listener's calls need, for one configuration generation.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) listeners: Vec<ListenerState>,
    pub(crate) clusters: Vec<ClusterState>,
    pub(crate) access_log: AccessLog,
}

/// A listener's routing table.
#[derive(Debug)]
pub(crate) struct ListenerState {
    pub(crate) name: Arc<str>,
    pub(crate) router: Router,
    pub(crate) routes: Vec<RouteState>,
}

/// A route, ready for the hot path.
#[derive(Debug)]
pub(crate) struct RouteState {
    pub(crate) name: Arc<str>,
    pub(crate) cluster: usize,
    pub(crate) timeout: Option<Duration>,
    pub(crate) request_headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) response_headers: Vec<(HeaderName, HeaderValue)>,
}

/// A cluster, ready for the hot path.
#[derive(Debug)]
pub(crate) struct ClusterState {
    pub(crate) index: usize,
    pub(crate) name: Arc<str>,
    pub(crate) balancer: Arc<Balancer>,
    pub(crate) protocol: UpstreamProtocol,
    pub(crate) authority: Option<http::uri::Authority>,
    pub(crate) connect_timeout: Duration,
    pub(crate) hash_key: Option<HashKey>,
    /// TLS towards the backends (`protocol = "h2"`).
    pub(crate) tls: Option<crate::upstream::UpstreamTls>,
    /// Whether the last pick was in panic mode, so the log says it once per episode.
    pub(crate) in_panic: AtomicBool,
}

/// One client connection's context, shared by its calls.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) listener: usize,
    pub(crate) peer: SocketAddr,
    /// The client's IP as a header value, made once per connection (`x-forwarded-for`,
    /// `hash_key = "client_ip"`).
    pub(crate) peer_ip: HeaderValue,
    pub(crate) upstreams: Arc<Upstreams>,
    /// The verified client certificate (mutual TLS listeners).
    pub(crate) client_identity: Option<crate::tls::ClientIdentity>,
    /// Whether a request has ever started on this connection (for the first-request
    /// deadline).
    pub(crate) started: AtomicBool,
    /// Calls in flight on this connection (for the idle timeout).
    pub(crate) active: AtomicUsize,
    /// When the last call ended, in ms since `since`.
    pub(crate) last_active_ms: AtomicU64,
    pub(crate) since: Instant,
}

impl ConnCtx {
    fn enter(self: &Arc<Self>) -> ActiveCall {
        if !self.started.load(Ordering::Relaxed) {
            self.started.store(true, Ordering::Relaxed);
        }
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveCall(self.clone())
    }
}

/// Marks a call in flight on its client connection until dropped.
#[derive(Debug)]
pub(crate) struct ActiveCall(Arc<ConnCtx>);

impl Drop for ActiveCall {
    fn drop(&mut self) {
        let ms = self.0.since.elapsed().as_millis() as u64;
        self.0.last_active_ms.store(ms, Ordering::Relaxed);
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether a request is gRPC (`content-type: application/grpc` or `application/grpc+…`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The service hyper runs for every request; never fails, never lets a panic out.
pub(crate) async fn handle(
    request: Request<Incoming>,
    conn: Arc<ConnCtx>,
) -> Result<Response<ProxyBody>, Infallible> {
    let grpc = is_grpc(request.headers());
    let call = AssertUnwindSafe(proxy_call(request, &conn, grpc));
    match call.catch_unwind().await {
        Ok(response) => Ok(response),
        Err(_) => {
            tracing::error!(peer = %conn.peer, "a call's task panicked; the call failed, the process goes on");
            Ok(ProxyError::Panicked.into_response(grpc))
        }
    }
}

async fn proxy_call(
    request: Request<Incoming>,
    conn: &Arc<ConnCtx>,
    grpc: bool,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let active = conn.enter();
    let shared = &conn.shared;
    let listener = &shared.listeners[conn.listener];
    let (mut parts, body) = request.into_parts();

    #[cfg(feature = "test-hooks")]
    if parts.headers.contains_key("x-rpcgate-test-panic") {
        panic!("test hook: x-rpcgate-test-panic");
    }

    let request_id = ensure_request_id(&mut parts.headers);
    // Only rpcgate may say which client certificate was verified: a client-sent value
    // is never passed on.
    parts.headers.remove("x-forwarded-client-cert");
    if let Some(identity) = &conn.client_identity {
        parts
            .headers
            .insert("x-forwarded-client-cert", identity.xfcc.clone());
    }
    let authority = request_authority(&parts.uri, &parts.headers);
    let route_index = listener.router.find(&RequestView {
        path: parts.uri.path(),
        authority: authority.as_ref().map(|a| a.as_str()),
        headers: &parts.headers,
        grpc,
    });

    let record = shared.access_log.enabled().then(|| {
        let (grpc_service, grpc_method) = match grpc_service_method(parts.uri.path()) {
            Some((s, m)) if grpc => (Some(s.to_string()), Some(m.to_string())),
            _ => (None, None),
        };
        Box::new(AccessRecord {
            listener: listener.name.clone(),
            client: conn.peer.to_string(),
            authority: authority
                .as_ref()
                .map_or_else(String::new, |a| a.as_str().to_string()),
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            grpc_service,
            grpc_method,
            protocol: version_name(parts.version),
            user_agent: header_string(&parts.headers, header::USER_AGENT),
            tls_client_subject: conn.client_identity.as_ref().map(|i| i.subject.clone()),
            request_id: Some(request_id.clone()),
            ..Default::default()
        })
    });
    let mut end = CallEnd {
        guard: None,
        record,
        log: shared.access_log.clone(),
        started,
        grpc,
        status: 200,
        active: Some(active),
        attempts: 0,
    };

    let Some(route_index) = route_index else {
        return end.local_error(ProxyError::NoRoute(parts.uri.path().to_string()));
    };
    let route = &listener.routes[route_index];
    let cluster = &shared.clusters[route.cluster];
    if let Some(record) = &mut end.record {
        record.route = Some(route.name.clone());
        record.cluster = Some(cluster.name.clone());
    }

    let client_timeout = parts
        .headers
        .get("grpc-timeout")
        .and_then(|v| parse_grpc_timeout(v.as_bytes()));
    let timeout = effective_timeout(client_timeout, route.timeout);
    let deadline = timeout.map(|t| started + t);

    prepare_request_headers(&mut parts.headers, &conn.peer_ip, route, parts.version);
    let hash = match &cluster.hash_key {
        Some(HashKey::Header(name)) => parts
            .headers
            .get(name.as_str())
            .map(|v| hash_key(v.as_bytes())),
        Some(HashKey::ClientIp) => Some(hash_key(conn.peer_ip.as_bytes())),
        None => None,
    };
    let target = Target {
        cluster,
        route,
        upstreams: &conn.upstreams,
        hash,
        deadline,
        timeout,
        authority: cluster.authority.clone().or(authority),
    };
    match cluster.protocol {
        // The HTTP/1.1 client's future is large and rare on gRPC paths: boxed, it does not
        // inflate every call's future.
        UpstreamProtocol::Http1 => Box::pin(forward_http1(parts, body, target, end)).await,
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => forward_h2(parts, body, target, end).await,
    }
}

/// Where a call goes and under which limits.
struct Target<'a> {
    cluster: &'a ClusterState,
    route: &'a RouteState,
    upstreams: &'a Upstreams,
    hash: Option<u64>,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    /// `:authority` towards the backend: the cluster's override, else the client's.
    authority: Option<http::uri::Authority>,
}

impl Target<'_> {
    /// Picks an endpoint for the next attempt, logging panic mode once per episode.
    fn pick(&self, tried: &[u64]) -> Option<rpcgate_balance::Pick> {
        let pick = self.cluster.balancer.pick(&PickContext {
            hash: self.hash,
            avoid: tried,
        })?;
        let was_in_panic = self.cluster.in_panic.swap(pick.panic, Ordering::Relaxed);
        if pick.panic && !was_in_panic {
            tracing::warn!(cluster = %self.cluster.name, "every endpoint is unhealthy: panic mode, spreading calls over all of them");
        } else if !pick.panic && was_in_panic {
            tracing::info!(cluster = %self.cluster.name, "healthy endpoints again: panic mode over");
        }
        Some(pick)
    }

    fn deadline_error(&self) -> ProxyError {
        ProxyError::DeadlineExceeded(self.timeout.unwrap_or_default())
    }
}

/// How one attempt failed, and whether the call may go to another endpoint.
enum AttemptError {
    /// The backend never saw the call (connect failure, refused, above GOAWAY); the
    /// flag says whether it was a connect failure.
    NotProcessed(String, Outcome, bool),
    /// Anything else: final.
    Final(ProxyError),
}

async fn forward_h2(
    parts: http::request::Parts,
    body: Incoming,
    target: Target<'_>,
    mut end: CallEnd,
) -> Response<ProxyBody> {
    let mut body = RequestBody::new(body);
    let mut tried: Vec<u64> = Vec::new();
    let mut last_failure = String::new();
    // A refused stream may be retried on the same endpoint (the pool then opens another
    // connection); a failed connect is not repeated on an endpoint already tried.
    let mut last_was_connect = false;
    for _ in 0..MAX_ATTEMPTS {
        let Some(pick) = target.pick(&tried) else {
            return end.local_error(ProxyError::NoEndpoint(target.cluster.name.to_string()));
        };
        let endpoint = pick.endpoint;
        if last_was_connect && tried.contains(&endpoint.id()) {
            break;
        }
        end.attempts += 1;
        if let Some(record) = &mut end.record {
            record.endpoint = Some(endpoint.address().to_string());
        }
        let guard = endpoint.start_call();
        let attempt_started = Instant::now();
        let attempt = attempt_h2(
            &parts,
            &mut body,
            &target,
            endpoint.id(),
            endpoint.address(),
        );
        let result = match target.deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, attempt).await {
                Ok(result) => result,
                Err(_) => {
                    guard.finish(Outcome::Failure);
                    return end.local_error(target.deadline_error());
                }
            },
            None => attempt.await,
        };
        match result {
            Ok((response, slot)) => {
                if let Some(record) = &mut end.record {
                    record.upstream_ms = Some(attempt_started.elapsed().as_secs_f64() * 1e3);
                    record.bytes_in = body.bytes_in;
                }
                end.guard = Some(guard);
                return respond_h2(response, slot, &target, end);
            }
            Err(AttemptError::NotProcessed(reason, outcome, connect)) => {
                last_was_connect = connect;
                tracing::debug!(cluster = %target.cluster.name, endpoint = endpoint.address(), %reason, "attempt never reached the backend");
                guard.finish(outcome);
                tried.push(endpoint.id());
                last_failure = reason;
                if !body.replayable() {
                    break;
                }
            }
            Err(AttemptError::Final(error)) => {
                // The client going away says nothing about the backend's health.
                if matches!(error, ProxyError::ClientCancelled(_)) {
                    drop(guard);
                } else {
                    guard.finish(Outcome::Failure);
                }
                return end.local_error(error);
            }
        }
    }
    end.local_error(ProxyError::Unavailable {
        cluster: target.cluster.name.to_string(),
        reason: last_failure,
    })
}

/// One attempt: stream slot, head, request body until the response head arrives.
async fn attempt_h2(
    parts: &http::request::Parts,
    body: &mut RequestBody,
    target: &Target<'_>,
    endpoint_id: u64,
    address: &str,
) -> Result<(Response<h2::RecvStream>, StreamSlot), AttemptError> {
    let slot = target
        .upstreams
        .h2_slot(
            endpoint_id,
            address,
            target.cluster.connect_timeout,
            target.cluster.tls.as_ref(),
        )
        .await
        .map_err(|e| AttemptError::NotProcessed(e.to_string(), Outcome::Failure, true))?;
    let request = upstream_request(parts, target, address)
        .map_err(|e| AttemptError::Final(ProxyError::BadRequest(e.to_string())))?;
    let sender = slot.sender();
    let mut sender = sender.ready().await.map_err(|e| {
        slot.mark_closed();
        classify_h2_error(&e, address)
    })?;
    body.rewind();
    let (mut response, mut send) = sender.send_request(request, body.is_empty()).map_err(|e| {
        slot.mark_closed();
        classify_h2_error(&e, address)
    })?;
    loop {
        tokio::select! {
            biased;
            result = &mut response => {
                let response = result.map_err(|e| classify_h2_error(&e, address))?;
                if !body.done_sending() {
                    tokio::spawn(pump_rest(std::mem::take(body), send));
                }
                return Ok((response, slot));
            }
            step = body.pump_step(&mut send), if !body.done_sending() => {
                if let Err(PumpError::Client(error)) = step {
                    send.send_reset(h2::Reason::CANCEL);
                    return Err(AttemptError::Final(ProxyError::ClientCancelled(error.to_string())));
                }
                // An upstream-side error shows up in the response future next.
            }
        }
    }
}

/// Streams the rest of a request body after the response head has arrived (client and
/// bidi streaming), stopping when the backend resets or ends the stream.
async fn pump_rest(mut body: RequestBody, mut send: h2::SendStream<Bytes>) {
    while !body.done_sending() {
        match body.pump_step(&mut send).await {
            Ok(()) => {}
            Err(PumpError::Client(_)) => {
                send.send_reset(h2::Reason::CANCEL);
                return;
            }
            Err(PumpError::Upstream) => return,
        }
    }
}

fn classify_h2_error(error: &h2::Error, address: &str) -> AttemptError {
    if error.is_go_away() && error.is_remote() {
        return AttemptError::NotProcessed(
            format!("{address} is going away (GOAWAY) and did not take the stream"),
            Outcome::Success,
            false,
        );
    }
    if error.is_reset() && error.reason() == Some(h2::Reason::REFUSED_STREAM) {
        return AttemptError::NotProcessed(
            format!("{address} refused the stream"),
            Outcome::Failure,
            false,
        );
    }
    if let (true, Some(reason)) = (error.is_reset(), error.reason()) {
        return AttemptError::Final(ProxyError::UpstreamReset(reason));
    }
    AttemptError::Final(ProxyError::ConnectionLost(format!("{address}: {error}")))
}

/// Builds the response to the client from the backend's response head.
fn respond_h2(
    response: Response<h2::RecvStream>,
    slot: StreamSlot,
    target: &Target<'_>,
    mut end: CallEnd,
) -> Response<ProxyBody> {
    let (mut head, recv) = response.into_parts();
    end.status = head.status.as_u16();
    if end.grpc && head.status != StatusCode::OK && !head.headers.contains_key("grpc-status") {
        // A non-gRPC HTTP error (an HTML 502 from something in between, say): turn it into
        // the status a gRPC client would derive, as a proper trailers-only response.
        let code = http_to_grpc(head.status);
        let message = format!(
            "backend answered HTTP {} without a gRPC status",
            head.status
        );
        end.status = 200;
        let failure = matches!(head.status.as_u16(), 502..=504);
        return end.finish_now(code.as_u8().into(), &message, failure);
    }
    // No hop-by-hop scan: the h2 codec refuses a response carrying such headers.
    for (name, value) in &target.route.response_headers {
        head.headers.insert(name.clone(), value.clone());
    }
    if recv.is_end_stream() {
        // Trailers-only (or empty) response: nothing more will come.
        let status = grpc_status(&head.headers);
        end.finish(status, 0, None);
        return Response::from_parts(head, ProxyBody::empty());
    }
    let deadline = target
        .deadline
        .map(|d| Box::pin(tokio::time::sleep_until(d)));
    Response::from_parts(
        head,
        ProxyBody::upstream(UpstreamBody::new(recv, end.grpc, deadline, end, slot)),
    )
}

async fn forward_http1(
    parts: http::request::Parts,
    body: Incoming,
    target: Target<'_>,
    mut end: CallEnd,
) -> Response<ProxyBody> {
    let client = target
        .upstreams
        .http1_client(target.cluster.index, target.cluster.connect_timeout);
    let replayable = body.is_end_stream();
    let mut body = Some(body);
    let mut tried: Vec<u64> = Vec::new();
    let mut last_failure = String::new();
    let attempts = target
        .cluster
        .balancer
        .endpoints()
        .len()
        .clamp(1, MAX_ATTEMPTS);
    for _ in 0..attempts {
        let Some(pick) = target.pick(&tried) else {
            return end.local_error(ProxyError::NoEndpoint(target.cluster.name.to_string()));
        };
        let endpoint = pick.endpoint;
        end.attempts += 1;
        if let Some(record) = &mut end.record {
            record.endpoint = Some(endpoint.address().to_string());
        }
        let guard = endpoint.start_call();
        let request_body = match body.take() {
            Some(b) if !replayable => Either::Left(b),
            _ => Either::Right(Empty::new()),
        };
        let request = match http1_request(&parts, &target, endpoint.address(), request_body) {
            Ok(r) => r,
            Err(e) => return end.local_error(ProxyError::BadRequest(e.to_string())),
        };
        let started = Instant::now();
        let call = client.request(request);
        let result = match target.deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, call).await {
                Ok(r) => r,
                Err(_) => {
                    guard.finish(Outcome::Failure);
                    return end.local_error(target.deadline_error());
                }
            },
            None => call.await,
        };
        match result {
            Ok(response) => {
                if let Some(record) = &mut end.record {
                    record.upstream_ms = Some(started.elapsed().as_secs_f64() * 1e3);
                }
                let (mut head, incoming) = response.into_parts();
                let failure = matches!(head.status.as_u16(), 502..=504);
                guard.finish(if failure {
                    Outcome::Failure
                } else {
                    Outcome::Success
                });
                end.status = head.status.as_u16();
                strip_hop_by_hop(&mut head.headers);
                for (name, value) in &target.route.response_headers {
                    head.headers.insert(name.clone(), value.clone());
                }
                return Response::from_parts(head, ProxyBody::http1(incoming, Some(end)));
            }
            Err(error) if error.is_connect() => {
                guard.finish(Outcome::Failure);
                tried.push(endpoint.id());
                last_failure = format!("{}: {error}", endpoint.address());
                if !replayable {
                    break;
                }
            }
            Err(error) => {
                guard.finish(Outcome::Failure);
                return end.local_error(ProxyError::ConnectionLost(format!(
                    "{}: {error}",
                    endpoint.address()
                )));
            }
        }
    }
    end.local_error(ProxyError::Unavailable {
        cluster: target.cluster.name.to_string(),
        reason: last_failure,
    })
}

/// The request head towards an HTTP/2 backend.
fn upstream_request(
    parts: &http::request::Parts,
    target: &Target<'_>,
    address: &str,
) -> Result<Request<()>, http::Error> {
    // Every piece is reused (refcounted `Bytes`), nothing is parsed again: the cluster's
    // override, else the client's `:authority` or `Host`, else the endpoint.
    let authority = match &target.authority {
        Some(authority) => authority.clone(),
        None => address.parse()?,
    };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(if target.cluster.tls.is_some() {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    uri.authority = Some(authority);
    uri.path_and_query = Some(
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    let mut request = Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = Uri::from_parts(uri)?;
    *request.version_mut() = Version::HTTP_2;
    // One clone of the map (no rehashing), rather than re-inserting header by header.
    let mut headers = parts.headers.clone();
    headers.remove(header::HOST);
    if let Some(deadline) = target.deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        headers.insert("grpc-timeout", format_grpc_timeout(left));
    }
    *request.headers_mut() = headers;
    Ok(request)
}

/// The request towards an HTTP/1.1 backend.
fn http1_request(
    parts: &http::request::Parts,
    target: &Target<'_>,
    address: &str,
    body: Either<Incoming, Empty<Bytes>>,
) -> Result<Request<Either<Incoming, Empty<Bytes>>>, http::Error> {
    let uri = Uri::builder()
        .scheme("http")
        .authority(address)
        .path_and_query(parts.uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()?;
    let mut request = Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .body(body)?;
    *request.headers_mut() = parts.headers.clone();
    if let Some(authority) = &target.authority
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(header::HOST, value);
    }
    Ok(request)
}

/// Connection-specific headers that never cross a proxy (RFC 9110 §7.6.1, RFC 9113 §8.2.2).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "proxy-authenticate",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(connection) = headers.get(header::CONNECTION) {
        let named: Vec<HeaderName> = connection
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Request headers towards the backend: hop-by-hop removed (`te: trailers` kept),
/// `x-forwarded-for` appended, the route's headers set.
fn prepare_request_headers(
    headers: &mut HeaderMap,
    peer_ip: &HeaderValue,
    route: &RouteState,
    version: Version,
) {
    // HTTP/2 requests cannot carry connection-specific headers or a `te` other than
    // `trailers`: the h2 codec refuses such a request before it gets here (RFC 9113
    // §8.2.2), so only HTTP/1.x requests need the scan.
    if version != Version::HTTP_2 {
        strip_hop_by_hop(headers);
        if let Some(te) = headers.get(header::TE)
            && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
        {
            headers.remove(header::TE);
        }
    }
    // Every `x-forwarded-for` line counts (RFC 9110 §5.3: lines are one list), as
    // NGINX's `$proxy_add_x_forwarded_for`; a value that is not text is dropped. Without
    // one (the usual case) the connection's ready-made value is shared, no allocation.
    if headers.contains_key("x-forwarded-for") {
        let mut forwarded = String::new();
        for line in headers.get_all("x-forwarded-for") {
            if let Ok(text) = line.to_str() {
                forwarded.push_str(text);
                forwarded.push_str(", ");
            }
        }
        forwarded.push_str(peer_ip.to_str().unwrap_or_default());
        if let Ok(value) = HeaderValue::from_str(&forwarded) {
            headers.insert("x-forwarded-for", value);
        }
    } else {
        headers.insert("x-forwarded-for", peer_ip.clone());
    }
    for (name, value) in &route.request_headers {
        headers.insert(name.clone(), value.clone());
    }
}

/// Returns the request's `x-request-id`, setting a fresh one when absent.
fn ensure_request_id(headers: &mut HeaderMap) -> String {
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        return id.to_string();
    }
    let id = format!("{:032x}", fastrand::u128(..));
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert("x-request-id", value);
    }
    id
}

/// The request's `:authority`, or its `Host` header (HTTP/1.1); a refcounted clone, no copy.
fn request_authority(uri: &Uri, headers: &HeaderMap) -> Option<http::uri::Authority> {
    uri.authority().cloned().or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|host| http::uri::Authority::try_from(host.as_bytes()).ok())
    })
}

fn header_string(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

/// The end of a call: passive health, the access log, the connection's idle clock.
/// Dropped without [`CallEnd::finish`] means the client went away: a cancel.
#[derive(Debug)]
pub(crate) struct CallEnd {
    guard: Option<CallGuard>,
    record: Option<Box<AccessRecord>>,
    log: AccessLog,
    started: Instant,
    grpc: bool,
    status: u16,
    active: Option<ActiveCall>,
    attempts: u32,
}

impl CallEnd {
    /// Records how the call ended. `grpc_status` is the final status (trailers or
    /// trailers-only headers); `error` describes a failure of the proxy's making.
    pub(crate) fn finish(mut self, grpc_status: Option<u32>, bytes_out: u64, error: Option<&str>) {
        self.complete(grpc_status, bytes_out, error);
    }

    fn complete(&mut self, grpc_status: Option<u32>, bytes_out: u64, error: Option<&str>) {
        if let Some(guard) = self.guard.take() {
            let unavailable = grpc_status == Some(Code::Unavailable.as_u8().into());
            let cancelled = grpc_status == Some(Code::Cancelled.as_u8().into()) && error.is_some();
            if cancelled {
                drop(guard);
            } else if unavailable || matches!(self.status, 502..=504) {
                guard.finish(Outcome::Failure);
            } else {
                guard.finish(Outcome::Success);
            }
        }
        if let Some(mut record) = self.record.take() {
            record.status = self.status;
            record.grpc_status = if self.grpc { grpc_status } else { None };
            record.attempts = self.attempts;
            record.bytes_out = bytes_out;
            record.duration_ms = self.started.elapsed().as_secs_f64() * 1e3;
            self.log.write(&record);
        }
        if let Some(error) = error {
            tracing::debug!(%error, "call ended with an error");
        }
        self.active = None;
    }

    /// Ends the call with a response of the proxy's own making.
    fn local_error(mut self, error: ProxyError) -> Response<ProxyBody> {
        let code: u32 = error.grpc_code().as_u8().into();
        let message = error.to_string();
        tracing::debug!(%message, "call failed in the proxy");
        let response = error.into_response(self.grpc);
        self.status = response.status().as_u16();
        self.complete(Some(code), 0, None);
        response
    }

    /// Ends the call now with a gRPC status derived from the upstream's answer.
    fn finish_now(mut self, code: u32, message: &str, failure: bool) -> Response<ProxyBody> {
        if let Some(guard) = self.guard.take() {
            guard.finish(if failure {
                Outcome::Failure
            } else {
                Outcome::Success
            });
        }
        self.complete(Some(code), 0, None);
        crate::status::trailers_only(code, message)
    }
}

impl Drop for CallEnd {
    fn drop(&mut self) {
        if self.guard.is_some() || self.record.is_some() {
            self.complete(
                Some(Code::Cancelled.as_u8().into()),
                0,
                Some("client went away"),
            );
        }
    }
}

/// Why pumping the request body stopped.
enum PumpError {
    /// The client's side failed (reset, connection lost).
    Client(hyper::Error),
    /// The backend's stream is closed for sending.
    Upstream,
}

/// The client's request body, with what has been read of it kept for a replay on
/// another endpoint until it grows past [`REPLAY_LIMIT`].
#[derive(Debug, Default)]
struct RequestBody {
    incoming: Option<Incoming>,
    /// Data already read from the client, for replay (cleared once over the limit).
    kept: Vec<Bytes>,
    kept_bytes: usize,
    replayable: bool,
    trailers: Option<HeaderMap>,
    incoming_done: bool,
    /// Position in `kept` of the current attempt.
    cursor: usize,
    /// A chunk taken but not yet fully sent on the current attempt.
    pending: Option<Bytes>,
    sent_end: bool,
    bytes_in: u64,
}

impl RequestBody {
    fn new(incoming: Incoming) -> Self {
        let done = incoming.is_end_stream();
        Self {
            incoming: Some(incoming),
            replayable: true,
            incoming_done: done,
            ..Default::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.incoming_done && self.kept.is_empty() && self.trailers.is_none() && self.bytes_in == 0
    }

    fn replayable(&self) -> bool {
        self.replayable
    }

    fn done_sending(&self) -> bool {
        self.sent_end
    }

    /// Starts a new attempt from the beginning of the body.
    fn rewind(&mut self) {
        self.cursor = 0;
        self.pending = None;
        self.sent_end = self.is_empty();
    }

    /// Sends the next piece of the body (or its end) on `send`.
    async fn pump_step(&mut self, send: &mut h2::SendStream<Bytes>) -> Result<(), PumpError> {
        if self.pending.is_none() {
            if self.cursor < self.kept.len() {
                self.pending = Some(self.kept[self.cursor].clone());
                self.cursor += 1;
            } else if !self.incoming_done {
                let Some(incoming) = self.incoming.as_mut() else {
                    self.incoming_done = true;
                    return Ok(());
                };
                // While waiting on the client, notice a backend that resets the stream.
                let frame = tokio::select! {
                    biased;
                    frame = incoming.frame() => frame,
                    _ = std::future::poll_fn(|cx| send.poll_reset(cx)) => return Err(PumpError::Upstream),
                };
                match frame {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => {
                            self.bytes_in += data.len() as u64;
                            if self.replayable {
                                self.kept_bytes += data.len();
                                if self.kept_bytes > REPLAY_LIMIT {
                                    self.replayable = false;
                                    self.kept.clear();
                                } else {
                                    self.kept.push(data.clone());
                                    self.cursor = self.kept.len();
                                }
                            }
                            if !data.is_empty() {
                                self.pending = Some(data);
                            }
                        }
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                self.trailers = Some(trailers);
                            }
                        }
                    },
                    Some(Err(error)) => return Err(PumpError::Client(error)),
                    None => self.incoming_done = true,
                }
                if self.pending.is_none() && !(self.incoming_done || self.trailers.is_some()) {
                    return Ok(());
                }
            }
        }
        // The chunk stays in `self.pending` across every await, so an attempt cancelled
        // halfway (the response arrived first) loses nothing.
        if self.pending.is_some() {
            while let Some(chunk) = self.pending.as_mut() {
                if chunk.is_empty() {
                    self.pending = None;
                    break;
                }
                send.reserve_capacity(chunk.len());
                let capacity = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                    Some(Ok(n)) => n,
                    _ => return Err(PumpError::Upstream),
                };
                let Some(chunk) = self.pending.as_mut() else {
                    break;
                };
                if capacity == 0 {
                    continue;
                }
                let piece = chunk.split_to(capacity.min(chunk.len()));
                if send.send_data(piece, false).is_err() {
                    return Err(PumpError::Upstream);
                }
            }
            return Ok(());
        }
        if self.incoming_done || self.trailers.is_some() {
            let result = match self.trailers.clone() {
                Some(trailers) => send.send_trailers(trailers),
                None => send.send_data(Bytes::new(), true),
            };
            self.sent_end = true;
            result.map_err(|_| PumpError::Upstream)?;
        }
        Ok(())
    }
}
