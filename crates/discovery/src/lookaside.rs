//! rpcgate's look-aside API (`rpcgate.lookaside.v1.Lookaside/Watch`, contract §8): the
//! generated messages, client and server ([`pb`]), and [`follow`], a source that keeps a
//! cluster's set equal to what an rpcgate's admin address says — for thick clients that
//! want rpcgate's view of health without a proxy hop.

use std::sync::Arc;
use std::time::Duration;

use rpcgate_balance::EndpointSpec;

use crate::etcd::{error_chain, status_text};
use crate::reconnect::Reconnect;
use crate::{Apply, Report};

/// The generated API; the proto is `proto/rpcgate/lookaside/v1/lookaside.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/rpcgate.lookaside.v1.rs"));
}

/// The endpoints a client should balance over: the healthy ones, or every one when none
/// is healthy (better a call to a doubtful endpoint than none, as the proxy does).
pub fn usable(set: &pb::EndpointSet) -> Vec<EndpointSpec> {
    let healthy: Vec<&pb::Endpoint> = set.endpoints.iter().filter(|e| e.healthy).collect();
    let chosen = if healthy.is_empty() {
        set.endpoints.iter().collect()
    } else {
        healthy
    };
    chosen
        .into_iter()
        .map(|e| EndpointSpec::new(e.address.clone()).with_weight(e.weight.max(1)))
        .collect()
}

/// Follows `cluster` on the rpcgate admin address `admin` (`HOST:PORT`) until aborted;
/// while it cannot be reached, the last set stays. NOT_FOUND (no such cluster) is logged
/// and retried, since a reload may add the cluster. `report` says why the set is empty.
pub async fn follow(admin: String, cluster: String, apply: Apply, report: Report) {
    let name: Arc<str> = cluster.as_str().into();
    let mut reconnect = Reconnect::new();
    let mut last: Option<Vec<EndpointSpec>> = None;
    loop {
        let mut answered = false;
        let error = match session(&admin, &cluster, &apply, &report, &mut last, &mut answered).await
        {
            Ok(()) => "rpcgate ended the stream".to_owned(),
            Err(e) => e,
        };
        if last.as_ref().is_none_or(Vec::is_empty) {
            report.set(format!("the look-aside API at {admin}: {error}"));
        }
        if answered {
            reconnect.answered();
        }
        if reconnect.failed(&error) {
            tracing::warn!(
                cluster = &*name,
                admin = admin.as_str(),
                "look-aside watch interrupted, the last set stays while it retries: {error}"
            );
        }
        tokio::time::sleep(reconnect.next_wait()).await;
    }
}

/// One stream's worth of following.
async fn session(
    admin: &str,
    cluster: &str,
    apply: &Apply,
    report: &Report,
    last: &mut Option<Vec<EndpointSpec>>,
    answered: &mut bool,
) -> Result<(), String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{admin}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| format!("cannot reach rpcgate's admin address: {}", error_chain(&e)))?;
    let mut stream = pb::lookaside_client::LookasideClient::new(channel)
        .watch(pb::WatchRequest {
            cluster: cluster.to_owned(),
        })
        .await
        .map_err(|s| status_text(&s))?
        .into_inner();
    while let Some(set) = stream.message().await.map_err(|s| status_text(&s))? {
        *answered = true;
        let endpoints = usable(&set);
        if endpoints.is_empty() {
            report.set(format!(
                "rpcgate at {admin} has no endpoints in cluster {cluster}"
            ));
        } else {
            report.clear();
        }
        if last.as_ref() != Some(&endpoints) {
            tracing::info!(
                cluster,
                endpoints = endpoints.len(),
                version = set.version,
                "look-aside set changed"
            );
            apply(endpoints.clone());
            *last = Some(endpoints);
        }
    }
    Ok(())
}
