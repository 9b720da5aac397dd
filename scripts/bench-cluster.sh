#!/usr/bin/env bash
# Deposits through three banking instances on one PostgreSQL and Redis,
# sharded (cluster mode) and unsharded, hot account and uniform, each run
# after the 1-row pgbench ceiling at 16 clients. One JSON line per run.
#
# Usage: scripts/bench-cluster.sh [rounds=1] [secs=8]
# Env: DATABASE_URL, REDIS_URL (defaults: the local servers).
set -euo pipefail
rounds="${1:-1}"
secs="${2:-8}"
cd "$(dirname "$0")/.."
cargo build --quiet --release -p banking-example --example cluster_bench
bench="${CARGO_TARGET_DIR:-target}/release/examples/cluster_bench"
for r in $(seq 1 "$rounds"); do
  for scenario in hot uniform; do
    for mode in "" "--sharded"; do
      scripts/pg-ceiling-1row.sh 16
      RUST_LOG=error "$bench" --scenario "$scenario" $mode --clients 16 --secs "$secs" | tail -n1
    done
  done
done
