//! The attempt loop: one for every upstream protocol.
//!
//! [`run`] picks an endpoint (avoiding those already tried), makes one attempt with the
//! cluster's protocol ([`h2`] or [`http1`]), and classifies how it ended into a
//! [`Verdict`]. Passive health hears every attempt's verdict ([`Verdict::settle`]); an
//! attempt that provably never reached a backend ([`Verdict::transparent_retry`]) is
//! made again on another endpoint while the request body is still held for replay
//! ([`RequestBody::replayable`]), up to [`MAX_ATTEMPTS`]; anything else ends the call.
//! Every attempt runs under the call's deadline.
//!
//! A refused stream may be retried on the same endpoint (possibly on the same connection),
//! but the loop never connects twice to an endpoint whose connect failed in this call: it
//! stops when the balancer can only offer such endpoints, so a dead cluster fails fast
//! instead of cycling.

mod h2;
mod http1;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::Response;
use hyper::body::Incoming;
use rpcgate_balance::{CallGuard, Endpoint, Pick, PickContext};
use rpcgate_config::UpstreamProtocol;
use tokio::time::Instant;

use crate::call_end::CallEnd;
use crate::deadline::Deadline;
use crate::request_body::{BytesIn, RequestBody};
use crate::state::{ClusterState, RouteState};
use crate::upstream::{StreamSlot, Upstreams};
use crate::verdict::{Cause, Verdict};

/// Most attempts one call makes (1 + transparent retries).
pub(crate) const MAX_ATTEMPTS: usize = 5;

/// Where a call goes and under which limits: everything an attempt needs besides the
/// request itself.
pub(crate) struct Target<'a> {
    /// The route that took the call.
    pub(crate) route: &'a RouteState,
    /// The route's cluster (`&route.cluster`, for short).
    pub(crate) cluster: &'a ClusterState,
    /// This worker's connections.
    pub(crate) upstreams: &'a Upstreams,
    /// The `ring_hash` key's hash, when the cluster hashes.
    pub(crate) hash: Option<u64>,
    /// The call's deadline, if it has one.
    pub(crate) deadline: Option<Deadline>,
    /// `:authority` towards the backend: the cluster's override, else the client's.
    pub(crate) authority: Option<http::uri::Authority>,
}

impl Target<'_> {
    /// Picks an endpoint for the next attempt, logging panic mode once per episode.
    fn pick(&self, tried: &[u64]) -> Option<Pick> {
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
}

/// A backend's answer to an attempt: the response head and what streams the rest.
pub(crate) enum Answer {
    /// From an HTTP/2 backend; the slot holds the connection's stream count, and the
    /// counter follows a request body still streaming on its own.
    H2(Response<::h2::RecvStream>, StreamSlot, Option<BytesIn>),
    /// From an HTTP/1.1 backend.
    Http1(Response<Incoming>),
}

/// The attempt that answered.
pub(crate) struct Answered {
    /// The response.
    pub(crate) answer: Answer,
    /// The endpoint's in-flight guard, to be settled when the call ends.
    pub(crate) guard: CallGuard,
}

/// Makes attempts until one is answered or the call must end. Each attempt's endpoint and
/// the attempt count are noted on `end`, and, for the attempt that is answered,
/// `upstream_ms` and the request bytes sent so far.
pub(crate) async fn run(
    target: &Target<'_>,
    parts: &http::request::Parts,
    body: &mut RequestBody,
    end: &mut CallEnd,
) -> Result<Answered, Verdict> {
    let mut tried: Vec<u64> = Vec::new();
    let mut connect_failed: Vec<u64> = Vec::new();
    let mut last: Option<Verdict> = None;
    for _ in 0..MAX_ATTEMPTS {
        let Some(pick) = target.pick(&tried) else {
            return Err(Verdict::new(Cause::NoEndpoint {
                cluster: target.cluster.name.clone(),
            }));
        };
        let endpoint = pick.endpoint;
        if connect_failed.contains(&endpoint.id()) {
            break;
        }
        end.attempt_on(endpoint.address());
        let guard = endpoint.start_call();
        let attempt_started = Instant::now();
        let attempt = attempt_once(target, parts, body, &endpoint);
        let result = match target.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.at, attempt)
                .await
                .unwrap_or(Err(Cause::DeadlineBeforeHead(deadline.timeout))),
            None => attempt.await,
        };
        match result {
            Ok(answer) => {
                if let Some(record) = &mut end.record {
                    record.upstream_ms = Some(attempt_started.elapsed().as_secs_f64() * 1e3);
                    record.bytes_in = body.bytes_in;
                }
                return Ok(Answered { answer, guard });
            }
            Err(cause) => {
                let verdict = Verdict::new(cause);
                verdict.settle(guard);
                if !verdict.transparent_retry() {
                    return Err(verdict);
                }
                tracing::debug!(cluster = %target.cluster.name, endpoint = endpoint.address(), reason = %verdict.cause, "attempt never reached the backend");
                tried.push(endpoint.id());
                if verdict.is_connect_failure() {
                    connect_failed.push(endpoint.id());
                }
                last = Some(verdict);
                if !body.replayable() {
                    break;
                }
            }
        }
    }
    Err(Verdict::new(Cause::NoBackendTookIt {
        cluster: target.cluster.name.clone(),
        last: last.map(|verdict| Box::new(verdict.cause)),
    }))
}

/// One attempt with the cluster's protocol.
async fn attempt_once(
    target: &Target<'_>,
    parts: &http::request::Parts,
    body: &mut RequestBody,
    endpoint: &Arc<Endpoint>,
) -> Result<Answer, Cause> {
    match target.cluster.protocol {
        // The HTTP/1.1 client's future is large and rare on gRPC paths: boxed, it does not
        // inflate every call's future.
        UpstreamProtocol::Http1 => Box::pin(http1::attempt(target, parts, body, endpoint)).await,
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
            h2::attempt(target, parts, body, endpoint).await
        }
    }
}
