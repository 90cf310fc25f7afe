//! Serving one client connection: HTTP/2 (prior knowledge) and HTTP/1.1 on the same port.
//!
//! hyper-util's auto builder reads the first bytes: the HTTP/2 preface selects HTTP/2,
//! anything else is parsed as HTTP/1.1, and garbage fails that one connection only. The
//! listener's limits map onto HTTP/2 settings (`max_concurrent_streams`,
//! `max_header_list_size`) and HTTP/1.1's head buffer. A connection with no call in flight
//! for `idle_timeout` gets a graceful close, and so does every connection at shutdown
//! (GOAWAY on HTTP/2, `connection: close` on HTTP/1.1) while its calls finish. One whose
//! client takes none of its responses for `send_timeout` is closed ([`crate::send_stall`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rpcgate_config::Listener;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::call;
use crate::conn::ConnCtx;
use crate::send_stall::StallCheck;

/// Flow-control window per client stream; as upstream, so 1 MiB messages stream freely.
const STREAM_WINDOW: u32 = 1 << 20;
/// Flow-control window per client connection.
const CONNECTION_WINDOW: u32 = 8 << 20;
// The HPACK dynamic table stays at h2's (and RFC 9113's) 4 KiB; the decoded size of every
// header list is bounded by `max_header_bytes` (name + value + 32 per field, so at most
// `max_header_bytes / 32` fields), which is what stops HPACK bombs.
/// How long a client may take to send an HTTP/1.1 request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A total deadline, from accept (or the end of the TLS handshake) to the first request:
/// it covers the HTTP/2 preface, SETTINGS and the first request's headers, so a client
/// that connects and then sends nothing, or dribbles a byte at a time, cannot hold a
/// connection slot (slowloris). The listener's `idle_timeout` applies when it is shorter.
/// NGINX's default timers are per phase and let such a client stay 60 s and more.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// After an idle connection is told to close (GOAWAY), how long it may take to finish.
/// It has no call in flight, so nothing is lost by dropping it then; without this bound a
/// client that stopped reading (a PING or SETTINGS flood) would never take the GOAWAY and
/// the connection would stay open forever.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The hyper connection builder for a listener, built once and reused per connection.
pub(crate) fn builder(listener: &Listener) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size((listener.max_header_bytes as usize).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(listener.max_concurrent_streams)
        .max_header_list_size(listener.max_header_bytes)
        // With the body read only when hyper has room (crate::response_body), a stream's
        // outbound queue is bounded by this, a connection's by this times
        // max_concurrent_streams.
        .max_send_buf_size(listener.max_send_buffer_bytes as usize)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(1024));
    builder
}

/// How a connection's life is bounded: the listener's `idle_timeout` and
/// `max_connection_age`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetime {
    pub(crate) idle_timeout: Duration,
    pub(crate) max_age: Option<Duration>,
    /// How long responses may wait on a client that takes none of their bytes.
    pub(crate) send_timeout: Duration,
}

/// The age at which this connection is told to go: `max_age` ±10%, so the connections
/// made together (after a deploy) do not all reconnect at once.
fn jittered(max_age: Duration) -> Duration {
    max_age.mul_f64(0.9 + 0.2 * fastrand::f64())
}

/// Serves one accepted connection until it closes, goes idle, reaches its maximum age,
/// or shutdown drains it.
pub(crate) async fn serve<IO>(
    stream: IO,
    ctx: Arc<ConnCtx>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    lifetime: Lifetime,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = ctx.peer;
    let service_ctx = ctx.clone();
    // The call's future is a few KiB (routing, attempts, body pump, bookkeeping); boxed
    // once here, hyper and tokio move a pointer instead of copying it into each stream
    // task (measured: memmove was the top entry of the profile).
    let service = service_fn(move |request| Box::pin(call::handle(request, service_ctx.clone())));
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let idle_timeout = lifetime.idle_timeout;
    let mut idle_check = Box::pin(tokio::time::sleep(idle_timeout));
    let mut aged = Box::pin(tokio::time::sleep(
        lifetime.max_age.map_or(Duration::MAX, jittered),
    ));
    let mut first_request = Box::pin(tokio::time::sleep(FIRST_REQUEST_TIMEOUT.min(idle_timeout)));
    let mut awaiting_first_request = true;
    let mut idle_close = Box::pin(tokio::time::sleep(Duration::MAX));
    let mut stall = StallCheck::new(ctx.send_watch.clone(), lifetime.send_timeout);
    let mut stall_tick = Box::pin(tokio::time::sleep(stall.interval));
    let mut closing_idle = false;
    let mut draining = *shutdown.borrow();
    if draining {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "client connection closed with an error");
                }
                return;
            }
            changed = shutdown.changed(), if !draining => {
                if changed.is_err() || *shutdown.borrow() {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            _ = aged.as_mut(), if !draining && lifetime.max_age.is_some() => {
                // Two-phase GOAWAY (hyper/h2: first the maximum stream id, then the last
                // one after a PING round trip); calls in flight finish, the client
                // reconnects for its next calls.
                tracing::debug!(%peer, "client connection reached max_connection_age; asked to reconnect");
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = stall_tick.as_mut() => {
                if stall.tick() {
                    ctx.send_stalled.store(true, Ordering::Relaxed);
                    tracing::warn!(
                        %peer,
                        send_timeout = ?lifetime.send_timeout,
                        "client took none of its responses for send_timeout: connection closed, its backend streams cancelled"
                    );
                    return;
                }
                stall_tick.as_mut().reset(Instant::now() + stall.interval);
            }
            _ = idle_close.as_mut(), if closing_idle => {
                tracing::debug!(%peer, "idle client connection did not close in time; dropped");
                return;
            }
            _ = first_request.as_mut(), if awaiting_first_request => {
                awaiting_first_request = false;
                if !ctx.started.load(Ordering::Relaxed) {
                    // No call can be lost: none ever started. Close at once rather than
                    // wait for a graceful goodbye the client may never read.
                    tracing::debug!(%peer, "no request in time after connecting; connection closed");
                    return;
                }
            }
            _ = idle_check.as_mut(), if !draining => {
                match idle_deadline(&ctx, idle_timeout) {
                    Some(next) => idle_check.as_mut().reset(next),
                    None => {
                        tracing::debug!(%peer, "closing idle client connection");
                        draining = true;
                        closing_idle = true;
                        idle_close.as_mut().reset(Instant::now() + IDLE_CLOSE_GRACE);
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// When to look again, or `None` when the connection has been idle long enough.
fn idle_deadline(ctx: &ConnCtx, idle_timeout: Duration) -> Option<Instant> {
    let now = Instant::now();
    if ctx.active.load(Ordering::Relaxed) > 0 {
        return Some(now + idle_timeout);
    }
    let last = ctx.since + Duration::from_millis(ctx.last_active_ms.load(Ordering::Relaxed));
    let idle_until = last + idle_timeout;
    (idle_until > now).then_some(idle_until)
}
