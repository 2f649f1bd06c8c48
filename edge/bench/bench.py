#!/usr/bin/env python3
"""edgefleet-edge vs nginx proxy_cache vs Varnish, side by side on 127.0.0.1 (see run.sh).

Each proxy is pinned to PROXY_CPU, the load generators and the origin to LOAD_CPU. For every
object size and proxy:

1. closed loop (as fast as each proxy answers): RUNS runs of DURATION seconds of wrk with
   CONNECTIONS connections against a warm (cached) object; the proxy's CPU time comes from /proc;
2. equal offered load: the same number of oha runs at one fixed request rate for every proxy
   (EQUAL_LOAD x the slowest proxy's closed-loop rate), open loop with oha's correction for
   coordinated omission, so latencies compare at the same work rather than at each proxy's own
   throughput (in a closed loop a proxy that answers twice as fast also gets twice the load).

The tables show medians.
"""
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
EDGE_BIN = os.environ["EDGE_BIN"]
RUNS = int(os.environ.get("RUNS", "3"))
DURATION = int(os.environ.get("DURATION", "10"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "32"))
PROXY_CPU = os.environ.get("PROXY_CPU", "0")
LOAD_CPU = os.environ.get("LOAD_CPU", "1")
SIZES = [int(s) for s in os.environ.get("SIZES", "1024 16384 262144 4194304").split()]
EQUAL_LOAD = float(os.environ.get("EQUAL_LOAD", "0.6"))
OHA = os.environ.get("OHA", "oha")
CACHE_BYTES = 256 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Everything the benchmark starts runs at this niceness (root only): on a machine where builds
# share the two CPUs, -20 keeps the measured processes ahead of them under the fair scheduler.
# With autogroups on, niceness only ranks tasks within their session, so it is set on the
# sessions (/proc/PID/autogroup) too.
NICE = os.environ.get("NICE", "-20" if os.geteuid() == 0 else "0")


def prioritize(pid):
    try:
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(NICE)
    except OSError:
        pass  # no autogroups (or not root): the niceness of each process still applies


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, limit=20):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port} within {limit}s")


def descendants(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError):
            pass
    return total / CLK_TCK


def peak_rss_mib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def on_cpu(cpu):
    return ["nice", "-n", NICE, "taskset", "-c", cpu]


def pinned(cpu, argv, log, env=None):
    process = subprocess.Popen(on_cpu(cpu) + argv, stdout=log, stderr=log, env=env, start_new_session=True)
    prioritize(process.pid)
    return process


class Proxy:
    def __init__(self, name, port, process):
        self.name, self.port, self.process = name, port, process

    def pids(self):
        return descendants(self.process.pid)


def start_all(work, origin_port):
    logs = open(os.path.join(work, "proxies.log"), "w")
    proxies = []

    edge_port, admin_port = free_port(), free_port()
    with open(os.path.join(work, "token"), "w") as f:
        f.write("bench-token\n")
    with open(os.path.join(work, "edge.yaml"), "w") as f:
        f.write(f"""distribution: bench
region: bench
listen: {{data: "127.0.0.1:{edge_port}", admin: "127.0.0.1:{admin_port}"}}
origins:
  - http: {{id: origin, url: "http://127.0.0.1:{origin_port}"}}
defaultBehavior: {{targetOrigin: origin}}
cache: {{memoryBytes: {CACHE_BYTES}, maxObjectBytes: {16 << 20}}}
admin: {{tokenFile: "{work}/token"}}
""")
    env = dict(os.environ, RUST_LOG="warn")
    proxies.append(Proxy("edgefleet", edge_port, pinned(PROXY_CPU, [EDGE_BIN, "--config", f"{work}/edge.yaml"], logs, env)))

    nginx_port = free_port()
    os.makedirs(f"{work}/nginx-tmp", exist_ok=True)
    with open(os.path.join(work, "nginx.conf"), "w") as f:
        f.write(f"""user root;
daemon off;
master_process on;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 10000000;
    client_body_temp_path {work}/nginx-tmp;
    proxy_temp_path {work}/nginx-tmp;
    fastcgi_temp_path {work}/nginx-tmp;
    uwsgi_temp_path {work}/nginx-tmp;
    scgi_temp_path {work}/nginx-tmp;
    proxy_cache_path {work}/nginx-cache levels=1:2 keys_zone=edge:32m max_size={CACHE_BYTES} inactive=1h use_temp_path=off;
    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{nginx_port};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache edge;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10s;
            proxy_cache_valid 200 1h;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
""")
    proxies.append(Proxy("nginx", nginx_port, pinned(PROXY_CPU, ["nginx", "-c", f"{work}/nginx.conf", "-p", work], logs)))

    varnish_port = free_port()
    varnish_dir = f"{work}/varnish"
    proxies.append(Proxy("varnish", varnish_port, pinned(PROXY_CPU, [
        "varnishd", "-F", "-n", varnish_dir,
        "-a", f"127.0.0.1:{varnish_port}",
        "-b", f"127.0.0.1:{origin_port}",
        "-s", f"malloc,{CACHE_BYTES >> 20}m",
        "-p", "thread_pools=1",
    ], logs)))
    for p in proxies:
        wait_port(p.port, p.name)
    return proxies


def get(port, path, headers=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as r:
        return r.status, dict(r.headers), r.read()


def is_hit(name, headers):
    headers = {k.lower(): v for k, v in headers.items()}
    if name == "edgefleet":
        return headers.get("x-cache", "").startswith("Hit")
    if name == "nginx":
        return headers.get("x-cache-status") == "HIT"
    return len(headers.get("x-varnish", "").split()) == 2


def unit(value, suffix):
    scale = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
    return float(value) * scale[suffix]


def wrk(port, path):
    out = subprocess.run(
        on_cpu(LOAD_CPU) + ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict((p, unit(v, s)) for p, v, s in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors or "Socket errors" in out:
        print(f"  warning: wrk reported errors against port {port}:\n{out}", file=sys.stderr)
    return {"requests": requests, "rps": rps, "p50": lat.get("50"), "p99": lat.get("99")}


def children_cpu_seconds():
    """CPU time of every finished child so far: its growth over a wrk run is wrk's own CPU time.
    Near 100% of the run means the load generator, not the proxy, set the pace."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def oha(port, path, rate):
    out = subprocess.run(
        on_cpu(LOAD_CPU) + [OHA, "--no-tui", "--output-format", "json", "-z", f"{DURATION}s",
         "-c", str(CONNECTIONS), "-q", str(rate), "--latency-correction", "-w", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout
    report = json.loads(out)
    pct = report["latencyPercentiles"]
    codes = report.get("statusCodeDistribution", {})
    if set(codes) - {"200"} or report.get("errorDistribution"):
        print(f"  warning: oha saw non-200 answers or errors against port {port}: {codes} {report.get('errorDistribution')}", file=sys.stderr)
    return {"rps": report["summary"]["requestsPerSec"], "p50": pct["p50"] * 1000, "p99": pct["p99"] * 1000, "p999": pct["p99.9"] * 1000}


async def cold_burst(port, path, n=1000):
    async def one():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
        writer.close()
        return data.split(b" ", 2)[1] if data else b"-"

    results = await asyncio.gather(*[one() for _ in range(n)])
    return sum(1 for r in results if r == b"200")


def origin_count(origin_port, path):
    _, _, body = get(origin_port, "/__count")
    return json.loads(body).get(path, 0)


def print_header(header):
    """A Markdown table's header row and the rule under it."""
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")


def human(size):
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"


def main():
    prioritize("self")  # wrk and oha run in this session
    work = tempfile.mkdtemp(prefix="edgefleet-bench-")
    origin_port = free_port()
    origin = pinned(LOAD_CPU, [sys.executable, os.path.join(HERE, "origin.py"), str(origin_port)], open(os.devnull, "w"))
    proxies = []
    try:
        wait_port(origin_port, "origin")
        proxies = start_all(work, origin_port)
        print(f"proxies on CPU {PROXY_CPU}, wrk and origin on CPU {LOAD_CPU}; {RUNS} runs x {DURATION}s, {CONNECTIONS} connections; medians\n")

        print("cold: 1000 concurrent requests for one uncached object (origin answers after 500 ms)")
        for p in proxies:
            path = f"/cold-{p.name}"
            ok = asyncio.run(cold_burst(p.port, path))
            print(f"  {p.name:10} {ok:4}/1000 answered 200, origin requests: {origin_count(origin_port, path)}")
        print()

        results, equal = {}, {}
        for size in SIZES:
            path = f"/obj-{size}"
            for p in proxies:
                for _ in range(3):
                    status, headers, body = get(p.port, path)
                    assert status == 200 and len(body) == size, (p.name, status, len(body))
                if not is_hit(p.name, headers):
                    print(f"  warning: {p.name} is not serving {path} from cache: {headers}", file=sys.stderr)
            # Runs are interleaved across proxies so that background noise spreads evenly.
            runs = {p.name: [] for p in proxies}
            for _ in range(RUNS):
                for p in proxies:
                    pids = p.pids()
                    before, wrk_before = cpu_seconds(pids), children_cpu_seconds()
                    r = wrk(p.port, path)
                    r["load_busy"] = (children_cpu_seconds() - wrk_before) / DURATION
                    r["cpu"] = cpu_seconds(pids) - before
                    r["proxy_busy"] = r["cpu"] / DURATION
                    r["per_cpu"] = r["requests"] / r["cpu"] if r["cpu"] > 0 else float("nan")
                    r["mib_s"] = r["rps"] * size / (1 << 20)
                    runs[p.name].append(r)
            for p in proxies:
                med = {k: statistics.median(r[k] for r in runs[p.name]) for k in ("rps", "per_cpu", "mib_s", "p50", "p99", "proxy_busy", "load_busy")}
                med["rss"] = peak_rss_mib(p.pids())
                results[(size, p.name)] = med

            rate = max(1, int(EQUAL_LOAD * min(results[(size, p.name)]["rps"] for p in proxies)))
            runs = {p.name: [] for p in proxies}
            for _ in range(RUNS):
                for p in proxies:
                    runs[p.name].append(oha(p.port, path, rate))
            for p in proxies:
                med = {k: statistics.median(r[k] for r in runs[p.name]) for k in ("rps", "p50", "p99", "p999")}
                med["offered"] = rate
                equal[(size, p.name)] = med

        print("Closed loop (wrk): each proxy as fast as it answers. Proxy and wrk CPU are shares of the run;")
        print("where wrk is near 100% and the proxy is not, wrk set the pace and req/CPU-s is the comparable figure.")
        print()
        print_header(f"| {'object':7} | {'proxy':9} | {'req/s':>9} | {'req/CPU-s':>9} | {'MiB/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'peak RSS MiB':>12} | {'proxy CPU':>9} | {'wrk CPU':>7} |")
        for size in SIZES:
            for p in proxies:
                m = results[(size, p.name)]
                print(f"| {human(size):7} | {p.name:9} | {m['rps']:9.0f} | {m['per_cpu']:9.0f} | {m['mib_s']:8.1f} | {m['p50']:7.2f} | {m['p99']:7.2f} | {m['rss']:12.1f} | {m['proxy_busy'] * 100:8.0f}% | {m['load_busy'] * 100:6.0f}% |")
        print()
        print(f"Equal offered load (oha, open loop, corrected for coordinated omission): {EQUAL_LOAD:.0%} of the slowest proxy's closed-loop rate")
        print()
        print_header(f"| {'object':7} | {'proxy':9} | {'offered/s':>9} | {'served/s':>9} | {'p50 ms':>7} | {'p99 ms':>7} | {'p99.9 ms':>8} |")
        for size in SIZES:
            for p in proxies:
                m = equal[(size, p.name)]
                print(f"| {human(size):7} | {p.name:9} | {m['offered']:9.0f} | {m['rps']:9.0f} | {m['p50']:7.2f} | {m['p99']:7.2f} | {m['p999']:8.2f} |")
        print()
        print("| object  | edge/nginx req/CPU-s | edge/Varnish req/CPU-s | edge/nginx MiB/s | edge/Varnish MiB/s | edge p99 / nginx p99 (closed) | edge p99 / nginx p99 (equal load) |")
        print("|---------|----------------------|------------------------|------------------|--------------------|-------------------------------|-----------------------------------|")
        for size in SIZES:
            e, n, v = (results[(size, x)] for x in ("edgefleet", "nginx", "varnish"))
            eq_e, eq_n = equal[(size, "edgefleet")], equal[(size, "nginx")]
            print(f"| {human(size):7} | {e['per_cpu'] / n['per_cpu']:20.2f} | {e['per_cpu'] / v['per_cpu']:22.2f} | {e['mib_s'] / n['mib_s']:16.2f} | {e['mib_s'] / v['mib_s']:18.2f} | {e['p99'] / n['p99']:29.2f} | {eq_e['p99'] / eq_n['p99']:33.2f} |")
        print(f"\nedge RSS limit target: cache {CACHE_BYTES >> 20} MiB + 32 MiB; peak {max(results[(s, 'edgefleet')]['rss'] for s in SIZES):.1f} MiB")
    finally:
        for p in proxies:
            try:
                os.killpg(p.process.pid, signal.SIGTERM)
                p.process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.process.pid, signal.SIGKILL)
        os.killpg(origin.pid, signal.SIGTERM)
        origin.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
