#!/usr/bin/env bash
# Direct appends vs write-behind through Redis (bank_bench --write-behind),
# interleaved with the 1-row pgbench ceiling, in one run: c1, c16 and c64
# over 1,000 accounts, and hot (16 workers, one account). The order of
# direct and write-behind alternates per round. Starts its own redis-server
# on a spare port with appendonly yes and appendfsync always (files under
# target/), so an acknowledged append survives a Redis restart, as in
# production. Prints one JSON line per run, then a summary per scenario.
#
# Usage: scripts/bench-write-behind.sh [rounds=2] [ops-per-worker=1000]
set -euo pipefail
rounds="${1:-2}"
ops="${2:-1000}"
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --quiet --release -p es-postgres --example bank_bench
bench="$target/release/examples/bank_bench"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$target"
dir=$(mktemp -d "$(cd "$target" && pwd)/wb-redis.XXXXXX")
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync always \
  --dir "$dir" --daemonize yes --logfile "$dir/redis.log" --pidfile "$dir/redis.pid"
trap 'kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis_url="redis://127.0.0.1:$port"
out=$(mktemp); trap 'kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; rm -rf "$dir" "$out"' EXIT
run() { # scenario label args...
  local scenario=$1 label=$2; shift 2
  local line
  line=$("$bench" "$@" | tail -n1)
  echo "{\"scenario\":\"$scenario\",\"path\":\"$label\",\"result\":$line}" | tee -a "$out"
}
for r in $(seq 1 "$rounds"); do
  for scenario in c1 c16 c64 hot; do
    case $scenario in
      c1) args=(--accounts 1000 --concurrency 1 --ops-per-worker $((ops * 4))); clients=1 ;;
      c16) args=(--accounts 1000 --concurrency 16 --ops-per-worker "$ops"); clients=16 ;;
      c64) args=(--accounts 1000 --concurrency 64 --ops-per-worker $((ops / 2))); clients=64 ;;
      hot) args=(--scenario hot --concurrency 16 --ops-per-worker "$ops"); clients=16 ;;
    esac
    ceiling=$(scripts/pg-ceiling-1row.sh "$clients" | sed -n 's/.*tps=\([0-9.]*\).*/\1/p')
    echo "{\"scenario\":\"$scenario\",\"path\":\"ceiling1\",\"clients\":$clients,\"tps\":$ceiling}" | tee -a "$out"
    if (( r % 2 )); then order="direct write-behind"; else order="write-behind direct"; fi
    for path in $order; do
      if [ "$path" = direct ]; then
        run "$scenario" direct "${args[@]}" --follow
      else
        run "$scenario" write-behind "${args[@]}" --follow --write-behind --redis-url "$redis_url"
      fi
    done
  done
done
python3 - "$out" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
for sc in ["c1", "c16", "c64", "hot"]:
    ceil = st.mean(r["tps"] for r in rows if r["scenario"] == sc and r["path"] == "ceiling1")
    line = [f"{sc}: ceiling1 {ceil:.0f}"]
    for path in ["direct", "write-behind"]:
        rs = [r["result"] for r in rows if r["scenario"] == sc and r["path"] == path]
        ops = st.mean(r["ops_per_sec"] for r in rs)
        p99 = st.mean(r["p99_us"] for r in rs) / 1000
        lag = st.mean(r["projection_lag_p99_us"] for r in rs) / 1000
        line.append(f"{path} {ops:.0f} ops/s ({ops / ceil:.2f}x) p99 {p99:.1f} ms lag p99 {lag:.1f} ms")
    d = st.mean(r["result"]["ops_per_sec"] for r in rows if r["scenario"] == sc and r["path"] == "direct")
    w = st.mean(r["result"]["ops_per_sec"] for r in rows if r["scenario"] == sc and r["path"] == "write-behind")
    line.append(f"write-behind/direct {w / d:.2f}")
    print(" | ".join(line))
PY
