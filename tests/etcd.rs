//! `discovery = { etcd = … }` against a real etcd: backends registered with rpcgate's
//! registration (or written as etcd's Go `endpoints` manager writes them) join and leave
//! without a reload; etcd unreachable at start gives UNAVAILABLE naming etcd and fills in
//! when it comes; the watch resumes after a disconnect (missing nothing) and after an etcd
//! restart, and reads afresh when etcd compacted the history it would resume from.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::etcd::{Etcd, etcd_or_skip};
use common::{OneCluster, hello, served_by, start_proxy, until_served_by};
use rpcgate_demo::pb::helloworld::greeter_client::GreeterClient;
use rpcgate_discovery::etcd::registration::{Registration, RegistrationSpec};

/// The prefix a cluster named `main` reads by default.
const PREFIX: &str = "/rpcgate/services/main/";

fn config(etcd: &[SocketAddr]) -> String {
    let servers: Vec<String> = etcd.iter().map(|a| format!("\"{a}\"")).collect();
    OneCluster::new("").admin().build().replace(
        "endpoints = []",
        &format!("discovery = {{ etcd = [{}] }}", servers.join(", ")),
    )
}

fn spec(etcd: SocketAddr, address: SocketAddr) -> RegistrationSpec {
    RegistrationSpec {
        servers: vec![etcd.to_string()],
        key: RegistrationSpec::key_for("/rpcgate/services/", "main", &address.to_string()),
        address: address.to_string(),
        weight: 1,
        ttl: Duration::from_secs(10),
    }
}

/// The `requests` counter `/status` shows for the endpoint at `address`.
async fn requests_of(proxy: &common::TestProxy, address: SocketAddr) -> u64 {
    let status = proxy.status().await;
    status["clusters"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == address.to_string())
        .and_then(|e| e["requests"].as_u64())
        .unwrap_or_else(|| panic!("{address} not in {status}"))
}

#[tokio::test]
async fn endpoints_join_and_leave_as_keys_come_and_go() {
    if !etcd_or_skip("etcd discovery") {
        return;
    }
    let etcd = Etcd::start().await;
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let proxy = start_proxy(&config(&[etcd.client]));
    let mut client = GreeterClient::new(proxy.channel().await);
    until_served_by(&mut client, &["-"]).await;
    assert_eq!(
        proxy.status().await["clusters"][0]["discovery"],
        format!("etcd {} under {PREFIX}", etcd.client)
    );
    // etcd answered, with nothing under the prefix: the call says so.
    let status = client.say_hello(hello("e")).await.unwrap_err();
    assert_eq!(
        status.message(),
        format!(
            "cluster main has no endpoints: etcd ({}) has no endpoint under {PREFIX}",
            etcd.client
        )
    );

    // b1 registers (lease, keep-alive): it serves.
    let r1 = Registration::start(spec(etcd.client, b1.addr()));
    common::bounded(r1.registered()).await;
    until_served_by(&mut client, &["b1"]).await;

    // b2 is written the way etcd's Go `endpoints` manager writes: both serve, and b1 keeps
    // its endpoint (its counter goes on, it is not a new endpoint).
    let before = requests_of(&proxy, b1.addr()).await;
    etcd.put(
        &format!("{PREFIX}b2"),
        &format!("{{\"Addr\":\"{}\",\"Metadata\":null}}", b2.addr()),
    )
    .await;
    until_served_by(&mut client, &["b1", "b2"]).await;
    assert!(requests_of(&proxy, b1.addr()).await > before);

    // A value that is no endpoint is ignored (and logged); the others stay.
    etcd.put(&format!("{PREFIX}junk"), "not json").await;
    until_served_by(&mut client, &["b1", "b2"]).await;

    // b1 deregisters (its lease revoked): only b2 serves, without a reload.
    r1.deregister().await.unwrap();
    assert_eq!(etcd.keys(PREFIX).await.len(), 2, "b1's key is gone");
    until_served_by(&mut client, &["b2"]).await;
    etcd.delete(&format!("{PREFIX}b2")).await;
    until_served_by(&mut client, &["-"]).await;
}

#[tokio::test]
async fn etcd_unreachable_at_start_is_unavailable_naming_etcd_until_it_comes() {
    if !etcd_or_skip("etcd discovery") {
        return;
    }
    let mut etcd = Etcd::not_started();
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let proxy = start_proxy(&config(&[etcd.client]));
    let mut client = GreeterClient::new(proxy.channel().await);
    let status = client.say_hello(hello("e")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("etcd"), "{}", status.message());
    // Once it tried: why, with the address.
    common::bounded(async {
        loop {
            let status = client.say_hello(hello("e")).await.unwrap_err();
            if status.message().starts_with(&format!(
                "cluster main has no endpoints: etcd not reached: cannot reach etcd ({}: ",
                etcd.client
            )) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    etcd.start_here().await;
    let registration = Registration::start(spec(etcd.client, b1.addr()));
    common::bounded(registration.registered()).await;
    until_served_by(&mut client, &["b1"]).await;
}

/// A TCP relay in front of etcd that the test can cut (dropping every connection and
/// refusing new ones) and open again: a network partition between proxy and etcd.
struct Relay {
    address: SocketAddr,
    open: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (accept_open, accept_cut) = (open.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !accept_open.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let cut = accept_cut.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = cut.notified() => {}
                    }
                });
            }
        });
        Self { address, open, cut }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    fn reopen(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_watch_resumes_after_a_partition_and_reads_afresh_after_a_compaction() {
    if !etcd_or_skip("etcd discovery") {
        return;
    }
    let etcd = Etcd::start().await;
    let relay = Relay::start(etcd.client).await;
    let [b1, b2, b3] = [
        rpcgate_demo::spawn_backend("b1").await.unwrap(),
        rpcgate_demo::spawn_backend("b2").await.unwrap(),
        rpcgate_demo::spawn_backend("b3").await.unwrap(),
    ];
    let value = |b: &rpcgate_demo::BackendHandle| format!("{{\"Addr\":\"{}\"}}", b.addr());
    etcd.put(&format!("{PREFIX}b1"), &value(&b1)).await;
    let proxy = start_proxy(&config(&[relay.address]));
    let mut client = GreeterClient::new(proxy.channel().await);
    until_served_by(&mut client, &["b1"]).await;

    // Partitioned, b2 joins: the set stays; back, the watch resumes from the last revision
    // and replays what it missed.
    relay.cut();
    etcd.put(&format!("{PREFIX}b2"), &value(&b2)).await;
    until_served_by(&mut client, &["b1"]).await;
    relay.reopen();
    until_served_by(&mut client, &["b1", "b2"]).await;

    // Partitioned again, b1 leaves, b3 joins and etcd compacts that history away: the
    // resumed watch is refused with the compaction, and a fresh read gives the set.
    relay.cut();
    etcd.delete(&format!("{PREFIX}b1")).await;
    let revision = etcd.put(&format!("{PREFIX}b3"), &value(&b3)).await;
    etcd.compact(revision).await;
    relay.reopen();
    until_served_by(&mut client, &["b2", "b3"]).await;
}

#[tokio::test]
async fn discovery_and_registration_carry_on_across_an_etcd_restart() {
    if !etcd_or_skip("etcd discovery") {
        return;
    }
    let mut etcd = Etcd::start().await;
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let proxy = start_proxy(&config(&[etcd.client]));
    let mut client = GreeterClient::new(proxy.channel().await);
    let r1 = Registration::start(spec(etcd.client, b1.addr()));
    common::bounded(r1.registered()).await;
    until_served_by(&mut client, &["b1"]).await;

    // etcd is killed and comes back with its data: b1 stays served throughout (the last
    // good set), its registration is renewed, and a backend registered afterwards joins.
    etcd.restart().await;
    until_served_by(&mut client, &["b1"]).await;
    let r2 = Registration::start(spec(etcd.client, b2.addr()));
    common::bounded(r2.registered()).await;
    until_served_by(&mut client, &["b1", "b2"]).await;
    let mut state = r1.state();
    common::bounded(state.wait_for(|s| {
        matches!(
            s,
            rpcgate_discovery::etcd::registration::RegistrationState::Registered { .. }
        )
    }))
    .await
    .unwrap();
    assert_eq!(etcd.keys(PREFIX).await.len(), 2);
}

#[tokio::test]
async fn a_removed_endpoint_finishes_its_calls_in_flight_and_gets_no_new_ones() {
    if !etcd_or_skip("etcd discovery") {
        return;
    }
    let etcd = Etcd::start().await;
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let proxy = start_proxy(&config(&[etcd.client]));
    let mut client = GreeterClient::new(proxy.channel().await);
    let r1 = Registration::start(spec(etcd.client, b1.addr()));
    common::bounded(r1.registered()).await;
    until_served_by(&mut client, &["b1"]).await;

    // A slow call is in flight on b1 when b1 leaves and b2 joins.
    let mut slow_client = client.clone();
    let slow = tokio::spawn(async move {
        let request = common::with_meta(hello("slow"), &[(rpcgate_demo::meta::DELAY_MS, "700")]);
        slow_client.say_hello(request).await
    });
    common::bounded(b1.wait_until(|b| b.in_flight() == 1)).await;
    r1.deregister().await.unwrap();
    let r2 = Registration::start(spec(etcd.client, b2.addr()));
    common::bounded(r2.registered()).await;
    until_served_by(&mut client, &["b2"]).await;
    let reply = common::bounded(slow).await.unwrap().unwrap();
    assert_eq!(
        served_by(reply.metadata()),
        "b1",
        "the call in flight finished on b1"
    );
}

#[tokio::test]
async fn a_reload_to_another_prefix_stops_following_the_old_one() {
    if !etcd_or_skip("etcd discovery") {
        return;
    }
    let etcd = Etcd::start().await;
    let [b1, b2, b3, b4] = [
        rpcgate_demo::spawn_backend("b1").await.unwrap(),
        rpcgate_demo::spawn_backend("b2").await.unwrap(),
        rpcgate_demo::spawn_backend("b3").await.unwrap(),
        rpcgate_demo::spawn_backend("b4").await.unwrap(),
    ];
    let value = |b: &rpcgate_demo::BackendHandle| format!("{{\"Addr\":\"{}\"}}", b.addr());
    etcd.put("/a/b1", &value(&b1)).await;
    etcd.put("/b/b2", &value(&b2)).await;
    let with_prefix =
        |prefix: &str| config(&[etcd.client]).replace(" }", &format!(", prefix = \"{prefix}\" }}"));
    let proxy = start_proxy(&with_prefix("/a/"));
    let mut client = GreeterClient::new(proxy.channel().await);
    until_served_by(&mut client, &["b1"]).await;
    // A call in flight keeps the old generation (and its source) alive meanwhile.
    let mut slow_client = client.clone();
    let slow = tokio::spawn(async move {
        let request = common::with_meta(hello("slow"), &[(rpcgate_demo::meta::DELAY_MS, "1500")]);
        slow_client.say_hello(request).await
    });
    common::bounded(b1.wait_until(|b| b.in_flight() == 1)).await;

    proxy.swap(&with_prefix("/b/"));
    until_served_by(&mut client, &["b2"]).await;
    etcd.put("/b/b4", &value(&b4)).await;
    until_served_by(&mut client, &["b2", "b4"]).await;
    // A change under the old prefix changes nothing: for half a second (ample for a live
    // watch, which sees a put within milliseconds), every call goes to b2 or b4.
    etcd.put("/a/b3", &value(&b3)).await;
    let until = tokio::time::Instant::now() + Duration::from_millis(500);
    while tokio::time::Instant::now() < until {
        let reply = client.say_hello(hello("after")).await.unwrap();
        let by = served_by(reply.metadata());
        assert!(
            by == "b2" || by == "b4",
            "served by {by}: the old prefix's source set the endpoints"
        );
    }
    assert_eq!(b3.calls(), 0);
    common::bounded(slow).await.unwrap().unwrap();
}
