//! Files a test writes or reads: temporary folders (PEM files, access logs), paths
//! inside TOML texts, and log files written by the proxy's writer thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::WAIT;

/// A temporary folder, unique to this process and call, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty folder whose name holds `tag`.
    pub fn new(tag: &str) -> Self {
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

/// A path as a TOML string.
pub fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// Waits until the file holds `lines` lines (the log writer flushes after each batch)
/// and returns them.
pub async fn read_lines(path: &Path, lines: usize) -> Vec<String> {
    tokio::time::timeout(WAIT, async {
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let found: Vec<String> = text.lines().map(str::to_string).collect();
            if found.len() >= lines {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("access log lines written")
}
