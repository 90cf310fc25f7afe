//! The access log (contract §7): one line per call with the final gRPC status, whichever way
//! the call ended, in JSON and in text.
#![allow(clippy::unwrap_used)]

mod common;

use common::OneCluster;
use common::files::{TempDir, read_lines};
use rpcgate_demo::pb::helloworld::{HelloRequest, greeter_client::GreeterClient};

/// One cluster over `backend`, logging every call to `log` in `format`.
fn config(
    backend: &rpcgate_demo::BackendHandle,
    log: &std::path::Path,
    format: &str,
) -> OneCluster {
    OneCluster::backends(&[backend]).log(format!(
        "access_log = \"{}\"\nformat = \"{format}\"",
        log.display()
    ))
}

#[tokio::test]
async fn json_lines_record_route_endpoint_and_final_grpc_status() {
    let dir = TempDir::new("access");
    let log = dir.0.join("access.json");
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let proxy = common::start_proxy(&config(&backend, &log, "json").build());
    let mut client = GreeterClient::new(proxy.channel().await);
    client
        .say_hello(HelloRequest { name: "ok".into() })
        .await
        .unwrap();
    let mut failing = tonic::Request::new(HelloRequest { name: "no".into() });
    failing
        .metadata_mut()
        .insert("x-fail-code", "5".parse().unwrap());
    failing
        .metadata_mut()
        .insert("x-request-id", "req-42".parse().unwrap());
    let status = client.say_hello(failing).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    let lines = read_lines(&log, 2).await;
    let ok: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let failed: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(ok["listener"], "edge");
    assert_eq!(ok["path"], "/helloworld.Greeter/SayHello");
    assert_eq!(ok["grpc_service"], "helloworld.Greeter");
    assert_eq!(ok["grpc_method"], "SayHello");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["grpc_status"], 0);
    assert_eq!(ok["cluster"], "main");
    assert_eq!(ok["route"], "edge/0");
    assert_eq!(ok["endpoint"], backend.addr().to_string());
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["protocol"], "HTTP/2.0");
    assert!(ok["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(ok["request_id"].as_str().unwrap().len(), 32);
    assert_eq!(failed["grpc_status"], 5);
    assert_eq!(failed["request_id"], "req-42");
    // The backend answered both: no failure reason of the proxy's.
    assert!(
        ok["reason"].is_null() && failed["reason"].is_null(),
        "{ok} {failed}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn text_lines_read_like_nginx_and_include_proxy_errors() {
    let dir = TempDir::new("access-text");
    let log = dir.0.join("access.log");
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let text = config(&backend, &log, "text")
        .route_match("match.service = \"helloworld.Greeter\"")
        .build();
    let proxy = common::start_proxy(&text);
    let channel = proxy.channel().await;
    let mut client = GreeterClient::new(channel.clone());
    client
        .say_hello(HelloRequest { name: "ok".into() })
        .await
        .unwrap();
    let mut other = rpcgate_demo::pb::pcbook::auth_service_client::AuthServiceClient::new(channel);
    let status = other
        .login(rpcgate_demo::pb::pcbook::LoginRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let lines = read_lines(&log, 2).await;
    assert!(
        lines[0].contains("\"POST /helloworld.Greeter/SayHello HTTP/2.0\" 200 grpc=0"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("\"POST /techschool_pcbook.AuthService/Login HTTP/2.0\" 200 grpc=12"),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains("route=- cluster=-"), "{}", lines[1]);
    assert!(lines[1].ends_with("reason=no_route"), "{}", lines[1]);
    assert!(lines[0].ends_with("reason=-"), "{}", lines[0]);
    // A plain-HTTP error of the proxy's own counts its body's bytes.
    let (head, body) = common::http::http1_get(proxy.addr, "/nothing", &[]).await;
    assert_eq!((head.status.as_u16(), body.len()), (404, 22));
    let lines = read_lines(&log, 3).await;
    assert!(
        lines[2].contains("\"GET /nothing HTTP/1.1\" 404 "),
        "{}",
        lines[2]
    );
    assert!(lines[2].contains(" 22 \""), "{}", lines[2]);
    proxy.shutdown().await;
}

/// Streaming requests are counted to their end: the request body goes on streaming after
/// the response head, and the line is written when the call ends.
#[tokio::test]
async fn byte_counts_cover_streaming_calls() {
    let dir = TempDir::new("access-bidi");
    let log = dir.0.join("access.json");
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let proxy = common::start_proxy(&config(&backend, &log, "json").build());
    let mut client = GreeterClient::new(proxy.channel().await);
    let names = ["ann", "bob", "cy"];
    let requests = futures_util::stream::iter(names.map(|n| HelloRequest { name: n.into() }));
    let mut replies = client.say_hello_bidi(requests).await.unwrap().into_inner();
    let mut received = 0;
    while let Some(reply) = replies.message().await.unwrap() {
        assert!(reply.message.contains("from b1"));
        received += 1;
    }
    assert_eq!(received, names.len());

    let lines = read_lines(&log, 1).await;
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["path"], "/helloworld.Greeter/SayHelloBidi");
    assert_eq!(line["grpc_status"], 0);
    // Each message: a 5-byte gRPC prefix and the encoded name (2 + its length).
    let sent: u64 = names.iter().map(|n| 5 + 2 + n.len() as u64).sum();
    assert_eq!(line["bytes_in"].as_u64().unwrap(), sent, "{line}");
    assert!(line["bytes_out"].as_u64().unwrap() > sent, "{line}");
    proxy.shutdown().await;
}

/// Calls the proxy ended say why, in a short word (as Envoy's response flags).
#[tokio::test]
async fn failed_calls_carry_a_reason() {
    let dir = TempDir::new("access-reason");
    let log = dir.0.join("access.json");
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let text = config(&backend, &log, "json")
        .route("timeout = \"100ms\"")
        .build();
    let proxy = common::start_proxy(&text);
    let mut client = GreeterClient::new(proxy.channel().await);
    let mut slow = tonic::Request::new(HelloRequest {
        name: "slow".into(),
    });
    slow.metadata_mut()
        .insert("x-delay-ms", "5000".parse().unwrap());
    let status = client.say_hello(slow).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    let lines = read_lines(&log, 1).await;
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["reason"], "deadline", "{line}");
    assert_eq!(line["grpc_status"], 4);
    proxy.shutdown().await;
}

/// gRPC framing: a 5-byte prefix and the encoded message.
fn framed(message: &impl prost::Message) -> u64 {
    5 + message.encoded_len() as u64
}

/// Byte counts are exact in both directions for all four gRPC call kinds over HTTP/2,
/// and for a plain HTTP/1.1 cluster (request and response bodies).
#[tokio::test]
async fn byte_counts_are_exact_for_every_call_kind_and_http1() {
    use rpcgate_demo::pb::helloworld::{HelloReply, HelloStreamRequest};

    let dir = TempDir::new("access-bytes");
    let log = dir.0.join("access.json");
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let proxy = common::start_proxy(&config(&backend, &log, "json").build());
    let mut client = GreeterClient::new(proxy.channel().await);
    let replies_out = |replies: &[HelloReply]| replies.iter().map(framed).sum::<u64>();
    let mut want: Vec<(&str, u64, u64)> = Vec::new();

    // Unary.
    let request = HelloRequest { name: "ann".into() };
    let reply = client
        .say_hello(request.clone())
        .await
        .unwrap()
        .into_inner();
    want.push(("SayHello", framed(&request), framed(&reply)));

    // Server streaming.
    let request = HelloStreamRequest {
        name: "bob".into(),
        count: 3,
        ..Default::default()
    };
    let mut stream = client
        .say_hello_stream(request.clone())
        .await
        .unwrap()
        .into_inner();
    let mut replies = Vec::new();
    while let Some(reply) = stream.message().await.unwrap() {
        replies.push(reply);
    }
    assert_eq!(replies.len(), 3);
    want.push(("SayHelloStream", framed(&request), replies_out(&replies)));

    // Client streaming and bidirectional.
    let names = ["cy", "dee", "eve"].map(|n| HelloRequest { name: n.into() });
    let sent: u64 = names.iter().map(framed).sum();
    let reply = client
        .say_hello_client_stream(futures_util::stream::iter(names.clone()))
        .await
        .unwrap()
        .into_inner();
    want.push(("SayHelloClientStream", sent, framed(&reply)));
    let mut stream = client
        .say_hello_bidi(futures_util::stream::iter(names.clone()))
        .await
        .unwrap()
        .into_inner();
    let mut replies = Vec::new();
    while let Some(reply) = stream.message().await.unwrap() {
        replies.push(reply);
    }
    want.push(("SayHelloBidi", sent, replies_out(&replies)));

    let lines = read_lines(&log, want.len()).await;
    for (line, (method, bytes_in, bytes_out)) in lines.iter().zip(&want) {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(line["grpc_method"], *method, "{line}");
        assert_eq!(line["bytes_in"].as_u64(), Some(*bytes_in), "{line}");
        assert_eq!(line["bytes_out"].as_u64(), Some(*bytes_out), "{line}");
    }
    proxy.shutdown().await;

    // HTTP/1.1 towards the backend: a POST with a body, a reply with a body.
    let upstream = common::http::spawn_http1_server(|_request| {
        http::Response::new("0123456789abcdef".to_string())
    })
    .await;
    let log = dir.0.join("access-http1.json");
    let config = OneCluster::new(format!("\"{upstream}\""))
        .log(format!("access_log = \"{}\"", log.display()))
        .cluster("protocol = \"http1\"")
        .build();
    let proxy = common::start_proxy(&config);
    let request = http::Request::post("/upload")
        .header("host", "api.test")
        .body("twelve bytes".to_string())
        .unwrap();
    let (head, body) = common::http::http1_request(proxy.addr, request).await;
    assert_eq!(head.status, 200);
    assert_eq!(&body[..], b"0123456789abcdef");
    let lines = read_lines(&log, 1).await;
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["bytes_in"].as_u64(), Some(12), "{line}");
    assert_eq!(line["bytes_out"].as_u64(), Some(16), "{line}");
    proxy.shutdown().await;
}
