//! `discovery = { file = "endpoints.json" }`: a JSON array of endpoints, watched.
//!
//! The file's folder is watched (`notify`: inotify on Linux), not the file itself, so an
//! editor or a deploy tool that writes a new file and renames it over the old one is
//! seen like an edit in place. Each change is read after [`SETTLE`] (several events of
//! one save become one read) and parsed with the same rules as a cluster's `endpoints`
//! ([`rpcgate_config::parse_endpoints_file`]). The file is also read every [`POLL`]
//! whatever the watcher says, for file systems where change events do not arrive (some
//! network and container mounts). A broken or missing file keeps the last good set, with
//! one warning per distinct error that names the file's line and column.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use rpcgate_balance::EndpointSpec;
use tokio::sync::mpsc;

use crate::{Apply, specs};

/// How long after a change event the file is read.
pub const SETTLE: Duration = Duration::from_millis(50);

/// How often the file is read even without a change event.
pub const POLL: Duration = Duration::from_secs(5);

/// Follows the file at `path` until the task is aborted.
pub(crate) async fn follow(path: PathBuf, cluster: Arc<str>, apply: Apply) {
    let (changed_tx, mut changed) = mpsc::channel::<()>(1);
    // Kept alive for as long as the task runs; without it, changes are seen by polling.
    let _watcher = watch_folder(&path, changed_tx, &cluster);
    let mut last: Option<Vec<EndpointSpec>> = None;
    let mut last_error: Option<String> = None;
    loop {
        match read(&path) {
            Ok(endpoints) => {
                last_error = None;
                if last.as_ref() != Some(&endpoints) {
                    if last.is_some() {
                        tracing::info!(
                            cluster = &*cluster,
                            file = %path.display(),
                            endpoints = endpoints.len(),
                            "endpoints file changed: the cluster follows it"
                        );
                    }
                    apply(endpoints.clone());
                    last = Some(endpoints);
                }
            }
            Err(error) => {
                if last_error.as_ref() != Some(&error) {
                    tracing::warn!(
                        cluster = &*cluster,
                        "endpoints file not usable, the last good set stays: {error}"
                    );
                    last_error = Some(error);
                }
            }
        }
        tokio::select! {
            event = changed.recv() => {
                if event.is_none() {
                    // The watcher is gone: polling only.
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                tokio::time::sleep(SETTLE).await;
                while changed.try_recv().is_ok() {}
            }
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The endpoints the file holds now.
fn read(path: &Path) -> Result<Vec<EndpointSpec>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    rpcgate_config::parse_endpoints_file(&text, path).map(|endpoints| specs(&endpoints))
}

/// A watcher of the file's folder that signals `changed` for events naming the file.
fn watch_folder(
    path: &Path,
    changed: mpsc::Sender<()>,
    cluster: &str,
) -> Option<notify::RecommendedWatcher> {
    let name = path.file_name()?.to_owned();
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
        {
            // Full: a read is already due, which will see this change too.
            let _ = changed.try_send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(error) => {
            tracing::warn!(cluster, %error, "cannot watch the endpoints file; it is read every {POLL:?}");
            return None;
        }
    };
    if let Err(error) = watcher.watch(&folder, RecursiveMode::NonRecursive) {
        tracing::warn!(cluster, folder = %folder.display(), %error, "cannot watch the endpoints file's folder; it is read every {POLL:?}");
        return None;
    }
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("rpcgate-discovery-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        dir
    }

    /// Waits (real time, bounded) until `seen` holds `n` sets.
    async fn sets(seen: &Mutex<Vec<Vec<String>>>, n: usize) -> Vec<Vec<String>> {
        for _ in 0..500 {
            let got = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("only {:?}", seen.lock().unwrap_or_else(|e| e.into_inner()));
    }

    #[tokio::test]
    async fn edits_renames_and_broken_files() {
        let dir = temp_dir("follow");
        let path = dir.join("eps.json");
        std::fs::write(&path, "[\"127.0.0.1:1\"]").unwrap_or_else(|e| panic!("{e}"));
        let seen = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
        let record = seen.clone();
        let apply: Apply = Arc::new(move |endpoints: Vec<EndpointSpec>| {
            let addresses = endpoints.into_iter().map(|e| e.address).collect();
            record
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(addresses);
        });
        let _watch = crate::spawn(
            &rpcgate_config::Discovery::File(path.clone()),
            "c",
            &tokio::runtime::Handle::current(),
            apply,
        );
        assert_eq!(sets(&seen, 1).await, [vec!["127.0.0.1:1".to_owned()]]);
        // An edit in place.
        std::fs::write(&path, "[\"127.0.0.1:1\", \"127.0.0.1:2\"]")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sets(&seen, 2).await[1], ["127.0.0.1:1", "127.0.0.1:2"]);
        // A broken file: nothing applied; then a replacement by rename is.
        std::fs::write(&path, "[\"127.0.0.1:1\",").unwrap_or_else(|e| panic!("{e}"));
        let staged = dir.join(".eps.json.tmp");
        std::fs::write(&staged, "[\"127.0.0.1:3\"]").unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            seen.lock().unwrap_or_else(|e| e.into_inner()).len(),
            2,
            "a broken file was applied"
        );
        std::fs::rename(&staged, &path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sets(&seen, 3).await[2], ["127.0.0.1:3"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
