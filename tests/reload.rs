//! Hot reload (contract §6) through the admin API's `POST /reload`, which re-reads the
//! file the proxy started from: a valid file is swapped in (new calls follow it), an
//! invalid one is refused with its errors and changes nothing, and reloads under a steady
//! load lose no call.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::files::TempDir;
use common::{OneCluster, TestProxy, bounded, endpoints, hello, served_by};
use rpcgate_demo::BackendHandle;
use rpcgate_demo::pb::helloworld::greeter_client::GreeterClient;
use rpcgate_proxy::Proxy;

/// A proxy started from the file `path` holding `text` (so it can reload it).
fn start_from_file(path: &Path, text: &str) -> TestProxy {
    std::fs::write(path, text).unwrap();
    let config = rpcgate_config::load(path).unwrap_or_else(|e| panic!("{e}"));
    let handle = Proxy::start(&config).unwrap();
    let addr = handle.addresses()[0].1;
    TestProxy {
        handle: Some(handle),
        addr,
    }
}

fn over(backends: &[&BackendHandle]) -> String {
    OneCluster::new(endpoints(backends)).admin().build()
}

/// `POST /reload` on the admin API: status and body.
async fn post_reload(proxy: &TestProxy) -> (u16, String) {
    let request = http::Request::post("/reload")
        .header("host", proxy.admin().to_string())
        .body(String::new())
        .unwrap();
    let (parts, body) = common::http::http1_request(proxy.admin(), request).await;
    (
        parts.status.as_u16(),
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn post_reload_swaps_a_valid_file_and_refuses_an_invalid_one() {
    let dir = TempDir::new("reload-post");
    let path = dir.0.join("rpcgate.toml");
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let proxy = start_from_file(&path, &over(&[&b1]));
    let mut client = GreeterClient::new(proxy.channel().await);
    let reply = bounded(client.say_hello(hello("a"))).await.unwrap();
    assert_eq!(served_by(reply.metadata()), "b1");

    // Valid: the cluster now has b2 only; the same client connection follows it.
    std::fs::write(&path, over(&[&b2])).unwrap();
    let (code, body) = post_reload(&proxy).await;
    assert_eq!((code, body.as_str()), (200, r#"{"generation":2}"#));
    let reply = bounded(client.say_hello(hello("a"))).await.unwrap();
    assert_eq!(served_by(reply.metadata()), "b2");
    let status = proxy.status().await;
    assert_eq!(status["generation"], 2);

    // Invalid: 400 with file:line:col and the key; b2 keeps serving.
    std::fs::write(&path, over(&[&b1]) + "\n[bogus]\n").unwrap();
    let (code, body) = post_reload(&proxy).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains(&format!("{}:", path.display())) && body.contains("bogus"),
        "{body}"
    );
    assert!(body.contains("the running configuration stays"), "{body}");
    let reply = bounded(client.say_hello(hello("a"))).await.unwrap();
    assert_eq!(served_by(reply.metadata()), "b2");
    assert_eq!(
        proxy
            .metric("rpcgate_config_reloads_total", &[("result", "error")])
            .await,
        Some(1.0)
    );
    assert_eq!(
        proxy
            .metric("rpcgate_config_reloads_total", &[("result", "ok")])
            .await,
        Some(1.0)
    );

    // Only POST reloads.
    let (code, _) = proxy.admin_get("/reload").await;
    assert_eq!(code, 405);
    proxy.shutdown().await;
}

/// Calls run on four connections the whole time while the file is reloaded three times:
/// routes change (to another cluster), an endpoint is added, and an invalid file is
/// refused. No call fails, and the calls follow each generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_no_call() {
    let dir = TempDir::new("reload-load");
    let path = dir.0.join("rpcgate.toml");
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let b3 = rpcgate_demo::spawn_backend("b3").await.unwrap();
    let two_clusters = |route_to: &str, main: &[&BackendHandle]| {
        format!(
            "{}[[clusters]]\nname = \"other\"\nendpoints = [{}]\n",
            OneCluster::new(endpoints(main))
                .admin()
                .build()
                .replace("cluster = \"main\"", &format!("cluster = \"{route_to}\"")),
            endpoints(&[&b3])
        )
    };
    let proxy = start_from_file(&path, &two_clusters("main", &[&b1]));

    let running = Arc::new(AtomicBool::new(true));
    let failed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let channel = proxy.channel().await;
        let (running, failed) = (running.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let mut client = GreeterClient::new(channel);
            let mut served = Vec::new();
            // Bounded in count as well as by the flag.
            for _ in 0..20_000 {
                if !running.load(Ordering::Relaxed) {
                    break;
                }
                match client.say_hello(hello("load")).await {
                    Ok(reply) => served.push(served_by(reply.metadata())),
                    Err(status) => {
                        eprintln!("call failed: {status:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            served
        }));
    }
    let wait_for = |name: &'static str| {
        let b = match name {
            "b1" => &b1,
            "b2" => &b2,
            _ => &b3,
        };
        let before = b.calls();
        async move {
            bounded(b.wait_until(|b| b.calls() > before + 20)).await;
        }
    };
    wait_for("b1").await;
    // 1. Routes change: everything to the other cluster (b3).
    std::fs::write(&path, two_clusters("other", &[&b1])).unwrap();
    assert_eq!(post_reload(&proxy).await.0, 200);
    wait_for("b3").await;
    // 2. Back to main, with an endpoint added (b2).
    std::fs::write(&path, two_clusters("main", &[&b1, &b2])).unwrap();
    assert_eq!(post_reload(&proxy).await.0, 200);
    wait_for("b2").await;
    // 3. An invalid file: refused, nothing changes.
    std::fs::write(&path, "[[listeners]]\nname = 1\n").unwrap();
    assert_eq!(post_reload(&proxy).await.0, 400);
    wait_for("b1").await;
    wait_for("b2").await;

    running.store(false, Ordering::Relaxed);
    let mut total = 0;
    for task in load {
        total += bounded(task).await.unwrap().len();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "calls failed during reloads"
    );
    assert!(total > 100, "{total} calls");
    assert_eq!(proxy.handle.as_ref().unwrap().generation(), 3);
    proxy.shutdown().await;
}
