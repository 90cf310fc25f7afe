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


def cmd_cpu0() -> None:
    """CPU 0 counters, to tell how much of CPU 0 something other than the proxy used."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu0 "):
                v = [int(x) for x in line.split()[1:]]
                # user nice system idle iowait irq softirq steal
                busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
                total = busy + v[3] + v[4]
                print(busy * 1_000_000 // CLK_TCK, total * 1_000_000 // CLK_TCK)
                return
    raise SystemExit("no cpu0 line in /proc/stat")


# ---------------------------------------------------------------- h2load


def percentile(sorted_vals: list[int], q: float) -> int | None:
    """Nearest-rank percentile."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(q / 100 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


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


def cmd_report(results_path: str, meta_path: str, out_path: str) -> None:
    with open(meta_path) as f:
        meta = json.load(f)
    rows = []
    with open(results_path) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    scen_desc = {
        "small": "100 B, -c 16 -m 64",
        "single": "100 B, -c 1 -m 100",
        "large": "1 MiB each way, -c 4 -m 4",
        "latency": "100 B, -c 1 -m 1",
    }
    lines = []
    lines.append("| proxy | scenario | calls | calls/s | p50 µs | p99 µs | failed | "
                 "CPU-µs/call | peak RSS MiB | CPU 0 other % | gRPC check |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    by = {}
    for r in rows:
        by[(r["proxy"], r["scenario"])] = r
        cpu = r.get("cpu_per_call")
        rss = r.get("rss_kib")
        other = "–" if r.get("cpu0_other_pct") is None else f'{r["cpu0_other_pct"]:.1f}'
        fail_detail = f'{r["bad"]}'
        if r["bad"]:
            fail_detail += (f' (failed {r.get("failed", "?")}, errored {r.get("errored", "?")}, '
                            f'timeout {r.get("timeout", "?")}, non-2xx '
                            f'{r.get("s3xx", 0) + r.get("s4xx", 0) + r.get("s5xx", 0)}'
                            f'{"" if r.get("completed") else ", h2load cut by time bound"}'
                            f'{statuses(r.get("bad_status"))})')
        lines.append(
            f'| {r["proxy"]} | {r["scenario"]} ({scen_desc.get(r["scenario"], "")}) | '
            f'{r["ok"]:,}/{r["requested"]:,} | {fmt_int(r.get("rps"))} | '
            f'{fmt_int(r.get("p50_us"))} | {fmt_int(r.get("p99_us"))} | {fail_detail} | '
            f'{"–" if cpu is None else f"{cpu:,.1f}"} | '
            f'{"–" if rss is None else f"{rss / 1024:,.1f}"} | '
            f'{other} | '
            f'{check_cell(r.get("check"))} |'
        )
    table = "\n".join(lines)

    ratio_lines = ["| scenario | rpcgate CPU-µs/call | NGINX CPU-µs/call | rpcgate / NGINX |",
                   "|---|---|---|---|"]
    for s in ["small", "single", "large", "latency"]:
        a, b = by.get(("rpcgate", s)), by.get(("nginx", s))
        if not a or not b:
            continue
        ca, cb = a.get("cpu_per_call"), b.get("cpu_per_call")
        ratio = f"{ca / cb:.2f}" if ca is not None and cb else "–"
        ratio_lines.append(f'| {s} | {"–" if ca is None else f"{ca:,.1f}"} | '
                           f'{"–" if cb is None else f"{cb:,.1f}"} | {ratio} |')
    ratios = "\n".join(ratio_lines)

    a, b = by.get(("rpcgate", "small")), by.get(("nginx", "small"))
    verdict = "not measured"
    if a and b and a.get("cpu_per_call") is not None and b.get("cpu_per_call"):
        ratio = a["cpu_per_call"] / b["cpu_per_call"]
        rpc_failures = sum(r["bad"] for r in rows if r["proxy"] == "rpcgate")
        checks_ok = all(str(r.get("check", "")).startswith("OK")
                        for r in rows if r["proxy"] == "rpcgate")
        ok = ratio <= 0.5 and rpc_failures == 0 and checks_ok
        verdict = (f'**{"MET" if ok else "NOT MET"}**: rpcgate/NGINX CPU per small call = '
                   f"{ratio:.2f} (target ≤ 0.50); rpcgate failed calls over all scenarios = "
                   f"{rpc_failures}; gRPC checks {'all OK' if checks_ok else 'NOT all OK'}.")

    others = [r["cpu0_other_pct"] for r in rows if r.get("cpu0_other_pct") is not None]
    noise = ""
    if others and max(others) > 10:
        noise = (f"\n**Noisy run**: up to {max(others):.0f}% of CPU 0 (mean "
                 f"{sum(others) / len(others):.0f}%) went to something other than the proxy "
                 "during the measured runs (other programs on the machine); latency and "
                 "calls/s figures are disturbed, CPU per call less so.\n")
    md = f"""# rpcgate vs NGINX — benchmark results

Generated by `bench/run.sh` (see `bench/README.md` for the method and caveats).

- Date: {meta["date"]}
- Command: `{meta["command"]}` (mode: {meta["mode"]})
- Machine: {meta["nproc"]} CPUs, `{meta["cpu_model"]}`, kernel {meta["kernel"]}
- Software: rpcgate `{meta["rpcgate_commit"]}` (release build, `workers = 1`, access log off);
  {meta["nginx_version"]}; {meta["h2load_version"]}
- Layout: proxy pinned to CPU 0; two `rpcgate backend` processes and `h2load` pinned to
  CPU 1; h2c on 127.0.0.1; a fresh proxy process per scenario, warmed up before the measured run.
- Load average (1/5/15 min) before: {meta["load_before"]}; after: {meta["load_after"]}
- Other CPU-heavy processes seen during the run (compilers etc.): {meta.get("busy", "none")}
{noise}
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

## CPU per call, rpcgate / NGINX

{ratios}
"""
    extra = meta.get("direct")
    if extra:
        md += f"""
## Reference: h2load straight to one backend (no proxy), latency scenario

p50 {fmt_int(extra.get("p50_us"))} µs, p99 {fmt_int(extra.get("p99_us"))} µs,
{fmt_int(extra.get("rps"))} calls/s, {extra["ok"]:,}/{extra["requested"]:,} 2xx.
"""
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
        "check": cmd_check,
        "report": cmd_report,
    }
    if cmd not in table:
        raise SystemExit(__doc__)
    table[cmd](*args)


if __name__ == "__main__":
    main()
