//! Active health checks (`active_health`, contract §4): `grpc.health.v1.Health/Check` sent
//! to every endpoint of a cluster every `interval` (with ±10% jitter, so the probes of
//! many proxies do not arrive together), each under `timeout`.
//!
//! One prober task per cluster and generation, on the proxy's control runtime (the test's
//! runtime with [`crate::Proxy::start_local`], so the paused clock drives it). It keeps
//! its own upstream connections — with the cluster's TLS settings for `h2` clusters — so
//! probes never take a stream slot from a call. SERVING is a passed probe; anything else
//! (NOT_SERVING, UNKNOWN, an error status, a reset, no answer in time, no connection) a
//! failed one. The thresholds ([`rpcgate_balance::ActiveHealthState`]) turn results into
//! a verdict, which goes to the endpoint ([`rpcgate_balance::Endpoint::set_active_healthy`]):
//! an endpoint receives calls only when neither active nor passive health marks it down.
//! Every verdict change is logged at warn, down and back (an operator acts on both).
//!
//! The task stops when its cluster state is dropped ([`Prober`]'s `Drop`): a generation
//! that keeps the cluster unchanged keeps its prober and the verdicts it reached.
//!
//! The Check request and response are encoded here by hand: the request is field 1
//! (`service`, a string), the response field 1 (`status`, an enum, SERVING = 1); that is
//! the whole of `grpc.health.v1`, not worth a protobuf dependency in the proxy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode};
use rpcgate_balance::{ActiveHealthState, Balancer, Endpoint, HealthThresholds};
use rpcgate_config::ActiveHealth;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::upstream::{UpstreamTls, Upstreams};
use crate::verdict::{Code, grpc_status};

/// The path of the check.
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;
/// The largest response accepted (a real one is 7 bytes).
const MAX_RESPONSE: usize = 1024;

/// How a cluster's endpoints are probed.
#[derive(Debug, Clone)]
pub(crate) struct ProbeSettings {
    /// The cluster (for logs).
    pub(crate) cluster: Arc<str>,
    /// Interval, timeout, service, thresholds.
    pub(crate) policy: ActiveHealth,
    /// TLS towards the backends (`protocol = "h2"`).
    pub(crate) tls: Option<UpstreamTls>,
    /// The cluster's `authority` override.
    pub(crate) authority: Option<http::uri::Authority>,
    /// Bound on each step of connecting.
    pub(crate) connect_timeout: Duration,
}

/// A running prober; stops when dropped.
#[derive(Debug)]
pub(crate) struct Prober(JoinHandle<()>);

impl Drop for Prober {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts probing `balancer`'s endpoints on `runtime`.
pub(crate) fn spawn(runtime: &Handle, balancer: Arc<Balancer>, settings: ProbeSettings) -> Prober {
    Prober(runtime.spawn(run(balancer, settings)))
}

async fn run(balancer: Arc<Balancer>, settings: ProbeSettings) {
    let upstreams = Upstreams::default();
    let thresholds = HealthThresholds {
        unhealthy: settings.policy.unhealthy_threshold,
        healthy: settings.policy.healthy_threshold,
    };
    let mut verdicts: HashMap<u64, ActiveHealthState> = HashMap::new();
    loop {
        let endpoints = balancer.endpoints();
        verdicts.retain(|id, _| endpoints.iter().any(|e| e.id() == *id));
        let probes = endpoints.iter().map(|e| probe(&upstreams, e, &settings));
        let results = futures_util::future::join_all(probes).await;
        for (endpoint, result) in endpoints.iter().zip(results) {
            let verdict = verdicts.entry(endpoint.id()).or_insert_with(|| {
                ActiveHealthState::starting(thresholds, endpoint.active_healthy())
            });
            match (verdict.record(result.is_ok()), result) {
                (Some(false), Err(reason)) => {
                    endpoint.set_active_healthy(false);
                    tracing::warn!(
                        cluster = &*settings.cluster,
                        endpoint = endpoint.address(),
                        reason = reason.as_str(),
                        failed = thresholds.unhealthy,
                        "active health check: endpoint marked unhealthy"
                    );
                }
                (Some(true), _) => {
                    endpoint.set_active_healthy(true);
                    tracing::warn!(
                        cluster = &*settings.cluster,
                        endpoint = endpoint.address(),
                        passed = thresholds.healthy,
                        "active health check: endpoint healthy again, back in rotation"
                    );
                }
                (Some(false), Ok(())) | (None, _) => {}
            }
        }
        tokio::time::sleep(jittered(settings.policy.interval)).await;
    }
}

/// The interval ±10%.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + fastrand::f64() * 0.2)
}

/// One check of `endpoint`: `Ok` when it answers SERVING in time, else why not.
async fn probe(
    upstreams: &Upstreams,
    endpoint: &Endpoint,
    s: &ProbeSettings,
) -> Result<(), String> {
    match tokio::time::timeout(s.policy.timeout, check(upstreams, endpoint, s)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {:?}", s.policy.timeout)),
    }
}

async fn check(
    upstreams: &Upstreams,
    endpoint: &Endpoint,
    s: &ProbeSettings,
) -> Result<(), String> {
    let slot = upstreams
        .h2_slot(
            endpoint.id(),
            endpoint.address(),
            s.connect_timeout,
            s.tls.as_ref(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut sender = slot
        .sender()
        .ready()
        .await
        .map_err(|e| format!("connection lost: {e}"))?;
    let scheme = if s.tls.is_some() { "https" } else { "http" };
    let authority = s
        .authority
        .as_ref()
        .map_or(endpoint.address(), |a| a.as_str());
    let request = Request::post(format!("{scheme}://{authority}{CHECK_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "rpcgate-health-check")
        .body(())
        .map_err(|e| e.to_string())?;
    let (response, mut send) = sender
        .send_request(request, false)
        .map_err(|e| format!("stream refused: {e}"))?;
    send.send_data(check_request(&s.policy.grpc_service), true)
        .map_err(|e| format!("stream refused: {e}"))?;
    let response = response.await.map_err(|e| format!("reset: {e}"))?;
    if response.status() != StatusCode::OK {
        return Err(format!("HTTP {}", response.status()));
    }
    match grpc_status(response.headers()) {
        // Trailers-only: no HealthCheckResponse came.
        Some(Code::OK) => return Err("answered OK without a HealthCheckResponse".into()),
        Some(code) => return Err(format!("grpc-status {}", code.name())),
        None => {}
    }
    let mut body = response.into_body();
    let mut message = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("reset: {e}"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        message.extend_from_slice(&chunk);
        if message.len() > MAX_RESPONSE {
            return Err("response too large".into());
        }
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|e| format!("reset: {e}"))?
        .unwrap_or_default();
    match grpc_status(&trailers) {
        Some(Code::OK) => {}
        Some(code) => return Err(format!("grpc-status {}", code.name())),
        None => return Err("no grpc-status".into()),
    }
    match serving_status(&message) {
        Some(SERVING) => Ok(()),
        Some(status) => Err(format!("reports {}", status_name(status))),
        None => Err("unreadable HealthCheckResponse".into()),
    }
}

/// A gRPC frame holding `HealthCheckRequest { service }`.
fn check_request(service: &str) -> Bytes {
    let mut message = Vec::with_capacity(service.len() + 8);
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(0); // not compressed
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    Bytes::from(frame)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// `HealthCheckResponse.status` from a gRPC frame; an empty message is UNKNOWN (0).
fn serving_status(frame: &[u8]) -> Option<u64> {
    let (&compressed, rest) = frame.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let (length, mut message) = rest.split_at(4);
    let length = u32::from_be_bytes(length.try_into().ok()?) as usize;
    if message.len() != length {
        return None;
    }
    let mut status = 0;
    while let Some((&tag, rest)) = message.split_first() {
        let (value, rest) = varint(rest)?;
        match tag {
            0x08 => status = value,
            // Another varint field: skipped, as protobuf readers do.
            t if t & 0x07 == 0 => {}
            _ => return None,
        }
        message = rest;
    }
    Some(status)
}

fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

fn status_name(status: u64) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "an unknown status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_encoded_as_grpc_frames() {
        assert_eq!(&check_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &check_request("a.B")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']
        );
        let long = "s".repeat(200);
        let frame = check_request(&long);
        assert_eq!(&frame[5..8], &[0x0a, 0xc8, 0x01]);
        assert_eq!(frame.len(), 5 + 3 + 200);
    }

    #[test]
    fn responses_are_read() {
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(SERVING));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0));
        // A compressed frame, a short one, a wrong length: unreadable.
        assert_eq!(serving_status(&[1, 0, 0, 0, 2, 0x08, 1]), None);
        assert_eq!(serving_status(&[0, 0, 0]), None);
        assert_eq!(serving_status(&[0, 0, 0, 0, 3, 0x08, 1]), None);
        assert_eq!(status_name(2), "NOT_SERVING");
    }

    #[tokio::test(start_paused = true)]
    async fn the_interval_has_ten_percent_jitter() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(2));
            assert!(
                d >= Duration::from_millis(1800) && d <= Duration::from_millis(2200),
                "{d:?}"
            );
        }
    }
}
