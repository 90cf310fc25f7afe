//! `allow` / `deny` on listeners (decided once per connection at accept) and on routes:
//! a refused client's calls get PERMISSION_DENIED with a message naming its address, and
//! none reaches a backend; over IPv4 (several loopback addresses) and IPv6.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::net::SocketAddr;

use common::raw_h2::{RawConn, connect_from, grpc_head, raw_unary};
use common::{OneCluster, WAIT, start_proxy};
use tokio::time::timeout;

/// The gRPC status and message of one SayHello on `conn`.
async fn call(conn: &RawConn, to: SocketAddr) -> (u32, String) {
    let reply = timeout(WAIT, raw_unary(&conn.send, grpc_head(to, &[])))
        .await
        .unwrap()
        .unwrap();
    (
        reply.grpc_status.unwrap(),
        reply
            .headers
            .get("grpc-message")
            .map(|m| m.to_str().unwrap().to_owned())
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_listener_allows_and_denies_by_client_address() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let config = OneCluster::backends(&[&backend])
        .listener(
            r#"allow = ["127.0.0.0/8"]
deny = ["127.0.0.3"]"#,
        )
        .admin()
        .build();
    let proxy = start_proxy(&config);
    let to = proxy.addr;

    let allowed = connect_from("127.0.0.2", to).await;
    assert_eq!(call(&allowed, to).await.0, 0);
    let denied = connect_from("127.0.0.3", to).await;
    let (code, message) = call(&denied, to).await;
    assert_eq!(code, 7, "PERMISSION_DENIED expected: {message}");
    assert!(
        message.contains("client address 127.0.0.3 is not allowed on listener edge"),
        "{message}"
    );
    assert_eq!(backend.calls(), 1, "a denied call reached the backend");
    assert_eq!(
        proxy
            .metric("rpcgate_access_denied_total", &[("listener", "edge")])
            .await,
        Some(1.0)
    );
    // Each denied call is counted with its status too.
    assert_eq!(
        proxy
            .metric(
                "rpcgate_requests_total",
                &[("grpc_code", "PERMISSION_DENIED")]
            )
            .await,
        Some(1.0)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn ipv6_clients_are_matched_too() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let config = OneCluster::backends(&[&backend]).build().replace(
        "address = \"127.0.0.1:0\"",
        "address = \"[::1]:0\"\ndeny = [\"::1\"]",
    );
    let proxy = start_proxy(&config);
    let conn = connect_from("::1", proxy.addr).await;
    let (code, message) = call(&conn, proxy.addr).await;
    assert_eq!(code, 7, "{message}");
    assert!(message.contains("::1 is not allowed"), "{message}");
    assert_eq!(backend.calls(), 0);
    proxy.shutdown().await;
}

/// A route's own list guards admin-only methods behind the same endpoint; other routes
/// are open to the same client.
#[tokio::test]
async fn a_route_list_guards_its_methods_only() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let config = OneCluster::backends(&[&backend])
        .route_match(r#"match.method = "helloworld.Greeter/SayHello""#)
        .route(
            r#"name = "admin-only"
allow = ["127.0.0.2"]"#,
        )
        .build();
    // A second, open route for everything else.
    let config = config.replace(
        "[[clusters]]",
        "[[listeners.routes]]\nmatch.path_prefix = \"/\"\ncluster = \"main\"\n\n[[clusters]]",
    );
    let proxy = start_proxy(&config);
    let to = proxy.addr;
    let outsider = connect_from("127.0.0.1", to).await;
    let (code, message) = call(&outsider, to).await;
    assert_eq!(code, 7, "{message}");
    assert!(
        message.contains("not allowed on route admin-only"),
        "{message}"
    );
    let insider = connect_from("127.0.0.2", to).await;
    assert_eq!(call(&insider, to).await.0, 0);
    // The open route serves the outsider.
    let reply = timeout(
        WAIT,
        raw_unary(
            &outsider.send,
            common::raw_h2::grpc_request(to, "/helloworld.Greeter/SayHelloStream", &[]),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_ne!(reply.grpc_status, Some(7), "{reply:?}");
    proxy.shutdown().await;
}
