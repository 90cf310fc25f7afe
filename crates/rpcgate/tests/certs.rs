//! `rpcgate certs` and `rpcgate backend` with TLS, as a user runs them (SPEC §1): the six
//! PEM files with their modes, no accidental overwrite, `--force`, and a TLS backend from
//! those files serving a mutual-TLS call, then exiting 0 on SIGTERM.
//!
//! Processes are started from the built binary and every wait is bounded; a process still
//! running when a test ends is killed by its guard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpcgate_testkit::pb::helloworld::{HelloRequest, greeter_client::GreeterClient};
use tokio::time::{Instant, sleep, timeout};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Upper bound on any wait for a process.
const WAIT: Duration = Duration::from_secs(20);

const FILES: [&str; 6] = [
    "ca-cert.pem",
    "ca-key.pem",
    "server-cert.pem",
    "server-key.pem",
    "client-cert.pem",
    "client-key.pem",
];

fn rpcgate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rpcgate"));
    command.stdin(Stdio::null()).env_remove("RUST_LOG");
    command
}

/// A fresh directory path for this test under cargo's scratch directory (not created).
fn scratch(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "certs-{}-{}-{name}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn certs(dir: &Path, extra: &[&str]) -> Output {
    rpcgate()
        .arg("certs")
        .arg("--dir")
        .arg(dir)
        .args(["--hosts", "localhost,127.0.0.1"])
        .args(extra)
        .output()
        .unwrap()
}

fn read_all(dir: &Path) -> Vec<String> {
    FILES
        .iter()
        .map(|name| std::fs::read_to_string(dir.join(name)).unwrap())
        .collect()
}

#[test]
fn certs_writes_six_files_with_modes_and_never_overwrites_without_force() {
    let dir = scratch("pki").join("certs");
    let output = certs(&dir, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for name in FILES {
        let path = dir.join(name);
        assert!(stdout.contains(&path.display().to_string()), "{stdout}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let expected = if name.ends_with("-key.pem") {
            0o600
        } else {
            0o644
        };
        assert_eq!(mode, expected, "{name}");
    }
    assert!(stdout.contains("[listeners.tls]"), "{stdout}");
    assert!(stdout.contains("[clusters.tls]"), "{stdout}");
    let first = read_all(&dir);
    assert!(first[0].starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(first[1].starts_with("-----BEGIN PRIVATE KEY-----"));

    let again = certs(&dir, &[]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        said.contains("ca-cert.pem") && said.contains("--force"),
        "{said}"
    );
    assert_eq!(read_all(&dir), first, "a refused run changed the files");

    let forced = certs(&dir, &["--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced));
    let second = read_all(&dir);
    for (name, (old, new)) in FILES.iter().zip(first.iter().zip(&second)) {
        assert_ne!(old, new, "{name} was not replaced");
    }
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[test]
fn certs_rejects_a_bad_host() {
    let dir = scratch("bad-host");
    let output = rpcgate()
        .arg("certs")
        .arg("--dir")
        .arg(&dir)
        .args(["--hosts", "localhost,b\u{e9}d"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("b\u{e9}d"), "{}", text(&output));
    assert!(!dir.join("ca-cert.pem").exists());
}

/// A free loopback port: bound on :0 and released (the OS does not hand it out again
/// right away).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A child process with its output going to a file (a pipe nobody reads could fill and
/// stall it), killed if the test ends before it exits.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn spawn(command: &mut Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < WAIT, "the process did not exit");
            sleep(Duration::from_millis(20)).await;
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS client for `dir`'s PKI, with the client certificate when `identity`.
fn client_tls(dir: &Path, identity: bool) -> ClientTlsConfig {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca-cert.pem")))
        .domain_name("localhost");
    if identity {
        config.identity(Identity::from_pem(
            read("client-cert.pem"),
            read("client-key.pem"),
        ))
    } else {
        config
    }
}

async fn say_hello(addr: SocketAddr, tls: ClientTlsConfig) -> Result<String, String> {
    let attempt = async {
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let reply = GreeterClient::new(channel)
            .say_hello(HelloRequest { name: "Ann".into() })
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok(reply.into_inner().message)
    };
    timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

#[tokio::test]
async fn backend_serves_mutual_tls_from_certs_files_and_exits_on_sigterm() {
    let dir = scratch("backend");
    let output = certs(&dir, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let addr = free_addr();
    let mut backend = Running::spawn(
        rpcgate()
            .arg("backend")
            .arg("--listen")
            .arg(addr.to_string())
            .args(["--name", "tls1", "--tls-cert"])
            .arg(dir.join("server-cert.pem"))
            .arg("--tls-key")
            .arg(dir.join("server-key.pem"))
            .arg("--client-ca")
            .arg(dir.join("ca-cert.pem")),
        dir.join("backend.log"),
    );

    // Retry until it listens (bounded); fail early if it exits.
    let started = Instant::now();
    let message = loop {
        match say_hello(addr, client_tls(&dir, true)).await {
            Ok(message) => break message,
            Err(error) => {
                if let Some(status) = backend.child.try_wait().unwrap() {
                    panic!("the backend exited early: {status}: {}", backend.output());
                }
                assert!(started.elapsed() < WAIT, "no TLS call succeeded: {error}");
                sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(message, "Hello Ann from tls1");

    // Without a client certificate the handshake is refused. Under TLS 1.3 the client
    // learns it from the alert or from the close that follows, whichever it reads first,
    // so tonic reports it as CertificateRequired, a closed connection or a broken pipe:
    // always a transport error, never a reply.
    let refused = say_hello(addr, client_tls(&dir, false)).await;
    assert!(
        refused.as_ref().is_err_and(|e| {
            [
                "CertificateRequired",
                "connection closed",
                "broken pipe",
                "transport error",
            ]
            .iter()
            .any(|reason| e.contains(reason))
        }),
        "{refused:?}"
    );

    backend.sigterm();
    let status = backend.exit().await;
    assert_eq!(status.code(), Some(0), "{}", backend.output());
    drop(backend);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn backend_reports_unusable_tls_files() {
    let dir = scratch("bad-files");
    let output = certs(&dir, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let run = |cert: &str, key: &str| {
        rpcgate()
            .arg("backend")
            .arg("--listen")
            .arg(free_addr().to_string())
            .args(["--name", "bad", "--tls-cert"])
            .arg(dir.join(cert))
            .arg("--tls-key")
            .arg(dir.join(key))
            .output()
            .unwrap()
    };
    let missing = run("missing.pem", "server-key.pem");
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(text(&missing).contains("missing.pem"), "{}", text(&missing));

    let not_a_cert = run("server-key.pem", "server-key.pem");
    assert_eq!(not_a_cert.status.code(), Some(1), "{}", text(&not_a_cert));
    assert!(
        text(&not_a_cert).contains("invalid certificate"),
        "{}",
        text(&not_a_cert)
    );

    let wrong_key = run("server-cert.pem", "client-key.pem");
    assert_eq!(wrong_key.status.code(), Some(1), "{}", text(&wrong_key));
    assert!(
        text(&wrong_key).contains("does not belong to the certificate"),
        "{}",
        text(&wrong_key)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
