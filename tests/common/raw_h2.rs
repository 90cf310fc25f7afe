//! A raw HTTP/2 client (the `h2` crate, no gRPC library in between): it shows what the
//! proxy announced and sent (SETTINGS, trailers-only responses, resets, GOAWAY and close)
//! and lets a test send what tonic would not (resets, odd headers).

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use prost::Message;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::hello;

/// The path of the Greeter's unary call.
pub const SAY_HELLO: &str = "/helloworld.Greeter/SayHello";

/// A raw HTTP/2 client connection: the request sender and the task driving it (which
/// ends when the server closes the connection).
pub struct RawConn {
    pub send: h2::client::SendRequest<Bytes>,
    pub driver: JoinHandle<Result<(), h2::Error>>,
}

/// Opens a raw HTTP/2 (prior knowledge) connection to `addr`.
pub async fn raw_connect(addr: SocketAddr) -> RawConn {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    RawConn {
        send,
        driver: tokio::spawn(connection),
    }
}

/// A raw HTTP/2 connection to `to` from the local address `from` (any port).
pub async fn connect_from(from: &str, to: SocketAddr) -> RawConn {
    let from: std::net::IpAddr = from.parse().unwrap();
    let socket = if from.is_ipv4() {
        tokio::net::TcpSocket::new_v4().unwrap()
    } else {
        tokio::net::TcpSocket::new_v6().unwrap()
    };
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let tcp = socket.connect(to).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    RawConn {
        send,
        driver: tokio::spawn(connection),
    }
}

/// A gRPC request head for `path` on `addr` with extra headers.
pub fn grpc_request(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> http::Request<()> {
    let mut builder = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap()
}

/// A SayHello request head with extra metadata.
pub fn grpc_head(addr: SocketAddr, metadata: &[(&str, &str)]) -> http::Request<()> {
    grpc_request(addr, SAY_HELLO, metadata)
}

/// A gRPC frame (uncompressed) carrying `message`.
pub fn grpc_frame(message: &impl Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + body.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(body.len()).unwrap());
    frame.put_slice(&body);
    frame.freeze()
}

/// A length-prefixed gRPC message holding a HelloRequest for `Ann`.
pub fn hello_message() -> Bytes {
    grpc_frame(&hello("Ann"))
}

/// The `grpc-status` among these headers, if any.
pub fn grpc_status_of(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// What a raw call got back.
#[derive(Debug)]
pub struct RawReply {
    pub status: StatusCode,
    pub grpc_status: Option<u32>,
    pub headers: HeaderMap,
}

/// One unary call over a raw connection, reading the whole response.
pub async fn raw_unary(
    send: &h2::client::SendRequest<Bytes>,
    head: http::Request<()>,
) -> Result<RawReply, h2::Error> {
    let mut send = send.clone().ready().await?;
    let (response, mut stream) = send.send_request(head, false)?;
    stream.send_data(hello_message(), true)?;
    let (parts, mut body) = response.await?.into_parts();
    let mut grpc_status = grpc_status_of(&parts.headers);
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    if let Some(trailers) = body.trailers().await? {
        grpc_status = grpc_status_of(&trailers).or(grpc_status);
    }
    Ok(RawReply {
        status: parts.status,
        grpc_status,
        headers: parts.headers,
    })
}
