#!/usr/bin/env bash
# rpcgate vs NGINX grpc_pass vs HAProxy (proto h2), side by side in one run
# (method: bench/README.md).
#
# Layout: the proxy under test pinned to CPU 0; two `rpcgate backend` processes and h2load
# pinned to CPU 1; h2c over 127.0.0.1 only, ports picked free at run time. For each proxy
# and scenario a fresh proxy process is started, warmed up, measured (CPU from /proc, peak
# RSS, h2load calls/s and per-call latencies), checked with real gRPC calls, and stopped.
# TLS scenarios (tls-small, tls-handshake): all proxies terminate TLS with the SAME
# certificate and key (`rpcgate certs`, generated once per run) and speak h2c to the backends.
# "haproxy-1m" is HAProxy again with 1 MiB HTTP/2 windows, run in the large scenario only.
# Writes bench/RESULTS.md. See bench/README.md.
#
# Usage: bench/run.sh [--quick] [--no-build] [--keep]
#                     [--proxies "rpcgate rpcgate-admin nginx haproxy haproxy-1m"]
#                     (rpcgate-admin: rpcgate with [admin], i.e. metrics on;
#                      rpcgate-edge: rpcgate with allow/deny and a per-client rate limit
#                      (never reached) on the listener)
#                     [--tls-only | --no-tls] [--out FILE]
set -euo pipefail

MODE=full
BUILD=1
KEEP=0
PROXIES="rpcgate rpcgate-admin nginx haproxy haproxy-1m"
PLAIN=1
TLS=1
OUT=""
CMDLINE="bench/run.sh${*:+ $*}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) MODE=quick ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        --proxies) PROXIES="$2"; shift ;;
        --tls-only) PLAIN=0 ;;
        --no-tls) TLS=0 ;;
        --out) OUT="$2"; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
[[ $PLAIN -eq 1 || $TLS -eq 1 ]] || { echo "--tls-only and --no-tls exclude each other" >&2; exit 2; }
# A partial run (--tls-only) must not overwrite the committed full results.
if [[ -z $OUT ]]; then
    if [[ $PLAIN -eq 1 ]]; then OUT="$BENCH/RESULTS.md"; else OUT="$BENCH/out/RESULTS-tls-only.md"; fi
fi
mkdir -p "$(dirname "$OUT")"
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

# TLS scenarios, same columns. tls-small is the small scenario over TLS (h2load https://,
# ALPN h2). tls-handshake: "-c" is the batch size: repeated `h2load -c B -n B -m 1` runs,
# each connection one full handshake + one call; "calls" is the number of connections and
# the time bound covers all batches together.
TLS_SCENARIOS=(
    "tls-small     100 16  64 300000 40000 75"
    "tls-handshake 100 128 1  20000  3000  60"
)

# ------------------------------------------------------------------ prerequisites
as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
need_apt=()
wants() { [[ " $PROXIES " == *" $1 "* ]]; }
if wants nginx; then
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx)
fi
if wants haproxy || wants haproxy-1m; then
    command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || need_apt+=(haproxy)
fi
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
HAPROXY="$(command -v haproxy || echo /usr/sbin/haproxy)"
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

# ------------------------------------------------------------------ payloads, PKI, backends
"${PY[@]}" payload 100 "$WORK/p100.bin"
CERTS="$WORK/certs"
if [[ $TLS -eq 1 ]]; then
    # One development PKI per run (ECDSA P-256), used by BOTH proxies.
    "$BIN" certs --dir "$CERTS" --hosts localhost,127.0.0.1 >"$WORK/certs.log" 2>&1 \
        || die "rpcgate certs failed: $(cat "$WORK/certs.log")"
fi
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
    # start_rpcgate PORT [tls] [admin|edge]   (admin: with an [admin] API, i.e. metrics on;
    # edge: with allow/deny lists and a per-client rate limit, set above any load h2load
    # makes, on the listener: what the checks cost, not refusals)
    local port=$1 tls=${2:-} admin=${3:-} dir="$WORK/rpcgate"
    local acl=""
    if [[ $admin == edge ]]; then
        acl='allow = ["127.0.0.0/8"]
deny = ["10.0.0.0/8", "192.168.0.0/16"]
rate_limit = { requests_per_second = 1000000, burst = 100000, per = "client_ip" }'
    fi
    mkdir -p "$dir"
    local admin_table=""
    if [[ $admin == admin ]]; then
        admin_table="[admin]
address = \"127.0.0.1:$("${PY[@]}" freeport)\""
    fi
    local tls_table=""
    if [[ $tls == tls ]]; then
        # rustls defaults apply: a 256-entry server session cache, no ticketer (TLS 1.3
        # "tickets" are stateful ids into that cache), 2 tickets sent per handshake.
        tls_table="[listeners.tls]
cert = \"$CERTS/server-cert.pem\"
key = \"$CERTS/server-key.pem\""
    fi
    cat >"$dir/rpcgate.toml" <<EOF
[server]
workers = 1
drain_timeout = "1s"
$admin_table

[log]
level = "warn"
access_log = "off"

[[listeners]]
name = "bench"
address = "127.0.0.1:$port"
$acl
$tls_table

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
    # start_nginx PORT [tls]
    local port=$1 tls=${2:-} dir="$WORK/nginx"
    mkdir -p "$dir/tmp"
    local listen="listen 127.0.0.1:$port http2;"
    if [[ $tls == tls ]]; then
        # Same certificate and key as rpcgate; no session cache and no tickets, so every
        # new connection is a full handshake whatever the client does.
        listen="listen 127.0.0.1:$port ssl http2;
        ssl_certificate $CERTS/server-cert.pem;
        ssl_certificate_key $CERTS/server-key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        ssl_session_cache off;"
    fi
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
        $listen
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

start_haproxy() {
    # start_haproxy PORT [tls] [window]
    # One process (`-db`: foreground, no master-worker), one thread, HTTP/2 on both sides,
    # requests balanced per stream over multiplexed backend connections (`http-reuse always`).
    # No `log` lines: nothing is logged. WINDOW, when given, sets tune.h2.initial-window-size
    # (HAProxy 2.6 has only this global knob, no fe/be variants): the per-stream receive
    # window HAProxy advertises to clients and backends, 65,535 bytes by default.
    local port=$1 tls=${2:-} window=${3:-} dir="$WORK/haproxy"
    mkdir -p "$dir"
    local bind="bind 127.0.0.1:$port proto h2"
    local tune=""
    if [[ $tls == tls ]]; then
        # Same certificate and key as the others, concatenated into one PEM as HAProxy
        # wants it; TLS 1.2+, no session tickets and no session cache, so every new
        # connection is a full handshake whatever the client does (as for NGINX).
        # prefer-client-ciphers: follow the client's cipher order as NGINX and rpcgate do
        # (HAProxy otherwise imposes OpenSSL's order and picks AES-256-GCM, not AES-128).
        cat "$CERTS/server-cert.pem" "$CERTS/server-key.pem" >"$dir/server.pem"
        bind="bind 127.0.0.1:$port ssl crt $dir/server.pem alpn h2 ssl-min-ver TLSv1.2 no-tls-tickets prefer-client-ciphers"
        tune="tune.ssl.cachesize 0"
    fi
    [[ -n $window ]] && tune="$tune
    tune.h2.initial-window-size $window"
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8192
    $tune

defaults
    mode http
    timeout connect 30s
    timeout client 30s
    timeout server 30s
    option http-keep-alive

frontend bench
    $bind
    default_backend greeter

backend greeter
    balance roundrobin
    http-reuse always
    server b1 127.0.0.1:$B1 proto h2
    server b2 127.0.0.1:$B2 proto h2
EOF
    taskset -c 0 "$HAPROXY" -db -f "$dir/haproxy.cfg" >>"$dir/haproxy.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    "${PY[@]}" waitport "$port" 15 || die "haproxy did not start: $(tail -20 "$dir/haproxy.log")"
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

RUN_SCENARIOS=()
[[ $PLAIN -eq 1 ]] && RUN_SCENARIOS+=("${SCENARIOS[@]}")
[[ $TLS -eq 1 ]] && RUN_SCENARIOS+=("${TLS_SCENARIOS[@]}")

for proxy in $PROXIES; do
    for spec in "${RUN_SCENARIOS[@]}"; do
        read -r scen size conns streams n_full n_quick bound <<<"$spec"
        # The 1 MiB-window HAProxy variant only matters where bodies exceed 64 KiB.
        [[ $proxy == haproxy-1m && $scen != large ]] && continue
        n=$n_full
        [[ $MODE == quick ]] && n=$n_quick
        warm=$((n / 10))
        [[ $warm -lt $((conns * streams)) ]] && warm=$((conns * streams))
        port=$("${PY[@]}" freeport)
        tls=""
        scheme=http
        if [[ $scen == tls-* ]]; then tls=tls; scheme=https; fi
        url="$scheme://127.0.0.1:$port/helloworld.Greeter/SayHello"
        payload="$WORK/p$size.bin"
        case "$proxy" in
            rpcgate) start_rpcgate "$port" "$tls" ;;
            rpcgate-admin) start_rpcgate "$port" "$tls" admin ;;
            rpcgate-edge) start_rpcgate "$port" "$tls" edge ;;
            nginx) start_nginx "$port" "$tls" ;;
            haproxy) start_haproxy "$port" "$tls" ;;
            haproxy-1m) start_haproxy "$port" "$tls" 1048576 ;;
            *) die "unknown proxy $proxy" ;;
        esac
        probe='{}'
        if [[ $scen == tls-handshake ]]; then
            log "$proxy/$scen: warm-up $warm connections, then $n new TLS connections with one call each (batches of $conns, bound ${bound}s)"
            mkdir -p "$WORK/$proxy-$scen.warm" "$WORK/$proxy-$scen"
            timeout -k 5 $((WARM_BOUND + 25)) taskset -c 1 "${PY[@]}" hsloop "$url" "$payload" \
                "$warm" "$conns" "$WARM_BOUND" "$WORK/$proxy-$scen.warm" >"$WORK/$proxy-$scen.warm.json" || true
            cpu0=$("${PY[@]}" cpu "$PROXY_PID")
            read -r core_busy0 core_total0 < <("${PY[@]}" cpu0)
            parsed=$(timeout -k 5 $((bound + 25)) taskset -c 1 "${PY[@]}" hsloop "$url" "$payload" \
                "$n" "$conns" "$bound" "$WORK/$proxy-$scen") \
                || parsed="{\"requested\": $n, \"ok\": 0, \"bad\": $n, \"completed\": false}"
            cpu1=$("${PY[@]}" cpu "$PROXY_PID")
            read -r core_busy1 core_total1 < <("${PY[@]}" cpu0)
            probe=$("${PY[@]}" tlsprobe "$port" "$CERTS/ca-cert.pem" 2>/dev/null) || probe='{"probed": false}'
        else
            log "$proxy/$scen: warm-up $warm calls, then $n calls (-c $conns -m $streams, bound ${bound}s)"
            h2load_run "$url" "$payload" "$warm" "$conns" "$streams" "$WARM_BOUND" "$WORK/$proxy-$scen.warm.txt" ""
            cpu0=$("${PY[@]}" cpu "$PROXY_PID")
            read -r core_busy0 core_total0 < <("${PY[@]}" cpu0)
            h2load_run "$url" "$payload" "$n" "$conns" "$streams" "$bound" \
                "$WORK/$proxy-$scen.txt" "$WORK/$proxy-$scen.log"
            cpu1=$("${PY[@]}" cpu "$PROXY_PID")
            read -r core_busy1 core_total1 < <("${PY[@]}" cpu0)
            parsed=$("${PY[@]}" h2parse "$WORK/$proxy-$scen.txt" "$WORK/$proxy-$scen.log" "$n")
        fi
        rss=$("${PY[@]}" rss "$PROXY_PID")
        check=$("${PY[@]}" check "$url" "$size" b1 b2 2>&1 | tail -1) || true
        BUSY_SEEN="$BUSY_SEEN${BUSY_SEEN:+; }$(busy_procs)"
        stop_pid "$PROXY_PID"
        PROXY="$proxy" SCEN="$scen" CPU_US=$((cpu1 - cpu0)) \
            CORE_BUSY=$((core_busy1 - core_busy0)) CORE_TOTAL=$((core_total1 - core_total0)) RSS="$rss" CHECK="$check" \
            PARSED="$parsed" PROBE="$probe" python3 -c '
import json, os
r = json.loads(os.environ["PARSED"])
r.update(proxy=os.environ["PROXY"], scenario=os.environ["SCEN"],
         cpu_us=int(os.environ["CPU_US"]), rss_kib=int(os.environ["RSS"]),
         check=os.environ["CHECK"].replace("|", "/"))
probe = json.loads(os.environ["PROBE"])
if probe:
    r["probe"] = probe
r["cpu_per_call"] = r["cpu_us"] / r["ok"] if r["ok"] else None
busy, total = int(os.environ["CORE_BUSY"]), int(os.environ["CORE_TOTAL"])
r["cpu0_other_pct"] = max(0, busy - r["cpu_us"]) * 100 / total if total else None
r["cpu0_busy_pct"] = busy * 100 / total if total else None
print(json.dumps(r))' >>"$RESULTS"
        log "$proxy/$scen: $(tail -1 "$RESULTS")"
        if ! grep -qE '"bad": 0[,}]' <<<"$parsed" || [[ $check != OK* ]]; then
            KEEP=1
            log "$proxy/$scen: FAILED CALLS or gRPC check failure; keeping $WORK for inspection"
        fi
        if [[ $scen != tls-handshake ]] && ! grep -q 'finished in' "$WORK/$proxy-$scen.txt"; then
            log "$proxy/$scen: h2load did not finish; its output:"
            tail -20 "$WORK/$proxy-$scen.txt" >&2 || true
        fi
    done
done

# Reference: latency straight to one backend, no proxy in the path.
if [[ $PLAIN -eq 1 ]]; then
    read -r _ size conns streams n_full n_quick bound <<<"${SCENARIOS[3]}"
    n=$n_full
    [[ $MODE == quick ]] && n=$n_quick
    url="http://127.0.0.1:$B1/helloworld.Greeter/SayHello"
    h2load_run "$url" "$WORK/p$size.bin" "$((n / 10))" 1 1 "$WARM_BOUND" "$WORK/direct.warm.txt" ""
    h2load_run "$url" "$WORK/p$size.bin" "$n" 1 1 "$bound" "$WORK/direct.txt" "$WORK/direct.log"
    "${PY[@]}" h2parse "$WORK/direct.txt" "$WORK/direct.log" "$n" >"$WORK/direct.json"
else
    echo 'null' >"$WORK/direct.json"
fi

# Does h2load ever offer a saved TLS session (which would make some handshakes resumptions)?
# It resumes only through OpenSSL's SSL_set_session; look for that import.
H2LOAD_RESUMES="unknown (nm not available)"
if [[ $TLS -eq 1 ]] && command -v nm >/dev/null 2>&1; then
    if nm -D "$(command -v h2load)" 2>/dev/null | grep -q 'SSL_set_session'; then
        H2LOAD_RESUMES="possibly (h2load imports SSL_set_session)"
    else
        H2LOAD_RESUMES="no (h2load does not import SSL_set_session: every connection is a full handshake)"
    fi
fi

LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
BUSY_SEEN="$(tr ';' '\n' <<<"$BUSY_SEEN" | tr ',' '\n' | sed 's/^ *//' | grep -v '^$' | sort -u | paste -sd, - || true)"

DATE="$(date -u '+%Y-%m-%d %H:%M:%S UTC')" CMDLINE="$CMDLINE" MODE="$MODE" \
NPROC="$(nproc)" CPU_MODEL="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
KERNEL="$(uname -r)" COMMIT="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
NGINX_V="$( (wants nginx && "$NGINX" -v 2>&1) || echo 'nginx not run')" \
HAPROXY_V="$( (wants haproxy || wants haproxy-1m) && "$HAPROXY" -v 2>/dev/null | head -1 || echo 'haproxy not run')" \
H2LOAD_V="$(h2load --version 2>&1 | head -1)" \
LOAD_BEFORE="$LOAD_BEFORE" LOAD_AFTER="$LOAD_AFTER" BUSY="${BUSY_SEEN:-none}" \
H2LOAD_RESUMES="$H2LOAD_RESUMES" OPENSSL_V="$(openssl version 2>/dev/null || echo unknown)" \
DIRECT="$WORK/direct.json" python3 -c '
import json, os
e = os.environ
meta = dict(date=e["DATE"], command=e["CMDLINE"], mode=e["MODE"], nproc=e["NPROC"],
            cpu_model=e["CPU_MODEL"], kernel=e["KERNEL"], rpcgate_commit=e["COMMIT"],
            nginx_version=e["NGINX_V"], haproxy_version=e["HAPROXY_V"], h2load_version=e["H2LOAD_V"],
            load_before=e["LOAD_BEFORE"], load_after=e["LOAD_AFTER"], busy=e["BUSY"],
            h2load_resumes=e["H2LOAD_RESUMES"], openssl_version=e["OPENSSL_V"])
with open(e["DIRECT"]) as f:
    meta["direct"] = json.load(f)
print(json.dumps(meta))' >"$WORK/meta.json"

"${PY[@]}" report "$RESULTS" "$WORK/meta.json" "$OUT"
log "wrote $OUT"
