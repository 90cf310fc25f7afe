//! The demo crate's own tests: a tonic client straight to a backend, no proxy.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

use std::time::Duration;

use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::pb::helloworld::{HelloRequest, HelloStreamRequest, greeter_client::GreeterClient};
use crate::pb::pcbook::{
    CreateLaptopRequest, Laptop, LoginRequest, auth_service_client::AuthServiceClient,
    laptop_service_client::LaptopServiceClient,
};
use crate::{BackendHandle, BackendOptions, MAX_MESSAGE_BYTES, meta, serve_backend, spawn_backend};

/// Bounds every wait so a broken test fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(10);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

async fn channel(backend: &BackendHandle) -> Channel {
    Channel::from_shared(backend.url())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn greeter(backend: &BackendHandle) -> GreeterClient<Channel> {
    GreeterClient::new(channel(backend).await)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest { name: name.into() }
}

fn text<'a>(md: &'a MetadataMap, key: &str) -> Option<&'a str> {
    md.get(key).and_then(|v| v.to_str().ok())
}

fn with_meta<T>(message: T, pairs: &[(&'static str, &str)]) -> Request<T> {
    let mut request = Request::new(message);
    for (key, value) in pairs {
        request
            .metadata_mut()
            .insert(*key, MetadataValue::try_from(*value).unwrap());
    }
    request
}

#[tokio::test]
async fn unary_is_tagged_in_message_header_and_trailer() {
    let backend = spawn_backend("b1").await.unwrap();
    let mut client = greeter(&backend).await;
    let reply = bounded(client.say_hello(hello("Ann"))).await.unwrap();
    assert_eq!(reply.get_ref().message, "Hello Ann from b1");
    // tonic merges a unary call's trailers into the response metadata.
    assert_eq!(text(reply.metadata(), meta::BACKEND), Some("b1"));
    assert_eq!(text(reply.metadata(), meta::BACKEND_TRAILER), Some("b1"));
    assert_eq!(backend.calls(), 1);
    assert_eq!(backend.cancelled(), 0);
    let seen = backend.last_request().unwrap();
    assert_eq!(seen.path, "/helloworld.Greeter/SayHello");
    assert_eq!(
        seen.authority.as_deref(),
        Some(backend.addr().to_string().as_str())
    );
    assert_eq!(seen.headers.get("te").unwrap(), "trailers");
}

#[tokio::test]
async fn server_stream_sends_count_replies_then_trailer() {
    let backend = spawn_backend("b2").await.unwrap();
    let mut client = greeter(&backend).await;
    let request = HelloStreamRequest {
        name: "Bo".into(),
        count: 5,
        interval_ms: 0,
    };
    let response = bounded(client.say_hello_stream(request)).await.unwrap();
    assert_eq!(text(response.metadata(), meta::BACKEND), Some("b2"));
    let mut stream = response.into_inner();
    let mut messages = Vec::new();
    while let Some(reply) = bounded(stream.message()).await.unwrap() {
        messages.push(reply.message);
    }
    let expected: Vec<String> = (0..5).map(|i| format!("Hello Bo #{i} from b2")).collect();
    assert_eq!(messages, expected);
    let trailers = bounded(stream.trailers()).await.unwrap().unwrap();
    assert_eq!(text(&trailers, meta::BACKEND_TRAILER), Some("b2"));
}

#[tokio::test]
async fn client_stream_greets_all_names_in_order() {
    let backend = spawn_backend("b3").await.unwrap();
    let mut client = greeter(&backend).await;
    let names = futures_util::stream::iter(["a", "b", "c"].map(hello));
    let reply = bounded(client.say_hello_client_stream(names))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().message, "Hello a, b, c from b3");
    assert_eq!(text(reply.metadata(), meta::BACKEND_TRAILER), Some("b3"));
}

#[tokio::test]
async fn bidi_answers_each_message_as_it_arrives() {
    let backend = spawn_backend("b4").await.unwrap();
    let mut client = greeter(&backend).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let response = bounded(client.say_hello_bidi(outbound)).await;
    // The headers come before any message, so the call is set up already.
    let mut inbound = response.unwrap().into_inner();
    for i in 0..5 {
        // Ping-pong: the next message goes only after the previous reply came back.
        tx.send(hello(&format!("n{i}"))).await.unwrap();
        let reply = bounded(inbound.message()).await.unwrap().unwrap();
        assert_eq!(reply.message, format!("Hello n{i} from b4"));
    }
    drop(tx);
    assert!(bounded(inbound.message()).await.unwrap().is_none());
    let trailers = bounded(inbound.trailers()).await.unwrap().unwrap();
    assert_eq!(text(&trailers, meta::BACKEND_TRAILER), Some("b4"));
}

#[tokio::test]
async fn eight_mib_messages_go_both_ways() {
    let backend = spawn_backend("big").await.unwrap();
    let mut client = greeter(&backend).await;
    let name = "x".repeat(8 * 1024 * 1024);
    let reply = bounded(client.say_hello(hello(&name))).await.unwrap();
    assert!(reply.get_ref().message.len() > name.len());
    assert!(reply.get_ref().message.ends_with(" from big"));
}

#[tokio::test]
async fn gzip_messages_are_accepted_and_sent() {
    let backend = spawn_backend("z").await.unwrap();
    let mut client = greeter(&backend)
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let name = "z".repeat(64 * 1024);
    let mut request = with_meta(hello(&name), &[(meta::ECHO_METADATA, "1")]);
    request.set_timeout(Duration::from_secs(30));
    let reply = bounded(client.say_hello(request)).await.unwrap();
    assert_eq!(reply.get_ref().message, format!("Hello {name} from z"));
    assert_eq!(
        text(reply.metadata(), meta::SEEN_GRPC_ENCODING),
        Some("gzip")
    );
    assert_eq!(text(reply.metadata(), "grpc-encoding"), Some("gzip"));
}

/// Sends one raw HTTP/1.1 request and reads the whole answer.
async fn http1(backend: &BackendHandle, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(backend.addr())
        .await
        .unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    bounded(tcp.read_to_string(&mut answer)).await.unwrap();
    answer
}

#[tokio::test]
async fn http_status_makes_a_non_grpc_answer() {
    let backend = spawn_backend("hs").await.unwrap();
    let answer = http1(
        &backend,
        "POST /helloworld.Greeter/SayHello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
         content-type: application/grpc\r\nx-http-status: 503\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(!answer.contains("grpc-status"), "{answer}");
    assert!(answer.ends_with("requested HTTP status\n"), "{answer}");
    // Over HTTP/2, tonic's client sees the failure too.
    let mut client = greeter(&backend).await;
    let request = with_meta(hello("x"), &[(meta::HTTP_STATUS, "503")]);
    let status = bounded(client.say_hello(request)).await.unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    assert_eq!(text(status.metadata(), meta::BACKEND), Some("hs"));
    assert_eq!(backend.cancelled(), 0);
}

#[tokio::test]
async fn plain_http1_requests_get_text() {
    let backend = spawn_backend("p").await.unwrap();
    let answer = http1(
        &backend,
        "GET /anything HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("x-backend: p\r\n"), "{answer}");
    assert!(answer.ends_with("Hello from p\n"), "{answer}");
    assert_eq!(backend.calls(), 1);
}

#[tokio::test]
async fn fail_code_gives_status_with_details_and_tags() {
    let backend = spawn_backend("f").await.unwrap();
    let mut client = greeter(&backend).await;
    let mut request = with_meta(hello("x"), &[(meta::FAIL_CODE, "5")]);
    let details: &[u8] = &[0, 1, 2, 0xff, b'z'];
    request
        .metadata_mut()
        .insert_bin(meta::FAIL_DETAILS_BIN, MetadataValue::from_bytes(details));
    let status = bounded(client.say_hello(request)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "requested failure");
    assert_eq!(status.details(), details);
    assert_eq!(text(status.metadata(), meta::BACKEND), Some("f"));
    assert_eq!(text(status.metadata(), meta::BACKEND_TRAILER), Some("f"));
    assert_eq!(backend.calls(), 1);
    assert_eq!(backend.cancelled(), 0);
}

#[tokio::test]
async fn fail_after_ends_a_stream_with_the_failure_in_trailers() {
    let backend = spawn_backend("fa").await.unwrap();
    let mut client = greeter(&backend).await;
    let request = with_meta(
        HelloStreamRequest {
            name: "s".into(),
            count: 10,
            interval_ms: 0,
        },
        &[(meta::FAIL_CODE, "14"), (meta::FAIL_AFTER, "2")],
    );
    let mut stream = bounded(client.say_hello_stream(request))
        .await
        .unwrap()
        .into_inner();
    assert!(bounded(stream.message()).await.unwrap().is_some());
    assert!(bounded(stream.message()).await.unwrap().is_some());
    let status = bounded(stream.message()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(text(status.metadata(), meta::BACKEND_TRAILER), Some("fa"));
}

#[tokio::test]
async fn echo_metadata_reports_what_arrived() {
    let backend = spawn_backend("e").await.unwrap();
    let mut client = greeter(&backend).await;
    let mut request = with_meta(
        hello("x"),
        &[
            (meta::ECHO_METADATA, "1"),
            ("x-echo-color", "blue"),
            ("x-request-id", "rid-1"),
            ("x-other", "not echoed"),
        ],
    );
    let binary: &[u8] = &[0xde, 0xad, 0, 0xbe, 0xef];
    request
        .metadata_mut()
        .insert_bin("x-trace-bin", MetadataValue::from_bytes(binary));
    request.set_timeout(Duration::from_secs(30));
    let reply = bounded(client.say_hello(request)).await.unwrap();
    let md = reply.metadata();
    assert_eq!(text(md, "x-echo-color"), Some("blue"));
    assert_eq!(
        md.get_bin("x-trace-bin")
            .unwrap()
            .to_bytes()
            .unwrap()
            .as_ref(),
        binary
    );
    assert!(md.get("x-other").is_none());
    assert_eq!(text(md, meta::SEEN_TE), Some("trailers"));
    assert_eq!(text(md, meta::SEEN_REQUEST_ID), Some("rid-1"));
    assert_eq!(
        text(md, meta::SEEN_AUTHORITY),
        Some(backend.addr().to_string().as_str())
    );
    assert!(text(md, meta::SEEN_GRPC_TIMEOUT).is_some());
    assert!(md.get(meta::SEEN_CONNECTION).is_none());
    assert!(md.get(meta::SEEN_FORWARDED_FOR).is_none());
    let names = text(md, meta::SEEN_HEADERS).unwrap();
    assert!(names.split(',').any(|n| n == "x-other"), "{names}");
    assert!(names.split(',').any(|n| n == "content-type"), "{names}");
}

#[tokio::test]
async fn delayed_call_abandoned_by_its_client_counts_as_cancelled() {
    let backend = spawn_backend("c").await.unwrap();
    let mut client = greeter(&backend).await;
    let call = tokio::spawn(async move {
        let request = with_meta(hello("slow"), &[(meta::DELAY_MS, "600000")]);
        client.say_hello(request).await
    });
    bounded(backend.wait_until(|b| b.in_flight() == 1)).await;
    call.abort(); // the client goes away: its stream is reset
    bounded(backend.wait_until(|b| b.cancelled() == 1)).await;
    assert_eq!(backend.in_flight(), 0);
    assert_eq!(backend.calls(), 1);
}

#[tokio::test]
async fn dropped_server_stream_counts_as_cancelled() {
    let backend = spawn_backend("c2").await.unwrap();
    let mut client = greeter(&backend).await;
    let request = HelloStreamRequest {
        name: "s".into(),
        count: 100_000,
        interval_ms: 5,
    };
    let mut stream = bounded(client.say_hello_stream(request))
        .await
        .unwrap()
        .into_inner();
    assert!(bounded(stream.message()).await.unwrap().is_some());
    drop(stream);
    bounded(backend.wait_until(|b| b.cancelled() == 1)).await;
    assert_eq!(backend.in_flight(), 0);
}

#[tokio::test]
async fn delay_holds_the_reply() {
    let backend = spawn_backend("d").await.unwrap();
    let mut client = greeter(&backend).await;
    let start = tokio::time::Instant::now();
    let request = with_meta(hello("x"), &[(meta::DELAY_MS, "200")]);
    bounded(client.say_hello(request)).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn client_timeout_cancels_the_delayed_call() {
    let backend = spawn_backend("dl").await.unwrap();
    let mut client = greeter(&backend).await;
    let mut request = with_meta(hello("x"), &[(meta::DELAY_MS, "600000")]);
    request.set_timeout(Duration::from_millis(50));
    let status = bounded(client.say_hello(request)).await.unwrap_err();
    // tonic's channel gives up on its own ("Timeout expired", CANCELLED): the backend
    // does not enforce grpc-timeout.
    assert!(
        matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{status:?}"
    );
    bounded(backend.wait_until(|b| b.cancelled() == 1)).await;
}

#[tokio::test]
async fn reset_stream_sends_the_requested_http2_code() {
    let backend = spawn_backend("r").await.unwrap();
    let mut client = greeter(&backend).await;
    let refused = with_meta(hello("x"), &[(meta::RESET_STREAM, "7")]);
    let status = bounded(client.say_hello(refused)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}"); // REFUSED_STREAM
    let cancel = with_meta(hello("x"), &[(meta::RESET_STREAM, "8")]);
    let status = bounded(client.say_hello(cancel)).await.unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}"); // CANCEL
    // The connection survives a stream reset.
    bounded(client.say_hello(hello("ok"))).await.unwrap();
    assert_eq!(backend.cancelled(), 0);
}

#[tokio::test]
async fn reset_after_frames_resets_mid_stream() {
    let backend = spawn_backend("rm").await.unwrap();
    let mut client = greeter(&backend).await;
    let request = with_meta(
        HelloStreamRequest {
            name: "s".into(),
            count: 10,
            interval_ms: 20,
        },
        &[(meta::RESET_STREAM, "2"), (meta::RESET_AFTER_FRAMES, "2")],
    );
    let mut stream = bounded(client.say_hello_stream(request))
        .await
        .unwrap()
        .into_inner();
    let mut received = 0;
    let status = loop {
        match bounded(stream.message()).await {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("stream ended without the reset"),
            Err(status) => break status,
        }
    };
    assert_eq!(received, 2);
    assert_eq!(status.code(), Code::Internal, "{status:?}"); // INTERNAL_ERROR
}

#[tokio::test]
async fn pcbook_login_and_create_laptop_are_tagged() {
    let backend = spawn_backend("pc").await.unwrap();
    let channel = channel(&backend).await;
    let mut auth = AuthServiceClient::new(channel.clone());
    let login = |password: &str| LoginRequest {
        username: "admin1".into(),
        password: password.into(),
    };
    let token = bounded(auth.login(login("secret"))).await.unwrap();
    assert_eq!(token.get_ref().access_token, "pc.admin1.1");
    let status = bounded(auth.login(login("wrong"))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let mut laptops = LaptopServiceClient::new(channel);
    let laptop = Laptop {
        brand: "Lenovo".into(),
        name: "Thinkpad X1".into(),
        cpu_cores: 8,
        ram_bytes: 16 << 30,
        ..Laptop::default()
    };
    let create = |laptop: Option<Laptop>| CreateLaptopRequest { laptop };
    let id = bounded(laptops.create_laptop(create(Some(laptop.clone())))).await;
    assert_eq!(id.unwrap().get_ref().id, "pc-1");
    let id = bounded(laptops.create_laptop(create(Some(laptop.clone())))).await;
    assert_eq!(id.unwrap().get_ref().id, "pc-2");
    let given = Laptop {
        id: "mine".into(),
        ..laptop
    };
    let id = bounded(laptops.create_laptop(create(Some(given)))).await;
    assert_eq!(id.unwrap().get_ref().id, "mine");
    let status = bounded(laptops.create_laptop(create(None)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(backend.calls(), 6);
}

#[tokio::test]
async fn health_serves_every_service_and_can_be_turned_off() {
    let backend = spawn_backend("h").await.unwrap();
    let mut health = HealthClient::new(channel(&backend).await);
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    for service in [
        "",
        "helloworld.Greeter",
        "techschool_pcbook.AuthService",
        "techschool_pcbook.LaptopService",
    ] {
        let reply = bounded(health.check(check(service))).await.unwrap();
        assert_eq!(
            reply.get_ref().status(),
            ServingStatus::Serving,
            "{service}"
        );
    }
    backend.set_serving(false).await;
    let reply = bounded(health.check(check(""))).await.unwrap();
    assert_eq!(reply.get_ref().status(), ServingStatus::NotServing);
    let reply = bounded(health.check(check("helloworld.Greeter")))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().status(), ServingStatus::NotServing);
    let status = bounded(health.check(check("nope"))).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn kill_fails_calls_in_flight_and_closes_the_port() {
    let backend = spawn_backend("k").await.unwrap();
    let addr = backend.addr();
    let mut client = greeter(&backend).await;
    let mut in_flight = client.clone();
    let call = tokio::spawn(async move {
        let request = with_meta(hello("slow"), &[(meta::DELAY_MS, "600000")]);
        in_flight.say_hello(request).await
    });
    bounded(backend.wait_until(|b| b.in_flight() == 1)).await;
    bounded(backend.kill()).await;
    let status = bounded(call).await.unwrap().unwrap_err();
    assert!(
        matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Internal
        ),
        "{status:?}"
    );
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(bounded(client.say_hello(hello("x"))).await.is_err());
    // The handler cut off by the kill ends as cancelled.
    bounded(backend.wait_until(|b| b.in_flight() == 0)).await;
    assert_eq!((backend.calls(), backend.cancelled()), (1, 1));
}

#[tokio::test]
async fn killed_backend_comes_back_on_the_same_address() {
    let backend = spawn_backend("k1").await.unwrap();
    let addr = backend.addr();
    bounded(backend.kill()).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let again = crate::spawn_backend_on(listener, BackendOptions::new("k2"))
        .await
        .unwrap();
    let mut client = greeter(&again).await;
    let reply = bounded(client.say_hello(hello("x"))).await.unwrap();
    assert_eq!(reply.get_ref().message, "Hello x from k2");
}

#[tokio::test]
async fn graceful_shutdown_lets_calls_in_flight_finish() {
    let backend = spawn_backend("g").await.unwrap();
    let addr = backend.addr();
    let mut client = greeter(&backend).await;
    let call = tokio::spawn(async move {
        let request = with_meta(hello("slow"), &[(meta::DELAY_MS, "300")]);
        client.say_hello(request).await
    });
    bounded(backend.wait_until(|b| b.in_flight() == 1)).await;
    bounded(backend.shutdown()).await;
    let reply = bounded(call).await.unwrap().unwrap();
    assert_eq!(reply.get_ref().message, "Hello slow from g");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn serve_backend_returns_after_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_backend(
        listener,
        BackendOptions::new("sb"),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut client = GreeterClient::connect(url).await.unwrap();
    let reply = bounded(client.say_hello(hello("x"))).await.unwrap();
    assert_eq!(reply.get_ref().message, "Hello x from sb");
    stop.send(()).unwrap();
    bounded(server).await.unwrap().unwrap();
}

#[tokio::test]
async fn invalid_name_is_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = serve_backend(listener, BackendOptions::new("bad\nname"), async {})
        .await
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn stream_limit_is_announced() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend =
        crate::spawn_backend_on(listener, BackendOptions::new("s").max_concurrent_streams(1))
            .await
            .unwrap();
    let mut client = greeter(&backend).await;
    let mut second = client.clone();
    // The first call holds the only stream; the second waits for it at the client.
    let first = tokio::spawn(async move {
        let request = with_meta(hello("a"), &[(meta::DELAY_MS, "200")]);
        client.say_hello(request).await
    });
    bounded(backend.wait_until(|b| b.in_flight() == 1)).await;
    let reply = bounded(second.say_hello(hello("b"))).await.unwrap();
    assert_eq!(reply.get_ref().message, "Hello b from s");
    // It could only start once the first had finished.
    assert!(bounded(first).await.unwrap().is_ok());
    assert_eq!(backend.calls(), 2);
}

#[test]
fn descriptor_set_names_both_files() {
    // File names are plain strings inside the encoded FileDescriptorSet.
    let text = String::from_utf8_lossy(crate::pb::FILE_DESCRIPTOR_SET);
    assert!(text.contains("helloworld.proto"));
    assert!(text.contains("pcbook.proto"));
}

/// Server reflection lists every service, so `grpcurl -plaintext ADDR list` works.
#[tokio::test]
async fn reflection_lists_every_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let backend = spawn_backend("b1").await.unwrap();
    let mut client = ServerReflectionClient::new(channel(&backend).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = bounded(client.server_reflection_info(futures_util::stream::iter([request])))
        .await
        .unwrap()
        .into_inner();
    let reply = bounded(replies.message()).await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("not a service list: {reply:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "helloworld.Greeter",
        "techschool_pcbook.AuthService",
        "techschool_pcbook.LaptopService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}
