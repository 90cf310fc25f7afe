//! The ADS service: one task per stream, answering requests with [`AdsStream`] and pushing
//! whenever the published [`Resources`] change. A stream ends when the client ends it, or
//! when the server drains (the shutdown signal): clients then reconnect to another rpcgate.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::ads::AdsStream;
use crate::resources::Resources;

/// The tonic server to mount beside other gRPC services.
pub type AdsServer = AggregatedDiscoveryServiceServer<AdsService>;

/// Counters the admin API's metrics read.
#[derive(Debug, Default)]
pub struct AdsStats {
    /// Streams open now.
    pub streams: AtomicU64,
    /// NACKs received, since start.
    pub nacks: AtomicU64,
    /// Responses sent, since start.
    pub responses: AtomicU64,
}

/// The service: shares the published resources, the shutdown signal and the counters.
#[derive(Debug, Clone)]
pub struct AdsService {
    resources: watch::Receiver<Arc<Resources>>,
    shutdown: watch::Receiver<bool>,
    stats: Arc<AdsStats>,
}

impl AdsService {
    /// A service serving what `resources` holds, ending its streams when `shutdown` turns
    /// true.
    pub fn new(
        resources: watch::Receiver<Arc<Resources>>,
        shutdown: watch::Receiver<bool>,
        stats: Arc<AdsStats>,
    ) -> Self {
        Self {
            resources,
            shutdown,
            stats,
        }
    }

    /// The tonic server of this service.
    pub fn into_server(self) -> AdsServer {
        AggregatedDiscoveryServiceServer::new(self)
    }
}

/// The stream of responses of one ADS stream.
type Responses<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Says once per stream and name that a client asked for a Listener or Cluster rpcgate
/// does not have (a typo in `xds:///NAME`, or a cluster that is not h2c), naming what
/// there is; the client itself only times out.
fn warn_unknown(
    node: &str,
    request: &DiscoveryRequest,
    resources: &Resources,
    warned: &mut std::collections::BTreeSet<String>,
) {
    use crate::resources::type_url;
    if request.type_url != type_url::LISTENER && request.type_url != type_url::CLUSTER {
        return;
    }
    let Some(known) = resources.of(&request.type_url) else {
        return;
    };
    for name in &request.resource_names {
        if !known.contains_key(name) && warned.insert(format!("{}/{name}", request.type_url)) {
            let names: Vec<&str> = known.keys().map(String::as_str).collect();
            tracing::warn!(
                node,
                type_url = request.type_url.as_str(),
                "xDS client asked for {name:?}, which rpcgate does not serve (a listener or an h2c cluster of that name): it has {}",
                names.join(", ")
            );
        }
    }
}

/// Counts a stream as open while it lives.
struct Open(Arc<AdsStats>);

impl Open {
    fn new(stats: Arc<AdsStats>) -> Self {
        stats.streams.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = Responses<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Responses<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        if *self.shutdown.borrow() {
            return Err(Status::unavailable(
                "rpcgate is draining: connect to another rpcgate",
            ));
        }
        let peer = request.remote_addr();
        let mut inbound = request.into_inner();
        let mut resources = self.resources.clone();
        let mut shutdown = self.shutdown.clone();
        let stats = self.stats.clone();
        let (tx, rx) = mpsc::channel::<Result<DiscoveryResponse, Status>>(16);
        tokio::spawn(async move {
            let _open = Open::new(stats.clone());
            let mut stream = AdsStream::new();
            let mut node = String::new();
            let mut warned = std::collections::BTreeSet::new();
            loop {
                let responses = tokio::select! {
                    message = inbound.message() => match message {
                        Ok(Some(request)) => {
                            if node.is_empty() && let Some(n) = &request.node {
                                node = n.id.clone();
                                let peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
                                tracing::info!(node = node.as_str(), peer = peer.as_str(), "xDS client connected");
                            }
                            let current = resources.borrow_and_update().clone();
                            warn_unknown(&node, &request, &current, &mut warned);
                            let outcome = stream.on_request(&request, &current);
                            if let Some(nack) = outcome.nack {
                                stats.nacks.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(
                                    node = node.as_str(),
                                    type_url = nack.type_url.as_str(),
                                    version = nack.version.as_str(),
                                    "xDS client refused (NACK) the resources, keeping its last good version: {}",
                                    nack.message
                                );
                            }
                            outcome.response.into_iter().collect::<Vec<_>>()
                        }
                        Ok(None) | Err(_) => return,
                    },
                    changed = resources.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let current = resources.borrow_and_update().clone();
                        stream.on_change(&current)
                    }
                    _ = shutdown.changed() => {
                        tracing::debug!(node = node.as_str(), "xDS stream closed: draining");
                        return;
                    }
                };
                for response in responses {
                    stats.responses.fetch_add(1, Ordering::Relaxed);
                    if tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let responses = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "rpcgate serves state-of-the-world ADS (StreamAggregatedResources), not delta",
        ))
    }
}
