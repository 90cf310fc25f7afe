//! Binding listeners, running worker threads, accepting connections, draining.
//!
//! Each of `server.workers` threads runs a current-thread tokio runtime and accepts from
//! every listener (the kernel hands each connection to one of them). A worker owns its
//! upstream connections, so a call is served start to end on one thread — the layout
//! NGINX and HAProxy use, and the one measured as the cheapest (`docs/request-path.md`,
//! "Threads"). Balancer state (in-flight counts, health) is shared across workers through
//! atomics, and the routing and cluster state is one [`Generation`] behind an `ArcSwap`
//! that [`ProxyHandle::swap_config`] replaces (with the listener set: see
//! [`crate::reload`]). Workers follow the listener set, so a reload can add, remove and
//! re-bind listeners under them.
//!
//! [`Proxy::start_local`] runs one worker on the caller's tokio runtime instead of on
//! threads of its own, so tests can drive the proxy's timers with tokio's paused clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rpcgate_config::Config;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::conn::ConnCtx;
use crate::error::StartError;
use crate::listeners::{self, BoundListener, ListenerSet};
use crate::reload::{Core, ReloadError};
use crate::server;
use crate::state::{Generation, Generations};
use crate::stats::{ListenerStats, Stats};
use crate::upstream::Upstreams;
use crate::{admin, observer, tls};

/// The proxy: entry point of the request path.
#[derive(Debug)]
pub struct Proxy;

impl Proxy {
    /// Binds every listener and starts `server.workers` worker threads. Returns once the
    /// listeners accept connections.
    pub fn start(config: &Config) -> Result<ProxyHandle, StartError> {
        let control = Control::own_thread()?;
        let prepared = prepare(config, &control.runtime)?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut threads = Vec::new();
        let drain_timeout = config.server.drain_timeout;
        for index in 0..config.server.workers.max(1) {
            let generations = prepared.core.generations.clone();
            let listeners = prepared.core.listeners.subscribe();
            let shutdown = shutdown_rx.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(StartError::Worker)?;
            let thread = std::thread::Builder::new()
                .name(format!("rpcgate-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(run_worker(generations, listeners, shutdown, drain_timeout));
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
            prepared.core.generations.clone(),
            prepared.core.listeners.subscribe(),
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

/// What [`prepare`] made: the swappable state (first generation, listeners, counters)
/// and the admin API's socket when `[admin]` asks for one.
struct Prepared {
    core: Arc<Core>,
    admin: Option<std::net::TcpListener>,
}

/// Builds the first generation and binds every listener (and the admin API's socket).
fn prepare(config: &Config, runtime: &Handle) -> Result<Prepared, StartError> {
    let stats = Arc::new(Stats::new(config.admin.is_some()));
    let generation = Generation::build(config, None, runtime, &stats)?;
    let admin = match &config.admin {
        Some(admin) => {
            Some(
                listeners::bind(admin.address).map_err(|source| StartError::AdminBind {
                    address: admin.address,
                    source,
                })?,
            )
        }
        None => None,
    };
    let set = listeners::bind_set(config, &[], &stats)?;
    Ok(Prepared {
        core: Arc::new(Core::new(config, generation, set, stats, runtime.clone())),
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
    core: Arc<Core>,
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
        let ready = Arc::new(AtomicBool::new(true));
        let view = Arc::new(admin::View::new(prepared.core.clone(), ready.clone()));
        let (drained, drained_rx) = watch::channel(false);
        observer::spawn(&control.runtime, view.clone(), drained_rx.clone());
        let admin = match prepared.admin {
            Some(socket) => Some(admin::serve(
                socket,
                view,
                &control.runtime,
                drained_rx,
                shutdown.subscribe(),
            )?),
            None => None,
        };
        Ok(Self {
            core: prepared.core,
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
        self.core
            .listeners
            .borrow()
            .iter()
            .find(|l| &*l.name == name)
            .map(|l| l.address)
    }

    /// Every listener's name and bound address, in config order (as of now: reloads
    /// add, remove and re-bind listeners).
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.core
            .listeners
            .borrow()
            .iter()
            .map(|l| (l.name.to_string(), l.address))
            .collect()
    }

    /// The number of the generation new calls use (1 at start, +1 per swap).
    pub fn generation(&self) -> u64 {
        self.core.generations.load().number
    }

    /// Makes `config` the one new connections and calls follow, and returns its
    /// generation number.
    ///
    /// Calls in flight finish on the generation they started with. Clusters that did not
    /// change keep their balancer, endpoint state (health, counters, latency) and pooled
    /// connections; clusters whose endpoints changed keep the state of the endpoints that
    /// stay (see `state.rs`). Listeners are added, removed or re-bound: one whose settings
    /// did not change keeps its connections; one that changed keeps its socket (when its
    /// address did not change) and its old connections close gracefully (see
    /// `listeners.rs`). On error nothing changes.
    pub fn swap_config(&self, config: &Config) -> Result<u64, StartError> {
        self.core.swap(config)
    }

    /// Re-reads the configuration file the proxy was started from (SIGHUP) and swaps it
    /// in; an invalid file or one that cannot be put in place changes nothing.
    pub fn reload(&self) -> Result<u64, ReloadError> {
        self.core.reload()
    }

    /// Reopens the access-log file (SIGUSR1 after a rotation moved it away).
    pub fn reopen_access_log(&self) {
        self.core.generations.load().access_log.reopen();
    }

    /// Stops accepting, closes every client connection gracefully, lets calls in flight
    /// finish (up to `server.drain_timeout`), then stops the workers.
    pub async fn shutdown(mut self) {
        self.ready.store(false, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        self.core.retire_all();
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
        self.core.retire_all();
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
        self.core.retire_all();
        let _ = self.drained.send(true);
        if let Some((_, stop)) = self.control.thread.take() {
            let _ = stop.send(());
        }
    }
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

/// One worker: accepts on every listener of the current set (starting and stopping
/// accept loops as reloads change the set) until shutdown, then drains its connections.
async fn run_worker(
    generations: Arc<Generations>,
    mut listeners: watch::Receiver<Arc<ListenerSet>>,
    mut shutdown: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let upstreams = Arc::new(Upstreams::default());
    let connections = TaskTracker::new();
    let mut accepting: Vec<(Arc<BoundListener>, JoinHandle<()>)> = Vec::new();
    let accept_on = |listener: &Arc<BoundListener>| -> Option<JoinHandle<()>> {
        match listener.clone_socket().and_then(TcpListener::from_std) {
            Ok(socket) => Some(tokio::spawn(accept_loop(
                socket,
                listener.clone(),
                generations.clone(),
                upstreams.clone(),
                connections.clone(),
            ))),
            Err(error) => {
                tracing::error!(listener = &*listener.name, %error, "worker cannot use the listener");
                None
            }
        }
    };
    loop {
        // Accept on what the set has now; stop on what it no longer has.
        let set = listeners.borrow_and_update().clone();
        accepting.retain(|(listener, task)| {
            let kept = set.iter().any(|l| Arc::ptr_eq(l, listener));
            if !kept {
                task.abort();
            }
            kept
        });
        for listener in set.iter() {
            if !accepting.iter().any(|(l, _)| Arc::ptr_eq(l, listener))
                && let Some(task) = accept_on(listener)
            {
                accepting.push((listener.clone(), task));
            }
        }
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            changed = listeners.changed() => if changed.is_err() { break },
            changed = shutdown.changed() => if changed.is_err() || *shutdown.borrow() { break },
        }
    }
    for (_, task) in accepting {
        task.abort();
    }
    connections.close();
    if tokio::time::timeout(drain_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = connections.len(),
            "drain timeout passed; the calls still running end with UNAVAILABLE (rpcgate is shutting down)"
        );
        // Cut the upstream connections: the calls on them end with UNAVAILABLE and a
        // message saying why, and their client connections can then close.
        upstreams.cut_all();
        if tokio::time::timeout(CUT_GRACE, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = connections.len(),
                "client connections still open after the calls were cut; closing them"
            );
        }
    }
}

/// After the drain timeout cut the calls still running, how long their client
/// connections may take to send those final statuses and close.
const CUT_GRACE: Duration = Duration::from_secs(1);

async fn accept_loop(
    socket: TcpListener,
    listener: Arc<BoundListener>,
    generations: Arc<Generations>,
    upstreams: Arc<Upstreams>,
    connections: TaskTracker,
) {
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
        let allowed = listener.settings.access.permits(peer.ip());
        if !allowed {
            listener.stats.denied(peer);
        }
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
                    allowed,
                ))
            }
        };
        let listener = listener.clone();
        connections.spawn(async move {
            let builder = listener.builder.clone();
            let lifetime = listener.lifetime;
            let retired = listener.retire.subscribe();
            match &listener.tls {
                None => {
                    let ctx = new_ctx(None);
                    server::serve(stream, ctx, builder, lifetime, retired).await;
                }
                Some((acceptor, deadline)) => {
                    // A total deadline: a client that stalls mid-handshake cannot hold
                    // the connection (and its max_connections slot).
                    match tokio::time::timeout(*deadline, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let identity =
                                tls::client_identity(tls_stream.get_ref().1.peer_certificates());
                            let ctx = new_ctx(identity);
                            server::serve(tls_stream, ctx, builder, lifetime, retired).await;
                        }
                        Ok(Err(error)) => listener.stats.tls_failed(peer, &error.to_string()),
                        Err(_) => listener.stats.tls_failed(
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
