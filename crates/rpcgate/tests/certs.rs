//! `rpcgate certs` and `rpcgate backend` with TLS, as a user runs them (contract §1): the six
//! PEM files with their modes, no accidental overwrite, `--force`, and a TLS backend from
//! those files serving a mutual-TLS call, then exiting 0 on SIGTERM.
//!
//! Processes are started from the built binary and every wait is bounded; a process still
//! running when a test ends is killed by its guard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{Running, free_addr, rpcgate, say_hello, scratch, text};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const FILES: [&str; 6] = [
    "ca-cert.pem",
    "ca-key.pem",
    "server-cert.pem",
    "server-key.pem",
    "client-cert.pem",
    "client-key.pem",
];

fn certs(dir: &Path, extra: &[&str]) -> Output {
    rpcgate()
        .arg("certs")
        .arg("--dir")
        .arg(dir)
        .args(["--hosts", "localhost,127.0.0.1"])
        .args(extra)
        .output()
        .unwrap()
}

fn read_all(dir: &Path) -> Vec<String> {
    FILES
        .iter()
        .map(|name| std::fs::read_to_string(dir.join(name)).unwrap())
        .collect()
}

#[test]
fn certs_writes_six_files_with_modes_and_never_overwrites_without_force() {
    let dir = scratch("pki").join("certs");
    let output = certs(&dir, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for name in FILES {
        let path = dir.join(name);
        assert!(stdout.contains(&path.display().to_string()), "{stdout}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let expected = if name.ends_with("-key.pem") {
            0o600
        } else {
            0o644
        };
        assert_eq!(mode, expected, "{name}");
    }
    assert!(stdout.contains("[listeners.tls]"), "{stdout}");
    assert!(stdout.contains("[clusters.tls]"), "{stdout}");
    let first = read_all(&dir);
    assert!(first[0].starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(first[1].starts_with("-----BEGIN PRIVATE KEY-----"));

    let again = certs(&dir, &[]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        said.contains("ca-cert.pem") && said.contains("--force"),
        "{said}"
    );
    assert_eq!(read_all(&dir), first, "a refused run changed the files");

    let forced = certs(&dir, &["--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced));
    let second = read_all(&dir);
    for (name, (old, new)) in FILES.iter().zip(first.iter().zip(&second)) {
        assert_ne!(old, new, "{name} was not replaced");
    }
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn certs_rejects_a_bad_host() {
    let dir = scratch("bad-host");
    let output = rpcgate()
        .arg("certs")
        .arg("--dir")
        .arg(&dir)
        .args(["--hosts", "localhost,b\u{e9}d"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("b\u{e9}d"), "{}", text(&output));
    assert!(!dir.join("ca-cert.pem").exists());
}

/// A TLS client for `dir`'s PKI, with the client certificate when `identity`.
fn client_tls(dir: &Path, identity: bool) -> ClientTlsConfig {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca-cert.pem")))
        .domain_name("localhost");
    if identity {
        config.identity(Identity::from_pem(
            read("client-cert.pem"),
            read("client-key.pem"),
        ))
    } else {
        config
    }
}

/// One SayHello to the TLS server at `addr`, within 5 s.
async fn tls_hello(addr: SocketAddr, tls: ClientTlsConfig) -> Result<String, String> {
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?;
    say_hello(endpoint, Duration::from_secs(5)).await
}

#[tokio::test]
async fn backend_serves_mutual_tls_from_certs_files_and_exits_on_sigterm() {
    let dir = scratch("backend");
    let output = certs(&dir, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let addr = free_addr();
    let mut backend = Running::spawn(
        rpcgate()
            .arg("backend")
            .arg("--listen")
            .arg(addr.to_string())
            .args(["--name", "tls1", "--tls-cert"])
            .arg(dir.join("server-cert.pem"))
            .arg("--tls-key")
            .arg(dir.join("server-key.pem"))
            .arg("--client-ca")
            .arg(dir.join("ca-cert.pem")),
        dir.join("backend.log"),
    );

    // Retry until it listens (bounded); fail early if it exits.
    let message = backend
        .until_up("TLS call", || tls_hello(addr, client_tls(&dir, true)))
        .await;
    assert_eq!(message, "Hello Ann from tls1");

    // Without a client certificate the handshake is refused. Under TLS 1.3 the client
    // learns it from the alert or from the close that follows, whichever it reads first,
    // so tonic reports it as CertificateRequired, a closed connection or a broken pipe:
    // always a transport error, never a reply.
    let refused = tls_hello(addr, client_tls(&dir, false)).await;
    assert!(
        refused.as_ref().is_err_and(|e| {
            [
                "CertificateRequired",
                "connection closed",
                "broken pipe",
                "transport error",
            ]
            .iter()
            .any(|reason| e.contains(reason))
        }),
        "{refused:?}"
    );

    backend.sigterm();
    let status = backend.exit().await;
    assert_eq!(status.code(), Some(0), "{}", backend.output());
    drop(backend);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn backend_reports_unusable_tls_files() {
    let dir = scratch("bad-files");
    let output = certs(&dir, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let run = |cert: &str, key: &str| {
        rpcgate()
            .arg("backend")
            .arg("--listen")
            .arg(free_addr().to_string())
            .args(["--name", "bad", "--tls-cert"])
            .arg(dir.join(cert))
            .arg("--tls-key")
            .arg(dir.join(key))
            .output()
            .unwrap()
    };
    let missing = run("missing.pem", "server-key.pem");
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(text(&missing).contains("missing.pem"), "{}", text(&missing));

    let not_a_cert = run("server-key.pem", "server-key.pem");
    assert_eq!(not_a_cert.status.code(), Some(1), "{}", text(&not_a_cert));
    assert!(
        text(&not_a_cert).contains("invalid certificate"),
        "{}",
        text(&not_a_cert)
    );

    let wrong_key = run("server-cert.pem", "client-key.pem");
    assert_eq!(wrong_key.status.code(), Some(1), "{}", text(&wrong_key));
    assert!(
        text(&wrong_key).contains("does not belong to the certificate"),
        "{}",
        text(&wrong_key)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
