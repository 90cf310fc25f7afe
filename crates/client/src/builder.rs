//! Building a [`Client`]: from a `[[clusters]]` table (and a route's `retry`) in rpcgate's
//! TOML, or by hand, with its endpoint source.

use std::sync::Arc;

use rpcgate_balance::{Balancer, CircuitBreaker, EndpointSpec};
use rpcgate_config::{Cluster, ConfigErrors, Discovery, HashKey, RetryPolicy};

use crate::connections::{Connections, Connector};
use crate::service::{Client, Inner, Retry};

/// Where a client's endpoints come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A fixed list.
    Static(Vec<EndpointSpec>),
    /// A discovery source as in a cluster's `discovery` table (DNS, file, etcd).
    Discovery(Discovery),
    /// An rpcgate's look-aside API: `admin` is its `admin.address` (`HOST:PORT`),
    /// `cluster` the cluster's name there. Only endpoints rpcgate deems healthy are used.
    Lookaside {
        /// rpcgate's admin address.
        admin: String,
        /// The cluster's name in that rpcgate's configuration.
        cluster: String,
    },
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The TOML has errors (each with `file:line:col` and the key).
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// The file has no cluster of that name.
    #[error("no [[clusters]] named {name:?}; the file has: {known}")]
    NoSuchCluster {
        /// The name asked for.
        name: String,
        /// The names there are, comma-separated.
        known: String,
    },
    /// A discovery source needs a tokio runtime to run on.
    #[error(
        "building a client that follows a discovery source needs a tokio runtime (call build() inside one)"
    )]
    NoRuntime,
    /// The TLS settings could not be used.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    cluster: Cluster,
    source: Source,
    retry: Option<RetryPolicy>,
}

impl ClientBuilder {
    /// A client for the cluster `cluster` of a TOML text in rpcgate's format: a file with
    /// `[[clusters]]` only, or a whole rpcgate.toml (then the `retry` of the first route
    /// sending to the cluster is taken too). `file_name` is for the messages.
    ///
    /// # Errors
    /// The file's errors, or that it has no such cluster.
    pub fn from_toml(text: &str, file_name: &str, cluster: &str) -> Result<Self, BuildError> {
        let config = rpcgate_config::parse_client(text, file_name)?;
        let retry = config
            .listeners
            .iter()
            .flat_map(|l| l.routes.iter())
            .find(|r| {
                config
                    .clusters
                    .get(r.cluster)
                    .is_some_and(|c| c.name == cluster)
            })
            .and_then(|r| r.retry.clone());
        let Some(found) = config.clusters.iter().find(|c| c.name == cluster) else {
            return Err(BuildError::NoSuchCluster {
                name: cluster.to_owned(),
                known: config
                    .clusters
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        Ok(Self::from_cluster(found.clone()).retry(retry))
    }

    /// A client for a cluster already parsed (e.g. from [`rpcgate_config::load`]).
    pub fn from_cluster(cluster: Cluster) -> Self {
        let source = match &cluster.discovery {
            Some(discovery) => Source::Discovery(discovery.clone()),
            None => Source::Static(rpcgate_discovery::specs(&cluster.endpoints)),
        };
        Self {
            cluster,
            source,
            retry: None,
        }
    }

    /// A client named `name` over these `HOST:PORT` endpoints, every setting at rpcgate's
    /// defaults (round robin, h2c, NGINX's passive health).
    ///
    /// # Errors
    /// An address that is not `HOST:PORT`, as rpcgate's file would say it.
    pub fn endpoints<S: AsRef<str>>(
        name: &str,
        endpoints: impl IntoIterator<Item = S>,
    ) -> Result<Self, BuildError> {
        let list: Vec<String> = endpoints
            .into_iter()
            .map(|e| format!("{:?}", e.as_ref()))
            .collect();
        let toml = format!(
            "[[clusters]]\nname = {name:?}\nendpoints = [{}]\n",
            list.join(", ")
        );
        Self::from_toml(&toml, "endpoints", name)
    }

    /// A client of the cluster `cluster` of the rpcgate whose admin address is `admin`
    /// (`HOST:PORT`), balancing over the endpoints rpcgate deems healthy, every setting
    /// at rpcgate's defaults (use [`ClientBuilder::from_toml`] and then
    /// [`ClientBuilder::lookaside`] to set them).
    pub fn from_lookaside(admin: impl Into<String>, cluster: &str) -> Result<Self, BuildError> {
        // The file form needs a list to parse; the source replaces it.
        Ok(Self::endpoints(cluster, ["127.0.0.1:1"])?.lookaside(admin, cluster))
    }

    /// Takes the endpoints from an rpcgate's look-aside API instead.
    pub fn lookaside(mut self, admin: impl Into<String>, cluster: impl Into<String>) -> Self {
        self.source = Source::Lookaside {
            admin: admin.into(),
            cluster: cluster.into(),
        };
        self
    }

    /// Takes the endpoints from `source` instead.
    pub fn source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    /// Retries calls that end with the policy's statuses (`None`: only the transparent
    /// retries of calls that never reached a backend).
    pub fn retry(mut self, retry: Option<RetryPolicy>) -> Self {
        self.retry = retry;
        self
    }

    /// The cluster settings the client will use.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Builds the client. A discovery or look-aside source starts following at once on the
    /// current tokio runtime, and stops when the last clone of the client is dropped.
    ///
    /// # Errors
    /// No runtime for a source that needs one; TLS files that do not parse.
    pub fn build(self) -> Result<Client, BuildError> {
        let c = &self.cluster;
        let (policy, hash_key) = rpcgate_discovery::policy::picker(&c.lb);
        // A client has no client address to hash: `client_ip` spreads calls at random.
        let hash_header = match hash_key {
            Some(HashKey::Header(name)) => Some(name),
            _ => None,
        };
        let passive = rpcgate_discovery::policy::passive(&c.passive_health);
        let initial = match &self.source {
            Source::Static(list) => list.clone(),
            Source::Discovery(_) => rpcgate_discovery::specs(&c.endpoints),
            Source::Lookaside { .. } => Vec::new(),
        };
        let mut balancer = Balancer::new(policy, passive, initial);
        if let Some(window) = c.slow_start {
            balancer = balancer.with_slow_start(window);
        }
        let balancer = Arc::new(balancer);
        let connections = Arc::new(Connections::new(Connector::new(c)?));
        let apply: rpcgate_discovery::Apply = {
            let balancer = balancer.clone();
            let connections = connections.clone();
            Arc::new(move |set: Vec<EndpointSpec>| {
                connections.retain(&set);
                balancer.set_endpoints(set);
            })
        };
        let follower = match &self.source {
            Source::Static(_) => None,
            Source::Discovery(discovery) => {
                let runtime =
                    tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
                Some(Follower::Watch(rpcgate_discovery::spawn(
                    discovery, &c.name, &runtime, apply,
                )))
            }
            Source::Lookaside { admin, cluster } => {
                let runtime =
                    tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
                let report = rpcgate_discovery::Report::default();
                let task = runtime.spawn(rpcgate_discovery::lookaside::follow(
                    admin.clone(),
                    cluster.clone(),
                    apply,
                    report.clone(),
                ));
                Some(Follower::Task(task, report))
            }
        };
        let breaker = c
            .circuit_breaker
            .map(|b| CircuitBreaker::new(rpcgate_discovery::policy::breaker(&b)));
        let retry = self.retry.map(|policy| Retry {
            max_attempts: policy.max_attempts.max(1),
            on: policy.on.clone(),
            backoff: rpcgate_discovery::policy::backoff(&policy),
            budget: rpcgate_discovery::policy::budget(&policy),
        });
        Ok(Client::new(Inner {
            name: c.name.clone(),
            discovery: match &self.source {
                Source::Static(_) => None,
                Source::Discovery(Discovery::Dns { .. }) => Some("DNS"),
                Source::Discovery(Discovery::File(_)) => Some("file"),
                Source::Discovery(Discovery::Etcd { .. }) => Some("etcd"),
                Source::Lookaside { .. } => Some("look-aside"),
            },
            balancer,
            connections,
            breaker,
            retry,
            hash_header,
            follower,
        }))
    }
}

/// What keeps a client's endpoint set current; stops when dropped.
#[derive(Debug)]
pub(crate) enum Follower {
    /// A discovery source.
    Watch(rpcgate_discovery::Watch),
    /// The look-aside follower task, and what it says of an empty set.
    Task(tokio::task::JoinHandle<()>, rpcgate_discovery::Report),
}

impl Follower {
    /// A connect failed: a source that can look again sooner (DNS) does.
    pub(crate) fn nudge(&self) {
        if let Self::Watch(watch) = self {
            watch.nudge();
        }
    }

    /// Why the source has no endpoints, as it last said.
    pub(crate) fn why_empty(&self) -> Option<String> {
        match self {
            Self::Watch(watch) => watch.why_empty(),
            Self::Task(_, report) => report.get(),
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Self::Task(task, _) = self {
            task.abort();
        }
    }
}
