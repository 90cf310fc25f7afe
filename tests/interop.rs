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

use common::interop::{run_driver, venv_python_or_skip};
use common::start_proxy;
use rpcgate_demo::spawn_backend;

/// Runs the grpcio driver against `target` with `args`; fails the test unless it passes,
/// and returns what it printed.
async fn driver_passes(
    python: &std::path::Path,
    target: std::net::SocketAddr,
    args: &[&str],
) -> String {
    let output = run_driver(python, &target.to_string(), args).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "grpcio driver failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_client_through_the_proxy() {
    let Some(python) = venv_python_or_skip("interop") else {
        return;
    };
    let b1 = spawn_backend("b1").await.unwrap();
    let b2 = spawn_backend("b2").await.unwrap();
    // The driver sends a 4 MiB name: past gRPC's default limit, so the route raises it.
    let config = common::OneCluster::backends(&[&b1, &b2])
        .route("max_message_bytes = 16777216")
        .build();
    let proxy = start_proxy(&config);

    let stdout = driver_passes(&python, proxy.addr, &["--min-backends", "2"]).await;
    assert!(stdout.contains("served by:"), "{stdout}");
    assert!(
        b1.calls() > 0 && b2.calls() > 0,
        "both backends must serve: b1={} b2={}",
        b1.calls(),
        b2.calls()
    );
    proxy.shutdown().await;
}

/// grpcio through a route that retries UNAVAILABLE: a flaky backend is retried until OK,
/// and a grpcio deadline that passes while the backend sleeps reaches the backend as a
/// cancellation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_is_retried_through_a_flaky_backend_and_its_deadline_cancels_the_backend() {
    let Some(python) = venv_python_or_skip("interop") else {
        return;
    };
    let b1 = spawn_backend("b1").await.unwrap();
    let b2 = spawn_backend("b2").await.unwrap();
    let config = common::OneCluster::backends(&[&b1, &b2])
        .route(r#"retry = { max_attempts = 3, on = ["unavailable"], base_interval = "10ms" }"#)
        .cluster("passive_health = { max_fails = 0 }")
        .build();
    let proxy = start_proxy(&config);

    let stdout = driver_passes(&python, proxy.addr, &["--resilience"]).await;
    assert!(stdout.contains("2 passed, 0 failed"), "{stdout}");
    // Three attempts of the flaky call and one slow call.
    assert_eq!(b1.calls() + b2.calls(), 4);
    // The slow call's backend saw the cancellation of the expired deadline.
    common::bounded(async {
        b1.wait_until(|b| b.in_flight() == 0).await;
        b2.wait_until(|b| b.in_flight() == 0).await;
    })
    .await;
    assert_eq!(b1.cancelled() + b2.cancelled(), 1);
    proxy.shutdown().await;
}

/// grpcio honours the rate limit's `grpc-retry-pushback-ms` (gRFC A6): with a retry
/// policy whose own backoff is 10 s, the refused call is retried after the pushback
/// (about 0.5 s) and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_honours_the_rate_limit_pushback() {
    let Some(python) = venv_python_or_skip("interop") else {
        return;
    };
    let b1 = spawn_backend("b1").await.unwrap();
    let config = common::OneCluster::backends(&[&b1])
        .route("rate_limit = { requests_per_second = 2, burst = 1 }")
        .build();
    let proxy = start_proxy(&config);
    let stdout = driver_passes(&python, proxy.addr, &["--pushback"]).await;
    assert!(stdout.contains("pushback honoured"), "{stdout}");
    // The first call and the retry reached the backend; the refused attempt did not.
    assert_eq!(b1.calls(), 2);
    proxy.shutdown().await;
}
