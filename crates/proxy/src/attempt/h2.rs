//! One attempt towards an HTTP/2 backend: a stream slot on a pooled connection, the
//! request head, and the request body pumped until the response head arrives.
//!
//! h2's errors say whether the backend saw the stream, which is what makes transparent
//! retry safe: after a GOAWAY every stream above its last stream id fails with
//! `is_go_away() && is_remote()`, and `REFUSED_STREAM` arrives as a reset with that
//! reason — both provably not processed. [`cause`] turns exactly those into
//! [`Cause::GoingAway`] and [`Cause::Refused`]; anything else may have been processed.

use std::sync::Arc;

use rpcgate_balance::Endpoint;
use tokio::time::Instant;

use super::{Answer, H2Answer, PolicyAttempt, Target};
use crate::headers;
use crate::request_body::{PumpError, PumpState, RequestBody, pump_rest};
use crate::verdict::{Cause, ConnectFailure};

/// Sends the call to `endpoint` and waits for the response head.
pub(super) async fn attempt(
    target: &Target<'_>,
    parts: &http::request::Parts,
    body: &mut RequestBody,
    endpoint: &Arc<Endpoint>,
    policy: Option<PolicyAttempt>,
) -> Result<Answer, Cause> {
    let cluster = target.cluster;
    let slot = target
        .upstreams
        .h2_slot(
            endpoint.id(),
            endpoint.address(),
            cluster.connect_timeout,
            cluster.tls.as_ref(),
        )
        .await
        .map_err(|error| Cause::Connect {
            endpoint: endpoint.clone(),
            error: ConnectFailure::H2(error),
        })?;
    let time_left = target
        .deadline
        .map(|deadline| deadline.at.saturating_duration_since(Instant::now()));
    let mut request = headers::h2_request(
        parts,
        target.authority.as_ref(),
        endpoint.address(),
        cluster.tls.is_some(),
        time_left,
    )
    .map_err(Cause::BadRequest)?;
    if let Some(previous) = policy.map(|p| p.previous).filter(|n| *n > 0) {
        // gRPC's retry design: a retried attempt says how many came before it.
        request
            .headers_mut()
            .insert("grpc-previous-rpc-attempts", previous.into());
    }
    let sender = slot.sender();
    let mut sender = sender.ready().await.map_err(|error| {
        slot.mark_closed();
        cause(error, endpoint)
    })?;
    body.rewind();
    let (mut response, mut send) =
        sender
            .send_request(request, body.is_empty())
            .map_err(|error| {
                slot.mark_closed();
                cause(error, endpoint)
            })?;
    loop {
        tokio::select! {
            biased;
            result = &mut response => {
                let response = result.map_err(|error| cause(error, endpoint))?;
                let mut bytes_in = None;
                // A backend may answer in full before it read the whole request (RFC 9113
                // §8.1): then the rest is not sent, and the body stays here, still
                // replayable for a retry. Otherwise the rest streams on its own.
                if !body.done_sending() && !response.body().is_end_stream() {
                    let counter = PumpState::after(body.bytes_in);
                    bytes_in = Some(counter.clone());
                    tokio::spawn(pump_rest(std::mem::take(body), send, counter));
                }
                return Ok(Answer::H2(H2Answer {
                    response,
                    slot,
                    bytes_in,
                    first: None,
                }));
            }
            step = body.pump_step(&mut send), if !body.done_sending() => {
                if let Err(PumpError::Client(error)) = step {
                    send.send_reset(h2::Reason::CANCEL);
                    return Err(Cause::client_body_failed(error));
                }
                // An upstream-side error shows up in the response future next.
            }
        }
    }
}

/// What an h2 error before the response head means.
fn cause(error: h2::Error, endpoint: &Arc<Endpoint>) -> Cause {
    if error.is_go_away() && error.is_remote() {
        return Cause::GoingAway {
            endpoint: endpoint.clone(),
        };
    }
    match error.reason() {
        Some(h2::Reason::REFUSED_STREAM) if error.is_reset() => Cause::Refused {
            endpoint: endpoint.clone(),
        },
        Some(reason) if error.is_reset() => Cause::ResetBeforeHead(reason),
        _ => Cause::ConnectionLost {
            endpoint: endpoint.clone(),
            error,
        },
    }
}
