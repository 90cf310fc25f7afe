//! What the tests of the `rpcgate` binary share: starting it, scratch folders, free
//! ports, a guard that stops a running process (SIGTERM through the `kill` command, so no
//! signal crate is needed) and waits for it within bounds, and a Greeter call to what it
//! serves.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // reason: test helpers; not every test binary uses every one

use std::fmt::Debug;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpcgate_demo::pb::helloworld::{HelloRequest, greeter_client::GreeterClient};
use tokio::time::{Instant, sleep, timeout};
use tonic::transport::Endpoint;

/// Upper bound on any wait for a process.
pub const WAIT: Duration = Duration::from_secs(20);

/// The built `rpcgate` binary, with no stdin and no `RUST_LOG` from the caller.
pub fn rpcgate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rpcgate"));
    command.stdin(Stdio::null()).env_remove("RUST_LOG");
    command
}

/// A fresh folder path for this test under cargo's scratch directory (not created; an
/// old one of the same name is removed).
pub fn scratch(tag: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// What a finished process printed, stdout then stderr.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A free loopback port: bound on :0 and released (the OS does not hand it out again
/// right away).
pub fn free_addr() -> SocketAddr {
    // A loopback address of this process's own (Linux answers on all of 127.0.0.0/8): a
    // port freed here and bound again by the child cannot be taken meanwhile by another
    // test's `127.0.0.1:0` (the race that made a demo's bind fail now and then).
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ip = std::net::Ipv4Addr::new(
        127,
        (std::process::id() % 200 + 20) as u8,
        (n / 250) as u8,
        (n % 250 + 1) as u8,
    );
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// A child process with its stdout and stderr going to a file (a pipe nobody reads could
/// fill and stall it), killed if the test ends before it exits.
pub struct Running {
    pub child: Child,
    log: PathBuf,
}

impl Running {
    /// Starts `command` with its output going to the file `log`.
    pub fn spawn(command: &mut Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends the named signal (`TERM`, `HUP`, …).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit.
    pub async fn exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < WAIT, "the process did not exit");
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until the process has printed `needle`; a child's log file gives no
    /// event to wait on, so it is re-read every 20 ms.
    pub async fn until_said(&self, needle: &str) {
        let started = Instant::now();
        while !self.output().contains(needle) {
            assert!(
                started.elapsed() < WAIT,
                "never said {needle:?}: {}",
                self.output()
            );
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// What it printed so far (stdout and stderr interleaved).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Retries `attempt` until it succeeds (bounded by [`WAIT`]), for a server that is
    /// still starting; fails early if the process exits. `what` names the attempt in the
    /// failure message.
    pub async fn until_up<T, E: Debug, F: Future<Output = Result<T, E>>>(
        &mut self,
        what: &str,
        mut attempt: impl FnMut() -> F,
    ) -> T {
        let started = Instant::now();
        loop {
            match attempt().await {
                Ok(value) => return value,
                Err(error) => {
                    if let Some(status) = self.child.try_wait().unwrap() {
                        panic!("the process exited early: {status}: {}", self.output());
                    }
                    assert!(started.elapsed() < WAIT, "no {what} succeeded: {error:?}");
                    sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One SayHello from `Ann` to `endpoint` within `bound`: the reply's message, or why not.
pub async fn say_hello(endpoint: Endpoint, bound: Duration) -> Result<String, String> {
    let attempt = async {
        let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
        let reply = GreeterClient::new(channel)
            .say_hello(HelloRequest { name: "Ann".into() })
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok(reply.into_inner().message)
    };
    timeout(bound, attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}
