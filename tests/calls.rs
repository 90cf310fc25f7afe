//! End-to-end calls through the real proxy (contract §3): the four call kinds, big messages,
//! metadata, trailers, error details and compression passing unchanged, the headers the
//! proxy removes, appends and sets, cancellation, and flow control.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use common::http::{http1_get, http1_request, spawn_http1_server};
use common::raw_h2::grpc_frame;
use common::{OneCluster, bounded, hello, text, with_meta};
use futures_util::Stream;
use http::{Request, StatusCode};
use prost::Message;
use rpcgate_demo::pb::helloworld::{HelloReply, HelloStreamRequest, greeter_client::GreeterClient};
use rpcgate_demo::{BackendHandle, MAX_MESSAGE_BYTES, meta};
use tokio::sync::mpsc;
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

/// A Greeter client through `channel` that takes and sends big messages.
fn greeter(channel: Channel) -> GreeterClient<Channel> {
    GreeterClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A backend and a proxy in front of it, with extra route keys (TOML lines).
async fn setup(route_extra: &str) -> (BackendHandle, common::TestProxy) {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let config = OneCluster::backends(&[&backend]).route(route_extra).build();
    let proxy = common::start_proxy(&config);
    (backend, proxy)
}

/// A stream of the values sent on the returned channel, ending when it is dropped.
fn channel_stream<T: Send + 'static>() -> (mpsc::Sender<T>, impl Stream<Item = T> + Send) {
    let (tx, rx) = mpsc::channel(16);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (tx, stream)
}

#[tokio::test]
async fn unary_passes() {
    let (backend, proxy) = setup("").await;
    let mut client = greeter(proxy.channel().await);
    let reply = bounded(client.say_hello(hello("Ann"))).await.unwrap();
    assert_eq!(reply.get_ref().message, "Hello Ann from b1");
    assert_eq!(backend.calls(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn server_streaming_delivers_every_reply_in_order() {
    let (_backend, proxy) = setup("").await;
    let mut client = greeter(proxy.channel().await);
    let request = HelloStreamRequest {
        name: "Ann".into(),
        count: 50,
        interval_ms: 0,
    };
    let mut stream = bounded(client.say_hello_stream(request))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(reply) = bounded(stream.message()).await.unwrap() {
        got.push(reply.message);
    }
    let want: Vec<String> = (0..50).map(|i| format!("Hello Ann #{i} from b1")).collect();
    assert_eq!(got, want);
    let trailers = bounded(stream.trailers()).await.unwrap().unwrap();
    assert_eq!(text(&trailers, meta::BACKEND_TRAILER), Some("b1"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn client_streaming_delivers_every_request() {
    let (_backend, proxy) = setup("").await;
    let mut client = greeter(proxy.channel().await);
    let names = ["a", "b", "c", "d", "e"];
    let outbound = futures_util::stream::iter(names.map(hello));
    let reply = bounded(client.say_hello_client_stream(outbound))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().message, "Hello a, b, c, d, e from b1");
    assert_eq!(text(reply.metadata(), meta::BACKEND_TRAILER), Some("b1"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn bidi_echoes_each_message_before_the_next_is_sent() {
    let (backend, proxy) = setup("").await;
    let mut client = greeter(proxy.channel().await);
    let (tx, outbound) = channel_stream();
    // The first message goes before the call starts, so the response head can come.
    tx.send(hello("n0")).await.unwrap();
    let mut inbound = bounded(client.say_hello_bidi(outbound))
        .await
        .unwrap()
        .into_inner();
    for i in 0..20 {
        if i > 0 {
            tx.send(hello(&format!("n{i}"))).await.unwrap();
        }
        // The echo of message i arrives while the request stream is still open: nothing
        // in between waits for the whole stream.
        let reply = bounded(inbound.message()).await.unwrap().unwrap();
        assert_eq!(reply.message, format!("Hello n{i} from b1"));
    }
    assert_eq!(backend.in_flight(), 1, "the call is still open");
    drop(tx);
    assert!(bounded(inbound.message()).await.unwrap().is_none());
    let trailers = bounded(inbound.trailers()).await.unwrap().unwrap();
    assert_eq!(text(&trailers, meta::BACKEND_TRAILER), Some("b1"));
    bounded(backend.wait_until(|b| b.in_flight() == 0)).await;
    assert_eq!(backend.cancelled(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn bidi_response_head_arrives_before_any_request_message() {
    let (backend, proxy) = setup("").await;
    let mut client = greeter(proxy.channel().await);
    let (tx, outbound) = channel_stream();
    // Nothing sent yet: the call still starts, and its response head comes back.
    let response = bounded(client.say_hello_bidi(outbound)).await.unwrap();
    assert_eq!(text(response.metadata(), meta::BACKEND), Some("b1"));
    let mut inbound = response.into_inner();
    tx.send(hello("late")).await.unwrap();
    let reply = bounded(inbound.message()).await.unwrap().unwrap();
    assert_eq!(reply.message, "Hello late from b1");
    drop(tx);
    assert!(bounded(inbound.message()).await.unwrap().is_none());
    bounded(backend.wait_until(|b| b.in_flight() == 0)).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn big_messages_pass_both_ways() {
    // Past gRPC's 4 MiB default, which the route must raise (the demo backends take 16 MiB).
    let (_backend, proxy) = setup("max_message_bytes = 16777216").await;
    let mut client = greeter(proxy.channel().await);
    for size in [4 << 20, 8 << 20] {
        let name = "x".repeat(size);
        let reply = bounded(client.say_hello(hello(&name))).await.unwrap();
        let message = &reply.get_ref().message;
        assert_eq!(message.len(), size + "Hello  from b1".len(), "{size}");
        assert!(message.starts_with("Hello xxx") && message.ends_with("x from b1"));
    }
    // Big messages on a bidi stream too, one after the other.
    let (tx, outbound) = channel_stream();
    tx.send(hello(&"y".repeat(4 << 20))).await.unwrap();
    let mut inbound = bounded(client.say_hello_bidi(outbound))
        .await
        .unwrap()
        .into_inner();
    let first = bounded(inbound.message()).await.unwrap().unwrap();
    assert_eq!(first.message.len(), (4 << 20) + "Hello  from b1".len());
    tx.send(hello(&"z".repeat(8 << 20))).await.unwrap();
    let second = bounded(inbound.message()).await.unwrap().unwrap();
    assert_eq!(second.message.len(), (8 << 20) + "Hello  from b1".len());
    drop(tx);
    assert!(bounded(inbound.message()).await.unwrap().is_none());
    proxy.shutdown().await;
}

#[tokio::test]
async fn metadata_headers_and_trailers_pass_unchanged() {
    let (backend, proxy) = setup("").await;
    let mut client = greeter(proxy.channel().await);
    let binary = MetadataValue::from_bytes(&[0u8, 1, 2, 0x7f, 0x80, 0xfe, 0xff]);
    let mut request = with_meta(
        hello("Ann"),
        &[
            (meta::ECHO_METADATA, "1"),
            ("x-echo-color", "blue"),
            ("x-custom", "Mixed Case Value"),
        ],
    );
    request
        .metadata_mut()
        .insert_bin("x-trace-bin", binary.clone());
    // A key with several values keeps them all, in order.
    for value in ["one", "two", "three"] {
        request
            .metadata_mut()
            .append("x-echo-multi", MetadataValue::try_from(value).unwrap());
    }
    let reply = bounded(client.say_hello(request)).await.unwrap();

    // What the backend received: the same bytes on the wire.
    let seen = backend.last_request().unwrap();
    assert_eq!(
        seen.headers.get("x-trace-bin").unwrap().as_bytes(),
        binary.as_encoded_bytes()
    );
    assert_eq!(seen.headers.get("x-echo-color").unwrap(), "blue");
    assert_eq!(seen.headers.get("x-custom").unwrap(), "Mixed Case Value");

    // What came back: the echoed metadata (binary included), the header and the trailer.
    let md = reply.metadata();
    assert_eq!(
        md.get_bin("x-trace-bin").unwrap().to_bytes().unwrap(),
        Bytes::from_static(&[0, 1, 2, 0x7f, 0x80, 0xfe, 0xff])
    );
    assert_eq!(text(md, "x-echo-color"), Some("blue"));
    let multi: Vec<_> = md.get_all("x-echo-multi").iter().collect();
    assert_eq!(multi, ["one", "two", "three"]);
    let multi: Vec<_> = seen.headers.get_all("x-echo-multi").iter().collect();
    assert_eq!(multi, ["one", "two", "three"]);
    assert_eq!(text(md, meta::BACKEND), Some("b1"));
    assert_eq!(text(md, meta::BACKEND_TRAILER), Some("b1"));

    // Trailers of a streaming call arrive as trailers.
    let mut stream = bounded(client.say_hello_stream(HelloStreamRequest {
        name: "Ann".into(),
        count: 2,
        interval_ms: 0,
    }))
    .await
    .unwrap();
    assert_eq!(text(stream.metadata(), meta::BACKEND), Some("b1"));
    let stream = stream.get_mut();
    while bounded(stream.message()).await.unwrap().is_some() {}
    let trailers = bounded(stream.trailers()).await.unwrap().unwrap();
    assert_eq!(text(&trailers, meta::BACKEND_TRAILER), Some("b1"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn error_details_pass_unchanged() {
    let (_backend, proxy) = setup("").await;
    let mut client = greeter(proxy.channel().await);
    // Any bytes, including ones that are not valid UTF-8 or protobuf.
    let details: &[u8] = &[0x08, 0x03, 0x12, 0x04, b'o', b'o', b'p', b's', 0x00, 0xff];
    let mut request = with_meta(hello("Ann"), &[(meta::FAIL_CODE, "3")]);
    request
        .metadata_mut()
        .insert_bin(meta::FAIL_DETAILS_BIN, MetadataValue::from_bytes(details));
    let status = bounded(client.say_hello(request)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "requested failure");
    assert_eq!(status.details(), details);
    assert_eq!(text(status.metadata(), meta::BACKEND_TRAILER), Some("b1"));

    // The same in the trailers of a stream that fails after some replies.
    let mut request = with_meta(
        HelloStreamRequest {
            name: "Ann".into(),
            count: 5,
            interval_ms: 0,
        },
        &[(meta::FAIL_CODE, "9"), (meta::FAIL_AFTER, "2")],
    );
    request
        .metadata_mut()
        .insert_bin(meta::FAIL_DETAILS_BIN, MetadataValue::from_bytes(details));
    let mut stream = bounded(client.say_hello_stream(request))
        .await
        .unwrap()
        .into_inner();
    assert!(bounded(stream.message()).await.unwrap().is_some());
    assert!(bounded(stream.message()).await.unwrap().is_some());
    let status = bounded(stream.message()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.details(), details);
    proxy.shutdown().await;
}

#[tokio::test]
async fn gzip_messages_pass_both_ways() {
    let (backend, proxy) = setup("").await;
    let mut client = greeter(proxy.channel().await)
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let name = "compressible ".repeat(100_000);
    let request = with_meta(hello(&name), &[(meta::ECHO_METADATA, "1")]);
    let reply = bounded(client.say_hello(request)).await.unwrap();
    assert_eq!(reply.get_ref().message, format!("Hello {name} from b1"));
    // The request reached the backend compressed, and the reply came back compressed.
    assert_eq!(
        backend
            .last_request()
            .unwrap()
            .headers
            .get("grpc-encoding")
            .unwrap(),
        "gzip"
    );
    assert_eq!(text(reply.metadata(), "grpc-encoding"), Some("gzip"));

    // A compressed bidi stream too.
    let (tx, outbound) = channel_stream();
    tx.send(hello("zip")).await.unwrap();
    let mut inbound = bounded(client.say_hello_bidi(outbound))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        bounded(inbound.message()).await.unwrap().unwrap().message,
        "Hello zip from b1"
    );
    drop(tx);
    assert!(bounded(inbound.message()).await.unwrap().is_none());
    proxy.shutdown().await;
}

/// An HTTP/1.1 POST of a gRPC request with the given extra headers.
async fn http1_grpc_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (http::response::Parts, Bytes) {
    let mut builder = Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/grpc");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    // `String` is the one ready-made body type at hand; a small message's gRPC frame
    // is plain ASCII, so it fits.
    let body = String::from_utf8(body.to_vec()).expect("a small ASCII frame");
    http1_request(addr, builder.body(body).unwrap()).await
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_te_trailers_kept() {
    let (backend, proxy) = setup("").await;

    // Over HTTP/2 (tonic) the client sends `te: trailers`, and the backend gets it.
    let mut client = greeter(proxy.channel().await);
    bounded(client.say_hello(hello("Ann"))).await.unwrap();
    let seen = backend.last_request().unwrap();
    assert_eq!(seen.headers.get("te").unwrap(), "trailers");

    // HTTP/2 cannot even carry connection-specific headers, so send them over HTTP/1.1
    // to the same port; the proxy forwards the call over HTTP/2 to the backend.
    let frame = grpc_frame(&hello("Hop"));
    let (head, body) = http1_grpc_post(
        proxy.addr,
        "/helloworld.Greeter/SayHello",
        &[
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("x-hop", "named in connection"),
            ("te", "trailers"),
            ("x-end-to-end", "kept"),
        ],
        frame,
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers.get(meta::BACKEND).unwrap(), "b1");
    // The reply's one gRPC frame came back as the body.
    let reply = HelloReply::decode(&body[5..]).unwrap();
    assert_eq!(reply.message, "Hello Hop from b1");

    let seen = backend.last_request().unwrap();
    for gone in ["connection", "keep-alive", "proxy-connection", "x-hop"] {
        assert!(
            !seen.headers.contains_key(gone),
            "{gone} reached the backend: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers.get("te").unwrap(), "trailers");
    assert_eq!(seen.headers.get("x-end-to-end").unwrap(), "kept");
    proxy.shutdown().await;
}

#[tokio::test]
async fn x_forwarded_for_gets_the_client_ip_appended() {
    let (backend, proxy) = setup("").await;
    let mut client = greeter(proxy.channel().await);

    bounded(client.say_hello(hello("a"))).await.unwrap();
    let seen = backend.last_request().unwrap();
    assert_eq!(seen.headers.get("x-forwarded-for").unwrap(), "127.0.0.1");

    let request = with_meta(hello("b"), &[("x-forwarded-for", "203.0.113.7")]);
    bounded(client.say_hello(request)).await.unwrap();
    let seen = backend.last_request().unwrap();
    let all: Vec<_> = seen.headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(all, ["203.0.113.7, 127.0.0.1"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn x_forwarded_for_keeps_every_line_the_client_sent() {
    let (backend, proxy) = setup("").await;
    let mut client = greeter(proxy.channel().await);
    // Two header lines are one comma-separated list (RFC 9110 §5.3); NGINX's
    // $proxy_add_x_forwarded_for keeps both.
    let mut request = with_meta(hello("a"), &[("x-forwarded-for", "203.0.113.7")]);
    request.metadata_mut().append(
        "x-forwarded-for",
        MetadataValue::from_static("198.51.100.9"),
    );
    bounded(client.say_hello(request)).await.unwrap();
    let seen = backend.last_request().unwrap();
    let all: Vec<_> = seen.headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(all, ["203.0.113.7, 198.51.100.9, 127.0.0.1"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn x_request_id_is_set_when_absent_and_kept_when_present() {
    let (backend, proxy) = setup("").await;
    let mut client = greeter(proxy.channel().await);

    let mut ids = Vec::new();
    for _ in 0..2 {
        bounded(client.say_hello(hello("a"))).await.unwrap();
        let seen = backend.last_request().unwrap();
        let id = seen.headers.get("x-request-id").expect("an id was set");
        assert!(!id.is_empty());
        ids.push(id.clone());
    }
    assert_ne!(ids[0], ids[1], "each call gets its own id");

    let request = with_meta(hello("b"), &[("x-request-id", "my-id-42")]);
    bounded(client.say_hello(request)).await.unwrap();
    let seen = backend.last_request().unwrap();
    let all: Vec<_> = seen.headers.get_all("x-request-id").iter().collect();
    assert_eq!(all, ["my-id-42"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn route_headers_are_set_both_ways() {
    let (backend, proxy) = setup(
        r#"request_headers = { "x-env" = "prod" }
response_headers = { "strict-transport-security" = "max-age=6000; includeSubDomains", "x-backend" = "hidden" }"#,
    )
    .await;
    let mut client = greeter(proxy.channel().await);
    // A client-sent value is replaced, not kept beside.
    let request = with_meta(hello("a"), &[("x-env", "dev")]);
    let reply = bounded(client.say_hello(request)).await.unwrap();
    let seen = backend.last_request().unwrap();
    let all: Vec<_> = seen.headers.get_all("x-env").iter().collect();
    assert_eq!(all, ["prod"]);
    assert_eq!(
        text(reply.metadata(), "strict-transport-security"),
        Some("max-age=6000; includeSubDomains")
    );
    // Set means set: the backend's own x-backend is replaced.
    let values: Vec<_> = reply.metadata().get_all("x-backend").iter().collect();
    assert_eq!(values, ["hidden"]);

    // Streaming responses get them too.
    let stream = bounded(client.say_hello_stream(HelloStreamRequest {
        name: "a".into(),
        count: 1,
        interval_ms: 0,
    }))
    .await
    .unwrap();
    assert_eq!(
        text(stream.metadata(), "strict-transport-security"),
        Some("max-age=6000; includeSubDomains")
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn client_cancel_of_a_server_stream_cancels_the_backend_call() {
    let (backend, proxy) = setup("").await;
    let mut client = greeter(proxy.channel().await);
    let request = HelloStreamRequest {
        name: "Ann".into(),
        count: 100_000,
        interval_ms: 10,
    };
    let mut stream = bounded(client.say_hello_stream(request))
        .await
        .unwrap()
        .into_inner();
    assert!(bounded(stream.message()).await.unwrap().is_some());
    assert_eq!(backend.in_flight(), 1);
    drop(stream); // RST_STREAM(CANCEL) to the proxy
    bounded(backend.wait_until(|b| b.cancelled() == 1 && b.in_flight() == 0)).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn client_cancel_of_a_waiting_unary_call_cancels_the_backend_call() {
    let (backend, proxy) = setup("").await;
    let client = greeter(proxy.channel().await);
    // Far longer than the test may take: only a propagated cancel ends it in time.
    let request = with_meta(hello("slow"), &[(meta::DELAY_MS, "60000")]);
    let call = tokio::spawn(async move { client.clone().say_hello(request).await });
    bounded(backend.wait_until(|b| b.in_flight() == 1)).await;
    call.abort();
    bounded(backend.wait_until(|b| b.cancelled() == 1 && b.in_flight() == 0)).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn client_cancel_of_an_open_client_stream_cancels_the_backend_call() {
    let (backend, proxy) = setup("").await;
    let client = greeter(proxy.channel().await);
    let (tx, outbound) = channel_stream();
    tx.send(hello("first")).await.unwrap();
    let call = tokio::spawn(async move { client.clone().say_hello_client_stream(outbound).await });
    bounded(backend.wait_until(|b| b.in_flight() == 1)).await;
    call.abort();
    bounded(backend.wait_until(|b| b.cancelled() == 1 && b.in_flight() == 0)).await;
    drop(tx);
    proxy.shutdown().await;
}

/// A server-streaming request for `count` replies of about `size` bytes each.
fn big_stream(size: usize, count: u32) -> HelloStreamRequest {
    HelloStreamRequest {
        name: "f".repeat(size),
        count,
        interval_ms: 0,
    }
}

#[tokio::test]
async fn a_slow_reader_holds_back_the_backend() {
    // 48 replies of 1 MiB: far more than every flow-control window and buffer on the
    // way (client, proxy, upstream) together.
    const SIZE: usize = 1 << 20;
    const COUNT: u32 = 48;
    let (backend, proxy) = setup("").await;
    let mut client = greeter(proxy.channel().await);

    // Reading at full speed: the time the whole stream takes, to size the window below.
    let started = Instant::now();
    let mut stream = bounded(client.say_hello_stream(big_stream(SIZE, COUNT)))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while bounded(stream.message()).await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, COUNT);
    bounded(backend.wait_until(|b| b.in_flight() == 0)).await;
    let full_speed = started.elapsed();

    // Now read one reply and stop. With flow control end to end the backend cannot
    // finish: its call stays in flight. A proxy that buffered the stream would let it
    // finish in about `full_speed`; wait several times that (an event that must not
    // happen can only be watched for a while).
    let mut stream = bounded(client.say_hello_stream(big_stream(SIZE, COUNT)))
        .await
        .unwrap()
        .into_inner();
    assert!(bounded(stream.message()).await.unwrap().is_some());
    let window = (full_speed * 4).max(Duration::from_millis(500));
    let finished = tokio::time::timeout(window, backend.wait_until(|b| b.in_flight() == 0)).await;
    assert!(
        finished.is_err(),
        "the backend finished all {COUNT} MiB while the client read 1 (window {window:?})"
    );

    // Reading again lets everything through, with nothing lost or cancelled.
    let mut n = 1;
    while bounded(stream.message()).await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, COUNT);
    bounded(backend.wait_until(|b| b.in_flight() == 0)).await;
    assert_eq!(backend.cancelled(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn client_streaming_of_many_megabytes_passes() {
    // Far beyond the proxy's 64 KiB replay buffer, so the request streams through
    // rather than being held.
    let (backend, proxy) = setup("").await;
    let mut client = greeter(proxy.channel().await);
    let names: Vec<String> = (0..100)
        .map(|i| format!("{i:03}{}", "m".repeat(64 << 10)))
        .collect();
    let outbound = futures_util::stream::iter(names.clone().into_iter().map(|n| hello(&n)));
    let reply = bounded(client.say_hello_client_stream(outbound))
        .await
        .unwrap();
    assert_eq!(
        reply.get_ref().message,
        format!("Hello {} from b1", names.join(", "))
    );
    assert_eq!(backend.cancelled(), 0);
    proxy.shutdown().await;
}

/// An HTTP/1.1 server that answers every request with the request's headers as
/// `name: value` lines, and adds hop-by-hop headers of its own to the response.
async fn spawn_header_echo_server() -> SocketAddr {
    spawn_http1_server(|request| {
        let mut lines = String::new();
        for (name, value) in request.headers() {
            lines.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
        }
        http::Response::builder()
            .header("connection", "x-hop-resp")
            .header("x-hop-resp", "1")
            .header("keep-alive", "timeout=5")
            .header("x-end-to-end", "kept")
            .header("server", "BaseHTTP/0.6 Python/3.11.7")
            .body(lines)
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn http1_upstream_gets_the_same_header_treatment_both_ways() {
    let upstream = spawn_header_echo_server().await;
    let config = OneCluster::new(format!("\"{upstream}\""))
        .route(
            r#"request_headers = { "x-env" = "prod" }
response_headers = { "x-frame-options" = "DENY" }"#,
        )
        .cluster("protocol = \"http1\"")
        .build();
    let proxy = common::start_proxy(&config);
    let (head, body) = http1_get(
        proxy.addr,
        "/headers",
        &[
            ("connection", "keep-alive, x-hop-req"),
            ("x-hop-req", "1"),
            ("keep-alive", "timeout=5"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-request-id", "rid-1"),
        ],
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    let seen = String::from_utf8(body.to_vec()).unwrap();
    let seen: Vec<&str> = seen.lines().collect();
    for gone in ["x-hop-req", "keep-alive"] {
        assert!(
            !seen.iter().any(|l| l.starts_with(&format!("{gone}:"))),
            "{gone} reached the upstream: {seen:?}"
        );
    }
    for kept in [
        "x-forwarded-for: 203.0.113.7, 127.0.0.1",
        "x-request-id: rid-1",
        "x-env: prod",
    ] {
        assert!(seen.contains(&kept), "{kept} missing: {seen:?}");
    }
    // The upstream's hop-by-hop response headers stop at the proxy.
    assert!(
        !head.headers.contains_key("x-hop-resp"),
        "{:?}",
        head.headers
    );
    assert!(
        !head.headers.contains_key("keep-alive"),
        "{:?}",
        head.headers
    );
    assert_eq!(head.headers.get("x-end-to-end").unwrap(), "kept");
    assert_eq!(head.headers.get("x-frame-options").unwrap(), "DENY");
    // The backend's software is not told to clients (as NGINX hides `server`).
    assert!(!head.headers.contains_key("server"), "{:?}", head.headers);
    proxy.shutdown().await;
}
