//! The admin dashboard in a real browser: Debian's headless Chromium, driven by
//! `tests/dashboard/check.mjs` (playwright-core with `executablePath`, no browser
//! download). The page loads with no console error, shows every endpoint up, and shows a
//! killed backend as down within a few seconds while calls flow; a screenshot is left in
//! `target/dashboard.png` to look at.
//!
//! `scripts/test.sh` installs Chromium and the npm package and sets
//! `RPCGATE_REQUIRE_BROWSER=1`, so in CI a missing browser fails the test; elsewhere (a
//! developer's `cargo test` without Chromium) the test says it is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{OneCluster, start_proxy};
use rpcgate_demo::pb::helloworld::HelloRequest;
use rpcgate_demo::pb::helloworld::greeter_client::GreeterClient;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

/// Bound on the whole browser session.
const SESSION: Duration = Duration::from_secs(90);

fn driver_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard")
}

/// Whether the browser and the driver's npm package are here; `Err` says what is missing.
fn browser_ready() -> Result<(), String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(format!("no Chromium at {chromium}"));
    }
    if !driver_dir().join("node_modules/playwright-core").exists() {
        return Err("tests/dashboard has no node_modules (npm ci there)".into());
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err("no node".into());
    }
    Ok(())
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>, want: &str) -> String {
    loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the driver ended before saying {want:?}"));
        if line.starts_with(want) {
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_endpoints_and_a_killed_backend_going_down() {
    if let Err(missing) = browser_ready() {
        assert!(
            std::env::var_os("RPCGATE_REQUIRE_BROWSER").is_none(),
            "the browser test cannot run: {missing}"
        );
        eprintln!("skipped: {missing}");
        return;
    }
    let backends = [
        rpcgate_demo::spawn_backend("b1").await.unwrap(),
        rpcgate_demo::spawn_backend("b2").await.unwrap(),
        rpcgate_demo::spawn_backend("b3").await.unwrap(),
    ];
    let proxy = start_proxy(
        &OneCluster::backends(&backends.iter().collect::<Vec<_>>())
            .admin()
            .build(),
    );

    // Calls flow the whole time (bounded in count), so the charts have data and the killed
    // backend's failures eject it.
    let running = Arc::new(AtomicBool::new(true));
    let traffic = {
        let channel = proxy.channel().await;
        let running = running.clone();
        tokio::spawn(async move {
            let mut client = GreeterClient::new(channel);
            for _ in 0..20_000 {
                if !running.load(Ordering::Relaxed) {
                    break;
                }
                let request = HelloRequest {
                    name: "dash".into(),
                };
                let _ = client.say_hello(request).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let addresses: Vec<String> = backends.iter().map(|b| b.addr().to_string()).collect();
    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard.png");
    let mut driver = Command::new("node")
        .arg(driver_dir().join("check.mjs"))
        .args(["--url", &format!("http://{}/", proxy.admin())])
        .args(["--expect-endpoints", &addresses.join(",")])
        .args(["--timeout-ms", "20000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = driver.stdin.take().unwrap();
    let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();

    let session = async {
        next_line(&mut lines, "READY").await;
        backends[1].kill().await;
        stdin
            .write_all(format!("DOWN {}\n", addresses[1]).as_bytes())
            .await
            .unwrap();
        let saw = next_line(&mut lines, "SAW DOWN").await;
        let waited_ms: u64 = saw.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(waited_ms < 10_000, "{saw}");
        stdin
            .write_all(format!("SCREENSHOT {}\nEND\n", screenshot.display()).as_bytes())
            .await
            .unwrap();
        next_line(&mut lines, "SCREENSHOT DONE").await;
        driver.wait().await.unwrap()
    };
    let status = tokio::time::timeout(SESSION, session)
        .await
        .expect("the browser session took too long");
    assert!(status.success(), "the dashboard check failed: {status}");
    running.store(false, Ordering::Relaxed);
    traffic.await.unwrap();
    proxy.shutdown().await;
}
