//! Once a second, on the control runtime: log endpoints coming back from a passive-health
//! ejection (the balancer sees an ejection end lazily and does no I/O, so someone has to
//! look), drop the rate limits' idle per-client buckets ([`crate::rate_limit`]), and take
//! the admin API's history sample when an admin API runs.
//!
//! Ejections themselves are logged where they happen ([`crate::verdict`]); active health
//! and breaker changes by the prober and [`crate::stats::ClusterStats`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::admin::View;

/// How often the observer looks.
pub(crate) const TICK: Duration = Duration::from_secs(1);

/// Starts the observer on `runtime` until `shutdown`.
pub(crate) fn spawn(runtime: &Handle, view: Arc<View>, mut shutdown: watch::Receiver<bool>) {
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        // Endpoint id → ejections seen so far while ejected (absent: in rotation).
        let mut ejected: HashMap<u64, u64> = HashMap::new();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            look(&view, &mut ejected);
            sweep_rate_limits(&view);
            if view.stats.per_call {
                view.history.record(&view);
            }
        }
    });
}

/// Drops the idle buckets of every rate limit of the current generation.
fn sweep_rate_limits(view: &View) {
    let generation = view.generations.load();
    for listener in generation.listeners() {
        let routes = listener.routes.iter().filter_map(|r| r.rate_limit.as_ref());
        for limit in listener.rate_limit.iter().chain(routes) {
            limit.sweep();
        }
    }
}

/// Logs each endpoint whose ejection ended since the last look.
fn look(view: &View, ejected: &mut HashMap<u64, u64>) {
    let generation = view.generations.load();
    let mut still = HashMap::new();
    for cluster in generation.clusters() {
        for endpoint in cluster.balancer.endpoints().iter() {
            let id = endpoint.id();
            if endpoint.passive_ejected() {
                still.insert(id, endpoint.ejections());
            } else if ejected.contains_key(&id) {
                tracing::warn!(
                    cluster = &*cluster.name,
                    endpoint = endpoint.address(),
                    ejections = endpoint.ejections(),
                    failures = endpoint.failures(),
                    "passive health: endpoint back in rotation after its ejection ({} ejection(s) so far)",
                    endpoint.ejections()
                );
            }
        }
    }
    *ejected = still;
}
