//! `discovery = { dns = "name:port", refresh = "5s", resolver = "IP:PORT" }`: every A and
//! AAAA address of the name is an endpoint on the port.
//!
//! The name is resolved at start, then every `refresh`, and sooner — at most once a
//! [`MIN_GAP`] — when the proxy saw a connect fail ([`crate::Watch::nudge`]): a backend
//! that went away is usually gone from DNS too, and one that replaced it is in. The
//! resolver's cache is cleared before each lookup, so `refresh` (not the records' TTL)
//! decides how fresh the set is. An empty or failed answer keeps the last good set and is
//! logged at warn (once per distinct error), as gRPC's DNS resolver does not: it empties
//! the set on an NXDOMAIN and misses scale-ups between TTLs (grpc#12295).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{Resolver, TokioResolver};
use rpcgate_balance::EndpointSpec;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{Apply, Report};

/// The shortest time between two lookups when nudged.
pub const MIN_GAP: Duration = Duration::from_secs(1);

/// What to resolve, and how.
#[derive(Debug, Clone)]
pub(crate) struct DnsSource {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) refresh: Duration,
    pub(crate) resolver: Option<SocketAddr>,
}

/// Follows the name until the task is aborted.
pub(crate) async fn follow(
    source: DnsSource,
    cluster: Arc<str>,
    apply: Apply,
    nudge: Arc<Notify>,
    report: Report,
) {
    let resolver = match resolver(source.resolver) {
        Ok(resolver) => resolver,
        Err(error) => {
            tracing::error!(cluster = &*cluster, %error, "cannot set up DNS resolution (no usable /etc/resolv.conf?): the cluster stays empty; set discovery.resolver");
            report.set(format!("DNS resolution cannot be set up: {error}"));
            return;
        }
    };
    let mut last: Option<Vec<EndpointSpec>> = None;
    let mut last_error: Option<String> = None;
    loop {
        let looked = Instant::now();
        resolver.clear_cache();
        match lookup(&resolver, &source).await {
            Ok(endpoints) => {
                last_error = None;
                report.clear();
                if last.as_ref() != Some(&endpoints) {
                    tracing::info!(
                        cluster = &*cluster,
                        name = source.host.as_str(),
                        endpoints = endpoints.len(),
                        "DNS answer changed: the cluster follows it"
                    );
                    apply(endpoints.clone());
                    last = Some(endpoints);
                }
            }
            Err(error) => {
                report.set(format!("DNS lookup of {} failed: {error}", source.host));
                if last_error.as_ref() != Some(&error) {
                    let kept = last.as_ref().map_or(0, Vec::len);
                    tracing::warn!(
                        cluster = &*cluster,
                        name = source.host.as_str(),
                        kept,
                        "DNS resolution failed, the last good set ({kept} endpoints) stays: {error}"
                    );
                    last_error = Some(error);
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(source.refresh) => {}
            () = nudge.notified() => {
                tokio::time::sleep_until(looked + MIN_GAP).await;
            }
        }
    }
}

/// The endpoints the name has now, sorted; an empty answer is an error.
async fn lookup(resolver: &TokioResolver, source: &DnsSource) -> Result<Vec<EndpointSpec>, String> {
    let answer = resolver
        .lookup_ip(source.host.as_str())
        .await
        .map_err(|e| e.to_string())?;
    let mut addresses: Vec<String> = answer
        .iter()
        .map(|ip| SocketAddr::new(ip, source.port).to_string())
        .collect();
    addresses.sort();
    addresses.dedup();
    if addresses.is_empty() {
        return Err(format!("no A or AAAA record for {}", source.host));
    }
    Ok(addresses.into_iter().map(EndpointSpec::new).collect())
}

/// The system's resolver, or one asking only `server`.
fn resolver(server: Option<SocketAddr>) -> Result<TokioResolver, String> {
    let provider = TokioConnectionProvider::default();
    match server {
        Some(server) => {
            let servers =
                NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
            let config = ResolverConfig::from_parts(None, Vec::new(), servers);
            Ok(Resolver::builder_with_config(config, provider).build())
        }
        None => Resolver::builder(provider)
            .map(|b| b.build())
            .map_err(|e| e.to_string()),
    }
}
