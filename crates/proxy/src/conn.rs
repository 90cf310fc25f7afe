//! One client connection's context, shared by the calls on it.
//!
//! A connection knows *who* it is (peer, verified client certificate, the listener it
//! came in on, by name) and *where* its calls go (the proxy's current generation and this
//! worker's upstream pool), but it pins no configuration: each call loads the generation
//! that is current when it starts ([`ConnCtx::generation`]), so a swapped generation
//! reaches long-lived HTTP/2 connections at their next call. It also keeps the counters
//! the server loop needs for its timeouts (first request, idle).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use http::HeaderValue;
use tokio::time::Instant;

use crate::state::{Generation, Generations};
use crate::tls::ClientIdentity;
use crate::upstream::Upstreams;

/// One client connection's context.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    /// The proxy's current routing and cluster state, swapped as a whole.
    generations: Arc<Generations>,
    /// The listener this connection was accepted on (stable across generations).
    pub(crate) listener: Arc<str>,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// The client's IP as a header value, made once per connection (`x-forwarded-for`,
    /// `hash_key = "client_ip"`).
    pub(crate) peer_ip: HeaderValue,
    /// This worker's upstream connections.
    pub(crate) upstreams: Arc<Upstreams>,
    /// The verified client certificate (mutual TLS listeners).
    pub(crate) client_identity: Option<ClientIdentity>,
    /// Whether a request has ever started on this connection (for the first-request
    /// deadline).
    pub(crate) started: AtomicBool,
    /// Calls in flight on this connection (for the idle timeout).
    pub(crate) active: AtomicUsize,
    /// When the last call ended, in ms since `since`.
    pub(crate) last_active_ms: AtomicU64,
    /// When the connection was accepted.
    pub(crate) since: Instant,
    /// Whether the listener's `allow` / `deny` lets this client in (decided at accept;
    /// a refused client's calls get PERMISSION_DENIED, none reaches a backend).
    pub(crate) allowed: bool,
    /// Its response bodies waiting on the client (`send_timeout`).
    pub(crate) send_watch: Arc<crate::send_stall::SendWatch>,
    /// Set when `send_timeout` closed the connection: its calls end as `send_timeout`.
    pub(crate) send_stalled: AtomicBool,
}

impl ConnCtx {
    /// A fresh context for a connection accepted now.
    pub(crate) fn new(
        generations: Arc<Generations>,
        listener: Arc<str>,
        peer: SocketAddr,
        upstreams: Arc<Upstreams>,
        client_identity: Option<ClientIdentity>,
        allowed: bool,
    ) -> Self {
        Self {
            generations,
            listener,
            peer,
            peer_ip: HeaderValue::from_str(&peer.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            upstreams,
            client_identity,
            started: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            since: Instant::now(),
            allowed,
            send_watch: Arc::default(),
            send_stalled: AtomicBool::new(false),
        }
    }

    /// The generation current now; a call loads it once and keeps it to its end.
    pub(crate) fn generation(&self) -> Arc<Generation> {
        self.generations.load_full()
    }

    /// Marks a call in flight until the returned guard drops.
    pub(crate) fn enter(self: &Arc<Self>) -> ActiveCall {
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

impl ActiveCall {
    /// The connection the call is on.
    pub(crate) fn conn(&self) -> &ConnCtx {
        &self.0
    }
}

impl Drop for ActiveCall {
    fn drop(&mut self) {
        let ms = self.0.since.elapsed().as_millis() as u64;
        self.0.last_active_ms.store(ms, Ordering::Relaxed);
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
