//! A fleet on one etcd prefix (docs/fleet.md): two `rpcgate run` processes with the same
//! configuration and one `rpcgate-client` built from that same file all see a backend join
//! (registered by the helper or by an `rpcgate register` sidecar) and leave (the sidecar
//! stopped) within seconds, with no reload anywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;
#[path = "../../../tests/common/etcd.rs"]
#[allow(dead_code)] // reason: shared with tests/etcd.rs, which uses the rest
mod etcd;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Running, WAIT, free_addr, rpcgate, scratch};
use etcd::{Etcd, etcd_or_skip};
use rpcgate_client::{ClientBuilder, Registration, RegistrationSpec};
use rpcgate_demo::pb::helloworld::{HelloRequest, greeter_client::GreeterClient};
use tokio::time::Instant;
use tonic::transport::Channel;

/// Who served the last 20 calls of `greeter` (`-` for UNAVAILABLE).
async fn served<T>(greeter: &mut GreeterClient<T>) -> HashSet<String>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let request = HelloRequest {
            name: "fleet".into(),
        };
        match greeter.say_hello(request).await {
            Ok(reply) => seen.insert(
                reply
                    .metadata()
                    .get("x-backend")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned(),
            ),
            Err(status) if status.code() == tonic::Code::Unavailable => seen.insert("-".into()),
            Err(status) => panic!("{status:?}"),
        };
    }
    seen
}

/// The three members of the fleet, as the test calls them.
struct Fleet {
    proxies: Vec<GreeterClient<Channel>>,
    client: GreeterClient<rpcgate_client::Client>,
}

impl Fleet {
    /// Waits until every member is served by exactly `want`; returns how long it took.
    async fn until_all_see(&mut self, want: &[&str]) -> Duration {
        let want: HashSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
        let started = Instant::now();
        loop {
            let mut seen = vec![served(&mut self.client).await];
            for proxy in &mut self.proxies {
                seen.push(served(proxy).await);
            }
            if seen.iter().all(|s| *s == want) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < WAIT,
                "the fleet (client, proxies) never saw exactly {want:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn config(listen: SocketAddr, etcd: SocketAddr) -> String {
    format!(
        r#"[[listeners]]
name = "edge"
address = "{listen}"
[[listeners.routes]]
cluster = "laptop"
[[clusters]]
name = "laptop"
lb = "round_robin"  # so 20 calls show every member
discovery = {{ etcd = ["{etcd}"] }}
"#
    )
}

#[tokio::test]
async fn two_rpcgates_and_a_thick_client_follow_one_etcd_prefix() {
    if !etcd_or_skip("fleet") {
        return;
    }
    let etcd = Etcd::start().await;
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let dir = scratch("fleet");
    std::fs::create_dir_all(&dir).unwrap();
    let mut running = Vec::new();
    let mut proxies = Vec::new();
    let mut text = String::new();
    for i in 0..2 {
        let listen = free_addr();
        text = config(listen, etcd.client);
        let file = dir.join(format!("rpcgate-{i}.toml"));
        std::fs::write(&file, &text).unwrap();
        let mut command = rpcgate();
        command.arg("run").arg("-c").arg(&file);
        let mut proxy = Running::spawn(&mut command, dir.join(format!("run-{i}.log")));
        let channel = proxy
            .until_up("connect", || {
                let endpoint =
                    tonic::transport::Endpoint::from_shared(format!("http://{listen}")).unwrap();
                async move { endpoint.connect().await }
            })
            .await;
        proxies.push(GreeterClient::new(channel));
        running.push(proxy);
    }
    // The thick client reads the same file.
    let client = ClientBuilder::from_toml(&text, "rpcgate.toml", "laptop")
        .unwrap()
        .build()
        .unwrap();
    let mut fleet = Fleet {
        proxies,
        client: GreeterClient::new(client),
    };
    fleet.until_all_see(&["-"]).await;

    // b1 registers itself with the helper.
    let r1 = Registration::start(RegistrationSpec {
        servers: vec![etcd.client.to_string()],
        key: RegistrationSpec::key_for("/rpcgate/services/", "laptop", &b1.addr().to_string()),
        address: b1.addr().to_string(),
        weight: 1,
        ttl: Duration::from_secs(10),
    });
    tokio::time::timeout(WAIT, r1.registered()).await.unwrap();
    let joined = fleet.until_all_see(&["b1"]).await;

    // b2 has a sidecar: `rpcgate register`.
    let mut command = rpcgate();
    command.args([
        "register",
        "--etcd",
        &etcd.client.to_string(),
        "--service",
        "laptop",
    ]);
    command.args(["--address", &b2.addr().to_string()]);
    let mut sidecar = Running::spawn(&mut command, dir.join("register.log"));
    let both = fleet.until_all_see(&["b1", "b2"]).await;

    // The sidecar stops (the backend is going away): b2 leaves everywhere.
    sidecar.sigterm();
    assert!(sidecar.exit().await.success(), "{}", sidecar.output());
    let left = fleet.until_all_see(&["b1"]).await;
    for (what, took) in [("join", joined), ("second join", both), ("leave", left)] {
        assert!(took < Duration::from_secs(5), "{what} took {took:?}");
    }
    eprintln!("fleet: join {joined:?}, second join {both:?}, leave {left:?}");
    for proxy in &running {
        proxy.sigterm();
    }
}
