//! Plain HTTP around the proxy: a hyper HTTP/1.1 client on a fresh connection, reading
//! whole bodies, and tiny HTTP/1.1 or h2c servers that answer every request with a
//! function of it (upstreams the demo gRPC backend cannot play).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

use super::bounded;

/// Reads a whole HTTP body.
pub async fn collect(mut body: Incoming) -> Bytes {
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame.unwrap().into_data() {
            out.extend_from_slice(&data);
        }
    }
    Bytes::from(out)
}

/// The whole body of an HTTP response as text.
pub async fn body_text(body: Incoming) -> String {
    String::from_utf8(collect(body).await.to_vec()).unwrap()
}

/// Sends `request` over HTTP/1.1 on `io` (an established connection, plain or TLS) and
/// reads the whole response. Unbounded: the caller bounds it.
pub async fn http1_send<IO>(io: IO, request: Request<String>) -> (http::response::Parts, Bytes)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    (parts, collect(body).await)
}

/// One HTTP/1.1 request to `addr` on a fresh connection, bounded: response head and body.
pub async fn http1_request(
    addr: SocketAddr,
    request: Request<String>,
) -> (http::response::Parts, Bytes) {
    bounded(async {
        let stream = TcpStream::connect(addr).await.unwrap();
        http1_send(stream, request).await
    })
    .await
}

/// One HTTP/1.1 `GET path` to `addr` with extra headers, on a fresh connection.
pub async fn http1_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (http::response::Parts, Bytes) {
    let mut builder = Request::get(path).header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    http1_request(addr, builder.body(String::new()).unwrap()).await
}

/// The handler of a test server: the whole answer to each request.
pub trait Handler:
    Fn(Request<Incoming>) -> Response<String> + Clone + Send + Sync + 'static
{
}
impl<F> Handler for F where
    F: Fn(Request<Incoming>) -> Response<String> + Clone + Send + Sync + 'static
{
}

/// Which protocol a test server speaks.
#[derive(Clone, Copy, Debug)]
enum Protocol {
    Http1,
    H2c,
}

/// An HTTP/1.1 server on `127.0.0.1:0` answering every request with `handler`, until the
/// test's runtime ends.
pub async fn spawn_http1_server(handler: impl Handler) -> SocketAddr {
    spawn_server(Protocol::Http1, handler).await
}

/// An h2c (HTTP/2 prior knowledge) server on `127.0.0.1:0` answering every request with
/// `handler`, until the test's runtime ends.
pub async fn spawn_h2c_server(handler: impl Handler) -> SocketAddr {
    spawn_server(Protocol::H2c, handler).await
}

async fn spawn_server(protocol: Protocol, handler: impl Handler) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = handler(request);
                async move { Ok::<_, Infallible>(response) }
            });
            let io = TokioIo::new(stream);
            match protocol {
                Protocol::Http1 => {
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new().serve_connection(io, service),
                    );
                }
                Protocol::H2c => {
                    tokio::spawn(
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service),
                    );
                }
            }
        }
    });
    addr
}

/// The whole body of an HTTP/2 response read with the `h2` crate, bounded.
pub async fn collect_h2(mut body: h2::RecvStream) -> Bytes {
    bounded(async {
        let mut out = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            out.extend_from_slice(&chunk);
        }
        Bytes::from(out)
    })
    .await
}
