//! The end of a call: one place that hears the call's [`Verdict`] and tells everyone who
//! cares — passive health (through the answering attempt's guard), the access log, the
//! debug log, and the connection's idle clock.
//!
//! A [`CallEnd`] is made when a call starts and travels with it: through the attempts,
//! into the streaming response body, until the final status is known. Dropped without
//! [`CallEnd::finish`], it means the client went away: the call ends as
//! [`Cause::ClientGone`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::Response;
use http_body::Body as _;
use rpcgate_balance::CallGuard;
use rpcgate_config::ClientErrorDetail;
use tokio::time::Instant;

use crate::access_log::{AccessLog, AccessRecord};
use crate::admission::Admitted;
use crate::body::ProxyBody;
use crate::client_message::client_message;
use crate::conn::ActiveCall;
use crate::request_body::BytesIn;
use crate::stats::{MethodStats, RouteStats};
use crate::status;
use crate::verdict::{Cause, Verdict};

/// A call's bookkeeping until it ends.
#[derive(Debug)]
pub(crate) struct CallEnd {
    /// The attempt that answered, held until the call ends (in-flight count, latency),
    /// and its cluster's name (for the log of an ejection it causes).
    guard: Option<(CallGuard, Arc<str>)>,
    /// The access-log line being filled in, when the access log is on.
    pub(crate) record: Option<Box<AccessRecord>>,
    log: AccessLog,
    started: Instant,
    /// Whether the request is gRPC (how a proxy-made answer is written).
    pub(crate) grpc: bool,
    /// The HTTP status sent to the client.
    pub(crate) status: u16,
    active: Option<ActiveCall>,
    /// Attempts made so far (1 + retries).
    pub(crate) attempts: u32,
    /// Retries made by the route's retry policy (transparent ones not counted).
    pub(crate) retries: u32,
    /// The count of a request body still streaming when the response head came.
    bytes_in: Option<BytesIn>,
    /// The cluster's admission (in-flight slot, breaker ticket), told the verdict at the end.
    admitted: Option<Admitted>,
    /// The route's and the method's counters (when an admin API reads them).
    stats: Option<(Arc<RouteStats>, Arc<MethodStats>)>,
    /// The call's cluster once routed (named in messages to the client).
    cluster: Option<Arc<str>>,
    /// How much a proxy-made error tells the client.
    detail: ClientErrorDetail,
}

impl CallEnd {
    /// Starts the bookkeeping of a call that started at `started`.
    pub(crate) fn new(
        record: Option<Box<AccessRecord>>,
        log: AccessLog,
        started: Instant,
        grpc: bool,
        active: ActiveCall,
        detail: ClientErrorDetail,
    ) -> Self {
        Self {
            guard: None,
            record,
            log,
            started,
            grpc,
            status: 200,
            active: Some(active),
            attempts: 0,
            retries: 0,
            bytes_in: None,
            admitted: None,
            stats: None,
            cluster: None,
            detail,
        }
    }

    /// Keeps the answering attempt's guard until the call ends.
    pub(crate) fn hold(&mut self, guard: CallGuard, cluster: Arc<str>) {
        self.guard = Some((guard, cluster));
    }

    /// Notes the cluster the call was routed to.
    pub(crate) fn routed_to(&mut self, cluster: Arc<str>) {
        self.cluster = Some(cluster);
    }

    /// The message for the client about a verdict the proxy answers (see
    /// [`crate::client_message`]).
    pub(crate) fn client_message(&self, verdict: &Verdict) -> String {
        client_message(&verdict.cause, self.cluster.as_deref(), self.detail)
    }

    /// Counts the call's end in these route and method counters.
    pub(crate) fn count_in(&mut self, route: Arc<RouteStats>, method: Arc<MethodStats>) {
        self.stats = Some((route, method));
    }

    /// Keeps the cluster's admission until the call ends.
    pub(crate) fn admitted(&mut self, admitted: Option<Admitted>) {
        self.admitted = admitted;
    }

    /// Follows a request body that streams on after the response head: the access log
    /// takes its count when the call ends.
    pub(crate) fn count_bytes_in(&mut self, bytes_in: Option<BytesIn>) {
        self.bytes_in = bytes_in;
    }

    /// Why the request body was refused after the response head went out, when it was
    /// (the backend's stream then ends with our reset, which is not the backend's fault).
    pub(crate) fn client_fault(&self) -> Option<crate::grpc_framing::FramingError> {
        self.bytes_in.as_ref().and_then(|b| b.fault.get().cloned())
    }

    /// Notes a new attempt on `endpoint` (the access log names the last one).
    pub(crate) fn attempt_on(&mut self, endpoint: &str) {
        self.attempts += 1;
        if let Some(record) = &mut self.record {
            record.endpoint = Some(endpoint.to_string());
        }
    }

    /// Ends the call: `bytes_out` response body bytes went to the client.
    pub(crate) fn finish(mut self, verdict: Verdict, bytes_out: u64) {
        // A client "gone" because `send_timeout` closed its connection is told apart.
        let stalled = self
            .active
            .as_ref()
            .is_some_and(|a| a.conn().send_stalled.load(Ordering::Relaxed));
        let verdict = if stalled && matches!(verdict.cause, Cause::ClientGone) {
            Verdict::new(Cause::SendTimeout)
        } else {
            verdict
        };
        self.complete(&verdict, bytes_out);
    }

    /// The verdict to end with: a failure towards the backend while the drain is cutting
    /// the calls still running is rpcgate shutting down, not the backend failing.
    pub(crate) fn shutdown_aware(&self, verdict: Verdict) -> Verdict {
        let cutting = self
            .active
            .as_ref()
            .is_some_and(|a| a.conn().upstreams.shutting_down());
        if cutting && verdict.is_error() && !matches!(verdict.cause, Cause::ClientGone) {
            Verdict::new(Cause::ShuttingDown)
        } else {
            verdict
        }
    }

    /// Ends the call with a response of the proxy's own making.
    pub(crate) fn respond(mut self, verdict: Verdict) -> Response<ProxyBody> {
        let verdict = self.shutdown_aware(verdict);
        let response = status::respond(&verdict, self.grpc, &self.client_message(&verdict));
        self.status = response.status().as_u16();
        // A plain-HTTP error has its message as the body; a gRPC one none.
        let bytes_out = response.body().size_hint().exact().unwrap_or(0);
        self.complete(&verdict, bytes_out);
        response
    }

    fn complete(&mut self, verdict: &Verdict, bytes_out: u64) {
        if let Some((guard, cluster)) = self.guard.take() {
            verdict.settle(guard, &cluster);
        }
        if let Some(admitted) = self.admitted.take() {
            admitted.finish(verdict);
        }
        if let Some((route, method)) = self.stats.take() {
            let code = if self.grpc {
                verdict.code.map(|c| c.0)
            } else {
                None
            };
            method.record(code, self.started.elapsed());
            if self.retries > 0 {
                route
                    .retries
                    .fetch_add(u64::from(self.retries), Ordering::Relaxed);
            }
        }
        if let Some(mut record) = self.record.take() {
            record.status = self.status;
            record.grpc_status = if self.grpc {
                verdict.code.map(|c| c.0)
            } else {
                None
            };
            record.attempts = self.attempts;
            record.reason = verdict.cause.reason();
            if let Some(bytes_in) = &self.bytes_in {
                record.bytes_in = bytes_in.bytes.load(Ordering::Relaxed);
            }
            record.bytes_out = bytes_out;
            record.duration_ms = self.started.elapsed().as_secs_f64() * 1e3;
            self.log.write(&record);
        }
        if verdict.is_error() {
            let code = verdict.code.map_or("-", |c| c.name());
            tracing::debug!(cause = verdict.cause.to_string().as_str(), code, fault = ?verdict.fault, "call ended with an error");
        }
        self.active = None;
    }
}

impl Drop for CallEnd {
    fn drop(&mut self) {
        if self.guard.is_some()
            || self.record.is_some()
            || self.admitted.is_some()
            || self.stats.is_some()
        {
            // Dropped while a panic unwinds: the call failed in rpcgate, the client did
            // not go away (it gets INTERNAL from the panic boundary in `call.rs`).
            let cause = if std::thread::panicking() {
                Cause::Panicked
            } else {
                Cause::ClientGone
            };
            self.complete(&Verdict::new(cause), 0);
        }
    }
}
