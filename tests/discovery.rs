//! `discovery = { file = … }`: a cluster follows a watched JSON file of endpoints without a
//! reload — backends join and leave as the file changes (edited in place or replaced by a
//! rename), a broken file keeps the last good set, and a broken file at start is a config
//! error naming the file's line and column.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::path::Path;
use std::time::Duration;

use common::files::{TempDir, toml_path};
use common::{OneCluster, hello, start_proxy, until_served_by};
use rpcgate_demo::pb::helloworld::greeter_client::GreeterClient;

/// Replaces the file the way editors and deploy tools do: write aside, rename over.
fn replace(path: &Path, text: &str) {
    let staged = path.with_extension("tmp");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

#[tokio::test]
async fn a_cluster_follows_its_endpoints_file() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let dir = TempDir::new("discovery-file");
    let file = dir.0.join("endpoints.json");
    std::fs::write(&file, format!("[\"{}\"]", b1.addr())).unwrap();
    let config = OneCluster::new("").build().replace(
        "endpoints = []",
        &format!("discovery = {{ file = {} }}", toml_path(&file)),
    );
    let proxy = start_proxy(&config);
    let mut client = GreeterClient::new(proxy.channel().await);
    until_served_by(&mut client, &["b1"]).await;

    // b2 joins (edited in place): both serve, b1 keeps its connection.
    std::fs::write(
        &file,
        format!(
            "[\"{}\", {{\"address\": \"{}\", \"weight\": 1}}]",
            b1.addr(),
            b2.addr()
        ),
    )
    .unwrap();
    until_served_by(&mut client, &["b1", "b2"]).await;

    // A broken file keeps the last good set.
    replace(&file, "[\"127.0.0.1:1\",");
    tokio::time::sleep(Duration::from_millis(300)).await;
    until_served_by(&mut client, &["b1", "b2"]).await;

    // b1 leaves (a replacement by rename): only b2 serves, b1 gets no new call.
    replace(&file, &format!("[\"{}\"]", b2.addr()));
    until_served_by(&mut client, &["b2"]).await;
    let b1_calls = b1.calls();
    until_served_by(&mut client, &["b2"]).await;
    assert_eq!(b1.calls(), b1_calls, "a removed endpoint got new calls");
    proxy.shutdown().await;
}

/// A broken endpoints file at start is refused like a broken config: the config's
/// file:line:col, the key, then the endpoints file's own line and column.
#[test]
fn a_broken_file_at_start_is_a_config_error() {
    let dir = TempDir::new("discovery-broken");
    let file = dir.0.join("endpoints.json");
    std::fs::write(&file, "[\n  \"127.0.0.1:50051\",\n  \"nope\"\n]").unwrap();
    let config = OneCluster::new("").build().replace(
        "endpoints = []",
        &format!("discovery = {{ file = {} }}", toml_path(&file)),
    );
    let errors = rpcgate_config::parse(&config, "test.toml")
        .unwrap_err()
        .to_string();
    let want = format!("clusters[0].discovery.file: {}:3:", file.display());
    assert!(errors.contains(&want), "{errors}");
    assert!(
        errors.contains("invalid endpoint address \"nope\""),
        "{errors}"
    );
    assert!(errors.starts_with("test.toml:"), "{errors}");
}

/// Two backends on one port, on 127.0.0.1 and 127.0.0.2, a loopback DNS server whose
/// `backend.test` is 127.0.0.1, and a proxy following that name every `refresh`.
struct DnsSetup {
    b1: rpcgate_demo::BackendHandle,
    b2: rpcgate_demo::BackendHandle,
    dns: common::dns::DnsServer,
    config: String,
    proxy: common::TestProxy,
}

impl DnsSetup {
    async fn start(refresh: &str) -> Self {
        let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
        let port = b1.addr().port();
        let second = tokio::net::TcpListener::bind(("127.0.0.2", port))
            .await
            .unwrap();
        let b2 = rpcgate_demo::spawn_backend_on(second, rpcgate_demo::BackendOptions::new("b2"))
            .await
            .unwrap();
        let dns = common::dns::DnsServer::start().await;
        dns.set("backend.test", &["127.0.0.1".parse().unwrap()]);
        let config = OneCluster::new("").build().replace(
            "endpoints = []",
            &format!(
                "discovery = {{ dns = \"backend.test:{port}\", refresh = \"{refresh}\", resolver = \"{}\" }}",
                dns.addr
            ),
        );
        let proxy = start_proxy(&config);
        Self {
            b1,
            b2,
            dns,
            config,
            proxy,
        }
    }
}

/// `discovery = { dns = … }` against a DNS server on loopback: every address is an
/// endpoint; a new address joins at the next refresh; an NXDOMAIN keeps the last good
/// set; an address that leaves gets no new calls.
#[tokio::test]
async fn a_cluster_follows_a_dns_name() {
    let DnsSetup {
        b1,
        b2,
        dns,
        config,
        proxy,
    } = DnsSetup::start("100ms").await;
    let mut client = GreeterClient::new(proxy.channel().await);
    until_served_by(&mut client, &["b1"]).await;
    dns.set(
        "backend.test",
        &["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()],
    );
    until_served_by(&mut client, &["b1", "b2"]).await;
    // A reload that changes the cluster but keeps its balancer keeps the discovered set:
    // the next call is served.
    proxy.swap(&config.replace(
        "name = \"main\"\n",
        "name = \"main\"\nmax_requests = 1000\n",
    ));
    client.say_hello(hello("after reload")).await.unwrap();
    // An empty answer keeps the last good set.
    dns.set("backend.test", &[]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    until_served_by(&mut client, &["b1", "b2"]).await;
    // 127.0.0.1 leaves.
    dns.set("backend.test", &["127.0.0.2".parse().unwrap()]);
    until_served_by(&mut client, &["b2"]).await;
    let b1_calls = b1.calls();
    until_served_by(&mut client, &["b2"]).await;
    assert_eq!(b1.calls(), b1_calls, "a removed address got new calls");
    assert!(b2.calls() > 0);
    proxy.shutdown().await;
}

/// A failed connect makes a DNS cluster look again at once (at most once a second), not
/// only at its next `refresh`: here an hour away.
#[tokio::test]
async fn a_failed_connect_resolves_the_name_again() {
    let DnsSetup {
        b1, b2, dns, proxy, ..
    } = DnsSetup::start("1h").await;
    let mut client = GreeterClient::new(proxy.channel().await);
    until_served_by(&mut client, &["b1"]).await;
    // The backend moves: DNS says so, and the old address stops answering.
    dns.set("backend.test", &["127.0.0.2".parse().unwrap()]);
    b1.kill().await;
    until_served_by(&mut client, &["b2"]).await;
    assert!(b2.calls() > 0);
    proxy.shutdown().await;
}

/// A name that resolves to nothing leaves the cluster empty, and the client is told why.
#[tokio::test]
async fn an_empty_dns_cluster_says_so() {
    let dns = common::dns::DnsServer::start().await;
    let config = OneCluster::new("").build().replace(
        "endpoints = []",
        &format!(
            "discovery = {{ dns = \"nothing.test:50051\", resolver = \"{}\" }}",
            dns.addr
        ),
    );
    let proxy = start_proxy(&config);
    let mut client = GreeterClient::new(proxy.channel().await);
    // Before the first answer the call says the source found nothing yet; after it, what
    // the DNS server said.
    common::bounded(async {
        loop {
            let status = client.say_hello(hello("x")).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unavailable);
            let message = status.message();
            if message
                .starts_with("cluster main has no endpoints: DNS lookup of nothing.test failed: ")
            {
                return;
            }
            assert_eq!(
                message,
                "cluster main has no endpoints: its DNS discovery has found none yet"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    proxy.shutdown().await;
}
