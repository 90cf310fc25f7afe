//! Abusive and broken clients against the real proxy (the protocol-confusion, oversized
//! frame, panic and rapid-reset attacks): garbage, HTTP/1.1 after the HTTP/2 preface, a TLS ClientHello
//! on the h2c port, an over-long frame, a panicking call, rapid reset. Each must cost at
//! most the offending connection or call, and a fresh client must be served right after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::raw_h2::{RawConn, grpc_head, hello_message, raw_connect};
use common::{TestProxy, WAIT, backend_and_proxy};
use rpcgate_demo::meta;
use rpcgate_demo::pb::helloworld::{HelloRequest, greeter_client::GreeterClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tonic::Code;

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long the proxy may take to close a connection it must refuse.
const CLOSE_BOUND: Duration = Duration::from_secs(3);

const GOAWAY: u8 = 0x7;
const PROTOCOL_ERROR: u32 = 0x1;
const FRAME_SIZE_ERROR: u32 = 0x6;

/// A frame header: 24-bit length, type, flags, stream id.
fn frame_header(length: u32, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
    let mut out = length.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out
}

/// An empty SETTINGS frame.
fn settings() -> Vec<u8> {
    frame_header(0, 0x4, 0, 0)
}

/// Writes `bytes` on a new connection and reads until the proxy closes it, within
/// [`CLOSE_BOUND`]. Returns what the proxy sent.
async fn send_and_expect_close(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The proxy may close before reading everything; a failed write is fine.
    let _ = tcp.write_all(bytes).await;
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(
            CLOSE_BOUND.saturating_sub(started.elapsed()),
            tcp.read(&mut buf),
        )
        .await
        {
            Err(_) => panic!(
                "the connection was still open after {CLOSE_BOUND:?}; got {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return received, // EOF or reset: closed
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// The GOAWAY error codes in a server's byte stream (parsed as HTTP/2 frames).
fn goaway_codes(mut bytes: &[u8]) -> Vec<u32> {
    let mut codes = Vec::new();
    while bytes.len() >= 9 {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let kind = bytes[3];
        let Some(payload) = bytes.get(9..9 + length) else {
            break;
        };
        if kind == GOAWAY && payload.len() >= 8 {
            codes.push(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
        }
        bytes = &bytes[9 + length..];
    }
    codes
}

/// A fresh client on a new connection gets a normal answer within `bound`.
async fn fresh_client_served(proxy: &TestProxy, bound: Duration) {
    let served = timeout(bound, async {
        let mut client = GreeterClient::new(proxy.channel().await);
        client.say_hello(HelloRequest { name: "Ann".into() }).await
    })
    .await
    .expect("a fresh client was not served in time")
    .unwrap();
    assert_eq!(served.get_ref().message, "Hello Ann from b1");
}

/// Random-looking bytes that are neither HTTP/1.1 nor HTTP/2.
#[tokio::test]
async fn garbage_closes_only_that_connection() {
    let (backend, proxy) = backend_and_proxy().await;
    let garbage: Vec<u8> = (0u32..2048)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .chain(*b"\r\n\r\n")
        .collect();
    let answer = send_and_expect_close(proxy.addr, &garbage).await;
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 4"),
        "unexpected answer {:?}",
        String::from_utf8_lossy(&answer)
    );
    fresh_client_served(&proxy, WAIT).await;
    assert_eq!(backend.calls(), 1);
    proxy.shutdown().await;
}

/// The HTTP/2 preface followed by an HTTP/1.1 request: a connection error (GOAWAY), not
/// a wait for a 4.7 MB "frame".
#[tokio::test]
async fn http1_after_the_h2_preface_gets_goaway() {
    let (backend, proxy) = backend_and_proxy().await;
    let mut bytes = PREFACE.to_vec();
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let answer = send_and_expect_close(proxy.addr, &bytes).await;
    let codes = goaway_codes(&answer);
    assert!(
        codes
            .iter()
            .any(|c| [PROTOCOL_ERROR, FRAME_SIZE_ERROR].contains(c)),
        "no GOAWAY(PROTOCOL_ERROR/FRAME_SIZE_ERROR): {codes:?}"
    );
    fresh_client_served(&proxy, WAIT).await;
    assert_eq!(backend.calls(), 1);
    proxy.shutdown().await;
}

/// A TLS ClientHello (with ALPN h2) on the plaintext port.
#[tokio::test]
async fn tls_client_hello_on_the_h2c_port_is_closed() {
    let (_backend, proxy) = backend_and_proxy().await;
    let answer = send_and_expect_close(proxy.addr, &client_hello()).await;
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 4"),
        "unexpected answer {:?}",
        String::from_utf8_lossy(&answer)
    );
    fresh_client_served(&proxy, WAIT).await;
    proxy.shutdown().await;
}

/// A minimal TLS 1.2/1.3 ClientHello record offering ALPN `h2`.
fn client_hello() -> Vec<u8> {
    let alpn_list = [&[2u8][..], b"h2"].concat();
    let mut alpn = vec![0x00, 0x10]; // extension type: ALPN
    alpn.extend(u16::try_from(alpn_list.len() + 2).unwrap().to_be_bytes());
    alpn.extend(u16::try_from(alpn_list.len()).unwrap().to_be_bytes());
    alpn.extend(alpn_list);

    let mut body = vec![0x03, 0x03]; // client version TLS 1.2
    body.extend((0u8..32).map(|i| i.wrapping_mul(37))); // random
    body.push(0); // session id
    body.extend([0x00, 0x04, 0x13, 0x01, 0xc0, 0x2f]); // cipher suites
    body.extend([0x01, 0x00]); // compression: null
    body.extend(u16::try_from(alpn.len()).unwrap().to_be_bytes());
    body.extend(alpn);

    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend(body);

    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, TLS 1.0 framing
    record.extend(u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend(handshake);
    record
}

/// A HEADERS frame declaring 16 MiB - 1 of payload (over SETTINGS_MAX_FRAME_SIZE): the
/// proxy rejects it at once (FRAME_SIZE_ERROR) instead of waiting for the payload.
#[tokio::test]
async fn over_long_frame_is_rejected_at_once() {
    let (backend, proxy) = backend_and_proxy().await;
    let mut bytes = PREFACE.to_vec();
    bytes.extend(settings());
    bytes.extend(frame_header(0x00FF_FFFF, 0x1, 0x4 | 0x1, 1));
    bytes.extend([0u8; 64]);
    let answer = send_and_expect_close(proxy.addr, &bytes).await;
    let codes = goaway_codes(&answer);
    assert!(
        codes
            .iter()
            .any(|c| [PROTOCOL_ERROR, FRAME_SIZE_ERROR].contains(c)),
        "no GOAWAY(FRAME_SIZE_ERROR): {codes:?}"
    );
    fresh_client_served(&proxy, WAIT).await;
    assert_eq!(backend.calls(), 1);
    proxy.shutdown().await;
}

/// A panic inside one call's task fails that call with INTERNAL; the connection and the
/// process go on serving.
#[tokio::test]
async fn a_panicking_call_fails_alone() {
    let (backend, proxy) = backend_and_proxy().await;
    let mut client = GreeterClient::new(proxy.channel().await);
    let mut request = tonic::Request::new(HelloRequest { name: "Ann".into() });
    request
        .metadata_mut()
        .insert("x-rpcgate-test-panic", "1".parse().unwrap());
    let status = timeout(WAIT, client.say_hello(request))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(backend.calls(), 0);

    // The same connection, then a new one.
    let reply = timeout(WAIT, client.say_hello(HelloRequest { name: "Bob".into() }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.get_ref().message, "Hello Bob from b1");
    fresh_client_served(&proxy, WAIT).await;
    proxy.shutdown().await;
}

/// Rapid reset (CVE-2023-44487): 2 000 HEADERS + RST_STREAM pairs on one connection. The
/// proxy may cut the connection (GOAWAY); it must survive, cancel the upstream work, and
/// serve a fresh client within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_does_not_take_the_proxy_down() {
    let (backend, proxy) = backend_and_proxy().await;
    let RawConn { send, driver } = raw_connect(proxy.addr).await;

    let mut sent = 0;
    let flood = timeout(WAIT, async {
        for _ in 0..2000 {
            let Ok(mut ready) = send.clone().ready().await else {
                break; // the proxy closed the connection
            };
            // Slow calls: work a backend would do if the resets were not passed on.
            let head = grpc_head(proxy.addr, &[(meta::DELAY_MS, "60000")]);
            let Ok((response, mut stream)) = ready.send_request(head, false) else {
                break;
            };
            stream.send_reset(h2::Reason::CANCEL);
            drop(response);
            sent += 1;
        }
    })
    .await;
    assert!(
        flood.is_ok(),
        "the flood itself stalled after {sent} streams"
    );
    assert!(sent > 0);

    eprintln!(
        "rapid reset: sent {sent}, backend calls {}",
        backend.calls()
    );
    fresh_client_served(&proxy, Duration::from_secs(2)).await;
    // Nothing of the flood is left running on the backend.
    timeout(WAIT, backend.wait_until(|b| b.in_flight() == 0))
        .await
        .unwrap_or_else(|_| panic!("{} reset calls still run upstream", backend.in_flight()));
    driver.abort();
    proxy.shutdown().await;
}

/// A client's RST_STREAM cancels the upstream call at once (contract §3).
#[tokio::test]
async fn client_reset_cancels_the_upstream_call() {
    let (backend, proxy) = backend_and_proxy().await;
    let RawConn { send, driver } = raw_connect(proxy.addr).await;

    let mut ready = send.ready().await.unwrap();
    let head = grpc_head(proxy.addr, &[(meta::DELAY_MS, "60000")]);
    let (response, mut stream) = ready.send_request(head, false).unwrap();
    stream.send_data(hello_message(), true).unwrap();
    timeout(WAIT, backend.wait_until(|b| b.in_flight() == 1))
        .await
        .unwrap();
    stream.send_reset(h2::Reason::CANCEL);
    drop(response);
    timeout(
        WAIT,
        backend.wait_until(|b| b.cancelled() == 1 && b.in_flight() == 0),
    )
    .await
    .expect("the backend never saw the cancel");
    // Other clients go on being served.
    fresh_client_served(&proxy, WAIT).await;
    driver.abort();
    proxy.shutdown().await;
}
