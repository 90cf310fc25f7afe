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
//! but the loop never connects twice to an endpoint whose connect failed in this call:
//! once every endpoint has been tried it prefers one that answered before, and it stops
//! when the balancer can only offer unreachable ones, so a dead cluster fails fast instead
//! of cycling.

mod h2;
mod http1;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::Response;
use hyper::body::Incoming;
use rpcgate_balance::{CallGuard, Endpoint, Pick, PickContext};
use rpcgate_config::UpstreamProtocol;
use tokio::time::Instant;

use crate::call_end::CallEnd;
use crate::deadline::Deadline;
use crate::hold::{self, Held};
use crate::request_body::{BytesIn, RequestBody};
use crate::retry::Retrier;
use crate::state::{ClusterState, RouteState};
use crate::upstream::{StreamSlot, Upstreams};
use crate::verdict::{Cause, Verdict};

/// Most attempts one call makes without a retry policy (1 + transparent retries).
pub(crate) const MAX_ATTEMPTS: usize = 5;
/// Extra attempts a retry policy may add (its `max_attempts` is at most this).
const RETRY_ATTEMPTS_LIMIT: usize = rpcgate_config::defaults::RETRY_MAX_ATTEMPTS_LIMIT as usize;

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
            tracing::warn!(
                cluster = &*self.cluster.name,
                "every endpoint is unhealthy: panic mode, spreading calls over all of them"
            );
        } else if !pick.panic && was_in_panic {
            tracing::info!(
                cluster = &*self.cluster.name,
                "healthy endpoints again: panic mode over"
            );
        }
        Some(pick)
    }
}

/// A backend's answer to an attempt: the response head and what streams the rest.
pub(crate) enum Answer {
    /// From an HTTP/2 backend.
    H2(H2Answer),
    /// From an HTTP/1.1 backend.
    Http1(Response<Incoming>),
}

/// An HTTP/2 backend's answer.
pub(crate) struct H2Answer {
    /// The response head and its stream.
    pub(crate) response: Response<::h2::RecvStream>,
    /// Holds the connection's stream count until the stream is over.
    pub(crate) slot: StreamSlot,
    /// Follows a request body still streaming on its own.
    pub(crate) bytes_in: Option<BytesIn>,
    /// The first frame after the head, read while a retry was still possible (the
    /// response head is held until the first message or the end of the stream).
    pub(crate) first: Option<Box<Held>>,
}

impl H2Answer {
    /// How the answer ended, if it ended before anything could go to the client: what a
    /// retry policy decides on (see [`hold::ended`]).
    fn ended(&mut self, grpc: bool) -> Option<Verdict> {
        hold::ended(&self.response, &mut self.first, grpc)
    }
}

/// The attempt that answered.
pub(crate) struct Answered {
    /// The response.
    pub(crate) answer: Answer,
    /// The endpoint's in-flight guard, to be settled when the call ends.
    pub(crate) guard: CallGuard,
}

/// Makes attempts until one is answered or the call must end: transparent retries for
/// attempts that never reached a backend, and, on a route with a `retry` table, retries
/// by policy ([`crate::retry`]). Each attempt's endpoint and the attempt count are noted
/// on `end`, and, for the attempt that is answered, `upstream_ms` and the request bytes
/// sent so far.
pub(crate) async fn run(
    target: &Target<'_>,
    parts: &http::request::Parts,
    body: &mut RequestBody,
    end: &mut CallEnd,
) -> Result<Answered, Verdict> {
    let mut retrier = target.route.retry.as_ref().map(Retrier::start);
    let most = MAX_ATTEMPTS + retrier.as_ref().map_or(0, |_| RETRY_ATTEMPTS_LIMIT);
    let route = &*target.route.name;
    let mut tried: Vec<u64> = Vec::new();
    let mut connect_failed: Vec<u64> = Vec::new();
    let mut last: Option<Verdict> = None;
    // The last verdict of an attempt that reached a backend and was retried by policy.
    let mut answered_last: Option<Verdict> = None;
    for _ in 0..most {
        // The drain ran out of time: no new attempt (its connections are being cut).
        if target.upstreams.shutting_down() {
            return Err(Verdict::new(Cause::ShuttingDown));
        }
        let Some(mut pick) = target.pick(&tried) else {
            return Err(Verdict::new(Cause::NoEndpoint {
                cluster: target.cluster.name.clone(),
                discovery: target.cluster.empty_reason(),
            }));
        };
        if connect_failed.contains(&pick.endpoint.id())
            && let Some(reachable) = target.pick(&connect_failed)
        {
            // Every endpoint has been tried: one that answered before beats one that
            // could not be reached.
            pick = reachable;
        }
        let endpoint = pick.endpoint;
        if connect_failed.contains(&endpoint.id()) {
            // Nothing left but endpoints that refused to connect: the call ends with the
            // last answer a backend gave, if a retry policy got one.
            if let Some(answer) = answered_last.take() {
                return Err(answer);
            }
            break;
        }
        end.attempt_on(endpoint.address());
        let guard = endpoint.start_call();
        let attempt_started = Instant::now();
        let retrying = retrier.as_ref().map(|r| PolicyAttempt {
            hold: r.may_retry(body.replayable()),
            previous: end.retries,
        });
        let attempt = attempt_once(target, parts, body, &endpoint, retrying);
        let per_try = retrier.as_ref().and_then(Retrier::per_try_timeout);
        let result = match attempt_limit(target.deadline, per_try) {
            Some((at, expired)) => tokio::time::timeout_at(at, attempt)
                .await
                .unwrap_or(Err(expired)),
            None => attempt.await,
        };
        let cause = match result {
            // The common case first: no retry policy, nothing held, one move out.
            Ok(answer) if retrier.is_none() => {
                return Ok(answered(answer, guard, attempt_started, body, end));
            }
            Ok(Answer::H2(mut answer)) => {
                // The head is held past the attempt's per_try_timeout (it has answered),
                // up to the first message, within the call's deadline.
                if retrying.is_some_and(|p| p.hold) {
                    match held(&mut answer, target.deadline).await {
                        Ok(first) => answer.first = first,
                        Err(verdict) => {
                            verdict.settle(guard, &target.cluster.name);
                            return Err(verdict);
                        }
                    }
                }
                let Some(verdict) = answer.ended(end.grpc) else {
                    return Ok(answered(
                        Answer::H2(answer),
                        guard,
                        attempt_started,
                        body,
                        end,
                    ));
                };
                let delay = retrier
                    .as_mut()
                    .and_then(|r| r.after(&verdict, body.replayable(), target.deadline, route));
                match delay {
                    Some(delay) => {
                        verdict.settle(guard, &target.cluster.name);
                        answered_last = Some(verdict);
                        tried.push(endpoint.id());
                        end.retries += 1;
                        Box::pin(tokio::time::sleep(delay)).await;
                        continue;
                    }
                    // The answer stands, unless its error was taken out of it.
                    None if matches!(verdict.cause, Cause::BrokenMidStream(_)) => {
                        verdict.settle(guard, &target.cluster.name);
                        return Err(verdict);
                    }
                    None => {
                        return Ok(answered(
                            Answer::H2(answer),
                            guard,
                            attempt_started,
                            body,
                            end,
                        ));
                    }
                }
            }
            Ok(answer) => return Ok(answered(answer, guard, attempt_started, body, end)),
            Err(cause) => cause,
        };
        let verdict = Verdict::new(cause);
        verdict.settle(guard, &target.cluster.name);
        if verdict.transparent_retry() {
            tracing::debug!(
                cluster = &*target.cluster.name,
                endpoint = endpoint.address(),
                reason = verdict.cause.to_string().as_str(),
                "attempt never reached the backend"
            );
            tried.push(endpoint.id());
            if verdict.is_connect_failure() {
                connect_failed.push(endpoint.id());
                target.cluster.connect_failed();
            }
            last = Some(verdict);
            if !body.replayable() {
                break;
            }
            continue;
        }
        let delay = retrier
            .as_mut()
            .and_then(|r| r.after(&verdict, body.replayable(), target.deadline, route));
        let Some(delay) = delay else {
            return Err(verdict);
        };
        answered_last = Some(verdict);
        tried.push(endpoint.id());
        end.retries += 1;
        // Boxed, as rare: it does not grow every call's future.
        Box::pin(tokio::time::sleep(delay)).await;
    }
    Err(answered_last.unwrap_or_else(|| {
        Verdict::new(Cause::NoBackendTookIt {
            cluster: target.cluster.name.clone(),
            last: last.map(|verdict| Box::new(verdict.cause)),
        })
    }))
}

/// Holds `answer`'s head until its first message or its end, within `deadline`.
async fn held(
    answer: &mut H2Answer,
    deadline: Option<Deadline>,
) -> Result<Option<Box<Held>>, Verdict> {
    // Boxed: only routes with a retry policy hold; the others' call futures stay small.
    let hold = Box::pin(hold::hold(answer.response.body_mut()));
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.at, hold)
            .await
            .map_err(|_| Verdict::new(Cause::DeadlineBeforeHead(deadline.timeout))),
        None => Ok(hold.await),
    }
}

/// Notes the answering attempt on `end` and hands it on.
fn answered(
    answer: Answer,
    guard: CallGuard,
    attempt_started: Instant,
    body: &RequestBody,
    end: &mut CallEnd,
) -> Answered {
    if let Some(record) = &mut end.record {
        record.upstream_ms = Some(attempt_started.elapsed().as_secs_f64() * 1e3);
        record.bytes_in = body.bytes_in;
    }
    Answered { answer, guard }
}

/// When an attempt must have its answer, and what it is if it has not: the call's
/// deadline, or the route's `per_try_timeout` when that comes first.
fn attempt_limit(
    deadline: Option<Deadline>,
    per_try: Option<Duration>,
) -> Option<(Instant, Cause)> {
    let per_try = per_try.map(|timeout| (Instant::now() + timeout, Cause::PerTryTimeout(timeout)));
    match (deadline, per_try) {
        (Some(d), Some((at, cause))) if at < d.at => Some((at, cause)),
        (Some(d), _) => Some((d.at, Cause::DeadlineBeforeHead(d.timeout))),
        (None, per_try) => per_try,
    }
}

/// What an attempt on a route with a retry policy does differently.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PolicyAttempt {
    /// Hold the response head until the first message or the end of the stream.
    pub(crate) hold: bool,
    /// Retries by policy made before this one (sent as `grpc-previous-rpc-attempts` when
    /// > 0; attempts that never reached a backend do not count, as in gRPC).
    pub(crate) previous: u32,
}

/// One attempt with the cluster's protocol.
async fn attempt_once(
    target: &Target<'_>,
    parts: &http::request::Parts,
    body: &mut RequestBody,
    endpoint: &Arc<Endpoint>,
    policy: Option<PolicyAttempt>,
) -> Result<Answer, Cause> {
    match target.cluster.protocol {
        // The HTTP/1.1 client's future is large and rare on gRPC paths: boxed, it does not
        // inflate every call's future.
        UpstreamProtocol::Http1 => Box::pin(http1::attempt(target, parts, body, endpoint)).await,
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
            h2::attempt(target, parts, body, endpoint, policy).await
        }
    }
}
