//! Why a proxy could not start, or a new configuration could not be swapped in.
//!
//! Its own module so that the generation builder (`state`) and the listeners (`listen`)
//! can both return it without importing each other.

use std::net::SocketAddr;

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
    /// The admin API's address could not be bound.
    #[error("admin API (admin.address): cannot bind {address}: {source}")]
    AdminBind {
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
    /// The configuration contradicts itself (a validated one never does).
    #[error("configuration inconsistent: {0}")]
    Inconsistent(String),
    /// A new configuration adds or removes listeners, which a swap cannot do: sockets
    /// are bound once, at start.
    #[error("{0}")]
    ListenersChanged(String),
}
