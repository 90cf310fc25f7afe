//! xDS for proxyless gRPC clients, with gRPC C-core's own xDS client (Python grpcio): a
//! client with the bootstrap `rpcgate bootstrap` prints and the target `xds:///NAME`
//! balances over the cluster's endpoints itself (no proxy hop); a listener's routes send
//! calls to their clusters; weights, ring hash, active health and reloads carry over.
//! Each client is a process of its own (one xDS client per process in gRPC).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;

use common::files::TempDir;
use common::interop::{repo_root, venv_python_or_skip};
use common::{OneCluster, TestProxy, start_proxy};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The bootstrap for `proxy`, written to a file.
fn bootstrap(proxy: &TestProxy, dir: &TempDir) -> PathBuf {
    let json = serde_json::json!({
        "xds_servers": [{
            "server_uri": proxy.admin().to_string(),
            "channel_creds": [{ "type": "insecure" }],
            "server_features": ["xds_v3"],
        }],
        "node": { "id": "xds-test", "locality": {} },
    });
    let path = dir.0.join("bootstrap.json");
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

/// A running `tests/interop/xds_client.py`.
struct XdsClient {
    _child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl XdsClient {
    fn start(python: &std::path::Path, bootstrap: &std::path::Path, target: &str) -> Self {
        let mut child = Command::new(python)
            .arg(repo_root().join("tests/interop/xds_client.py"))
            .arg(target)
            .env("GRPC_XDS_BOOTSTRAP", bootstrap)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            _child: child,
            stdin,
            stdout,
        }
    }

    /// Sends a command and reads its answer, bounded.
    async fn ask(&mut self, command: &str) -> serde_json::Value {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        let line =
            tokio::time::timeout(std::time::Duration::from_secs(60), self.stdout.next_line())
                .await
                .expect("the xDS client answers within 60 s")
                .unwrap()
                .expect("the xDS client is still running");
        serde_json::from_str(&line).unwrap()
    }

    /// `calls N [K=V…]`: who served them.
    async fn served(&mut self, command: &str) -> HashMap<String, u64> {
        let answer = self.ask(command).await;
        assert_eq!(answer["errors"], serde_json::json!({}), "{answer}");
        serde_json::from_value(answer["served"].clone()).unwrap()
    }

    /// One call for each of six users (`x-user`) at a time until who served them passes
    /// `done`, bounded by 20 s (`why` is the failure): for health changes, which show in
    /// the calls only.
    async fn until_users_served(
        &mut self,
        done: impl Fn(&std::collections::HashSet<String>) -> bool,
        why: &str,
    ) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let mut seen = std::collections::HashSet::new();
            for user in ["ann", "bob", "cid", "dan", "eve", "fay"] {
                let served = self.served(&format!("calls 1 x-user={user}")).await;
                seen.extend(served.into_keys());
            }
            if done(&seen) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{why}: {seen:?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// `want B1,B2`: waits until exactly those serve.
    async fn until_served_by(&mut self, want: &str) {
        let answer = self.ask(&format!("want {want}")).await;
        assert_eq!(
            answer["ok"], true,
            "never served by exactly {want}: {answer}"
        );
    }
}

/// The calls the proxy itself carried, over all clusters.
async fn proxied(proxy: &TestProxy) -> u64 {
    let status = proxy.status().await;
    status["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["endpoints"].as_array().unwrap().iter())
        .map(|e| e["requests"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxyless_client_balances_a_cluster_itself_and_follows_reloads() {
    let Some(python) = venv_python_or_skip("xDS") else {
        return;
    };
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let b3 = rpcgate_demo::spawn_backend("b3").await.unwrap();
    // A hung endpoint: it accepts connections and never answers. Active health finds it
    // out, so proxyless clients never call it.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let health = "active_health = { interval = \"100ms\", timeout = \"100ms\", unhealthy_threshold = 1, healthy_threshold = 1 }";
    let with_hung = format!(
        "{}, \"{}\"",
        common::endpoints(&[&b1, &b2]),
        hung.local_addr().unwrap()
    );
    let proxy = start_proxy(&OneCluster::new(with_hung).cluster(health).admin().build());
    let dir = TempDir::new("xds");
    let mut client = XdsClient::start(&python, &bootstrap(&proxy, &dir), "xds:///main");

    client.until_served_by("b1,b2").await;
    let served = client.served("calls 40").await;
    assert_eq!(served.values().sum::<u64>(), 40);
    assert!(served["b1"] > 5 && served["b2"] > 5, "{served:?}");
    // No proxy hop: the proxy carried none of it, and the backends saw the client itself.
    assert_eq!(proxied(&proxy).await, 0);
    let seen = b1.last_request().unwrap();
    assert!(
        seen.headers.get("x-forwarded-for").is_none(),
        "{:?}",
        seen.headers
    );

    // The admin API counts the stream and what was sent.
    assert_eq!(proxy.metric("rpcgate_xds_streams", &[]).await, Some(1.0));
    assert!(
        proxy
            .metric("rpcgate_xds_responses_total", &[])
            .await
            .unwrap()
            >= 3.0
    );
    assert_eq!(
        proxy.metric("rpcgate_xds_nacks_total", &[]).await,
        Some(0.0)
    );

    // A reload adds b3 and removes b1: the client follows.
    proxy.swap(
        &OneCluster::backends(&[&b2, &b3])
            .cluster(health)
            .admin()
            .build(),
    );
    client.until_served_by("b2,b3").await;
    drop(hung);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeouts_retries_and_a_reload_adding_a_cluster_carry_over() {
    let Some(python) = venv_python_or_skip("xDS") else {
        return;
    };
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let routes = |extra_route: &str, extra_cluster: &str| {
        format!(
            r#"[admin]
address = "127.0.0.1:0"
[log]
access_log = "off"
[[listeners]]
name = "edge"
address = "127.0.0.1:0"
{extra_route}
[[listeners.routes]]
match.service = "helloworld.Greeter"
cluster = "main"
timeout = "4s"
retry = {{ max_attempts = 3, on = ["unavailable"], base_interval = "10ms" }}
[[clusters]]
name = "main"
endpoints = ["{}"]
{extra_cluster}
"#,
            b1.addr()
        )
    };
    let proxy = start_proxy(&routes("", ""));
    let dir = TempDir::new("xds-policy");
    let mut client = XdsClient::start(&python, &bootstrap(&proxy, &dir), "xds:///edge");
    client.until_served_by("b1").await;

    // The route's timeout: a call the backend holds for 8 s ends by the route's 4 s, well
    // before the client's own 10 s. (gRPC C-core counts it from a clock it reads now and
    // then, so it may end up to a second or so early: the bound is loose on that side.)
    let slow = client.ask("calls 1 x-delay-ms=8000").await;
    assert_eq!(
        slow["errors"],
        serde_json::json!({"DEADLINE_EXCEEDED": 1}),
        "{slow}"
    );
    assert!(slow["ms"].as_u64().unwrap() < 6000, "{slow}");
    // The route's retry: a call whose first two attempts fail UNAVAILABLE succeeds.
    let flaky = client
        .served("calls 5 x-fail-code=14 x-fail-attempts=2 x-request-id=@unique")
        .await;
    assert_eq!(flaky, HashMap::from([("b1".to_owned(), 5)]));

    // A reload adds a cluster and a route to it: the running client takes both.
    proxy.swap(&routes(
        "[[listeners.routes]]\nmatch.headers = { \"x-route\" = \"red\" }\ncluster = \"red\"",
        &format!(
            "[[clusters]]\nname = \"red\"\nendpoints = [\"{}\"]",
            b2.addr()
        ),
    ));
    let mut red = HashMap::new();
    for _ in 0..100 {
        red = client.served("calls 5 x-route=red").await;
        if red.keys().all(|k| k == "b2") {
            break;
        }
    }
    assert_eq!(red, HashMap::from([("b2".to_owned(), 5)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listeners_routes_weights_ring_hash_and_active_health_carry_over() {
    let Some(python) = venv_python_or_skip("xDS") else {
        return;
    };
    let [b1, b2, b3, b4] = [
        rpcgate_demo::spawn_backend("b1").await.unwrap(),
        rpcgate_demo::spawn_backend("b2").await.unwrap(),
        rpcgate_demo::spawn_backend("b3").await.unwrap(),
        rpcgate_demo::spawn_backend("b4").await.unwrap(),
    ];
    // Calls with `x-route: blue` go to `blue` (b1 weight 1, b2 weight 3); other Greeter
    // calls to `sticky` (ring hash on x-user over b3 and b4, actively health-checked).
    let config = format!(
        r#"[admin]
address = "127.0.0.1:0"
[log]
access_log = "off"
[[listeners]]
name = "edge"
address = "127.0.0.1:0"
[[listeners.routes]]
match.headers = {{ "x-route" = "blue" }}
cluster = "blue"
[[listeners.routes]]
match.service = "helloworld.Greeter"
cluster = "sticky"
[[clusters]]
name = "blue"
endpoints = ["{}", {{ address = "{}", weight = 3 }}]
[[clusters]]
name = "sticky"
lb = "ring_hash"
hash_key = "header:x-user"
endpoints = ["{}", "{}"]
active_health = {{ interval = "100ms", timeout = "100ms", unhealthy_threshold = 1, healthy_threshold = 1 }}
"#,
        b1.addr(),
        b2.addr(),
        b3.addr(),
        b4.addr()
    );
    let proxy = start_proxy(&config);
    let dir = TempDir::new("xds-routes");
    let mut client = XdsClient::start(&python, &bootstrap(&proxy, &dir), "xds:///edge");

    // Routes: blue by header, the rest to sticky.
    let blue = client.served("calls 400 x-route=blue").await;
    assert!(blue.keys().all(|k| k == "b1" || k == "b2"), "{blue:?}");
    let ratio = blue["b2"] as f64 / blue["b1"] as f64;
    assert!((2.0..4.5).contains(&ratio), "weights 1:3 came out {blue:?}");

    // Ring hash: one user sticks to one backend.
    for user in ["ann", "bob", "cid"] {
        let sticky = client.served(&format!("calls 20 x-user={user}")).await;
        assert_eq!(sticky.len(), 1, "{user} moved: {sticky:?}");
        assert!(sticky.keys().all(|k| k == "b3" || k == "b4"), "{sticky:?}");
    }

    // Active health: b3 reports NOT_SERVING, then every user lands on b4; back, b3 serves
    // again for some user.
    // (Calls go on until the change shows: there is no event to wait on.)
    b3.set_serving(false).await;
    client
        .until_users_served(|seen| !seen.contains("b3"), "b3 kept getting calls")
        .await;
    b3.set_serving(true).await;
    client
        .until_users_served(|seen| seen.contains("b3"), "b3 never came back")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_from_discovery_reaches_proxyless_clients() {
    let Some(python) = venv_python_or_skip("xDS") else {
        return;
    };
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let dir = TempDir::new("xds-discovery");
    let file = dir.0.join("endpoints.json");
    std::fs::write(&file, format!("[\"{}\"]", b1.addr())).unwrap();
    let config = OneCluster::new("").admin().build().replace(
        "endpoints = []",
        &format!(
            "discovery = {{ file = {} }}",
            common::files::toml_path(&file)
        ),
    );
    let proxy = start_proxy(&config);
    let mut client = XdsClient::start(&python, &bootstrap(&proxy, &dir), "xds:///main");
    client.until_served_by("b1").await;
    // The file changes (no reload): the client follows.
    std::fs::write(&file, format!("[\"{}\", \"{}\"]", b1.addr(), b2.addr())).unwrap();
    client.until_served_by("b1,b2").await;
    std::fs::write(&file, format!("[\"{}\"]", b2.addr())).unwrap();
    client.until_served_by("b2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_marks_its_endpoints_unhealthy_for_proxyless_clients() {
    let Some(python) = venv_python_or_skip("xDS") else {
        return;
    };
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let breaker = "passive_health = { max_fails = 0 }\ncircuit_breaker = { failure_ratio = 0.5, min_requests = 4, window = \"10s\", open_duration = \"2s\" }";
    let proxy = start_proxy(
        &OneCluster::backends(&[&b1])
            .cluster(breaker)
            .admin()
            .build(),
    );
    let dir = TempDir::new("xds-breaker");
    let mut client = XdsClient::start(&python, &bootstrap(&proxy, &dir), "xds:///main");
    client.until_served_by("b1").await;
    // Calls through rpcgate fail UNAVAILABLE until its breaker opens.
    let mut greeter =
        rpcgate_demo::pb::helloworld::greeter_client::GreeterClient::new(proxy.channel().await);
    for _ in 0..4 {
        let request =
            common::with_meta(common::hello("f"), &[(rpcgate_demo::meta::FAIL_CODE, "14")]);
        let _ = greeter.say_hello(request).await;
    }
    let status = greeter.say_hello(common::hello("f")).await.unwrap_err();
    assert!(status.message().contains("circuit"), "{}", status.message());
    // Proxyless calls fail too while it is open (every endpoint UNHEALTHY), and come back
    // once its open period is over.
    client.until_served_by("-").await;
    client.until_served_by("b1").await;
}

#[tokio::test]
async fn with_xds_off_an_ads_call_says_so() {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let config = OneCluster::backends(&[&b1])
        .admin()
        .build()
        .replace("[admin]\n", "[admin]\nxds = false\n");
    let proxy = start_proxy(&config);
    let channel = common::connect(
        tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.admin())).unwrap(),
    )
    .await;
    let request = DiscoveryRequest {
        type_url: "type.googleapis.com/envoy.config.listener.v3.Listener".into(),
        resource_names: vec!["edge".into()],
        ..Default::default()
    };
    let status = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(futures_util::stream::iter([request]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert_eq!(
        status.message(),
        "xDS is off on this rpcgate ([admin] xds = false)"
    );
}
