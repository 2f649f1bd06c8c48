#!/usr/bin/env python3
"""Cross-check of the closed-loop phase with a second load generator: oha (hyper client, no rate
limit, 32 connections) instead of wrk, same pinning and priorities as bench.py. Prints
`proxy req/s p50-ms p99-ms` per run, RUNS interleaved runs per size.

    EDGE_BIN=target/release/edgefleet-edge OHA=.../bin/oha SIZES=4194304 python3 edge/bench/closed_oha.py
"""
import json
import os
import signal
import subprocess
import sys
import tempfile

import bench


def main():
    bench.prioritize("self")
    work = tempfile.mkdtemp(prefix="edgefleet-bench-")
    origin_port = bench.free_port()
    origin = bench.pinned(bench.LOAD_CPU, [sys.executable, os.path.join(bench.HERE, "origin.py"), str(origin_port)], open(os.devnull, "w"))
    proxies = []
    try:
        bench.wait_port(origin_port, "origin")
        proxies = bench.start_all(work, origin_port)
        for size in bench.SIZES:
            path = f"/obj-{size}"
            for p in proxies:
                for _ in range(3):
                    bench.get(p.port, path)
            for _ in range(bench.RUNS):
                for p in proxies:
                    out = subprocess.run(
                        bench.on_cpu(bench.LOAD_CPU) + [bench.OHA, "--no-tui", "--output-format", "json", "-z", f"{bench.DURATION}s",
                                                        "-c", str(bench.CONNECTIONS), "-w", f"http://127.0.0.1:{p.port}{path}"],
                        capture_output=True, text=True, check=True,
                    ).stdout
                    report = json.loads(out)
                    pct = report["latencyPercentiles"]
                    print(f"{bench.human(size)} {p.name} {report['summary']['requestsPerSec']:.0f} {pct['p50'] * 1000:.2f} {pct['p99'] * 1000:.2f}", flush=True)
    finally:
        for p in proxies:
            os.killpg(p.process.pid, signal.SIGTERM)
        os.killpg(origin.pid, signal.SIGTERM)


if __name__ == "__main__":
    main()
