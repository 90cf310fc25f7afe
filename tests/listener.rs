//! End-to-end tests of a listener's protocol handling and limits (contract §2 `[[listeners]]`):
//! HTTP/1.1 and HTTP/2 prior knowledge on one port, `max_connections`,
//! `max_concurrent_streams`, `max_header_bytes`, `idle_timeout`, and `server.workers`.
//!
//! Limits are observed from the client side with a raw `h2` client, which shows what the
//! proxy announced and did (SETTINGS, 431/reset, GOAWAY and close) without a gRPC library
//! in between.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::http::body_text;
use common::raw_h2::{RawConn, grpc_head, raw_connect, raw_unary};
use common::{OneCluster, TestProxy, WAIT, bounded, start_local_proxy, start_proxy};
use http::StatusCode;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use rpcgate_demo::pb::helloworld::{HelloRequest, greeter_client::GreeterClient};
use rpcgate_demo::{BackendHandle, meta, spawn_backend};
use tokio::time::{Instant, timeout};

/// A one-cluster config with these `[[listeners]]` keys (TOML lines) and workers.
fn listener_config(backend: &BackendHandle, workers: usize, listener_extra: &str) -> String {
    OneCluster::backends(&[backend])
        .workers(workers)
        .listener(listener_extra)
        .build()
}

/// A raw call that must succeed; returns the backend that served it.
async fn raw_ok(conn: &RawConn, addr: SocketAddr) -> String {
    let reply = timeout(WAIT, raw_unary(&conn.send, grpc_head(addr, &[])))
        .await
        .expect("call timed out")
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.grpc_status, Some(0), "{reply:?}");
    reply
        .headers
        .get(meta::BACKEND)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

async fn tonic_ok(proxy: &TestProxy) {
    let mut client = GreeterClient::new(proxy.channel().await);
    let reply = timeout(WAIT, client.say_hello(HelloRequest { name: "Ann".into() }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.get_ref().message, "Hello Ann from b1");
}

/// HTTP/1.1 and HTTP/2 with prior knowledge are both served on the one plaintext port.
#[tokio::test]
async fn http1_and_h2_prior_knowledge_share_the_port() {
    let backend = spawn_backend("b1").await.unwrap();
    let proxy = start_proxy(&listener_config(&backend, 2, ""));
    let url = format!("{}/some/page", proxy.url());

    let http1 = HttpClient::builder(TokioExecutor::new()).build_http::<String>();
    let response = timeout(WAIT, http1.get(url.parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_11);
    assert_eq!(
        body_text(response.into_body()).await.trim_end(),
        "Hello from b1"
    );

    let http2 = HttpClient::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<String>();
    let response = timeout(WAIT, http2.get(url.parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(
        body_text(response.into_body()).await.trim_end(),
        "Hello from b1"
    );

    tonic_ok(&proxy).await;
    assert_eq!(backend.calls(), 3);
    proxy.shutdown().await;
}

/// `max_connections = 2`: a third connection is refused at once (closed, not left
/// waiting until its deadline) and counted; once one of the first two closes, a new one
/// is served.
#[tokio::test]
async fn max_connections_refuses_the_third_at_once_and_counts_it() {
    let backend = spawn_backend("b1").await.unwrap();
    let config = OneCluster::backends(&[&backend])
        .workers(2)
        .listener("max_connections = 2")
        .admin()
        .build();
    let proxy = start_proxy(&config);
    let first = raw_connect(proxy.addr).await;
    let second = raw_connect(proxy.addr).await;
    raw_ok(&first, proxy.addr).await;
    raw_ok(&second, proxy.addr).await;

    // The third is closed by the proxy right away: reading sees the end of the stream.
    let mut third = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = timeout(WAIT, tokio::io::AsyncReadExt::read(&mut third, &mut buf))
        .await
        .expect("the third connection was left hanging");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(backend.calls(), 2);
    assert_eq!(
        proxy
            .metric("rpcgate_connections_refused_total", &[("listener", "edge")])
            .await,
        Some(1.0)
    );

    // Close the first connection: a new one is served.
    first.driver.abort();
    drop(first.send);
    // Once the proxy has seen it close (one connection open), a new one is served.
    bounded(async {
        while proxy
            .metric("rpcgate_connections_active", &[("listener", "edge")])
            .await
            != Some(1.0)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let fourth = raw_connect(proxy.addr).await;
    raw_ok(&fourth, proxy.addr).await;
    raw_ok(&second, proxy.addr).await;
    proxy.shutdown().await;
}

/// `max_concurrent_streams = 4` is announced to clients in SETTINGS, so they keep the
/// fifth concurrent stream waiting.
#[tokio::test]
async fn max_concurrent_streams_is_announced() {
    let backend = spawn_backend("b1").await.unwrap();
    let proxy = start_proxy(&listener_config(&backend, 2, "max_concurrent_streams = 4"));
    let conn = raw_connect(proxy.addr).await;
    // After a full exchange the server's SETTINGS have been applied.
    raw_ok(&conn, proxy.addr).await;
    assert_eq!(conn.send.current_max_send_streams(), 4);

    // Five slow calls: four run at once, the fifth starts only when one ends.
    let mut calls = Vec::new();
    for _ in 0..5 {
        let send = conn.send.clone();
        let head = grpc_head(proxy.addr, &[(meta::DELAY_MS, "500")]);
        calls.push(tokio::spawn(async move { raw_unary(&send, head).await }));
    }
    timeout(WAIT, backend.wait_until(|b| b.in_flight() >= 4))
        .await
        .unwrap();
    assert_eq!(backend.in_flight(), 4);
    for call in calls {
        let reply = timeout(WAIT, call).await.unwrap().unwrap().unwrap();
        assert_eq!(reply.grpc_status, Some(0));
    }
    proxy.shutdown().await;
}

/// `max_header_bytes = 4096`: a call with 8 KiB of metadata is refused (431 or a stream
/// reset) and never reaches the backend; a normal call on a new connection works.
#[tokio::test]
async fn oversized_headers_are_refused() {
    let backend = spawn_backend("b1").await.unwrap();
    let proxy = start_proxy(&listener_config(&backend, 2, "max_header_bytes = 4096"));

    let conn = raw_connect(proxy.addr).await;
    let big_value = "a".repeat(8 * 1024);
    let big = [("x-big", big_value.as_str())];
    let outcome = timeout(WAIT, raw_unary(&conn.send, grpc_head(proxy.addr, &big)))
        .await
        .expect("an oversized request hung");
    match outcome {
        Ok(reply) => assert_eq!(
            reply.status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "{reply:?}"
        ),
        Err(error) => assert!(
            error.is_reset() || error.is_go_away() || error.is_io(),
            "unexpected error: {error:?}"
        ),
    }
    assert_eq!(backend.calls(), 0, "the oversized call reached the backend");

    // Within the limit is fine, and a fresh client is served.
    let fresh = raw_connect(proxy.addr).await;
    let medium_value = "a".repeat(2 * 1024);
    let medium = [("x-medium", medium_value.as_str())];
    let reply = timeout(WAIT, raw_unary(&fresh.send, grpc_head(proxy.addr, &medium)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.grpc_status, Some(0), "{reply:?}");
    assert_eq!(raw_ok(&fresh, proxy.addr).await, "b1");
    proxy.shutdown().await;
}

/// `idle_timeout`: a connection with no call for that long is closed by the proxy
/// (GOAWAY, then the close the client's driver sees); a call longer than the timeout is
/// not cut. On the paused clock: the proxy runs on the test's runtime.
#[tokio::test(start_paused = true)]
async fn idle_connections_are_closed() {
    let backend = spawn_backend("b1").await.unwrap();
    let proxy = start_local_proxy(&listener_config(&backend, 2, r#"idle_timeout = "200ms""#));

    // A call that outlasts the idle timeout completes.
    let busy = raw_connect(proxy.addr).await;
    let reply = timeout(
        WAIT,
        raw_unary(
            &busy.send,
            grpc_head(proxy.addr, &[(meta::DELAY_MS, "600")]),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(reply.grpc_status, Some(0));

    let idle = raw_connect(proxy.addr).await;
    raw_ok(&idle, proxy.addr).await;
    let last_call = Instant::now();
    let ended = timeout(WAIT, idle.driver)
        .await
        .expect("the idle connection was never closed");
    let idle_for = last_call.elapsed();
    assert!(ended.is_ok(), "driver task failed: {ended:?}");
    assert!(
        idle_for >= Duration::from_millis(150),
        "closed after {idle_for:?}, before the idle timeout"
    );
    assert!(
        idle_for <= Duration::from_millis(400),
        "closed after {idle_for:?}, long after the idle timeout"
    );
    // The busy connection went idle too after its call.
    timeout(WAIT, busy.driver).await.unwrap().unwrap().ok();
    proxy.shutdown().await;
}

/// `max_connection_age`: a busy connection is told to go (GOAWAY) after the age ±10%,
/// while its call in flight finishes; a long-lived tonic client reconnects by itself and
/// none of its calls fails, so over time its calls ride new connections (which a fleet of
/// proxies would spread over its members). On the paused clock.
#[tokio::test(start_paused = true)]
async fn max_connection_age_moves_long_lived_clients_to_new_connections() {
    let backend = spawn_backend("b1").await.unwrap();
    let config = OneCluster::backends(&[&backend])
        .listener(r#"max_connection_age = "10s""#)
        .admin()
        .build();
    let proxy = start_local_proxy(&config);

    // A raw connection with a call in flight across its age: the call finishes, then the
    // connection ends (the proxy's GOAWAY), between 9 and 11 s after it was made.
    let conn = raw_connect(proxy.addr).await;
    let opened = Instant::now();
    let reply = timeout(
        WAIT * 2,
        raw_unary(
            &conn.send,
            grpc_head(proxy.addr, &[(meta::DELAY_MS, "10500")]),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(reply.grpc_status, Some(0));
    timeout(WAIT * 2, conn.driver).await.unwrap().unwrap().ok();
    let lived = opened.elapsed();
    assert!(
        lived >= Duration::from_secs(9) && lived <= Duration::from_millis(11_600),
        "lived {lived:?}"
    );

    // A tonic client calling for a minute: every call succeeds, over several connections.
    let mut client = GreeterClient::new(proxy.channel().await);
    let before = proxy
        .metric("rpcgate_connections_total", &[("listener", "edge")])
        .await
        .unwrap();
    for _ in 0..60 {
        let reply = timeout(WAIT, client.say_hello(HelloRequest { name: "Ann".into() }))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply.get_ref().message, "Hello Ann from b1");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let after = proxy
        .metric("rpcgate_connections_total", &[("listener", "edge")])
        .await
        .unwrap();
    assert!(after - before >= 4.0, "{before} -> {after} connections");
    proxy.shutdown().await;
}

/// A TCP forwarder on 127.0.0.1:0 (an L4 balancer in front of a fleet of proxies): each
/// new connection goes to the address in `target` at the time it is made.
async fn l4_forwarder(target: Arc<Mutex<SocketAddr>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let to = *target.lock().unwrap();
            tokio::spawn(async move {
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    addr
}

/// The point of `max_connection_age`: a long-lived client behind an L4 balancer moves to
/// the proxies (and their backends) that joined after it connected. Proxy A (backend a)
/// is the only one when the client connects; then the balancer sends new connections to
/// proxy B (backend b); once A ages the client's connection out, its calls go to b, and
/// none fails. On the paused clock.
#[tokio::test(start_paused = true)]
async fn an_aged_out_client_moves_to_the_new_proxies_behind_an_l4_balancer() {
    let a = spawn_backend("a").await.unwrap();
    let b = spawn_backend("b").await.unwrap();
    let aged = |backend: &BackendHandle| {
        OneCluster::backends(&[backend])
            .listener(r#"max_connection_age = "10s""#)
            .build()
    };
    let proxy_a = start_local_proxy(&aged(&a));
    let proxy_b = start_local_proxy(&aged(&b));
    let target = Arc::new(Mutex::new(proxy_a.addr));
    let front = l4_forwarder(target.clone()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{front}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = GreeterClient::new(channel);
    let mut served = Vec::new();
    for second in 0..30 {
        if second == 2 {
            // The fleet changes: new connections now go to proxy B.
            *target.lock().unwrap() = proxy_b.addr;
        }
        let reply = timeout(WAIT, client.say_hello(HelloRequest { name: "Ann".into() }))
            .await
            .unwrap()
            .unwrap();
        served.push(reply.get_ref().message.clone());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        served[..2].iter().all(|m| m.ends_with("from a")),
        "{served:?}"
    );
    assert!(
        served[25..].iter().all(|m| m.ends_with("from b")),
        "{served:?}"
    );
    proxy_a.shutdown().await;
    proxy_b.shutdown().await;
}

/// `server.workers = 2`: many client connections, all served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_serve_many_connections() {
    let backend = spawn_backend("b1").await.unwrap();
    let proxy = start_proxy(&listener_config(&backend, 2, ""));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move {
            let conn = raw_connect(addr).await;
            for _ in 0..5 {
                assert_eq!(raw_ok(&conn, addr).await, "b1");
            }
        }));
    }
    for task in tasks {
        timeout(WAIT, task).await.unwrap().unwrap();
    }
    assert_eq!(backend.calls(), 40);
    proxy.shutdown().await;
}
