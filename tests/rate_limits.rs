//! `rate_limit` on listeners and routes: calls over the bucket get RESOURCE_EXHAUSTED
//! with `grpc-retry-pushback-ms` (or HTTP 429 with `retry-after`) and never reach a
//! backend; each client address has its own bucket; the per-client buckets stay bounded
//! however many addresses call (many sources from 127.0.0.0/8).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::raw_h2::{RawConn, RawReply, connect_from, grpc_head, raw_unary};
use common::rss::RssPeak;
use common::{OneCluster, TestProxy, WAIT, start_proxy};
use rpcgate_demo::pb::helloworld::{HelloRequest, greeter_client::GreeterClient};
use tokio::time::timeout;

/// One SayHello on `conn`.
async fn call(conn: &RawConn, to: SocketAddr) -> RawReply {
    timeout(WAIT, raw_unary(&conn.send, grpc_head(to, &[])))
        .await
        .unwrap()
        .unwrap()
}

/// One SayHello from the local address `from` on a connection of its own.
async fn call_from(from: &str, to: SocketAddr) -> RawReply {
    let conn = connect_from(from, to).await;
    call(&conn, to).await
}

/// Polls the admin API until `metric` has `want`, or fails after a bound.
async fn wait_for_metric(proxy: &TestProxy, metric: &str, labels: &[(&str, &str)], want: f64) {
    let waited = timeout(Duration::from_secs(10), async {
        loop {
            if proxy.metric(metric, labels).await == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{metric}{labels:?} never became {want}: {:?}",
        proxy.metric(metric, labels).await
    );
}

#[tokio::test]
async fn a_route_limit_refuses_over_the_burst_with_a_pushback_hint() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let config = OneCluster::backends(&[&backend])
        .route(
            r#"name = "hello"
rate_limit = { requests_per_second = 1, burst = 3 }"#,
        )
        .admin()
        .build();
    let proxy = start_proxy(&config);
    let to = proxy.addr;

    let conn = connect_from("127.0.0.2", to).await;
    for _ in 0..3 {
        assert_eq!(call(&conn, to).await.grpc_status, Some(0));
    }
    let refused = call(&conn, to).await;
    assert_eq!(refused.grpc_status, Some(8), "{refused:?}");
    let message = refused.headers["grpc-message"].to_str().unwrap();
    assert!(
        message
            .contains("rate limit of route hello exceeded (1 call/s, burst 3, per client address)"),
        "{message}"
    );
    let pushback: u64 = refused.headers["grpc-retry-pushback-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1000).contains(&pushback), "pushback {pushback} ms");
    // Another address has a bucket of its own.
    assert_eq!(call_from("127.0.0.3", to).await.grpc_status, Some(0));
    assert_eq!(backend.calls(), 4, "a refused call reached the backend");
    assert_eq!(
        proxy
            .metric(
                "rpcgate_rate_limited_total",
                &[("route", "hello"), ("limit", "route")]
            )
            .await,
        Some(1.0)
    );
    assert_eq!(
        proxy
            .metric(
                "rpcgate_requests_total",
                &[("route", "hello"), ("grpc_code", "RESOURCE_EXHAUSTED")]
            )
            .await,
        Some(1.0)
    );
    proxy.shutdown().await;
}

/// gRPC clients honour the hint: tonic (over the proxy) sees RESOURCE_EXHAUSTED with the
/// pushback in its metadata.
#[tokio::test]
async fn tonic_sees_resource_exhausted_and_the_pushback() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let config = OneCluster::backends(&[&backend])
        .listener("rate_limit = { requests_per_second = 0.5, burst = 1, per = \"listener\" }")
        .build();
    let proxy = start_proxy(&config);
    let mut client = GreeterClient::new(proxy.channel().await);
    client
        .say_hello(HelloRequest { name: "a".into() })
        .await
        .unwrap();
    let status = client
        .say_hello(HelloRequest { name: "b".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("rate limit of listener edge"));
    let pushback: u64 = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1000..=2000).contains(&pushback), "{pushback}");
    proxy.shutdown().await;
}

/// Plain HTTP gets 429 with `retry-after` in seconds, the route's response headers too;
/// the listener's limit counts calls no route takes as well.
#[tokio::test]
async fn http_gets_429_with_retry_after() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let config = OneCluster::backends(&[&backend])
        .listener("rate_limit = { requests_per_second = 0.5, burst = 1 }")
        .route_match("match.path_prefix = \"/api\"")
        .route("response_headers = { \"x-frame-options\" = \"DENY\" }")
        .admin()
        .build();
    let proxy = start_proxy(&config);
    let (first, _) = common::http::http1_get(proxy.addr, "/nothing-here", &[]).await;
    assert_eq!(first.status, 404);
    let (second, body) = common::http::http1_get(proxy.addr, "/api/x", &[]).await;
    assert_eq!(second.status, 429, "{}", String::from_utf8_lossy(&body));
    assert_eq!(second.headers["retry-after"], "2");
    assert_eq!(second.headers["x-frame-options"], "DENY");
    assert!(
        String::from_utf8_lossy(&body).contains("rate limit of listener edge exceeded"),
        "{body:?}"
    );
    assert_eq!(backend.calls(), 0);
    proxy.shutdown().await;
}

/// Many client addresses: idle buckets are dropped every second, and past `max_clients`
/// new addresses add nothing (calls share the crowd buckets); memory stays bounded and a
/// client of an unlimited route is served throughout.
#[tokio::test]
async fn many_source_addresses_keep_the_buckets_bounded() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    // The limited route; a second route without a limit for the fresh client.
    let config = OneCluster::backends(&[&backend])
        .route_match("match.method = \"helloworld.Greeter/SayHello\"")
        .route(
            r#"name = "limited"
rate_limit = { requests_per_second = 0.01, burst = 1, max_clients = 100 }"#,
        )
        .admin()
        .build()
        .replace(
            "[[clusters]]",
            "[[listeners.routes]]\nname = \"open\"\nmatch.path_prefix = \"/\"\ncluster = \"main\"\n\n[[clusters]]",
        );
    let proxy = start_proxy(&config);
    let to = proxy.addr;
    let labels = [("listener", "edge"), ("route", "limited")];
    let rss = RssPeak::start();

    // 150 addresses, one call each: every bucket is spent (no refill for 100 s).
    for i in 0..150u32 {
        let from = Ipv4Addr::from(0x7f01_0000 + i).to_string();
        assert_eq!(call_from(&from, to).await.grpc_status, Some(0), "{from}");
    }
    assert_eq!(
        proxy.metric("rpcgate_rate_limit_clients", &labels).await,
        Some(150.0)
    );
    // The next sweep sees the cap passed.
    wait_for_metric(&proxy, "rpcgate_rate_limit_crowded", &labels, 1.0).await;
    // 400 more addresses add no bucket.
    let mut refused = 0;
    for i in 0..400u32 {
        let from = Ipv4Addr::from(0x7f02_0000 + i).to_string();
        let status = call_from(&from, to).await.grpc_status;
        assert!(matches!(status, Some(0 | 8)), "{status:?}");
        refused += u32::from(status == Some(8));
    }
    assert!(
        refused > 0,
        "400 addresses sharing 1024 spent buckets were all served"
    );
    assert_eq!(
        proxy.metric("rpcgate_rate_limit_clients", &labels).await,
        Some(150.0)
    );
    // A fresh client of the open route is served at once.
    let open = connect_from("127.0.0.9", to).await;
    let reply = timeout(
        Duration::from_secs(2),
        raw_unary(
            &open.send,
            common::raw_h2::grpc_request(to, "/helloworld.Greeter/SayHelloStream", &[]),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(reply.grpc_status, Some(0));
    let growth = rss.growth();
    assert!(growth < 64 * 1024, "RSS grew by {growth} KiB");
    proxy.shutdown().await;
}

/// Buckets that are full again are dropped: after a burst from many addresses, the count
/// falls back to zero within a sweep or two.
#[tokio::test]
async fn idle_buckets_are_evicted() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let config = OneCluster::backends(&[&backend])
        .listener("rate_limit = { requests_per_second = 1, burst = 1 }")
        .admin()
        .build();
    let proxy = start_proxy(&config);
    for i in 0..200u32 {
        let from = Ipv4Addr::from(0x7f03_0000 + i).to_string();
        assert_eq!(call_from(&from, proxy.addr).await.grpc_status, Some(0));
    }
    let labels = [("listener", "edge"), ("route", "")];
    assert!(
        proxy
            .metric("rpcgate_rate_limit_clients", &labels)
            .await
            .unwrap()
            > 0.0,
        "no bucket tracked"
    );
    wait_for_metric(&proxy, "rpcgate_rate_limit_clients", &labels, 0.0).await;
    proxy.shutdown().await;
}
