//! The in-process end-to-end harness shared by the test files: a real rpcgate proxy on
//! `127.0.0.1:0` built from a TOML text (so every test also goes through the config
//! validation users get), real tonic backends from the testkit, and tonic clients.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // reason: test helpers

use std::net::SocketAddr;
use std::time::Duration;

use rpcgate_proxy::{Proxy, ProxyHandle};
use rpcgate_testkit::BackendHandle;
use tonic::transport::{Channel, Endpoint};

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running proxy and its edge address.
pub struct TestProxy {
    pub handle: Option<ProxyHandle>,
    pub addr: SocketAddr,
}

impl TestProxy {
    /// `http://ADDR` of the first listener.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One tonic channel (one HTTP/2 connection) to the proxy.
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.url())
            .unwrap()
            .connect_timeout(WAIT)
            .connect()
            .await
            .unwrap()
    }

    /// Drains and stops the proxy.
    pub async fn shutdown(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }
}

/// Starts a proxy from a full config text; the first listener's address is returned.
pub fn start_proxy(config: &str) -> TestProxy {
    let config = rpcgate_config::parse(config, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    let handle = Proxy::start(&config).unwrap();
    let addr = handle.addresses()[0].1;
    TestProxy {
        handle: Some(handle),
        addr,
    }
}

/// `"a", "b"` for a TOML endpoints list.
pub fn endpoints(backends: &[&BackendHandle]) -> String {
    backends
        .iter()
        .map(|b| format!("\"{}\"", b.addr()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A one-listener, one-cluster config: every call to `backends` with the given `lb` and
/// extra cluster keys (TOML lines).
pub fn simple_config(backends: &[&BackendHandle], cluster_extra: &str) -> String {
    format!(
        r#"[server]
workers = 2
[log]
access_log = "off"
[[listeners]]
name = "edge"
address = "127.0.0.1:0"
[[listeners.routes]]
match.path_prefix = "/"
cluster = "main"
[[clusters]]
name = "main"
endpoints = [{}]
{cluster_extra}
"#,
        endpoints(backends)
    )
}

/// Which backend served a response (the testkit tags `x-backend`).
pub fn served_by(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_string()
}
