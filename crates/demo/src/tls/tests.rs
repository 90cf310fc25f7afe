//! TLS backends called by tonic clients over rustls: plain TLS, mutual TLS (no
//! certificate, the right CA, another CA), every key kind, a plaintext client, and
//! handshakes that stall.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::pb::helloworld::{HelloRequest, greeter_client::GreeterClient};
use crate::pki::{DevPki, KeyKind};
use crate::{
    BackendHandle, BackendOptions, HANDSHAKE_TIMEOUT, TlsServer, spawn_backend_on,
    spawn_backend_tls,
};

/// Bounds every wait so a broken test fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(10);

fn hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

fn server(pki: &DevPki) -> TlsServer {
    TlsServer::new(pki.server_cert_pem.clone(), pki.server_key_pem.clone())
}

fn mutual(pki: &DevPki) -> TlsServer {
    server(pki).client_ca(pki.ca_cert_pem.clone())
}

/// A TLS client trusting `pki`'s CA, presenting `identity` (cert, key) if given.
fn client_tls(pki: &DevPki, identity: Option<(&str, &str)>) -> ClientTlsConfig {
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_cert_pem))
        .domain_name("localhost");
    match identity {
        Some((cert, key)) => config.identity(Identity::from_pem(cert, key)),
        None => config,
    }
}

/// Connects and sends one SayHello; the reply's message, or the error as text.
async fn say_hello(backend: &BackendHandle, tls: ClientTlsConfig) -> Result<String, String> {
    let attempt = async {
        let channel: Channel = Endpoint::from_shared(backend.url())
            .unwrap()
            .tls_config(tls)
            .map_err(|e| format!("tls config: {e:?}"))?
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let reply = GreeterClient::new(channel)
            .say_hello(HelloRequest { name: "Ann".into() })
            .await
            .map_err(|e| format!("call: {e:?}"))?;
        Ok(reply.into_inner().message)
    };
    tokio::time::timeout(LIMIT, attempt)
        .await
        .expect("a TLS call hung instead of failing")
}

#[tokio::test]
async fn tls_backend_serves_a_client_that_trusts_its_ca() {
    let pki = DevPki::generate(&hosts()).unwrap();
    let backend = spawn_backend_tls("t1", server(&pki)).await.unwrap();
    assert!(
        backend.url().starts_with("https://127.0.0.1:"),
        "{}",
        backend.url()
    );
    // No client certificate needed without a client CA.
    assert_eq!(
        say_hello(&backend, client_tls(&pki, None)).await.unwrap(),
        "Hello Ann from t1"
    );
    // A client trusting another CA refuses the server.
    let other = DevPki::generate(&hosts()).unwrap();
    say_hello(&backend, client_tls(&other, None))
        .await
        .unwrap_err();
    assert_eq!(backend.calls(), 1);
}

#[tokio::test]
async fn mutual_tls_requires_a_certificate_from_the_client_ca() {
    let pki = DevPki::generate(&hosts()).unwrap();
    let backend = spawn_backend_tls("m1", mutual(&pki)).await.unwrap();

    let none = say_hello(&backend, client_tls(&pki, None)).await;
    assert!(none.unwrap_err().contains("CertificateRequired"));

    let (foreign_cert, foreign_key) = pki.foreign_client().unwrap();
    let foreign = say_hello(
        &backend,
        client_tls(&pki, Some((&foreign_cert, &foreign_key))),
    )
    .await;
    assert!(foreign.is_err(), "{foreign:?}");

    // The server certificate is not a client certificate (serverAuth only).
    let wrong_purpose = say_hello(
        &backend,
        client_tls(&pki, Some((&pki.server_cert_pem, &pki.server_key_pem))),
    )
    .await;
    assert!(wrong_purpose.is_err(), "{wrong_purpose:?}");
    assert_eq!(backend.calls(), 0);

    let ok = say_hello(
        &backend,
        client_tls(&pki, Some((&pki.client_cert_pem, &pki.client_key_pem))),
    )
    .await;
    assert_eq!(ok.unwrap(), "Hello Ann from m1");
    let (cert, key) = pki.issue_client("alice").unwrap();
    let issued = say_hello(&backend, client_tls(&pki, Some((&cert, &key)))).await;
    assert_eq!(issued.unwrap(), "Hello Ann from m1");
    assert_eq!(backend.calls(), 2);
}

#[tokio::test]
async fn every_key_kind_handshakes() {
    for kind in [KeyKind::EcdsaP256, KeyKind::Rsa2048, KeyKind::Ed25519] {
        let pki = DevPki::generate_with(&hosts(), kind).unwrap();
        let backend = spawn_backend_tls("k", mutual(&pki)).await.unwrap();
        let reply = say_hello(
            &backend,
            client_tls(&pki, Some((&pki.client_cert_pem, &pki.client_key_pem))),
        )
        .await;
        assert_eq!(reply.unwrap(), "Hello Ann from k", "{kind:?}");
    }
}

#[tokio::test]
async fn a_plaintext_client_fails_at_once_and_the_backend_keeps_serving() {
    let pki = DevPki::generate(&hosts()).unwrap();
    let backend = spawn_backend_tls("p1", server(&pki)).await.unwrap();
    let plaintext = tokio::time::timeout(LIMIT, async {
        let channel = Endpoint::from_shared(format!("http://{}", backend.addr()))
            .unwrap()
            .connect()
            .await?;
        GreeterClient::new(channel)
            .say_hello(HelloRequest { name: "Ann".into() })
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
    .await
    .expect("a plaintext client on a TLS port hung");
    assert!(plaintext.is_err());
    assert_eq!(
        say_hello(&backend, client_tls(&pki, None)).await.unwrap(),
        "Hello Ann from p1"
    );
}

#[tokio::test]
async fn a_stalled_handshake_does_not_hold_up_other_clients() {
    let pki = DevPki::generate(&hosts()).unwrap();
    let backend = spawn_backend_tls("s1", server(&pki)).await.unwrap();
    // Connected, but never sends a ClientHello.
    let _stalled = TcpStream::connect(backend.addr()).await.unwrap();
    // Half a ClientHello.
    let mut partial = TcpStream::connect(backend.addr()).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    assert_eq!(
        say_hello(&backend, client_tls(&pki, None)).await.unwrap(),
        "Hello Ann from s1"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_handshake_is_closed_at_the_deadline() {
    let pki = DevPki::generate(&hosts()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = spawn_backend_on(listener, BackendOptions::new("d1").tls(server(&pki)))
        .await
        .unwrap();
    let mut stalled = TcpStream::connect(backend.addr()).await.unwrap();
    let started = tokio::time::Instant::now();
    // The paused clock jumps to the deadline once everything is idle; the bound is far
    // beyond it.
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(HANDSHAKE_TIMEOUT * 6, stalled.read(&mut buf))
        .await
        .expect("the stalled handshake was never closed");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the server to close the connection, got {read:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= HANDSHAKE_TIMEOUT && waited < HANDSHAKE_TIMEOUT * 2,
        "closed after {waited:?}"
    );
}
