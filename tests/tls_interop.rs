//! Interop over TLS with a second TLS implementation: Python grpcio (BoringSSL) calls
//! through an in-process proxy with mutual TLS on both sides — the client presents a
//! certificate to rpcgate, rpcgate presents one to the TLS backends — running the whole
//! interop driver (`tests/interop/grpcio_client.py --ca … --cert … --key …`). A grpcio
//! client without a certificate, or with one from another CA, must be refused.
//!
//! The driver runs in the venv that `scripts/test.sh` builds (`$RPCGATE_VENV`, else
//! `<repo>/.venv`). Without it the test fails under CI (`CI` set) and is skipped with a
//! notice on a developer machine, as `tests/interop.rs` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::files::{TempDir, toml_path};
use common::interop::{run_driver, venv_python_or_skip};
use common::{OneCluster, endpoints, start_proxy};
use rpcgate_demo::pki::{DevPki, PkiPaths};
use rpcgate_demo::{TlsServer, spawn_backend_tls};

fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The mutual-TLS listener and the mutual-TLS cluster of docs/tls.md's last step.
fn mutual_tls_config(paths: &PkiPaths, backends: &str) -> String {
    let ca = toml_path(&paths.ca_cert);
    OneCluster::new(backends)
        .listener(format!(
            "[listeners.tls]\ncert = {}\nkey = {}\nclient_ca = {ca}\nclient_auth = \"required\"",
            toml_path(&paths.server_cert),
            toml_path(&paths.server_key),
        ))
        // The driver sends a 4 MiB name: past gRPC's default limit.
        .route("max_message_bytes = 16777216")
        .cluster(format!(
            "protocol = \"h2\"\n[clusters.tls]\nca = {ca}\ncert = {}\nkey = {}\nserver_name = \"localhost\"",
            toml_path(&paths.client_cert),
            toml_path(&paths.client_key),
        ))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_with_mutual_tls_through_the_proxy() {
    let Some(python) = venv_python_or_skip("TLS interop") else {
        return;
    };
    let pki = DevPki::generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = TempDir::new("tls-interop");
    let paths = pki.write_to(&dir.0, false).unwrap();
    let backend_tls = TlsServer::new(pki.server_cert_pem.clone(), pki.server_key_pem.clone())
        .client_ca(pki.ca_cert_pem.clone());
    let b1 = spawn_backend_tls("b1", backend_tls.clone()).await.unwrap();
    let b2 = spawn_backend_tls("b2", backend_tls).await.unwrap();
    let proxy = start_proxy(&mutual_tls_config(&paths, &endpoints(&[&b1, &b2])));
    let target = proxy.addr.to_string();
    let trust = [
        "--ca",
        path_arg(&paths.ca_cert),
        "--server-name",
        "localhost",
    ];

    // The whole driver, over mutual TLS.
    let mut args = trust.to_vec();
    args.extend([
        "--cert",
        path_arg(&paths.client_cert),
        "--key",
        path_arg(&paths.client_key),
        "--min-backends",
        "2",
    ]);
    let output = run_driver(&python, &target, &args).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "grpcio driver over mutual TLS failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("served by:"), "{stdout}");
    eprintln!("{stdout}");
    assert!(
        b1.calls() > 0 && b2.calls() > 0,
        "both backends must serve: b1={} b2={}",
        b1.calls(),
        b2.calls()
    );
    let served = b1.calls() + b2.calls();

    // Without a client certificate: refused during the handshake, UNAVAILABLE, no call
    // reaches a backend.
    let output = run_driver(&python, &target, &trust).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a grpcio client without a certificate must fail:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("FAIL unary: StatusCode.UNAVAILABLE"),
        "{stdout}\n{stderr}"
    );
    eprintln!("{stderr}");

    // With a certificate from another CA: refused too.
    let (foreign_cert, foreign_key) = pki.foreign_client().unwrap();
    let foreign_cert_path = dir.0.join("foreign-cert.pem");
    let foreign_key_path = dir.0.join("foreign-key.pem");
    std::fs::write(&foreign_cert_path, foreign_cert).unwrap();
    std::fs::write(&foreign_key_path, foreign_key).unwrap();
    let mut args = trust.to_vec();
    args.extend([
        "--cert",
        path_arg(&foreign_cert_path),
        "--key",
        path_arg(&foreign_key_path),
    ]);
    let output = run_driver(&python, &target, &args).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a grpcio client with a certificate from another CA must fail:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("FAIL unary: StatusCode.UNAVAILABLE"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(b1.calls() + b2.calls(), served);
    proxy.shutdown().await;
}
