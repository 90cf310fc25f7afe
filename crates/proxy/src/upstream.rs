//! Pooled, multiplexed connections to the backends.
//!
//! Each worker thread owns one [`Upstreams`]: its connections are driven by that
//! worker's event loop, so a call never hops threads. Per endpoint it keeps a few HTTP/2
//! connections and puts every call on the first one that has a free stream slot under
//! the backend's advertised `SETTINGS_MAX_CONCURRENT_STREAMS`; a new connection opens
//! only when all are full (Envoy's behaviour; NGINX opens one per call). Concurrent
//! callers wait for one connect instead of each opening their own.
//!
//! The HTTP/2 side uses the `h2` crate directly rather than hyper's client: it tells us
//! the peer's stream limit, and its errors say whether a stream was refused or above a
//! GOAWAY's last stream id, which is what makes transparent retry safe.
//! `protocol = "http1"` clusters use hyper-util's pooled HTTP/1.1 client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::Client as Http1Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::body::RequestBodyBox;

/// The request body type of HTTP/1.1 upstream calls: the client's body, or an empty one
/// when a bodiless request is sent (again).
pub type Http1RequestBody = RequestBodyBox;

/// Source of process-unique pool ids.
static NEXT_POOL: AtomicU64 = AtomicU64::new(1);

/// Names a cluster's per-worker HTTP/1.1 pool; a cluster keeps its id across generations
/// while the settings that shape a connection (protocol, TLS, connect timeout) stay the
/// same, so its pooled connections survive a swap. (HTTP/2 pools are keyed by endpoint
/// id, which a kept endpoint keeps.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolId(u64);

impl PoolId {
    /// A new id, never used before in this process.
    pub fn fresh() -> Self {
        Self(NEXT_POOL.fetch_add(1, Ordering::Relaxed))
    }
}

/// Flow-control window per upstream stream: large enough that a 1 MiB message flows
/// without waiting for WINDOW_UPDATEs, small enough to bound what one stream buffers.
const STREAM_WINDOW: u32 = 1 << 20;
/// Flow-control window per upstream connection, shared by its streams.
const CONNECTION_WINDOW: u32 = 8 << 20;

/// TLS towards a cluster's backends.
#[derive(Clone)]
pub struct UpstreamTls {
    /// The rustls connector (configuration shared by every connection).
    pub connector: TlsConnector,
    /// `server_name` from the config; `None` = each endpoint's host.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Why a connection to a backend could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect, or the HTTP/2 handshake and its settings round trip, took longer
    /// than the cluster's `connect_timeout`.
    #[error("connect to {0} timed out")]
    Timeout(String),
    /// The TCP connect failed (refused, unreachable, DNS).
    #[error("connect to {0} failed: {1}")]
    Io(String, std::io::Error),
    /// The TLS handshake failed (certificate not trusted, wrong name, no client
    /// certificate accepted, not a TLS server, …).
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(String, String),
    /// The HTTP/2 handshake failed.
    #[error("HTTP/2 handshake with {0} failed: {1}")]
    Handshake(String, h2::Error),
}

/// One multiplexed HTTP/2 connection to a backend.
#[derive(Debug)]
struct H2Conn {
    send: h2::client::SendRequest<Bytes>,
    active: AtomicUsize,
    closed: Arc<AtomicBool>,
}

impl H2Conn {
    fn has_room(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
            && self.active.load(Ordering::Relaxed) < self.send.current_max_send_streams()
    }
}

/// A reserved stream slot on a connection; frees the slot when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    conn: Arc<H2Conn>,
}

impl StreamSlot {
    /// A handle to open the stream with (cheap clone of the connection's sender).
    pub fn sender(&self) -> h2::client::SendRequest<Bytes> {
        self.conn.send.clone()
    }
}

impl StreamSlot {
    /// Marks the connection as unusable for new streams (it sent GOAWAY or failed).
    pub fn mark_closed(&self) {
        self.conn.closed.store(true, Ordering::Release);
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.conn.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connections of one worker to one endpoint.
#[derive(Debug, Default)]
struct EndpointConns {
    conns: Mutex<Vec<Arc<H2Conn>>>,
    connecting: tokio::sync::Mutex<()>,
}

impl EndpointConns {
    fn try_reserve(&self) -> Option<StreamSlot> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| !c.closed.load(Ordering::Acquire));
        let conn = conns.iter().find(|c| c.has_room())?;
        conn.active.fetch_add(1, Ordering::Relaxed);
        Some(StreamSlot { conn: conn.clone() })
    }
}

/// One worker's upstream connections, keyed by endpoint id.
#[derive(Debug, Default)]
pub struct Upstreams {
    h2: Mutex<HashMap<u64, Arc<EndpointConns>>>,
    http1: Mutex<HashMap<PoolId, Http1Client<HttpConnector, Http1RequestBody>>>,
    /// The tasks driving this worker's HTTP/2 connections, to cut them when a drain runs
    /// out of time.
    drivers: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Set once the drain ran out of time: calls still running are ending because rpcgate
    /// shuts down, not because a backend failed.
    shutting_down: AtomicBool,
}

impl Upstreams {
    /// Ends the calls still running at the end of a drain: every upstream HTTP/2
    /// connection of this worker is cut, and the calls on them end with UNAVAILABLE
    /// ("rpcgate is shutting down"; see [`Upstreams::shutting_down`]).
    pub fn cut_all(&self) {
        self.shutting_down.store(true, Ordering::Release);
        let drivers = std::mem::take(&mut *self.drivers.lock().unwrap_or_else(|e| e.into_inner()));
        for driver in drivers {
            driver.abort();
        }
        self.http1.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Whether the drain ran out of time and the remaining calls are being cut.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// A stream slot on a connection to `address`, connecting if every connection is full.
    pub async fn h2_slot(
        &self,
        endpoint_id: u64,
        address: &str,
        connect_timeout: Duration,
        tls: Option<&UpstreamTls>,
    ) -> Result<StreamSlot, ConnectError> {
        let conns = {
            let mut map = self.h2.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(endpoint_id).or_default().clone()
        };
        if let Some(slot) = conns.try_reserve() {
            return Ok(slot);
        }
        let _connecting = conns.connecting.lock().await;
        // Someone else may have connected while we waited.
        if let Some(slot) = conns.try_reserve() {
            return Ok(slot);
        }
        // Connecting (TCP, TLS, HTTP/2 handshake) is rare and its future is large: boxed,
        // it does not inflate the future of every call.
        let (conn, driver) = Box::pin(connect_h2(address, connect_timeout, tls)).await?;
        {
            let mut drivers = self.drivers.lock().unwrap_or_else(|e| e.into_inner());
            drivers.retain(|d| !d.is_finished());
            drivers.push(driver);
        }
        let conn = Arc::new(conn);
        conn.active.fetch_add(1, Ordering::Relaxed);
        conns
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn.clone());
        Ok(StreamSlot { conn })
    }

    /// The pooled HTTP/1.1 client for a cluster's pool.
    pub fn http1_client(
        &self,
        pool: PoolId,
        connect_timeout: Duration,
    ) -> Http1Client<HttpConnector, Http1RequestBody> {
        let mut map = self.http1.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(pool)
            .or_insert_with(|| {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(connect_timeout));
                Http1Client::builder(TokioExecutor::new()).build(connector)
            })
            .clone()
    }
}

async fn connect_h2(
    address: &str,
    connect_timeout: Duration,
    tls: Option<&UpstreamTls>,
) -> Result<(H2Conn, tokio::task::AbortHandle), ConnectError> {
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(address))
        .await
        .map_err(|_| ConnectError::Timeout(address.to_string()))?
        .map_err(|e| ConnectError::Io(address.to_string(), e))?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return h2_handshake(stream, address, connect_timeout).await;
    };
    let tls_error = |reason: String| ConnectError::Tls(address.to_string(), reason);
    let name = crate::tls::server_name(tls.server_name.as_deref(), address)
        .map_err(|e| tls_error(e.to_string()))?;
    let stream = tokio::time::timeout(connect_timeout, tls.connector.connect(name, stream))
        .await
        .map_err(|_| tls_error("timed out".into()))?
        .map_err(|e| tls_error(e.to_string()))?;
    // With TLS 1.3 the backend checks our client certificate only after our side of the
    // handshake is done: its refusal (an alert, then a close) shows up as a failed
    // HTTP/2 handshake. Say what that most likely means.
    h2_handshake(stream, address, connect_timeout)
        .await
        .map_err(|e| match e {
            ConnectError::Handshake(_, error) => tls_error(format!(
                "the backend closed the connection right after the handshake ({error}); it may require a client certificate ([clusters.tls] cert and key) or refuse ours"
            )),
            other => other,
        })
}

/// The HTTP/2 handshake over an established (plain or TLS) stream.
async fn h2_handshake<IO>(
    stream: IO,
    address: &str,
    connect_timeout: Duration,
) -> Result<(H2Conn, tokio::task::AbortHandle), ConnectError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_reset_streams(1024)
        .handshake::<_, Bytes>(stream)
        .await
        .map_err(|e| ConnectError::Handshake(address.to_string(), e))?;
    let ping_pong = connection.ping_pong();
    let closed = Arc::new(AtomicBool::new(false));
    let closed_by_task = closed.clone();
    let peer = address.to_string();
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%peer, %error, "upstream connection ended");
        }
        closed_by_task.store(true, Ordering::Release);
    })
    .abort_handle();
    // Until the backend's SETTINGS arrive, h2 assumes an unlimited stream count, and the
    // calls waiting for this connection would all pile onto it and be refused. A server
    // sends its SETTINGS before anything else, so once our PING is answered its
    // MAX_CONCURRENT_STREAMS is known. One round trip per new connection.
    if let Some(mut ping_pong) = ping_pong {
        let settled = tokio::time::timeout(connect_timeout, ping_pong.ping(h2::Ping::opaque()));
        match settled.await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                return Err(ConnectError::Handshake(address.to_string(), error));
            }
            Err(_) => return Err(ConnectError::Timeout(address.to_string())),
        }
    }
    Ok((
        H2Conn {
            send,
            active: AtomicUsize::new(0),
            closed,
        },
        driver,
    ))
}
