#!/usr/bin/env bash
# What rpcgate-client costs per call over a plain tonic Channel (issue 11's budget: at most
# 5 µs of CPU per call). Starts one release-built `rpcgate backend` pinned to CPU 1 and runs
# crates/client/examples/overhead.rs pinned to CPU 0, which alternates rounds of sequential
# unary calls through a Channel and through a one-endpoint Client and prints the CPU per
# call of each. Run it alone on the machine.
#
#   bench/client.sh [--calls N] [--rounds N]     (defaults 30000 and 3; about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p rpcgate -p rpcgate-client --example overhead
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
taskset -c 1 target/release/rpcgate backend --listen "127.0.0.1:$port" --name bench >/dev/null 2>&1 &
backend=$!
trap 'kill $backend 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.05
done
taskset -c 0 target/release/examples/overhead --backend "127.0.0.1:$port" "$@"
