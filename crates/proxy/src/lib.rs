//! rpcgate's request path: from an accepted socket to a backend and back.
//!
//! Start a proxy with [`Proxy::start`] (worker threads of its own) or
//! [`Proxy::start_local`] (one worker on the caller's runtime, for tests on a paused
//! clock) on a validated [`rpcgate_config::Config`]; the returned [`ProxyHandle`] tells the
//! bound addresses, swaps in a new configuration ([`ProxyHandle::swap_config`]) and shuts
//! the proxy down with a drain.
//!
//! The stages, one module each, in the order a call meets them (`docs/request-path.md`
//! has the chart):
//!
//! 1. `listen`: binds the listeners; `server.workers` threads each run their own
//!    single-threaded event loop and accept from every listener, so a call and its
//!    upstream connection live on one thread. TLS listeners run the rustls handshake
//!    there, under a total deadline, with the configurations [`tls`] builds.
//! 2. `server`: serves a connection with hyper (HTTP/2 and HTTP/1.1 on one port), with
//!    the first-request and idle timeouts; `conn` is the connection's context.
//! 3. `call`: the call sequence, one line per stage, on the current generation
//!    (`state`): route → deadline → headers → attempts → response.
//! 4. [`route`]: the first matching route names the cluster.
//! 5. [`deadline`]: the smaller of `grpc-timeout` and the route's `timeout`.
//! 6. `headers`: pure header rewriting and the upstream request heads.
//! 7. `attempt`: one attempt loop for every upstream protocol: the balancer
//!    (`rpcgate_balance`) picks, the attempt runs on a pooled connection ([`upstream`]),
//!    transparent retry while the body is held for replay (`request_body`).
//! 8. `response` and `response_body`: the backend's answer streamed to the client.
//! 9. [`verdict`]: every way an attempt or a call ends, classified once (fault, whether
//!    processed, gRPC code, passive health); `call_end` hands it to passive health and
//!    the [`access_log`]; [`status`] is the only writer of the proxy's own responses.

pub mod access_log;
mod admin;
mod admission;
mod attempt;
pub mod body;
mod call;
mod call_end;
mod client_message;
mod compression;
mod conn;
pub mod deadline;
mod error;
pub mod grpc_framing;
mod headers;
mod health_check;
mod hold;
mod listen;
mod listeners;
mod observer;
mod rate_limit;
mod reload;
mod request_body;
mod response;
mod response_body;
mod retry;
pub mod route;
mod send_stall;
mod server;
mod state;
mod stats;
pub mod status;
pub mod tls;
pub mod upstream;
mod upstream_log;
pub mod verdict;

pub use error::StartError;
pub use headers::is_grpc;
pub use listen::{Proxy, ProxyHandle};
pub use reload::ReloadError;
pub use request_body::REPLAY_LIMIT;
