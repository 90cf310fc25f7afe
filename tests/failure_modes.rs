//! How upstream failures reach the client (issue 7's list), each with a backend that
//! fails that way: dies before responding, dies after the response headers, answers an
//! HTML 502, is killed under load; and HTTP/1.1 clusters retried as HTTP/2 ones are.
//! (GOAWAY, REFUSED_STREAM and a stream limit are in `failover.rs`; a backend that never
//! answers in `errors.rs` and `retries.rs`; a hung backend process, stopped with SIGSTOP,
//! in `crates/rpcgate/tests/cli.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::http::http1_request;
use common::{
    OneCluster, TestProxy, address_list, bounded, dead_address, hello, served_by,
    start_local_proxy, start_proxy, text, with_meta,
};
use http::{Request, StatusCode};
use rpcgate_demo::pb::helloworld::{HelloStreamRequest, greeter_client::GreeterClient};
use rpcgate_demo::{BackendHandle, meta};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic::Code;

const RETRY: &str = r#"retry = { max_attempts = 3, on = ["unavailable"], base_interval = "10ms" }"#;
const NO_PASSIVE: &str = "passive_health = { max_fails = 0 }";

/// Two demo backends behind a local proxy, passive health off, with the retry policy on
/// UNAVAILABLE when `retry`.
async fn two_backends(retry: bool) -> (BackendHandle, BackendHandle, TestProxy) {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let config = OneCluster::backends(&[&b1, &b2])
        .route(if retry { RETRY } else { "" })
        .cluster(NO_PASSIVE)
        .build();
    let proxy = start_local_proxy(&config);
    (b1, b2, proxy)
}

/// A backend killed while it holds a call fails that call with UNAVAILABLE; with a retry
/// policy on UNAVAILABLE the call is made again on the other backend and succeeds.
#[tokio::test(start_paused = true)]
async fn a_backend_that_dies_before_responding() {
    for retry in [false, true] {
        let (b1, b2, proxy) = two_backends(retry).await;
        let mut client = GreeterClient::new(proxy.channel().await);
        let call = tokio::spawn(async move {
            let request = with_meta(
                hello("slow"),
                &[(meta::DELAY_MS, "1000"), (meta::DELAY_ATTEMPTS, "1")],
            );
            client.say_hello(request).await
        });
        bounded(async {
            loop {
                if b1.in_flight() + b2.in_flight() == 1 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        let (dying, other) = if b1.in_flight() == 1 {
            (&b1, &b2)
        } else {
            (&b2, &b1)
        };
        dying.kill().await;
        let result = bounded(call).await.unwrap();
        if retry {
            let reply = result.unwrap();
            assert_eq!(served_by(reply.metadata()), other.name());
            assert_eq!(
                text(reply.metadata(), "grpc-previous-rpc-attempts"),
                Some("1")
            );
        } else {
            assert_eq!(result.unwrap_err().code(), Code::Unavailable);
            assert_eq!(other.calls(), 0);
        }
        proxy.shutdown().await;
    }
}

/// A backend that dies after the response headers and a message: the stream ends with
/// trailers `grpc-status: 14`, never with a second response spliced in (even with a
/// retry policy, the other backend sees nothing).
#[tokio::test(start_paused = true)]
async fn a_backend_that_dies_after_the_response_headers() {
    let (b1, b2, proxy) = two_backends(true).await;
    let mut client = GreeterClient::new(proxy.channel().await);
    let request = HelloStreamRequest {
        name: "s".into(),
        count: 100,
        interval_ms: 100,
    };
    let mut stream = bounded(client.say_hello_stream(request))
        .await
        .unwrap()
        .into_inner();
    let first = bounded(stream.message()).await.unwrap().unwrap();
    let serving = if first.message.ends_with("b1") {
        &b1
    } else {
        &b2
    };
    let other = if first.message.ends_with("b1") {
        &b2
    } else {
        &b1
    };
    serving.kill().await;
    let status = loop {
        match bounded(stream.message()).await {
            Ok(Some(reply)) => assert!(reply.message.starts_with("Hello s"), "{}", reply.message),
            Ok(None) => panic!("the stream ended normally"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(other.calls(), 0, "a second response was spliced in");
    proxy.shutdown().await;
}

/// An HTML 502 from something in between: UNAVAILABLE for a gRPC client, and retried by a
/// policy on UNAVAILABLE.
#[tokio::test(start_paused = true)]
async fn an_html_502_is_unavailable_and_retried_by_policy() {
    for retry in [false, true] {
        let (_b1, _b2, proxy) = two_backends(retry).await;
        let mut client = GreeterClient::new(proxy.channel().await);
        let request = with_meta(
            hello("a"),
            &[(meta::HTTP_STATUS, "502"), (meta::FAIL_ATTEMPTS, "1")],
        );
        let result = bounded(client.say_hello(request)).await;
        if retry {
            let reply = result.unwrap();
            assert_eq!(
                text(reply.metadata(), "grpc-previous-rpc-attempts"),
                Some("1")
            );
        } else {
            let status = result.unwrap_err();
            assert_eq!(status.code(), Code::Unavailable);
            assert!(
                status.message().contains("HTTP 502"),
                "{}",
                status.message()
            );
        }
        proxy.shutdown().await;
    }
}

/// Under a bounded load of concurrent calls, one of three backends is killed: with a
/// retry policy on UNAVAILABLE no call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_under_load_fails_no_call_with_a_retry_policy() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let b3 = rpcgate_demo::spawn_backend("b3").await.unwrap();
    let config = OneCluster::backends(&[&b1, &b2, &b3])
        .route(r#"retry = { max_attempts = 3, on = ["unavailable"], base_interval = "5ms", budget_ratio = 1.0 }"#)
        .build();
    let proxy = start_proxy(&config);
    let channel = proxy.channel().await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = GreeterClient::new(channel);
            let mut failures = Vec::new();
            for _ in 0..25 {
                let request = with_meta(hello(&format!("c{i}")), &[(meta::DELAY_MS, "20")]);
                if let Err(status) = client.say_hello(request).await {
                    failures.push(status);
                }
            }
            failures
        }));
    }
    // Kill b2 while it holds calls.
    bounded(b2.wait_until(|b| b.in_flight() >= 2 && b.calls() >= 20)).await;
    b2.kill().await;
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(
        failures.is_empty(),
        "{} calls failed: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(b1.calls() + b3.calls() >= 400 - b2.calls());
    proxy.shutdown().await;
}

/// A raw HTTP/1.1 server that answers each POST with the body it read (by
/// `content-length`).
async fn body_echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
                    if let Some(end) = head_end {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            let body = buf[end + 4..end + 4 + length].to_vec();
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                                body.len()
                            );
                            let _ = tcp.write_all(answer.as_bytes()).await;
                            let _ = tcp.write_all(&body).await;
                            return;
                        }
                    }
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// HTTP/1.1 clusters get the same transparent retry as HTTP/2: with one of two REST
/// backends dead, POSTs with a body are sent again to the live one (the dead one never
/// saw them), body intact; a body over the 64 KiB replay buffer is not replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_posts_with_a_body_are_retried_past_a_dead_backend() {
    let echo = body_echo_server().await;
    let config = OneCluster::new(address_list(&[dead_address(), echo]))
        .cluster(format!("protocol = \"http1\"\n{NO_PASSIVE}"))
        .build();
    let proxy = start_proxy(&config);
    for i in 0..6 {
        let body = format!("order number {i}");
        let request = Request::post("/orders")
            .header("host", "api.example.com")
            .header("content-type", "application/json")
            .body(body.clone())
            .unwrap();
        let (head, got) = http1_request(proxy.addr, request).await;
        assert_eq!(head.status, StatusCode::OK, "call {i}");
        assert_eq!(got, body.as_bytes(), "call {i}");
    }
    // Too large to replay: when the dead backend is tried first, the call fails (503).
    let mut unavailable = 0;
    for _ in 0..4 {
        let body = "x".repeat(100 * 1024);
        let request = Request::post("/upload")
            .header("host", "api")
            .body(body.clone())
            .unwrap();
        let (head, got) = http1_request(proxy.addr, request).await;
        match head.status {
            StatusCode::OK => assert_eq!(got.len(), body.len()),
            StatusCode::SERVICE_UNAVAILABLE => unavailable += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        unavailable >= 1,
        "round robin sends some of them to the dead backend first"
    );
    proxy.shutdown().await;
}
