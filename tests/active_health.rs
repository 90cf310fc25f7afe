//! Active health checks (`active_health`, contract §4) through the real proxy on tokio's
//! paused clock: `grpc.health.v1.Health/Check` per endpoint every `interval`, the
//! thresholds, probes that time out, and active health combined with passive health (an
//! endpoint gets calls only when neither marks it down).
//!
//! The demo backends count every call, probes included, so a test waits for a number of
//! probes as an event; the prober records a result before it sleeps, so once probe N+1
//! has started, result N is in.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{OneCluster, address_list, bounded, hello, served_by, start_local_proxy};
use rpcgate_demo::BackendHandle;
use rpcgate_demo::pb::helloworld::greeter_client::GreeterClient;
use tokio::net::TcpListener;
use tonic::transport::Channel;

const PROBES: &str = r#"active_health = { interval = "1s", timeout = "500ms", unhealthy_threshold = 2, healthy_threshold = 1 }
passive_health = { max_fails = 0 }"#;

/// Who served each of `n` calls.
async fn served(client: &mut GreeterClient<Channel>, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let reply = bounded(client.say_hello(hello("a"))).await.unwrap();
        out.push(served_by(reply.metadata()));
    }
    out
}

/// Waits until `backend` has seen `more` calls beyond `from` (probes or calls).
async fn probes(backend: &BackendHandle, from: u64, more: u64) {
    bounded(backend.wait_until(|b| b.calls() >= from + more)).await;
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_not_serving_gets_no_calls_until_it_serves_again() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    b1.set_serving(false).await;
    let proxy = start_local_proxy(&OneCluster::backends(&[&b1, &b2]).cluster(PROBES).build());
    // Two failed probes (then a third starts): b1 is down.
    probes(&b1, 0, 3).await;
    let mut client = GreeterClient::new(proxy.channel().await);
    assert!(served(&mut client, 6).await.iter().all(|b| b == "b2"));

    // One passed probe brings it back.
    b1.set_serving(true).await;
    probes(&b1, b1.calls(), 2).await;
    let after = served(&mut client, 6).await;
    assert!(after.iter().any(|b| b == "b1"), "{after:?}");
    assert!(after.iter().any(|b| b == "b2"), "{after:?}");
    proxy.shutdown().await;
}

/// One failed probe is not enough with `unhealthy_threshold = 2`.
#[tokio::test(start_paused = true)]
async fn a_single_failed_probe_does_not_mark_an_endpoint_down() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    b1.set_serving(false).await;
    let proxy = start_local_proxy(&OneCluster::backends(&[&b1, &b2]).cluster(PROBES).build());
    // The first probe failed (the second has started); then it serves again.
    probes(&b1, 0, 2).await;
    b1.set_serving(true).await;
    probes(&b1, b1.calls(), 1).await;
    let mut client = GreeterClient::new(proxy.channel().await);
    let calls = served(&mut client, 6).await;
    assert!(calls.iter().any(|b| b == "b1"), "{calls:?}");
    proxy.shutdown().await;
}

/// A backend that takes HTTP/2 streams and never answers them.
async fn hanging_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                let mut held = Vec::new();
                while let Some(Ok(stream)) = conn.accept().await {
                    held.push(stream);
                }
            });
        }
    });
    addr
}

/// Probes that get no answer in `timeout` fail: the hanging endpoint is taken out, and
/// calls (under a route timeout) all go to the one that answers.
#[tokio::test(start_paused = true)]
async fn probes_that_time_out_mark_the_endpoint_down() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let hanging = hanging_backend().await;
    let endpoints = format!("{}, \"{}\"", address_list(&[hanging]), b1.addr());
    let config = OneCluster::new(endpoints)
        .route(r#"timeout = "5s""#)
        .cluster(PROBES)
        .build();
    let proxy = start_local_proxy(&config);
    // Two probes of b1 have been answered by the time its third starts; those of the
    // hanging endpoint ran alongside and timed out (the prober waits for all of them).
    probes(&b1, 0, 3).await;
    let mut client = GreeterClient::new(proxy.channel().await);
    let started = tokio::time::Instant::now();
    assert!(served(&mut client, 6).await.iter().all(|b| b == "b1"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a call went to the hanging endpoint"
    );
    proxy.shutdown().await;
}

/// Active and passive health combine: a backend that serves probes but fails calls is
/// still ejected by passive health.
#[tokio::test(start_paused = true)]
async fn passive_health_still_ejects_what_probes_call_healthy() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let config = OneCluster::backends(&[&b1, &b2])
        .cluster(
            r#"active_health = { interval = "1s" }
passive_health = { max_fails = 1, fail_timeout = "60s" }"#,
        )
        .build();
    let proxy = start_local_proxy(&config);
    probes(&b1, 0, 1).await;
    b1.kill().await;
    let mut client = GreeterClient::new(proxy.channel().await);
    // The kill fails over transparently; from then on b1 is ejected.
    assert!(served(&mut client, 6).await.iter().all(|b| b == "b2"));
    proxy.shutdown().await;
}
