#!/usr/bin/env bash
# Operator scale benchmark: N Distributions × 3 regions in the local control plane, pods
# simulated only. Prints a table: time until all Ready, operator peak RSS and CPU, API requests
# per reconcile. Usage: operator/bench/scale.sh [N...]   (default: 10 100 1000)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -p edgefleet-operator -p edgefleet-e2e --bin edgefleet-operator --bin operator-bench
exec target/release/operator-bench "$@"
