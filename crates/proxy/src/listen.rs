//! Binding listeners, running worker threads, accepting connections, draining.
//!
//! Each of `server.workers` threads runs a current-thread tokio runtime and accepts from
//! every listener (the kernel hands each connection to one of them). A worker owns its
//! upstream connections, so a call is served start to end on one thread — the layout
//! NGINX and HAProxy use, and the one `shared/research/performance.md` measured as the
//! cheapest. Balancer state (in-flight counts, health) is shared across workers through
//! atomics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use rpcgate_balance::{Balancer, EndpointSpec, PassiveHealthPolicy, Policy};
use rpcgate_config::{Config, LbPolicy};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::forward::{ClusterState, ConnCtx, ListenerState, RouteState, Shared};
use crate::route::Router;
use crate::upstream::Upstreams;
use crate::{server, tls};

/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 1024;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("listener {name}: cannot bind {address}: {source}")]
    Bind {
        /// The listener's name.
        name: String,
        /// The address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The access log could not be opened.
    #[error("access log: {0}")]
    AccessLog(std::io::Error),
    /// A worker thread or its runtime could not start.
    #[error("worker: {0}")]
    Worker(std::io::Error),
    /// A configured header could not be used.
    #[error("header {0}: invalid name or value")]
    Header(String),
    /// A TLS configuration could not be built (key does not match certificate, …).
    #[error("{0}")]
    Tls(String),
}

/// The proxy: entry point of the request path.
#[derive(Debug)]
pub struct Proxy;

impl Proxy {
    /// Binds every listener and starts the worker threads. Returns once the listeners
    /// accept connections.
    pub fn start(config: &Config) -> Result<ProxyHandle, StartError> {
        let shared = Arc::new(build_shared(config)?);
        let mut bound = Vec::new();
        for listener in &config.listeners {
            let socket = bind(listener.address).map_err(|source| StartError::Bind {
                name: listener.name.clone(),
                address: listener.address,
                source,
            })?;
            let address = socket.local_addr().map_err(|source| StartError::Bind {
                name: listener.name.clone(),
                address: listener.address,
                source,
            })?;
            bound.push(BoundListener {
                name: listener.name.clone(),
                address,
                socket,
                limit: Arc::new(Semaphore::new(listener.max_connections.max(1))),
                builder: Arc::new(server::builder(listener)),
                idle_timeout: listener.idle_timeout,
                tls: match &listener.tls {
                    Some(tls) => Some((
                        TlsAcceptor::from(tls::server_config(tls).map_err(|e| {
                            StartError::Tls(format!("listener {}: {e}", listener.name))
                        })?),
                        tls.handshake_timeout,
                    )),
                    None => None,
                },
            });
        }
        let bound = Arc::new(bound);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut workers = Vec::new();
        let drain_timeout = config.server.drain_timeout;
        for index in 0..config.server.workers.max(1) {
            let shared = shared.clone();
            let bound = bound.clone();
            let shutdown = shutdown_rx.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(StartError::Worker)?;
            let thread = std::thread::Builder::new()
                .name(format!("rpcgate-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(run_worker(shared, bound, shutdown, drain_timeout));
                })
                .map_err(StartError::Worker)?;
            workers.push(thread);
        }
        let addresses = bound.iter().map(|b| (b.name.clone(), b.address)).collect();
        Ok(ProxyHandle {
            addresses,
            shutdown: shutdown_tx,
            workers,
        })
    }
}

/// A running proxy.
#[derive(Debug)]
pub struct ProxyHandle {
    addresses: Vec<(String, SocketAddr)>,
    shutdown: watch::Sender<bool>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl ProxyHandle {
    /// The bound address of a listener (useful with port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.addresses
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Every listener's name and bound address, in config order.
    pub fn addresses(&self) -> &[(String, SocketAddr)] {
        &self.addresses
    }

    /// Stops accepting, closes every client connection gracefully, lets calls in flight
    /// finish (up to `server.drain_timeout`), then stops the workers.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let workers = std::mem::take(&mut self.workers);
        let _ = tokio::task::spawn_blocking(move || {
            for worker in workers {
                let _ = worker.join();
            }
        })
        .await;
    }

    /// [`ProxyHandle::shutdown`] for callers outside a runtime.
    pub fn shutdown_blocking(mut self) {
        let _ = self.shutdown.send(true);
        for worker in std::mem::take(&mut self.workers) {
            let _ = worker.join();
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// A bound listener and what its connections share.
struct BoundListener {
    name: String,
    address: SocketAddr,
    socket: std::net::TcpListener,
    limit: Arc<Semaphore>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    idle_timeout: Duration,
    /// The TLS acceptor and handshake deadline of a TLS listener.
    tls: Option<(TlsAcceptor, Duration)>,
}

fn bind(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

async fn run_worker(
    shared: Arc<Shared>,
    bound: Arc<Vec<BoundListener>>,
    mut shutdown: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let upstreams = Arc::new(Upstreams::default());
    let connections = TaskTracker::new();
    let mut accept_loops = Vec::new();
    for (index, listener) in bound.iter().enumerate() {
        let socket = match listener.socket.try_clone().and_then(TcpListener::from_std) {
            Ok(socket) => socket,
            Err(error) => {
                tracing::error!(listener = %listener.name, %error, "worker cannot use the listener");
                continue;
            }
        };
        accept_loops.push(tokio::spawn(accept_loop(
            socket,
            index,
            bound.clone(),
            shared.clone(),
            upstreams.clone(),
            connections.clone(),
            shutdown.clone(),
        )));
    }
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    for accept in accept_loops {
        accept.abort();
    }
    connections.close();
    if tokio::time::timeout(drain_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = connections.len(),
            "drain timeout passed; closing the remaining connections"
        );
    }
}

async fn accept_loop(
    socket: TcpListener,
    index: usize,
    bound: Arc<Vec<BoundListener>>,
    shared: Arc<Shared>,
    upstreams: Arc<Upstreams>,
    connections: TaskTracker,
    shutdown: watch::Receiver<bool>,
) {
    let listener = &bound[index];
    loop {
        let Ok(permit) = listener.limit.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: say so, give the system a moment.
                tracing::warn!(listener = %listener.name, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let new_ctx = {
            let shared = shared.clone();
            let upstreams = upstreams.clone();
            move |client_identity| {
                Arc::new(ConnCtx {
                    shared,
                    listener: index,
                    peer,
                    peer_ip: HeaderValue::from_str(&peer.ip().to_string())
                        .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
                    upstreams,
                    client_identity,
                    started: AtomicBool::new(false),
                    active: AtomicUsize::new(0),
                    last_active_ms: AtomicU64::new(0),
                    since: Instant::now(),
                })
            }
        };
        let builder = listener.builder.clone();
        let idle_timeout = listener.idle_timeout;
        let shutdown = shutdown.clone();
        let tls = listener.tls.clone();
        let name = listener.name.clone();
        connections.spawn(async move {
            match tls {
                None => {
                    let ctx = new_ctx(None);
                    server::serve(stream, ctx, builder, idle_timeout, shutdown).await;
                }
                Some((acceptor, deadline)) => {
                    // A total deadline: a client that stalls mid-handshake cannot hold
                    // the connection (and its max_connections slot).
                    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let identity =
                                tls::client_identity(tls_stream.get_ref().1.peer_certificates());
                            let ctx = new_ctx(identity);
                            server::serve(tls_stream, ctx, builder, idle_timeout, shutdown).await;
                        }
                        Ok(Err(error)) => {
                            tracing::warn!(listener = %name, %peer, %error, "TLS handshake failed; connection closed");
                        }
                        Err(_) => {
                            tracing::warn!(listener = %name, %peer, timeout = ?deadline, "TLS handshake not completed in time; connection closed");
                        }
                    }
                }
            }
            drop(permit);
        });
    }
}

fn build_shared(config: &Config) -> Result<Shared, StartError> {
    let clusters = config
        .clusters
        .iter()
        .enumerate()
        .map(|(index, cluster)| {
            let (policy, hash_key) = match &cluster.lb {
                LbPolicy::RoundRobin => (Policy::RoundRobin, None),
                LbPolicy::LeastRequest => (Policy::LeastRequest, None),
                LbPolicy::P2cEwma => (Policy::P2cEwma, None),
                LbPolicy::Random => (Policy::Random, None),
                LbPolicy::RingHash(key) => (Policy::RingHash, Some(key.clone())),
            };
            let endpoints = cluster
                .endpoints
                .iter()
                .map(|e| EndpointSpec {
                    address: e.address.clone(),
                    weight: e.weight,
                })
                .collect();
            let passive = PassiveHealthPolicy {
                max_fails: cluster.passive_health.max_fails,
                fail_timeout: cluster.passive_health.fail_timeout,
            };
            let authority = match &cluster.authority {
                Some(a) => Some(
                    a.parse::<http::uri::Authority>()
                        .map_err(|_| StartError::Header(format!("authority {a}")))?,
                ),
                None => None,
            };
            let tls =
                match &cluster.tls {
                    Some(tls) => Some(crate::upstream::UpstreamTls {
                        connector: TlsConnector::from(tls::client_config(tls).map_err(|e| {
                            StartError::Tls(format!("cluster {}: {e}", cluster.name))
                        })?),
                        server_name: tls.server_name.clone(),
                    }),
                    None => None,
                };
            Ok(ClusterState {
                index,
                tls,
                name: cluster.name.as_str().into(),
                balancer: Arc::new(Balancer::new(policy, passive, endpoints)),
                protocol: cluster.protocol,
                authority,
                connect_timeout: cluster.connect_timeout,
                hash_key,
                in_panic: AtomicBool::new(false),
            })
        })
        .collect::<Result<Vec<_>, StartError>>()?;
    let listeners = config
        .listeners
        .iter()
        .map(|listener| {
            let routes = listener
                .routes
                .iter()
                .map(|route| {
                    Ok(RouteState {
                        name: route.name.as_str().into(),
                        cluster: route.cluster,
                        timeout: route.timeout,
                        request_headers: header_pairs(&route.request_headers)?,
                        response_headers: header_pairs(&route.response_headers)?,
                    })
                })
                .collect::<Result<Vec<_>, StartError>>()?;
            Ok(ListenerState {
                name: listener.name.as_str().into(),
                router: Router::new(&listener.routes),
                routes,
            })
        })
        .collect::<Result<Vec<_>, StartError>>()?;
    let access_log = AccessLog::open(&config.log.access_log, config.log.format)
        .map_err(StartError::AccessLog)?;
    Ok(Shared {
        listeners,
        clusters,
        access_log,
    })
}

fn header_pairs(pairs: &[(String, String)]) -> Result<Vec<(HeaderName, HeaderValue)>, StartError> {
    pairs
        .iter()
        .map(|(name, value)| {
            let header_name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| StartError::Header(name.clone()))?;
            let header_value =
                HeaderValue::from_str(value).map_err(|_| StartError::Header(name.clone()))?;
            Ok((header_name, header_value))
        })
        .collect()
}
