#!/usr/bin/env bash
# Runs the public HTTP-cache conformance suite (http-tests/cache-tests, the one behind
# cache-tests.fyi; npm package http-cache-tests, BSD-3-Clause) against edgefleet-edge on 127.0.0.1
# and prints how many required, optimal and check tests pass (see edge/README.md, Conformance).
#
#   edge/conformance/run.sh                  # release build of the edge, the behavior below
#   EDGE_BIN=target/debug/edgefleet-edge edge/conformance/run.sh
#   RFC=1 edge/conformance/run.sh            # with the settings that choose RFC 9111 over CloudFront
#   EXTRA_TESTS=dir edge/conformance/run.sh  # also run the test groups (*.mjs) in dir; a group
#                                            # replaces the suite's group of the same id
#
# The edge's behavior: TTLs min 0 / default 0 / max 31536000, every query string in the key,
# every method allowed (the suite PUTs its test configuration through the cache). The suite is
# installed once from the npm registry into ~/.cache/edgefleet/tools; nothing of it is kept here.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
SUITE_VERSION="${SUITE_VERSION:-0.4.5}"
tools="${EDGEFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgefleet}/tools"
suite="$tools/http-cache-tests-$SUITE_VERSION"

for tool in node npm curl; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
if [ ! -f "$suite/package/package.json" ]; then
    echo "installing http-cache-tests $SUITE_VERSION into $suite" >&2
    mkdir -p "$suite"
    (cd "$suite" && npm pack --silent "http-cache-tests@$SUITE_VERSION" >/dev/null \
        && tar xzf "http-cache-tests-$SUITE_VERSION.tgz" \
        && cd package && npm install --silent --omit=dev --ignore-scripts --no-audit --no-fund >/dev/null)
fi

if [ -z "${EDGE_BIN:-}" ]; then
    (cd "$root" && cargo build --release -p edgefleet-edge >&2)
    EDGE_BIN="$root/target/release/edgefleet-edge"
fi

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
    for _ in $(seq 1 200); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.05
    done
    echo "$2 did not answer at $1" >&2
    exit 1
}

origin_port="$(free_port)"
(cd "$suite/package" && exec env npm_config_port="$origin_port" npm_config_protocol=http \
    npm_config_pidfile="$work/server.pid" node server/server.mjs) >"$work/origin.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$origin_port/" "the suite's origin server"

data_port="$(free_port)"
admin_port="$(free_port)"
echo conformance-token >"$work/token"
# RFC=1: the settings that choose RFC 9111 over CloudFront where they differ (edge/README.md).
cache_key="{queryStrings: all}"
rfc_settings=""
if [ "${RFC:-0}" = 1 ]; then
    cache_key="{queryStrings: all, headers: {allowList: [authorization]}}"
    rfc_settings="  errorCaching: origin
  viewerCacheControl: honor"
fi
cat >"$work/edge.yaml" <<YAML
distribution: conformance
region: local
listen: {data: "127.0.0.1:$data_port", admin: "127.0.0.1:$admin_port"}
origins:
  - http: {id: suite, url: "http://127.0.0.1:$origin_port", readTimeoutSeconds: 30}
defaultBehavior:
  targetOrigin: suite
  minTtl: 0
  defaultTtl: 0
  maxTtl: 31536000
  cacheKey: $cache_key
  allowedMethods: [GET, HEAD, OPTIONS, PUT, POST, PATCH, DELETE]
$rfc_settings
cache: {memoryBytes: 268435456}
admin: {tokenFile: "$work/token"}
YAML
"$EDGE_BIN" --config "$work/edge.yaml" >"$work/edge.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$admin_port/readyz" "edgefleet-edge"

# The suite's own client, unchanged; its JSON results are scored by score.mjs.
(cd "$suite/package" && npm_config_base="http://127.0.0.1:$data_port" npm_config_id="" \
    node --no-warnings "$here/cli.mjs" "$suite/package" "${EXTRA_TESTS:-}") >"$work/results.json" 2>"$work/cli.log" || {
    cat "$work/cli.log" >&2
    exit 1
}
node "$here/score.mjs" "$suite/package" "$work/results.json" "${EXTRA_TESTS:-}"
if [ -n "${KEEP_RESULTS:-}" ]; then
    cp "$work/results.json" "$KEEP_RESULTS"
fi
