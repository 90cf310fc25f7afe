//! Client-side load balancing for Rust gRPC services, with rpcgate's own policies.
//!
//! A [`Client`] is a [`tower::Service`](tonic::codegen::Service) that a tonic generated
//! client takes as its channel (`GreeterClient::new(client)`). Each call picks an endpoint
//! with the same pickers as the proxy (`round_robin`, `least_request`, `p2c_ewma`,
//! `random`, `ring_hash` on a header), the same passive health (NGINX's `max_fails` /
//! `fail_timeout`), slow start, circuit breaker and route `retry` policy — built from the
//! same TOML `[[clusters]]` table (and route `retry` table) as rpcgate's file, with the same
//! checks and `file:line:col` messages ([`ClientBuilder::from_toml`]). No extra hop: the
//! client connects to the backends itself, one HTTP/2 connection per endpoint.
//!
//! The endpoints come from the cluster's `endpoints`, or its `discovery` (DNS, a watched
//! file, etcd), or an rpcgate's look-aside API ([`ClientBuilder::lookaside`]) for
//! rpcgate's view of health. Membership changes keep the state of the endpoints that stay.
//!
//! A call that never reached a backend (the connection could not be made or was gone
//! before the request was sent) is retried on another endpoint at once, as gRPC's
//! transparent retry does; the route's `retry` policy retries further statuses within
//! its budget. A backend's own registration in etcd is [`Registration`].
//!
//! # Example
//!
//! ```
//! use rpcgate_client::ClientBuilder;
//! use rpcgate_demo::pb::helloworld::{HelloRequest, greeter_client::GreeterClient};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Two demo backends stand in for a service's servers.
//! let b1 = rpcgate_demo::spawn_backend("b1").await?;
//! let b2 = rpcgate_demo::spawn_backend("b2").await?;
//! let toml = format!(
//!     r#"
//!     [[clusters]]
//!     name = "greeter"
//!     lb = "p2c_ewma"
//!     endpoints = ["{}", "{}"]
//!     passive_health = {{ max_fails = 1, fail_timeout = "10s" }}
//!     "#,
//!     b1.addr(),
//!     b2.addr()
//! );
//! let client = ClientBuilder::from_toml(&toml, "client.toml", "greeter")?.build()?;
//! let mut greeter = GreeterClient::new(client);
//! let reply = greeter
//!     .say_hello(HelloRequest { name: "thick client".into() })
//!     .await?;
//! assert!(reply.into_inner().message.contains("thick client"));
//! # Ok(())
//! # }
//! ```
//!
//! `examples/thick_client.rs` follows an etcd prefix or a look-aside address instead.

mod body;
mod builder;
mod connections;
mod service;

pub use builder::{BuildError, ClientBuilder, Source};
pub use rpcgate_discovery::etcd::registration::{
    Registration, RegistrationSpec, RegistrationState,
};
pub use service::{BoxError, Client, ResponseBody};
