//! gRPC framing checks on the way in: a message over `max_message_bytes` gets
//! RESOURCE_EXHAUSTED, broken framing (compressed flag without `grpc-encoding`, a bad flag,
//! a body that ends inside a message) INTERNAL — before the backend handles the message,
//! with the upstream stream cancelled and the other streams of the connection served.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use common::raw_h2::{
    RawConn, grpc_request, grpc_status_of, hello_message, raw_connect, raw_unary,
};
use common::{OneCluster, WAIT, bounded, start_proxy};
use rpcgate_demo::BackendHandle;
use tokio::net::TcpListener;
use tokio::time::timeout;

/// A length prefix with `flag` and `length`, then `body`.
fn framed(flag: u8, length: u32, body: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(flag);
    out.put_u32(length);
    out.put_slice(body);
    out.freeze()
}

/// Sends `data` as the whole SayHello request body (with extra headers) and returns the
/// gRPC status and message the client got.
async fn send_body(
    conn: &RawConn,
    to: SocketAddr,
    headers: &[(&str, &str)],
    data: Bytes,
    end: bool,
) -> (u32, String) {
    bounded(async {
        let mut send = conn.send.clone().ready().await.unwrap();
        let head = grpc_request(to, "/helloworld.Greeter/SayHello", headers);
        let (response, mut stream) = send.send_request(head, false).unwrap();
        stream.reserve_capacity(data.len());
        stream.send_data(data, end).unwrap();
        let (parts, mut body) = response.await.unwrap().into_parts();
        let mut status = grpc_status_of(&parts.headers);
        let mut message = parts.headers.get("grpc-message").cloned();
        while let Some(chunk) = body.data().await {
            let _ = chunk;
        }
        if let Ok(Some(trailers)) = body.trailers().await {
            status = grpc_status_of(&trailers).or(status);
            message = trailers.get("grpc-message").cloned().or(message);
        }
        let message = message
            .map(|m| m.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status.unwrap(), message)
    })
    .await
}

async fn setup(route: &str) -> (BackendHandle, common::TestProxy, RawConn) {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let proxy = start_proxy(&OneCluster::backends(&[&backend]).route(route).build());
    let conn = raw_connect(proxy.addr).await;
    (backend, proxy, conn)
}

/// What a recording backend's streams got: the request body bytes of each, and whether
/// it ended cleanly (`false`: reset by the proxy).
type Seen = Arc<Mutex<Vec<(usize, bool)>>>;

/// An h2c backend that reads each request body to its end (or reset), records it, and
/// answers a clean one with OK.
async fn recording_backend() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(tcp).await.unwrap();
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let record = record.clone();
                    tokio::spawn(async move {
                        let mut body = request.into_body();
                        let mut bytes = 0;
                        let mut clean = true;
                        while let Some(chunk) = body.data().await {
                            match chunk {
                                Ok(chunk) => {
                                    bytes += chunk.len();
                                    let _ = body.flow_control().release_capacity(chunk.len());
                                }
                                Err(_) => {
                                    clean = false;
                                    break;
                                }
                            }
                        }
                        record.lock().unwrap().push((bytes, clean));
                        if clean {
                            let response = http::Response::builder()
                                .header("content-type", "application/grpc")
                                .header("grpc-status", "0")
                                .body(())
                                .unwrap();
                            let _ = respond.send_response(response, true);
                        }
                    });
                }
            });
        }
    });
    (addr, seen)
}

/// A proxy in front of a recording backend, with these route keys.
async fn setup_recording(route: &str) -> (Seen, common::TestProxy, RawConn) {
    let (backend, seen) = recording_backend().await;
    let config = OneCluster::new(format!("\"{backend}\""))
        .route(route)
        .build();
    let proxy = start_proxy(&config);
    let conn = raw_connect(proxy.addr).await;
    (seen, proxy, conn)
}

/// Waits until the backend has answered `good` clean streams (and none more), then
/// returns the request bytes it got on streams the proxy reset.
async fn refused_streams(seen: &Seen, good: usize) -> usize {
    bounded(async {
        loop {
            let got = seen.lock().unwrap().clone();
            let clean = got.iter().filter(|(_, clean)| *clean).count();
            assert!(
                clean <= good,
                "a refused call reached the backend whole: {got:?}"
            );
            if clean == good {
                return got.iter().filter(|(_, clean)| !clean).map(|(n, _)| n).sum();
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Every call the backend started was cancelled (its stream reset by the proxy): none
/// got to answer, so no refused message was handled.
async fn none_answered(backend: &BackendHandle) {
    let settled = timeout(
        WAIT,
        backend.wait_until(|b| b.in_flight() == 0 && b.cancelled() == b.calls()),
    )
    .await;
    assert!(
        settled.is_ok(),
        "{backend:?} in flight {} cancelled {}",
        backend.in_flight(),
        backend.cancelled()
    );
}

/// A good call on the same connection still works.
async fn still_served(conn: &RawConn, to: SocketAddr) {
    let reply = timeout(
        WAIT,
        raw_unary(&conn.send, common::raw_h2::grpc_head(to, &[])),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(reply.grpc_status, Some(0), "{reply:?}");
}

#[tokio::test]
async fn a_message_over_max_message_bytes_is_resource_exhausted() {
    let (seen, proxy, conn) = setup_recording("max_message_bytes = 1024").await;
    let to = proxy.addr;
    let (code, message) = send_body(&conn, to, &[], framed(0, 2000, &[7; 2000]), true).await;
    assert_eq!(code, 8, "{message}");
    assert!(
        message.contains("a request message of 2000 bytes is larger than max_message_bytes (1024)"),
        "{message}"
    );
    still_served(&conn, to).await;
    // No byte of the message went to a backend: the call was refused before one was
    // asked, or its upstream stream was reset first.
    assert_eq!(refused_streams(&seen, 1).await, 0);
    proxy.shutdown().await;
}

/// The default is gRPC's 4 MiB: a prefix over it is refused at once, without waiting
/// for the bytes (the client never has to send them).
#[tokio::test]
async fn the_default_limit_is_four_mib() {
    let (seen, proxy, conn) = setup_recording("").await;
    let (code, message) = send_body(
        &conn,
        proxy.addr,
        &[],
        framed(0, 4 * 1024 * 1024 + 1, b"xx"),
        false,
    )
    .await;
    assert_eq!(code, 8, "{message}");
    assert!(message.contains("(4194304)"), "{message}");
    still_served(&conn, proxy.addr).await;
    assert_eq!(refused_streams(&seen, 1).await, 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn broken_framing_is_internal() {
    let (seen, proxy, conn) = setup_recording("").await;
    let to = proxy.addr;
    let hello = hello_message();
    let body = &hello[5..];
    let cases: [(Bytes, &str); 3] = [
        (
            framed(1, body.len() as u32, body),
            "marked compressed but the call has no grpc-encoding",
        ),
        (
            framed(3, body.len() as u32, body),
            "invalid compressed flag 3",
        ),
        (
            framed(0, 100, &body[..4]),
            "the request ended inside a gRPC message: 4 of 100 bytes came",
        ),
    ];
    for (data, want) in cases {
        let (code, message) = send_body(&conn, to, &[], data, true).await;
        assert_eq!(code, 13, "{message}");
        assert!(message.contains(want), "{message} (wanted: {want})");
    }
    // No byte forwarded: the prefixes are refused as they come, and the truncated body's
    // end came with its data (its 9 bytes would otherwise have gone out first).
    still_served(&conn, to).await;
    assert_eq!(refused_streams(&seen, 1).await, 0);
    proxy.shutdown().await;
}

/// With `grpc-encoding`, the compressed flag is the backend's business (a real gzip
/// message here, which the demo backend, built without gzip, fails to decode itself).
#[tokio::test]
async fn the_compressed_flag_with_an_encoding_goes_through() {
    let (_backend, proxy, conn) = setup("").await;
    let hello = hello_message();
    let body = &hello[5..];
    let (code, message) = send_body(
        &conn,
        proxy.addr,
        &[("grpc-encoding", "gzip")],
        framed(1, body.len() as u32, body),
        true,
    )
    .await;
    // The demo backend has no gzip: its own INTERNAL "Error decompressing" shows that the
    // message reached it.
    assert!(message.contains("decompressing"), "{code} {message}");
    proxy.shutdown().await;
}

/// A bidi call whose response already streams: an oversized message later in the call
/// ends it with RESOURCE_EXHAUSTED in the trailers, and the upstream stream is cancelled.
#[tokio::test]
async fn an_oversized_message_mid_stream_ends_the_call() {
    let (backend, proxy, conn) = setup("max_message_bytes = 64").await;
    let to = proxy.addr;
    let (code, message) = bounded(async {
        let mut send = conn.send.clone().ready().await.unwrap();
        let head = grpc_request(to, "/helloworld.Greeter/SayHelloBidi", &[]);
        let (response, mut stream) = send.send_request(head, false).unwrap();
        stream.send_data(hello_message(), false).unwrap();
        let (_parts, mut body) = response.await.unwrap().into_parts();
        // The first reply: the response streams, the request pump runs on its own.
        let first = body.data().await.unwrap().unwrap();
        assert!(!first.is_empty());
        stream.reserve_capacity(200);
        stream.send_data(framed(0, 200, &[1; 200]), false).unwrap();
        while let Some(chunk) = body.data().await {
            chunk.unwrap();
        }
        let trailers = body.trailers().await.unwrap().unwrap();
        (
            grpc_status_of(&trailers).unwrap(),
            trailers["grpc-message"].to_str().unwrap().to_owned(),
        )
    })
    .await;
    assert_eq!(code, 8, "{message}");
    assert!(
        message.contains("larger than max_message_bytes (64)"),
        "{message}"
    );
    none_answered(&backend).await;
    still_served(&conn, to).await;
    proxy.shutdown().await;
}

/// Many calls announcing huge messages, on one connection: each is refused at its
/// prefix, so nothing is buffered; memory stays flat and a fresh client is served within
/// 2 s.
#[tokio::test]
async fn a_flood_of_huge_prefixes_costs_no_memory() {
    let (backend, proxy, conn) = setup("").await;
    let rss = common::rss::RssPeak::start();
    for _ in 0..300 {
        let (code, _) = send_body(
            &conn,
            proxy.addr,
            &[],
            framed(0, u32::MAX, &[0; 512]),
            false,
        )
        .await;
        assert_eq!(code, 8);
    }
    let growth = rss.growth();
    assert!(growth < 32 * 1024, "RSS grew by {growth} KiB");
    let fresh = raw_connect(proxy.addr).await;
    let reply = timeout(
        std::time::Duration::from_secs(2),
        raw_unary(&fresh.send, common::raw_h2::grpc_head(proxy.addr, &[])),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(reply.grpc_status, Some(0));
    drop(backend);
    proxy.shutdown().await;
}
