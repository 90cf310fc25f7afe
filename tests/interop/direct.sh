#!/usr/bin/env bash
# Runs the grpcio interop client straight against one test backend (no proxy), to check
# the client and the backend agree before blaming the proxy. Needs the venv:
#   python3 -m venv .venv && .venv/bin/pip install -r tests/interop/requirements.txt
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
python="${PYTHON:-$root/.venv/bin/python}"

cargo build -q -p rpcgate-demo --example backend
log="$(mktemp)"
"$root/target/debug/examples/backend" 127.0.0.1:0 direct >"$log" 2>&1 &
backend_pid=$!
trap 'kill "$backend_pid" 2>/dev/null || true; wait "$backend_pid" 2>/dev/null || true; rm -f "$log"' EXIT

# Wait (bounded) for the "listening on ADDR" line.
addr=""
for _ in $(seq 1 100); do
  addr="$(sed -n 's/^listening on //p' "$log")"
  [ -n "$addr" ] && break
  kill -0 "$backend_pid" 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "backend did not start"; cat "$log"; exit 1; }

"$python" tests/interop/grpcio_client.py "$addr"
