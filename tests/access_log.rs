//! The access log (SPEC §7): one line per call with the final gRPC status, whichever way
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
    proxy.shutdown().await;
}
