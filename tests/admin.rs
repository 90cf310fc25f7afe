//! The admin API (contract §5) on a real proxy: every endpoint over HTTP/1.1 and h2c, the
//! metric values after known calls (codes per route and method, per endpoint, retries,
//! the breaker, connections, reloads), `/status` with an endpoint that is down and why,
//! and what clients read in proxy-made errors.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use common::{OneCluster, bounded, dead_address, hello, start_proxy, with_meta};
use rpcgate_demo::meta;
use rpcgate_demo::pb::helloworld::greeter_client::GreeterClient;
use tonic::Code;

const SAY_HELLO: [(&str, &str); 2] = [
    ("grpc_service", "helloworld.Greeter"),
    ("grpc_method", "SayHello"),
];

#[tokio::test]
async fn every_endpoint_answers_over_http1_and_h2c() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let proxy = start_proxy(&OneCluster::backends(&[&backend]).admin().build());

    assert_eq!(proxy.admin_get("/healthz").await, (200, "ok\n".into()));
    assert_eq!(proxy.admin_get("/ready").await, (200, "ready\n".into()));
    let (code, page) = proxy.admin_get("/").await;
    assert_eq!(code, 200);
    assert!(
        page.contains("<title>") && page.contains("status"),
        "{page}"
    );
    let (code, body) = proxy.admin_get("/nope").await;
    assert_eq!(code, 404);
    assert!(body.contains("/metrics"), "{body}");

    let (parts, body) = common::http::http1_get(proxy.admin(), "/metrics", &[]).await;
    assert_eq!(
        parts.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        body.contains("# TYPE rpcgate_requests_total counter"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE rpcgate_request_duration_seconds histogram"),
        "{body}"
    );

    let status = proxy.status().await;
    assert_eq!(status["generation"], 1);
    assert_eq!(status["ready"], true);
    assert_eq!(status["listeners"][0]["name"], "edge");
    assert_eq!(status["listeners"][0]["tls"], false);
    assert_eq!(status["clusters"][0]["name"], "main");
    assert_eq!(status["clusters"][0]["lb"], "round_robin");
    assert_eq!(status["clusters"][0]["circuit"], "off");
    let endpoint = &status["clusters"][0]["endpoints"][0];
    assert_eq!(endpoint["address"], backend.addr().to_string());
    assert_eq!(endpoint["healthy"], true);
    assert_eq!(endpoint["passive"], "ok");
    assert_eq!(endpoint["active"], "off");
    assert!(endpoint["down_reason"].is_null());
    for key in ["version", "loaded_at", "uptime_s", "routes"] {
        assert!(!status[key].is_null(), "{key} missing: {status}");
    }

    // h2c with prior knowledge on the same port.
    let conn = common::raw_h2::raw_connect(proxy.admin()).await;
    let request = http::Request::get(format!("http://{}/healthz", proxy.admin()))
        .body(())
        .unwrap();
    let (response, _) = conn.send.clone().send_request(request, true).unwrap();
    let response = bounded(response).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = common::http::collect_h2(response.into_body()).await;
    assert_eq!(&body[..], b"ok\n");

    // Writes are refused.
    let post = http::Request::post("/status")
        .header("host", proxy.admin().to_string())
        .body(String::new())
        .unwrap();
    let (parts, _) = common::http::http1_request(proxy.admin(), post).await;
    assert_eq!(parts.status, 405);
    proxy.shutdown().await;
}

#[tokio::test]
async fn without_admin_nothing_listens() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let proxy = start_proxy(&OneCluster::backends(&[&backend]).build());
    assert!(proxy.handle.as_ref().unwrap().admin_addr().is_none());
    proxy.shutdown().await;
}

#[tokio::test]
async fn metrics_count_calls_by_code_endpoint_and_retry() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let config = OneCluster::backends(&[&b1, &b2])
        .admin()
        .route("name = \"hello\"\nretry = { max_attempts = 2, on = [\"unavailable\"], base_interval = \"1ms\" }")
        .cluster("passive_health = { max_fails = 0 }")
        .build();
    let proxy = start_proxy(&config);
    let mut client = GreeterClient::new(proxy.channel().await);
    for _ in 0..4 {
        bounded(client.say_hello(hello("ok"))).await.unwrap();
    }
    for _ in 0..2 {
        let request = with_meta(hello("nf"), &[(meta::FAIL_CODE, "5")]);
        let status = bounded(client.say_hello(request)).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    // One UNAVAILABLE attempt, retried once, then OK.
    let request = with_meta(
        hello("flaky"),
        &[(meta::FAIL_CODE, "14"), (meta::FAIL_ATTEMPTS, "1")],
    );
    bounded(client.say_hello(request)).await.unwrap();

    let labels = |code: &'static str| {
        let mut l = vec![
            ("listener", "edge"),
            ("route", "hello"),
            ("cluster", "main"),
        ];
        l.extend(SAY_HELLO);
        l.push(("grpc_code", code));
        l
    };
    assert_eq!(
        proxy.metric("rpcgate_requests_total", &labels("OK")).await,
        Some(5.0)
    );
    assert_eq!(
        proxy
            .metric("rpcgate_requests_total", &labels("NOT_FOUND"))
            .await,
        Some(2.0)
    );
    assert_eq!(
        proxy
            .metric("rpcgate_requests_total", &labels("UNAVAILABLE"))
            .await,
        None
    );
    assert_eq!(
        proxy
            .metric(
                "rpcgate_request_duration_seconds_count",
                &[("route", "hello"), SAY_HELLO[1]]
            )
            .await,
        Some(7.0)
    );
    assert_eq!(
        proxy
            .metric("rpcgate_retries_total", &[("route", "hello")])
            .await,
        Some(1.0)
    );
    // Per endpoint: 8 attempts in all, the failed one UNAVAILABLE; round robin spreads them.
    let mut attempts = 0.0;
    let mut unavailable = 0.0;
    for backend in [&b1, &b2] {
        let address = backend.addr().to_string();
        let endpoint = [("cluster", "main"), ("endpoint", address.as_str())];
        let count = |code| {
            let mut l = endpoint.to_vec();
            l.push(("grpc_code", code));
            l
        };
        let ok = proxy
            .metric("rpcgate_upstream_requests_total", &count("OK"))
            .await
            .unwrap_or(0.0);
        assert!(ok >= 2.0, "{address}: {ok} OK attempts");
        attempts += ok;
        for code in ["NOT_FOUND", "UNAVAILABLE"] {
            let n = proxy
                .metric("rpcgate_upstream_requests_total", &count(code))
                .await
                .unwrap_or(0.0);
            attempts += n;
            if code == "UNAVAILABLE" {
                unavailable += n;
            }
        }
        assert_eq!(
            proxy.metric("rpcgate_endpoint_healthy", &endpoint).await,
            Some(1.0)
        );
        assert_eq!(
            proxy
                .metric("rpcgate_upstream_request_duration_seconds_count", &endpoint)
                .await,
            Some(f64::from(u32::try_from(backend.calls()).unwrap()))
        );
    }
    assert_eq!((attempts, unavailable), (8.0, 1.0));
    assert_eq!(b1.calls() + b2.calls(), 8);

    assert_eq!(
        proxy
            .metric("rpcgate_connections_active", &[("listener", "edge")])
            .await,
        Some(1.0)
    );
    assert_eq!(
        proxy
            .metric("rpcgate_connections_total", &[("listener", "edge")])
            .await,
        Some(1.0)
    );
    // A reload that takes effect, and one that is refused.
    assert_eq!(
        proxy
            .metric("rpcgate_config_reloads_total", &[("result", "ok")])
            .await,
        Some(0.0)
    );
    assert_eq!(proxy.swap(&config), 2);
    // A listener address that is taken (by a backend) cannot be bound: refused.
    let taken = config.replace(
        "address = \"127.0.0.1:0\"\n\n",
        &format!("address = \"{}\"\n\n", b1.addr()),
    );
    let taken = taken.replacen(
        "name = \"edge\"\naddress = \"127.0.0.1:0\"",
        &format!("name = \"edge\"\naddress = \"{}\"", b1.addr()),
        1,
    );
    let parsed = rpcgate_config::parse(&taken, "t.toml").unwrap();
    assert!(proxy.handle.as_ref().unwrap().swap_config(&parsed).is_err());
    assert_eq!(
        proxy
            .metric("rpcgate_config_reloads_total", &[("result", "ok")])
            .await,
        Some(1.0)
    );
    assert_eq!(
        proxy
            .metric("rpcgate_config_reloads_total", &[("result", "error")])
            .await,
        Some(1.0)
    );
    assert_eq!(
        proxy.metric("rpcgate_config_generation", &[]).await,
        Some(2.0)
    );
    // The counters carry over the reload.
    assert_eq!(
        proxy.metric("rpcgate_requests_total", &labels("OK")).await,
        Some(5.0)
    );
    let status = proxy.status().await;
    assert_eq!(status["routes"][0]["name"], "hello");
    assert_eq!(status["routes"][0]["retries"], 1);
    assert_eq!(
        proxy.metric("rpcgate_access_log_dropped_total", &[]).await,
        Some(0.0)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_breaker_state_and_its_transitions_are_exported() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let config = OneCluster::backends(&[&backend])
        .admin()
        .cluster("passive_health = { max_fails = 0 }\ncircuit_breaker = { failure_ratio = 1.0, min_requests = 2, open_duration = \"1m\", half_open_requests = 1 }")
        .build();
    let proxy = start_proxy(&config);
    assert_eq!(
        proxy
            .metric("rpcgate_circuit_state", &[("cluster", "main")])
            .await,
        Some(0.0)
    );
    let mut client = GreeterClient::new(proxy.channel().await);
    for _ in 0..2 {
        let request = with_meta(hello("x"), &[(meta::FAIL_CODE, "14")]);
        bounded(client.say_hello(request)).await.unwrap_err();
    }
    let refused = bounded(client.say_hello(hello("y"))).await.unwrap_err();
    assert!(refused.message().contains("circuit breaker"), "{refused:?}");
    assert_eq!(
        proxy
            .metric("rpcgate_circuit_state", &[("cluster", "main")])
            .await,
        Some(1.0)
    );
    assert_eq!(
        proxy
            .metric(
                "rpcgate_circuit_transitions_total",
                &[("cluster", "main"), ("to", "open")]
            )
            .await,
        Some(1.0)
    );
    let status = proxy.status().await;
    assert_eq!(status["clusters"][0]["circuit"], "open");
    // The refused call is counted with its code, and no backend saw it.
    let mut labels = vec![("cluster", "main"), ("grpc_code", "UNAVAILABLE")];
    labels.extend(SAY_HELLO);
    assert_eq!(
        proxy.metric("rpcgate_requests_total", &labels).await,
        Some(3.0)
    );
    assert_eq!(backend.calls(), 2);
    proxy.shutdown().await;
}

/// A dead endpoint is ejected: `/status` and `/metrics` say it is down and why, and the
/// client's message names the cluster but not the address (unless `client_error_detail =
/// "full"`).
#[tokio::test]
async fn a_dead_endpoint_shows_as_down_with_its_reason() {
    let live = rpcgate_demo::spawn_backend("live").await.unwrap();
    let dead = dead_address();
    let endpoints = format!("\"{}\", \"{dead}\"", live.addr());
    let config = OneCluster::new(endpoints)
        .admin()
        .cluster("passive_health = { max_fails = 1, fail_timeout = \"1m\" }")
        .build();
    let proxy = start_proxy(&config);
    let mut client = GreeterClient::new(proxy.channel().await);
    for _ in 0..4 {
        bounded(client.say_hello(hello("x"))).await.unwrap();
    }
    let status = proxy.status().await;
    let endpoints = status["clusters"][0]["endpoints"].as_array().unwrap();
    let down = endpoints
        .iter()
        .find(|e| e["address"] == dead.to_string())
        .unwrap();
    assert_eq!(down["healthy"], false, "{down}");
    assert_eq!(down["passive"], "ejected");
    let reason = down["down_reason"].as_str().unwrap();
    assert!(
        reason.contains("passive health") && reason.contains("connect_failed"),
        "{reason}"
    );
    assert_eq!(down["ejections"], 1);
    let dead_text = dead.to_string();
    assert_eq!(
        proxy
            .metric(
                "rpcgate_endpoint_healthy",
                &[("endpoint", dead_text.as_str())]
            )
            .await,
        Some(0.0)
    );
    assert_eq!(
        proxy
            .metric(
                "rpcgate_endpoint_ejections_total",
                &[("endpoint", dead_text.as_str())]
            )
            .await,
        Some(1.0)
    );
    proxy.shutdown().await;

    // Alone, the dead endpoint's failure reaches the client: cluster yes, address no.
    for (detail, shows_address) in [("reason", false), ("full", true)] {
        let config = OneCluster::new(format!("\"{dead}\""))
            .log(format!(
                "access_log = \"off\"\nclient_error_detail = \"{detail}\""
            ))
            .build();
        let proxy = start_proxy(&config);
        let mut client = GreeterClient::new(proxy.channel().await);
        let status = bounded(client.say_hello(hello("x"))).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        let message = status.message();
        assert!(message.contains("cluster main"), "{detail}: {message}");
        assert_eq!(
            message.contains(&dead_text),
            shows_address,
            "{detail}: {message}"
        );
        proxy.shutdown().await;
    }
}

/// While the proxy drains (a call still in flight after shutdown began), `/ready` answers
/// 503 and the admin API stays up; the call finishes.
#[tokio::test]
async fn ready_turns_503_while_draining() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let mut proxy = start_proxy(&OneCluster::backends(&[&backend]).admin().build());
    let admin = proxy.admin();
    let mut client = GreeterClient::new(proxy.channel().await);
    let slow = tokio::spawn(async move {
        let request = with_meta(hello("slow"), &[(meta::DELAY_MS, "1500")]);
        client.say_hello(request).await
    });
    backend.wait_until(|b| b.in_flight() == 1).await;
    let handle = proxy.handle.take().unwrap();
    let draining = tokio::spawn(handle.shutdown());
    let get_ready = || async {
        let (parts, _) = common::http::http1_get(admin, "/ready", &[]).await;
        parts.status.as_u16()
    };
    bounded(async {
        while get_ready().await != 503 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let reply = bounded(slow).await.unwrap().unwrap();
    assert_eq!(common::served_by(reply.metadata()), "b1");
    bounded(draining).await.unwrap();
}

/// Histogram buckets are cumulative, and `+Inf` equals `_count` (the Prometheus contract
/// that `histogram_quantile` relies on).
#[tokio::test]
async fn histogram_buckets_are_cumulative() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let proxy = start_proxy(&OneCluster::backends(&[&backend]).admin().build());
    let mut client = GreeterClient::new(proxy.channel().await);
    for _ in 0..3 {
        bounded(client.say_hello(hello("x"))).await.unwrap();
    }
    let (_, body) = proxy.admin_get("/metrics").await;
    let buckets: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with("rpcgate_request_duration_seconds_bucket{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 17, "{body}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(buckets[16], 3.0, "{body}");
    assert!(
        body.contains("rpcgate_request_duration_seconds_bucket{listener=\"edge\",route=\"edge/0\",cluster=\"main\",grpc_service=\"helloworld.Greeter\",grpc_method=\"SayHello\",le=\"+Inf\"} 3"),
        "{body}"
    );
    proxy.shutdown().await;
}
