#!/usr/bin/env python3
"""Small helpers for bench/run.sh (Python 3.11 standard library only).

Why a helper: bash is fine for starting and pinning processes, but payload encoding,
/proc accounting over a process tree, percentile maths, nghttp output checking and the
Markdown report are clearer and safer here. Every subcommand prints to stdout and exits
non-zero on error.

Subcommands:
  payload SIZE OUT            write one gRPC request: 5-byte prefix + HelloRequest{name}
                              whose serialized message is exactly SIZE bytes
  freeport                    print a currently free TCP port on 127.0.0.1
  waitport PORT SECONDS       wait until 127.0.0.1:PORT accepts connections
  cpu PID                     utime+stime (µs) of PID and all its descendants
  rss PID                     sum of VmHWM (KiB) of PID and all its descendants
  nprocs PID                  number of processes in PID's tree
  cpu0                        CPU 0 busy and total time (µs) from /proc/stat, "busy total"
  h2parse OUT LOG N           parse an h2load output + --log-file into one JSON object
  hsloop URL PAYLOAD TOTAL BATCH BOUND OUTDIR
                              TLS handshake load: repeated `h2load -c BATCH -n BATCH -m 1`
                              (one new connection = one full handshake + one call each)
                              until TOTAL connections or BOUND seconds; one JSON object
  tlsprobe PORT CAFILE        what the TLS server does about resumption (openssl s_client)
  check URL SIZE NAME...      real gRPC calls through URL with nghttp, checking
                              :status, grpc-status trailer and the reply message
  report RESULTS.jsonl META.json OUT.md   render the Markdown report
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- payloads


def varint(n: int) -> bytes:
    """Protobuf base-128 varint."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def hello_request(size: int) -> tuple[bytes, str]:
    """A HelloRequest{name=1} serialized to exactly `size` bytes, and its name."""
    for name_len in range(size, -1, -1):
        if 1 + len(varint(name_len)) + name_len == size:
            name = "x" * name_len
            msg = b"\x0a" + varint(name_len) + name.encode()
            return msg, name
    raise SystemExit(f"cannot build a {size}-byte HelloRequest")


def grpc_frame(msg: bytes) -> bytes:
    """gRPC length-prefixed message, uncompressed."""
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def cmd_payload(size: str, out: str) -> None:
    msg, _ = hello_request(int(size))
    with open(out, "wb") as f:
        f.write(grpc_frame(msg))


# ---------------------------------------------------------------- ports


def cmd_freeport() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def cmd_waitport(port: str, seconds: str) -> None:
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", int(port)), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"127.0.0.1:{port} not accepting after {seconds}s")


# ---------------------------------------------------------------- /proc


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 is index 0)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """root and all its live descendants (nginx master + workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _stat(int(entry))
        if st is None:
            continue
        children.setdefault(int(st[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if _stat(pid) is None:
            continue
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cmd_cpu(pid: str) -> None:
    ticks = 0
    for p in tree(int(pid)):
        st = _stat(p)
        if st is not None:
            ticks += int(st[11]) + int(st[12])  # utime, stime (fields 14, 15)
    print(ticks * 1_000_000 // CLK_TCK)


def cmd_rss(pid: str) -> None:
    total = 0
    for p in tree(int(pid)):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    print(total)


def cmd_nprocs(pid: str) -> None:
    print(len(tree(int(pid))))


def cpu_counters(n: int) -> tuple[int, int]:
    """Busy and total time (µs) of CPU n from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{n} "):
                v = [int(x) for x in line.split()[1:]]
                # user nice system idle iowait irq softirq steal
                busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
                total = busy + v[3] + v[4]
                return busy * 1_000_000 // CLK_TCK, total * 1_000_000 // CLK_TCK
    raise SystemExit(f"no cpu{n} line in /proc/stat")


def cmd_cpu0() -> None:
    """CPU 0 counters, to tell how much of CPU 0 something other than the proxy used."""
    busy, total = cpu_counters(0)
    print(busy, total)


# ---------------------------------------------------------------- h2load


def percentile(sorted_vals: list[int], q: float) -> int | None:
    """Nearest-rank percentile."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(q / 100 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def tls_info(text: str) -> dict:
    """What h2load negotiated (TLS version, cipher, key exchange, ALPN), if it printed it."""
    out = {}
    for key, label in [("tls_protocol", "TLS Protocol"), ("tls_cipher", "Cipher"),
                       ("tls_kx", "Server Temp Key"), ("alpn", "Application protocol")]:
        m = re.search(rf"^{label}: (.+)$", text, re.M)
        if m:
            out[key] = m.group(1).strip()
    return out


def cmd_h2parse(out_path: str, log_path: str, n: str) -> None:
    requested = int(n)
    try:
        with open(out_path, errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    r: dict = {"requested": requested}
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        text,
    )
    if m:
        keys = ["total", "started", "done", "succeeded", "failed", "errored", "timeout"]
        r.update({k: int(v) for k, v in zip(keys, m.groups())})
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        r["s2xx"], r["s3xx"], r["s4xx"], r["s5xx"] = map(int, m.groups())
    m = re.search(r"finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", text)
    if m:
        scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
        r["seconds"] = float(m.group(1)) * scale
        r["rps"] = float(m.group(3))
    r["completed"] = bool(m)
    r.update(tls_info(text))
    durations: list[int] = []
    non2xx_logged = 0
    bad_status: dict[int, int] = {}
    try:
        with open(log_path) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) < 3:
                    continue
                status = int(parts[1])
                if 200 <= status < 300:
                    durations.append(int(parts[2]))
                else:
                    non2xx_logged += 1
                    bad_status[status] = bad_status.get(status, 0) + 1
    except OSError:
        pass
    durations.sort()
    r["logged_ok"] = len(durations)
    r["logged_bad"] = non2xx_logged
    # h2load logs status -1 (or 0) for calls that got no response at all.
    r["bad_status"] = {str(k): v for k, v in sorted(bad_status.items())}
    r["p50_us"] = percentile(durations, 50)
    r["p99_us"] = percentile(durations, 99)
    ok = r.get("s2xx", 0)
    r["ok"] = ok
    # Everything requested that did not come back 2xx: failed, errored, timed out,
    # non-2xx, or never sent because the run was cut by the time bound.
    r["bad"] = requested - ok
    print(json.dumps(r))


def tcp_passive_opens() -> int:
    """Host-wide count of accepted TCP connections (Tcp PassiveOpens in /proc/net/snmp)."""
    with open("/proc/net/snmp") as f:
        lines = [ln.split() for ln in f if ln.startswith("Tcp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("PassiveOpens")])


def cmd_hsloop(url: str, payload: str, total: str, batch: str, bound: str, outdir: str) -> None:
    """Handshakes per second: many new TLS connections, each doing exactly one call.

    `h2load -c B -n B -m 1` opens B connections at once and makes one call on each, so every
    2xx call is one completed full TLS handshake (h2load never offers a session to resume:
    it does not call SSL_set_session). Batches run back to back until TOTAL connections or
    BOUND seconds; a batch cut by the bound, and batches never started, count as failed.
    Run pinned to the load CPU (h2load inherits the affinity). Also measures how busy CPU 1
    (the client side) was, to tell whether the client, not the proxy, set the pace.
    """
    want, size, limit = int(total), int(batch), float(bound)
    args_base = ["-m", "1", "-t", "1", "-d", payload,
                 "-H", "content-type: application/grpc", "-H", "te: trailers"]
    agg = {"requested": want, "ok": 0, "batches": 0, "failed": 0, "errored": 0,
           "timeout": 0, "s3xx": 0, "s4xx": 0, "s5xx": 0, "h2load_seconds": 0.0}
    connect_ms_weighted = 0.0
    done = 0
    completed = True
    c1_busy0, c1_total0 = cpu_counters(1)
    accepts0 = tcp_passive_opens()
    clients = 0
    start = time.monotonic()
    first_text = ""
    while done < want:
        left = limit - (time.monotonic() - start)
        if left <= 0.5:
            completed = False
            break
        b = min(size, want - done)
        args = ["h2load", "-c", str(b), "-n", str(b), *args_base, url]
        try:
            proc = subprocess.run(args, capture_output=True, timeout=min(20.0, left),
                                  check=False)
            text = proc.stdout.decode(errors="replace")
        except subprocess.TimeoutExpired:
            completed = False
            break
        done += b
        agg["batches"] += 1
        m = re.search(r"spawning thread #0: (\d+) total client\(s\)", text)
        if m:
            clients += int(m.group(1))
        if not first_text:
            first_text = text
            with open(os.path.join(outdir, "first-batch.txt"), "w") as f:
                f.write(text)
        m = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
        if m:
            agg["failed"] += int(m.group(1))
            agg["errored"] += int(m.group(2))
            agg["timeout"] += int(m.group(3))
        m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
        if m:
            ok = int(m.group(1))
            agg["ok"] += ok
            agg["s3xx"] += int(m.group(2))
            agg["s4xx"] += int(m.group(3))
            agg["s5xx"] += int(m.group(4))
        else:
            with open(os.path.join(outdir, f"bad-batch-{agg['batches']}.txt"), "w") as f:
                f.write(text + proc.stderr.decode(errors="replace"))
        m = re.search(r"finished in ([\d.]+)(us|ms|s),", text)
        if m:
            agg["h2load_seconds"] += float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]
        m = re.search(r"time for connect:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", text)
        if m:
            ms = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
            connect_ms_weighted += ms * b
    wall = time.monotonic() - start
    c1_busy1, c1_total1 = cpu_counters(1)
    # Cross-checks that every call had its own connection: h2load's client count, and how
    # many TCP connections the host accepted meanwhile (the proxy's accepts, plus any new
    # proxy-to-backend connections).
    agg["clients"] = clients
    agg["tcp_accepts"] = tcp_passive_opens() - accepts0
    agg["completed"] = completed
    agg["seconds"] = wall
    agg["rps"] = agg["ok"] / wall if wall > 0 else None
    agg["connections_started"] = done
    agg["connect_ms_mean"] = connect_ms_weighted / done if done else None
    agg["cpu1_busy_pct"] = ((c1_busy1 - c1_busy0) * 100 / (c1_total1 - c1_total0)
                            if c1_total1 > c1_total0 else None)
    agg["bad"] = want - agg["ok"]
    agg["p50_us"] = agg["p99_us"] = None
    agg.update(tls_info(first_text))
    print(json.dumps(agg))


def cmd_tlsprobe(port: str, cafile: str) -> None:
    """Record what the server does about session resumption, with two `openssl s_client` runs.

    Prints JSON: how many NewSessionTicket messages the server sends after a full TLS 1.3
    handshake, and whether a second connection offering the saved session is resumed.
    """
    import shutil
    import tempfile

    if not shutil.which("openssl"):
        print(json.dumps({"probed": False}))
        return
    with tempfile.TemporaryDirectory(prefix="rpcgate-bench-probe-") as d:
        sess = os.path.join(d, "sess.pem")
        base = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-alpn", "h2",
                "-CAfile", cafile]

        def run(extra: list[str]) -> str:
            # s_client needs a moment after the handshake to read the tickets; the stdin
            # pipe closes after a short delay so it then exits.
            p = subprocess.Popen(base + extra, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)
            try:
                time.sleep(0.5)
                out, _ = p.communicate(b"", timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
            return out.decode(errors="replace")

        first = run(["-msg", "-sess_out", sess])
        second = run(["-sess_in", sess]) if os.path.exists(sess) else ""
    tickets = len(re.findall(r"<<< TLS 1\.3, Handshake \[length [0-9a-f]+\], NewSessionTicket",
                             first))
    proto = re.search(r"^(New|Reused), (TLSv[\d.]+), Cipher is (\S+)", first, re.M)
    print(json.dumps({
        "probed": True,
        "protocol": proto.group(2) if proto else None,
        "tickets": tickets,
        "resumed": bool(re.search(r"^Reused,", second, re.M)),
        "verified": "Verify return code: 0 (ok)" in first,
    }))


# ---------------------------------------------------------------- correctness


def _nghttp(url: str, body: str, verbose: bool, multiply: int) -> bytes:
    args = ["nghttp", "-t", "20", "-d", body, "-H", "content-type: application/grpc",
            "-H", "te: trailers", "-w", "24", "-W", "24"]
    if verbose:
        args += ["-v", "-n"]
    if multiply > 1:
        args += ["-m", str(multiply)]
    args.append(url)
    return subprocess.run(args, capture_output=True, timeout=60, check=False).stdout


def cmd_check(url: str, size: str, *backends: str) -> None:
    """Prove the calls really succeed at the gRPC level, which h2load cannot see.

    1. N calls multiplexed on one connection (nghttp -v): every response must carry
       :status 200 and a `grpc-status: 0` trailer, and replies must come from every backend.
    2. Two sequential calls without -v: the body must be one gRPC message holding
       HelloReply{message="Hello <name> from <backend>"} for the name we sent.
    """
    msg, name = hello_request(int(size))
    body_path = f"/tmp/rpcgate-bench-check-{os.getpid()}.bin"
    with open(body_path, "wb") as f:
        f.write(grpc_frame(msg))
    problems: list[str] = []
    try:
        n = 10 if int(size) < 65536 else 4
        out = _nghttp(url, body_path, verbose=True, multiply=n).decode(errors="replace")
        st200 = len(re.findall(r"recv \(stream_id=\d+\) :status: 200", out))
        gs0 = len(re.findall(r"recv \(stream_id=\d+\) grpc-status: 0\b", out))
        seen = set(re.findall(r"recv \(stream_id=\d+\) x-backend: (\S+)", out))
        if st200 != n:
            problems.append(f":status 200 on {st200}/{n} calls")
        if gs0 != n:
            problems.append(f"grpc-status 0 on {gs0}/{n} calls")
        if n >= len(backends) and not set(backends) <= seen:
            problems.append(f"replies from {sorted(seen)}, expected all of {list(backends)}")
        for _ in range(2):
            raw = _nghttp(url, body_path, verbose=False, multiply=1)
            if len(raw) < 5:
                problems.append(f"reply body of {len(raw)} bytes")
                continue
            flag, length = raw[0], struct.unpack(">I", raw[1:5])[0]
            reply = raw[5:]
            if flag != 0 or length != len(reply):
                problems.append(f"reply frame flag={flag} len={length} body={len(reply)}")
                continue
            want = [f"Hello {name} from {b}".encode() for b in backends]
            # HelloReply: tag 0x0a, varint length, message
            ok = any(reply == b"\x0a" + varint(len(w)) + w for w in want)
            if not ok:
                problems.append(f"unexpected reply message ({len(reply)} bytes): {reply[:60]!r}")
    finally:
        os.unlink(body_path)
    if problems:
        print("FAIL: " + "; ".join(problems))
        sys.exit(1)
    print(f"OK ({n} multiplexed calls with grpc-status 0 from {sorted(seen)}, 2 replies checked)")


# ---------------------------------------------------------------- report


def fmt_int(v) -> str:
    if v is None:
        return "–"
    return f"{v:,.0f}"


def statuses(bad: dict | None) -> str:
    """'; logged statuses 502×8' from the h2load log's non-2xx rows."""
    if not bad:
        return ""
    return "; logged statuses " + ", ".join(f"{k}×{v}" for k, v in bad.items())


def check_cell(check: str | None) -> str:
    """Short table cell for the nghttp gRPC check: OK, or the full failure text."""
    if not check:
        return "–"
    return "OK" if check.startswith("OK") else check


SCEN_DESC = {
    "small": "100 B, -c 16 -m 64",
    "single": "100 B, -c 1 -m 100",
    "large": "1 MiB each way, -c 4 -m 4",
    "latency": "100 B, -c 1 -m 1",
    "tls-small": "TLS, 100 B, -c 16 -m 64",
    "tls-handshake": "TLS, a new connection per call",
}

CALLS_HEADER = ["| proxy | scenario | calls | calls/s | p50 µs | p99 µs | failed | "
                "CPU-µs/call | peak RSS MiB | CPU 0 other % | gRPC check |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]


def fmt_num(v, digits: int = 1) -> str:
    """A float with thousands separators, or an en dash for 'not measured'."""
    return "–" if v is None else f"{v:,.{digits}f}"


def failed_cell(r: dict) -> str:
    """Failed count plus, when non-zero, where the failures came from."""
    out = f'{r["bad"]}'
    if r["bad"]:
        out += (f' (failed {r.get("failed", "?")}, errored {r.get("errored", "?")}, '
                f'timeout {r.get("timeout", "?")}, non-2xx '
                f'{r.get("s3xx", 0) + r.get("s4xx", 0) + r.get("s5xx", 0)}'
                f'{"" if r.get("completed") else ", h2load cut by time bound"}'
                f'{statuses(r.get("bad_status"))})')
    return out


def calls_row(r: dict) -> str:
    """One row of the per-call table (plaintext scenarios and tls-small)."""
    rss = r.get("rss_kib")
    return (
        f'| {r["proxy"]} | {r["scenario"]} ({SCEN_DESC.get(r["scenario"], "")}) | '
        f'{r["ok"]:,}/{r["requested"]:,} | {fmt_int(r.get("rps"))} | '
        f'{fmt_int(r.get("p50_us"))} | {fmt_int(r.get("p99_us"))} | {failed_cell(r)} | '
        f'{fmt_num(r.get("cpu_per_call"))} | '
        f'{"–" if rss is None else f"{rss / 1024:,.1f}"} | '
        f'{fmt_num(r.get("cpu0_other_pct"))} | '
        f'{check_cell(r.get("check"))} |'
    )


PROXY_ORDER = ["rpcgate", "rpcgate-admin", "rpcgate-edge", "nginx", "haproxy", "haproxy-1m"]


def ordered(rows: list[dict], scenarios: list[str]) -> list[dict]:
    """Rows grouped by scenario (in the given order), then by proxy, so the proxies of one
    scenario sit next to each other in the tables."""
    def key(r: dict) -> tuple[int, int]:
        p = r["proxy"]
        return (scenarios.index(r["scenario"]) if r["scenario"] in scenarios else 99,
                PROXY_ORDER.index(p) if p in PROXY_ORDER else 99)
    return sorted((r for r in rows if r["scenario"] in scenarios), key=key)


def cpu_ratio(by: dict, scen: str, other: str, proxy: str = "rpcgate") -> float | None:
    """proxy's CPU per call over other's in one scenario, or None if either is missing."""
    a, b = by.get((proxy, scen)), by.get((other, scen))
    if not a or not b:
        return None
    ca, cb = a.get("cpu_per_call"), b.get("cpu_per_call")
    return ca / cb if ca is not None and cb else None


def ratio_table(by: dict, scenarios: list[str], unit: str) -> str:
    """CPU per call (or per handshake) of every proxy, and rpcgate / NGINX and
    rpcgate / HAProxy, for the scenarios rpcgate ran."""
    out = [f"| scenario | rpcgate CPU-µs/{unit} | NGINX CPU-µs/{unit} | "
           f"HAProxy CPU-µs/{unit} | rpcgate / NGINX | rpcgate / HAProxy |",
           "|---|---|---|---|---|---|"]

    def cell(proxy: str, s: str) -> str:
        r = by.get((proxy, s))
        return fmt_num(r.get("cpu_per_call")) if r else "–"

    def ratio(s: str, other: str) -> str:
        v = cpu_ratio(by, s, other)
        return "–" if v is None else f"{v:.2f}"

    for s in scenarios:
        if ("rpcgate", s) not in by:
            continue
        out.append(f"| {s} | {cell('rpcgate', s)} | {cell('nginx', s)} | "
                   f"{cell('haproxy', s)} | {ratio(s, 'nginx')} | {ratio(s, 'haproxy')} |")
        if ("haproxy-1m", s) in by:
            out.append(f"| {s}, HAProxy with 1 MiB windows | {cell('rpcgate', s)} | – | "
                       f"{cell('haproxy-1m', s)} | – | {ratio(s, 'haproxy-1m')} |")
    return "\n".join(out)


def metrics_line(by: dict, scenarios: list[str]) -> str:
    """What the admin API's metrics cost: rpcgate with [admin] over rpcgate without, per
    scenario (issue 8's budget: at most 1.10)."""
    ratios = [(s, v) for s in scenarios
              if (v := cpu_ratio(by, s, "rpcgate", proxy="rpcgate-admin")) is not None]
    if not ratios:
        return ""
    parts = ", ".join(f"{s} {v:.2f}" for s, v in ratios)
    return f"**metrics on vs off**: CPU per call with `[admin]` / without: {parts}."


def haproxy_line(by: dict, scenarios: list[str], fails: int, checks_ok: bool) -> str:
    """How rpcgate compares with HAProxy (no numeric target: the aim is to beat it)."""
    ratios = [(s, v) for s in scenarios if (v := cpu_ratio(by, s, "haproxy")) is not None]
    if not ratios:
        return "rpcgate vs HAProxy: not measured."
    beats = all(v < 1.0 for _, v in ratios)
    parts = [f"{s} {v:.2f}" for s, v in ratios]
    return (f'**vs HAProxy**: rpcgate/HAProxy CPU per call: {", ".join(parts)} '
            f'({"below HAProxy in all of them" if beats else "NOT below HAProxy in all of them"}'
            f'{"" if fails == 0 and checks_ok else "; rpcgate had failed calls or checks"}).')


def tls_section(rows: list[dict], by: dict, meta: dict) -> str:
    """The TLS part of the report: setup as negotiated, target verdict, both tables."""
    tls_rows = [r for r in rows if r["scenario"].startswith("tls-")]
    if not tls_rows:
        return "\n## TLS\n\nNot run in this run (`--no-tls`).\n"
    # What was negotiated, as h2load printed it (one line per distinct combination).
    nego = {}
    for r in tls_rows:
        key = ", ".join(str(r.get(k, "?")) for k in ("tls_protocol", "tls_cipher", "tls_kx"))
        key += f', ALPN {r.get("alpn", "?")}'
        nego.setdefault(key, []).append(f'{r["proxy"]}/{r["scenario"]}')
    nego_lines = "\n".join(f"  - {k} ({', '.join(v)})" for k, v in nego.items())
    probe_lines = []
    for r in tls_rows:
        pr = r.get("probe")
        if not pr:
            continue
        if pr.get("probed"):
            probe_lines.append(
                f'  - {r["proxy"]}: {pr.get("protocol")}, sends {pr.get("tickets")} '
                f'NewSessionTicket message(s) after a full handshake; a client offering the '
                f'saved session is {"**resumed**" if pr.get("resumed") else "not resumed"}; '
                f'certificate {"verifies" if pr.get("verified") else "DOES NOT verify"} '
                f"against the run's CA")
        else:
            probe_lines.append(f'  - {r["proxy"]}: not probed (no `openssl` binary)')
    probes = "\n".join(probe_lines) or "  - not probed"

    a, b = by.get(("rpcgate", "tls-small")), by.get(("nginx", "tls-small"))
    verdict = "not measured (both proxies must run tls-small)"
    if a and b and a.get("cpu_per_call") is not None and b.get("cpu_per_call"):
        ratio = a["cpu_per_call"] / b["cpu_per_call"]
        fails = sum(r["bad"] for r in tls_rows if r["proxy"] == "rpcgate")
        checks_ok = all(str(r.get("check", "")).startswith("OK")
                        for r in tls_rows if r["proxy"] == "rpcgate")
        ok = ratio <= 1.0 and fails == 0 and checks_ok
        verdict = (f'**{"MET" if ok else "NOT MET"}**: rpcgate/NGINX CPU per TLS call '
                   f"(tls-small) = {ratio:.2f} (target ≤ 1.00); rpcgate failed calls in the "
                   f"TLS scenarios = {fails}; gRPC checks over TLS "
                   f"{'all OK' if checks_ok else 'NOT all OK'}.")
        hs = cpu_ratio(by, "tls-handshake", "nginx")
        if hs is not None:
            verdict += f" CPU per full handshake: rpcgate/NGINX = {hs:.2f}."
    fails = sum(r["bad"] for r in tls_rows if r["proxy"] == "rpcgate")
    checks_ok = all(str(r.get("check", "")).startswith("OK")
                    for r in tls_rows if r["proxy"] == "rpcgate")
    verdict += "\n\n" + haproxy_line(by, ["tls-small", "tls-handshake"], fails, checks_ok)

    small = [calls_row(r) for r in ordered(tls_rows, ["tls-small"])]
    hs_lines = ["| proxy | connections (2xx/asked) | handshakes/s | failed | CPU-µs/handshake | "
                "mean connect ms | h2load clients / TCP accepts | proxy CPU 0 % | "
                "client CPU 1 busy % | peak RSS MiB | CPU 0 other % | gRPC check |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    client_bound = []
    for r in ordered(tls_rows, ["tls-handshake"]):
        busy, other = r.get("cpu0_busy_pct"), r.get("cpu0_other_pct")
        proxy_pct = busy - other if busy is not None and other is not None else None
        c1 = r.get("cpu1_busy_pct")
        if c1 is not None and c1 >= 90 and (proxy_pct is None or proxy_pct < 90):
            client_bound.append(f'{r["proxy"]} (CPU 1 {c1:.0f}% busy, proxy '
                                f'{fmt_num(proxy_pct, 0)}% of CPU 0)')
        rss = r.get("rss_kib")
        hs_lines.append(
            f'| {r["proxy"]} | {r["ok"]:,}/{r["requested"]:,} | {fmt_int(r.get("rps"))} | '
            f'{failed_cell(r)} | {fmt_num(r.get("cpu_per_call"))} | '
            f'{fmt_num(r.get("connect_ms_mean"))} | '
            f'{fmt_int(r.get("clients"))} / {fmt_int(r.get("tcp_accepts"))} | '
            f'{fmt_num(proxy_pct, 0)} | '
            f'{fmt_num(c1, 0)} | {"–" if rss is None else f"{rss / 1024:,.1f}"} | '
            f'{fmt_num(other)} | {check_cell(r.get("check"))} |')
    bound_note = ""
    if client_bound:
        bound_note = ("\n**Client-bound**: " + "; ".join(client_bound) + ". h2load's side of "
                      "each handshake (key exchange, signature check, process start per "
                      "batch) saturates CPU 1 before the proxy saturates CPU 0, so "
                      "handshakes/s is the load generator's limit, not the proxy's. "
                      "CPU-µs per handshake on the proxy is the figure that compares them.\n")

    return f"""
## TLS

All proxies terminate TLS with the same certificate and key (ECDSA P-256, written once for
this run by `rpcgate certs --hosts localhost,127.0.0.1`) and speak h2c to the same two
backends. NGINX: `listen … ssl http2`, `ssl_protocols TLSv1.2 TLSv1.3`,
`ssl_session_tickets off; ssl_session_cache off;`. HAProxy: `bind … ssl crt <cert+key PEM>
alpn h2 ssl-min-ver TLSv1.2 no-tls-tickets prefer-client-ciphers`, `tune.ssl.cachesize 0`
(no session cache; the client's cipher order, as NGINX and rpcgate follow it).
rpcgate: `[listeners.tls] cert/key` (rustls with aws-lc-rs, its default session settings).
h2load: {meta.get("h2load_version")},
{meta.get("openssl_version")}.

- Negotiated (as h2load reports it):
{nego_lines}
- Session resumption, probed with `openssl s_client -sess_out` / `-sess_in` after the
  handshake scenario:
{probes}
- Does h2load resume sessions? {meta.get("h2load_resumes", "unknown")}.

### Target (the issue)

{verdict}

### tls-small: 100 B calls over TLS, `-c 16 -m 64`

{chr(10).join(CALLS_HEADER + small)}

### tls-handshake: a new TLS connection for every call

Repeated `h2load -c B -n B -m 1` batches (B connections opened at once, one call each, so
every 2xx call is one full TLS handshake on a new TCP connection), back to back until the
count or the time bound. handshakes/s = 2xx connections / wall time of all batches (h2load
process starts included). CPU-µs/handshake = proxy CPU over the measured batches / 2xx
connections (accept, handshake, one proxied call, close). "mean connect ms" = h2load's mean
"time for connect" (TCP + TLS, queueing behind the other connections of the batch included).
"h2load clients / TCP accepts" = connections h2load opened, and TCP connections the host
accepted meanwhile (/proc/net/snmp PassiveOpens: the proxy's accepts plus any new
proxy-to-backend connections), proof that every call had a connection of its own.
"client CPU 1 busy %" = how busy the load CPU (h2load + backends) was.

{chr(10).join(hs_lines)}
{bound_note}
### CPU per TLS call and per handshake, rpcgate / NGINX and rpcgate / HAProxy

{ratio_table(by, ["tls-small", "tls-handshake"], "call")}

(For tls-handshake "call" means one new connection: a full handshake plus one call.)
"""


def cmd_report(results_path: str, meta_path: str, out_path: str) -> None:
    with open(meta_path) as f:
        meta = json.load(f)
    rows = []
    with open(results_path) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    by = {(r["proxy"], r["scenario"]): r for r in rows}
    plain = [r for r in rows if not r["scenario"].startswith("tls-")]
    plain_scens = ["small", "single", "large", "latency"]
    table = "\n".join(CALLS_HEADER + [calls_row(r) for r in ordered(plain, plain_scens)])
    ratios = ratio_table(by, plain_scens, "call")

    a, b = by.get(("rpcgate", "small")), by.get(("nginx", "small"))
    verdict = "not measured"
    if a and b and a.get("cpu_per_call") is not None and b.get("cpu_per_call"):
        ratio = a["cpu_per_call"] / b["cpu_per_call"]
        rpc_failures = sum(r["bad"] for r in plain if r["proxy"] == "rpcgate")
        checks_ok = all(str(r.get("check", "")).startswith("OK")
                        for r in plain if r["proxy"] == "rpcgate")
        ok = ratio <= 0.5 and rpc_failures == 0 and checks_ok
        verdict = (f'**{"MET" if ok else "NOT MET"}**: rpcgate/NGINX CPU per small call = '
                   f"{ratio:.2f} (target ≤ 0.50); rpcgate failed calls over all plaintext "
                   f"scenarios = {rpc_failures}; gRPC checks "
                   f"{'all OK' if checks_ok else 'NOT all OK'}.")
    rpc_failures = sum(r["bad"] for r in plain if r["proxy"] == "rpcgate")
    checks_ok = all(str(r.get("check", "")).startswith("OK")
                    for r in plain if r["proxy"] == "rpcgate")
    verdict += "\n\n" + haproxy_line(by, plain_scens, rpc_failures, checks_ok)
    if line := metrics_line(by, plain_scens):
        verdict += "\n\n" + line
    acl = [(s, v) for s in plain_scens
           if (v := cpu_ratio(by, s, "rpcgate", proxy="rpcgate-edge")) is not None]
    if acl:
        verdict += ("\n\n**allow/deny + rate limit on vs off**: CPU per call with an access list "
                    "and a rate limit on the listener / without (budget ≤ 1.10): "
                    + ", ".join(f"{s} {v:.2f}" for s, v in acl) + ".")

    others = [r["cpu0_other_pct"] for r in rows if r.get("cpu0_other_pct") is not None]
    noise = ""
    if others and max(others) > 10:
        noise = (f"\n**Noisy run**: up to {max(others):.0f}% of CPU 0 (mean "
                 f"{sum(others) / len(others):.0f}%) went to something other than the proxy "
                 "during the measured runs (other programs on the machine); latency and "
                 "calls/s figures are disturbed, CPU per call less so.\n")
    md = f"""# rpcgate vs NGINX vs HAProxy — benchmark results

Generated by `bench/run.sh` (see `bench/README.md` for the method and caveats).

- Date: {meta["date"]}
- Command: `{meta["command"]}` (mode: {meta["mode"]})
- Machine: {meta["nproc"]} CPUs, `{meta["cpu_model"]}`, kernel {meta["kernel"]}
- Software: rpcgate `{meta["rpcgate_commit"]}` (release build, `workers = 1`, access log off);
  {meta["nginx_version"]} (`grpc_pass`, one worker); {meta.get("haproxy_version", "haproxy not run")}
  (`proto h2` both sides, `nbthread 1`); {meta["h2load_version"]}
- Layout: proxy pinned to CPU 0; two `rpcgate backend` processes and `h2load` pinned to
  CPU 1; h2c (or TLS to the proxy) on 127.0.0.1; a fresh proxy process per scenario, warmed
  up before the measured run.
- Load average (1/5/15 min) before: {meta["load_before"]}; after: {meta["load_after"]}
- Other CPU-heavy processes seen during the run (compilers etc.): {meta.get("busy", "none")}
{noise}"""
    if plain:
        md += f"""
## Target (the issue)

{verdict}

## Results

{table}

"calls" = calls that came back 2xx / calls asked for. "failed" = everything else (h2load
failed + errored + timeout, non-2xx statuses, calls never made because the time bound cut
the run). CPU-µs/call = proxy utime+stime (all its processes) over the measured run divided
by 2xx calls. "CPU 0 other %" = share of CPU 0 time during the measured run that was busy
but not charged to the proxy (interrupts, other programs): a noise indicator. Peak RSS =
sum of `VmHWM` over the proxy's processes after the scenario (fresh process per scenario,
so each figure is that scenario's peak). "gRPC check" = after the measured run, real calls
through the same proxy with `nghttp`: 10 (4 for 1 MiB) calls multiplexed on one connection
must all carry `:status 200` and a `grpc-status: 0` trailer and come from both backends,
and 2 more calls must return exactly `HelloReply{{message="Hello <name> from bN"}}` for the
name sent (h2load cannot see trailers, so this is what proves gRPC-level success).

## CPU per call, rpcgate / NGINX and rpcgate / HAProxy

{ratios}
"""
        extra = meta.get("direct")
        if extra:
            md += f"""
## Reference: h2load straight to one backend (no proxy), latency scenario

p50 {fmt_int(extra.get("p50_us"))} µs, p99 {fmt_int(extra.get("p99_us"))} µs,
{fmt_int(extra.get("rps"))} calls/s, {extra["ok"]:,}/{extra["requested"]:,} 2xx.
"""
    else:
        md += "\nPlaintext scenarios: not run in this run (`--tls-only`).\n"
    md += tls_section(rows, by, meta)
    with open(out_path, "w") as f:
        f.write(md)
    print(md)


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    table = {
        "payload": cmd_payload,
        "freeport": cmd_freeport,
        "waitport": cmd_waitport,
        "cpu": cmd_cpu,
        "rss": cmd_rss,
        "nprocs": cmd_nprocs,
        "cpu0": cmd_cpu0,
        "h2parse": cmd_h2parse,
        "hsloop": cmd_hsloop,
        "tlsprobe": cmd_tlsprobe,
        "check": cmd_check,
        "report": cmd_report,
    }
    if cmd not in table:
        raise SystemExit(__doc__)
    table[cmd](*args)


if __name__ == "__main__":
    main()
