//! `rpcgate demo`: the main job on an embedded default, in one command.
//!
//! Starts N demo backends and a balancer in-process, routes `AuthService` to the first
//! backend and `LaptopService` to the others (step 4 of the pcbook tutorial), sends calls
//! through one client connection, prints how they spread, kills a backend, and shows that
//! later calls still succeed. With `--tls` it runs the tutorial's final set-up: mutual TLS
//! from the client to rpcgate and from rpcgate to the backends, with a development PKI
//! generated in a temporary folder. Last, a resilience timeline (the microservices
//! walkthrough): a route deadline cutting a slow call, a flaky backend retried with
//! backoff until OK, and a circuit breaker that opens, rejects fast, goes half-open and
//! closes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use rpcgate_demo::pb::helloworld::HelloRequest;
use rpcgate_demo::pb::helloworld::greeter_client::GreeterClient;
use rpcgate_demo::pb::pcbook::auth_service_client::AuthServiceClient;
use rpcgate_demo::pb::pcbook::laptop_service_client::LaptopServiceClient;
use rpcgate_demo::pb::pcbook::{CreateLaptopRequest, Laptop, LoginRequest};
use rpcgate_demo::pki::{DevPki, PkiPaths};
use rpcgate_demo::{BackendHandle, BackendOptions, TlsServer, spawn_backend, spawn_backend_on};
use rpcgate_proxy::{Proxy, ProxyHandle};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::cli::DemoArgs;

/// Runs the demo; exit 0 when every call that should succeed did.
pub fn main(args: DemoArgs, log_level: Option<&str>) -> ExitCode {
    if args.listen == args.admin && args.listen.port() != 0 {
        eprintln!(
            "rpcgate demo: --listen and --admin are both {}: give the admin API another port",
            args.listen
        );
        return ExitCode::from(2);
    }
    crate::init_tracing(log_level, "warn");
    let runtime = match crate::runtime(true) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rpcgate demo failed: {error}");
            ExitCode::FAILURE
        }
    }
}

type DemoError = Box<dyn std::error::Error + Send + Sync>;

/// The demo's mutual TLS set-up: the PKI and where its files are.
struct DemoTls {
    dir: PathBuf,
    paths: PkiPaths,
    pki: DevPki,
}

impl DemoTls {
    /// Generates a development PKI (what `rpcgate certs` writes) in a fresh temp folder.
    fn generate() -> Result<Self, DemoError> {
        let dir = std::env::temp_dir().join(format!("rpcgate-demo-pki-{}", std::process::id()));
        let pki = DevPki::generate(&["localhost".to_string(), "127.0.0.1".to_string()])?;
        let paths = pki.write_to(&dir, true)?;
        Ok(Self { dir, paths, pki })
    }

    /// A backend's TLS: the server certificate, client certificates required.
    fn backend(&self) -> TlsServer {
        TlsServer::new(
            self.pki.server_cert_pem.clone(),
            self.pki.server_key_pem.clone(),
        )
        .client_ca(self.pki.ca_cert_pem.clone())
    }

    /// The listener's `[listeners.tls]` table.
    fn listener_toml(&self) -> String {
        format!(
            "\n[listeners.tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
            self.paths.server_cert, self.paths.server_key, self.paths.ca_cert
        )
    }

    /// A cluster's `protocol` and `[clusters.tls]` table.
    fn cluster_toml(&self) -> String {
        format!(
            "protocol = \"h2\"\n\n[clusters.tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\nserver_name = \"localhost\"\n",
            self.paths.ca_cert, self.paths.client_cert, self.paths.client_key
        )
    }

    /// The client's TLS: trusts the CA, presents the client certificate or not.
    fn client(&self, with_certificate: bool) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.pki.ca_cert_pem))
            .domain_name("localhost");
        if with_certificate {
            config.identity(Identity::from_pem(
                &self.pki.client_cert_pem,
                &self.pki.client_key_pem,
            ))
        } else {
            config
        }
    }
}

impl Drop for DemoTls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The demo's configuration: the embedded default's shape with the live addresses, a
/// shorter laptop timeout (1 s) and breaker window (1 s, so the demo's earlier Logins are
/// forgotten by the time it shows the breaker) to keep the timeline short, and a larger
/// retry budget (its few calls, some retried after the kill, would leave the default's
/// 20% too little for the flaky call).
fn demo_config(
    backends: &[BackendHandle],
    tls: Option<&DemoTls>,
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
) -> String {
    let list = |bs: &[BackendHandle]| {
        bs.iter()
            .map(|b| format!("\"{}\"", b.addr()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let auth = &backends[..1];
    let laptop = if backends.len() > 1 {
        &backends[1..]
    } else {
        backends
    };
    let listener_tls = tls.map(DemoTls::listener_toml).unwrap_or_default();
    let cluster_tls = tls.map(DemoTls::cluster_toml).unwrap_or_default();
    format!(
        r#"[server]
workers = 1

[admin]
address = "{admin}"

[log]
access_log = "off"

[[listeners]]
name = "edge"
address = "{listen}"
{listener_tls}
[[listeners.routes]]
name = "auth"
match.service = "techschool_pcbook.AuthService"
cluster = "auth"

[[listeners.routes]]
name = "laptop"
match.service = "techschool_pcbook.LaptopService"
cluster = "laptop"
timeout = "1s"

[[listeners.routes]]
name = "greeter"
match.path_prefix = "/"
cluster = "greeter"
retry = {{ max_attempts = 3, on = ["unavailable"], backoff = "exponential", base_interval = "100ms", max_interval = "1s", jitter = false, budget_ratio = 0.5 }}

[[clusters]]
name = "auth"
endpoints = [{auth}]
passive_health = {{ max_fails = 0 }}   # one backend: the circuit breaker guards it
circuit_breaker = {{ failure_ratio = 0.5, min_requests = 4, window = "1s", open_duration = "2s", half_open_requests = 2 }}
{cluster_tls}
[[clusters]]
name = "laptop"
endpoints = [{laptop}]
lb = "least_request"
{cluster_tls}
[[clusters]]
name = "greeter"
endpoints = [{all}]
passive_health = {{ max_fails = 3, fail_timeout = "10s" }}
{cluster_tls}"#,
        auth = list(auth),
        laptop = list(laptop),
        all = list(backends),
    )
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, so `demo --serve` stops cleanly either way.
async fn stopped() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = sigterm => {}
    }
}

/// A tonic channel (one HTTP/2 connection) to the balancer.
async fn connect(
    address: std::net::SocketAddr,
    tls: Option<(&DemoTls, bool)>,
) -> Result<Channel, DemoError> {
    Ok(match tls {
        Some((tls, with_certificate)) => {
            Channel::from_shared(format!("https://localhost:{}", address.port()))?
                .tls_config(tls.client(with_certificate))?
                .connect()
                .await?
        }
        None => {
            Channel::from_shared(format!("http://{address}"))?
                .connect()
                .await?
        }
    })
}

async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let count = args.backends;
    let tls = if args.tls {
        Some(DemoTls::generate()?)
    } else {
        None
    };
    let mut backends = Vec::with_capacity(count);
    for i in 1..=count {
        let name = format!("backend-{i}");
        backends.push(match &tls {
            Some(tls) => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                spawn_backend_on(listener, BackendOptions::new(name).tls(tls.backend())).await?
            }
            None => spawn_backend(&name).await?,
        });
    }
    let text = demo_config(&backends, tls.as_ref(), args.listen, args.admin);
    let config = rpcgate_config::parse(&text, "<demo>")?;
    let proxy = Proxy::start(&config)?;
    let address = proxy
        .listener_addr("edge")
        .ok_or("the demo listener is missing")?;
    match &tls {
        Some(tls) => {
            println!(
                "rpcgate demo --tls: {count} TLS backends, balancer on {address}; mutual TLS from the client to rpcgate and from rpcgate to the backends"
            );
            println!(
                "  development PKI (as `rpcgate certs` writes it) in {}",
                tls.dir.display()
            );
        }
        None => {
            println!("rpcgate demo: {count} backends, balancer on {address} (h2c and HTTP/1.1)")
        }
    }
    for b in &backends {
        println!("  {} on {}", b.name(), b.addr());
    }
    let admin = proxy.admin_addr().ok_or("the demo admin API is missing")?;
    println!(
        "  admin API: http://{admin}/ (live dashboard), /metrics, /status; in a terminal: rpcgate status --admin {admin}"
    );
    println!();
    println!("Configuration in use (rpcgate check accepts it):\n");
    println!("{text}");

    if let Some(tls) = &tls {
        // What the tutorial's client without -tls sees: the handshake is refused.
        let refused = match connect(address, Some((tls, false))).await {
            Ok(channel) => GreeterClient::new(channel)
                .say_hello(HelloRequest {
                    name: "anonymous".into(),
                })
                .await
                .err()
                .map(|status| status.to_string()),
            Err(error) => Some(error.to_string()),
        };
        match refused {
            Some(error) => println!("0. A client WITHOUT a certificate is refused: {error}\n"),
            None => return Err("a client without a certificate was served".into()),
        }
    }
    // One client connection: every call on it is balanced on its own.
    let channel = connect(address, tls.as_ref().map(|t| (t, true))).await?;
    let calls = args.calls;

    println!("1. {calls} SayHello calls over ONE client connection (round robin per call):");
    let spread = greet(&channel, calls).await?;
    print_table(&spread, calls);

    println!(
        "\n2. The tutorial's routes: AuthService -> auth cluster, LaptopService -> laptop cluster:"
    );
    let mut auth = AuthServiceClient::new(channel.clone());
    let mut laptops = LaptopServiceClient::new(channel.clone());
    let mut by_route: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for i in 0..calls {
        let login = auth
            .login(LoginRequest {
                username: "admin".into(),
                password: "secret".into(),
            })
            .await?;
        *by_route
            .entry("AuthService/Login".into())
            .or_default()
            .entry(served_by(login.metadata()))
            .or_default() += 1;
        let created = laptops
            .create_laptop(CreateLaptopRequest {
                laptop: Some(Laptop {
                    brand: "Lenovo".into(),
                    name: format!("Thinkpad {i}"),
                    cpu_cores: 8,
                    ..Default::default()
                }),
            })
            .await?;
        *by_route
            .entry("LaptopService/CreateLaptop".into())
            .or_default()
            .entry(served_by(created.metadata()))
            .or_default() += 1;
    }
    for (route, spread) in &by_route {
        println!("   {route}:");
        print_table(spread, calls);
    }

    let ok = if backends.len() > 1 {
        let victim = backends.pop().ok_or("no backend to kill")?;
        let victim_name = victim.name().to_string();
        victim.kill().await;
        println!("\n3. {victim_name} killed. {calls} more SayHello calls:");
        let spread = greet(&channel, calls).await?;
        print_table(&spread, calls);
        let ok: usize = spread.values().sum();
        println!(
            "   {ok}/{calls} succeeded; {victim_name} served {} (calls sent to it failed to connect and went to another backend; passive health ejects it)",
            spread.get(&victim_name).copied().unwrap_or(0)
        );
        ok
    } else {
        println!(
            "\n3. Skipped: with one backend there is nothing to fail over to (try --backends 3)."
        );
        calls
    };

    println!(
        "\n4. Resilience, as a timeline (when each step ended, in ms since this part started):"
    );
    resilience(&channel).await?;

    if args.serve {
        println!(
            "\nDashboard: http://{admin}/   metrics: http://{admin}/metrics   rpcgate status --admin {admin}"
        );
        if backends.len() < count {
            println!(
                "The killed backend stays down (its port refuses connections): passive health takes it out of\nrotation each time a call fails on it, so it shows as down once calls reach it."
            );
        }
        println!("\nServing on {address} until Ctrl-C or SIGTERM. Try:");
        if tls.is_none() {
            println!(
                "  grpcurl -plaintext {address} list   (the backends serve reflection; if you have grpcurl)"
            );
            println!(
                "  grpcurl -plaintext -d '{{\"name\":\"you\"}}' {address} helloworld.Greeter/SayHello"
            );
        }
        println!("  rpcgate status --admin {admin} --watch");
        stopped().await;
    } else {
        println!(
            "\nThe admin API (dashboard, /metrics, /status) ended with the demo: `rpcgate demo --serve` keeps it up."
        );
    }
    shutdown(proxy).await;
    if ok == calls {
        Ok(())
    } else {
        Err(format!("{} calls failed after the kill", calls - ok).into())
    }
}

/// The resilience timeline: each step says what was sent, what came back and when; an
/// answer other than the expected one fails the demo.
async fn resilience(channel: &Channel) -> Result<(), DemoError> {
    let started = tokio::time::Instant::now();
    let at = || format!("[{:>5} ms]", started.elapsed().as_millis());

    // A deadline cutting a slow call.
    let mut laptops = LaptopServiceClient::new(channel.clone());
    let slow = laptops
        .create_laptop(with(
            &[("x-delay-ms", "3000")],
            CreateLaptopRequest::default(),
        ))
        .await;
    match slow {
        Err(status) if status.code() == tonic::Code::DeadlineExceeded => println!(
            "   {} CreateLaptop to a backend that takes 3 s: DEADLINE_EXCEEDED at the laptop route's 1 s timeout (\"{}\"); rpcgate cancelled the backend's stream",
            at(),
            status.message()
        ),
        other => {
            return Err(
                format!("the slow CreateLaptop was not cut by its deadline: {other:?}").into(),
            );
        }
    }

    // A flaky backend retried with backoff until OK.
    let mut greeter = GreeterClient::new(channel.clone());
    let before = tokio::time::Instant::now();
    let flaky = greeter
        .say_hello(with(
            &[("x-fail-code", "14"), ("x-fail-attempts", "2")],
            HelloRequest {
                name: "flaky".into(),
            },
        ))
        .await?;
    let retries = flaky
        .metadata()
        .get("grpc-previous-rpc-attempts")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0")
        .to_string();
    println!(
        "   {} SayHello whose first 2 attempts answer UNAVAILABLE: OK from {} after {retries} retries, in {} ms (exponential backoff: 100 ms, then 200 ms)",
        at(),
        served_by(flaky.metadata()),
        before.elapsed().as_millis()
    );
    if retries != "2" {
        return Err(format!("the flaky call was retried {retries} times, not 2").into());
    }

    // A circuit that opens, rejects fast, goes half-open and closes.
    let mut auth = AuthServiceClient::new(channel.clone());
    let login = || LoginRequest {
        username: "admin".into(),
        password: "secret".into(),
    };
    for _ in 0..4 {
        let failed = auth.login(with(&[("x-fail-code", "14")], login())).await;
        if failed.is_ok() {
            return Err("a Login asked to fail succeeded".into());
        }
    }
    println!(
        "   {} 4 Logins answered UNAVAILABLE by the backend: 4 of 4 failed, the circuit of cluster auth opens",
        at()
    );
    let before = tokio::time::Instant::now();
    match auth.login(login()).await {
        Err(status) if status.message().contains("circuit breaker") => println!(
            "   {} Login refused in {} µs, no backend asked: \"{}\"",
            at(),
            before.elapsed().as_micros(),
            status.message()
        ),
        other => return Err(format!("the open circuit let a Login through: {other:?}").into()),
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    for _ in 0..2 {
        auth.login(login()).await?;
    }
    println!(
        "   {} after open_duration (2 s) the circuit is half-open: 2 trial Logins succeed, it closes",
        at()
    );
    auth.login(login()).await?;
    println!("   {} Login OK: calls flow again", at());
    Ok(())
}

/// A request with these metadata entries (the demo backends' test behaviours).
fn with<T>(pairs: &[(&'static str, &str)], message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for (key, value) in pairs {
        if let Ok(value) = value.parse() {
            request.metadata_mut().insert(*key, value);
        }
    }
    request
}

async fn shutdown(proxy: ProxyHandle) {
    proxy.shutdown().await;
}

async fn greet(channel: &Channel, calls: usize) -> Result<BTreeMap<String, usize>, DemoError> {
    let mut client = GreeterClient::new(channel.clone());
    let mut spread = BTreeMap::new();
    for i in 0..calls {
        match client
            .say_hello(HelloRequest {
                name: format!("call {i}"),
            })
            .await
        {
            Ok(reply) => *spread.entry(served_by(reply.metadata())).or_default() += 1,
            Err(status) => println!("   call {i} failed: {status}"),
        }
    }
    Ok(spread)
}

fn served_by(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_string()
}

fn print_table(spread: &BTreeMap<String, usize>, total: usize) {
    println!("   {:<12} {:>6} {:>7}", "backend", "calls", "share");
    for (backend, n) in spread {
        let share = 100.0 * *n as f64 / total.max(1) as f64;
        println!("   {backend:<12} {n:>6} {share:>6.1}%");
    }
}
