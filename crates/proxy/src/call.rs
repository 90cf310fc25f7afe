//! One call, top to bottom: route → access lists and rate limits → deadline → admission →
//! headers → attempts → response (gzipped when the listener says so).
//!
//! [`handle`] is the service hyper calls for every request (every HTTP/2 stream is its
//! own call, so the calls of one client connection spread over all endpoints); it boxes
//! the body and hands the request to [`forward`], which contains panics and runs
//! [`proxy_call`]. That loads the current [`Generation`](crate::state::Generation) once
//! and reads as the call sequence, one line per stage; each stage is its own module:
//! [`crate::route`], [`crate::deadline`], [`crate::headers`], [`crate::attempt`],
//! [`crate::response`]. How the call ended is decided in [`crate::verdict`] and recorded
//! by [`crate::call_end`]; anything the proxy answers by itself is written by
//! [`crate::status`].
//!
//! [`forward`] is the boundary other front ends (gRPC-Web, later) enter by: it takes a
//! request head and a body already boxed.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::FutureExt;
use http::header;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rpcgate_balance::hash_key;
use rpcgate_config::HashKey;
use tokio::time::Instant;

use crate::access_log::AccessRecord;
use crate::admission;
use crate::attempt::{self, Target};
use crate::body::{BoxError, ProxyBody, RequestBodyBox};
use crate::call_end::CallEnd;
use crate::compression;
use crate::conn::ConnCtx;
use crate::deadline::Deadline;
use crate::grpc_framing;
use crate::headers;
use crate::rate_limit::{self, RateLimit};
use crate::request_body::RequestBody;
use crate::response;
use crate::route::{RequestView, grpc_service_method};
use crate::send_stall::WatchedBody;
use crate::state::{Generation, ListenerState, RouteState};
use crate::status;
use crate::verdict::{Cause, Verdict};

/// The service hyper runs for every request; never fails, never lets a panic out. The
/// response body reports to the connection's `send_timeout` watch.
pub(crate) async fn handle(
    request: Request<Incoming>,
    conn: Arc<ConnCtx>,
) -> Result<Response<WatchedBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let response = forward(parts, body.map_err(BoxError::from).boxed_unsync(), &conn).await;
    Ok(response.map(|body| WatchedBody::new(body, conn.send_watch.clone())))
}

/// Runs one call whose request body is boxed; a panic fails this call only.
pub(crate) async fn forward(
    parts: http::request::Parts,
    body: RequestBodyBox,
    conn: &Arc<ConnCtx>,
) -> Response<ProxyBody> {
    let grpc = headers::is_grpc(&parts.headers);
    let call = AssertUnwindSafe(proxy_call(parts, body, conn, grpc));
    match call.catch_unwind().await {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(peer = %conn.peer, "a call's task panicked; the call failed, the process goes on");
            let verdict = Verdict::new(Cause::Panicked);
            status::respond(&verdict, grpc, &verdict.cause.to_string())
        }
    }
}

/// The call sequence.
async fn proxy_call(
    mut parts: http::request::Parts,
    body: RequestBodyBox,
    conn: &Arc<ConnCtx>,
    grpc: bool,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let generation = conn.generation();

    #[cfg(feature = "test-hooks")]
    if parts.headers.contains_key("x-rpcgate-test-panic") {
        panic!("test hook: x-rpcgate-test-panic");
    }

    let request_id = headers::ensure_request_id(&mut parts.headers);
    headers::set_client_cert(
        &mut parts.headers,
        conn.client_identity.as_ref().map(|identity| &identity.xfcc),
    );
    let authority = headers::request_authority(&parts.uri, &parts.headers);
    let Some(listener) = generation.listener(&conn.listener) else {
        return no_listener(&generation, conn, grpc);
    };
    let record = access_record(
        &generation,
        listener,
        conn,
        &parts,
        authority.as_ref(),
        grpc,
        request_id,
    );
    let mut end = CallEnd::new(
        record,
        generation.access_log.clone(),
        started,
        grpc,
        conn.enter(),
        generation.log.client_error_detail,
    );

    // 1. route (found first so that every call is counted on the route it took)
    let view = RequestView {
        path: parts.uri.path(),
        authority: authority.as_ref().map(|a| a.as_str()),
        headers: &parts.headers,
        grpc,
    };
    let route = listener.route(&view);
    match route {
        Some(route) => {
            note_route(&mut end, route);
            if generation.stats.per_call {
                end.count_in(
                    route.stats.clone(),
                    route.stats.method(parts.uri.path(), grpc),
                );
            }
        }
        // Unrouted calls carry no method labels: a scanner's random paths must not use
        // up the label budget of the real methods.
        None if generation.stats.per_call => {
            let unrouted = &listener.unrouted;
            end.count_in(unrouted.clone(), unrouted.method(parts.uri.path(), false));
        }
        None => {}
    }
    // 2. the listener's access list, decided when the connection was accepted
    if !conn.allowed {
        let verdict = Verdict::new(Cause::NotAllowed {
            client: conn.peer.ip(),
            on: format!("listener {}", listener.name),
        });
        return match route {
            Some(route) => refuse(end, route, verdict),
            None => end.respond(verdict),
        };
    }
    // 3. the listener's rate limit: every call on it, routed or not
    if let Some(limit) = &listener.rate_limit
        && let Err(wait) = limit.check(conn.peer.ip())
    {
        let stats = route.map_or(&listener.unrouted, |r| &r.stats);
        stats.limited_by_listener.fetch_add(1, Ordering::Relaxed);
        let on = format!("listener {}", listener.name);
        let response = end.respond(rate_limited(on, limit, wait));
        return with_hint(response, route, grpc, wait);
    }
    let Some(route) = route else {
        return end.respond(Verdict::new(Cause::NoRoute {
            path: parts.uri.path().to_string(),
        }));
    };
    if !route.access.is_open() && !route.access.permits(conn.peer.ip()) {
        return refuse(
            end,
            route,
            Verdict::new(Cause::NotAllowed {
                client: conn.peer.ip(),
                on: format!("route {}", route.name),
            }),
        );
    }
    // 4. the route's rate limit
    if let Some(limit) = &route.rate_limit
        && let Err(wait) = limit.check(conn.peer.ip())
    {
        route.stats.limited_by_route.fetch_add(1, Ordering::Relaxed);
        let on = format!("route {}", route.name);
        let response = end.respond(rate_limited(on, limit, wait));
        return with_hint(response, Some(route), grpc, wait);
    }
    // 5. the gRPC framing checks, on what the client has sent already (for a unary call,
    //    usually its message: refused then before any backend is asked) and on the rest
    //    as it streams
    let body = if grpc {
        let encoded = grpc_framing::compression_allowed(&parts.headers);
        let reader = grpc_framing::FrameReader::new(route.max_message_bytes, encoded);
        grpc_framing::CheckedBody::wrap(body, reader)
    } else {
        body
    };
    let mut body = RequestBody::new(body);
    if let Err(error) = body.read_ahead() {
        return refuse(end, route, Verdict::new(Cause::client_body_failed(error)));
    }
    // 6. deadline
    let deadline = Deadline::for_call(&parts.headers, route.timeout, started);
    // 7. admission: max_requests and the circuit breaker
    match admission::admit(&route.cluster.limits) {
        Ok(admitted) => end.admitted(admitted),
        Err(verdict) => return refuse(end, route, verdict),
    }
    // 8. headers
    headers::prepare_request(
        &mut parts.headers,
        parts.version,
        &conn.peer_ip,
        &route.request_headers,
    );
    let target = Target {
        route,
        cluster: &route.cluster,
        upstreams: &conn.upstreams,
        hash: call_hash(route, &parts.headers, conn),
        deadline,
        authority: route.cluster.authority.clone().or(authority),
    };
    // 9. attempts
    let answered = match attempt::run(&target, &parts, &mut body, &mut end).await {
        Ok(answered) => answered,
        Err(verdict) => return refuse(end, route, verdict),
    };
    // 10. response, gzipped for clients that take it when the listener says so
    let response = response::deliver(answered, &target, end);
    if listener.compression && !grpc {
        compression::gzip_if_fitting(&parts.method, &parts.headers, response)
    } else {
        response
    }
}

/// Ends a routed call with a response of the proxy's own making, with the route's
/// `response_headers` on it too (security headers such as HSTS belong on every answer of
/// the route; NGINX needs `add_header … always` for that).
fn refuse(end: CallEnd, route: &RouteState, verdict: Verdict) -> Response<ProxyBody> {
    let mut response = end.respond(verdict);
    headers::set_all(response.headers_mut(), &route.response_headers);
    response
}

/// The verdict for a call a rate limit refuses.
fn rate_limited(on: String, limit: &RateLimit, wait: std::time::Duration) -> Verdict {
    Verdict::new(Cause::RateLimited {
        on,
        limit: limit.describe(),
        retry_after: wait,
    })
}

/// A rate limit's refusal with when to come back, and the route's `response_headers`.
fn with_hint(
    mut response: Response<ProxyBody>,
    route: Option<&RouteState>,
    grpc: bool,
    wait: std::time::Duration,
) -> Response<ProxyBody> {
    rate_limit::set_hint(response.headers_mut(), grpc, wait);
    if let Some(route) = route {
        headers::set_all(response.headers_mut(), &route.response_headers);
    }
    response
}

/// The `ring_hash` key of this call, hashed.
fn call_hash(route: &RouteState, headers: &http::HeaderMap, conn: &ConnCtx) -> Option<u64> {
    match &route.cluster.hash_key {
        Some(HashKey::Header(name)) => headers.get(name.as_str()).map(|v| hash_key(v.as_bytes())),
        Some(HashKey::ClientIp) => Some(hash_key(conn.peer_ip.as_bytes())),
        None => None,
    }
}

/// The access-log line of this call as far as the request tells it, when the log is on.
fn access_record(
    generation: &Generation,
    listener: &ListenerState,
    conn: &ConnCtx,
    parts: &http::request::Parts,
    authority: Option<&http::uri::Authority>,
    grpc: bool,
    request_id: String,
) -> Option<Box<AccessRecord>> {
    generation.access_log.enabled().then(|| {
        let (grpc_service, grpc_method) = match grpc_service_method(parts.uri.path()) {
            Some((s, m)) if grpc => (Some(s.to_string()), Some(m.to_string())),
            _ => (None, None),
        };
        Box::new(AccessRecord {
            listener: listener.name.clone(),
            client: conn.peer.to_string(),
            authority: authority.map_or_else(String::new, |a| a.as_str().to_string()),
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            grpc_service,
            grpc_method,
            protocol: headers::version_name(parts.version),
            user_agent: headers::header_string(&parts.headers, header::USER_AGENT),
            tls_client_subject: conn.client_identity.as_ref().map(|i| i.subject.clone()),
            request_id: Some(request_id),
            ..Default::default()
        })
    })
}

/// Notes the route and cluster in the call's end and its access-log line.
fn note_route(end: &mut CallEnd, route: &RouteState) {
    end.routed_to(route.cluster.name.clone());
    if let Some(record) = &mut end.record {
        record.route = Some(route.name.clone());
        record.cluster = Some(route.cluster.name.clone());
    }
}

/// A connection whose listener the current generation does not have. Defensive only:
/// `swap_config` refuses a change to the listener set, so this cannot happen today.
fn no_listener(generation: &Generation, conn: &ConnCtx, grpc: bool) -> Response<ProxyBody> {
    tracing::warn!(
        listener = &*conn.listener,
        generation = generation.number,
        "the listener is not in the current configuration; the call gets no route"
    );
    let verdict = Verdict::new(Cause::NoRoute {
        path: String::from("(listener removed)"),
    });
    status::respond(&verdict, grpc, &verdict.cause.to_string())
}
