//! The in-process end-to-end harness shared by the test files: a real rpcgate proxy on
//! `127.0.0.1:0` built from a TOML text (so every test also goes through the config
//! validation users get), real tonic backends from rpcgate-demo, and tonic clients.
//!
//! The helpers more than one test file needs live here once, grouped by what they talk
//! to: [`http`] (hyper clients and tiny HTTP servers), [`raw_h2`] (a raw `h2` client that
//! shows frames and headers as sent), [`files`] (temporary folders, paths in TOML, log
//! files) and [`interop`] (the Python grpcio driver).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // reason: test helpers; not every test binary uses every one

pub mod dns;
pub mod etcd;
pub mod files;
pub mod http;
pub mod interop;
pub mod raw_h2;
pub mod rss;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use rpcgate_demo::BackendHandle;
use rpcgate_demo::pb::helloworld::HelloRequest;
use rpcgate_demo::pb::helloworld::greeter_client::GreeterClient;
use rpcgate_proxy::{Proxy, ProxyHandle};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

/// Bounds a future by [`WAIT`], failing the test when it takes longer.
pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

/// A running proxy and its edge address.
pub struct TestProxy {
    pub handle: Option<ProxyHandle>,
    pub addr: SocketAddr,
}

impl TestProxy {
    /// The admin API's address (the config must have `[admin]`).
    pub fn admin(&self) -> SocketAddr {
        self.handle
            .as_ref()
            .and_then(ProxyHandle::admin_addr)
            .expect("the config has [admin]")
    }

    /// `GET path` on the admin API over HTTP/1.1: status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let (parts, body) = http::http1_get(self.admin(), path, &[]).await;
        (
            parts.status.as_u16(),
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        let (code, body) = self.admin_get("/status").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The value of the metric sample `name{labels}` (labels as written in the
    /// exposition, e.g. `cluster="main",grpc_code="OK"`, in any order), `None` if absent.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (code, body) = self.admin_get("/metrics").await;
        assert_eq!(code, 200, "{body}");
        metric_value(&body, name, labels)
    }

    /// `http://ADDR` of the first listener.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One tonic channel (one HTTP/2 connection) to the proxy.
    pub async fn channel(&self) -> Channel {
        connect(Endpoint::from_shared(self.url()).unwrap()).await
    }

    /// Makes `config` (a full config text) the one new calls follow; returns the new
    /// generation's number.
    pub fn swap(&self, config: &str) -> u64 {
        let config = rpcgate_config::parse(config, "test.toml").unwrap_or_else(|e| panic!("{e}"));
        self.handle
            .as_ref()
            .expect("running")
            .swap_config(&config)
            .unwrap()
    }

    /// Drains and stops the proxy.
    pub async fn shutdown(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }
}

/// The value of the sample `name` whose labels include every pair of `labels`.
pub fn metric_value(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// Connects a tonic channel to `endpoint` (which may set an origin or TLS), within
/// [`WAIT`]; the connection must succeed.
pub async fn connect(endpoint: Endpoint) -> Channel {
    endpoint.connect_timeout(WAIT).connect().await.unwrap()
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

/// Starts a proxy from a full config text as one worker task on the current tokio
/// runtime ([`Proxy::start_local`]): with `#[tokio::test(start_paused = true)]` its
/// timers (deadlines, idle and first-request timeouts) run on the test's paused clock, so
/// a test of a 10 s timeout takes no 10 s. Everything the test talks to (backends,
/// clients) must then run on the same runtime.
pub fn start_local_proxy(config: &str) -> TestProxy {
    let config = rpcgate_config::parse(config, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    let handle = Proxy::start_local(&config).unwrap();
    let addr = handle.addresses()[0].1;
    TestProxy {
        handle: Some(handle),
        addr,
    }
}

/// An address where nothing listens: bound, then closed (connects are refused).
pub fn dead_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// `"a", "b"` for a TOML endpoints list.
pub fn endpoints(backends: &[&BackendHandle]) -> String {
    backends
        .iter()
        .map(|b| format!("\"{}\"", b.addr()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `"a", "b"` for a TOML endpoints list of bare addresses (servers that are not rpcgate-demo
/// backends).
pub fn address_list(addresses: &[SocketAddr]) -> String {
    addresses
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text of the config most tests run: one listener `edge` on `127.0.0.1:0` with one
/// route to one cluster `main`. Each part can be changed or extended with TOML lines,
/// so that a test states only what it is about.
#[derive(Clone, Debug)]
pub struct OneCluster {
    workers: usize,
    log: String,
    listener_extra: String,
    route_match: String,
    route_extra: String,
    endpoints: String,
    cluster_extra: String,
    admin: bool,
}

impl OneCluster {
    /// Two workers, no access log, every path (`match.path_prefix = "/"`) to `main`,
    /// whose `endpoints` list holds `endpoints` (the text between the brackets).
    pub fn new(endpoints: impl Into<String>) -> Self {
        Self {
            workers: 2,
            log: "access_log = \"off\"".to_owned(),
            listener_extra: String::new(),
            route_match: "match.path_prefix = \"/\"".to_owned(),
            route_extra: String::new(),
            endpoints: endpoints.into(),
            cluster_extra: String::new(),
            admin: false,
        }
    }

    /// An `[admin]` API on `127.0.0.1:0` (see [`TestProxy::admin`]).
    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }

    /// The same over these rpcgate-demo backends.
    pub fn backends(backends: &[&BackendHandle]) -> Self {
        Self::new(endpoints(backends))
    }

    /// `server.workers`.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The keys of the `[log]` table.
    pub fn log(mut self, keys: impl Into<String>) -> Self {
        self.log = keys.into();
        self
    }

    /// More keys (or tables, such as `[listeners.tls]`) of the listener.
    pub fn listener(mut self, extra: impl Into<String>) -> Self {
        self.listener_extra = extra.into();
        self
    }

    /// The route's `match.*` lines, instead of `match.path_prefix = "/"`.
    pub fn route_match(mut self, keys: impl Into<String>) -> Self {
        self.route_match = keys.into();
        self
    }

    /// More keys of the route.
    pub fn route(mut self, extra: impl Into<String>) -> Self {
        self.route_extra = extra.into();
        self
    }

    /// More keys (or tables, such as `[clusters.tls]`) of the cluster.
    pub fn cluster(mut self, extra: impl Into<String>) -> Self {
        self.cluster_extra = extra.into();
        self
    }

    /// The config text.
    pub fn build(&self) -> String {
        let Self {
            workers,
            log,
            listener_extra,
            route_match,
            route_extra,
            endpoints,
            cluster_extra,
            admin,
        } = self;
        let admin = if *admin {
            "[admin]\naddress = \"127.0.0.1:0\"\n"
        } else {
            ""
        };
        format!(
            r#"{admin}[server]
workers = {workers}
[log]
{log}
[[listeners]]
name = "edge"
address = "127.0.0.1:0"
{listener_extra}
[[listeners.routes]]
{route_match}
cluster = "main"
{route_extra}
[[clusters]]
name = "main"
endpoints = [{endpoints}]
{cluster_extra}
"#
        )
    }
}

/// A one-listener, one-cluster config: every call to `backends` with the given `lb` and
/// extra cluster keys (TOML lines).
pub fn simple_config(backends: &[&BackendHandle], cluster_extra: &str) -> String {
    OneCluster::backends(backends)
        .cluster(cluster_extra)
        .build()
}

/// A demo backend `b1` and a proxy sending every call to it ([`simple_config`]).
pub async fn backend_and_proxy() -> (BackendHandle, TestProxy) {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let proxy = start_proxy(&simple_config(&[&backend], ""));
    (backend, proxy)
}

/// Which backend served a response (demo backends tag `x-backend`).
pub fn served_by(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_string()
}

/// Calls `SayHello` until exactly the backends in `want` served the last 20 calls (`-`
/// stands for UNAVAILABLE: an empty cluster), or fails after a bound: for endpoint sets
/// that change by discovery, where there is no event to wait on but the calls themselves.
/// Works through the proxy (a tonic `Channel`) and through `rpcgate-client` alike.
pub async fn until_served_by<T>(greeter: &mut GreeterClient<T>, want: &[&str])
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let want: std::collections::HashSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..400 {
        seen.clear();
        for _ in 0..20 {
            match greeter.say_hello(hello("until")).await {
                Ok(reply) => seen.insert(served_by(reply.metadata())),
                Err(status) if status.code() == tonic::Code::Unavailable => seen.insert("-".into()),
                Err(status) => panic!("{status:?}"),
            };
        }
        if seen == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never served by exactly {want:?}; last {seen:?}");
}

/// A `SayHello` request for `name`.
pub fn hello(name: &str) -> HelloRequest {
    HelloRequest { name: name.into() }
}

/// A gRPC request carrying `message` with these metadata entries.
pub fn with_meta<T>(message: T, pairs: &[(&'static str, &str)]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for (key, value) in pairs {
        request
            .metadata_mut()
            .insert(*key, MetadataValue::try_from(*value).unwrap());
    }
    request
}

/// A metadata entry as text, if present and printable.
pub fn text<'a>(md: &'a MetadataMap, key: &str) -> Option<&'a str> {
    md.get(key).and_then(|v| v.to_str().ok())
}
