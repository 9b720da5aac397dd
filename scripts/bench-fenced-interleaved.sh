#!/usr/bin/env bash
# The cost of shard fences on the group commit: bank_bench c16 with and
# without --fenced (every append carrying its shard's fence, checked by the
# append statement), in alternating order, each round after the 1-row
# pgbench ceiling at 16 clients. Prints one line per run and the totals.
#
# Usage: scripts/bench-fenced-interleaved.sh [rounds=4] [ops-per-worker=1000]
set -euo pipefail
rounds="${1:-4}"
ops="${2:-1000}"
cd "$(dirname "$0")/.."
cargo build --quiet --release -p es-postgres --example bank_bench
bench="${CARGO_TARGET_DIR:-target}/release/examples/bank_bench"
plain_total=0; fenced_total=0; ceiling_total=0
rate() { python3 -c 'import json,sys; print(json.loads(sys.stdin.readlines()[-1])["ops_per_sec"])'; }
for r in $(seq 1 "$rounds"); do
  ceiling=$(scripts/pg-ceiling-1row.sh 16 | sed -n 's/.*tps=\([0-9.]*\).*/\1/p')
  if (( r % 2 )); then order="plain fenced"; else order="fenced plain"; fi
  for kind in $order; do
    flag=""; [ "$kind" = fenced ] && flag="--fenced"
    ops_s=$("$bench" --accounts 1000 --concurrency 16 --ops-per-worker "$ops" $flag | rate)
    echo "round $r ceiling16 $ceiling $kind c16 $ops_s"
    if [ "$kind" = fenced ]; then fenced_total=$(python3 -c "print($fenced_total + $ops_s)"); else plain_total=$(python3 -c "print($plain_total + $ops_s)"); fi
  done
  ceiling_total=$(python3 -c "print($ceiling_total + $ceiling)")
done
python3 -c "p=$plain_total/$rounds; f=$fenced_total/$rounds; c=$ceiling_total/$rounds; print(f'mean ceiling16 {c:.0f} plain c16 {p:.0f} ({p/c:.2f}x) fenced c16 {f:.0f} ({f/c:.2f}x) fenced/plain {f/p:.3f}')"
