//! One HTTP/2 connection (a tonic [`Channel`]) per endpoint, made when a call first needs
//! it and forgotten when it fails, so the next call connects afresh — and a connect that
//! fails is known to have sent nothing, which is what makes the transparent retry safe.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rpcgate_balance::EndpointSpec;
use rpcgate_config::{Cluster, UpstreamProtocol};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::builder::BuildError;

/// How to reach a cluster's endpoints: h2c, or TLS (`protocol = "h2"` with `[clusters.tls]`).
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    tls: Option<ClientTlsConfig>,
    connect_timeout: Duration,
}

impl Connector {
    /// From the cluster's `protocol`, `connect_timeout` and `tls`.
    pub(crate) fn new(cluster: &Cluster) -> Result<Self, BuildError> {
        let tls = match (&cluster.protocol, &cluster.tls) {
            (UpstreamProtocol::H2, Some(tls)) => {
                if tls.insecure_skip_verify {
                    return Err(BuildError::Tls(
                        "insecure_skip_verify is not supported by rpcgate-client; give the backends' CA in `ca`".into(),
                    ));
                }
                let mut config = ClientTlsConfig::new().with_enabled_roots();
                if let Some(ca) = &tls.ca {
                    config = config.ca_certificate(Certificate::from_pem(&ca.pem));
                }
                if let Some((cert, key)) = &tls.identity {
                    config = config.identity(Identity::from_pem(&cert.pem, &key.pem));
                }
                if let Some(name) = &tls.server_name {
                    config = config.domain_name(name.clone());
                }
                Some(config)
            }
            (UpstreamProtocol::Http1, _) => {
                return Err(BuildError::Tls(
                    "protocol = \"http1\" is for the proxy's non-gRPC upstreams; rpcgate-client speaks gRPC over HTTP/2".into(),
                ));
            }
            _ => None,
        };
        Ok(Self {
            tls,
            connect_timeout: cluster.connect_timeout,
        })
    }

    /// Connects to `address` now.
    async fn connect(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        endpoint.connect().await
    }
}

/// The connections, by endpoint address.
#[derive(Debug)]
pub(crate) struct Connections {
    connector: Connector,
    open: Mutex<HashMap<String, Channel>>,
}

impl Connections {
    pub(crate) fn new(connector: Connector) -> Self {
        Self {
            connector,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The connection to `address`, made now if there is none.
    pub(crate) async fn get(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        if let Some(channel) = self
            .open
            .lock()
            .ok()
            .and_then(|open| open.get(address).cloned())
        {
            return Ok(channel);
        }
        let channel = self.connector.connect(address).await?;
        if let Ok(mut open) = self.open.lock() {
            open.entry(address.to_owned())
                .or_insert_with(|| channel.clone());
        }
        Ok(channel)
    }

    /// Forgets the connection to `address` (it failed): the next call connects again.
    pub(crate) fn forget(&self, address: &str) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(address);
        }
    }

    /// Keeps only the connections of endpoints in `set` (after a membership change); calls
    /// in flight on a removed one finish on the channel they hold.
    pub(crate) fn retain(&self, set: &[EndpointSpec]) {
        if let Ok(mut open) = self.open.lock() {
            open.retain(|address, _| set.iter().any(|e| &e.address == address));
        }
    }
}
