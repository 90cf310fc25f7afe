//! End-to-end errors (contract §3, the errors the proxy produces): every code the proxy
//! makes, in the trailers-only shape for gRPC and as HTTP statuses for plain HTTP; the
//! mapping of an upstream's non-gRPC HTTP errors and of upstream resets; deadlines and
//! the `grpc-timeout` forwarded upstream; no `server` header.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use common::http::spawn_h2c_server;
use common::raw_h2::{grpc_frame, grpc_request, raw_connect};
use common::{OneCluster, TestProxy, bounded, dead_address, hello, text, with_meta};
use http::{HeaderMap, Response, StatusCode};
use rpcgate_demo::pb::helloworld::{HelloReply, HelloStreamRequest, greeter_client::GreeterClient};
use rpcgate_demo::{BackendHandle, meta};
use tonic::{Code, Request as GrpcRequest, Status, Streaming};

/// A config with one listener whose routes send `/helloworld.Greeter/` to cluster
/// `main` (with extra route keys) and nothing else anywhere; `main` has `endpoints`.
fn config(endpoints: &str, route_extra: &str, cluster_extra: &str) -> String {
    OneCluster::new(endpoints)
        .route_match("match.service = \"helloworld.Greeter\"")
        .route(route_extra)
        .cluster(cluster_extra)
        .build()
}

fn backend_config(backend: &BackendHandle, route_extra: &str) -> String {
    config(&format!("\"{}\"", backend.addr()), route_extra, "")
}

/// A backend `b1` and a proxy in front of it ([`config`] with these extra keys).
async fn setup(route_extra: &str, cluster_extra: &str) -> (BackendHandle, TestProxy) {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let endpoints = format!("\"{}\"", backend.addr());
    let proxy = common::start_proxy(&config(&endpoints, route_extra, cluster_extra));
    (backend, proxy)
}

/// [`setup`] with the proxy on the test's runtime, for tests on the paused clock.
async fn setup_local(route_extra: &str) -> (BackendHandle, TestProxy) {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let endpoints = format!("\"{}\"", backend.addr());
    let proxy = common::start_local_proxy(&config(&endpoints, route_extra, ""));
    (backend, proxy)
}

/// Reads `stream` until it ends: how many replies came, and the error status that ended
/// it (`None` if it ended normally).
async fn replies_until_error(stream: &mut Streaming<HelloReply>) -> (usize, Option<Status>) {
    let mut replies = 0;
    loop {
        match bounded(stream.message()).await {
            Ok(Some(_)) => replies += 1,
            Ok(None) => return (replies, None),
            Err(status) => return (replies, Some(status)),
        }
    }
}

/// What a raw HTTP/2 client saw of a response.
#[derive(Debug)]
struct RawResponse {
    status: StatusCode,
    headers: HeaderMap,
    /// The response ended with its headers (END_STREAM on HEADERS): trailers-only.
    headers_only: bool,
}

/// One gRPC `SayHello` over a raw h2 connection (no tonic in between), with extra headers.
async fn raw_grpc(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    bounded(async {
        let conn = raw_connect(addr).await;
        let mut client = conn.send.ready().await.unwrap();
        let (response, mut send) = client
            .send_request(grpc_request(addr, path, headers), false)
            .unwrap();
        send.send_data(grpc_frame(&hello("raw")), true).unwrap();
        let response = response.await.unwrap();
        let (head, body) = response.into_parts();
        RawResponse {
            status: head.status,
            headers: head.headers,
            headers_only: body.is_end_stream(),
        }
    })
    .await
}

/// Asserts a proxy-made trailers-only gRPC error with `code`, and no `server` header.
fn assert_trailers_only(response: &RawResponse, code: u32) {
    assert_eq!(response.status, StatusCode::OK, "{response:?}");
    assert!(response.headers_only, "not trailers-only: {response:?}");
    assert_eq!(
        response.headers.get("grpc-status").unwrap(),
        code.to_string().as_str(),
        "{response:?}"
    );
    assert_eq!(
        response.headers.get("content-type").unwrap(),
        "application/grpc"
    );
    let message = response
        .headers
        .get("grpc-message")
        .expect("a grpc-message");
    assert!(!message.is_empty());
    assert_no_server_header(&response.headers);
}

/// rpcgate says nothing about itself (contract §3).
fn assert_no_server_header(headers: &HeaderMap) {
    assert!(
        headers.get("server").is_none(),
        "server header: {headers:?}"
    );
    for value in headers.values() {
        let value = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
        assert!(
            !value.contains("rpcgate/") && !value.contains(env!("CARGO_PKG_VERSION")),
            "a version in {headers:?}"
        );
    }
}

/// One plain HTTP/1.1 GET on a fresh connection: status, headers and body.
async fn http1_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let (head, body) = common::http::http1_get(addr, path, headers).await;
    (head.status, head.headers, body)
}

/// An h2c server that answers every request with the HTTP status in its `x-status`
/// header (502 by default), `text/html`, no gRPC status at all: a misbehaving backend
/// or an HTTP middlebox.
async fn spawn_http_error_server() -> SocketAddr {
    spawn_h2c_server(|request| {
        let status = request
            .headers()
            .get("x-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u16>().ok())
            .unwrap_or(502);
        Response::builder()
            .status(status)
            .header("content-type", "text/html")
            .body(format!("<html><body>error {status}</body></html>"))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn no_route_is_unimplemented_trailers_only() {
    let (backend, proxy) = setup("", "").await;

    let response = raw_grpc(proxy.addr, "/grpc.health.v1.Health/Check", &[]).await;
    assert_trailers_only(&response, 12);
    let message = response.headers["grpc-message"].to_str().unwrap();
    assert!(
        message.contains("/grpc.health.v1.Health/Check"),
        "{message}"
    );

    let (status, headers, body) = http1_get(proxy.addr, "/nothing", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_no_server_header(&headers);
    assert!(!String::from_utf8_lossy(&body).contains(env!("CARGO_PKG_VERSION")));
    assert_eq!(backend.calls(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn refused_connections_are_unavailable() {
    let dead = dead_address();
    let proxy = common::start_proxy(&config(&format!("\"{dead}\""), "", ""));

    let mut client = GreeterClient::new(proxy.channel().await);
    let status = bounded(client.say_hello(hello("a"))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("main"), "{status:?}");

    // Again (now in passive-health panic mode), raw: trailers-only.
    let response = raw_grpc(proxy.addr, "/helloworld.Greeter/SayHello", &[]).await;
    assert_trailers_only(&response, 14);

    let (status, headers, _) = http1_get(proxy.addr, "/helloworld.Greeter/SayHello", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_no_server_header(&headers);
    proxy.shutdown().await;
}

#[tokio::test]
async fn every_endpoint_refusing_is_unavailable() {
    let (a, b, c) = (dead_address(), dead_address(), dead_address());
    let proxy = common::start_proxy(&config(&format!("\"{a}\", \"{b}\", \"{c}\""), "", ""));
    let mut client = GreeterClient::new(proxy.channel().await);
    for _ in 0..3 {
        let status = bounded(client.say_hello(hello("a"))).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    proxy.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn client_deadline_is_deadline_exceeded_from_the_proxy() {
    let (backend, proxy) = setup_local("").await;

    // Raw h2, so that no client-side timer can produce the status: it is the proxy's.
    let started = Instant::now();
    let response = raw_grpc(
        proxy.addr,
        "/helloworld.Greeter/SayHello",
        &[("grpc-timeout", "200m"), (meta::DELAY_MS, "60000")],
    )
    .await;
    assert_trailers_only(&response, 4);
    assert!(started.elapsed() < Duration::from_secs(5));
    // On the paused clock: exactly the client's 200 ms.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(250),
        "{took:?}"
    );
    // The proxy gave up on the backend call too.
    bounded(backend.wait_until(|b| b.cancelled() == 1 && b.in_flight() == 0)).await;

    // Not with tonic: its client enforces `grpc-timeout` itself, starts the clock
    // earlier than the proxy and so always wins, ending the call as CANCELLED
    // ("Timeout expired") before the proxy's DEADLINE_EXCEEDED arrives.
    proxy.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn route_timeout_is_deadline_exceeded_without_a_client_deadline() {
    let (backend, proxy) = setup_local("timeout = \"100ms\"").await;

    let mut client = GreeterClient::new(proxy.channel().await);
    let started = Instant::now();
    let request = with_meta(hello("a"), &[(meta::DELAY_MS, "60000")]);
    let status = bounded(client.say_hello(request)).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(150),
        "{took:?}"
    );
    bounded(backend.wait_until(|b| b.cancelled() == 1 && b.in_flight() == 0)).await;

    let response = raw_grpc(
        proxy.addr,
        "/helloworld.Greeter/SayHello",
        &[(meta::DELAY_MS, "60000")],
    )
    .await;
    assert_trailers_only(&response, 4);

    // A fast call under the same route is fine, and the backend was told the deadline.
    let request = with_meta(hello("a"), &[(meta::ECHO_METADATA, "1")]);
    let reply = bounded(client.say_hello(request)).await.unwrap();
    let seen = text(reply.metadata(), meta::SEEN_GRPC_TIMEOUT).expect("a grpc-timeout");
    let seen = rpcgate_proxy::deadline::parse_grpc_timeout(seen.as_bytes()).unwrap();
    assert!(
        seen <= Duration::from_millis(100) && seen > Duration::ZERO,
        "{seen:?}"
    );

    // A plain HTTP request under the route: 504.
    let (status, headers, _) = http1_get(
        proxy.addr,
        "/helloworld.Greeter/SayHello",
        &[(meta::DELAY_MS, "60000")],
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_no_server_header(&headers);
    proxy.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn deadline_passing_mid_stream_ends_with_deadline_exceeded() {
    let (backend, proxy) = setup_local("timeout = \"300ms\"").await;
    let mut client = GreeterClient::new(proxy.channel().await);
    let request = HelloStreamRequest {
        name: "a".into(),
        count: 1000,
        interval_ms: 20,
    };
    let mut stream = bounded(client.say_hello_stream(request))
        .await
        .unwrap()
        .into_inner();
    let (replies, status) = replies_until_error(&mut stream).await;
    let status =
        status.unwrap_or_else(|| panic!("the stream ended normally after {replies} replies"));
    assert!(replies >= 1, "replies flowed before the deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    bounded(backend.wait_until(|b| b.cancelled() == 1 && b.in_flight() == 0)).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn forwarded_grpc_timeout_is_what_is_left_of_the_clients() {
    let (backend, proxy) = setup("", "").await;
    let mut client = GreeterClient::new(proxy.channel().await);
    let mut request = with_meta(hello("a"), &[(meta::ECHO_METADATA, "1")]);
    request.set_timeout(Duration::from_secs(5));
    bounded(client.say_hello(request)).await.unwrap();

    let seen = backend.last_request().unwrap();
    let forwarded = seen.headers.get("grpc-timeout").expect("a grpc-timeout");
    let forwarded = rpcgate_proxy::deadline::parse_grpc_timeout(forwarded.as_bytes()).unwrap();
    assert!(
        forwarded < Duration::from_secs(5) && forwarded > Duration::from_secs(4),
        "forwarded {forwarded:?}"
    );
    // A route timeout smaller than the client's wins.
    proxy.shutdown().await;
    let proxy = common::start_proxy(&backend_config(&backend, "timeout = \"2s\""));
    let mut client = GreeterClient::new(proxy.channel().await);
    let mut request = GrpcRequest::new(hello("a"));
    request.set_timeout(Duration::from_secs(5));
    bounded(client.say_hello(request)).await.unwrap();
    let seen = backend.last_request().unwrap();
    let forwarded = rpcgate_proxy::deadline::parse_grpc_timeout(
        seen.headers.get("grpc-timeout").unwrap().as_bytes(),
    )
    .unwrap();
    assert!(
        forwarded <= Duration::from_secs(2) && forwarded > Duration::from_secs(1),
        "forwarded {forwarded:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_http_errors_map_to_grpc_codes() {
    let server = spawn_http_error_server().await;
    let proxy = common::start_proxy(&config(
        &format!("\"{server}\""),
        "",
        // An HTTP error is a failure for passive health; keep every call going to it.
        "passive_health = { max_fails = 0 }",
    ));
    let mut client = GreeterClient::new(proxy.channel().await);
    for (http, grpc) in [
        ("502", Code::Unavailable),
        ("503", Code::Unavailable),
        ("504", Code::Unavailable),
        ("404", Code::Unimplemented),
    ] {
        let request = with_meta(hello("a"), &[("x-status", http)]);
        let status = bounded(client.say_hello(request)).await.unwrap_err();
        assert_eq!(status.code(), grpc, "HTTP {http}: {status:?}");

        let response = raw_grpc(
            proxy.addr,
            "/helloworld.Greeter/SayHello",
            &[("x-status", http)],
        )
        .await;
        assert_trailers_only(&response, grpc as u32);
    }

    // Plain HTTP gets the upstream's status and body as they are.
    let (status, headers, body) = http1_get(
        proxy.addr,
        "/helloworld.Greeter/SayHello",
        &[("x-status", "502")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers.get("content-type").unwrap(), "text/html");
    assert_eq!(&body[..], b"<html><body>error 502</body></html>");
    proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_reset_before_the_response_maps_per_reason() {
    let (_backend, proxy) = setup("", "passive_health = { max_fails = 0 }").await;
    let mut client = GreeterClient::new(proxy.channel().await);
    // CANCEL → 1, INTERNAL_ERROR → 13, REFUSED_STREAM → 14 (not processed; with a single
    // endpoint there is nowhere to retry).
    for (reason, code) in [
        ("8", Code::Cancelled),
        ("2", Code::Internal),
        ("7", Code::Unavailable),
    ] {
        let request = with_meta(hello("a"), &[(meta::RESET_STREAM, reason)]);
        let status = bounded(client.say_hello(request)).await.unwrap_err();
        assert_eq!(status.code(), code, "reset {reason}: {status:?}");

        let response = raw_grpc(
            proxy.addr,
            "/helloworld.Greeter/SayHello",
            &[(meta::RESET_STREAM, reason)],
        )
        .await;
        assert_trailers_only(&response, code as u32);
    }
    // The connection to the backend is still good.
    let reply = bounded(client.say_hello(hello("a"))).await.unwrap();
    assert_eq!(reply.get_ref().message, "Hello a from b1");
    proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_reset_mid_stream_maps_per_reason() {
    let (_backend, proxy) = setup("", "passive_health = { max_fails = 0 }").await;
    let mut client = GreeterClient::new(proxy.channel().await);
    for (reason, code) in [("8", Code::Cancelled), ("2", Code::Internal)] {
        let request = with_meta(
            HelloStreamRequest {
                name: "a".into(),
                count: 10,
                interval_ms: 20,
            },
            &[
                (meta::RESET_STREAM, reason),
                (meta::RESET_AFTER_FRAMES, "2"),
            ],
        );
        let mut stream = bounded(client.say_hello_stream(request))
            .await
            .unwrap()
            .into_inner();
        let (replies, status) = replies_until_error(&mut stream).await;
        let status = status.unwrap_or_else(|| panic!("reset {reason}: the stream ended normally"));
        assert_eq!(
            replies, 2,
            "reset {reason}: the frames before the reset arrive"
        );
        assert_eq!(status.code(), code, "reset {reason}: {status:?}");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_killed_backend_mid_stream_is_unavailable() {
    let (backend, proxy) = setup("", "").await;
    let mut client = GreeterClient::new(proxy.channel().await);
    let request = HelloStreamRequest {
        name: "a".into(),
        count: 1000,
        interval_ms: 20,
    };
    let mut stream = bounded(client.say_hello_stream(request))
        .await
        .unwrap()
        .into_inner();
    assert!(bounded(stream.message()).await.unwrap().is_some());
    backend.kill().await;
    let (_, status) = replies_until_error(&mut stream).await;
    let status = status.unwrap_or_else(|| panic!("the stream ended normally"));
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn proxied_responses_carry_no_server_header() {
    let (_backend, proxy) = setup("", "").await;
    let response = raw_grpc(proxy.addr, "/helloworld.Greeter/SayHello", &[]).await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(!response.headers_only);
    assert_no_server_header(&response.headers);
    let (_, headers, _) = http1_get(proxy.addr, "/helloworld.Greeter/SayHello", &[]).await;
    assert_no_server_header(&headers);
    proxy.shutdown().await;
}

#[tokio::test]
async fn grpc_message_is_percent_encoded() {
    let (_backend, proxy) = setup("", "").await;
    // The path holds a `%`, which grpc-message must encode as %25.
    let response = raw_grpc(proxy.addr, "/a%20b.Svc/M", &[]).await;
    assert_trailers_only(&response, 12);
    let message = response.headers["grpc-message"].to_str().unwrap();
    assert!(message.contains("/a%2520b.Svc/M"), "{message}");
    proxy.shutdown().await;
}

/// A route's `response_headers` (HSTS here) are on the proxy's own error answers too, not
/// only on the backend's (NGINX needs `add_header … always` for that).
#[tokio::test]
async fn route_response_headers_are_on_proxy_made_errors_too() {
    let config = OneCluster::new(format!("\"{}\"", dead_address()))
        .route(r#"response_headers = { "strict-transport-security" = "max-age=63072000" }"#)
        .build();
    let proxy = common::start_proxy(&config);
    let conn = raw_connect(proxy.addr).await;
    let reply = bounded(common::raw_h2::raw_unary(
        &conn.send,
        common::raw_h2::grpc_head(proxy.addr, &[]),
    ))
    .await
    .unwrap();
    assert_eq!(reply.grpc_status, Some(14), "{reply:?}");
    assert_eq!(
        reply.headers["strict-transport-security"], "max-age=63072000",
        "{reply:?}"
    );
    proxy.shutdown().await;
}
