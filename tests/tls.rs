//! End-to-end TLS through the proxy (contract §2 `[listeners.tls]` and
//! `[clusters.tls]`): real rustls clients and TLS backends on 127.0.0.1 around an
//! in-process proxy whose configuration reads PEM files written by the development PKI.
//!
//! - Listener TLS with plaintext backends: tonic over TLS, HTTP/1.1 over TLS (ALPN
//!   `http/1.1` or none) on the same port, TLS 1.2-only and 1.3-only clients, and server
//!   keys of every kind.
//! - Client certificates: `required` refuses a client without one or with one from another
//!   CA at once, serves a valid one and tells the backend who called
//!   (`x-forwarded-client-cert`, a forged one removed) and the access log
//!   (`tls_client_subject`); `optional` serves both, forwarding no identity without one.
//! - Fast failures: a plaintext client on the TLS port, a stalled handshake cut by
//!   `handshake_timeout`, while other clients are served.
//! - Upstream TLS (`protocol = "h2"`): verification against `ca`, mutual TLS, an untrusted
//!   backend refused (UNAVAILABLE naming the TLS error, or a transparent retry on a
//!   trusted one), `insecure_skip_verify`, and a plaintext backend failing fast.
//! - The tutorial's final set-up (mutual TLS on both sides, Auth/Laptop routes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use common::files::{self, TempDir, toml_path};
use common::http::http1_send;
use common::{OneCluster, TestProxy, WAIT, bounded, connect, served_by, start_proxy};
use http::StatusCode;
use hyper_util::rt::TokioIo;
use rpcgate_demo::pb::helloworld::{HelloReply, HelloRequest, greeter_client::GreeterClient};
use rpcgate_demo::pb::pcbook::{
    CreateLaptopRequest, Laptop, LoginRequest, auth_service_client::AuthServiceClient,
    laptop_service_client::LaptopServiceClient,
};
use rpcgate_demo::pki::{CLIENT_COMMON_NAME, DevPki, KeyKind, PkiPaths};
use rpcgate_demo::{BackendHandle, TlsServer, meta, spawn_backend, spawn_backend_tls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How fast a refused connection must fail (contract §3: "closed at once").
const FAST: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------
// A PKI on disk
// ---------------------------------------------------------------------------------------

/// A development PKI for `localhost` and `127.0.0.1`, also written as PEM files (the proxy
/// reads its certificates from files).
struct Pki {
    pki: DevPki,
    paths: PkiPaths,
    /// Keeps the files until the PKI is dropped.
    _dir: TempDir,
}

impl Pki {
    fn new(kind: KeyKind) -> Self {
        let pki = DevPki::generate_with(&["localhost".into(), "127.0.0.1".into()], kind).unwrap();
        let dir = TempDir::new("pki");
        let paths = pki.write_to(&dir.0, false).unwrap();
        Self {
            pki,
            paths,
            _dir: dir,
        }
    }

    fn ecdsa() -> Self {
        Self::new(KeyKind::EcdsaP256)
    }

    /// A TLS backend setting with this PKI's server certificate.
    fn server(&self) -> TlsServer {
        TlsServer::new(
            self.pki.server_cert_pem.clone(),
            self.pki.server_key_pem.clone(),
        )
    }

    /// The same, requiring client certificates of this PKI's CA.
    fn mutual_server(&self) -> TlsServer {
        self.server().client_ca(self.pki.ca_cert_pem.clone())
    }

    /// The default client certificate and key.
    fn client(&self) -> (String, String) {
        (
            self.pki.client_cert_pem.clone(),
            self.pki.client_key_pem.clone(),
        )
    }
}

// ---------------------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------------------

/// `[listeners.tls]` with the PKI's server certificate; `client_auth` = `Some("required"
/// | "optional")` adds the client CA; `extra` are more keys of the table.
fn listener_tls(pki: &Pki, client_auth: Option<&str>, extra: &str) -> String {
    let mut table = format!(
        "[listeners.tls]\ncert = {}\nkey = {}\n",
        toml_path(&pki.paths.server_cert),
        toml_path(&pki.paths.server_key)
    );
    if let Some(auth) = client_auth {
        table.push_str(&format!(
            "client_ca = {}\nclient_auth = \"{auth}\"\n",
            toml_path(&pki.paths.ca_cert)
        ));
    }
    table.push_str(extra);
    table.push('\n');
    table
}

/// The cluster keys for upstream TLS trusting `pki`'s CA with `server_name = "localhost"`,
/// presenting `identity` (cert path, key path) if given; `extra` are more `[clusters.tls]`
/// keys.
fn cluster_tls(pki: &Pki, identity: Option<(&Path, &Path)>, extra: &str) -> String {
    let mut keys = format!(
        "protocol = \"h2\"\n[clusters.tls]\nca = {}\nserver_name = \"localhost\"\n",
        toml_path(&pki.paths.ca_cert)
    );
    if let Some((cert, key)) = identity {
        keys.push_str(&format!(
            "cert = {}\nkey = {}\n",
            toml_path(cert),
            toml_path(key)
        ));
    }
    keys.push_str(extra);
    keys.push('\n');
    keys
}

/// One listener (with `listener_extra`, e.g. its TLS table) routing everything to one
/// cluster of `backends` (with `cluster_extra`); a JSON access log when `access_log`.
fn config(
    listener_extra: &str,
    backends: &[&BackendHandle],
    cluster_extra: &str,
    access_log: Option<&Path>,
) -> String {
    let log = match access_log {
        Some(path) => format!("access_log = {}\nformat = \"json\"", toml_path(path)),
        None => "access_log = \"off\"".to_owned(),
    };
    OneCluster::backends(backends)
        .log(log)
        .listener(listener_extra)
        .cluster(cluster_extra)
        .build()
}

/// A proxy with listener TLS (see [`listener_tls`]) in front of plaintext `backends`.
fn tls_proxy(
    pki: &Pki,
    client_auth: Option<&str>,
    extra: &str,
    backends: &[&BackendHandle],
) -> TestProxy {
    start_proxy(&config(
        &listener_tls(pki, client_auth, extra),
        backends,
        "",
        None,
    ))
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// tonic's TLS settings: trust `pki`'s CA, check the name `localhost`, present `identity`.
fn client_tls(pki: &Pki, identity: Option<&(String, String)>) -> ClientTlsConfig {
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.pki.ca_cert_pem))
        .domain_name("localhost");
    match identity {
        Some((cert, key)) => config.identity(Identity::from_pem(cert, key)),
        None => config,
    }
}

/// Why a call did not succeed: the connection could not be made, or the call's status.
#[derive(Debug)]
enum Failure {
    #[allow(dead_code)] // reason: shown through Debug in assertion messages
    Connect(String),
    Call(tonic::Status),
}

/// Connects over TLS and makes one SayHello with this metadata, all within [`WAIT`].
async fn tls_hello(
    addr: SocketAddr,
    tls: ClientTlsConfig,
    metadata: &[(&'static str, &str)],
) -> Result<tonic::Response<HelloReply>, Failure> {
    let attempt = async {
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .map_err(|e| Failure::Connect(format!("tls config: {e:?}")))?
            .connect_timeout(WAIT)
            .connect()
            .await
            .map_err(|e| Failure::Connect(format!("{e:?}")))?;
        hello_on(channel, metadata).await.map_err(Failure::Call)
    };
    timeout(WAIT, attempt)
        .await
        .expect("a TLS call hung instead of finishing")
}

/// One SayHello on `channel` with this metadata.
async fn hello_on(
    channel: Channel,
    metadata: &[(&'static str, &str)],
) -> Result<tonic::Response<HelloReply>, tonic::Status> {
    let mut request = tonic::Request::new(HelloRequest { name: "Ann".into() });
    for (key, value) in metadata {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    timeout(WAIT, GreeterClient::new(channel).say_hello(request))
        .await
        .expect("call hung")
}

/// A header of a reply as text.
fn header(reply: &tonic::Response<HelloReply>, key: &str) -> Option<String> {
    reply
        .metadata()
        .get(key)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// A rustls client configuration trusting `pki`'s CA, limited to `versions`, offering
/// `alpn`, presenting `identity` if given.
fn rustls_client(
    pki: &Pki,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
    identity: Option<&(String, String)>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.pki.ca_cert_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to `addr` with `config`, checking the name `localhost`.
async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    timeout(WAIT, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake hung"))?
}

/// A tonic connector over a given rustls configuration (to choose the TLS versions),
/// remembering the version each connection negotiated.
#[derive(Clone)]
struct RustlsConnector {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    negotiated: Arc<Mutex<Vec<ProtocolVersion>>>,
}

impl tonic::codegen::Service<http::Uri> for RustlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tls = tls_connect(this.addr, this.config).await?;
            if let Some(version) = tls.get_ref().1.protocol_version() {
                this.negotiated.lock().unwrap().push(version);
            }
            Ok(TokioIo::new(tls))
        })
    }
}

/// `GET /some/page` over HTTP/1.1 on an established TLS connection.
async fn http1_get(tls: TlsStream<TcpStream>) -> (StatusCode, http::Version, String) {
    let request = http::Request::get("/some/page")
        .header("host", "localhost")
        .body(String::new())
        .unwrap();
    let (head, body) = timeout(WAIT, http1_send(tls, request)).await.unwrap();
    (
        head.status,
        head.version,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// Hex SHA-256 of `bytes`, with the hash of rustls' aws-lc-rs provider.
fn sha256_hex(bytes: &[u8]) -> String {
    let rustls::SupportedCipherSuite::Tls13(suite) =
        rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
    else {
        unreachable!("a TLS 1.3 suite");
    };
    let digest = suite.common.hash_provider.hash(bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The `x-forwarded-client-cert` value the proxy must set for this client certificate.
fn expected_xfcc(cert_pem: &str, common_name: &str) -> String {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    format!(
        "Hash={};Subject=\"CN={common_name}\"",
        sha256_hex(der.as_ref())
    )
}

/// Waits until the log file holds `lines` lines (the writer flushes after each batch).
async fn read_lines(path: &Path, lines: usize) -> Vec<serde_json::Value> {
    files::read_lines(path, lines)
        .await
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Reads from `tcp` until the server closes it (EOF or reset), within `bound`; returns
/// how long that took.
async fn closed_within(tcp: &mut TcpStream, bound: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    timeout(bound, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // e.g. a TLS alert before the close
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the connection was not closed within {bound:?}"));
    start.elapsed()
}

/// An ordinary TLS call through `proxy` (plaintext backends behind), must succeed.
async fn tls_ok(proxy: &TestProxy, pki: &Pki, identity: Option<&(String, String)>) -> String {
    let reply = tls_hello(proxy.addr, client_tls(pki, identity), &[])
        .await
        .unwrap();
    served_by(reply.metadata())
}

// ---------------------------------------------------------------------------------------
// Listener TLS
// ---------------------------------------------------------------------------------------

/// TLS at the balancer with plaintext backends (the tutorial's step 2 without client
/// certificates): a tonic TLS client is served and calls spread over the backends.
#[tokio::test]
async fn tls_listener_serves_tonic_clients_in_front_of_plaintext_backends() {
    let pki = Pki::ecdsa();
    let b1 = spawn_backend("b1").await.unwrap();
    let b2 = spawn_backend("b2").await.unwrap();
    let proxy = tls_proxy(&pki, None, "", &[&b1, &b2]);
    let channel = connect(
        Endpoint::from_shared(format!("https://{}", proxy.addr))
            .unwrap()
            .tls_config(client_tls(&pki, None))
            .unwrap(),
    )
    .await;
    let mut served = Vec::new();
    for _ in 0..4 {
        let reply = hello_on(channel.clone(), &[]).await.unwrap();
        let backend = served_by(reply.metadata());
        assert_eq!(reply.get_ref().message, format!("Hello Ann from {backend}"));
        served.push(backend);
    }
    assert!(
        served.contains(&"b1".to_owned()) && served.contains(&"b2".to_owned()),
        "{served:?}"
    );
    assert_eq!(b1.calls() + b2.calls(), 4);
    proxy.shutdown().await;
}

/// ALPN: an HTTP/1.1 client (offering `http/1.1`, or no ALPN at all) is served on the same
/// TLS port as gRPC over h2.
#[tokio::test]
async fn http1_over_tls_shares_the_port_with_h2() {
    let pki = Pki::ecdsa();
    let backend = spawn_backend("b1").await.unwrap();
    let proxy = tls_proxy(&pki, None, "", &[&backend]);
    let versions = &[&rustls::version::TLS13, &rustls::version::TLS12];

    let tls = tls_connect(
        proxy.addr,
        rustls_client(&pki, versions, &[b"http/1.1"], None),
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, version, body) = http1_get(tls).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version, http::Version::HTTP_11);
    assert_eq!(body.trim_end(), "Hello from b1");

    let tls = tls_connect(proxy.addr, rustls_client(&pki, versions, &[], None))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let (status, _, body) = http1_get(tls).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.trim_end(), "Hello from b1");

    // gRPC on the same port: ALPN h2.
    assert_eq!(tls_ok(&proxy, &pki, None).await, "b1");
    assert_eq!(backend.calls(), 3);
    proxy.shutdown().await;
}

/// TLS 1.2 and TLS 1.3 are both accepted, each negotiated as asked.
#[tokio::test]
async fn tls12_only_and_tls13_only_clients_are_served() {
    let pki = Pki::ecdsa();
    let backend = spawn_backend("b1").await.unwrap();
    let proxy = tls_proxy(&pki, None, "", &[&backend]);
    for (version, want) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let connector = RustlsConnector {
            addr: proxy.addr,
            config: rustls_client(&pki, &[version], &[b"h2"], None),
            negotiated: Arc::default(),
        };
        let channel = Endpoint::from_static("http://localhost")
            .connect_timeout(WAIT)
            .connect_with_connector(connector.clone())
            .await
            .unwrap();
        let reply = hello_on(channel, &[]).await.unwrap();
        assert_eq!(reply.get_ref().message, "Hello Ann from b1");
        assert_eq!(*connector.negotiated.lock().unwrap(), vec![want]);
    }
    assert_eq!(backend.calls(), 2);
    proxy.shutdown().await;
}

/// Server certificates with RSA, ECDSA and Ed25519 keys all work (with mutual TLS, so the
/// client keys of each kind are verified too).
#[tokio::test]
async fn server_keys_of_every_kind_work() {
    let backend = spawn_backend("b1").await.unwrap();
    for kind in [KeyKind::Rsa2048, KeyKind::EcdsaP256, KeyKind::Ed25519] {
        let pki = Pki::new(kind);
        let proxy = tls_proxy(&pki, Some("required"), "", &[&backend]);
        assert_eq!(
            tls_ok(&proxy, &pki, Some(&pki.client())).await,
            "b1",
            "{kind:?}"
        );
        proxy.shutdown().await;
    }
    assert_eq!(backend.calls(), 3);
}

// ---------------------------------------------------------------------------------------
// Client certificates
// ---------------------------------------------------------------------------------------

/// Asserts that a TLS call with `identity` fails fast without reaching a backend.
async fn refused_fast(
    proxy: &TestProxy,
    pki: &Pki,
    identity: Option<&(String, String)>,
) -> Failure {
    let start = Instant::now();
    let failure = tls_hello(proxy.addr, client_tls(pki, identity), &[])
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(took < FAST, "refused only after {took:?}: {failure:?}");
    // tonic reports a refused handshake either when connecting or on the first call: with
    // TLS 1.3 the client's side of the handshake completes before the server checks its
    // certificate, so the server's alert ends the connection under the first call, which
    // tonic reports as a transport error (UNAVAILABLE, UNKNOWN "transport error" or
    // CANCELLED "connection closed" depending on the moment) — never a status the proxy
    // sent.
    if let Failure::Call(status) = &failure {
        assert!(
            matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            ),
            "{failure:?}"
        );
        let transport = std::error::Error::source(status)
            .is_some_and(|source| source.downcast_ref::<tonic::transport::Error>().is_some());
        assert!(transport, "not a transport error: {failure:?}");
    }
    failure
}

/// A raw rustls client of one TLS `version` presenting `identity` must be refused fast:
/// TLS 1.2 fails the handshake itself, TLS 1.3 gets the server's alert right after it.
/// Returns the error text.
async fn tls_refusal(
    proxy: &TestProxy,
    pki: &Pki,
    version: &'static SupportedProtocolVersion,
    identity: Option<&(String, String)>,
) -> String {
    let start = Instant::now();
    let config = rustls_client(pki, &[version], &[b"h2"], identity);
    let error = match tls_connect(proxy.addr, config).await {
        Err(error) => error,
        Ok(mut tls) => {
            // The alert comes with the first read; send the h2 preface as a client would.
            let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
            let mut buf = [0u8; 1024];
            loop {
                match timeout(FAST, tls.read(&mut buf)).await {
                    Ok(Err(error)) => break error,
                    Ok(Ok(0)) => panic!("closed without an alert"),
                    Ok(Ok(_)) => {}
                    Err(_) => panic!("not refused within {FAST:?}"),
                }
            }
        }
    };
    let took = start.elapsed();
    assert!(took < FAST, "refused only after {took:?}: {error}");
    error.to_string()
}

/// `client_auth = "required"`: no certificate or one from another CA is refused at once;
/// a valid one is served, the backend learns the subject and hash of the certificate
/// (never a header the client forged), and the access log has the subject.
#[tokio::test]
async fn required_client_certificates() {
    let pki = Pki::ecdsa();
    let dir = TempDir::new("log");
    let log = dir.0.join("access.json");
    let backend = spawn_backend("b1").await.unwrap();
    let proxy = start_proxy(&config(
        &listener_tls(&pki, Some("required"), ""),
        &[&backend],
        "",
        Some(&log),
    ));

    refused_fast(&proxy, &pki, None).await;
    let foreign = pki.pki.foreign_client().unwrap();
    refused_fast(&proxy, &pki, Some(&foreign)).await;
    // What the refusal looks like at the TLS level, for each version.
    let alert = tls_refusal(&proxy, &pki, &rustls::version::TLS12, None).await;
    assert!(alert.contains("alert"), "{alert}");
    let alert = tls_refusal(&proxy, &pki, &rustls::version::TLS13, None).await;
    assert!(alert.contains("CertificateRequired"), "{alert}");
    let alert = tls_refusal(&proxy, &pki, &rustls::version::TLS13, Some(&foreign)).await;
    assert!(alert.contains("alert"), "{alert}");
    assert_eq!(backend.calls(), 0);

    let alice = pki.pki.issue_client("alice").unwrap();
    let forged = "Hash=0000;Subject=\"CN=admin\"";
    let reply = tls_hello(
        proxy.addr,
        client_tls(&pki, Some(&alice)),
        &[
            (meta::ECHO_METADATA, "1"),
            ("x-forwarded-client-cert", forged),
        ],
    )
    .await
    .unwrap();
    assert_eq!(reply.get_ref().message, "Hello Ann from b1");
    let want = expected_xfcc(&alice.0, "alice");
    assert_eq!(
        header(&reply, meta::SEEN_FORWARDED_CLIENT_CERT).as_deref(),
        Some(want.as_str()),
        "the backend must see exactly the proxy's x-forwarded-client-cert"
    );
    let seen = backend.last_request().unwrap();
    let values: Vec<_> = seen
        .headers
        .get_all("x-forwarded-client-cert")
        .iter()
        .collect();
    assert_eq!(values, vec![want.as_str()]);

    // The default client certificate of the PKI too.
    let reply = tls_hello(
        proxy.addr,
        client_tls(&pki, Some(&pki.client())),
        &[(meta::ECHO_METADATA, "1")],
    )
    .await
    .unwrap();
    assert_eq!(
        header(&reply, meta::SEEN_FORWARDED_CLIENT_CERT),
        Some(expected_xfcc(&pki.pki.client_cert_pem, CLIENT_COMMON_NAME))
    );

    let lines = read_lines(&log, 2).await;
    assert_eq!(lines.len(), 2, "refused handshakes log no call: {lines:?}");
    assert_eq!(lines[0]["tls_client_subject"], "CN=alice");
    assert_eq!(
        lines[1]["tls_client_subject"],
        format!("CN={CLIENT_COMMON_NAME}")
    );
    assert_eq!(lines[0]["grpc_status"], 0);
    assert_eq!(backend.calls(), 2);
    proxy.shutdown().await;
}

/// `client_auth = "optional"`: clients with and without a certificate are served; without
/// one no `x-forwarded-client-cert` reaches the backend, not even a forged one. A
/// certificate from another CA is still refused.
#[tokio::test]
async fn optional_client_certificates() {
    let pki = Pki::ecdsa();
    let backend = spawn_backend("b1").await.unwrap();
    let proxy = tls_proxy(&pki, Some("optional"), "", &[&backend]);
    let forged = "Hash=0000;Subject=\"CN=admin\"";
    let echo = [
        (meta::ECHO_METADATA, "1"),
        ("x-forwarded-client-cert", forged),
    ];

    let anonymous = tls_hello(proxy.addr, client_tls(&pki, None), &echo)
        .await
        .unwrap();
    assert_eq!(anonymous.get_ref().message, "Hello Ann from b1");
    assert_eq!(header(&anonymous, meta::SEEN_FORWARDED_CLIENT_CERT), None);
    let seen = backend.last_request().unwrap();
    assert!(
        seen.headers.get("x-forwarded-client-cert").is_none(),
        "{:?}",
        seen.headers
    );

    let bob = pki.pki.issue_client("bob").unwrap();
    let verified = tls_hello(proxy.addr, client_tls(&pki, Some(&bob)), &echo)
        .await
        .unwrap();
    assert_eq!(verified.get_ref().message, "Hello Ann from b1");
    assert_eq!(
        header(&verified, meta::SEEN_FORWARDED_CLIENT_CERT),
        Some(expected_xfcc(&bob.0, "bob"))
    );

    let foreign = pki.pki.foreign_client().unwrap();
    refused_fast(&proxy, &pki, Some(&foreign)).await;
    assert_eq!(backend.calls(), 2);
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Fast failures
// ---------------------------------------------------------------------------------------

/// A plaintext gRPC client on the TLS port fails at once, and a TLS client right after is
/// served; the failed handshakes are counted in the metrics.
#[tokio::test]
async fn plaintext_client_on_a_tls_port_fails_fast() {
    let pki = Pki::ecdsa();
    let backend = spawn_backend("b1").await.unwrap();
    let proxy = start_proxy(
        &OneCluster::backends(&[&backend])
            .listener(listener_tls(&pki, None, ""))
            .admin()
            .build(),
    );

    let start = Instant::now();
    let attempt = async {
        let channel = Endpoint::from_shared(proxy.url())
            .unwrap()
            .connect_timeout(WAIT)
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        hello_on(channel, &[])
            .await
            .map_err(|status| format!("call: {status:?}"))
    };
    let failure = timeout(WAIT, attempt).await.unwrap().unwrap_err();
    let took = start.elapsed();
    assert!(
        took < FAST,
        "plaintext client failed only after {took:?}: {failure}"
    );

    // Raw bytes too: the HTTP/2 preface gets the connection closed.
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    closed_within(&mut tcp, FAST).await;

    assert_eq!(tls_ok(&proxy, &pki, None).await, "b1");
    assert_eq!(backend.calls(), 1);
    let failed = proxy
        .metric(
            "rpcgate_tls_handshake_failures_total",
            &[("listener", "edge")],
        )
        .await
        .unwrap();
    // tonic may try more than one connection before giving up; the raw one adds one.
    assert!(failed >= 2.0, "{failed}");
    proxy.shutdown().await;
}

/// The first bytes of a real ClientHello (from rustls) for `localhost`.
fn client_hello(pki: &Pki) -> Vec<u8> {
    let config = rustls_client(
        pki,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
        &[b"h2"],
        None,
    );
    let mut conn =
        rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// `handshake_timeout = "300ms"`: a client that connects and sends nothing, or half a
/// ClientHello, is closed after the deadline (not before, not much later), while another
/// client is served meanwhile.
#[tokio::test]
async fn a_stalled_handshake_is_cut_by_the_deadline() {
    let pki = Pki::ecdsa();
    let backend = spawn_backend("b1").await.unwrap();
    let proxy = tls_proxy(&pki, None, "handshake_timeout = \"300ms\"", &[&backend]);

    let connected = Instant::now();
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let mut half = TcpStream::connect(proxy.addr).await.unwrap();
    let hello = client_hello(&pki);
    assert!(hello.len() > 20, "{}", hello.len());
    half.write_all(&hello[..hello.len() / 2]).await.unwrap();

    // Served while the two stall.
    assert_eq!(tls_ok(&proxy, &pki, None).await, "b1");

    let bound = Duration::from_secs(3);
    closed_within(&mut silent, bound).await;
    closed_within(&mut half, bound).await;
    let took = connected.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "closed before the deadline: {took:?}"
    );
    assert!(took < bound, "{took:?}");
    assert_eq!(backend.calls(), 1);
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Upstream TLS
// ---------------------------------------------------------------------------------------

/// A plaintext proxy (h2c listener) whose one cluster has these backends and keys.
fn upstream_proxy(backends: &[&BackendHandle], cluster_extra: &str) -> TestProxy {
    start_proxy(&config("", backends, cluster_extra, None))
}

/// A call through a plaintext listener that must fail: its status, checked to come fast.
async fn upstream_failure(proxy: &TestProxy) -> tonic::Status {
    let start = Instant::now();
    let status = hello_on(proxy.channel().await, &[]).await.unwrap_err();
    let took = start.elapsed();
    assert!(took < FAST, "failed only after {took:?}: {status:?}");
    status
}

/// `protocol = "h2"` with `ca` and `server_name`: calls reach TLS backends and spread, and
/// the backends see no client certificate was needed.
#[tokio::test]
async fn upstream_tls_verifies_backends_against_the_ca() {
    let pki = Pki::ecdsa();
    let b1 = spawn_backend_tls("b1", pki.server()).await.unwrap();
    let b2 = spawn_backend_tls("b2", pki.server()).await.unwrap();
    let proxy = upstream_proxy(&[&b1, &b2], &cluster_tls(&pki, None, ""));
    let channel = proxy.channel().await;
    for _ in 0..6 {
        let reply = hello_on(channel.clone(), &[]).await.unwrap();
        let backend = served_by(reply.metadata());
        assert_eq!(reply.get_ref().message, format!("Hello Ann from {backend}"));
    }
    assert!(
        b1.calls() > 0 && b2.calls() > 0,
        "b1={} b2={}",
        b1.calls(),
        b2.calls()
    );
    assert_eq!(b1.calls() + b2.calls(), 6);
    proxy.shutdown().await;
}

/// Active health checks go over TLS with the cluster's settings (here mutual TLS): a
/// backend that reports NOT_SERVING is taken out, the other serves every call.
#[tokio::test]
async fn active_health_checks_use_the_cluster_tls() {
    let pki = Pki::ecdsa();
    let b1 = spawn_backend_tls("b1", pki.mutual_server()).await.unwrap();
    let b2 = spawn_backend_tls("b2", pki.mutual_server()).await.unwrap();
    b1.set_serving(false).await;
    let identity = Some((
        pki.paths.client_cert.as_path(),
        pki.paths.client_key.as_path(),
    ));
    let probes = "active_health = { interval = \"100ms\", timeout = \"100ms\", unhealthy_threshold = 2 }\npassive_health = { max_fails = 0 }\n";
    let proxy = upstream_proxy(
        &[&b1, &b2],
        &format!("{probes}{}", cluster_tls(&pki, identity, "")),
    );
    // Three probes have reached b1 over mutual TLS: the first two failed (NOT_SERVING).
    bounded(b1.wait_until(|b| b.calls() >= 3)).await;
    bounded(b2.wait_until(|b| b.calls() >= 1)).await;
    let channel = proxy.channel().await;
    for _ in 0..6 {
        let reply = hello_on(channel.clone(), &[]).await.unwrap();
        assert_eq!(served_by(reply.metadata()), "b2");
    }
    proxy.shutdown().await;
}

/// Backends that require client certificates: the cluster's `cert`/`key` get the calls
/// through; without them the call gets UNAVAILABLE naming TLS, quickly.
#[tokio::test]
async fn upstream_mutual_tls() {
    let pki = Pki::ecdsa();
    let b1 = spawn_backend_tls("b1", pki.mutual_server()).await.unwrap();
    let b2 = spawn_backend_tls("b2", pki.mutual_server()).await.unwrap();
    let identity = Some((
        pki.paths.client_cert.as_path(),
        pki.paths.client_key.as_path(),
    ));
    let proxy = upstream_proxy(&[&b1, &b2], &cluster_tls(&pki, identity, ""));
    let channel = proxy.channel().await;
    for _ in 0..4 {
        hello_on(channel.clone(), &[]).await.unwrap();
    }
    assert!(
        b1.calls() > 0 && b2.calls() > 0,
        "b1={} b2={}",
        b1.calls(),
        b2.calls()
    );
    proxy.shutdown().await;

    let proxy = upstream_proxy(&[&b1], &cluster_tls(&pki, None, ""));
    let status = upstream_failure(&proxy).await;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // Backend addresses stay out of client messages (log.client_error_detail = "reason").
    assert!(
        !status.message().contains(&b1.addr().to_string()),
        "{status:?}"
    );
    assert_eq!(b1.calls() + b2.calls(), 4);
    proxy.shutdown().await;
}

/// Issue 3 point 4: a backend refusing the proxy for want of a client certificate gives
/// UNAVAILABLE *with a message naming the TLS error*. With TLS 1.3 the backend's
/// `CertificateRequired` alert arrives after the proxy's side of the handshake has
/// completed, during the HTTP/2 handshake; the proxy reports it as a TLS failure.
#[tokio::test]
async fn upstream_mutual_tls_refusal_names_tls() {
    let pki = Pki::ecdsa();
    let backend = spawn_backend_tls("b1", pki.mutual_server()).await.unwrap();
    let proxy = upstream_proxy(&[&backend], &cluster_tls(&pki, None, ""));
    let status = upstream_failure(&proxy).await;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("TLS"), "{status:?}");
    assert!(status.message().contains("certificate"), "{status:?}");
    assert_eq!(backend.calls(), 0);
    proxy.shutdown().await;
}

/// A backend whose certificate comes from another PKI is refused: alone, the call gets
/// UNAVAILABLE with the TLS error; next to a trusted backend, every call succeeds there
/// (a connect failure is retried transparently and ejects the endpoint).
/// `insecure_skip_verify = true` accepts it.
#[tokio::test]
async fn untrusted_backends_are_refused_unless_verification_is_skipped() {
    let pki = Pki::ecdsa();
    let other = Pki::ecdsa();
    let good = spawn_backend_tls("good", pki.server()).await.unwrap();
    let bad = spawn_backend_tls("bad", other.server()).await.unwrap();

    let proxy = upstream_proxy(&[&bad], &cluster_tls(&pki, None, ""));
    let status = upstream_failure(&proxy).await;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let message = status.message();
    assert!(
        message.contains("TLS handshake") && message.contains("certificate"),
        "{status:?}"
    );
    assert!(!message.contains(&bad.addr().to_string()), "{status:?}");
    proxy.shutdown().await;

    let proxy = upstream_proxy(&[&bad, &good], &cluster_tls(&pki, None, ""));
    let channel = proxy.channel().await;
    for i in 0..6 {
        let reply = hello_on(channel.clone(), &[])
            .await
            .unwrap_or_else(|status| panic!("call {i}: {status:?}"));
        assert_eq!(served_by(reply.metadata()), "good");
    }
    assert_eq!(good.calls(), 6);
    proxy.shutdown().await;

    let proxy = upstream_proxy(
        &[&bad],
        &cluster_tls(&pki, None, "insecure_skip_verify = true"),
    );
    let reply = hello_on(proxy.channel().await, &[]).await.unwrap();
    assert_eq!(served_by(reply.metadata()), "bad");
    assert_eq!(bad.calls(), 1);
    proxy.shutdown().await;
}

/// `protocol = "h2"` towards a plaintext backend fails fast with UNAVAILABLE (no hang).
#[tokio::test]
async fn upstream_tls_to_a_plaintext_backend_fails_fast() {
    let pki = Pki::ecdsa();
    let plain = spawn_backend("plain").await.unwrap();
    let proxy = upstream_proxy(&[&plain], &cluster_tls(&pki, None, ""));
    let status = upstream_failure(&proxy).await;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("TLS"), "{status:?}");
    assert_eq!(plain.calls(), 0);
    proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// The tutorial's final set-up
// ---------------------------------------------------------------------------------------

/// docs/tls.md step 4: mutual TLS from the client to rpcgate and from rpcgate to the Auth
/// and Laptop backends, routed by service; the pcbook clients log in and create a laptop;
/// a client without a certificate is refused.
#[tokio::test]
async fn tutorial_mutual_tls_on_both_sides() {
    let pki = Pki::ecdsa();
    let auth = spawn_backend_tls("auth-1", pki.mutual_server())
        .await
        .unwrap();
    let laptop = spawn_backend_tls("laptop-1", pki.mutual_server())
        .await
        .unwrap();
    let upstream = |backend: &BackendHandle| {
        format!(
            r#"[[clusters]]
name = "{}"
endpoints = ["{}"]
protocol = "h2"
[clusters.tls]
ca = {}
cert = {}
key = {}
server_name = "localhost"
"#,
            backend.name().split('-').next().unwrap(),
            backend.addr(),
            toml_path(&pki.paths.ca_cert),
            toml_path(&pki.paths.client_cert),
            toml_path(&pki.paths.client_key),
        )
    };
    let text = format!(
        r#"[log]
access_log = "off"
[[listeners]]
name = "edge"
address = "127.0.0.1:0"
{}
[[listeners.routes]]
match.service = "techschool_pcbook.AuthService"
cluster = "auth"
[[listeners.routes]]
match.service = "techschool_pcbook.LaptopService"
cluster = "laptop"
{}
{}
"#,
        listener_tls(&pki, Some("required"), ""),
        upstream(&auth),
        upstream(&laptop)
    );
    let proxy = start_proxy(&text);

    let channel = connect(
        Endpoint::from_shared(format!("https://{}", proxy.addr))
            .unwrap()
            .tls_config(client_tls(&pki, Some(&pki.client())))
            .unwrap(),
    )
    .await;
    let token = timeout(
        WAIT,
        AuthServiceClient::new(channel.clone()).login(LoginRequest {
            username: "admin1".into(),
            password: "secret".into(),
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(served_by(token.metadata()), "auth-1");
    let token = token.into_inner().access_token;
    assert!(token.starts_with("auth-1.admin1."), "{token}");

    let mut create = tonic::Request::new(CreateLaptopRequest {
        laptop: Some(Laptop {
            brand: "Lenovo".into(),
            name: "Thinkpad X1 Carbon".into(),
            cpu_cores: 8,
            ..Laptop::default()
        }),
    });
    create
        .metadata_mut()
        .insert("authorization", token.parse().unwrap());
    let created = timeout(
        WAIT,
        LaptopServiceClient::new(channel).create_laptop(create),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(served_by(created.metadata()), "laptop-1");
    assert_eq!(created.into_inner().id, "laptop-1-1");

    // The backends learned who called.
    let seen = laptop.last_request().unwrap();
    assert_eq!(
        seen.headers
            .get("x-forwarded-client-cert")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some(expected_xfcc(&pki.pki.client_cert_pem, CLIENT_COMMON_NAME))
    );

    refused_fast(&proxy, &pki, None).await;
    assert_eq!((auth.calls(), laptop.calls()), (1, 1));
    proxy.shutdown().await;
}

/// A renewed certificate is served to new connections after a reload, without a restart,
/// and the old one no longer is.
#[tokio::test]
async fn a_renewed_certificate_is_served_after_a_reload() {
    let old = Pki::ecdsa();
    let renewed = Pki::ecdsa();
    let backend = spawn_backend("b1").await.unwrap();
    let config = config(&listener_tls(&old, None, ""), &[&backend], "", None);
    let proxy = start_proxy(&config);
    assert_eq!(tls_ok(&proxy, &old, None).await, "b1");

    // The operator replaces the files in place (as certbot or cert-manager do).
    std::fs::copy(&renewed.paths.server_cert, &old.paths.server_cert).unwrap();
    std::fs::copy(&renewed.paths.server_key, &old.paths.server_key).unwrap();
    // Re-reading the same text reads the files again.
    assert_eq!(proxy.swap(&config), 2);
    assert_eq!(tls_ok(&proxy, &renewed, None).await, "b1");
    let still_old = timeout(WAIT, tls_hello(proxy.addr, client_tls(&old, None), &[]))
        .await
        .unwrap();
    assert!(still_old.is_err(), "the old certificate is still served");
    proxy.shutdown().await;
}
