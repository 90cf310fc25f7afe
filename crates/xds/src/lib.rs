//! rpcgate's xDS server (contract §9): Envoy's Aggregated Discovery Service, state of the
//! world, so proxyless gRPC clients (`xds:///NAME`) balance each call themselves on
//! rpcgate's view of the backends.
//!
//! - [`resources`] turns a [`Snapshot`] (the configuration and each cluster's endpoints
//!   with their health) into Listener, Cluster and ClusterLoadAssignment resources.
//! - [`ads`] is the protocol state machine of one stream (subscriptions, versions,
//!   nonces, ACK/NACK), with no I/O, so it is tested alone.
//! - [`server`] is the tonic service: one task per stream, pushing whenever the snapshot
//!   changes.

pub mod ads;
pub mod resources;
pub mod server;

pub use resources::{EndpointView, Resources, Snapshot};
pub use server::{AdsServer, AdsService, AdsStats};
