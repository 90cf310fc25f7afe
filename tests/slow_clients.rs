//! Slow and silent clients (slowloris): the time from accept to the first request is a
//! *total* deadline, so a client that sends nothing, or dribbles its preface a byte at a
//! time, cannot hold a connection slot.
//!
//! Every test runs the proxy on the test's runtime with tokio's paused clock
//! ([`common::start_local_proxy`]): the 10 s deadline is checked to the millisecond and
//! takes no wall-clock time.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use rpcgate_demo::pb::helloworld::{HelloRequest, greeter_client::GreeterClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the proxy closes the connection (EOF or reset); panics after `bound`.
async fn wait_closed(stream: &mut TcpStream, bound: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match timeout(bound, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the proxy kept a silent connection open for {bound:?}"),
        }
    }
}

fn config_with_idle(backend: &rpcgate_demo::BackendHandle, idle: Option<&str>) -> String {
    let config = common::OneCluster::backends(&[backend]);
    match idle {
        Some(idle) => config
            .listener(format!("idle_timeout = \"{idle}\""))
            .build(),
        None => config.build(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_connection_is_closed_and_others_are_served() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let proxy = common::start_local_proxy(&config_with_idle(&backend, Some("300ms")));
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    // Meanwhile a real client is served.
    let mut client = GreeterClient::new(proxy.channel().await);
    client
        .say_hello(HelloRequest { name: "a".into() })
        .await
        .unwrap();
    let took = wait_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "closed only after {took:?}");
    assert!(
        took < Duration::from_millis(350),
        "closed only after {took:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_dribbled_preface_does_not_reset_the_clock() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let proxy = common::start_local_proxy(&config_with_idle(&backend, Some("300ms")));
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    let start = Instant::now();
    // One byte every 100 ms: the whole preface would take 2.4 s, far past the deadline.
    let mut closed_while_dribbling = false;
    for byte in PREFACE {
        if slow.write_all(&[*byte]).await.is_err() {
            closed_while_dribbling = true;
            break;
        }
        let mut buf = [0u8; 64];
        match timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_while_dribbling = true;
                break;
            }
            _ => {}
        }
    }
    assert!(
        closed_while_dribbling,
        "the proxy waited for the whole dribbled preface"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    proxy.shutdown().await;
}

/// With the default 5-minute idle timeout, the first-request deadline (10 s) still holds.
#[tokio::test(start_paused = true)]
async fn the_first_request_deadline_holds_with_default_idle_timeout() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let proxy = common::start_local_proxy(&config_with_idle(&backend, None));
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    silent.write_all(PREFACE).await.unwrap();
    let took = wait_closed(&mut silent, Duration::from_secs(20)).await;
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "closed after {took:?}, expected about 10 s"
    );
    // On the paused clock the deadline is exact.
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_millis(10_050),
        "closed after {took:?}, expected 10 s"
    );
    proxy.shutdown().await;
}

/// A connection that has made a call is not cut by the first-request deadline: only the
/// idle timeout applies to it. A raw HTTP/2 client shows it is the same connection (a
/// tonic channel would silently reconnect).
#[tokio::test(start_paused = true)]
async fn a_connection_that_made_a_call_is_left_to_the_idle_timeout() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let proxy = common::start_local_proxy(&config_with_idle(&backend, Some("1s")));
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(connection);
    let call = |send: h2::client::SendRequest<bytes::Bytes>| async move {
        let request = http::Request::post(format!("http://{}/nothing.Here/Call", proxy.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let mut send = send.ready().await.unwrap();
        let (response, _) = send.send_request(request, true).unwrap();
        let response = response.await.unwrap();
        // No route: a trailers-only UNIMPLEMENTED from the proxy itself.
        assert_eq!(response.headers()["grpc-status"], "12");
    };
    call(send.clone()).await;
    // Past the first-request deadline (min(10 s, idle 1 s) = 1 s), with a call every
    // 400 ms the connection stays open.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        call(send.clone()).await;
    }
    assert!(!driver.is_finished(), "the connection was closed");
    driver.abort();
    proxy.shutdown().await;
}

/// Clients that stop taking a server stream's bytes (their HTTP/2 windows stay shut) are
/// closed after `send_timeout` of no progress, between 1× and 1.25× of it; the backend
/// streams, held by the proxy's back-pressure until then, are cancelled; memory stays
/// bounded meanwhile; a fresh client is served.
#[tokio::test(start_paused = true)]
async fn clients_that_stop_reading_are_cut_after_send_timeout() {
    use rpcgate_demo::pb::helloworld::HelloStreamRequest;
    const CLIENTS: u64 = 8;
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let dir = common::files::TempDir::new("send-timeout");
    let log = dir.0.join("access.log");
    let config = common::OneCluster::backends(&[&backend])
        .listener("send_timeout = \"4s\"")
        .log(format!(
            "access_log = {}\nformat = \"json\"",
            common::files::toml_path(&log)
        ))
        .build();
    let proxy = common::start_local_proxy(&config);
    let rss = common::rss::RssPeak::start();
    let mut drivers = Vec::new();
    let mut unread = Vec::new();
    for _ in 0..CLIENTS {
        let tcp = TcpStream::connect(proxy.addr).await.unwrap();
        let (send, connection) = h2::client::handshake(tcp).await.unwrap();
        drivers.push(tokio::spawn(connection));
        let request =
            common::raw_h2::grpc_request(proxy.addr, "/helloworld.Greeter/SayHelloStream", &[]);
        let mut send = send.ready().await.unwrap();
        let (response, mut body) = send.send_request(request, false).unwrap();
        // 10 000 replies of 10 KB: far more than the windows on the way hold.
        let message = HelloStreamRequest {
            name: "x".repeat(10_000),
            count: 10_000,
            interval_ms: 0,
        };
        body.send_data(common::raw_h2::grpc_frame(&message), true)
            .unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        // Never read: the body's window stays at its initial 64 KiB.
        unread.push(response.into_body());
    }
    let stalled = Instant::now();
    bounded_wait(&backend, |b| b.in_flight() == CLIENTS).await;
    // Each connection ends (its driver returns) when the proxy closes it.
    for driver in drivers {
        let _ = timeout(Duration::from_secs(30), driver)
            .await
            .expect("a stalled client was never cut");
    }
    let after = stalled.elapsed();
    assert!(
        after >= Duration::from_secs(4)
            && after <= Duration::from_secs(5) + Duration::from_millis(100),
        "cut after {after:?}"
    );
    // The backend streams the proxy held are cancelled.
    timeout(
        Duration::from_secs(5),
        backend.wait_until(|b| b.in_flight() == 0 && b.cancelled() == CLIENTS),
    )
    .await
    .expect("the backend's streams were not cancelled");
    let growth = rss.growth();
    assert!(growth < 96 * 1024, "RSS grew by {growth} KiB");
    // The access log says why each call ended (waiting on the writer thread in real time:
    // the paused clock would run a timeout out at once).
    let mut lines = Vec::new();
    for _ in 0..500 {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= CLIENTS as usize {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(lines.len(), CLIENTS as usize, "{lines:?}");
    for line in &lines {
        assert!(line.contains("\"reason\":\"send_timeout\""), "{line}");
    }
    // A fresh client is served.
    let mut client = GreeterClient::new(proxy.channel().await);
    let reply = timeout(
        Duration::from_secs(2),
        client.say_hello(HelloRequest { name: "Ann".into() }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(reply.get_ref().message, "Hello Ann from b1");
    drop(unread);
    proxy.shutdown().await;
}

/// Waits (bounded) for a backend condition.
async fn bounded_wait(
    backend: &rpcgate_demo::BackendHandle,
    condition: impl FnMut(&rpcgate_demo::BackendHandle) -> bool,
) {
    timeout(Duration::from_secs(5), backend.wait_until(condition))
        .await
        .expect("backend condition not reached");
}
