//! End-to-end failover through the real proxy (contract §3, §4): a killed backend, NGINX
//! passive health, panic mode, transparent retry on REFUSED_STREAM and GOAWAY, and the
//! upstream connection pool (few connections, more when a backend's stream limit is hit).
//!
//! Backends that must misbehave in ways the demo backend cannot (refuse every stream,
//! answer UNAVAILABLE to everyone) are raw `h2` servers defined here; upstream
//! connections are counted by a TCP forwarder put between the proxy and a backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{OneCluster, TestProxy, WAIT, address_list, served_by, simple_config, start_proxy};
use rpcgate_demo::pb::helloworld::{HelloRequest, greeter_client::GreeterClient};
use rpcgate_demo::{BackendHandle, BackendOptions, meta, spawn_backend, spawn_backend_on};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tonic::transport::Channel;
use tonic::{Code, Status};

type Client = GreeterClient<Channel>;

/// A SayHello request carrying the given metadata.
fn hello(metadata: &[(&'static str, &str)]) -> tonic::Request<HelloRequest> {
    let mut request = tonic::Request::new(HelloRequest { name: "Ann".into() });
    for (key, value) in metadata {
        request.metadata_mut().insert(*key, value.parse().unwrap());
    }
    request
}

/// One SayHello call, bounded; `Ok` names the backend that served it.
async fn call(client: &mut Client, metadata: &[(&'static str, &str)]) -> Result<String, Status> {
    let reply = timeout(WAIT, client.say_hello(hello(metadata)))
        .await
        .expect("call timed out")?;
    Ok(served_by(reply.metadata()))
}

/// `n` concurrent calls over `channel`, each held `delay_ms` by the backend; each task's
/// result names the backend that served it.
fn spawn_calls(
    channel: &Channel,
    n: usize,
    delay_ms: &'static str,
) -> Vec<JoinHandle<Result<String, Status>>> {
    (0..n)
        .map(|_| {
            let mut client = Client::new(channel.clone());
            tokio::spawn(async move { call(&mut client, &[(meta::DELAY_MS, delay_ms)]).await })
        })
        .collect()
}

/// Asserts that every call of `calls` succeeded on `backend`.
async fn all_served_by(calls: Vec<JoinHandle<Result<String, Status>>>, backend: &str) {
    for task in calls {
        assert_eq!(task.await.unwrap().unwrap(), backend);
    }
}

/// Loopback listener on port 0.
async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// What a raw h2 backend does with every stream.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// RST_STREAM(REFUSED_STREAM): the stream was not processed.
    Refuse,
    /// A trailers-only gRPC response with this `grpc-status`.
    Status(u32),
}

/// A server on `127.0.0.1:0` that counts something (streams, connections) and stops
/// when dropped.
struct CountingServer {
    addr: SocketAddr,
    count: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for CountingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves each accepted connection with `serve` in a task of its own, handing it the
/// server's counter.
async fn counting_server<F, Fut>(serve: F) -> CountingServer
where
    F: Fn(TcpStream, Arc<AtomicU64>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(serve(tcp, counter.clone()));
        }
    });
    CountingServer { addr, count, task }
}

/// A raw `h2` server that treats every stream the same way and counts the streams.
async fn raw_backend(behaviour: Behaviour) -> CountingServer {
    counting_server(move |tcp, streams| async move {
        let Ok(mut conn) = h2::server::handshake(tcp).await else {
            return;
        };
        while let Some(Ok((_request, mut respond))) = conn.accept().await {
            streams.fetch_add(1, Ordering::SeqCst);
            match behaviour {
                Behaviour::Refuse => respond.send_reset(h2::Reason::REFUSED_STREAM),
                Behaviour::Status(code) => {
                    let response = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", code.to_string())
                        .header("grpc-message", "raw backend")
                        .header(meta::BACKEND, "raw")
                        .body(())
                        .unwrap();
                    let _ = respond.send_response(response, true);
                }
            }
        }
    })
    .await
}

/// A TCP forwarder in front of a backend that counts the connections made through it,
/// i.e. the proxy's upstream connections to that backend.
async fn counting_forward(target: SocketAddr) -> CountingServer {
    counting_server(move |mut inbound, accepted| async move {
        accepted.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut outbound) = TcpStream::connect(target).await {
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        }
    })
    .await
}

/// A config whose only cluster lists these addresses, with extra cluster keys.
fn config_for(addresses: &[SocketAddr], cluster_extra: &str) -> String {
    OneCluster::new(address_list(addresses))
        .cluster(cluster_extra)
        .build()
}

/// A backend killed while calls run over one client connection fails at most the calls
/// that were on it; every call started after the kill succeeds on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_fails_no_later_call() {
    let b1 = spawn_backend("b1").await.unwrap();
    let b2 = spawn_backend("b2").await.unwrap();
    let b3 = spawn_backend("b3").await.unwrap();
    let proxy = start_proxy(&simple_config(&[&b1, &b2, &b3], ""));
    let channel = proxy.channel().await;

    const WORKERS: usize = 8;
    const CALLS_EACH: usize = 30;
    let mut load = Vec::new();
    for _ in 0..WORKERS {
        let mut client = Client::new(channel.clone());
        load.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..CALLS_EACH {
                let started = Instant::now();
                let result = call(&mut client, &[(meta::DELAY_MS, "15")]).await;
                results.push((started, result));
            }
            results
        }));
    }
    timeout(WAIT, b2.wait_until(|b| b.calls() >= 5))
        .await
        .expect("b2 never got calls");
    b2.kill().await;
    let killed = Instant::now();
    let b2_calls = b2.calls();

    let mut later = 0;
    let mut failed_before = 0;
    for task in load {
        for (started, result) in timeout(WAIT, task).await.unwrap().unwrap() {
            if started >= killed {
                later += 1;
                let backend = result.unwrap_or_else(|status| {
                    panic!("a call started after the kill failed: {status:?}")
                });
                assert_ne!(backend, "b2", "a call went to the killed backend");
            } else if result.is_err() {
                failed_before += 1;
            }
        }
    }
    assert!(later >= 50, "only {later} calls ran after the kill");
    assert!(
        failed_before <= WORKERS,
        "{failed_before} calls failed, more than were in flight"
    );
    assert_eq!(b2.calls(), b2_calls, "the killed backend got calls");
    proxy.shutdown().await;
}

/// NGINX passive health: `max_fails = 3` UNAVAILABLE answers eject an endpoint, which
/// then gets no calls for `fail_timeout`.
#[tokio::test]
async fn unavailable_answers_eject_after_max_fails() {
    let good = spawn_backend("good").await.unwrap();
    let bad = raw_backend(Behaviour::Status(14)).await;
    let proxy = start_proxy(&config_for(
        &[good.addr(), bad.addr],
        r#"passive_health = { max_fails = 3, fail_timeout = "60s" }"#,
    ));
    let mut client = Client::new(proxy.channel().await);
    let mut unavailable = 0;
    for _ in 0..30 {
        match call(&mut client, &[]).await {
            Ok(backend) => assert_eq!(backend, "good"),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert_eq!(status.message(), "raw backend", "{status:?}");
                unavailable += 1;
            }
        }
    }
    assert_eq!(unavailable, 3);
    assert_eq!(bad.count.load(Ordering::SeqCst), 3);
    assert_eq!(good.calls(), 27);
    proxy.shutdown().await;
}

/// Application errors (NOT_FOUND here) are the backend working: they never eject it.
#[tokio::test]
async fn application_errors_never_eject() {
    let b1 = spawn_backend("b1").await.unwrap();
    let b2 = spawn_backend("b2").await.unwrap();
    let proxy = start_proxy(&simple_config(
        &[&b1, &b2],
        r#"passive_health = { max_fails = 3, fail_timeout = "60s" }"#,
    ));
    let mut client = Client::new(proxy.channel().await);
    for _ in 0..20 {
        let status = call(&mut client, &[(meta::FAIL_CODE, "5")])
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    assert_eq!((b1.calls(), b2.calls()), (10, 10));
    let mut served = vec![
        call(&mut client, &[]).await.unwrap(),
        call(&mut client, &[]).await.unwrap(),
    ];
    served.sort();
    assert_eq!(served, ["b1", "b2"]);
    proxy.shutdown().await;
}

/// When every endpoint is down, calls still spread over all of them (panic mode) rather
/// than being refused by the proxy.
#[tokio::test]
async fn all_endpoints_down_spreads_calls_over_all() {
    let b1 = spawn_backend("b1").await.unwrap();
    let b2 = spawn_backend("b2").await.unwrap();
    let b3 = spawn_backend("b3").await.unwrap();
    let proxy = start_proxy(&simple_config(
        &[&b1, &b2, &b3],
        r#"passive_health = { max_fails = 1, fail_timeout = "60s" }"#,
    ));
    let mut client = Client::new(proxy.channel().await);
    for _ in 0..30 {
        let status = call(&mut client, &[(meta::FAIL_CODE, "14")])
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        // The backend's own failure, not the proxy's "no healthy endpoint".
        assert_eq!(status.message(), "requested failure", "{status:?}");
    }
    let counts = [b1.calls(), b2.calls(), b3.calls()];
    assert_eq!(counts.iter().sum::<u64>(), 30);
    assert!(
        counts.iter().all(|&n| n >= 6),
        "panic mode did not spread: {counts:?}"
    );
    proxy.shutdown().await;
}

/// A stream refused with REFUSED_STREAM never reached the application: the proxy retries
/// it on another endpoint without any retry config, and the client sees no error.
#[tokio::test]
async fn refused_stream_is_retried_transparently() {
    let refuser = raw_backend(Behaviour::Refuse).await;
    let good = spawn_backend("good").await.unwrap();
    // max_fails = 0: health stays out of it, so every round-robin turn of the refuser
    // exercises the retry.
    let proxy = start_proxy(&config_for(
        &[refuser.addr, good.addr()],
        "passive_health = { max_fails = 0 }",
    ));
    let mut client = Client::new(proxy.channel().await);
    for _ in 0..10 {
        assert_eq!(call(&mut client, &[]).await.unwrap(), "good");
    }
    assert_eq!(good.calls(), 10);
    assert!(
        refuser.count.load(Ordering::SeqCst) >= 4,
        "the refusing backend saw {} streams",
        refuser.count.load(Ordering::SeqCst)
    );
    proxy.shutdown().await;
}

/// A backend shutting down gracefully (GOAWAY) while the proxy holds pooled connections
/// to it: calls in flight on it finish, and no call fails during or after the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_from_a_backend_fails_no_call() {
    let b1 = spawn_backend("b1").await.unwrap();
    let b2 = Arc::new(spawn_backend("b2").await.unwrap());
    let proxy = start_proxy(&simple_config(&[&b1, &b2], ""));
    let channel = proxy.channel().await;
    let mut client = Client::new(channel.clone());
    // Warm the pool: the proxy now holds a connection to each.
    for _ in 0..4 {
        call(&mut client, &[]).await.unwrap();
    }
    assert_eq!((b1.calls(), b2.calls()), (2, 2));

    // Slow calls in flight on both backends when b2 starts draining.
    let slow = spawn_calls(&channel, 4, "400");
    timeout(WAIT, b2.wait_until(|b| b.in_flight() >= 2))
        .await
        .unwrap();
    let draining = {
        let b2 = b2.clone();
        tokio::spawn(async move { b2.shutdown().await })
    };
    // Calls during the drain.
    for _ in 0..20 {
        call(&mut client, &[]).await.unwrap();
    }
    for task in slow {
        let served = task.await.unwrap().unwrap();
        assert!(served == "b1" || served == "b2");
    }
    timeout(WAIT, draining).await.unwrap().unwrap();
    // After the drain: everything on b1.
    let b2_calls = b2.calls();
    for _ in 0..10 {
        assert_eq!(call(&mut client, &[]).await.unwrap(), "b1");
    }
    assert_eq!(b2.calls(), b2_calls);
    proxy.shutdown().await;
}

/// Calls are multiplexed: 50 concurrent calls from one client connection reach a backend
/// over one pooled upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_one_upstream_connection() {
    let backend = spawn_backend("b1").await.unwrap();
    let forward = counting_forward(backend.addr()).await;
    let proxy = start_proxy(&config_for(&[forward.addr], ""));
    let channel = proxy.channel().await;
    let calls = spawn_calls(&channel, 50, "300");
    timeout(WAIT, backend.wait_until(|b| b.in_flight() >= 50))
        .await
        .expect("the 50 calls were never in flight together");
    all_served_by(calls, "b1").await;
    assert_eq!(forward.count.load(Ordering::SeqCst), 1);
    proxy.shutdown().await;
}

/// A backend `b1` allowing 2 streams per connection, behind a counting forwarder, and a
/// proxy in front of that.
async fn two_stream_backend() -> (BackendHandle, CountingServer, TestProxy) {
    let backend = spawn_backend_on(
        bind().await,
        BackendOptions::new("b1").max_concurrent_streams(2),
    )
    .await
    .unwrap();
    let forward = counting_forward(backend.addr()).await;
    let proxy = start_proxy(&config_for(&[forward.addr], ""));
    (backend, forward, proxy)
}

/// A backend that allows 2 streams per connection: 10 concurrent slow calls make the
/// proxy open more connections instead of queueing, so all 10 run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limit_opens_more_upstream_connections() {
    let (backend, forward, proxy) = two_stream_backend().await;
    let channel = proxy.channel().await;
    let calls = spawn_calls(&channel, 10, "2500");
    // Queued calls would only start as others end, 2.5 s later.
    let together = timeout(
        Duration::from_millis(2000),
        backend.wait_until(|b| b.in_flight() >= 10),
    )
    .await;
    let in_flight = backend.in_flight();
    all_served_by(calls, "b1").await;
    assert!(
        together.is_ok(),
        "only {in_flight} of 10 calls were in flight together: the proxy queued them"
    );
    assert!(
        forward.count.load(Ordering::SeqCst) >= 5,
        "{} upstream connections for 10 streams at 2 per connection",
        forward.count.load(Ordering::SeqCst)
    );
    proxy.shutdown().await;
}

/// Same with the pool warm (the backend's SETTINGS already known).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limit_opens_more_connections_when_warm() {
    let (backend, forward, proxy) = two_stream_backend().await;
    let channel = proxy.channel().await;
    call(&mut Client::new(channel.clone()), &[]).await.unwrap();
    let calls = spawn_calls(&channel, 10, "2500");
    let together = timeout(
        Duration::from_millis(2000),
        backend.wait_until(|b| b.in_flight() >= 10),
    )
    .await;
    let in_flight = backend.in_flight();
    all_served_by(calls, "b1").await;
    assert!(
        together.is_ok(),
        "only {in_flight} of 10 calls were in flight together: the proxy queued them"
    );
    assert!(forward.count.load(Ordering::SeqCst) >= 5);
    proxy.shutdown().await;
}
