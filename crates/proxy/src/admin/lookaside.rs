//! The look-aside API's server (`rpcgate.lookaside.v1.Lookaside/Watch`, contract §8): a
//! stream of a cluster's endpoints with their weights and health, for thick clients that
//! balance themselves on rpcgate's view.
//!
//! Each stream looks at the live generation every [`LOOK_EVERY`] and sends a message when
//! what it would send differs from the last one — membership (discovery, reloads), a
//! weight, or health (a passive ejection starting or ending, an active check flipping).
//! Looking rather than being told is deliberate: an ejection ends by time passing, with no
//! event to hang a notification on, and a look costs a few atomic loads per endpoint.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use rpcgate_balance::Endpoint;
pub(crate) use rpcgate_discovery::lookaside::pb;
use tonic::{Request, Response, Status};

use crate::state::Generations;

/// How often a stream looks for a change.
pub(crate) const LOOK_EVERY: Duration = Duration::from_millis(100);

/// The service; one per admin server.
#[derive(Debug, Clone)]
pub(crate) struct Lookaside {
    pub(crate) generations: Arc<Generations>,
}

/// Whether the proxy sends calls to `endpoint` now (what `/status` calls `healthy`).
pub(crate) fn healthy(endpoint: &Endpoint) -> bool {
    endpoint.ejection_remaining().is_none() && endpoint.active_healthy()
}

impl Lookaside {
    /// The cluster's endpoints now; `None` when the live configuration has no such cluster.
    fn snapshot(&self, cluster: &str) -> Option<Vec<pb::Endpoint>> {
        let generation = self.generations.load();
        let state = generation.cluster(cluster)?;
        Some(
            state
                .balancer
                .endpoints()
                .iter()
                .map(|e| pb::Endpoint {
                    address: e.address().to_owned(),
                    weight: e.weight(),
                    healthy: healthy(e),
                })
                .collect(),
        )
    }

    /// NOT_FOUND naming the clusters there are.
    fn not_found(&self, cluster: &str) -> Status {
        let generation = self.generations.load();
        let names: Vec<&str> = generation.clusters().iter().map(|c| &*c.name).collect();
        Status::not_found(format!(
            "no cluster named {cluster:?}; the configuration has: {}",
            names.join(", ")
        ))
    }
}

/// The stream type of `Watch`.
type SetStream = Pin<Box<dyn Stream<Item = Result<pb::EndpointSet, Status>> + Send>>;

#[tonic::async_trait]
impl pb::lookaside_server::Lookaside for Lookaside {
    type WatchStream = SetStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let cluster = request.into_inner().cluster;
        if self.snapshot(&cluster).is_none() {
            return Err(self.not_found(&cluster));
        }
        tracing::debug!(cluster = cluster.as_str(), "look-aside watch started");
        let state = (
            self.clone(),
            cluster,
            None::<Vec<pb::Endpoint>>,
            0u64,
            false,
        );
        let stream = futures_util::stream::unfold(
            state,
            |(service, cluster, last, version, ended)| async move {
                if ended {
                    return None;
                }
                let mut first = last.is_none();
                loop {
                    if !first {
                        tokio::time::sleep(LOOK_EVERY).await;
                    }
                    first = false;
                    let Some(now) = service.snapshot(&cluster) else {
                        let status = service.not_found(&cluster);
                        return Some((Err(status), (service, cluster, last, version, true)));
                    };
                    if last.as_ref() != Some(&now) {
                        let set = pb::EndpointSet {
                            cluster: cluster.clone(),
                            version: version + 1,
                            endpoints: now.clone(),
                        };
                        return Some((Ok(set), (service, cluster, Some(now), version + 1, false)));
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}
