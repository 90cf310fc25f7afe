//! The look-aside API (`rpcgate.lookaside.v1.Lookaside/Watch` on the admin address): the
//! current set first, then a message on every health, membership or weight change; NOT_FOUND
//! for an unknown cluster (and when a reload removes the watched one); and the Python
//! example client (`examples/lookaside_client.py`, grpcio) reading it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use common::interop::{repo_root, venv_python_or_skip};
use common::{OneCluster, bounded, endpoints, hello, start_proxy};
use rpcgate_demo::pb::helloworld::greeter_client::GreeterClient;
use rpcgate_discovery::lookaside::pb::{
    EndpointSet, WatchRequest, lookaside_client::LookasideClient,
};
use tonic::Streaming;

async fn watch(
    proxy: &common::TestProxy,
    cluster: &str,
) -> Result<Streaming<EndpointSet>, tonic::Status> {
    let channel = common::connect(
        tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.admin())).unwrap(),
    )
    .await;
    LookasideClient::new(channel)
        .watch(WatchRequest {
            cluster: cluster.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// `(address, weight, healthy)` of each endpoint.
fn entries(set: &EndpointSet) -> Vec<(String, u32, bool)> {
    set.endpoints
        .iter()
        .map(|e| (e.address.clone(), e.weight, e.healthy))
        .collect()
}

#[tokio::test]
async fn watch_sends_the_set_then_each_health_membership_and_weight_change() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let b3 = rpcgate_demo::spawn_backend("b3").await.unwrap();
    let (a1, a2, a3) = (
        b1.addr().to_string(),
        b2.addr().to_string(),
        b3.addr().to_string(),
    );
    let config = OneCluster::backends(&[&b1, &b2]).admin().build();
    let proxy = start_proxy(&config);
    let mut stream = watch(&proxy, "main").await.unwrap();

    let first = bounded(stream.message()).await.unwrap().unwrap();
    assert_eq!((first.cluster.as_str(), first.version), ("main", 1));
    assert_eq!(
        entries(&first),
        [(a1.clone(), 1, true), (a2.clone(), 1, true)]
    );

    // b2 dies; the first call that reaches for it ejects it (passive health): the next
    // message says so. The call itself is retried on b1.
    drop(b2);
    let mut client = GreeterClient::new(proxy.channel().await);
    for _ in 0..4 {
        client.say_hello(hello("l")).await.unwrap();
    }
    let ejected = bounded(stream.message()).await.unwrap().unwrap();
    assert_eq!(ejected.version, 2);
    assert_eq!(
        entries(&ejected),
        [(a1.clone(), 1, true), (a2.clone(), 1, false)]
    );

    // A reload: b3 joins with weight 3 and b2 leaves.
    let weighted = format!("\"{a1}\", {{ address = \"{a3}\", weight = 3 }}");
    proxy.swap(&OneCluster::new(weighted).admin().build());
    let reloaded = bounded(stream.message()).await.unwrap().unwrap();
    assert_eq!(reloaded.version, 3);
    assert_eq!(
        entries(&reloaded),
        [(a1.clone(), 1, true), (a3.clone(), 3, true)]
    );

    // A reload that removes the cluster ends the stream with NOT_FOUND.
    proxy.swap(
        &OneCluster::new(endpoints(&[&b1]))
            .admin()
            .build()
            .replace("\"main\"", "\"other\""),
    );
    let status = bounded(stream.message()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    // An unknown cluster: NOT_FOUND at once, naming the clusters there are.
    let status = watch(&proxy, "nope").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(status.message().contains("other"), "{}", status.message());
}

#[tokio::test]
async fn the_python_example_client_reads_the_set() {
    let Some(python) = venv_python_or_skip("look-aside Python example") else {
        return;
    };
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let proxy = start_proxy(&OneCluster::backends(&[&b1, &b2]).admin().build());
    let script = repo_root().join("examples/lookaside_client.py");
    let admin = proxy.admin().to_string();
    let run = |cluster: &'static str| {
        let (python, script, admin) = (python.clone(), script.clone(), admin.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(python)
                .arg(script)
                .args([
                    "--admin",
                    &admin,
                    "--cluster",
                    cluster,
                    "--count",
                    "1",
                    "--timeout",
                    "30",
                ])
                .output()
                .unwrap()
        })
    };
    let output = tokio::time::timeout(common::interop::DRIVER_BOUND, run("main"))
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["cluster"], "main");
    assert_eq!(
        line["use"],
        serde_json::json!([b1.addr().to_string(), b2.addr().to_string()])
    );

    let output = tokio::time::timeout(common::interop::DRIVER_BOUND, run("nope"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("NOT_FOUND"));
}
