//! The `rpcgate` binary's commands as a user runs them (contract §1): `check`, `run`,
//! `backend`, `demo`, with their output and exit codes, and SIGTERM handling.
//!
//! Processes are started from the built binary, stopped with `kill -TERM` (the `kill`
//! command, so no signal crate is needed), and every wait is bounded; a process still
//! running when a test ends is killed by its guard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{Running, WAIT, free_addr, rpcgate, say_hello, scratch, text};
use tonic::transport::Endpoint;

/// Writes a config file for this test under cargo's scratch directory.
fn config_file(name: &str, text: &str) -> PathBuf {
    let dir = scratch("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `rpcgate SUBCOMMAND -c CONFIG`, run to its end.
fn with_config(subcommand: &str, config: &Path) -> Output {
    rpcgate()
        .arg(subcommand)
        .arg("-c")
        .arg(config)
        .output()
        .unwrap()
}

/// Starts `command` with its output going to a file of its own.
fn spawn(command: &mut std::process::Command) -> Running {
    Running::spawn(command, config_file("output.log", ""))
}

/// Retries a SayHello call to `addr` until it succeeds (bounded); returns the reply's
/// message. Fails early if `process` exits.
async fn call_when_up(addr: SocketAddr, process: &mut Running) -> String {
    let what = format!("call through {addr}");
    process
        .until_up(&what, || {
            say_hello(
                Endpoint::from_shared(format!("http://{addr}")).unwrap(),
                Duration::from_secs(2),
            )
        })
        .await
}

fn good_config(listen: SocketAddr, backend: SocketAddr) -> String {
    format!(
        r#"[server]
workers = 1
drain_timeout = "2s"
[log]
access_log = "off"
[[listeners]]
name = "edge"
address = "{listen}"
[[listeners.routes]]
match.path_prefix = "/"
cluster = "main"
[[clusters]]
name = "main"
endpoints = ["{backend}"]
"#
    )
}

#[test]
fn check_accepts_a_good_file() {
    let path = config_file(
        "good.toml",
        &good_config("127.0.0.1:0".parse().unwrap(), free_addr()),
    );
    let output = with_config("check", &path);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("configuration OK"),
        "{}",
        text(&output)
    );
}

/// `check` warns (and passes) when no etcd of an etcd cluster answers: `run` would start
/// and the cluster would stay empty until etcd comes.
#[test]
fn check_warns_when_no_etcd_answers() {
    let nobody = free_addr();
    let file = BAD.replace("bogus_key = 1\n", "").replace(
        "endpoints = [\"127.0.0.1:1\"]",
        &format!("discovery = {{ etcd = [\"{nobody}\"] }}"),
    );
    let output = with_config("check", &config_file("etcd.toml", &file));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("12:22: clusters[0].discovery.etcd: no etcd address answers now"),
        "{}",
        text(&output)
    );
}

const BAD: &str = r#"[server]
workers = 1

[[listeners]]
name = "edge"
address = "127.0.0.1:0"
bogus_key = 1
[[listeners.routes]]
match.path_prefix = "/"
cluster = "main"
[[clusters]]
name = "main"
endpoints = ["127.0.0.1:1"]
"#;

#[test]
fn check_reports_errors_with_location_and_key() {
    let path = config_file("bad.toml", BAD);
    let output = with_config("check", &path);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let said = text(&output);
    assert!(
        said.contains(&format!("{}:7:1", path.display())),
        "no file:line:col in {said}"
    );
    assert!(said.contains("bogus_key"), "the key is not named: {said}");
    assert!(!said.contains("configuration OK"));
}

/// `check --json`: the same diagnostics as objects, for editors and CI.
#[test]
fn check_json_prints_errors_and_warnings_as_objects() {
    let path = config_file("bad-json.toml", BAD);
    let output = rpcgate()
        .args(["check", "--json", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let error = &report["errors"][0];
    assert_eq!(error["line"], 7);
    assert_eq!(error["col"], 1);
    assert!(
        error["key"].as_str().unwrap().contains("bogus_key"),
        "{report}"
    );

    let warned = config_file(
        "warned-json.toml",
        "[[listeners]]\nname = \"edge\"\naddress = \"127.0.0.1:8080\"\n[[listeners.routes]]\ncluster = \"c\"\n[[listeners.routes]]\nmatch.service = \"a.B\"\ncluster = \"c\"\n[[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n",
    );
    let output = rpcgate()
        .args(["check", "--json", "-c"])
        .arg(&warned)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], true);
    let warnings = report["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "{report}");

    // Warnings come with the errors too, so an editor shows both at once.
    let both = config_file(
        "both-json.toml",
        "[[listeners]]\nname = \"edge\"\naddress = \"127.0.0.1:8080\"\nmax_header_bytes = 100\n[[listeners.routes]]\ncluster = \"nope\"\n[[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n",
    );
    let output = rpcgate()
        .args(["check", "--json", "-c"])
        .arg(&both)
        .output()
        .unwrap();
    let both: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(both["errors"].as_array().unwrap().len(), 1, "{both}");
    assert_eq!(
        both["warnings"][0]["key"], "listeners[0].max_header_bytes",
        "{both}"
    );
    assert_eq!(warnings[1]["line"], 6);
    assert_eq!(warnings[1]["key"], "listeners[0].routes[1]");
    assert!(
        warnings[1]["message"]
            .as_str()
            .unwrap()
            .starts_with("can never match"),
        "{report}"
    );
}

#[test]
fn check_rejects_a_key_not_implemented_yet() {
    let path = config_file(
        "later.toml",
        r#"[[listeners]]
name = "edge"
address = "127.0.0.1:0"
grpc_web = true
[[listeners.routes]]
match.path_prefix = "/"
cluster = "main"
[[clusters]]
name = "main"
endpoints = ["127.0.0.1:1"]
"#,
    );
    let output = with_config("check", &path);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let said = text(&output);
    assert!(said.contains("is not implemented yet"), "{said}");
    assert!(said.contains("listeners.grpc_web"), "{said}");
}

/// `--log-level` takes level names and tracing filters; a typo is refused, not read as a
/// target name that silently turns logging off.
#[test]
fn log_level_typos_are_refused() {
    let path = config_file(
        "loglevel.toml",
        &good_config("127.0.0.1:0".parse().unwrap(), free_addr()),
    );
    let bad = rpcgate()
        .args(["--log-level", "debgu", "check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        text(&bad).contains("unknown log level \"debgu\""),
        "{}",
        text(&bad)
    );
    for good in ["debug", "WARN", "info,rpcgate_proxy=debug", "off"] {
        let output = rpcgate()
            .args(["--log-level", good, "check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{good}: {}", text(&output));
    }
}

#[test]
fn run_with_a_bad_file_exits_1() {
    let path = config_file("bad.toml", BAD);
    let output = with_config("run", &path);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("bogus_key"), "{}", text(&output));
}

#[test]
fn run_with_a_missing_file_exits_1() {
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-rpcgate.toml");
    let output = with_config("run", &missing);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_calls_and_exits_0_on_sigterm() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let listen = free_addr();
    let path = config_file("run.toml", &good_config(listen, backend.addr()));
    let mut proxy = spawn(rpcgate().arg("run").arg("-c").arg(&path));
    assert_eq!(call_when_up(listen, &mut proxy).await, "Hello Ann from b1");
    assert!(backend.calls() >= 1);
    proxy.sigterm();
    let status = proxy.exit().await;
    assert_eq!(status.code(), Some(0), "{}", proxy.output());
}

/// SIGHUP reloads the file (as NGINX's `-s reload`): a valid change is in use for the
/// next call; an invalid file is logged with its location and the old one keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file_and_keeps_the_old_one_when_it_is_invalid() {
    let b1 = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let b2 = rpcgate_demo::spawn_backend("b2").await.unwrap();
    let listen = free_addr();
    let path = config_file("sighup.toml", &good_config(listen, b1.addr()));
    let mut proxy = spawn(rpcgate().arg("run").arg("-c").arg(&path));
    assert_eq!(call_when_up(listen, &mut proxy).await, "Hello Ann from b1");

    std::fs::write(&path, good_config(listen, b2.addr())).unwrap();
    proxy.signal("HUP");
    proxy.until_said("SIGHUP: configuration reloaded").await;
    assert_eq!(call_when_up(listen, &mut proxy).await, "Hello Ann from b2");

    std::fs::write(
        &path,
        good_config(listen, b1.addr()).replace("[log]", "[log]\nlevel = \"loud\""),
    )
    .unwrap();
    proxy.signal("HUP");
    proxy.until_said("reload refused").await;
    let said = proxy.output();
    let refused = said.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(
        refused.contains("sighup.toml:") && refused.contains("log.level"),
        "{refused}"
    );
    assert_eq!(call_when_up(listen, &mut proxy).await, "Hello Ann from b2");
    proxy.sigterm();
    assert_eq!(proxy.exit().await.code(), Some(0), "{}", proxy.output());
}

/// The number of lines in `path` once it has at least one (bounded wait: the access log is
/// written by the proxy's writer thread, which gives no event to wait on).
async fn lines_once_written(path: &Path) -> usize {
    let started = tokio::time::Instant::now();
    loop {
        let count = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .count();
        if count > 0 {
            return count;
        }
        assert!(
            started.elapsed() < WAIT,
            "nothing written to {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Log rotation as with NGINX: move the access log away, send SIGUSR1, and the next lines
/// go to a new file at the configured path; SIGUSR2 is logged and ignored. Neither stops
/// the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_access_log_and_sigusr2_is_ignored() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let listen = free_addr();
    let dir = scratch("cli-rotate");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&rotated);
    let config = good_config(listen, backend.addr()).replace(
        "access_log = \"off\"",
        &format!("access_log = \"{}\"", log.display()),
    );
    let path = config_file("rotate.toml", &config);
    let mut proxy = spawn(rpcgate().arg("run").arg("-c").arg(&path));
    assert_eq!(call_when_up(listen, &mut proxy).await, "Hello Ann from b1");
    let before = lines_once_written(&log).await;

    std::fs::rename(&log, &rotated).unwrap();
    proxy.signal("USR1");
    proxy.until_said("access log reopened").await;
    assert_eq!(call_when_up(listen, &mut proxy).await, "Hello Ann from b1");
    assert!(lines_once_written(&log).await >= 1);
    assert_eq!(
        lines_once_written(&rotated).await,
        before,
        "the rotated file got later lines"
    );

    proxy.signal("USR2");
    proxy.until_said("SIGUSR2: ignored").await;
    assert_eq!(call_when_up(listen, &mut proxy).await, "Hello Ann from b1");
    proxy.sigterm();
    let status = proxy.exit().await;
    assert_eq!(status.code(), Some(0), "{}", proxy.output());
}

/// What an operator reads in the log: an upstream failure naming the endpoint and its
/// cause, the ejection, the endpoint back in rotation once `fail_timeout` passed, and
/// `max_connections` reached (the extra client closed at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_tells_failures_ejections_recoveries_and_refused_connections() {
    let backend = rpcgate_demo::spawn_backend("b1").await.unwrap();
    let dead = free_addr();
    let listen = free_addr();
    let config = good_config(listen, backend.addr())
        .replace(
            &format!("endpoints = [\"{}\"]", backend.addr()),
            &format!(
                "endpoints = [\"{}\", \"{dead}\"]\npassive_health = {{ max_fails = 1, fail_timeout = \"1s\" }}",
                backend.addr()
            ),
        )
        .replace("name = \"edge\"\n", "name = \"edge\"\nmax_connections = 2\n");
    let path = config_file("operator-log.toml", &config);
    let mut proxy = spawn(rpcgate().arg("run").arg("-c").arg(&path));
    for _ in 0..3 {
        assert_eq!(call_when_up(listen, &mut proxy).await, "Hello Ann from b1");
    }
    proxy.until_said("upstream failure: connect to").await;
    proxy.until_said("passive health: endpoint ejected").await;
    proxy.until_said("back in rotation").await;
    let said = proxy.output();
    let failure = said
        .lines()
        .find(|l| l.contains("upstream failure"))
        .unwrap();
    assert!(
        failure.contains(&dead.to_string()) && failure.contains("reason=\"connect_failed\""),
        "{failure}"
    );
    let back = said
        .lines()
        .find(|l| l.contains("back in rotation"))
        .unwrap();
    assert!(
        back.contains(&dead.to_string()) && back.contains("WARN"),
        "{back}"
    );

    // Hold connections until the proxy closes one at once: max_connections reached.
    let mut held = Vec::new();
    let refused = async {
        loop {
            let mut conn = tokio::net::TcpStream::connect(listen).await.unwrap();
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(
                Duration::from_millis(300),
                tokio::io::AsyncReadExt::read(&mut conn, &mut byte),
            )
            .await;
            if matches!(read, Ok(Ok(0) | Err(_))) {
                return;
            }
            held.push(conn);
        }
    };
    tokio::time::timeout(WAIT, refused).await.unwrap();
    proxy.until_said("max_connections reached").await;
    proxy.sigterm();
    assert_eq!(proxy.exit().await.code(), Some(0), "{}", proxy.output());
}

/// A backend process hung with SIGSTOP (it holds its connections but answers nothing):
/// its calls end at the route's deadline, passive health ejects it after that failure,
/// and every later call goes to the backend that answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_hung_with_sigstop_is_ejected_after_its_deadline_failures() {
    let (a1, a2) = (free_addr(), free_addr());
    let mut b1 = spawn(
        rpcgate()
            .args(["backend", "--name", "s1", "--listen"])
            .arg(a1.to_string()),
    );
    let mut b2 = spawn(
        rpcgate()
            .args(["backend", "--name", "s2", "--listen"])
            .arg(a2.to_string()),
    );
    assert_eq!(call_when_up(a1, &mut b1).await, "Hello Ann from s1");
    assert_eq!(call_when_up(a2, &mut b2).await, "Hello Ann from s2");
    let listen = free_addr();
    let config = good_config(listen, a1)
        .replace(
            &format!("endpoints = [\"{a1}\"]"),
            &format!("endpoints = [\"{a1}\", \"{a2}\"]\npassive_health = {{ max_fails = 1, fail_timeout = \"30s\" }}"),
        )
        .replace("cluster = \"main\"\n", "cluster = \"main\"\ntimeout = \"300ms\"\n");
    let path = config_file("sigstop.toml", &config);
    let mut proxy = spawn(rpcgate().arg("run").arg("-c").arg(&path));
    call_when_up(listen, &mut proxy).await;

    b2.signal("STOP");
    let endpoint = Endpoint::from_shared(format!("http://{listen}")).unwrap();
    let channel = endpoint.connect().await.unwrap();
    let mut client = rpcgate_demo::pb::helloworld::greeter_client::GreeterClient::new(channel);
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        let request = rpcgate_demo::pb::helloworld::HelloRequest { name: "Ann".into() };
        let outcome = tokio::time::timeout(WAIT, client.say_hello(request))
            .await
            .unwrap();
        outcomes.push(
            outcome
                .map(|r| r.into_inner().message)
                .map_err(|s| s.code()),
        );
    }
    b2.signal("CONT");
    let failed: Vec<_> = outcomes.iter().filter(|o| o.is_err()).collect();
    assert!(
        failed.len() <= 1
            && failed
                .iter()
                .all(|f| **f == Err(tonic::Code::DeadlineExceeded)),
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .rev()
            .take(8)
            .all(|o| o.as_deref() == Ok("Hello Ann from s1")),
        "{outcomes:?}"
    );
    // The operator is told, with the endpoint and the cause.
    if !failed.is_empty() {
        proxy
            .until_said("passive health: endpoint ejected for 30s")
            .await;
        let said = proxy.output();
        assert!(
            said.contains(&a2.to_string()) && said.contains("deadline exceeded"),
            "{said}"
        );
    }
    proxy.sigterm();
    assert_eq!(proxy.exit().await.code(), Some(0), "{}", proxy.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_1_when_the_listener_cannot_bind() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let path = config_file(
        "taken.toml",
        &good_config(taken.local_addr().unwrap(), free_addr()),
    );
    let mut proxy = spawn(rpcgate().arg("run").arg("-c").arg(&path));
    let status = proxy.exit().await;
    assert_eq!(status.code(), Some(1), "{}", proxy.output());
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_serves_and_exits_0_on_sigterm() {
    let listen = free_addr();
    let mut backend = spawn(
        rpcgate()
            .arg("backend")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--name")
            .arg("x"),
    );
    assert_eq!(call_when_up(listen, &mut backend).await, "Hello Ann from x");
    backend.sigterm();
    let status = backend.exit().await;
    assert_eq!(status.code(), Some(0), "{}", backend.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_spreads_calls_over_its_backends() {
    let mut demo = spawn(rpcgate().arg("demo").arg("--calls").arg("9"));
    let status = demo.exit().await;
    let said = demo.output();
    assert_eq!(status.code(), Some(0), "{said}");
    for name in ["backend-1", "backend-2", "backend-3"] {
        assert!(said.contains(name), "{name} missing from:\n{said}");
    }
    // The resilience timeline.
    for step in [
        "DEADLINE_EXCEEDED at the laptop route's 1 s timeout",
        "after 2 retries",
        "the circuit of cluster auth opens",
        "Login refused in",
        "circuit breaker closed -> open: 4 of the last 4 calls failed",
        "2 trial Logins succeed, it closes",
        "Login OK: calls flow again",
    ] {
        assert!(said.contains(step), "{step:?} missing from:\n{said}");
    }
}

/// `demo --serve --listen --admin` keeps the balancer and its admin API up on the given
/// addresses; `rpcgate status --admin` shows its clusters (the killed backend down, with
/// why); an unreachable admin API is exit 1; SIGTERM stops the demo with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_keeps_its_admin_api_up_for_rpcgate_status() {
    let (listen, admin) = (free_addr(), free_addr());
    let mut demo = spawn(rpcgate().args([
        "demo",
        "--serve",
        "--calls",
        "6",
        "--listen",
        &listen.to_string(),
        "--admin",
        &admin.to_string(),
    ]));
    demo.until_said("Serving on").await;
    let said = demo.output();
    assert!(
        said.contains(&format!("admin API: http://{admin}/")),
        "{said}"
    );
    assert!(said.contains(&format!("balancer on {listen}")), "{said}");
    let reply = call_when_up(listen, &mut demo).await;
    assert!(reply.starts_with("Hello Ann from backend-"), "{reply}");

    let output = rpcgate()
        .args(["status", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    for cluster in ["cluster auth", "cluster laptop", "cluster greeter"] {
        assert!(shown.contains(cluster), "{cluster} missing from:\n{shown}");
    }
    // backend-3 was killed: ejected by passive health for 10 s, so still down now.
    let down = shown
        .lines()
        .find(|l| l.contains("DOWN"))
        .unwrap_or_else(|| panic!("no endpoint down in:\n{shown}"));
    assert!(down.contains("passive health"), "{down}");

    // --watch redraws (every 2 s) until stopped.
    let watch = spawn(rpcgate().args(["status", "--watch", "--admin", &admin.to_string()]));
    let started = tokio::time::Instant::now();
    while watch.output().matches("cluster greeter").count() < 2 {
        assert!(started.elapsed() < WAIT, "no redraw: {}", watch.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watch.signal("INT");

    let unreachable = rpcgate()
        .args(["status", "--admin", &free_addr().to_string()])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(1), "{}", text(&unreachable));
    assert!(text(&unreachable).contains("cannot reach the admin API"));

    demo.sigterm();
    let status = demo.exit().await;
    assert_eq!(status.code(), Some(0), "{}", demo.output());
}

/// `--backends 0` and `--calls 0` are refused; one backend runs the demo without the
/// fail-over part (nothing to fail over to) and claims no retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_refuses_zero_counts_and_runs_with_one_backend() {
    for flag in ["--backends", "--calls"] {
        let output = rpcgate().args(["demo", flag, "0"]).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        assert!(
            text(&output).contains("must be at least 1"),
            "{}",
            text(&output)
        );
    }
    let mut demo = spawn(rpcgate().args(["demo", "--backends", "1", "--calls", "3"]));
    let status = demo.exit().await;
    let said = demo.output();
    assert_eq!(status.code(), Some(0), "{said}");
    assert!(said.contains("Skipped: with one backend"), "{said}");
    assert!(!said.contains("killed"), "{said}");
}

/// `check` on TLS settings: `insecure_skip_verify` is valid but warned about; a key that
/// does not belong to its certificate is found (rustls builds the configuration).
#[test]
fn check_warns_about_skipped_verification_and_refuses_a_mismatched_key() {
    let pki = scratch("check-tls");
    let written = rpcgate()
        .args(["certs", "--dir"])
        .arg(&pki)
        .output()
        .unwrap();
    assert_eq!(written.status.code(), Some(0), "{}", text(&written));
    let file = |name: &str| pki.join(name).display().to_string();
    let config = |listener_key: &str| {
        format!(
            r#"[[listeners]]
name = "edge"
address = "127.0.0.1:0"
[listeners.tls]
cert = "{cert}"
key = "{key}"
[[listeners.routes]]
match.path_prefix = "/"
cluster = "main"
[[clusters]]
name = "main"
endpoints = ["127.0.0.1:1"]
protocol = "h2"
[clusters.tls]
insecure_skip_verify = true
"#,
            cert = file("server-cert.pem"),
            key = file(listener_key),
        )
    };
    let good = config_file("skip.toml", &config("server-key.pem"));
    let output = with_config("check", &good);
    let said = text(&output);
    assert_eq!(output.status.code(), Some(0), "{said}");
    assert!(said.contains("configuration OK"), "{said}");
    assert!(said.contains("warning:"), "{said}");
    assert!(said.contains("insecure_skip_verify"), "{said}");
    assert!(
        said.contains("skip.toml:15:24:"),
        "the warning has no file:line:col: {said}"
    );

    let mismatched = config_file("mismatch.toml", &config("client-key.pem"));
    let output = with_config("check", &mismatched);
    let said = text(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("listener edge: TLS"), "{said}");
    // At the key's place in the file, like every other error.
    assert!(
        said.contains("mismatch.toml:6:1: listeners[0].tls.key:"),
        "no file:line:col at the key: {said}"
    );
    assert!(!said.contains("configuration OK"), "{said}");
    let _ = std::fs::remove_dir_all(&pki);
}

#[tokio::test]
async fn demo_tls_runs_mutual_tls_on_both_sides() {
    let mut demo = spawn(rpcgate().args(["demo", "--tls", "--calls", "6"]));
    let status = demo.exit().await;
    let said = demo.output();
    assert_eq!(status.code(), Some(0), "{said}");
    assert!(said.contains("mutual TLS"), "{said}");
    assert!(said.contains("WITHOUT a certificate is refused"), "{said}");
    assert!(said.contains("[listeners.tls]"), "{said}");
    assert!(said.contains("[clusters.tls]"), "{said}");
    for name in ["backend-1", "backend-2", "backend-3"] {
        assert!(said.contains(name), "{name} missing from:\n{said}");
    }
    assert!(said.contains("6/6 succeeded"), "{said}");
}

/// `rpcgate bootstrap` prints gRPC's xDS bootstrap JSON naming the admin address and the
/// node; a URL instead of HOST:PORT is refused.
#[test]
fn bootstrap_prints_the_xds_bootstrap() {
    let output = rpcgate()
        .args(["bootstrap", "--admin", "10.0.0.5:9901", "--node", "web-1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["xds_servers"][0]["server_uri"], "10.0.0.5:9901");
    assert_eq!(
        json["xds_servers"][0]["channel_creds"][0]["type"],
        "insecure"
    );
    assert_eq!(json["node"]["id"], "web-1");
    let output = rpcgate()
        .args(["bootstrap", "--admin", "http://10.0.0.5:9901"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("without the http://"),
        "{}",
        text(&output)
    );
}
