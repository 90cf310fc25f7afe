//! Swapping the configuration generation under a running proxy: new calls follow the new
//! routes while calls in flight finish on the old ones, and a cluster that did not change
//! keeps its endpoint state (here: a passive-health ejection), while a changed one starts
//! afresh. The swap is what `POST /reload` and SIGHUP will call.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{bounded, hello, served_by, start_local_proxy, with_meta};
use rpcgate_demo::meta;
use rpcgate_demo::pb::helloworld::greeter_client::GreeterClient;
use tokio::net::TcpListener;

/// One listener whose only route goes to `route_to`; clusters `one` and `two`.
fn two_clusters(route_to: &str, one: &str, two: &str) -> String {
    format!(
        r#"[server]
workers = 1
[log]
access_log = "off"
[[listeners]]
name = "edge"
address = "127.0.0.1:0"
[[listeners.routes]]
match.path_prefix = "/"
cluster = "{route_to}"
[[clusters]]
name = "one"
{one}
[[clusters]]
name = "two"
{two}
"#
    )
}

#[tokio::test(start_paused = true)]
async fn new_calls_follow_the_new_routes_while_calls_in_flight_finish() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let one = format!("endpoints = [\"{}\"]", b1.addr());
    let two = format!("endpoints = [\"{}\"]", b2.addr());
    let proxy = start_local_proxy(&two_clusters("one", &one, &two));
    // Both calls share one client connection: the swap reaches it at its next call.
    let channel = proxy.channel().await;
    let mut slow = GreeterClient::new(channel.clone());
    let in_flight = tokio::spawn(async move {
        slow.say_hello(with_meta(hello("slow"), &[(meta::DELAY_MS, "5000")]))
            .await
    });
    bounded(b1.wait_until(|b| b.in_flight() == 1)).await;

    assert_eq!(proxy.swap(&two_clusters("two", &one, &two)), 2);

    let mut client = GreeterClient::new(channel);
    let reply = bounded(client.say_hello(hello("new"))).await.unwrap();
    assert_eq!(served_by(reply.metadata()), "b2");
    assert_eq!(reply.get_ref().message, "Hello new from b2");
    // The call that started before the swap finishes where it started.
    let slow_reply = bounded(in_flight).await.unwrap().unwrap();
    assert_eq!(served_by(slow_reply.metadata()), "b1");
    assert_eq!(b1.calls(), 1);
    assert_eq!(b2.calls(), 1);
    proxy.shutdown().await;
}

/// An endpoint that accepts TCP and closes at once: every HTTP/2 handshake with it fails,
/// which passive health counts. Returns its address and how many connections it saw.
async fn closing_endpoint() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(tcp);
        }
    });
    (addr, accepted)
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_cluster_keeps_its_endpoint_state() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let (broken, accepted) = closing_endpoint().await;
    // round_robin tries the broken endpoint first; one failure ejects it for a minute.
    let one = format!(
        "endpoints = [\"{broken}\", \"{}\"]\npassive_health = {{ max_fails = 1, fail_timeout = \"60s\" }}",
        backend.addr()
    );
    let two = format!("endpoints = [\"{}\"]", backend.addr());
    let proxy = start_local_proxy(&two_clusters("one", &one, &two));
    let mut client = GreeterClient::new(proxy.channel().await);
    // Two calls: round robin offers the broken endpoint to one of them, which is then
    // retried on b1.
    for name in ["a", "a2"] {
        let reply = bounded(client.say_hello(hello(name))).await.unwrap();
        assert_eq!(
            served_by(reply.metadata()),
            "b1",
            "retried past the broken endpoint"
        );
    }
    let tried = accepted.load(Ordering::SeqCst);
    assert!(tried >= 1, "the broken endpoint was tried");

    // A new generation in which cluster `one` is the same (only `two` changed): the
    // ejection holds, so no call goes near the broken endpoint.
    let two_changed = format!("{two}\nconnect_timeout = \"1s\"");
    assert_eq!(proxy.swap(&two_clusters("one", &one, &two_changed)), 2);
    for name in ["b", "c", "d", "e"] {
        let reply = bounded(client.say_hello(hello(name))).await.unwrap();
        assert_eq!(served_by(reply.metadata()), "b1");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        tried,
        "the ejection was forgotten"
    );

    // A generation in which cluster `one` changed how it connects starts it afresh: the
    // broken endpoint is tried again.
    let one_changed = format!("{one}\nconnect_timeout = \"1s\"");
    assert_eq!(
        proxy.swap(&two_clusters("one", &one_changed, &two_changed)),
        3
    );
    for name in ["f", "g"] {
        let reply = bounded(client.say_hello(hello(name))).await.unwrap();
        assert_eq!(served_by(reply.metadata()), "b1");
    }
    assert!(
        accepted.load(Ordering::SeqCst) > tried,
        "a changed cluster kept the old endpoint state"
    );
    proxy.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cluster_whose_endpoints_change_keeps_the_endpoints_that_stay() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let extra = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let (broken, accepted) = closing_endpoint().await;
    let passive = "passive_health = { max_fails = 1, fail_timeout = \"60s\" }";
    let one = format!(
        "endpoints = [\"{broken}\", \"{}\"]\n{passive}",
        backend.addr()
    );
    let two = format!("endpoints = [\"{}\"]", backend.addr());
    let proxy = start_local_proxy(&two_clusters("one", &one, &two));
    let mut client = GreeterClient::new(proxy.channel().await);
    for name in ["a", "a2"] {
        bounded(client.say_hello(hello(name))).await.unwrap();
    }
    let tried = accepted.load(Ordering::SeqCst);
    assert!(tried >= 1, "the broken endpoint was tried");

    // A third endpoint joins `one`: the broken one stays ejected, the new one serves.
    let grown = format!(
        "endpoints = [\"{broken}\", \"{}\", \"{}\"]\n{passive}",
        backend.addr(),
        extra.addr()
    );
    proxy.swap(&two_clusters("one", &grown, &two));
    let mut served = Vec::new();
    for name in ["b", "c", "d", "e"] {
        let reply = bounded(client.say_hello(hello(name))).await.unwrap();
        served.push(served_by(reply.metadata()));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        tried,
        "the ejection was forgotten"
    );
    assert!(
        served.iter().any(|b| b == "b2"),
        "the new endpoint got no call: {served:?}"
    );
    proxy.shutdown().await;
}

/// Calls through a fresh connection to `addr`.
async fn hello_at(addr: SocketAddr) -> Result<String, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let reply = GreeterClient::new(channel)
        .say_hello(hello("a"))
        .await
        .map_err(|e| e.to_string())?;
    Ok(served_by(reply.metadata()))
}

/// A swap adds a listener (it serves at once), re-binds a changed one on the same socket
/// (its old connections are told to go away, the port never closes), and removes one
/// (its port stops accepting).
#[tokio::test]
async fn a_swap_adds_rebinds_and_removes_listeners() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let one = format!("endpoints = [\"{}\"]", backend.addr());
    let base = two_clusters("one", &one, &one);
    let proxy = common::start_proxy(&base);
    let handle = proxy.handle.as_ref().unwrap();
    let edge = handle.listener_addr("edge").unwrap();
    // Fixed ports, so the re-bind keeps the address: take free ones from the OS.
    let extra_addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let with_extra = format!(
        "{base}[[listeners]]\nname = \"extra\"\naddress = \"{extra_addr}\"\n[[listeners.routes]]\ncluster = \"two\"\n"
    );
    assert_eq!(proxy.swap(&with_extra), 2);
    assert_eq!(handle.listener_addr("extra"), Some(extra_addr));
    assert_eq!(bounded(hello_at(extra_addr)).await.unwrap(), "b1");
    // The unchanged listener kept its socket and its connections.
    assert_eq!(handle.listener_addr("edge"), Some(edge));
    let kept = proxy.channel().await;
    bounded(GreeterClient::new(kept.clone()).say_hello(hello("k")))
        .await
        .unwrap();

    // Re-bind "extra" with other settings: same address, still serving.
    let changed = with_extra.replace(
        &format!("address = \"{extra_addr}\"\n"),
        &format!("address = \"{extra_addr}\"\nmax_concurrent_streams = 7\n"),
    );
    assert_eq!(proxy.swap(&changed), 3);
    assert_eq!(bounded(hello_at(extra_addr)).await.unwrap(), "b1");

    // Remove it: its port stops accepting; "edge" goes on, on the same connection.
    assert_eq!(proxy.swap(&base), 4);
    assert_eq!(handle.listener_addr("extra"), None);
    bounded(async {
        while tokio::net::TcpStream::connect(extra_addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    bounded(GreeterClient::new(kept).say_hello(hello("k")))
        .await
        .unwrap();

    // A listener whose address cannot be bound: the swap is refused, nothing changes.
    let taken = base.replace(
        "address = \"127.0.0.1:0\"",
        &format!("address = \"{}\"", backend.addr()),
    );
    let parsed = rpcgate_config::parse(&taken, "test.toml").unwrap();
    let error = handle.swap_config(&parsed).unwrap_err();
    assert!(error.to_string().contains("cannot bind"), "{error}");
    assert_eq!(handle.generation(), 4);
    assert_eq!(handle.listener_addr("edge"), Some(edge));
    proxy.shutdown().await;
}
