//! xDS on the admin address (contract §9): publishes rpcgate's configuration and live
//! endpoint view as xDS resources, and mounts the ADS service of `rpcgate-xds`.
//!
//! A task on the control runtime looks at the live generation every [`LOOK_EVERY`]: its
//! number (a reload) and each cluster's endpoints with their addresses resolved, weights
//! and health (active checks, passive ejections, an open breaker marks every endpoint of
//! its cluster unhealthy). When any of it changed, the resources are rebuilt and every
//! stream pushes what moved — within a second of the change, as looking is cheap (a few
//! atomic loads per endpoint) and there is no event for an ejection that ends by time.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rpcgate_balance::BreakerState;
use rpcgate_xds::resources::{self, Resources};
use rpcgate_xds::{AdsServer, AdsService, AdsStats, EndpointView, Snapshot};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::state::Generations;

/// How often the view is looked at.
pub(crate) const LOOK_EVERY: Duration = Duration::from_millis(200);
/// How long a resolved host name is reused before it is resolved again.
const RESOLVED_FOR: Duration = Duration::from_secs(30);

/// Starts publishing and returns the ADS server to mount; streams end when `shutdown`
/// turns true (the proxy drains).
pub(crate) fn start(
    generations: Arc<Generations>,
    runtime: &Handle,
    shutdown: watch::Receiver<bool>,
    stats: Arc<AdsStats>,
) -> AdsServer {
    let (published, resources) = watch::channel(Arc::new(Resources::default()));
    runtime.spawn(publish(generations, published));
    AdsService::new(resources, shutdown, stats).into_server()
}

/// Host names resolved, with when.
type Resolved = HashMap<String, (Instant, Option<SocketAddr>)>;

/// `address` as a socket address: parsed, or resolved (and remembered a while).
async fn socket_addr(address: &str, resolved: &mut Resolved) -> Option<SocketAddr> {
    if let Ok(parsed) = address.parse() {
        return Some(parsed);
    }
    if let Some((at, found)) = resolved.get(address)
        && at.elapsed() < RESOLVED_FOR
    {
        return *found;
    }
    let found = tokio::net::lookup_host(address)
        .await
        .ok()
        .and_then(|mut all| all.next());
    if found.is_none() {
        tracing::warn!(
            endpoint = address,
            "xDS: the endpoint's host name does not resolve; proxyless clients do not get it"
        );
    }
    resolved.insert(address.to_owned(), (Instant::now(), found));
    found
}

/// Each cluster's endpoints now, as xDS shows them.
async fn endpoints(
    generations: &Generations,
    resolved: &mut Resolved,
) -> (
    u64,
    Arc<rpcgate_config::Config>,
    BTreeMap<String, Vec<EndpointView>>,
) {
    let generation = generations.load_full();
    let mut out = BTreeMap::new();
    for cluster in generation.clusters() {
        let open = cluster
            .limits
            .breaker
            .as_ref()
            .is_some_and(|b| b.snapshot().state == BreakerState::Open);
        let mut views = Vec::new();
        for e in cluster.balancer.endpoints().iter() {
            if let Some(address) = socket_addr(e.address(), resolved).await {
                views.push(EndpointView {
                    address,
                    weight: e.weight().max(1),
                    healthy: !open && super::lookaside::healthy(e),
                });
            }
        }
        out.insert(cluster.name.to_string(), views);
    }
    (generation.number, generation.config.clone(), out)
}

/// Rebuilds and publishes the resources whenever the view changes, until the server goes.
async fn publish(generations: Arc<Generations>, published: watch::Sender<Arc<Resources>>) {
    let mut resolved = Resolved::new();
    let mut last: Option<(u64, BTreeMap<String, Vec<EndpointView>>)> = None;
    loop {
        let (generation, config, endpoints) = endpoints(&generations, &mut resolved).await;
        let now = Some((generation, endpoints));
        if now != last {
            if let Some((generation, endpoints)) = &now {
                let snapshot = Snapshot {
                    generation: *generation,
                    config,
                    endpoints: endpoints.clone(),
                };
                let built = resources::build(&snapshot);
                tracing::debug!(generation, "xDS resources rebuilt");
                published.send_replace(Arc::new(built));
            }
            last = now;
        }
        if published.is_closed() {
            return;
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}
