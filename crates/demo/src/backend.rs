//! Serving a backend: options, the accept loop, and the handle tests hold.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use std::{fmt, io};

use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::MAX_MESSAGE_BYTES;
use crate::call::{Shared, Stats, handle};
use crate::pb::helloworld::greeter_server::{self, GreeterServer};
use crate::pb::pcbook::auth_service_server::{self, AuthServiceServer};
use crate::pb::pcbook::laptop_service_server::{self, LaptopServiceServer};
use crate::services::{Auth, Greeter, Laptops};
use crate::tls::{TlsServer, tls_incoming};

/// The services a backend reports in `grpc.health.v1` (besides the overall "").
const SERVICES: [&str; 3] = [
    greeter_server::SERVICE_NAME,
    auth_service_server::SERVICE_NAME,
    laptop_service_server::SERVICE_NAME,
];

/// How a backend behaves beyond what each call's metadata asks for.
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// The name every reply, `x-backend` header and `x-backend-trailer` carries; must be
    /// a valid header value.
    pub name: String,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` announced to clients, to test a proxy
    /// that must open more connections when a backend's stream limit is reached; `None`
    /// leaves hyper's default.
    pub max_concurrent_streams: Option<u32>,
    /// How long a graceful shutdown waits for calls in flight before closing the
    /// connections anyway, so a stuck stream cannot hold `rpcgate backend` forever.
    pub drain_timeout: Duration,
    /// Serve TLS (optionally requiring client certificates) instead of plaintext h2c,
    /// like the tutorial's servers started with `-tls`; `None` is plaintext.
    pub tls: Option<TlsServer>,
}

impl BackendOptions {
    /// Options with this name and the defaults (no stream limit, 5 s drain).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            max_concurrent_streams: None,
            drain_timeout: Duration::from_secs(5),
            tls: None,
        }
    }

    /// Sets [`BackendOptions::max_concurrent_streams`].
    #[must_use]
    pub fn max_concurrent_streams(mut self, streams: u32) -> Self {
        self.max_concurrent_streams = Some(streams);
        self
    }

    /// Sets [`BackendOptions::drain_timeout`].
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Sets [`BackendOptions::tls`].
    #[must_use]
    pub fn tls(mut self, tls: TlsServer) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// What a backend received in its most recent call, so a test can check what a proxy
/// forwarded without asking for an echo.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    /// The request path, `/package.Service/Method`.
    pub path: String,
    /// `:authority` (or `host`), if any.
    pub authority: Option<String>,
    /// Every request header (HTTP/2 pseudo-headers excluded), metadata included.
    pub headers: HeaderMap,
}

/// A backend's services and counters, cheap to clone into every connection.
#[derive(Clone)]
struct Backend {
    shared: Arc<Shared>,
    health: HealthReporter,
    options: Arc<BackendOptions>,
}

impl Backend {
    async fn new(options: BackendOptions) -> io::Result<Self> {
        let name = HeaderValue::from_str(&options.name).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "backend name {:?} is not a valid header value",
                    options.name
                ),
            )
        })?;
        let backend: Arc<str> = Arc::from(options.name.as_str());
        let (health, health_service) = tonic_health::server::health_reporter();
        for service in SERVICES {
            health
                .set_service_status(service, ServingStatus::Serving)
                .await;
        }
        let greeter = GreeterServer::new(Greeter {
            backend: backend.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
        let auth = AuthServiceServer::new(Auth {
            backend: backend.clone(),
            issued: AtomicU64::new(0),
        });
        let laptops = LaptopServiceServer::new(Laptops {
            backend,
            stored: AtomicU64::new(0),
        });
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_error = |e: tonic_reflection::server::Error| io::Error::other(e.to_string());
        let routes = Routes::new(greeter)
            .add_service(auth)
            .add_service(laptops)
            .add_service(health_service)
            .add_service(reflection().build_v1().map_err(reflection_error)?)
            .add_service(reflection().build_v1alpha().map_err(reflection_error)?)
            .prepare();
        Ok(Self {
            shared: Arc::new(Shared {
                name,
                routes,
                stats: Arc::new(Stats::default()),
            }),
            health,
            options: Arc::new(options),
        })
    }

    /// Serves one connection until it closes, or until `stop` turns true, then shuts it
    /// down gracefully (GOAWAY, calls in flight finish).
    async fn serve_connection<IO>(self, io: IO, mut stop: watch::Receiver<bool>)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let shared = self.shared;
        let service = hyper::service::service_fn(move |request| handle(shared.clone(), request));
        // HTTP/1.1 too, for the proxy's non-gRPC upstreams (`protocol = "http1"`).
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new());
        builder.http2().timer(TokioTimer::new());
        if let Some(streams) = self.options.max_concurrent_streams {
            builder.http2().max_concurrent_streams(streams);
        }
        let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
        // A closed channel means the server is gone: stop as well.
        let stopped = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = stopped => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(%error, "backend connection ended with an error");
        }
    }
}

/// The connection tasks of a running backend, shared with its handle so that `kill`
/// can abort them.
type Connections = Arc<Mutex<JoinSet<()>>>;

fn lock(connections: &Connections) -> std::sync::MutexGuard<'_, JoinSet<()>> {
    connections.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Accepts connections until `incoming` ends or `shutdown` completes, then drains them
/// gracefully for up to the drain timeout and closes what is left.
async fn run<S, IO>(
    incoming: S,
    backend: Backend,
    connections: Connections,
    shutdown: impl Future<Output = ()>,
) where
    S: Stream<Item = io::Result<IO>>,
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    // Boxed rather than pinned on the stack, so that it can be dropped before the drain.
    let mut incoming = Box::pin(incoming);
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            next = incoming.next() => match next {
                Some(Ok(io)) => {
                    let mut set = lock(&connections);
                    while set.try_join_next().is_some() {}
                    set.spawn(backend.clone().serve_connection(io, stop_rx.clone()));
                }
                Some(Err(error)) => {
                    // Usually a connection aborted before accept, or EMFILE: keep
                    // serving, without spinning.
                    tracing::warn!(%error, "backend accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None => break,
            },
        }
    }
    drop(incoming); // stop accepting: the listening socket closes here
    let _ = stop_tx.send(true);
    let mut set = std::mem::take(&mut *lock(&connections));
    let drained = tokio::time::timeout(backend.options.drain_timeout, async {
        while set.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = set.len(),
            "backend drain timed out; closing connections"
        );
        set.shutdown().await;
    }
}

fn tcp_incoming(listener: TcpListener) -> impl Stream<Item = io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            // Small gRPC messages should not wait for Nagle.
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    })
}

/// Serves one demo/test backend (h2c with prior knowledge, and HTTP/1.1 for plain
/// requests; over TLS when [`BackendOptions::tls`] is set) on `listener` until `shutdown`
/// completes; then stops accepting, sends every connection a graceful GOAWAY, lets calls
/// in flight finish for up to [`BackendOptions::drain_timeout`], and returns.
///
/// It serves `helloworld.Greeter`, `techschool_pcbook.AuthService`,
/// `techschool_pcbook.LaptopService` and `grpc.health.v1.Health` (SERVING for "" and
/// each of them), with the tags and behaviours described in [`crate::meta`]. The
/// Greeter takes messages up to [`crate::MAX_MESSAGE_BYTES`] and gzip-compressed
/// messages, and compresses its replies when the client accepts gzip. A request that is
/// not gRPC (no `application/grpc` content type), on any path, gets `200 text/plain`
/// `Hello from <name>`.
///
/// # Errors
///
/// `InvalidInput` when the name is not a valid header value, or the TLS settings are
/// unusable (see [`TlsServer::server_config`]).
pub async fn serve_backend(
    listener: TcpListener,
    options: BackendOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    match options.tls.as_ref().map(TlsServer::server_config) {
        Some(config) => {
            let incoming = tls_incoming(listener, config?);
            serve_backend_incoming(incoming, options, shutdown).await
        }
        None => serve_backend_incoming(tcp_incoming(listener), options, shutdown).await,
    }
}

/// [`serve_backend`] over any stream of accepted connections, for transports the crate
/// does not know (e.g. TLS: accept TCP, run the handshake, yield the TLS stream).
///
/// # Errors
///
/// `InvalidInput` when the name is not a valid header value.
pub async fn serve_backend_incoming<S, IO>(
    incoming: S,
    options: BackendOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: Stream<Item = io::Result<IO>>,
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let backend = Backend::new(options).await?;
    run(incoming, backend, Connections::default(), shutdown).await;
    Ok(())
}

/// Starts a backend named `name` on `127.0.0.1:0` in the current tokio runtime.
///
/// # Errors
///
/// When binding fails, or the name is not a valid header value.
pub async fn spawn_backend(name: &str) -> io::Result<BackendHandle> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    spawn_backend_on(listener, BackendOptions::new(name)).await
}

/// Starts a TLS backend named `name` on `127.0.0.1:0` in the current tokio runtime; its
/// [`BackendHandle::url`] is `https://…`. Clients verify it against the CA that issued
/// `tls.cert_pem` (for a [`crate::pki::DevPki`] server certificate, with the name
/// `localhost`).
///
/// # Errors
///
/// When binding fails, the name is not a valid header value, or the TLS settings are
/// unusable.
pub async fn spawn_backend_tls(name: &str, tls: TlsServer) -> io::Result<BackendHandle> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    spawn_backend_on(listener, BackendOptions::new(name).tls(tls)).await
}

/// Starts a backend on `listener` in the current tokio runtime: to choose the options
/// (TLS included), or to bring a killed backend back on the same address.
///
/// # Errors
///
/// When the listener has no local address, the name is not a valid header value, or the
/// TLS settings are unusable.
pub async fn spawn_backend_on(
    listener: TcpListener,
    options: BackendOptions,
) -> io::Result<BackendHandle> {
    let addr = listener.local_addr()?;
    let tls = options
        .tls
        .as_ref()
        .map(TlsServer::server_config)
        .transpose()?;
    let backend = Backend::new(options).await?;
    let connections = Connections::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stopped = async move {
        let _ = stop_rx.await;
    };
    let task = match tls {
        Some(config) => tokio::spawn(run(
            tls_incoming(listener, config),
            backend.clone(),
            connections.clone(),
            stopped,
        )),
        None => tokio::spawn(run(
            tcp_incoming(listener),
            backend.clone(),
            connections.clone(),
            stopped,
        )),
    };
    Ok(BackendHandle {
        addr,
        backend,
        connections,
        task: Mutex::new(Some(task)),
        stop: Mutex::new(Some(stop_tx)),
    })
}

/// Takes what `slot` holds, poisoned or not.
fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// A backend running in the current runtime, as [`spawn_backend`] returns it.
///
/// Dropping the handle stops the backend abruptly, like [`BackendHandle::kill`] but
/// without waiting.
pub struct BackendHandle {
    addr: SocketAddr,
    backend: Backend,
    connections: Connections,
    /// The accept loop, until stopped (behind a lock so that stopping takes `&self`
    /// and the counters stay readable afterwards).
    task: Mutex<Option<JoinHandle<()>>>,
    /// Starts the graceful shutdown.
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl fmt::Debug for BackendHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendHandle")
            .field("name", &self.name())
            .field("addr", &self.addr)
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl BackendHandle {
    fn stats(&self) -> &Stats {
        &self.backend.shared.stats
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, or `https://ADDR` for a TLS backend: what tonic's
    /// `Channel`/`connect` take.
    pub fn url(&self) -> String {
        let scheme = if self.backend.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Its name, as in its replies.
    pub fn name(&self) -> &str {
        &self.backend.options.name
    }

    /// Calls (HTTP/2 streams) received so far, whatever their outcome.
    pub fn calls(&self) -> u64 {
        self.stats().calls.load(Ordering::SeqCst)
    }

    /// Calls whose client went away (stream reset or connection lost) before the
    /// response ended: a delayed call, or a stream still sending.
    pub fn cancelled(&self) -> u64 {
        self.stats().cancelled.load(Ordering::SeqCst)
    }

    /// Calls received whose response has not ended yet.
    pub fn in_flight(&self) -> u64 {
        self.stats().in_flight.load(Ordering::SeqCst)
    }

    /// What the most recent call received.
    pub fn last_request(&self) -> Option<SeenRequest> {
        self.stats()
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `condition` holds, re-checking it whenever a call starts or ends, so
    /// tests wait on events rather than sleeping (bound it with a timeout).
    pub async fn wait_until(&self, mut condition: impl FnMut(&Self) -> bool) {
        loop {
            let mut changed = pin!(self.stats().changed.notified());
            changed.as_mut().enable();
            if condition(self) {
                return;
            }
            changed.await;
        }
    }

    /// Sets what `grpc.health.v1.Health` reports for "" and every service: SERVING or
    /// NOT_SERVING, for active health-check tests. Calls are served either way.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for service in std::iter::once("").chain(SERVICES) {
            self.backend
                .health
                .set_service_status(service, status)
                .await;
        }
    }

    /// Stops it abruptly, as a crash would: the listener and every connection close at
    /// once, with no GOAWAY; calls in flight fail. Returns when the sockets are closed.
    /// The counters stay readable (the handlers of calls cut off this way end soon
    /// after, counted as cancelled).
    pub async fn kill(&self) {
        let task = take(&self.task);
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        let mut set = std::mem::take(&mut *lock(&self.connections));
        set.shutdown().await;
    }

    /// Stops it gracefully: no new connections, a GOAWAY on each open one, calls in
    /// flight finish (up to the drain timeout). Returns when it has stopped.
    pub async fn shutdown(&self) {
        if let Some(stop) = take(&self.stop) {
            let _ = stop.send(());
        }
        let task = take(&self.task);
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        if let Some(task) = take(&self.task) {
            task.abort();
        }
        lock(&self.connections).abort_all();
    }
}
