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
    // The listening socket is closed: new clients are refused at once (they can go to
    // another proxy) instead of waiting in the accept queue while the drain runs.
    bounded(async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

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

/// An HTTP/2 frame read off the wire: type, flags, stream id, payload.
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

async fn read_frame(tcp: &mut tokio::net::TcpStream) -> Option<Frame> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head).await.ok()?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    })
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A literal header field without indexing, its name from the static table (RFC 7541).
fn literal(index: u8, value: &str, out: &mut Vec<u8>) {
    if index < 15 {
        out.push(index);
    } else {
        out.extend_from_slice(&[0x0f, index - 15]);
    }
    out.push(u8::try_from(value.len()).unwrap());
    out.extend_from_slice(value.as_bytes());
}

/// The drain's GOAWAY is two-phase (RFC 9113 §6.8): first with the largest stream id and
/// a PING, then — once the PING is answered — with the last stream really taken, while the
/// stream in flight goes on to its end. Read off the wire with a hand-made HTTP/2 client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_goaway_is_two_phase() {
    use prost::Message;
    use tokio::io::AsyncWriteExt;
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let mut proxy = start_proxy(&OneCluster::backends(&[&backend]).build());
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    // HEADERS for a server stream of 10 replies, 100 ms apart.
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    literal(4, "/helloworld.Greeter/SayHelloStream", &mut block);
    literal(1, &proxy.addr.to_string(), &mut block);
    literal(31, "application/grpc", &mut block);
    block.extend_from_slice(&[0x00, 2, b't', b'e', 8]);
    block.extend_from_slice(b"trailers");
    out.extend(frame(0x1, 0x4, 1, &block)); // END_HEADERS
    let message = stream_request(10, 100).encode_to_vec();
    let mut data = vec![0u8];
    data.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    data.extend_from_slice(&message);
    out.extend(frame(0x0, 0x1, 1, &data)); // END_STREAM
    tcp.write_all(&out).await.unwrap();

    let mut draining = None;
    let mut goaways = Vec::new();
    let mut stream_ended = false;
    let mut data_frames = 0;
    bounded(async {
        while let Some(f) = read_frame(&mut tcp).await {
            match f.kind {
                0x4 if f.flags & 0x1 == 0 => {
                    // The server may close right after its last frame: writes may fail.
                    let _ = tcp.write_all(&frame(0x4, 0x1, 0, &[])).await;
                }
                0x0 if f.stream == 1 => {
                    data_frames += 1;
                    // The first reply is here: start the drain.
                    if draining.is_none() {
                        draining = Some(tokio::spawn(proxy.handle.take().unwrap().shutdown()));
                    }
                    let n = u32::try_from(f.payload.len()).unwrap().to_be_bytes();
                    if !f.payload.is_empty() {
                        let _ = tcp.write_all(&frame(0x8, 0, 0, &n)).await;
                        let _ = tcp.write_all(&frame(0x8, 0, 1, &n)).await;
                    }
                    stream_ended |= f.flags & 0x1 != 0;
                }
                0x1 if f.stream == 1 => stream_ended |= f.flags & 0x1 != 0,
                0x6 if f.flags & 0x1 == 0 => {
                    let _ = tcp.write_all(&frame(0x6, 0x1, 0, &f.payload)).await;
                }
                0x7 => {
                    let last = u32::from_be_bytes([
                        f.payload[0],
                        f.payload[1],
                        f.payload[2],
                        f.payload[3],
                    ]);
                    goaways.push((last & 0x7fff_ffff, stream_ended));
                }
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(
        goaways.iter().map(|g| g.0).collect::<Vec<_>>(),
        [0x7fff_ffff, 1],
        "{goaways:?}"
    );
    assert!(
        !goaways[0].1,
        "the first GOAWAY came after the stream ended"
    );
    assert!(stream_ended, "the stream did not end");
    assert_eq!(data_frames, 10, "replies lost");
    bounded(draining.unwrap()).await.unwrap();
}
