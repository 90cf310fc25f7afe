//! Endpoint discovery: sources that keep a cluster's endpoint set current without a
//! reload, for the proxy and (later) the `rpcgate-client` library.
//!
//! A source runs as one task on a runtime the caller gives, and hands every new set to an
//! [`Apply`] callback — the proxy's is `Balancer::set_endpoints`, which keeps the state
//! of endpoints that stay (connections, health, latency estimate, slow start). A source
//! never hands over an empty set because it failed: a failure keeps the last good set and
//! is logged. The task stops when its [`Watch`] is dropped.
//!
//! Sources: [`file`] (a watched JSON file), [`dns`] (A/AAAA records, re-resolved) and
//! [`etcd`] (a watched key prefix in etcd's naming format, with
//! [`etcd::registration`] to write such keys under a lease), and [`lookaside`] (an
//! rpcgate's view of a cluster over its look-aside API, for thick clients). [`policy`]
//! maps the configuration's cluster and route settings into the balancer's types, the
//! same for the proxy and the client library.

pub mod dns;
pub mod etcd;
pub mod file;
pub mod lookaside;
pub mod policy;
mod reconnect;

use std::sync::{Arc, Mutex};

use rpcgate_balance::EndpointSpec;
use rpcgate_config::{Discovery, Endpoint};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Where a source hands each new endpoint set.
pub type Apply = Arc<dyn Fn(Vec<EndpointSpec>) + Send + Sync>;

/// What a source last said about why it has no endpoints to give — etcd not reached, no
/// key under the prefix, a DNS error — so that a call finding the set empty can say why,
/// rather than only that it is empty. Cleared when the source hands over a non-empty set.
#[derive(Debug, Clone, Default)]
pub struct Report(Arc<Mutex<Option<String>>>);

impl Report {
    /// Records why the source has nothing (or nothing new) to give.
    pub fn set(&self, why: impl Into<String>) {
        if let Ok(mut report) = self.0.lock() {
            *report = Some(why.into());
        }
    }

    /// The source has endpoints again.
    pub fn clear(&self) {
        if let Ok(mut report) = self.0.lock() {
            *report = None;
        }
    }

    /// What it last said, if anything.
    pub fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|report| report.clone())
    }
}

/// A running source; dropping it stops the source.
#[derive(Debug)]
pub struct Watch {
    task: JoinHandle<()>,
    nudge: Arc<Notify>,
    report: Report,
}

impl Watch {
    /// Tells the source that a connect to one of its endpoints failed: a source that can
    /// look again sooner (DNS) does.
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Why the source has no endpoints, as it last said (see [`Report`]).
    pub fn why_empty(&self) -> Option<String> {
        self.report.get()
    }

    /// Stops the source now, though others still hold the `Watch` (a reload that
    /// replaced it while the old generation's calls finish).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts following `discovery` for the cluster `cluster` on `runtime`.
pub fn spawn(discovery: &Discovery, cluster: &str, runtime: &Handle, apply: Apply) -> Watch {
    let cluster: Arc<str> = cluster.into();
    let nudge = Arc::new(Notify::new());
    let report = Report::default();
    let task = match discovery {
        Discovery::File(path) => runtime.spawn(file::follow(path.clone(), cluster, apply)),
        Discovery::Dns {
            host,
            port,
            refresh,
            resolver,
        } => {
            let source = dns::DnsSource {
                host: host.clone(),
                port: *port,
                refresh: *refresh,
                resolver: *resolver,
            };
            runtime.spawn(dns::follow(
                source,
                cluster,
                apply,
                nudge.clone(),
                report.clone(),
            ))
        }
        Discovery::Etcd { servers, prefix } => {
            let source = etcd::EtcdSource {
                servers: servers.clone(),
                prefix: prefix.clone(),
            };
            runtime.spawn(etcd::follow(source, cluster, apply, report.clone()))
        }
    };
    Watch {
        task,
        nudge,
        report,
    }
}

/// The balancer's form of configured endpoints.
pub fn specs(endpoints: &[Endpoint]) -> Vec<EndpointSpec> {
    endpoints
        .iter()
        .map(|e| EndpointSpec::new(e.address.clone()).with_weight(e.weight))
        .collect()
}
