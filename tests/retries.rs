//! Retries by policy (`route.retry`, contract §4) through the real proxy, on tokio's paused
//! clock: only the listed codes, at most `max_attempts`, backoff inside the deadline,
//! `per_try_timeout`, the retry budget, never once a message reached the client or when
//! the request is too large to replay, and `grpc-previous-rpc-attempts` on retried calls.
//!
//! The demo backends fail (or delay) only the first N attempts of a call when asked
//! (`x-fail-attempts`, `x-delay-attempts`): a flaky backend that recovers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::time::Duration;

use common::{
    OneCluster, TestProxy, bounded, hello, served_by, start_local_proxy, text, with_meta,
};
use rpcgate_demo::pb::helloworld::{
    HelloRequest, HelloStreamRequest, greeter_client::GreeterClient,
};
use rpcgate_demo::{BackendHandle, meta};
use tokio::time::Instant;
use tonic::Code;

/// Two demo backends and a local proxy whose route has `retry = { retry }`; passive
/// health is off so that only the retry policy decides where calls go.
async fn setup(retry: &str, route_extra: &str) -> (BackendHandle, BackendHandle, TestProxy) {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let config = OneCluster::backends(&[&b1, &b2])
        .route(format!("retry = {{ {retry} }}\n{route_extra}"))
        .cluster("passive_health = { max_fails = 0 }")
        .build();
    let proxy = start_local_proxy(&config);
    (b1, b2, proxy)
}

fn calls(backends: &[&BackendHandle]) -> u64 {
    backends.iter().map(|b| b.calls()).sum()
}

/// A flaky backend's UNAVAILABLE is retried with the backoff asked for until OK: two
/// failures, two waits of exactly 1 s (linear, no jitter), the third attempt answers.
#[tokio::test(start_paused = true)]
async fn unavailable_is_retried_with_backoff_until_ok() {
    let (b1, b2, proxy) = setup(
        r#"max_attempts = 3, on = ["unavailable"], backoff = "linear", base_interval = "1s", max_interval = "1s", jitter = false"#,
        "",
    )
    .await;
    let mut client = GreeterClient::new(proxy.channel().await);
    let started = Instant::now();
    let request = with_meta(
        hello("flaky"),
        &[(meta::FAIL_CODE, "14"), (meta::FAIL_ATTEMPTS, "2")],
    );
    let reply = bounded(client.say_hello(request)).await.unwrap();
    let took = started.elapsed();
    assert!(reply.get_ref().message.starts_with("Hello flaky from b"));
    assert_eq!(
        text(reply.metadata(), "grpc-previous-rpc-attempts"),
        Some("2")
    );
    assert_eq!(calls(&[&b1, &b2]), 3);
    // The second attempt prefers the endpoint not tried yet.
    assert!(
        b1.calls() >= 1 && b2.calls() >= 1,
        "{} {}",
        b1.calls(),
        b2.calls()
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(2_100),
        "{took:?}"
    );
    proxy.shutdown().await;
}

/// Codes the policy does not list are answered at once, without a retry or the header.
#[tokio::test(start_paused = true)]
async fn codes_not_listed_are_not_retried() {
    let (b1, b2, proxy) = setup(r#"on = ["unavailable"], jitter = false"#, "").await;
    let mut client = GreeterClient::new(proxy.channel().await);
    let request = with_meta(hello("a"), &[(meta::FAIL_CODE, "5")]);
    let status = bounded(client.say_hello(request)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status
            .metadata()
            .get("grpc-previous-rpc-attempts")
            .is_none()
    );
    assert_eq!(calls(&[&b1, &b2]), 1);
    proxy.shutdown().await;
}

/// At most `max_attempts` attempts; the client then gets the last attempt's status.
#[tokio::test(start_paused = true)]
async fn max_attempts_bounds_the_retries() {
    let (b1, b2, proxy) = setup(
        r#"max_attempts = 4, on = ["unavailable", "resource_exhausted"], base_interval = "10ms""#,
        "",
    )
    .await;
    let mut client = GreeterClient::new(proxy.channel().await);
    let request = with_meta(
        hello("a"),
        &[(meta::FAIL_CODE, "8"), (meta::FAIL_ATTEMPTS, "100")],
    );
    let status = bounded(client.say_hello(request)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(calls(&[&b1, &b2]), 4);
    proxy.shutdown().await;
}

/// Exponential backoff with full jitter: every wait is at most its cap, so three retries
/// of base 100 ms take at most 100 + 200 + 400 ms.
#[tokio::test(start_paused = true)]
async fn jittered_exponential_backoff_stays_under_its_caps() {
    let (b1, b2, proxy) = setup(
        r#"max_attempts = 4, backoff = "exponential", base_interval = "100ms", max_interval = "1s", jitter = true, budget_ratio = 1.0"#,
        "",
    )
    .await;
    let mut client = GreeterClient::new(proxy.channel().await);
    // The budget allows at most one retry per recent call: 20 calls first make room for
    // the 15 retries below.
    for _ in 0..20 {
        bounded(client.say_hello(hello("warm"))).await.unwrap();
    }
    for _ in 0..5 {
        let started = Instant::now();
        let request = with_meta(
            hello("a"),
            &[(meta::FAIL_CODE, "14"), (meta::FAIL_ATTEMPTS, "3")],
        );
        let reply = bounded(client.say_hello(request)).await.unwrap();
        assert_eq!(
            text(reply.metadata(), "grpc-previous-rpc-attempts"),
            Some("3")
        );
        assert!(
            started.elapsed() <= Duration::from_millis(700),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(calls(&[&b1, &b2]), 40);
    proxy.shutdown().await;
}

/// Retries and their backoff stay inside the call's deadline: with a 500 ms route timeout
/// and 400 ms waits, one retry fits and a second does not; the client gets the status of
/// the last attempt, before its deadline.
#[tokio::test(start_paused = true)]
async fn retries_stay_inside_the_deadline() {
    let (b1, b2, proxy) = setup(
        r#"max_attempts = 5, backoff = "linear", base_interval = "400ms", max_interval = "400ms", jitter = false"#,
        r#"timeout = "500ms""#,
    )
    .await;
    let mut client = GreeterClient::new(proxy.channel().await);
    let started = Instant::now();
    let request = with_meta(
        hello("a"),
        &[(meta::FAIL_CODE, "14"), (meta::FAIL_ATTEMPTS, "100")],
    );
    let status = bounded(client.say_hello(request)).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(calls(&[&b1, &b2]), 2);
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(500),
        "{took:?}"
    );
    // Each attempt was told the time left (the deadline is re-sent as grpc-timeout).
    let seen = b1.last_request().or_else(|| b2.last_request()).unwrap();
    let left = rpcgate_proxy::deadline::parse_grpc_timeout(
        seen.headers.get("grpc-timeout").unwrap().as_bytes(),
    )
    .unwrap();
    assert!(left <= Duration::from_millis(500), "{left:?}");
    proxy.shutdown().await;
}

/// `per_try_timeout`: an attempt that has not answered in time is cancelled (the backend
/// sees the cancel) and retried; the retry answers.
#[tokio::test(start_paused = true)]
async fn per_try_timeout_cancels_the_attempt_and_retries() {
    let (b1, b2, proxy) = setup(
        r#"per_try_timeout = "200ms", base_interval = "10ms", jitter = false"#,
        "",
    )
    .await;
    let mut client = GreeterClient::new(proxy.channel().await);
    let started = Instant::now();
    let request = with_meta(
        hello("slow"),
        &[(meta::DELAY_MS, "60000"), (meta::DELAY_ATTEMPTS, "1")],
    );
    let reply = bounded(client.say_hello(request)).await.unwrap();
    let took = started.elapsed();
    assert_eq!(
        text(reply.metadata(), "grpc-previous-rpc-attempts"),
        Some("1")
    );
    assert!(
        took >= Duration::from_millis(210) && took < Duration::from_millis(300),
        "{took:?}"
    );
    bounded(async {
        b1.wait_until(|b| b.in_flight() == 0).await;
        b2.wait_until(|b| b.in_flight() == 0).await;
    })
    .await;
    assert_eq!(
        b1.cancelled() + b2.cancelled(),
        1,
        "the slow attempt was cancelled"
    );
    proxy.shutdown().await;
}

/// A request over the 64 KiB replay buffer is not retried: one attempt, its status.
#[tokio::test(start_paused = true)]
async fn a_request_too_large_to_replay_is_not_retried() {
    let (b1, b2, proxy) = setup(r#"max_attempts = 3, base_interval = "10ms""#, "").await;
    let mut client = GreeterClient::new(proxy.channel().await);
    let big = HelloRequest {
        name: "x".repeat(100 * 1024),
    };
    let request = with_meta(big, &[(meta::FAIL_CODE, "14"), (meta::FAIL_ATTEMPTS, "1")]);
    let status = bounded(client.say_hello(request)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(calls(&[&b1, &b2]), 1);
    // The same call small enough is retried.
    let request = with_meta(
        hello("small"),
        &[(meta::FAIL_CODE, "14"), (meta::FAIL_ATTEMPTS, "1")],
    );
    bounded(client.say_hello(request)).await.unwrap();
    assert_eq!(calls(&[&b1, &b2]), 3);
    proxy.shutdown().await;
}

/// A stream that fails before its first message (headers, then trailers with the status)
/// is still retried: its response head was held.
#[tokio::test(start_paused = true)]
async fn a_stream_failing_before_its_first_message_is_retried() {
    let (b1, b2, proxy) = setup(r#"base_interval = "10ms""#, "").await;
    let mut client = GreeterClient::new(proxy.channel().await);
    let request = with_meta(
        HelloStreamRequest {
            name: "s".into(),
            count: 3,
            interval_ms: 1,
        },
        &[
            (meta::FAIL_CODE, "14"),
            (meta::FAIL_AFTER, "0"),
            (meta::FAIL_ATTEMPTS, "1"),
        ],
    );
    let response = bounded(client.say_hello_stream(request)).await.unwrap();
    assert_eq!(
        text(response.metadata(), "grpc-previous-rpc-attempts"),
        Some("1")
    );
    let mut stream = response.into_inner();
    let mut replies = 0;
    while let Some(reply) = bounded(stream.message()).await.unwrap() {
        assert!(reply.message.contains("Hello s"));
        replies += 1;
    }
    assert_eq!(replies, 3);
    assert_eq!(calls(&[&b1, &b2]), 2);
    proxy.shutdown().await;
}

/// Once a message has gone to the client the call is never retried: the client gets the
/// messages and then the status.
#[tokio::test(start_paused = true)]
async fn a_stream_that_sent_a_message_is_never_retried() {
    let (b1, b2, proxy) = setup(r#"base_interval = "10ms""#, "").await;
    let mut client = GreeterClient::new(proxy.channel().await);
    let request = with_meta(
        HelloStreamRequest {
            name: "s".into(),
            count: 10,
            interval_ms: 1,
        },
        &[
            (meta::FAIL_CODE, "14"),
            (meta::FAIL_AFTER, "2"),
            (meta::FAIL_ATTEMPTS, "1"),
        ],
    );
    let mut stream = bounded(client.say_hello_stream(request))
        .await
        .unwrap()
        .into_inner();
    let mut replies = 0;
    let status = loop {
        match bounded(stream.message()).await {
            Ok(Some(_)) => replies += 1,
            Ok(None) => panic!("the stream ended without its failure"),
            Err(status) => break status,
        }
    };
    assert_eq!(replies, 2);
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(calls(&[&b1, &b2]), 1);
    proxy.shutdown().await;
}

/// The retry budget caps retries at `budget_ratio` of the route's recent calls (with a
/// small floor, so a quiet route can still retry): 30 failing calls at ratio 0.1 make 3
/// retries, not 30.
#[tokio::test(start_paused = true)]
async fn the_retry_budget_caps_retries() {
    let (b1, b2, proxy) = setup(
        r#"max_attempts = 2, base_interval = "1ms", jitter = false, budget_ratio = 0.1"#,
        "",
    )
    .await;
    let mut client = GreeterClient::new(proxy.channel().await);
    for _ in 0..30 {
        let request = with_meta(
            hello("a"),
            &[(meta::FAIL_CODE, "14"), (meta::FAIL_ATTEMPTS, "100")],
        );
        let status = bounded(client.say_hello(request)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
    }
    let retries = calls(&[&b1, &b2]) - 30;
    assert!((3..=4).contains(&retries), "{retries} retries");
    proxy.shutdown().await;
}

/// Without a retry policy nothing is retried (beyond the transparent retries) and no
/// `grpc-previous-rpc-attempts` appears.
#[tokio::test(start_paused = true)]
async fn a_route_without_policy_does_not_retry() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let proxy = start_local_proxy(&OneCluster::backends(&[&b1]).build());
    let mut client = GreeterClient::new(proxy.channel().await);
    let request = with_meta(
        hello("a"),
        &[(meta::FAIL_CODE, "14"), (meta::FAIL_ATTEMPTS, "1")],
    );
    let status = bounded(client.say_hello(request)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(b1.calls(), 1);
    let reply = bounded(client.say_hello(hello("b"))).await.unwrap();
    assert_eq!(served_by(reply.metadata()), "b1");
    assert!(reply.metadata().get("grpc-previous-rpc-attempts").is_none());
    proxy.shutdown().await;
}

/// When only endpoints whose connect failed are left, the call ends with the last answer
/// a backend gave, not with the connect error.
#[tokio::test(start_paused = true)]
async fn the_last_answer_stands_when_only_dead_endpoints_are_left() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let dead = common::dead_address();
    let config = OneCluster::new(format!("\"{dead}\", \"{}\"", b1.addr()))
        .route(r#"retry = { max_attempts = 3, base_interval = "10ms" }"#)
        .cluster("passive_health = { max_fails = 0 }")
        .build();
    let proxy = start_local_proxy(&config);
    let mut client = GreeterClient::new(proxy.channel().await);
    let request = with_meta(
        hello("a"),
        &[(meta::FAIL_CODE, "14"), (meta::FAIL_ATTEMPTS, "100")],
    );
    let status = bounded(client.say_hello(request)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        !status.message().contains("connect"),
        "{}",
        status.message()
    );
    assert!(b1.calls() >= 1);
    proxy.shutdown().await;
}
