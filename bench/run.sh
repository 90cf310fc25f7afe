#!/usr/bin/env bash
# rpcgate vs NGINX grpc_pass, side by side in one run (method: shared/research/performance.md).
#
# Layout: the proxy under test pinned to CPU 0; two `rpcgate backend` processes and h2load
# pinned to CPU 1; h2c over 127.0.0.1 only, ports picked free at run time. For each proxy
# and scenario a fresh proxy process is started, warmed up, measured (CPU from /proc, peak
# RSS, h2load calls/s and per-call latencies), checked with real gRPC calls, and stopped.
# Writes bench/RESULTS.md. See bench/README.md.
#
# Usage: bench/run.sh [--quick] [--no-build] [--keep] [--proxies "rpcgate nginx"]
set -euo pipefail

MODE=full
BUILD=1
KEEP=0
PROXIES="rpcgate nginx"
CMDLINE="bench/run.sh${*:+ $*}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) MODE=quick ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        --proxies) PROXIES="$2"; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
PY=(python3 "$BENCH/benchlib.py")
BIN="$ROOT/target/release/rpcgate"

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ scenarios
# name | message bytes | -c | -m | calls (full) | calls (quick) | time bound seconds
# Full mode takes ~1.5-2 minutes here (NGINX small is the longest run, ~30 s); the time bounds
# only bite when something stalls. Warm-ups (10% of the calls) are bounded by WARM_BOUND.
SCENARIOS=(
    "small   100     16 64  300000 40000 75"
    "single  100     1  100 200000 20000 45"
    "large   1048576 4  4   3000   300   45"
    "latency 100     1  1   50000  5000  45"
)
WARM_BOUND=20

# ------------------------------------------------------------------ prerequisites
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
need_apt=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx)
command -v h2load >/dev/null 2>&1 && command -v nghttp >/dev/null 2>&1 || need_apt+=(nghttp2-client)
if [[ ${#need_apt[@]} -gt 0 ]]; then
    log "installing missing tools: ${need_apt[*]}"
    as_root apt-get update -qq
    for pkg in "${need_apt[@]}"; do
        if [[ $pkg == nginx ]]; then
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light \
                || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx
        else
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg"
        fi
    done
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
for tool in h2load nghttp taskset timeout python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
[[ $(nproc) -ge 2 ]] || die "needs at least 2 CPUs (proxy on CPU 0, load + backends on CPU 1)"

if [[ $BUILD -eq 1 ]]; then
    log "building rpcgate (release)"
    (cd "$ROOT" && cargo build --release -p rpcgate) >&2
fi
[[ -x $BIN ]] || die "$BIN missing (build it or drop --no-build)"

# ------------------------------------------------------------------ process bookkeeping
WORK="$(mktemp -d /tmp/rpcgate-bench.XXXXXX)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [[ $alive -eq 0 ]] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [[ $KEEP -eq 1 ]]; then log "kept work files in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

busy_procs() {
    # Other engineers may be compiling: name what else is burning CPU right now.
    ps -eo comm= 2>/dev/null | grep -E '^(rustc|cargo|cc1|cc1plus|ld|lld|clang|rust-lld|build-script)' \
        | sort -u | paste -sd, - || true
}

# ------------------------------------------------------------------ payloads, backends
"${PY[@]}" payload 100 "$WORK/p100.bin"
"${PY[@]}" payload 1048576 "$WORK/p1048576.bin"

B1=$("${PY[@]}" freeport)
B2=$("${PY[@]}" freeport)
while [[ $B2 == "$B1" ]]; do B2=$("${PY[@]}" freeport); done
for i in 1 2; do
    port_var="B$i"
    taskset -c 1 "$BIN" backend --listen "127.0.0.1:${!port_var}" --name "b$i" \
        >"$WORK/backend$i.log" 2>&1 &
    PIDS+=($!)
done
"${PY[@]}" waitport "$B1" 15 || die "backend b1 did not start: $(cat "$WORK/backend1.log")"
"${PY[@]}" waitport "$B2" 15 || die "backend b2 did not start: $(cat "$WORK/backend2.log")"
log "backends b1=127.0.0.1:$B1 b2=127.0.0.1:$B2 (CPU 1)"

# ------------------------------------------------------------------ proxies
PROXY_PID=""
start_rpcgate() {
    local port=$1 dir="$WORK/rpcgate"
    mkdir -p "$dir"
    cat >"$dir/rpcgate.toml" <<EOF
[server]
workers = 1
drain_timeout = "1s"

[log]
level = "warn"
access_log = "off"

[[listeners]]
name = "bench"
address = "127.0.0.1:$port"

[[listeners.routes]]
match.path_prefix = "/"
cluster = "greeter"

[[clusters]]
name = "greeter"
endpoints = ["127.0.0.1:$B1", "127.0.0.1:$B2"]
EOF
    taskset -c 0 "$BIN" run -c "$dir/rpcgate.toml" >>"$dir/rpcgate.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    "${PY[@]}" waitport "$port" 15 || die "rpcgate did not start: $(tail -20 "$dir/rpcgate.log")"
}

start_nginx() {
    local port=$1 dir="$WORK/nginx"
    mkdir -p "$dir/tmp"
    local user_line=""
    [[ $EUID -eq 0 ]] && user_line="user root;"
    cat >"$dir/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    upstream greeter {
        server 127.0.0.1:$B1;
        server 127.0.0.1:$B2;
        keepalive 64;
        keepalive_requests 1000000000;
    }
    server {
        listen 127.0.0.1:$port http2;
        http2_max_concurrent_streams 256;
        keepalive_requests 1000000000;
        client_max_body_size 0;
        location / {
            grpc_pass grpc://greeter;
        }
    }
}
EOF
    taskset -c 0 "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" \
        >>"$dir/stdout.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    "${PY[@]}" waitport "$port" 15 || die "nginx did not start: $(tail -20 "$dir/error.log")"
    # Wait for the worker process, whose CPU we account for together with the master.
    for _ in $(seq 100); do
        [[ $("${PY[@]}" nprocs "$PROXY_PID") -ge 2 ]] && break
        sleep 0.05
    done
}

h2load_run() {
    # h2load_run URL PAYLOAD N C M BOUND OUT LOG
    local url=$1 payload=$2 n=$3 c=$4 m=$5 bound=$6 out=$7 logf=$8
    local args=(-n "$n" -c "$c" -m "$m" -t 1 -d "$payload"
        -H 'content-type: application/grpc' -H 'te: trailers')
    [[ -n $logf ]] && args+=(--log-file="$logf")
    timeout -k 5 "$bound" taskset -c 1 h2load "${args[@]}" "$url" >"$out" 2>&1 || true
}

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
BUSY_SEEN="$(busy_procs)"

for proxy in $PROXIES; do
    for spec in "${SCENARIOS[@]}"; do
        read -r scen size conns streams n_full n_quick bound <<<"$spec"
        n=$n_full
        [[ $MODE == quick ]] && n=$n_quick
        warm=$((n / 10))
        [[ $warm -lt $((conns * streams)) ]] && warm=$((conns * streams))
        port=$("${PY[@]}" freeport)
        url="http://127.0.0.1:$port/helloworld.Greeter/SayHello"
        payload="$WORK/p$size.bin"
        case "$proxy" in
            rpcgate) start_rpcgate "$port" ;;
            nginx) start_nginx "$port" ;;
            *) die "unknown proxy $proxy" ;;
        esac
        log "$proxy/$scen: warm-up $warm calls, then $n calls (-c $conns -m $streams, bound ${bound}s)"
        h2load_run "$url" "$payload" "$warm" "$conns" "$streams" "$WARM_BOUND" "$WORK/$proxy-$scen.warm.txt" ""
        cpu0=$("${PY[@]}" cpu "$PROXY_PID")
        read -r core_busy0 core_total0 < <("${PY[@]}" cpu0)
        h2load_run "$url" "$payload" "$n" "$conns" "$streams" "$bound" \
            "$WORK/$proxy-$scen.txt" "$WORK/$proxy-$scen.log"
        cpu1=$("${PY[@]}" cpu "$PROXY_PID")
        read -r core_busy1 core_total1 < <("${PY[@]}" cpu0)
        rss=$("${PY[@]}" rss "$PROXY_PID")
        check=$("${PY[@]}" check "$url" "$size" b1 b2 2>&1 | tail -1) || true
        BUSY_SEEN="$BUSY_SEEN${BUSY_SEEN:+; }$(busy_procs)"
        stop_pid "$PROXY_PID"
        parsed=$("${PY[@]}" h2parse "$WORK/$proxy-$scen.txt" "$WORK/$proxy-$scen.log" "$n")
        PROXY="$proxy" SCEN="$scen" CPU_US=$((cpu1 - cpu0)) \
            CORE_BUSY=$((core_busy1 - core_busy0)) CORE_TOTAL=$((core_total1 - core_total0)) RSS="$rss" CHECK="$check" \
            PARSED="$parsed" python3 -c '
import json, os
r = json.loads(os.environ["PARSED"])
r.update(proxy=os.environ["PROXY"], scenario=os.environ["SCEN"],
         cpu_us=int(os.environ["CPU_US"]), rss_kib=int(os.environ["RSS"]),
         check=os.environ["CHECK"].replace("|", "/"))
r["cpu_per_call"] = r["cpu_us"] / r["ok"] if r["ok"] else None
busy, total = int(os.environ["CORE_BUSY"]), int(os.environ["CORE_TOTAL"])
r["cpu0_other_pct"] = max(0, busy - r["cpu_us"]) * 100 / total if total else None
print(json.dumps(r))' >>"$RESULTS"
        log "$proxy/$scen: $(tail -1 "$RESULTS")"
        if ! grep -qE '"bad": 0[,}]' <<<"$parsed" || [[ $check != OK* ]]; then
            KEEP=1
            log "$proxy/$scen: FAILED CALLS or gRPC check failure; keeping $WORK for inspection"
        fi
        if ! grep -q 'finished in' "$WORK/$proxy-$scen.txt"; then
            log "$proxy/$scen: h2load did not finish; its output:"
            tail -20 "$WORK/$proxy-$scen.txt" >&2 || true
        fi
    done
done

# Reference: latency straight to one backend, no proxy in the path.
read -r _ size conns streams n_full n_quick bound <<<"${SCENARIOS[3]}"
n=$n_full
[[ $MODE == quick ]] && n=$n_quick
url="http://127.0.0.1:$B1/helloworld.Greeter/SayHello"
h2load_run "$url" "$WORK/p$size.bin" "$((n / 10))" 1 1 "$WARM_BOUND" "$WORK/direct.warm.txt" ""
h2load_run "$url" "$WORK/p$size.bin" "$n" 1 1 "$bound" "$WORK/direct.txt" "$WORK/direct.log"
"${PY[@]}" h2parse "$WORK/direct.txt" "$WORK/direct.log" "$n" >"$WORK/direct.json"

LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
BUSY_SEEN="$(tr ';' '\n' <<<"$BUSY_SEEN" | tr ',' '\n' | sed 's/^ *//' | grep -v '^$' | sort -u | paste -sd, - || true)"

DATE="$(date -u '+%Y-%m-%d %H:%M:%S UTC')" CMDLINE="$CMDLINE" MODE="$MODE" \
NPROC="$(nproc)" CPU_MODEL="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
KERNEL="$(uname -r)" COMMIT="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
NGINX_V="$("$NGINX" -v 2>&1)" H2LOAD_V="$(h2load --version 2>&1 | head -1)" \
LOAD_BEFORE="$LOAD_BEFORE" LOAD_AFTER="$LOAD_AFTER" BUSY="${BUSY_SEEN:-none}" \
DIRECT="$WORK/direct.json" python3 -c '
import json, os
e = os.environ
meta = dict(date=e["DATE"], command=e["CMDLINE"], mode=e["MODE"], nproc=e["NPROC"],
            cpu_model=e["CPU_MODEL"], kernel=e["KERNEL"], rpcgate_commit=e["COMMIT"],
            nginx_version=e["NGINX_V"], h2load_version=e["H2LOAD_V"],
            load_before=e["LOAD_BEFORE"], load_after=e["LOAD_AFTER"], busy=e["BUSY"])
with open(e["DIRECT"]) as f:
    meta["direct"] = json.load(f)
print(json.dumps(meta))' >"$WORK/meta.json"

"${PY[@]}" report "$RESULTS" "$WORK/meta.json" "$BENCH/RESULTS.md"
log "wrote $BENCH/RESULTS.md"
