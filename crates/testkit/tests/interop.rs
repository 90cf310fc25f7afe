//! Interop with a second gRPC stack: the Python grpcio driver
//! (`tests/interop/grpcio_client.py`) calls every call kind, big and compressed
//! messages, metadata, trailers and error details through an in-process proxy in front
//! of two backends.
//!
//! The driver runs in the venv that `scripts/test.sh` builds (`$RPCGATE_VENV`, else
//! `<repo>/.venv`). Without it the test fails under CI (`CI` set), since CI must run it,
//! and is skipped with a notice on a developer machine, so a plain `cargo test` works
//! without Python.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{simple_config, start_proxy};
use rpcgate_testkit::spawn_backend;

/// The whole driver run (it bounds each of its calls at 15 s itself).
const DRIVER_BOUND: Duration = Duration::from_secs(180);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The venv's python, if the venv exists.
fn venv_python() -> Option<PathBuf> {
    let venv = std::env::var_os("RPCGATE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"));
    let python = venv.join("bin").join("python");
    python.exists().then_some(python)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_client_through_the_proxy() {
    let Some(python) = venv_python() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "no Python venv (set RPCGATE_VENV or create <repo>/.venv): CI must run the interop test; scripts/test.sh builds it"
            );
        }
        eprintln!(
            "NOTICE: interop test skipped: no venv at $RPCGATE_VENV or <repo>/.venv (run scripts/test.sh)"
        );
        return;
    };
    let b1 = spawn_backend("b1").await.unwrap();
    let b2 = spawn_backend("b2").await.unwrap();
    let proxy = start_proxy(&simple_config(&[&b1, &b2], ""));

    let script = repo_root().join("tests/interop/grpcio_client.py");
    let child = Command::new(&python)
        .arg(&script)
        .arg(proxy.addr.to_string())
        .arg("--min-backends")
        .arg("2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let pid = child.id();
    // The backends and the proxy keep serving on the runtime while this thread waits.
    let waited = tokio::time::timeout(
        DRIVER_BOUND,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    let output = match waited {
        Ok(joined) => joined.unwrap().unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("the grpcio driver did not finish within {DRIVER_BOUND:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "grpcio driver failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("served by:"), "{stdout}");
    assert!(
        b1.calls() > 0 && b2.calls() > 0,
        "both backends must serve: b1={} b2={}",
        b1.calls(),
        b2.calls()
    );
    proxy.shutdown().await;
}
