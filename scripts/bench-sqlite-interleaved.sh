#!/usr/bin/env bash
# es-sqlite beside es-postgres on the standard bank workload, in interleaved
# rounds so that disk and CPU noise hit both alike: each round runs the
# 1-row/tx pgbench ceiling (scripts/pg-ceiling-1row.sh 1 16), then c1, c16
# and hot on es-postgres (bank_bench), es-sqlite --synchronous full and
# es-sqlite --synchronous normal (sqlite_bench), one after the other; then
# three rehydrations of a 10,000-event stream on each. One JSON line per run.
#
# Usage: scripts/bench-sqlite-interleaved.sh [rounds=4]
# Env: DATABASE_URL for bank_bench (default postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
rounds="${1:-4}"
cd "$(dirname "$0")/.."
cargo build --quiet --release -p es-postgres --example bank_bench
cargo build --quiet --release -p es-sqlite --example sqlite_bench
pg="${CARGO_TARGET_DIR:-target}/release/examples/bank_bench"
sqlite="${CARGO_TARGET_DIR:-target}/release/examples/sqlite_bench"
for round in $(seq 1 "$rounds"); do
  echo "== round $round $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  scripts/pg-ceiling-1row.sh 1 16
  for cfg in "--accounts 1000 --concurrency 1 --ops-per-worker 2000" \
             "--accounts 1000 --concurrency 16 --ops-per-worker 500" \
             "--scenario hot --concurrency 16 --ops-per-worker 100"; do
    # shellcheck disable=SC2086
    "$pg" $cfg 2>/dev/null
    # shellcheck disable=SC2086
    "$sqlite" --synchronous full $cfg 2>/dev/null
    # shellcheck disable=SC2086
    "$sqlite" --synchronous normal $cfg 2>/dev/null
  done
done
for _ in 1 2 3; do
  "$pg" --mode rehydrate 2>/dev/null
  "$sqlite" --mode rehydrate 2>/dev/null
done
