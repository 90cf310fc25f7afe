//! A real etcd (Debian's `etcd-server`, which `scripts/test.sh` installs) on free ports of
//! a loopback address of this test process's own, with a temporary data folder; killed
//! on drop. [`Etcd::restart`] keeps the data (same revisions), as an etcd restart does.
//! Keys are written with the generated etcd API of `rpcgate-discovery`. Self-contained, so
//! `crates/rpcgate/tests/register.rs` includes it too (`#[path]`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rpcgate_discovery::etcd::api::etcdserverpb::kv_client::KvClient;
use rpcgate_discovery::etcd::api::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest,
};
use tonic::transport::Channel;

/// The etcd binary.
const ETCD: &str = "/usr/bin/etcd";
/// How long etcd may take to answer after start.
const READY: Duration = Duration::from_secs(30);

/// Whether etcd is installed; without it the test fails under CI (`CI` set) or
/// `scripts/test.sh` (`RPCGATE_REQUIRE_ETCD`, set after it installed etcd-server), and is
/// skipped with a notice on a developer machine.
pub fn etcd_or_skip(test: &str) -> bool {
    let here = std::path::Path::new(ETCD).exists();
    if !here {
        if std::env::var_os("CI").is_some() || std::env::var_os("RPCGATE_REQUIRE_ETCD").is_some() {
            panic!("no {ETCD}: CI must run the {test} test; scripts/test.sh installs etcd-server");
        }
        eprintln!("NOTICE: {test} test skipped: no {ETCD} (run scripts/test.sh)");
    }
    here
}

/// A free address on this process's own loopback address.
fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let ip = std::net::Ipv4Addr::new(
        127,
        (std::process::id() % 200 + 20) as u8,
        (std::process::id() / 200 % 250) as u8,
        (n % 250 + 1) as u8,
    );
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("rpcgate-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running etcd.
pub struct Etcd {
    child: Option<Child>,
    /// The client address (`HOST:PORT` for `discovery = { etcd = […] }`).
    pub client: SocketAddr,
    peer: SocketAddr,
    dir: TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub async fn start() -> Self {
        let mut etcd = Self {
            child: None,
            client: free_addr(),
            peer: free_addr(),
            dir: TempDir::new("etcd"),
        };
        etcd.spawn();
        etcd.ready().await;
        etcd
    }

    /// Picks the addresses etcd will have without starting it (for "etcd comes later").
    pub fn not_started() -> Self {
        Self {
            child: None,
            client: free_addr(),
            peer: free_addr(),
            dir: TempDir::new("etcd"),
        }
    }

    /// Starts a [`Etcd::not_started`] (or stopped) etcd and waits until it answers.
    pub async fn start_here(&mut self) {
        self.spawn();
        self.ready().await;
    }

    fn log(&self) -> PathBuf {
        self.dir.0.join("etcd.log")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let client = format!("http://{}", self.client);
        let peer = format!("http://{}", self.peer);
        let child = Command::new(ETCD)
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.0.join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {ETCD}: {e}"));
        self.child = Some(child);
    }

    /// Waits until a read succeeds.
    async fn ready(&self) {
        let deadline = tokio::time::Instant::now() + READY;
        loop {
            if let Ok(mut kv) = self.try_kv().await
                && kv
                    .range(RangeRequest {
                        key: b"/".to_vec(),
                        ..Default::default()
                    })
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd did not answer within {READY:?}; its log:\n{}",
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn try_kv(&self) -> Result<KvClient<Channel>, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.client))
            .unwrap()
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await?;
        Ok(KvClient::new(channel))
    }

    /// A KV client.
    pub async fn kv(&self) -> KvClient<Channel> {
        self.try_kv().await.expect("etcd answers")
    }

    /// `PUT key value`; returns the revision.
    pub async fn put(&self, key: &str, value: &str) -> i64 {
        let answer = self
            .kv()
            .await
            .put(PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        answer.header.unwrap().revision
    }

    /// `DEL key`.
    pub async fn delete(&self, key: &str) {
        self.kv()
            .await
            .delete_range(DeleteRangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    /// The keys under `prefix`, sorted.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let answer = self
            .kv()
            .await
            .range(RangeRequest {
                key: prefix.into(),
                range_end: rpcgate_discovery::etcd::prefix_end(prefix.as_bytes()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        answer
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect()
    }

    /// Compacts the history up to `revision`.
    pub async fn compact(&self, revision: i64) {
        self.kv()
            .await
            .compact(CompactionRequest {
                revision,
                physical: true,
            })
            .await
            .unwrap();
    }

    /// SIGKILLs etcd (the data stays).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and starts etcd again on the same addresses and data.
    pub async fn restart(&mut self) {
        self.kill();
        self.start_here().await;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
