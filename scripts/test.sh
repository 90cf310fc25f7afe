#!/usr/bin/env bash
# The one command that runs rpcgate's whole suite on a fresh Debian machine that has a
# Rust toolchain: it installs what the tests and benchmarks need (only what is missing),
# builds the Python venv for the grpcio interop test, then runs rustfmt, clippy and every
# test. CI runs it through .ci/run; developers run it as is.
#
#   bash scripts/test.sh
#
# Environment: RPCGATE_VENV (default <repo>/.venv) is where the venv goes; it is exported
# so that the interop test finds it. CI=1 makes a missing venv a test failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

step() { printf '\n==> %s\n' "$*"; }

# 1. Debian packages the tests and benchmarks use: nginx (comparison target), nghttp2's
#    h2load/nghttp (load and HTTP/2 probes), etcd (discovery), python3-venv (interop),
#    chromium (the dashboard test, headless; never a browser downloaded by npm).
packages=(nginx nghttp2-client etcd-server python3-venv chromium)
if command -v dpkg-query >/dev/null && command -v apt-get >/dev/null; then
  missing=()
  for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$package")
    fi
  done
  if ((${#missing[@]})); then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    step "installing ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
else
  echo "not a Debian system: make sure ${packages[*]} (or equivalents) are installed" >&2
fi

# 2. The venv for tests/interop (idempotent: reinstalls only when requirements change).
venv="${RPCGATE_VENV:-$root/.venv}"
requirements="tests/interop/requirements.txt"
stamp="$venv/.rpcgate-requirements"
if ! "$venv/bin/python" -c '' 2>/dev/null; then
  step "creating the Python venv in $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
fi
if ! cmp -s "$requirements" "$stamp"; then
  step "installing $requirements"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi
export RPCGATE_VENV="$venv"

# 3. The dashboard test's driver: playwright-core from npm (locked), run on Debian's
#    Chromium. Reinstalled only when the lock file changes.
dashboard="tests/dashboard"
if ! cmp -s "$dashboard/package-lock.json" "$dashboard/node_modules/.rpcgate-lock" 2>/dev/null; then
  step "npm ci in $dashboard"
  (cd "$dashboard" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$dashboard/package-lock.json" "$dashboard/node_modules/.rpcgate-lock"
fi
export RPCGATE_REQUIRE_BROWSER=1
# etcd-server was installed above: the etcd suites must run, not skip.
export RPCGATE_REQUIRE_ETCD=1

# 4. Rust: format, lints, tests.
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 && command -v rustup >/dev/null; then
    rustup component add "$component"
  fi
done

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
  # nextest runs each test in its own process (no cross-test interference) but skips
  # doc tests: run those first, so that nextest's summary is the closing line.
  step "cargo test --doc"
  cargo test --workspace --doc
  step "cargo nextest run"
  cargo nextest run --workspace --no-fail-fast
else
  step "cargo test"
  cargo test --workspace --no-fail-fast
fi
