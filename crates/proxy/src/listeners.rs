//! The bound listeners: one socket per `[[listeners]]`, with what its connections share
//! (the `max_connections` semaphore, the hyper builder, the TLS acceptor), as a set that a
//! reload replaces.
//!
//! [`bind_set`] makes the set for a configuration from the one before: a listener whose
//! settings did not change is the *same* `Arc` (its connections go on untouched); one that
//! changed at the same address gets a new [`BoundListener`] on the same socket (no moment
//! where the port is closed), and the old one is retired: its connections get a graceful
//! GOAWAY and reconnect to the new one; a new address is bound afresh; a listener that is
//! gone is retired. Binding happens before anything is committed, so a reload whose new
//! address cannot be bound changes nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use rpcgate_config::{Config, Listener};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::error::StartError;
use crate::stats::{ListenerStats, Stats};
use crate::{server, tls};

/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 1024;

/// The listeners in use, in config order.
pub(crate) type ListenerSet = Vec<Arc<BoundListener>>;

/// A bound listener and what its connections share.
pub(crate) struct BoundListener {
    pub(crate) name: Arc<str>,
    pub(crate) address: SocketAddr,
    /// The listening socket; taken (closed) when the listener is retired, so that after a
    /// removal or at shutdown new clients are refused at once rather than queued while
    /// the old connections drain (workers accept on clones of it).
    socket: std::sync::Mutex<Option<std::net::TcpListener>>,
    pub(crate) limit: Arc<Semaphore>,
    /// `max_connections`, for the log line when it is reached.
    pub(crate) max_connections: usize,
    /// Connections accepted, open and refused.
    pub(crate) stats: Arc<ListenerStats>,
    pub(crate) builder: Arc<auto::Builder<TokioExecutor>>,
    /// `idle_timeout` and `max_connection_age`.
    pub(crate) lifetime: server::Lifetime,
    /// The TLS acceptor and handshake deadline of a TLS listener.
    pub(crate) tls: Option<(TlsAcceptor, Duration)>,
    /// Turns true when this listener is retired (a reload replaced or removed it, or the
    /// proxy stops): its connections close gracefully.
    pub(crate) retire: watch::Sender<bool>,
    /// Its settings (routes left out: they live in the generation); `settings.access` is
    /// the `allow` / `deny` list checked once per connection.
    pub(crate) settings: Listener,
}

impl std::fmt::Debug for BoundListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundListener")
            .field("name", &self.name)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl BoundListener {
    fn new(
        listener: &Listener,
        socket: std::net::TcpListener,
        stats: &Stats,
    ) -> Result<Self, StartError> {
        let address = socket.local_addr().map_err(|source| StartError::Bind {
            name: listener.name.clone(),
            address: listener.address,
            source,
        })?;
        Ok(Self {
            name: listener.name.as_str().into(),
            address,
            socket: std::sync::Mutex::new(Some(socket)),
            limit: Arc::new(Semaphore::new(listener.max_connections.max(1))),
            max_connections: listener.max_connections.max(1),
            stats: stats.listener(&listener.name),
            builder: Arc::new(server::builder(listener)),
            lifetime: server::Lifetime {
                idle_timeout: listener.idle_timeout,
                max_age: listener.max_connection_age,
                send_timeout: listener.send_timeout,
            },
            tls: match &listener.tls {
                Some(tls) => Some((
                    TlsAcceptor::from(tls::server_config(tls).map_err(|e| {
                        StartError::Tls(format!("listener {}: {e}", listener.name))
                    })?),
                    tls.handshake_timeout,
                )),
                None => None,
            },
            retire: watch::Sender::new(false),
            settings: settings(listener),
        })
    }

    /// Closes its socket (a replacement at the same address has its own clone) and its
    /// connections gracefully (GOAWAY, calls in flight finish).
    pub(crate) fn retire(&self) {
        self.socket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        self.retire.send_replace(true);
    }

    /// A clone of the listening socket, for a worker's accept loop or a replacement.
    pub(crate) fn clone_socket(&self) -> std::io::Result<std::net::TcpListener> {
        match &*self
            .socket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Some(socket) => socket.try_clone(),
            None => Err(std::io::Error::other("the listener was retired")),
        }
    }
}

/// A listener's settings without its routes.
fn settings(listener: &Listener) -> Listener {
    Listener {
        routes: Vec::new(),
        ..listener.clone()
    }
}

/// The listener set for `config`, reusing what `previous` has (see the module docs).
/// Nothing of `previous` is touched: retiring what the new set left out is
/// [`retire_replaced`]'s, once the new set is in use.
pub(crate) fn bind_set(
    config: &Config,
    previous: &[Arc<BoundListener>],
    stats: &Stats,
) -> Result<ListenerSet, StartError> {
    config
        .listeners
        .iter()
        .map(|listener| {
            let wanted = settings(listener);
            // The settings include the name, so an unchanged listener is found as itself.
            if let Some(same) = previous.iter().find(|p| p.settings == wanted) {
                return Ok(same.clone());
            }
            // The same address keeps its socket; with port 0 ("any port") that is the
            // socket of the listener of the same name.
            let socket = match previous.iter().find(|p| {
                p.settings.address == listener.address
                    && (listener.address.port() != 0 || *p.name == listener.name)
            }) {
                Some(at_address) => at_address.clone_socket(),
                None => bind(listener.address),
            }
            .map_err(|source| StartError::Bind {
                name: listener.name.clone(),
                address: listener.address,
                source,
            })?;
            Ok(Arc::new(BoundListener::new(listener, socket, stats)?))
        })
        .collect()
}

/// Retires the listeners of `old` that `new` does not have.
pub(crate) fn retire_replaced(old: &[Arc<BoundListener>], new: &[Arc<BoundListener>]) {
    for listener in old {
        if !new.iter().any(|n| Arc::ptr_eq(n, listener)) {
            tracing::info!(listener = &*listener.name, address = %listener.address, "listener replaced or removed; its connections close gracefully");
            listener.retire();
        }
    }
}

/// Binds a listening socket (`SO_REUSEADDR`, non-blocking, backlog [`BACKLOG`]).
pub(crate) fn bind(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
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
