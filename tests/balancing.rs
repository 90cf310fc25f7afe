//! End-to-end balancing (contract §2 `lb`, §3 "each call is balanced on its own"): calls
//! from ONE client connection spread over the backends by every policy, weights hold,
//! `least_request` and `p2c_ewma` steer away from busy and slow backends, and
//! `ring_hash` keeps a key on one backend.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use common::{OneCluster, bounded, hello};
use futures_util::{Stream, StreamExt};
use rpcgate_demo::pb::helloworld::greeter_server::{Greeter, GreeterServer};
use rpcgate_demo::pb::helloworld::{
    HelloReply, HelloRequest, HelloStreamRequest, greeter_client::GreeterClient,
};
use rpcgate_demo::{BackendHandle, meta};
use tokio::net::TcpListener;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// Three backends named b1, b2, b3.
async fn three_backends() -> [BackendHandle; 3] {
    let mut out = Vec::new();
    for name in ["b1", "b2", "b3"] {
        out.push(rpcgate_demo::spawn_backend(name).await.unwrap());
    }
    out.try_into().unwrap()
}

/// `n` unary calls over `channel` (one connection), at most `concurrency` at a time;
/// returns how many each backend served.
async fn spread(channel: &Channel, n: usize, concurrency: usize) -> BTreeMap<String, usize> {
    let served: Vec<String> = bounded(
        futures_util::stream::iter(0..n)
            .map(|i| {
                let mut client = GreeterClient::new(channel.clone());
                async move {
                    let reply = client.say_hello(hello(&format!("c{i}"))).await.unwrap();
                    common::served_by(reply.metadata())
                }
            })
            .buffer_unordered(concurrency)
            .collect(),
    )
    .await;
    let mut counts = BTreeMap::new();
    for name in served {
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

/// Asserts that each named backend got `expected` calls within `± tolerance × expected`.
fn assert_near(counts: &BTreeMap<String, usize>, expected: &[(&str, f64)], tolerance: f64) {
    for (name, want) in expected {
        let got = counts.get(*name).copied().unwrap_or(0) as f64;
        assert!(
            (got - want).abs() <= want * tolerance,
            "{name}: {got} calls, expected {want} ± {:.0}%: {counts:?}",
            tolerance * 100.0
        );
    }
    let total: usize = counts.values().sum();
    let want: f64 = expected.iter().map(|(_, w)| w).sum();
    assert_eq!(total as f64, want, "every call was served: {counts:?}");
}

#[tokio::test]
async fn round_robin_spreads_one_connection_evenly() {
    let [b1, b2, b3] = three_backends().await;
    let proxy = common::start_proxy(&common::simple_config(&[&b1, &b2, &b3], ""));
    let channel = proxy.channel().await;
    // Sequential calls: round robin is exact.
    let counts = spread(&channel, 300, 1).await;
    assert_near(&counts, &[("b1", 100.0), ("b2", 100.0), ("b3", 100.0)], 0.0);
    // Concurrent calls on the same connection: still within ±10%.
    let counts = spread(&channel, 300, 16).await;
    assert_near(&counts, &[("b1", 100.0), ("b2", 100.0), ("b3", 100.0)], 0.1);
    assert_eq!((b1.calls(), b2.calls(), b3.calls()), (200, 200, 200));
    proxy.shutdown().await;
}

#[tokio::test]
async fn round_robin_weights_hold() {
    let [b1, b2, b3] = three_backends().await;
    let config = OneCluster::new(format!(
        "\"{}\", {{ address = \"{}\", weight = 2 }}, {{ address = \"{}\", weight = 1 }}",
        b1.addr(),
        b2.addr(),
        b3.addr()
    ))
    .build();
    let proxy = common::start_proxy(&config);
    let counts = spread(&proxy.channel().await, 400, 1).await;
    assert_near(&counts, &[("b1", 100.0), ("b2", 200.0), ("b3", 100.0)], 0.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn random_spreads_within_twenty_percent() {
    let [b1, b2, b3] = three_backends().await;
    let proxy = common::start_proxy(&common::simple_config(&[&b1, &b2, &b3], "lb = \"random\""));
    // 1200 calls: each count is Binomial(1200, 1/3), σ ≈ 16.3, so ±20% (80) is ±4.9σ.
    let counts = spread(&proxy.channel().await, 1200, 16).await;
    assert_near(&counts, &[("b1", 400.0), ("b2", 400.0), ("b3", 400.0)], 0.2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn random_weights_hold() {
    let [b1, b2, b3] = three_backends().await;
    let config = OneCluster::new(format!(
        "\"{}\", {{ address = \"{}\", weight = 2 }}, \"{}\"",
        b1.addr(),
        b2.addr(),
        b3.addr()
    ))
    .cluster("lb = \"random\"")
    .build();
    let proxy = common::start_proxy(&config);
    // Shares 1/4, 1/2, 1/4 of 1200: σ ≈ 15 and 17.3, so ±20% is ≥ 4σ.
    let counts = spread(&proxy.channel().await, 1200, 16).await;
    assert_near(&counts, &[("b1", 300.0), ("b2", 600.0), ("b3", 300.0)], 0.2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn least_request_spreads_within_twenty_percent() {
    let [b1, b2, b3] = three_backends().await;
    let proxy = common::start_proxy(&common::simple_config(
        &[&b1, &b2, &b3],
        "lb = \"least_request\"",
    ));
    let counts = spread(&proxy.channel().await, 1200, 16).await;
    assert_near(&counts, &[("b1", 400.0), ("b2", 400.0), ("b3", 400.0)], 0.2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn least_request_avoids_a_backend_holding_a_slow_call() {
    let backends = three_backends().await;
    let [b1, b2, b3] = &backends;
    let proxy = common::start_proxy(&common::simple_config(
        &[b1, b2, b3],
        "lb = \"least_request\"",
    ));
    let channel = proxy.channel().await;

    // One call that stays in flight (far longer than the test).
    let mut slow = Request::new(hello("slow"));
    slow.metadata_mut()
        .insert(meta::DELAY_MS, MetadataValue::from_static("60000"));
    let mut client = GreeterClient::new(channel.clone());
    let slow_call = tokio::spawn(async move { client.say_hello(slow).await });
    let busy = bounded(async {
        loop {
            if let Some(b) = backends.iter().find(|b| b.in_flight() == 1) {
                return b;
            }
            // Re-checked whenever a call starts on any backend.
            tokio::select! {
                () = b1.wait_until(|b| b.in_flight() == 1) => {}
                () = b2.wait_until(|b| b.in_flight() == 1) => {}
                () = b3.wait_until(|b| b.in_flight() == 1) => {}
            }
        }
    })
    .await;

    // Every pair the picker draws holds a backend with nothing in flight, so no new call
    // goes to the busy one.
    let counts = spread(&channel, 60, 1).await;
    assert_eq!(counts.get(busy.name()), None, "{counts:?}");
    assert_eq!(busy.calls(), 1);
    assert_eq!(counts.values().sum::<usize>(), 60);

    slow_call.abort();
    bounded(busy.wait_until(|b| b.cancelled() == 1)).await;
    proxy.shutdown().await;
}

/// A Greeter that answers `SayHello` after a fixed delay, to make one backend slower than
/// another (the demo backend's delay is per request, so it slows every backend alike).
struct FixedDelay {
    name: &'static str,
    delay: Duration,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Greeter for FixedDelay {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        tokio::time::sleep(self.delay).await;
        let mut reply = Response::new(HelloReply {
            message: format!("Hello {} from {}", request.into_inner().name, self.name),
        });
        reply
            .metadata_mut()
            .insert(meta::BACKEND, MetadataValue::from_static(self.name));
        Ok(reply)
    }

    type SayHelloStreamStream = ReplyStream;

    async fn say_hello_stream(
        &self,
        _: Request<HelloStreamRequest>,
    ) -> Result<Response<ReplyStream>, Status> {
        Err(Status::unimplemented("unary only"))
    }

    async fn say_hello_client_stream(
        &self,
        _: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<HelloReply>, Status> {
        Err(Status::unimplemented("unary only"))
    }

    type SayHelloBidiStream = ReplyStream;

    async fn say_hello_bidi(
        &self,
        _: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        Err(Status::unimplemented("unary only"))
    }
}

/// Serves a [`FixedDelay`] Greeter on `127.0.0.1:0` until the test's runtime ends.
async fn spawn_fixed_delay(name: &'static str, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = futures_util::stream::unfold(listener, |listener| async move {
        Some((listener.accept().await.map(|(s, _)| s), listener))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GreeterServer::new(FixedDelay { name, delay }))
            .serve_with_incoming(incoming),
    );
    addr
}

#[tokio::test]
async fn p2c_ewma_prefers_the_fast_backend() {
    let fast = spawn_fixed_delay("fast", Duration::ZERO).await;
    // Far slower than any hiccup of the fast one on a busy machine: a peak-EWMA spike
    // of the fast backend decays slowly (τ = 10 s) and must not outweigh this.
    let slow = spawn_fixed_delay("slow", Duration::from_millis(150)).await;
    let config = OneCluster::new(common::address_list(&[fast, slow]))
        .cluster("lb = \"p2c_ewma\"")
        .build();
    let proxy = common::start_proxy(&config);
    let channel = proxy.channel().await;

    // Warm-up: until both have a latency estimate, the pair ties and either may win, so
    // the slow one is measured within a few calls.
    let mut warm_up = BTreeMap::new();
    for _ in 0..50 {
        warm_up = spread(&channel, 1, 1)
            .await
            .into_iter()
            .fold(warm_up, |mut acc, (name, n)| {
                *acc.entry(name).or_insert(0) += n;
                acc
            });
        if warm_up.contains_key("slow") && warm_up.contains_key("fast") {
            break;
        }
    }
    assert!(
        warm_up.contains_key("slow") && warm_up.contains_key("fast"),
        "both were tried during the warm-up: {warm_up:?}"
    );

    // Measured: one at a time (no load), so the latency estimate decides.
    let counts = spread(&channel, 100, 1).await;
    let fast_share = counts.get("fast").copied().unwrap_or(0);
    assert!(
        fast_share >= 90,
        "fast served {fast_share} of 100: {counts:?}"
    );
    proxy.shutdown().await;
}

/// Which backend served each of `calls` calls carrying `x-user-id: user`.
async fn served_for_user(channel: &Channel, user: &str, calls: usize) -> BTreeSet<String> {
    let mut client = GreeterClient::new(channel.clone());
    let mut served = BTreeSet::new();
    for _ in 0..calls {
        let mut request = Request::new(hello(user));
        request
            .metadata_mut()
            .insert("x-user-id", user.parse().unwrap());
        let reply = bounded(client.say_hello(request)).await.unwrap();
        served.insert(common::served_by(reply.metadata()));
    }
    served
}

#[tokio::test]
async fn ring_hash_by_header_keeps_each_user_on_one_backend() {
    let [b1, b2, b3] = three_backends().await;
    let proxy = common::start_proxy(&common::simple_config(
        &[&b1, &b2, &b3],
        "lb = \"ring_hash\"\nhash_key = \"header:x-user-id\"",
    ));
    let channel = proxy.channel().await;
    let other_connection = proxy.channel().await;

    let mut owners = BTreeMap::new();
    for i in 0..60 {
        let user = format!("user-{i}");
        let served = served_for_user(&channel, &user, 4).await;
        assert_eq!(served.len(), 1, "{user} went to {served:?}");
        // The same from another client connection: the key decides, not the connection.
        let again = served_for_user(&other_connection, &user, 2).await;
        assert_eq!(again, served, "{user}");
        owners.insert(user, served.into_iter().next().unwrap());
    }
    // 60 users over a ring with 100 points per backend: every backend owns some (the
    // chance that one owns none is about (2/3)^60).
    let used: BTreeSet<&String> = owners.values().collect();
    assert_eq!(used.len(), 3, "{owners:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn ring_hash_by_client_ip_keeps_one_client_on_one_backend() {
    let [b1, b2, b3] = three_backends().await;
    let proxy = common::start_proxy(&common::simple_config(
        &[&b1, &b2, &b3],
        "lb = \"ring_hash\"\nhash_key = \"client_ip\"",
    ));
    let mut served = BTreeMap::new();
    // Several connections, all from 127.0.0.1, many calls each, some concurrent.
    for _ in 0..3 {
        let channel = proxy.channel().await;
        for (name, n) in spread(&channel, 30, 4).await {
            *served.entry(name).or_insert(0) += n;
        }
    }
    assert_eq!(served.len(), 1, "{served:?}");
    assert_eq!(served.values().sum::<usize>(), 90);
    proxy.shutdown().await;
}
