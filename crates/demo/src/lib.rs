//! Demo and test gRPC backends for rpcgate, with the generated clients to call them.
//!
//! rpcgate is a proxy: to show it working (`rpcgate demo`, `rpcgate backend`) and to test
//! it end to end in-process, it needs real gRPC servers behind it that say *which* of
//! them answered and *what* they received. This crate provides them:
//!
//! - [`pb`]: the generated messages, clients and servers of `helloworld.Greeter` (all
//!   four call kinds) and `techschool_pcbook.{AuthService,LaptopService}`.
//! - [`serve_backend`]: one backend on a listener until a shutdown future completes
//!   (what `rpcgate backend` runs). It serves the Greeter, Auth and Laptop services and
//!   `grpc.health.v1.Health`, tags every reply, response header (`x-backend`) and
//!   trailer (`x-backend-trailer`) with its name, and obeys the test behaviours in
//!   [`meta`] (fail, delay, reset, answer plain HTTP, echo what it saw), driven by
//!   request metadata so that a test through the proxy needs no extra control channel.
//!   Messages up to [`MAX_MESSAGE_BYTES`] and gzip are accepted; plain HTTP/1.1 or
//!   HTTP/2 requests that are not gRPC get `200 text/plain`.
//! - [`spawn_backend`]: the same on `127.0.0.1:0` in the current runtime, returning a
//!   [`BackendHandle`] with its address, call counters, the last request seen, health
//!   control, and `kill()` (abrupt) / `shutdown()` (graceful).
//! - TLS: [`BackendOptions::tls`] with a [`TlsServer`] (optionally requiring client
//!   certificates), [`spawn_backend_tls`], and [`pki`], a development CA with server and
//!   client certificates in one call (what `rpcgate certs` writes).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rpcgate_demo::pb::helloworld::{HelloRequest, greeter_client::GreeterClient};
//!
//! let backend = rpcgate_demo::spawn_backend("b1").await?;
//! let mut client = GreeterClient::connect(backend.url()).await?;
//! let reply = client.say_hello(HelloRequest { name: "Ann".into() }).await?;
//! assert_eq!(reply.get_ref().message, "Hello Ann from b1");
//! assert_eq!(reply.metadata().get("x-backend").map(|v| v.to_str().ok()), Some(Some("b1")));
//! assert_eq!(backend.calls(), 1);
//! # Ok(()) }
//! ```

mod backend;
mod call;
pub mod meta;
pub mod pki;
mod services;
mod tls;

pub use backend::{
    BackendHandle, BackendOptions, SeenRequest, serve_backend, serve_backend_incoming,
    spawn_backend, spawn_backend_on, spawn_backend_tls,
};
pub use tls::{HANDSHAKE_TIMEOUT, TlsError, TlsServer, tls_incoming};

/// The largest gRPC message, in bytes, that the backends accept and send (the tonic
/// default is 4 MiB; tests push 8 MiB messages through the proxy). Clients that expect
/// big replies must raise their own decoding limit to this.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Generated protobuf messages, clients and servers (from `proto/*.proto`, compiled at
/// build time with `protox`, so no `protoc` is needed).
pub mod pb {
    /// `helloworld.Greeter`: unary, server-, client- and bidirectional streaming greetings.
    #[allow(missing_docs, clippy::all, clippy::pedantic)] // reason: generated code
    pub mod helloworld {
        tonic::include_proto!("helloworld");
    }

    /// `techschool_pcbook`: `AuthService/Login` and `LaptopService/CreateLaptop`.
    #[allow(missing_docs, clippy::all, clippy::pedantic)] // reason: generated code
    pub mod pcbook {
        tonic::include_proto!("techschool_pcbook");
    }

    /// The encoded `FileDescriptorSet` of both files (with imports and source info), for
    /// reflection or tools that need the schema at run time.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/demo_descriptor.bin"));
}

#[cfg(test)]
mod tests;
