//! The [`Client`] service: one call at a time, each balanced over the cluster's endpoints.
//!
//! A call: the circuit breaker admits it (else UNAVAILABLE), the balancer picks an
//! endpoint avoiding those this call already tried, the endpoint's connection is taken or
//! made, and the request goes out. Then:
//! - a connect failure, or a failure before the request body was read, is a *transparent*
//!   retry: the endpoint is marked failed (passive health) and another is tried, once per
//!   endpoint, since nothing of the call reached a backend;
//! - a trailers-only answer whose status the `retry` policy names is retried after the
//!   policy's backoff, within its attempts and budget, when the body could be kept;
//! - otherwise the response is the caller's, and its end (the `grpc-status` in the
//!   trailers, or an error) settles passive health, the latency estimate and the breaker.
//!
//! UNAVAILABLE counts as an endpoint failure for passive health, as a transport failure
//! does; the breaker also counts DEADLINE_EXCEEDED, as the proxy's does.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use rpcgate_balance::{
    Backoff, Balancer, BreakerTicket, CallGuard, CircuitBreaker, Outcome, PickContext, RetryBudget,
};
use tonic::Status;

use crate::body::Replay;
use crate::builder::Follower;
use crate::connections::Connections;

/// The error type of the service, as tonic's clients take it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// gRPC status numbers the client reads.
const UNAVAILABLE: u32 = 14;
const DEADLINE_EXCEEDED: u32 = 4;

/// The route `retry` policy, in the balance crate's types.
#[derive(Debug)]
pub(crate) struct Retry {
    pub(crate) max_attempts: u32,
    pub(crate) on: Vec<u32>,
    pub(crate) backoff: Backoff,
    pub(crate) budget: RetryBudget,
}

/// What every clone of a client shares.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) name: String,
    /// The kind of source, for the message of a call that finds no endpoint.
    pub(crate) discovery: Option<&'static str>,
    pub(crate) balancer: Arc<Balancer>,
    pub(crate) connections: Arc<Connections>,
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) retry: Option<Retry>,
    /// `ring_hash` on this request header.
    pub(crate) hash_header: Option<String>,
    pub(crate) follower: Option<Follower>,
}

/// A balancing gRPC channel: give it to a tonic generated client
/// (`GreeterClient::new(client)`). Cloning is cheap and shares everything; the endpoint
/// source stops with the last clone.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    pub(crate) fn new(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The balancer, to look at the endpoints and their state (in-flight calls, health).
    pub fn balancer(&self) -> &Balancer {
        &self.inner.balancer
    }
}

impl tonic::codegen::Service<Request<tonic::body::Body>> for Client {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.inner.clone().call(request))
    }
}

/// The `grpc-status` in a header block, if any.
fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

impl Inner {
    async fn call(
        self: Arc<Self>,
        request: Request<tonic::body::Body>,
    ) -> Result<Response<ResponseBody>, BoxError> {
        let ticket = match &self.breaker {
            Some(breaker) => match breaker.admit() {
                Ok(admission) => Some(admission.ticket),
                Err(rejected) => {
                    return Err(Box::new(Status::unavailable(format!(
                        "cluster {}: circuit breaker open, retry in {:?}",
                        self.name, rejected.retry_after
                    ))));
                }
            },
            None => None,
        };
        if let Some(retry) = &self.retry {
            retry.budget.record_call();
        }
        let (parts, body) = request.into_parts();
        let hash = self.hash_header.as_ref().and_then(|name| {
            parts
                .headers
                .get(name.as_str())
                .map(|v| rpcgate_balance::hash_key(v.as_bytes()))
        });
        let body = Replay::new(body);
        let mut tried = Tried::default();
        let mut attempt = 0u32;
        let mut policy_retries = 0u32;
        // Whether the previous attempt ended in a policy retry (which may go back to an
        // endpoint already tried) rather than a transparent one (which may not).
        let mut after_policy_retry = false;
        let mut last_failure = String::new();
        loop {
            attempt += 1;
            let Some(pick) = self.balancer.pick(&PickContext {
                hash,
                avoid: tried.ids(),
            }) else {
                return Err(Box::new(self.no_endpoint()));
            };
            let endpoint = pick.endpoint;
            if attempt > MAX_ATTEMPTS || (tried.contains(endpoint.id()) && !after_policy_retry) {
                // Every endpoint failed before the call went out.
                return Err(Box::new(Status::unavailable(format!(
                    "cluster {}: no endpoint could be reached ({} tried; last: {last_failure})",
                    self.name,
                    tried.len()
                ))));
            }
            after_policy_retry = false;
            tried.push(endpoint.id());
            let channel = match self.connections.get(endpoint.address()).await {
                Ok(channel) => channel,
                Err(error) => {
                    endpoint.mark_failure();
                    if let Some(follower) = &self.follower {
                        follower.nudge();
                    }
                    tracing::debug!(cluster = self.name.as_str(), endpoint = endpoint.address(), %error, "connect failed; trying another endpoint");
                    last_failure = format!("{}: connect failed: {error}", endpoint.address());
                    continue;
                }
            };
            let guard = endpoint.start_call();
            let mut outgoing = Request::new(body.attempt(attempt));
            *outgoing.method_mut() = parts.method.clone();
            *outgoing.uri_mut() = parts.uri.clone();
            *outgoing.version_mut() = parts.version;
            *outgoing.headers_mut() = parts.headers.clone();
            let mut channel = channel;
            // tonic's channel queues calls to its connection task: wait for a slot first.
            let answer = match std::future::poll_fn(|cx| {
                tonic::codegen::Service::poll_ready(&mut channel, cx)
            })
            .await
            {
                Ok(()) => tonic::codegen::Service::call(&mut channel, outgoing).await,
                Err(error) => Err(error),
            };
            let response = match answer {
                Ok(response) => response,
                Err(error) => {
                    let _ = guard.finish(Outcome::Failure);
                    self.connections.forget(endpoint.address());
                    if body.untouched() {
                        tracing::debug!(cluster = self.name.as_str(), endpoint = endpoint.address(), %error, "call never went out; trying another endpoint");
                        last_failure = format!("{}: {error}", endpoint.address());
                        continue;
                    }
                    if let Some(ticket) = ticket {
                        let _ = ticket.record(false);
                    }
                    return Err(Box::new(Status::unavailable(format!(
                        "cluster {}: endpoint {} failed: {error}",
                        self.name,
                        endpoint.address()
                    ))));
                }
            };
            let status = grpc_status(response.headers());
            if let (Some(code), Some(retry)) = (status, &self.retry)
                && retry.on.contains(&code)
                && attempt < retry.max_attempts
                && body.replayable()
                && retry.budget.try_spend()
            {
                let _ = guard.finish(outcome(Some(code)));
                policy_retries += 1;
                after_policy_retry = true;
                tokio::time::sleep(retry.backoff.delay(policy_retries)).await;
                continue;
            }
            let settle = Settle { guard, ticket };
            // A trailers-only answer is over at its head (tonic reads the status there and
            // drops the body unread), and an HTTP error is no gRPC answer at all: settle
            // now. Otherwise the end of the body does.
            let settle = if !response.status().is_success() {
                settle.finish(None, true);
                None
            } else if status.is_some() {
                settle.finish(status, false);
                None
            } else {
                Some(settle)
            };
            return Ok(response.map(|inner| ResponseBody { inner, settle }));
        }
    }

    fn no_endpoint(&self) -> Status {
        let why = match (
            self.discovery,
            self.follower.as_ref().and_then(Follower::why_empty),
        ) {
            (_, Some(why)) => why,
            (Some(kind), None) => format!("its {kind} discovery has found none yet"),
            (None, None) => "none is configured".to_owned(),
        };
        Status::unavailable(format!("cluster {} has no endpoints: {why}", self.name))
    }
}

/// The most attempts one call makes, whatever else allows: a bound on a call that keeps
/// meeting endpoints that cannot be reached.
const MAX_ATTEMPTS: u32 = 16;

/// The endpoints a call tried, without an allocation: a call that tried more than
/// [`Tried::CAPACITY`] avoids the first ones only ([`MAX_ATTEMPTS`] bounds it anyway).
#[derive(Debug, Default)]
struct Tried {
    ids: [u64; Tried::CAPACITY],
    len: usize,
}

impl Tried {
    const CAPACITY: usize = 8;

    fn ids(&self) -> &[u64] {
        &self.ids[..self.len]
    }

    fn contains(&self, id: u64) -> bool {
        self.ids().contains(&id)
    }

    fn push(&mut self, id: u64) {
        if self.len < Self::CAPACITY && !self.contains(id) {
            self.ids[self.len] = id;
            self.len += 1;
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// Passive health's reading of a call's status.
fn outcome(status: Option<u32>) -> Outcome {
    match status {
        Some(UNAVAILABLE) => Outcome::Failure,
        _ => Outcome::Success,
    }
}

/// What the end of a response settles.
#[derive(Debug)]
struct Settle {
    guard: CallGuard,
    ticket: Option<BreakerTicket>,
}

impl Settle {
    fn finish(self, status: Option<u32>, broken: bool) {
        let health = if broken {
            Outcome::Failure
        } else {
            outcome(status)
        };
        let _ = self.guard.finish(health);
        if let Some(ticket) = self.ticket {
            let failed = broken || matches!(status, Some(UNAVAILABLE | DEADLINE_EXCEEDED));
            let _ = ticket.record(!failed);
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that settles the call's endpoint and breaker when it ends.
    #[derive(Debug)]
    pub struct ResponseBody {
        #[pin]
        inner: tonic::body::Body,
        settle: Option<Settle>,
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(settle) = this.settle.take()
                {
                    settle.finish(grpc_status(trailers), false);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(settle) = this.settle.take() {
                    settle.finish(None, true);
                }
            }
            Poll::Ready(None) => {
                if let Some(settle) = this.settle.take() {
                    // Ended without trailers: no status, a broken answer.
                    settle.finish(None, true);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
