//! `compression = true` on a listener: JSON from an HTTP/1.1 backend is gzipped for
//! clients that accept it (with `vary`), streamed chunk by chunk, left alone for clients
//! that do not, for small bodies, and for gRPC.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;

use bytes::Bytes;
use common::http::{http1_get, spawn_http1_server};
use common::raw_h2::{grpc_head, raw_connect, raw_unary};
use common::{OneCluster, WAIT, bounded, start_proxy};
use http::Response;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// A JSON document of about 2 KB.
fn json() -> String {
    let items: Vec<String> = (0..60)
        .map(|i| format!("{{\"id\": {i}, \"name\": \"laptop\"}}"))
        .collect();
    format!("[{}]", items.join(", "))
}

async fn rest_backend() -> SocketAddr {
    spawn_http1_server(|request: http::Request<hyper::body::Incoming>| {
        let body = if request.uri().path() == "/small" {
            "{\"ok\": true}".to_owned()
        } else {
            json()
        };
        Response::builder()
            .header("content-type", "application/json")
            .header("server", "BaseHTTP/0.6 Python/3.11.7")
            .body(body)
            .unwrap()
    })
    .await
}

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut out)
        .unwrap();
    out
}

fn proxy_config(backend: SocketAddr) -> String {
    OneCluster::new(format!("\"{backend}\""))
        .listener("compression = true")
        .cluster("protocol = \"http1\"")
        .build()
}

#[tokio::test]
async fn json_is_gzipped_for_clients_that_accept_it() {
    let backend = rest_backend().await;
    let proxy = start_proxy(&proxy_config(backend));
    let (head, body) = http1_get(proxy.addr, "/laptops", &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-encoding"], "gzip");
    assert_eq!(head.headers["vary"], "accept-encoding");
    assert!(!head.headers.contains_key("server"), "{:?}", head.headers);
    assert!(body.len() < json().len() / 3, "{} bytes", body.len());
    assert_eq!(gunzip(&body), json());

    // No gzip asked for: the plain body, still with vary.
    let (head, body) = http1_get(proxy.addr, "/laptops", &[]).await;
    assert!(!head.headers.contains_key("content-encoding"));
    assert_eq!(head.headers["vary"], "accept-encoding");
    assert_eq!(body, json());

    // Under 256 bytes: not worth it.
    let (head, body) = http1_get(proxy.addr, "/small", &[("accept-encoding", "gzip")]).await;
    assert!(!head.headers.contains_key("content-encoding"));
    assert_eq!(body, "{\"ok\": true}");
    proxy.shutdown().await;
}

/// Without `compression` nothing is gzipped.
#[tokio::test]
async fn off_by_default() {
    let backend = rest_backend().await;
    let config = OneCluster::new(format!("\"{backend}\""))
        .cluster("protocol = \"http1\"")
        .build();
    let proxy = start_proxy(&config);
    let (head, body) = http1_get(proxy.addr, "/laptops", &[("accept-encoding", "gzip")]).await;
    assert!(!head.headers.contains_key("content-encoding"));
    assert_eq!(body, json());
    proxy.shutdown().await;
}

/// gRPC is never gzipped, even when a client sends `accept-encoding: gzip`.
#[tokio::test]
async fn grpc_is_never_touched() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let config = OneCluster::backends(&[&backend])
        .listener("compression = true")
        .build();
    let proxy = start_proxy(&config);
    let conn = raw_connect(proxy.addr).await;
    let reply = timeout(
        WAIT,
        raw_unary(
            &conn.send,
            grpc_head(proxy.addr, &[("accept-encoding", "gzip")]),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(reply.grpc_status, Some(0));
    assert!(!reply.headers.contains_key("content-encoding"), "{reply:?}");
    proxy.shutdown().await;
}

/// A streaming response is compressed as it streams: the first part arrives, decodable,
/// while the backend still holds the rest.
#[tokio::test]
async fn a_stream_is_compressed_chunk_by_chunk() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let first = "event: one\n".repeat(40);
    let first_chunk = Bytes::from(first.clone());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(move |_request| {
            let (tx, rx) = mpsc::channel::<Result<http_body::Frame<Bytes>, Infallible>>(4);
            let first = first_chunk.clone();
            // One chunk, then the body stays open until the test ends.
            tokio::spawn(async move {
                let _ = tx.send(Ok(http_body::Frame::data(first))).await;
                std::future::pending::<()>().await;
                drop(tx);
            });
            let body = http_body_util::StreamBody::new(stream_of(rx));
            async move {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(body)
                        .unwrap(),
                )
            }
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), service)
            .await
            .ok();
    });
    let proxy = start_proxy(&proxy_config(backend));
    let got = bounded(async {
        let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = http::Request::get("/events")
            .header("host", "x")
            .header("accept-encoding", "gzip")
            .body(String::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.headers()["content-encoding"], "gzip");
        let mut body = response.into_body();
        // The backend never ends the body: what arrives must decode on its own.
        let mut decoder = flate2::write::GzDecoder::new(Vec::new());
        loop {
            let frame = body.frame().await.unwrap().unwrap();
            if let Ok(data) = frame.into_data() {
                decoder.write_all(&data).unwrap();
                decoder.flush().unwrap();
                if decoder.get_ref().len() >= first.len() {
                    return String::from_utf8(decoder.get_ref().clone()).unwrap();
                }
            }
        }
    })
    .await;
    assert_eq!(got, first);
    proxy.shutdown().await;
}

/// An mpsc receiver as a `Stream` (without pulling in tokio-stream).
fn stream_of<T>(mut rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> + Send + 'static
where
    T: Send + 'static,
{
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
