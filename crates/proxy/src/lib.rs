//! rpcgate's request path: from an accepted socket to a backend and back.
//!
//! Start a proxy with [`Proxy::start`] on a validated [`rpcgate_config::Config`]; the
//! returned [`ProxyHandle`] tells the bound addresses and shuts it down with a drain.
//!
//! The stages, one module each, in the order a call meets them:
//!
//! 1. [`listen`](crate::listen): binds the listeners; `server.workers` threads each run
//!    their own single-threaded event loop and accept from every listener, so a call and
//!    its upstream connection live on one thread (no cross-thread hops on the hot path).
//! 2. [`tls`]: the rustls handshake under a total deadline (TLS listeners).
//! 3. [`server`]: serves a connection with hyper (HTTP/2 and HTTP/1.1 on one port).
//! 4. [`route`]: the first matching route names the cluster.
//! 5. `rpcgate_balance`: the cluster's picker chooses an endpoint per call.
//! 6. [`forward`]: deadline, attempts and transparent retry, streaming both ways.
//! 7. [`upstream`]: pooled, multiplexed HTTP/2 connections per endpoint and worker.
//! 8. [`status`]: the only place an error becomes a gRPC status or HTTP response.
//! 9. [`access_log`]: one line per call.

pub mod access_log;
pub mod body;
pub mod deadline;
pub mod forward;
mod listen;
pub mod route;
pub mod server;
pub mod status;
pub mod tls;
pub mod upstream;

pub use listen::{Proxy, ProxyHandle, StartError};
