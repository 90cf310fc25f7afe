//! Sparing a cluster (contract §4), through the real proxy on tokio's paused clock: the
//! circuit breaker (closed → open → half-open → closed, and open again on a failed trial)
//! and `max_requests`; both answer UNAVAILABLE at once and no backend sees the call.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::time::Duration;

use common::{OneCluster, TestProxy, bounded, hello, start_local_proxy, with_meta};
use rpcgate_demo::pb::helloworld::greeter_client::GreeterClient;
use rpcgate_demo::{BackendHandle, meta};
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

/// One demo backend behind a local proxy whose cluster has these extra keys (passive
/// health off, so only the breaker or the limit decides).
async fn setup(cluster_extra: &str) -> (BackendHandle, TestProxy) {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let config = OneCluster::backends(&[&backend])
        .cluster(format!(
            "passive_health = {{ max_fails = 0 }}\n{cluster_extra}"
        ))
        .build();
    let proxy = start_local_proxy(&config);
    (backend, proxy)
}

async fn failing(client: &mut GreeterClient<Channel>) -> tonic::Status {
    let request = with_meta(hello("x"), &[(meta::FAIL_CODE, "14")]);
    bounded(client.say_hello(request)).await.unwrap_err()
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_rejects_fast_goes_half_open_and_closes() {
    let (backend, proxy) = setup(
        r#"circuit_breaker = { failure_ratio = 0.5, min_requests = 4, window = "10s", open_duration = "5s", half_open_requests = 2 }"#,
    )
    .await;
    let mut client = GreeterClient::new(proxy.channel().await);
    // Closed: 1 success and 3 failures (3 of 4 failed ≥ 0.5 once 4 calls ended).
    bounded(client.say_hello(hello("ok"))).await.unwrap();
    for _ in 0..3 {
        assert_eq!(failing(&mut client).await.code(), Code::Unavailable);
    }
    assert_eq!(backend.calls(), 4);

    // Open: refused at once, the backend sees nothing, the message says for how long.
    let started = Instant::now();
    let status = bounded(client.say_hello(hello("refused")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status
            .message()
            .contains("circuit breaker of cluster main is open")
            && status.message().contains("refused for another 5.0s"),
        "{}",
        status.message()
    );
    assert!(started.elapsed() < Duration::from_millis(5));
    assert_eq!(backend.calls(), 4);

    // After open_duration: half-open; two successful trials close it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for _ in 0..2 {
        bounded(client.say_hello(hello("trial"))).await.unwrap();
    }
    assert_eq!(backend.calls(), 6);
    // Closed again: calls flow, and a single failure does not reopen it.
    assert_eq!(failing(&mut client).await.code(), Code::Unavailable);
    for _ in 0..3 {
        bounded(client.say_hello(hello("closed"))).await.unwrap();
    }
    assert_eq!(backend.calls(), 10);
    proxy.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_opens_the_breaker_again() {
    let (backend, proxy) = setup(
        r#"circuit_breaker = { failure_ratio = 1.0, min_requests = 2, open_duration = "2s", half_open_requests = 1 }"#,
    )
    .await;
    let mut client = GreeterClient::new(proxy.channel().await);
    for _ in 0..2 {
        failing(&mut client).await;
    }
    let status = bounded(client.say_hello(hello("refused")))
        .await
        .unwrap_err();
    assert!(status.message().contains("is open"), "{}", status.message());
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The trial fails: open again for a full open_duration.
    failing(&mut client).await;
    assert_eq!(backend.calls(), 3);
    let status = bounded(client.say_hello(hello("refused")))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("refused for another 2.0s"),
        "{}",
        status.message()
    );
    assert_eq!(backend.calls(), 3);
    proxy.shutdown().await;
}

/// Application errors are answers: they never open the breaker.
#[tokio::test(start_paused = true)]
async fn application_errors_do_not_open_the_breaker() {
    let (backend, proxy) =
        setup("circuit_breaker = { min_requests = 2, failure_ratio = 0.5 }").await;
    let mut client = GreeterClient::new(proxy.channel().await);
    for _ in 0..10 {
        let request = with_meta(hello("x"), &[(meta::FAIL_CODE, "5")]);
        let status = bounded(client.say_hello(request)).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    assert_eq!(backend.calls(), 10);
    proxy.shutdown().await;
}

/// A deadline that passes counts as a failure for the breaker (contract §4).
#[tokio::test(start_paused = true)]
async fn deadlines_count_as_breaker_failures() {
    let b = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let config = OneCluster::backends(&[&b])
        .route(r#"timeout = "100ms""#)
        .cluster("passive_health = { max_fails = 0 }\ncircuit_breaker = { min_requests = 2, failure_ratio = 1.0 }")
        .build();
    let proxy = start_local_proxy(&config);
    let mut client = GreeterClient::new(proxy.channel().await);
    for _ in 0..2 {
        let request = with_meta(hello("slow"), &[(meta::DELAY_MS, "1000")]);
        let status = bounded(client.say_hello(request)).await.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded);
    }
    let status = bounded(client.say_hello(hello("refused")))
        .await
        .unwrap_err();
    assert!(status.message().contains("is open"), "{}", status.message());
    proxy.shutdown().await;
}

/// `max_requests`: with two calls in flight the third is refused at once and no backend
/// sees it; when they end, calls flow again.
#[tokio::test(start_paused = true)]
async fn max_requests_refuses_calls_over_the_limit() {
    let (backend, proxy) = setup("max_requests = 2").await;
    let channel = proxy.channel().await;
    let slow = |channel: Channel| async move {
        let mut client = GreeterClient::new(channel);
        let request = with_meta(hello("slow"), &[(meta::DELAY_MS, "1000")]);
        client.say_hello(request).await
    };
    let first = tokio::spawn(slow(channel.clone()));
    let second = tokio::spawn(slow(channel.clone()));
    bounded(backend.wait_until(|b| b.in_flight() == 2)).await;
    let mut client = GreeterClient::new(channel.clone());
    let status = bounded(client.say_hello(hello("third"))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status
            .message()
            .contains("cluster main is at max_requests (2 calls in flight)"),
        "{}",
        status.message()
    );
    assert_eq!(backend.calls(), 2);
    bounded(first).await.unwrap().unwrap();
    bounded(second).await.unwrap().unwrap();
    bounded(client.say_hello(hello("after"))).await.unwrap();
    assert_eq!(backend.calls(), 3);
    proxy.shutdown().await;
}
