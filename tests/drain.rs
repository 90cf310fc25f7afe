//! Graceful drain (contract §6): once shutdown begins, `/ready` is 503, no new connection
//! is served, calls in flight finish — a long server stream included — and what is still
//! running at `drain_timeout` ends with UNAVAILABLE and a message saying rpcgate is
//! shutting down (not a reset connection).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::time::Duration;

use common::{OneCluster, WAIT, bounded, start_proxy};
use rpcgate_demo::pb::helloworld::HelloStreamRequest;
use rpcgate_demo::pb::helloworld::greeter_client::GreeterClient;
use tokio::time::Instant;
use tonic::Code;

fn stream_request(count: u32, interval_ms: u32) -> HelloStreamRequest {
    HelloStreamRequest {
        name: "drain".into(),
        count,
        interval_ms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_stream_in_flight_finishes_during_the_drain() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let config = OneCluster::backends(&[&backend])
        .admin()
        .build()
        .replace("[server]\n", "[server]\ndrain_timeout = \"10s\"\n");
    let mut proxy = start_proxy(&config);
    let addr = proxy.addr;
    let mut client = GreeterClient::new(proxy.channel().await);
    // 12 replies, 100 ms apart: the stream outlives the start of the drain by a second.
    let mut stream = bounded(client.say_hello_stream(stream_request(12, 100)))
        .await
        .unwrap()
        .into_inner();
    let first = bounded(stream.message()).await.unwrap().unwrap();
    assert!(first.message.contains("from b1"), "{first:?}");

    let started = Instant::now();
    let draining = tokio::spawn(proxy.handle.take().unwrap().shutdown());
    // New connections are not served any more.
    bounded(async {
        loop {
            let refused = match tokio::net::TcpStream::connect(addr).await {
                Err(_) => true,
                Ok(mut tcp) => {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let _ = tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
                    let mut buf = [0u8; 1];
                    matches!(
                        tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await,
                        Ok(Ok(0) | Err(_))
                    )
                }
            };
            if refused {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;

    // The stream goes on to its end, with OK.
    let mut received = 1;
    while let Some(reply) = bounded(stream.message()).await.unwrap() {
        assert!(reply.message.contains("from b1"));
        received += 1;
    }
    assert_eq!(received, 12);
    bounded(draining).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_still_running_at_drain_timeout_end_with_unavailable() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let config = OneCluster::backends(&[&backend])
        .build()
        .replace("[server]\n", "[server]\ndrain_timeout = \"500ms\"\n");
    let mut proxy = start_proxy(&config);
    let mut client = GreeterClient::new(proxy.channel().await);
    // 100 replies, 100 ms apart: far longer than the drain.
    let mut stream = bounded(client.say_hello_stream(stream_request(100, 100)))
        .await
        .unwrap()
        .into_inner();
    bounded(stream.message()).await.unwrap().unwrap();
    // A unary call waiting for a slow backend too.
    let mut unary = GreeterClient::new(proxy.channel().await);
    let slow = tokio::spawn(async move {
        let request = common::with_meta(
            common::hello("slow"),
            &[(rpcgate_demo::meta::DELAY_MS, "5000")],
        );
        unary.say_hello(request).await
    });
    backend.wait_until(|b| b.in_flight() == 2).await;

    let started = Instant::now();
    let draining = tokio::spawn(proxy.handle.take().unwrap().shutdown());
    let status = bounded(async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended with OK"),
                Err(status) => return status,
            }
        }
    })
    .await;
    let took = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    assert!(
        took >= Duration::from_millis(400) && took < WAIT,
        "cut after {took:?}"
    );
    let unary = bounded(slow).await.unwrap().unwrap_err();
    assert_eq!(unary.code(), Code::Unavailable, "{unary:?}");
    assert!(unary.message().contains("shutting down"), "{unary:?}");
    bounded(draining).await.unwrap();
}

/// An HTTP/1.1 request in flight when the drain begins gets its answer with
/// `connection: close` (hyper's graceful close of an HTTP/1.1 connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_connections_get_connection_close_during_the_drain() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let mut proxy = start_proxy(&OneCluster::backends(&[&backend]).build());
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post("/helloworld.Greeter/SayHello")
        .header("host", proxy.addr.to_string())
        .header("content-type", "application/grpc")
        .header(rpcgate_demo::meta::DELAY_MS, "800")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"\x00\x00\x00\x00\x00",
        )))
        .unwrap();
    let response = tokio::spawn(async move { sender.send_request(request).await });
    backend.wait_until(|b| b.in_flight() == 1).await;
    let draining = tokio::spawn(proxy.handle.take().unwrap().shutdown());
    let response = bounded(response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["connection"], "close", "{response:?}");
    bounded(draining).await.unwrap();
}
