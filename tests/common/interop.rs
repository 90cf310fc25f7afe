//! The Python grpcio interop driver (`tests/interop/grpcio_client.py`), run from the venv
//! that `scripts/test.sh` builds (`$RPCGATE_VENV`, else `<repo>/.venv`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The whole driver run (it bounds each of its calls at 15 s itself).
pub const DRIVER_BOUND: Duration = Duration::from_secs(180);

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The venv's python, if the venv exists.
pub fn venv_python() -> Option<PathBuf> {
    let venv = std::env::var_os("RPCGATE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"));
    let python = venv.join("bin").join("python");
    python.exists().then_some(python)
}

/// The venv's python for the `test` (named in the messages). Without a venv the test
/// fails under CI (`CI` set), since CI must run it, and is skipped with a notice on a
/// developer machine (`None`), so a plain `cargo test` works without Python.
pub fn venv_python_or_skip(test: &str) -> Option<PathBuf> {
    let python = venv_python();
    if python.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "no Python venv (set RPCGATE_VENV or create <repo>/.venv): CI must run the {test} test; scripts/test.sh builds it"
            );
        }
        eprintln!(
            "NOTICE: {test} test skipped: no venv at $RPCGATE_VENV or <repo>/.venv (run scripts/test.sh)"
        );
    }
    python
}

/// Runs the interop driver against `target` with these extra arguments, bounded by
/// [`DRIVER_BOUND`].
pub async fn run_driver(python: &Path, target: &str, args: &[&str]) -> Output {
    let script = repo_root().join("tests/interop/grpcio_client.py");
    let child = Command::new(python)
        .arg(&script)
        .arg(target)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let pid = child.id();
    // The backends and the proxy keep serving on the runtime while this thread waits.
    let waited = tokio::time::timeout(
        DRIVER_BOUND,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    match waited {
        Ok(joined) => joined.unwrap().unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("the grpcio driver did not finish within {DRIVER_BOUND:?}");
        }
    }
}
