#!/usr/bin/env bash
# Runs the benchmarks behind the book's plots, records their JSON lines in
# docs/plots/run.jsonl (committed beside the plots), and renders the SVG
# plots into docs/plots with the es-bench-plots crate (plotters).
#
#   scripts/plots.sh              # benchmarks + plots (about 5 minutes)
#   scripts/plots.sh --render     # plots only, from the committed run
#
# Needs PostgreSQL (DATABASE_URL, default the local server's `postgres`
# database) and pgbench. Uses bank_bench (es-postgres) for every figure. Each throughput point runs right after the
# pgbench 1-row ceiling at the same client count (scripts/pg-ceiling-1row.sh),
# so the plot compares the two on the machine's state of that moment.
# Run it on a quiet machine: nothing else compiling or benchmarking.
set -euo pipefail
cd "$(dirname "$0")/.."
run=docs/plots/run.jsonl
if [ "${1:-}" != "--render" ]; then
  export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
  target="${CARGO_TARGET_DIR:-target}"
  cargo build -q --release -p es-postgres --example bank_bench
  tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
  cores=$(nproc); mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
  printf '{"kind":"meta","recorded_at":"%s","machine":"%s cores, %s, PostgreSQL %s"}\n' \
    "$(date -u +%Y-%m-%d)" "$cores" "$mem" \
    "$(psql "$DATABASE_URL" -tAc 'SHOW server_version' | cut -d' ' -f1)" >"$tmp"
  for c in 1 4 16 64; do
    ops=$(( 24000 / c )); [ "$ops" -lt 300 ] && ops=300
    tps=$(scripts/pg-ceiling-1row.sh "$c" | sed -n 's/.*tps=\([0-9.]*\).*/\1/p')
    printf '{"kind":"ceiling","concurrency":%s,"tps":%s}\n' "$c" "$tps" >>"$tmp"
    line=$("$target/release/examples/bank_bench" --concurrency "$c" --ops-per-worker "$ops" --follow | grep '^{' | head -n1)
    echo "{\"kind\":\"bank_bench\",${line#\{}" >>"$tmp"
    echo "c=$c ceiling=$tps bank_bench=$(echo "$line" | sed -n 's/.*"ops_per_sec":\([0-9.]*\).*/\1/p')" >&2
  done
  # Rebuilds of a balances read model (one upsert per event) from a log
  # of about 100,000 events, one transaction per page.
  "$target/release/examples/bank_bench" --concurrency 16 --ops-per-worker 6000 --accounts 2000 \
      --rebuild-pages 100,500,2000,10000 | grep '"bench":"rebuild"' | while read -r line; do
    echo "{\"kind\":\"rebuild\",${line#\{}" >>"$tmp"
    echo "rebuild: $line" >&2
  done
  mv "$tmp" "$run"; trap - EXIT
fi
cargo run -q -p es-bench-plots -- --run "$run" --out docs/plots
