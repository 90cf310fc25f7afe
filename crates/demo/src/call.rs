//! One call at the HTTP level, around the tonic services: counts it, records what was
//! received, applies the [`meta`] behaviours (delay, fail, reset, echo) and tags the
//! response headers and trailers with the backend's name.
//!
//! This sits at the `http::Request` level rather than in a tonic interceptor because
//! only there are all the headers visible (`te`, `:authority`, `connection`), the
//! trailers writable, and a stream resettable with a chosen HTTP/2 error code.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::metadata::MetadataMap;
use tonic::service::Routes;
use tonic::{Code, Status};

use crate::backend::SeenRequest;
use crate::meta;

/// The error type of the per-call service, as hyper wants it.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Counters and the last request, shared by a backend's calls and its handle.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Calls received.
    pub(crate) calls: AtomicU64,
    /// Calls whose client went away before the response ended.
    pub(crate) cancelled: AtomicU64,
    /// Calls received whose response has not ended yet.
    pub(crate) in_flight: AtomicU64,
    /// The most recent request's path, authority and headers.
    pub(crate) last: Mutex<Option<SeenRequest>>,
    /// Woken on every change above, for `BackendHandle::wait_until`.
    pub(crate) changed: Notify,
}

/// Everything a backend's calls share.
pub(crate) struct Shared {
    /// The backend's name as a header value, for the tags.
    pub(crate) name: HeaderValue,
    /// The tonic services.
    pub(crate) routes: Routes,
    /// Counters.
    pub(crate) stats: Arc<Stats>,
}

/// Counts a call from its start to the end of its response; dropped before
/// [`CallGuard::finish`], the call counts as cancelled (the client went away: hyper drops
/// the handler's future or the response body when the stream is reset).
struct CallGuard {
    stats: Arc<Stats>,
    finished: bool,
}

impl CallGuard {
    fn start(stats: Arc<Stats>) -> Self {
        stats.calls.fetch_add(1, Ordering::SeqCst);
        stats.in_flight.fetch_add(1, Ordering::SeqCst);
        stats.changed.notify_waiters();
        Self {
            stats,
            finished: false,
        }
    }

    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.stats.cancelled.fetch_add(1, Ordering::SeqCst);
        }
        self.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.stats.changed.notify_waiters();
    }
}

/// The failure that [`meta::FAIL_CODE`] (and [`meta::FAIL_DETAILS_BIN`]) ask for, if any.
pub(crate) fn requested_failure(md: &MetadataMap) -> Option<Status> {
    let code: i32 = md
        .get(meta::FAIL_CODE)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let code = Code::from_i32(code);
    let details = md
        .get_bin(meta::FAIL_DETAILS_BIN)
        .and_then(|v| v.to_bytes().ok());
    Some(match details {
        Some(details) if !details.is_empty() => {
            Status::with_details(code, "requested failure", details)
        }
        _ => Status::new(code, "requested failure"),
    })
}

/// Attempts seen per `x-request-id`, for [`meta::FAIL_ATTEMPTS`] (process-wide, so a
/// retry on another backend of the same process counts too). Cleared when it grows large:
/// it only has to remember calls in progress.
static ATTEMPTS: Mutex<Option<std::collections::HashMap<String, u32>>> = Mutex::new(None);

/// Which attempt of its call (1, 2, …) this request is, when the request counts its
/// attempts ([`meta::FAIL_ATTEMPTS`] or [`meta::DELAY_ATTEMPTS`]); counted once per request.
fn attempt_number(headers: &HeaderMap) -> Option<u32> {
    if !headers.contains_key(meta::FAIL_ATTEMPTS) && !headers.contains_key(meta::DELAY_ATTEMPTS) {
        return None;
    }
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut attempts = ATTEMPTS.lock().unwrap_or_else(PoisonError::into_inner);
    let map = attempts.get_or_insert_with(Default::default);
    if map.len() > 10_000 {
        map.clear();
    }
    let seen = map.entry(id).or_insert(0);
    *seen += 1;
    Some(*seen)
}

/// What the request's metadata asks this call to do.
struct Plan {
    /// Past the failing attempts [`meta::FAIL_ATTEMPTS`] asks for: this attempt answers.
    recovered: bool,
    delay: Option<Duration>,
    fail_now: Option<Status>,
    reset: Option<h2::Reason>,
    reset_after_frames: Option<u64>,
    http_status: Option<http::StatusCode>,
    echo: bool,
}

fn parse<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

impl Plan {
    fn from_headers(headers: &HeaderMap) -> Self {
        let attempt = attempt_number(headers);
        let within = |key: &str| match (attempt, parse::<u32>(headers, key)) {
            (Some(attempt), Some(limit)) => attempt <= limit,
            _ => true,
        };
        let fail_now = if headers.contains_key(meta::FAIL_CODE)
            && !headers.contains_key(meta::FAIL_AFTER)
            && within(meta::FAIL_ATTEMPTS)
        {
            requested_failure(&MetadataMap::from_headers(headers.clone()))
        } else {
            None
        };
        Self {
            recovered: !within(meta::FAIL_ATTEMPTS),
            delay: parse(headers, meta::DELAY_MS)
                .map(Duration::from_millis)
                .filter(|_| within(meta::DELAY_ATTEMPTS)),
            fail_now,
            reset: parse::<u32>(headers, meta::RESET_STREAM).map(h2::Reason::from),
            reset_after_frames: parse(headers, meta::RESET_AFTER_FRAMES),
            http_status: parse::<u16>(headers, meta::HTTP_STATUS)
                .and_then(|code| http::StatusCode::from_u16(code).ok())
                .filter(|_| within(meta::FAIL_ATTEMPTS)),
            echo: headers
                .get(meta::ECHO_METADATA)
                .is_some_and(|v| v.as_bytes() == b"1"),
        }
    }
}

/// All values of `name` joined by ", ", if there is any.
fn joined(headers: &HeaderMap, name: &str) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = first.as_bytes().to_vec();
    for value in values {
        out.extend_from_slice(b", ");
        out.extend_from_slice(value.as_bytes());
    }
    HeaderValue::from_bytes(&out).ok()
}

fn authority<B>(request: &Request<B>) -> Option<String> {
    match request.uri().authority() {
        Some(authority) => Some(authority.as_str().to_owned()),
        None => request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned),
    }
}

/// The response headers that report what was received ([`meta::ECHO_METADATA`]).
fn echo_headers<B>(request: &Request<B>) -> HeaderMap {
    let headers = request.headers();
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if n.starts_with(meta::ECHO_PREFIX) || (n.ends_with("-bin") && !n.starts_with("grpc-")) {
            out.append(name.clone(), value.clone());
        }
    }
    let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
    if let Ok(v) = HeaderValue::from_str(&names.join(",")) {
        out.insert(meta::SEEN_HEADERS, v);
    }
    if let Some(v) = authority(request).and_then(|a| HeaderValue::from_str(&a).ok()) {
        out.insert(meta::SEEN_AUTHORITY, v);
    }
    for (from, to) in meta::SEEN {
        if let Some(v) = joined(headers, from) {
            out.insert(*to, v);
        }
    }
    out
}

/// Serves one call (one HTTP/2 stream).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<TaggedBody>, BoxError> {
    let guard = CallGuard::start(shared.stats.clone());
    let seen = SeenRequest {
        path: request.uri().path().to_owned(),
        authority: authority(&request),
        headers: request.headers().clone(),
    };
    *shared
        .stats
        .last
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(seen);
    let plan = Plan::from_headers(request.headers());
    let mut request = request;
    if plan.recovered {
        // Streaming methods read the failure from the metadata themselves.
        request.headers_mut().remove(meta::FAIL_CODE);
    }
    let echo = plan.echo.then(|| echo_headers(&request));

    if let Some(delay) = plan.delay {
        tokio::time::sleep(delay).await;
    }
    if let (Some(reason), None) = (plan.reset, plan.reset_after_frames) {
        guard.finish();
        return Err(h2::Error::from(reason).into());
    }
    let is_grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let response = match (plan.http_status, plan.fail_now) {
        (Some(code), _) => plain(code, "requested HTTP status\n".to_owned()),
        (None, _) if !is_grpc => plain(
            http::StatusCode::OK,
            format!(
                "Hello from {}\n",
                String::from_utf8_lossy(shared.name.as_bytes())
            ),
        ),
        (None, Some(status)) => status.into_http::<Body>(),
        (None, None) => {
            let mut routes = shared.routes.clone();
            std::future::poll_fn(|cx| Service::<Request<Body>>::poll_ready(&mut routes, cx))
                .await?;
            routes.call(request.map(Body::new)).await?
        }
    };

    let (mut parts, inner) = response.into_parts();
    parts.headers.insert(meta::BACKEND, shared.name.clone());
    for (name, value) in echo.iter().flatten() {
        parts.headers.append(name.clone(), value.clone());
    }
    let trailers_only = parts.headers.contains_key("grpc-status");
    let body = if trailers_only || !is_grpc || plan.http_status.is_some() {
        if trailers_only {
            // The headers are the trailers: tag them there.
            parts
                .headers
                .insert(meta::BACKEND_TRAILER, shared.name.clone());
        }
        // A plain body is a few bytes, written at once: the call ends here.
        guard.finish();
        TaggedBody {
            inner,
            trailer: None,
            guard: None,
            reset: None,
        }
    } else {
        TaggedBody {
            inner,
            trailer: Some(shared.name.clone()),
            guard: Some(guard),
            reset: plan.reset.zip(plan.reset_after_frames),
        }
    };
    Ok(Response::from_parts(parts, body))
}

/// A non-gRPC `text/plain` response.
fn plain(code: http::StatusCode, text: String) -> Response<Body> {
    let mut response = Response::new(Body::new(text));
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A response body that adds [`meta::BACKEND_TRAILER`] to the trailers, ends the call's
/// [`CallGuard`] when the trailers went out, and can reset the stream after some frames.
pub(crate) struct TaggedBody {
    inner: Body,
    /// The trailer value, until it was added.
    trailer: Option<HeaderValue>,
    /// The call, until its response ended.
    guard: Option<CallGuard>,
    /// Reset with this reason once this many more DATA frames went out.
    reset: Option<(h2::Reason, u64)>,
}

impl TaggedBody {
    fn finish(&mut self) {
        if let Some(guard) = self.guard.take() {
            guard.finish();
        }
    }

    fn tag(&mut self, trailers: &mut HeaderMap) {
        if let Some(name) = self.trailer.take() {
            trailers.insert(meta::BACKEND_TRAILER, name);
        }
    }
}

impl http_body::Body for TaggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(status)) => {
                this.finish();
                return Poll::Ready(Some(Err(status.into())));
            }
            None => {
                this.finish();
                let mut trailers = HeaderMap::new();
                this.tag(&mut trailers);
                return Poll::Ready((!trailers.is_empty()).then(|| Ok(Frame::trailers(trailers))));
            }
        };
        // Reset in place of the frame after the last allowed one, not right after that
        // one: h2 discards a stream's unsent frames on reset, so the allowed frames
        // must have had the time the next one took to be produced to go out.
        if let Some((reason, left)) = &mut this.reset {
            if *left == 0 {
                let reason = *reason;
                this.reset = None;
                this.finish();
                return Poll::Ready(Some(Err(h2::Error::from(reason).into())));
            }
            *left -= u64::from(frame.is_data());
        }
        let frame = match frame.into_trailers() {
            Ok(mut trailers) => {
                this.tag(&mut trailers);
                this.finish();
                Frame::trailers(trailers)
            }
            Err(frame) => frame,
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.reset.is_none() && self.trailer.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
