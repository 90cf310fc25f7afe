//! End-to-end routing through the real proxy (contract §2 `[[listeners.routes]]`): every
//! `match.*` key, first match in file order, no match (gRPC UNIMPLEMENTED / HTTP 404),
//! the pcbook tutorial layout, and REST (HTTP/1.1) beside gRPC on one port.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use common::http::spawn_http1_server;
use common::{bounded, connect, hello};
use http::{Response, StatusCode};
use rpcgate_demo::BackendHandle;
use rpcgate_demo::pb::helloworld::{HelloStreamRequest, greeter_client::GreeterClient};
use rpcgate_demo::pb::pcbook::{
    CreateLaptopRequest, Laptop, LoginRequest, auth_service_client::AuthServiceClient,
    laptop_service_client::LaptopServiceClient,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request as GrpcRequest};

/// A full config: one listener with `routes` (TOML `[[listeners.routes]]` blocks), then
/// `clusters` (TOML `[[clusters]]` blocks).
fn config(routes: &str, clusters: &str) -> String {
    format!(
        r#"[server]
workers = 2
[log]
access_log = "off"
[[listeners]]
name = "edge"
address = "127.0.0.1:0"
{routes}
{clusters}
"#
    )
}

/// A `[[clusters]]` block named `name` over `backends`, with extra TOML lines.
fn cluster(name: &str, backends: &[&BackendHandle], extra: &str) -> String {
    format!(
        "[[clusters]]\nname = \"{name}\"\nendpoints = [{}]\n{extra}\n",
        common::endpoints(backends)
    )
}

/// The backend that served a unary `SayHello` through `channel`, or the status.
async fn say_hello(channel: &Channel) -> Result<String, tonic::Status> {
    let reply = bounded(GreeterClient::new(channel.clone()).say_hello(hello("Ann"))).await?;
    Ok(common::served_by(reply.metadata()))
}

/// The backend that served a server-streaming call through `channel`.
async fn say_hello_stream(channel: &Channel) -> Result<String, tonic::Status> {
    let request = HelloStreamRequest {
        name: "Ann".into(),
        count: 1,
        interval_ms: 0,
    };
    let reply = bounded(GreeterClient::new(channel.clone()).say_hello_stream(request)).await?;
    let served = common::served_by(reply.metadata());
    let mut stream = reply.into_inner();
    while bounded(stream.message()).await?.is_some() {}
    Ok(served)
}

/// The backend that served a `Login` through `channel`.
async fn login(channel: &Channel) -> Result<String, tonic::Status> {
    let request = LoginRequest {
        username: "admin".into(),
        password: "secret".into(),
    };
    let reply = bounded(AuthServiceClient::new(channel.clone()).login(request)).await?;
    Ok(common::served_by(reply.metadata()))
}

/// The backend that served a `CreateLaptop` through `channel`.
async fn create_laptop(channel: &Channel) -> Result<String, tonic::Status> {
    let request = CreateLaptopRequest {
        laptop: Some(Laptop {
            brand: "Apple".into(),
            ..Default::default()
        }),
    };
    let reply = bounded(LaptopServiceClient::new(channel.clone()).create_laptop(request)).await?;
    Ok(common::served_by(reply.metadata()))
}

/// One plain HTTP/1.1 `GET path` to `addr` on a fresh connection: status and body.
async fn http1_get(addr: SocketAddr, path: &str) -> (StatusCode, Bytes) {
    let (head, body) = common::http::http1_get(addr, path, &[]).await;
    (head.status, body)
}

/// A tiny REST server (HTTP/1.1 only): `GET /healthcheck` answers `200 <name>`,
/// anything else 404. Runs until the test's runtime ends.
async fn spawn_rest_server(name: &'static str) -> SocketAddr {
    spawn_http1_server(move |request| {
        let (status, body) = if request.uri().path() == "/healthcheck" {
            (StatusCode::OK, name.to_string())
        } else {
            (StatusCode::NOT_FOUND, "not here".to_string())
        };
        Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(body)
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn service_method_path_and_prefix_each_pick_their_cluster() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let b3 = rpcgate_demo::spawn_backend("b3").await.unwrap();
    let b4 = rpcgate_demo::spawn_backend("b4").await.unwrap();
    let routes = r#"
[[listeners.routes]]
match.method = "helloworld.Greeter/SayHelloStream"
cluster = "c2"
[[listeners.routes]]
match.service = "helloworld.Greeter"
cluster = "c1"
[[listeners.routes]]
match.path = "/techschool_pcbook.AuthService/Login"
cluster = "c3"
[[listeners.routes]]
match.path_prefix = "/techschool_pcbook."
cluster = "c4"
"#;
    let clusters = [
        cluster("c1", &[&b1], ""),
        cluster("c2", &[&b2], ""),
        cluster("c3", &[&b3], ""),
        cluster("c4", &[&b4], ""),
    ]
    .concat();
    let proxy = common::start_proxy(&config(routes, &clusters));
    let channel = proxy.channel().await;

    assert_eq!(say_hello(&channel).await.unwrap(), "b1");
    assert_eq!(say_hello_stream(&channel).await.unwrap(), "b2");
    assert_eq!(login(&channel).await.unwrap(), "b3");
    assert_eq!(create_laptop(&channel).await.unwrap(), "b4");
    // Each backend saw exactly the call routed to it, on the path it was sent with.
    for (backend, path) in [
        (&b1, "/helloworld.Greeter/SayHello"),
        (&b2, "/helloworld.Greeter/SayHelloStream"),
        (&b3, "/techschool_pcbook.AuthService/Login"),
        (&b4, "/techschool_pcbook.LaptopService/CreateLaptop"),
    ] {
        assert_eq!(backend.calls(), 1, "{}", backend.name());
        assert_eq!(backend.last_request().unwrap().path, path);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn first_match_in_file_order_wins() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let clusters = [cluster("c1", &[&b1], ""), cluster("c2", &[&b2], "")].concat();

    // The broad route first: it takes SayHello although the exact one below matches too.
    let broad_first = r#"
[[listeners.routes]]
match.service = "helloworld.Greeter"
cluster = "c1"
[[listeners.routes]]
match.method = "helloworld.Greeter/SayHello"
cluster = "c2"
"#;
    let proxy = common::start_proxy(&config(broad_first, &clusters));
    let channel = proxy.channel().await;
    assert_eq!(say_hello(&channel).await.unwrap(), "b1");
    assert_eq!(say_hello_stream(&channel).await.unwrap(), "b1");
    proxy.shutdown().await;

    // The same two routes the other way round: the exact one now wins for SayHello only.
    let exact_first = r#"
[[listeners.routes]]
match.method = "helloworld.Greeter/SayHello"
cluster = "c2"
[[listeners.routes]]
match.service = "helloworld.Greeter"
cluster = "c1"
"#;
    let proxy = common::start_proxy(&config(exact_first, &clusters));
    let channel = proxy.channel().await;
    assert_eq!(say_hello(&channel).await.unwrap(), "b2");
    assert_eq!(say_hello_stream(&channel).await.unwrap(), "b1");
    proxy.shutdown().await;
}

#[tokio::test]
async fn authority_selects_the_route() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let routes = r#"
[[listeners.routes]]
match.authority = "api.example.com"
cluster = "api"
[[listeners.routes]]
match.authority = "Admin.Example.com"
cluster = "admin"
"#;
    let clusters = [cluster("api", &[&b1], ""), cluster("admin", &[&b2], "")].concat();
    let proxy = common::start_proxy(&config(routes, &clusters));

    let with_origin = |origin: &'static str| {
        let url = proxy.url();
        async move {
            connect(
                Endpoint::from_shared(url)
                    .unwrap()
                    .origin(origin.parse().unwrap()),
            )
            .await
        }
    };
    let api = with_origin("http://api.example.com").await;
    let admin = with_origin("http://admin.example.com").await;
    let other = with_origin("http://other.example.com").await;

    assert_eq!(say_hello(&api).await.unwrap(), "b1");
    // Matched ASCII case-insensitively.
    assert_eq!(say_hello(&admin).await.unwrap(), "b2");
    let status = say_hello(&other).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    // The backend saw the client's authority (no cluster override).
    assert_eq!(
        b1.last_request().unwrap().authority.as_deref(),
        Some("api.example.com")
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn header_match_sends_canary_calls_elsewhere() {
    let stable = rpcgate_demo::spawn_backend("stable").await.unwrap();
    let canary = rpcgate_demo::spawn_backend("canary").await.unwrap();
    let routes = r#"
[[listeners.routes]]
match.headers = { "x-canary" = "1" }
cluster = "canary"
[[listeners.routes]]
match.path_prefix = "/"
cluster = "stable"
"#;
    let clusters = [
        cluster("stable", &[&stable], ""),
        cluster("canary", &[&canary], ""),
    ]
    .concat();
    let proxy = common::start_proxy(&config(routes, &clusters));
    let mut client = GreeterClient::new(proxy.channel().await);

    let plain = bounded(client.say_hello(hello("a"))).await.unwrap();
    assert_eq!(common::served_by(plain.metadata()), "stable");

    let mut flagged = GrpcRequest::new(hello("b"));
    flagged
        .metadata_mut()
        .insert("x-canary", "1".parse().unwrap());
    let reply = bounded(client.say_hello(flagged)).await.unwrap();
    assert_eq!(common::served_by(reply.metadata()), "canary");

    // Another value of the header is not a match.
    let mut other = GrpcRequest::new(hello("c"));
    other
        .metadata_mut()
        .insert("x-canary", "2".parse().unwrap());
    let reply = bounded(client.say_hello(other)).await.unwrap();
    assert_eq!(common::served_by(reply.metadata()), "stable");

    assert_eq!((stable.calls(), canary.calls()), (2, 1));
    proxy.shutdown().await;
}

#[tokio::test]
async fn no_route_is_unimplemented_for_grpc_and_404_for_http() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let routes = r#"
[[listeners.routes]]
match.service = "techschool_pcbook.AuthService"
cluster = "auth"
"#;
    let proxy = common::start_proxy(&config(routes, &cluster("auth", &[&b1], "")));
    let channel = proxy.channel().await;

    let status = say_hello(&channel).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(
        status.message().contains("/helloworld.Greeter/SayHello"),
        "the message names the path: {:?}",
        status.message()
    );
    // The routed service itself passes.
    assert_eq!(login(&channel).await.unwrap(), "b1");

    let (http_status, _) = http1_get(proxy.addr, "/nothing").await;
    assert_eq!(http_status, StatusCode::NOT_FOUND);
    assert_eq!(b1.calls(), 1, "only the routed call reached the backend");
    proxy.shutdown().await;
}

#[tokio::test]
async fn pcbook_layout_sends_auth_and_laptop_to_their_own_backends() {
    let auth_backend = rpcgate_demo::spawn_backend("auth-1").await.unwrap();
    let laptop_backend = rpcgate_demo::spawn_backend("laptop-1").await.unwrap();
    // The tutorial's NGINX config, as rpcgate routes.
    let routes = r#"
[[listeners.routes]]
match.service = "techschool_pcbook.AuthService"
cluster = "auth"
[[listeners.routes]]
match.service = "techschool_pcbook.LaptopService"
cluster = "laptop"
"#;
    let clusters = [
        cluster("auth", &[&auth_backend], ""),
        cluster("laptop", &[&laptop_backend], ""),
    ]
    .concat();
    let proxy = common::start_proxy(&config(routes, &clusters));
    let channel = proxy.channel().await;

    let token = bounded(AuthServiceClient::new(channel.clone()).login(LoginRequest {
        username: "admin1".into(),
        password: "secret".into(),
    }))
    .await
    .unwrap();
    assert_eq!(token.get_ref().access_token, "auth-1.admin1.1");

    let created = bounded(LaptopServiceClient::new(channel.clone()).create_laptop(
        CreateLaptopRequest {
            laptop: Some(Laptop {
                brand: "Lenovo".into(),
                name: "Thinkpad X1".into(),
                ..Default::default()
            }),
        },
    ))
    .await
    .unwrap();
    assert_eq!(created.get_ref().id, "laptop-1-1");

    // A wrong password is the backend's answer (UNAUTHENTICATED), passed through.
    let denied = bounded(AuthServiceClient::new(channel.clone()).login(LoginRequest {
        username: "admin1".into(),
        password: "wrong".into(),
    }))
    .await
    .unwrap_err();
    assert_eq!(denied.code(), Code::Unauthenticated);

    assert_eq!((auth_backend.calls(), laptop_backend.calls()), (2, 1));
    // The Greeter has no route in this layout.
    assert_eq!(
        say_hello(&channel).await.unwrap_err().code(),
        Code::Unimplemented
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn rest_and_grpc_share_one_port() {
    let grpc_backend = rpcgate_demo::spawn_backend("grpc-1").await.unwrap();
    let rest = spawn_rest_server("rest-1").await;
    let routes = r#"
[[listeners.routes]]
match.grpc = false
cluster = "rest"
[[listeners.routes]]
match.grpc = true
cluster = "grpc"
"#;
    let clusters = format!(
        "[[clusters]]\nname = \"rest\"\nendpoints = [\"{rest}\"]\nprotocol = \"http1\"\n{}",
        cluster("grpc", &[&grpc_backend], "")
    );
    let proxy = common::start_proxy(&config(routes, &clusters));

    // HTTP/1.1 client → the REST server, through the proxy's one port.
    let (status, body) = http1_get(proxy.addr, "/healthcheck").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"rest-1");
    // The REST server's own 404 is passed through.
    let (status, _) = http1_get(proxy.addr, "/missing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // gRPC client on the same port → the h2c cluster, although its path would also
    // have matched nothing else.
    let channel = proxy.channel().await;
    assert_eq!(say_hello(&channel).await.unwrap(), "grpc-1");
    assert_eq!(
        grpc_backend.calls(),
        1,
        "plain HTTP never reached the gRPC backend"
    );

    // And REST still works after gRPC on another connection.
    let (status, body) = http1_get(proxy.addr, "/healthcheck").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"rest-1"[..]));
    proxy.shutdown().await;
}

#[tokio::test]
async fn grpc_true_route_does_not_take_plain_http() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let routes = r#"
[[listeners.routes]]
match.grpc = true
match.path_prefix = "/"
cluster = "grpc"
"#;
    let proxy = common::start_proxy(&config(routes, &cluster("grpc", &[&b1], "")));
    let (status, _) = http1_get(proxy.addr, "/helloworld.Greeter/SayHello").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(say_hello(&proxy.channel().await).await.unwrap(), "b1");
    assert_eq!(b1.calls(), 1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn cluster_authority_overrides_the_clients_towards_the_backend() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let routes = r#"
[[listeners.routes]]
match.authority = "api.example.com"
cluster = "main"
"#;
    let clusters = cluster("main", &[&b1], "authority = \"backend.internal:50051\"");
    let proxy = common::start_proxy(&config(routes, &clusters));
    let channel = connect(
        Endpoint::from_shared(proxy.url())
            .unwrap()
            .origin("http://api.example.com".parse().unwrap()),
    )
    .await;
    // Routing used the client's authority; the backend got the cluster's.
    assert_eq!(say_hello(&channel).await.unwrap(), "b1");
    assert_eq!(
        b1.last_request().unwrap().authority.as_deref(),
        Some("backend.internal:50051")
    );
    proxy.shutdown().await;
}

/// An HTTP/1.0 backend (Python's `http.server`, say) answers in HTTP/1.0; HTTP/1.1
/// clients still get HTTP/1.1 from the proxy and keep their connection for the next
/// request.
#[tokio::test]
async fn an_http10_backend_does_not_make_clients_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp
                    .write_all(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let config = common::OneCluster::new(format!("\"{backend}\""))
        .cluster("protocol = \"http1\"")
        .build();
    let proxy = common::start_proxy(&config);
    bounded(async {
        let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        for _ in 0..2 {
            let request = http::Request::get("/x")
                .header("host", "x")
                .body(String::new())
                .unwrap();
            sender.ready().await.unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.version(), http::Version::HTTP_11);
            assert!(!response.headers().contains_key("connection"));
            let body = common::http::collect(response.into_body()).await;
            assert_eq!(body, "ok");
        }
    })
    .await;
    proxy.shutdown().await;
}
