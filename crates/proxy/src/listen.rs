//! Binding listeners, running worker threads, accepting connections, draining.
//!
//! Each of `server.workers` threads runs a current-thread tokio runtime and accepts from
//! every listener (the kernel hands each connection to one of them). A worker owns its
//! upstream connections, so a call is served start to end on one thread — the layout
//! NGINX and HAProxy use, and the one measured as the cheapest (`docs/request-path.md`,
//! "Threads"). Balancer state (in-flight counts, health) is shared across workers through
//! atomics, and the routing and cluster state is one [`Generation`] behind an `ArcSwap`
//! that [`ProxyHandle::swap_config`] replaces.
//!
//! [`Proxy::start_local`] runs one worker on the caller's tokio runtime instead of on
//! threads of its own, so tests can drive the proxy's timers with tokio's paused clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use rpcgate_config::Config;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::conn::ConnCtx;
use crate::error::StartError;
use crate::state::{Generation, Generations};
use crate::stats::{ListenerStats, Stats};
use crate::upstream::Upstreams;
use crate::{admin, observer};
use crate::{server, tls};

/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 1024;

/// The proxy: entry point of the request path.
#[derive(Debug)]
pub struct Proxy;

impl Proxy {
    /// Binds every listener and starts `server.workers` worker threads. Returns once the
    /// listeners accept connections.
    pub fn start(config: &Config) -> Result<ProxyHandle, StartError> {
        let control = Control::own_thread()?;
        let prepared = prepare(config, &control.runtime)?;
        let (bound, generations) = (prepared.bound.clone(), prepared.generations.clone());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut threads = Vec::new();
        let drain_timeout = config.server.drain_timeout;
        for index in 0..config.server.workers.max(1) {
            let generations = generations.clone();
            let bound = bound.clone();
            let shutdown = shutdown_rx.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(StartError::Worker)?;
            let thread = std::thread::Builder::new()
                .name(format!("rpcgate-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(run_worker(generations, bound, shutdown, drain_timeout));
                })
                .map_err(StartError::Worker)?;
            threads.push(thread);
        }
        ProxyHandle::new(prepared, shutdown_tx, Workers::Threads(threads), control)
    }

    /// Binds every listener and runs one worker as a task on the caller's tokio runtime
    /// (`server.workers` is ignored). On a current-thread runtime with a paused clock the
    /// proxy's timers (deadlines, idle and first-request timeouts) follow that clock,
    /// which is what end-to-end tests of timing use.
    ///
    /// # Panics
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn start_local(config: &Config) -> Result<ProxyHandle, StartError> {
        let control = Control::current();
        let prepared = prepare(config, &control.runtime)?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(run_worker(
            prepared.generations.clone(),
            prepared.bound.clone(),
            shutdown_rx,
            config.server.drain_timeout,
        ));
        ProxyHandle::new(prepared, shutdown_tx, Workers::Task(task), control)
    }
}

/// The runtime of the proxy's background tasks (active health probers): a thread of its
/// own with [`Proxy::start`], the caller's runtime with [`Proxy::start_local`].
#[derive(Debug)]
struct Control {
    runtime: Handle,
    /// The control thread and what stops it (own thread only).
    thread: Option<(std::thread::JoinHandle<()>, oneshot::Sender<()>)>,
}

impl Control {
    fn own_thread() -> Result<Self, StartError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Worker)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("rpcgate-control".into())
            .spawn(move || {
                // Dropping the runtime afterwards cancels every task still on it.
                let _ = runtime.block_on(stopped);
            })
            .map_err(StartError::Worker)?;
        Ok(Self {
            runtime: handle,
            thread: Some((thread, stop)),
        })
    }

    /// A stand-in after the control runtime was handed to a stopping task.
    fn detached() -> Self {
        Self {
            runtime: Handle::current(),
            thread: None,
        }
    }

    fn current() -> Self {
        Self {
            runtime: Handle::current(),
            thread: None,
        }
    }

    /// Stops the control thread (if any) and waits for it.
    fn stop(&mut self) {
        if let Some((thread, stop)) = self.thread.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

/// What [`prepare`] made: the bound listeners, the first generation, the counters, and
/// the admin API's socket when `[admin]` asks for one.
struct Prepared {
    bound: Arc<Vec<BoundListener>>,
    generations: Arc<Generations>,
    stats: Arc<Stats>,
    admin: Option<std::net::TcpListener>,
}

/// Builds the first generation and binds every listener (and the admin API's socket).
fn prepare(config: &Config, runtime: &Handle) -> Result<Prepared, StartError> {
    let stats = Arc::new(Stats::new(config.admin.is_some()));
    let generation = Generation::build(config, None, runtime, &stats)?;
    let admin = match &config.admin {
        Some(admin) => Some(bind(admin.address).map_err(|source| StartError::AdminBind {
            address: admin.address,
            source,
        })?),
        None => None,
    };
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
            name: listener.name.as_str().into(),
            address,
            socket,
            limit: Arc::new(Semaphore::new(listener.max_connections.max(1))),
            max_connections: listener.max_connections.max(1),
            stats: stats.listener(&listener.name),
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
    Ok(Prepared {
        bound: Arc::new(bound),
        generations: Arc::new(Generations::from_pointee(generation)),
        stats,
        admin,
    })
}

/// Where the workers run.
#[derive(Debug)]
enum Workers {
    /// Threads of their own, each with a current-thread runtime ([`Proxy::start`]).
    Threads(Vec<std::thread::JoinHandle<()>>),
    /// One task on the caller's runtime ([`Proxy::start_local`]).
    Task(tokio::task::JoinHandle<()>),
}

/// A running proxy.
#[derive(Debug)]
pub struct ProxyHandle {
    addresses: Vec<(String, SocketAddr)>,
    generations: Arc<Generations>,
    stats: Arc<Stats>,
    /// False once shutdown began (`/ready` answers 503).
    ready: Arc<AtomicBool>,
    /// The admin API's bound address, when it runs.
    admin: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    /// Stops the admin API and the observer once the workers are done, so `/ready`
    /// answers 503 for the whole drain.
    drained: watch::Sender<bool>,
    workers: Option<Workers>,
    control: Control,
}

impl ProxyHandle {
    fn new(
        prepared: Prepared,
        shutdown: watch::Sender<bool>,
        workers: Workers,
        control: Control,
    ) -> Result<Self, StartError> {
        let addresses: Vec<(String, SocketAddr)> = prepared
            .bound
            .iter()
            .map(|b| (b.name.to_string(), b.address))
            .collect();
        let ready = Arc::new(AtomicBool::new(true));
        let listeners = prepared
            .bound
            .iter()
            .map(|b| admin::ListenerInfo {
                name: b.name.clone(),
                address: b.address,
                tls: b.tls.is_some(),
            })
            .collect();
        let view = Arc::new(admin::View::new(
            prepared.generations.clone(),
            prepared.stats.clone(),
            listeners,
            ready.clone(),
        ));
        let (drained, drained_rx) = watch::channel(false);
        observer::spawn(&control.runtime, view.clone(), drained_rx.clone());
        let admin = match prepared.admin {
            Some(socket) => Some(admin::serve(socket, view, &control.runtime, drained_rx)?),
            None => None,
        };
        Ok(Self {
            addresses,
            generations: prepared.generations,
            stats: prepared.stats,
            ready,
            admin,
            shutdown,
            drained,
            workers: Some(workers),
            control,
        })
    }

    /// The admin API's bound address (useful with port 0), when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

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

    /// The number of the generation new calls use (1 at start, +1 per swap).
    pub fn generation(&self) -> u64 {
        self.generations.load().number
    }

    /// Makes `config` the one new calls follow, and returns its generation number.
    ///
    /// Calls in flight finish on the generation they started with. Clusters that did not
    /// change keep their balancer, endpoint state (health, counters, latency) and pooled
    /// connections; clusters whose endpoints changed keep the state of the endpoints that
    /// stay (see `state.rs`). The listener set must stay the same (same names): sockets
    /// are bound once, and each listener's socket-level settings (address, limits, TLS)
    /// are those it started with. On error nothing changes.
    pub fn swap_config(&self, config: &Config) -> Result<u64, StartError> {
        let current = self.generations.load_full();
        let bound: Vec<&str> = self.addresses.iter().map(|(n, _)| n.as_str()).collect();
        let wanted: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
        let built = if bound == wanted {
            Generation::build(config, Some(&current), &self.control.runtime, &self.stats)
        } else {
            Err(StartError::ListenersChanged(format!(
                "the listeners would change from {bound:?} to {wanted:?}; adding, removing or renaming listeners needs a restart"
            )))
        };
        let next = match built {
            Ok(next) => next,
            Err(error) => {
                self.stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                return Err(error);
            }
        };
        let number = next.number;
        self.generations.store(Arc::new(next));
        self.stats.reloads_ok.fetch_add(1, Ordering::Relaxed);
        tracing::info!(generation = number, "new configuration generation in use");
        Ok(number)
    }

    /// Reopens the access-log file (SIGUSR1 after a rotation moved it away).
    pub fn reopen_access_log(&self) {
        self.generations.load().access_log.reopen();
    }

    /// Stops accepting, closes every client connection gracefully, lets calls in flight
    /// finish (up to `server.drain_timeout`), then stops the workers.
    pub async fn shutdown(mut self) {
        self.ready.store(false, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        match self.workers.take() {
            Some(Workers::Threads(threads)) => {
                let _ = tokio::task::spawn_blocking(move || {
                    for thread in threads {
                        let _ = thread.join();
                    }
                })
                .await;
            }
            Some(Workers::Task(task)) => {
                let _ = task.await;
            }
            None => {}
        }
        let _ = self.drained.send(true);
        let mut control = std::mem::replace(&mut self.control, Control::detached());
        let _ = tokio::task::spawn_blocking(move || control.stop()).await;
    }

    /// [`ProxyHandle::shutdown`] for callers outside a runtime. A proxy started with
    /// [`Proxy::start_local`] is only told to stop: its task ends on its runtime.
    pub fn shutdown_blocking(mut self) {
        self.ready.store(false, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        if let Some(Workers::Threads(threads)) = self.workers.take() {
            for thread in threads {
                let _ = thread.join();
            }
        }
        let _ = self.drained.send(true);
        self.control.stop();
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        let _ = self.drained.send(true);
        if let Some((_, stop)) = self.control.thread.take() {
            let _ = stop.send(());
        }
    }
}

/// A bound listener and what its connections share.
struct BoundListener {
    name: Arc<str>,
    address: SocketAddr,
    socket: std::net::TcpListener,
    limit: Arc<Semaphore>,
    /// `max_connections`, for the log line when it is reached.
    max_connections: usize,
    /// Connections accepted, open and refused.
    stats: Arc<ListenerStats>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    idle_timeout: Duration,
    /// The TLS acceptor and handshake deadline of a TLS listener.
    tls: Option<(TlsAcceptor, Duration)>,
}

/// Counts a client connection as open until dropped.
struct OpenConnection(Arc<ListenerStats>);

impl OpenConnection {
    fn new(stats: Arc<ListenerStats>) -> Self {
        stats.active.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
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
    generations: Arc<Generations>,
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
                tracing::error!(listener = &*listener.name, %error, "worker cannot use the listener");
                continue;
            }
        };
        accept_loops.push(tokio::spawn(accept_loop(
            socket,
            index,
            bound.clone(),
            generations.clone(),
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
    generations: Arc<Generations>,
    upstreams: Arc<Upstreams>,
    connections: TaskTracker,
    shutdown: watch::Receiver<bool>,
) {
    let listener = &bound[index];
    loop {
        let (stream, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: say so, give the system a moment.
                if let Some(failed) = listener.stats.trouble_log.event() {
                    tracing::warn!(listener = &*listener.name, %error, failed, "accept failed ({failed} since the last report)");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // At max_connections a new client is refused at once (its connection closed), not
        // left waiting in the accept queue until its deadline: it can try another proxy.
        let Ok(permit) = listener.limit.clone().try_acquire_owned() else {
            listener.stats.refused_at_limit(listener.max_connections);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        listener.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let open = OpenConnection::new(listener.stats.clone());
        let new_ctx = {
            let generations = generations.clone();
            let upstreams = upstreams.clone();
            let name = listener.name.clone();
            move |client_identity| {
                Arc::new(ConnCtx::new(
                    generations,
                    name,
                    peer,
                    upstreams,
                    client_identity,
                ))
            }
        };
        let builder = listener.builder.clone();
        let idle_timeout = listener.idle_timeout;
        let shutdown = shutdown.clone();
        let tls = listener.tls.clone();
        let stats = listener.stats.clone();
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
                        Ok(Err(error)) => stats.tls_failed(peer, &error.to_string()),
                        Err(_) => stats.tls_failed(
                            peer,
                            &format!("not completed within handshake_timeout ({deadline:?})"),
                        ),
                    }
                }
            }
            drop(permit);
            drop(open);
        });
    }
}
