#!/usr/bin/env bash
# Benchmarks edgefleet-edge against nginx (proxy_cache) and Varnish on this machine, all on
# 127.0.0.1: proxies pinned to one CPU, wrk and the origin to the other, each proxy's CPU time read
# from /proc, medians of RUNS runs. Prints the table (see edge/README.md for a recorded one).
#
#   edge/bench/run.sh                        # RUNS=3 DURATION=10 CONNECTIONS=32
#   RUNS=5 DURATION=20 edge/bench/run.sh
#
# Needs nginx, varnish and wrk (Debian: apt-get install nginx varnish wrk) and python3; builds the
# open-loop load generator oha (MIT, crates.io) once into ~/.cache/edgefleet/tools/oha-<version>.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

for tool in nginx varnishd wrk taskset python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install nginx varnish wrk util-linux python3)" >&2; exit 1; }
done
if [ "$(nproc)" -lt 2 ]; then
    echo "needs at least 2 CPUs (one for the proxy, one for the load generator)" >&2
    exit 1
fi

OHA_VERSION=1.16.0
oha_root="${EDGEFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgefleet}/tools/oha-$OHA_VERSION"
if [ -z "${OHA:-}" ]; then
    if [ ! -x "$oha_root/bin/oha" ]; then
        echo "building oha $OHA_VERSION into $oha_root" >&2
        cargo install oha --version "$OHA_VERSION" --locked --root "$oha_root" >&2
    fi
    OHA="$oha_root/bin/oha"
fi
export OHA

if [ -z "${EDGE_BIN:-}" ]; then
    (cd "$root" && cargo build --release -p edgefleet-edge >&2)
    EDGE_BIN="$root/target/release/edgefleet-edge"
fi
export EDGE_BIN
exec python3 "$here/bench.py"
