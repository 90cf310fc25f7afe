//! `slow_start` through the real proxy on tokio's paused clock: a backend that joins the
//! cluster (here by a configuration swap, as a reload or discovery would add it) gets a
//! share that ramps up over the window instead of its full share at once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::time::Duration;

use common::{OneCluster, bounded, hello, served_by, start_local_proxy};
use rpcgate_demo::pb::helloworld::greeter_client::GreeterClient;
use tonic::transport::Channel;

/// The share of `n` calls that `backend` served.
async fn share(client: &mut GreeterClient<Channel>, backend: &str, n: usize) -> f64 {
    let mut hits = 0;
    for _ in 0..n {
        let reply = bounded(client.say_hello(hello("a"))).await.unwrap();
        if served_by(reply.metadata()) == backend {
            hits += 1;
        }
    }
    f64::from(hits) / n as f64
}

#[tokio::test(start_paused = true)]
async fn a_joining_backend_ramps_up_over_slow_start() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let extra = "slow_start = \"20s\"";
    let proxy = start_local_proxy(&OneCluster::backends(&[&b1]).cluster(extra).build());
    let mut client = GreeterClient::new(proxy.channel().await);
    assert_eq!(share(&mut client, "b1", 20).await, 1.0);

    proxy.swap(&OneCluster::backends(&[&b1, &b2]).cluster(extra).build());
    let joined = share(&mut client, "b2", 400).await;
    assert!(joined > 0.0 && joined < 0.2, "b2 got {joined} at once");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let halfway = share(&mut client, "b2", 400).await;
    assert!(
        halfway > joined && halfway < 0.45,
        "{joined} then {halfway}"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let full = share(&mut client, "b2", 400).await;
    assert!((0.4..0.6).contains(&full), "{full} after the window");
    proxy.shutdown().await;
}
