//! `rpcgate-client` against real tonic backends: calls spread by the cluster's policy; a
//! killed backend costs no call (transparent retry) and is ejected; the route `retry`
//! policy retries UNAVAILABLE elsewhere; TLS to the backends; the look-aside API and etcd
//! (with the registration helper) feed the endpoint set; a bad TOML names file:line:col.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::etcd::{Etcd, etcd_or_skip};
use common::files::{TempDir, toml_path};
use common::http::spawn_h2c_server;
use common::{OneCluster, hello, served_by, start_proxy, until_served_by};
use rpcgate_client::{Client, ClientBuilder, Registration, RegistrationSpec};
use rpcgate_demo::pb::helloworld::greeter_client::GreeterClient;

/// Who served each of `calls` calls.
async fn spread(client: &Client, calls: usize) -> HashMap<String, usize> {
    let mut greeter = GreeterClient::new(client.clone());
    let mut seen = HashMap::new();
    for _ in 0..calls {
        let reply = greeter.say_hello(hello("c")).await.unwrap();
        *seen.entry(served_by(reply.metadata())).or_insert(0) += 1;
    }
    seen
}

fn cluster_toml(name: &str, endpoints: &[String], extra: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "[[clusters]]\nname = \"{name}\"\nendpoints = [{}]\n{extra}\n",
        list.join(", ")
    )
}

#[tokio::test]
async fn calls_spread_by_the_policy_and_a_killed_backend_costs_no_call() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let b3 = rpcgate_demo::spawn_backend("b3").await.unwrap();
    let addresses = [
        b1.addr().to_string(),
        b2.addr().to_string(),
        b3.addr().to_string(),
    ];
    let toml = cluster_toml("greeter", &addresses, "lb = \"round_robin\"");
    let client = ClientBuilder::from_toml(&toml, "client.toml", "greeter")
        .unwrap()
        .build()
        .unwrap();
    let seen = spread(&client, 30).await;
    assert_eq!(
        seen,
        HashMap::from([("b1".into(), 10), ("b2".into(), 10), ("b3".into(), 10)])
    );

    // b3 dies: every call still succeeds (the one that meets the dead connection goes to
    // another endpoint, having sent nothing), and b3 is ejected.
    drop(b3);
    let seen = spread(&client, 30).await;
    assert_eq!(seen.values().sum::<usize>(), 30);
    assert!(!seen.contains_key("b3"), "{seen:?}");
    let endpoints = client.balancer().endpoints();
    let dead = endpoints
        .iter()
        .find(|e| e.address() == addresses[2])
        .unwrap();
    assert!(dead.ejection_remaining().is_some(), "b3 is ejected");
    assert!(b1.calls() + b2.calls() >= 50);
}

#[tokio::test]
async fn a_cluster_whose_endpoints_all_refuse_says_which_and_why() {
    let dead = [
        common::dead_address().to_string(),
        common::dead_address().to_string(),
    ];
    let client = ClientBuilder::endpoints("gone", &dead)
        .unwrap()
        .build()
        .unwrap();
    let status = GreeterClient::new(client)
        .say_hello(hello("c"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status
            .message()
            .starts_with("cluster gone: no endpoint could be reached (2 tried; last: 127.0.0.1:")
            && status.message().contains("connect failed"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn the_route_retry_policy_retries_unavailable_on_another_endpoint() {
    // A backend that answers every call UNAVAILABLE (trailers-only), counting them.
    let refused = Arc::new(AtomicU32::new(0));
    let counter = refused.clone();
    let failing = spawn_h2c_server(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "14")
            .header("grpc-message", "going away")
            .body(String::new())
            .unwrap()
    })
    .await;
    let good = rpcgate_demo::spawn_backend("good").await.unwrap();
    // The whole rpcgate.toml: the client takes the cluster and the retry of its route.
    let config = OneCluster::new(format!("\"{failing}\", \"{}\"", good.addr()))
        .cluster("passive_health = { max_fails = 0 }")
        .route("retry = { max_attempts = 2, on = [\"unavailable\"], base_interval = \"1ms\", budget_ratio = 1.0 }")
        .build();
    let client = ClientBuilder::from_toml(&config, "rpcgate.toml", "main")
        .unwrap()
        .build()
        .unwrap();
    let seen = spread(&client, 10).await;
    assert_eq!(seen, HashMap::from([("good".into(), 10)]));
    // Round robin moves on twice per call (attempt and retry), so each call met the
    // failing backend first and was retried on the good one.
    assert_eq!(refused.load(Ordering::SeqCst), 10);

    // Without the policy, UNAVAILABLE is the caller's.
    let plain = ClientBuilder::endpoints("plain", [failing.to_string()])
        .unwrap()
        .build()
        .unwrap();
    let status = GreeterClient::new(plain)
        .say_hello(hello("c"))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Unavailable, "going away")
    );
}

#[tokio::test]
async fn tls_and_mutual_tls_to_the_backends_with_the_clusters_tls_table() {
    let pki = rpcgate_demo::pki::DevPki::generate(&["localhost".into()]).unwrap();
    let dir = TempDir::new("client-tls");
    let paths = pki.write_to(&dir.0, false).unwrap();
    let tls = rpcgate_demo::TlsServer::new(pki.server_cert_pem.clone(), pki.server_key_pem.clone());
    let b1 = rpcgate_demo::spawn_backend_tls("tls1", tls.clone())
        .await
        .unwrap();
    // This one requires a client certificate of the same CA.
    let b2 = rpcgate_demo::spawn_backend_tls("mtls2", tls.client_ca(pki.ca_cert_pem.clone()))
        .await
        .unwrap();
    let tls_table = |backend: &rpcgate_demo::BackendHandle, identity: bool| {
        let mut keys = format!(
            "protocol = \"h2\"\n[clusters.tls]\nca = {}\nserver_name = \"localhost\"",
            toml_path(&paths.ca_cert)
        );
        if identity {
            keys.push_str(&format!(
                "\ncert = {}\nkey = {}",
                toml_path(&paths.client_cert),
                toml_path(&paths.client_key)
            ));
        }
        cluster_toml("secure", &[backend.addr().to_string()], &keys)
    };
    let client = |toml: String| {
        ClientBuilder::from_toml(&toml, "client.toml", "secure")
            .unwrap()
            .build()
            .unwrap()
    };
    assert_eq!(
        spread(&client(tls_table(&b1, false)), 3).await,
        HashMap::from([("tls1".into(), 3)])
    );
    assert_eq!(
        spread(&client(tls_table(&b2, true)), 3).await,
        HashMap::from([("mtls2".into(), 3)])
    );
    // Without the client certificate the mutual-TLS backend refuses the handshake.
    let status = GreeterClient::new(client(tls_table(&b2, false)))
        .say_hello(hello("c"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn a_bad_client_file_names_the_place_and_the_key() {
    let toml = "[[clusters]]\nname = \"x\"\nendpoints = [\"127.0.0.1:1\"]\nlb = \"fastest\"\n";
    let error = ClientBuilder::from_toml(toml, "client.toml", "x")
        .unwrap_err()
        .to_string();
    assert!(error.contains("client.toml:4:6: clusters[0].lb"), "{error}");
    let error = ClientBuilder::from_toml(
        toml.replace("fastest", "random").as_str(),
        "client.toml",
        "y",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("no [[clusters]] named \"y\"; the file has: x"),
        "{error}"
    );
}

#[tokio::test]
async fn the_lookaside_api_feeds_the_client_rpcgates_view() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let b3 = rpcgate_demo::spawn_backend("b3").await.unwrap();
    let proxy = start_proxy(&OneCluster::backends(&[&b1, &b2]).admin().build());
    let client = ClientBuilder::from_lookaside(proxy.admin().to_string(), "main")
        .unwrap()
        .build()
        .unwrap();
    until_served_by(&mut GreeterClient::new(client.clone()), &["b1", "b2"]).await;
    // The calls went straight to the backends, not through the proxy.
    let status = proxy.status().await;
    let through: u64 = status["clusters"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(through, 0);

    // A reload of the proxy moves the cluster to b3: the client follows.
    proxy.swap(&OneCluster::backends(&[&b3]).admin().build());
    until_served_by(&mut GreeterClient::new(client.clone()), &["b3"]).await;

    // A cluster the proxy does not have: the call says what the look-aside API answered.
    let unknown = ClientBuilder::from_lookaside(proxy.admin().to_string(), "nope")
        .unwrap()
        .build()
        .unwrap();
    let mut greeter = GreeterClient::new(unknown);
    common::bounded(async {
        loop {
            let status = greeter.say_hello(hello("c")).await.unwrap_err();
            if status
                .message()
                .contains("NotFound: no cluster named \"nope\"")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn etcd_and_the_registration_helper_feed_the_client() {
    if !etcd_or_skip("rpcgate-client etcd") {
        return;
    }
    let etcd = Etcd::start().await;
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let toml = format!(
        "[[clusters]]\nname = \"laptop\"\nlb = \"p2c_ewma\"\ndiscovery = {{ etcd = [\"{}\"] }}\n",
        etcd.client
    );
    let client = ClientBuilder::from_toml(&toml, "client.toml", "laptop")
        .unwrap()
        .build()
        .unwrap();
    until_served_by(&mut GreeterClient::new(client.clone()), &["-"]).await;
    let register = |address: std::net::SocketAddr| {
        Registration::start(RegistrationSpec {
            servers: vec![etcd.client.to_string()],
            key: RegistrationSpec::key_for("/rpcgate/services/", "laptop", &address.to_string()),
            address: address.to_string(),
            weight: 1,
            ttl: Duration::from_secs(10),
        })
    };
    let r1 = register(b1.addr());
    let r2 = register(b2.addr());
    common::bounded(r1.registered()).await;
    common::bounded(r2.registered()).await;
    until_served_by(&mut GreeterClient::new(client.clone()), &["b1", "b2"]).await;
    // Dropping a registration deregisters it (the lease is revoked in the background).
    drop(r2);
    until_served_by(&mut GreeterClient::new(client.clone()), &["b1"]).await;
    assert_eq!(etcd.keys("/rpcgate/services/laptop/").await.len(), 1);
}

#[tokio::test]
async fn a_dns_name_feeds_the_client_and_a_failed_connect_looks_again() {
    // Two backends on one port, on 127.0.0.1 and 127.0.0.2; the name says 127.0.0.1.
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
    let toml = format!(
        "[[clusters]]\nname = \"named\"\ndiscovery = {{ dns = \"backend.test:{port}\", refresh = \"1h\", resolver = \"{}\" }}\n",
        dns.addr
    );
    let client = ClientBuilder::from_toml(&toml, "client.toml", "named")
        .unwrap()
        .build()
        .unwrap();
    until_served_by(&mut GreeterClient::new(client.clone()), &["b1"]).await;
    // The backend moves to 127.0.0.2: the first connect that fails makes the client
    // resolve again (not in an hour), and the call itself goes nowhere else to fail.
    dns.set("backend.test", &["127.0.0.2".parse().unwrap()]);
    drop(b1);
    until_served_by(&mut GreeterClient::new(client.clone()), &["b2"]).await;
    assert!(b2.calls() > 0);
}

#[tokio::test]
async fn the_circuit_breaker_opens_on_a_failing_cluster() {
    let failing = spawn_h2c_server(|_| {
        http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "14")
            .body(String::new())
            .unwrap()
    })
    .await;
    let toml = cluster_toml(
        "fragile",
        &[failing.to_string()],
        "passive_health = { max_fails = 0 }\ncircuit_breaker = { failure_ratio = 0.5, min_requests = 4, window = \"10s\", open_duration = \"30s\" }",
    );
    let client = ClientBuilder::from_toml(&toml, "client.toml", "fragile")
        .unwrap()
        .build()
        .unwrap();
    let mut greeter = GreeterClient::new(client);
    for _ in 0..4 {
        let status = greeter.say_hello(hello("c")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
    let status = greeter.say_hello(hello("c")).await.unwrap_err();
    assert!(
        status
            .message()
            .starts_with("cluster fragile: circuit breaker open"),
        "{}",
        status.message()
    );
}
