#!/usr/bin/env bash
# Where the CPU of an HTTP deposit goes: starts the release banking server
# (rate limits off, as in scripts/bench-http.sh), loads it with http_bench,
# and prints, beside http_bench's JSON line, the CPU time the server, every
# PostgreSQL process and the load generator used per request over the
# measured seconds (from /proc/<pid>/stat).
#
# Usage: scripts/http-cpu.sh [connections=16] [seconds=6]
# Env: SERVER (default target/release/banking-example), STORE=memory for the
#      server with everything in memory (no PostgreSQL), DATABASE_URL,
#      PORT (default 18090), RUST_LOG (the server's; default info),
#      NO_BUILD=1 (use what is built).
set -euo pipefail
conns="${1:-16}"
secs="${2:-6}"
cd "$(dirname "$0")/.."
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --quiet --release -p banking-example --bin banking-example --example http_bench
fi
target="${CARGO_TARGET_DIR:-target}/release"
bin="${SERVER:-$target/banking-example}"
url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}"
port="${PORT:-18090}"
schema="http_cpu_$$"
work=$(mktemp -d)
server=""
# shellcheck source=scripts/http-server.sh
. scripts/http-server.sh
cleanup() {
  stop_server
  if [ "${STORE:-}" != memory ]; then psql -q "$url" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

serve "$schema" "$bin"

# ticks PID...: summed user+system clock ticks of the processes
ticks() { local t=0 v; for p in "$@"; do v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0); t=$((t + v)); done; echo "$t"; }

"$target/examples/http_bench" --url "http://127.0.0.1:$port" --connections "$conns" --duration "$secs" \
  --warmup 1 --accounts 1000 --server-pid "$server" > "$work/out.json" &
load=$!
# Measure from the 2nd second to the end of the run (accounts set up, warm).
sleep 2
pg=$(pgrep -x postgres || true)
s0=$(ticks "$server"); p0=$(ticks $pg); l0=$(ticks "$load"); t0=$(date +%s.%N)
sleep $((secs - 1))
s1=$(ticks "$server"); p1=$(ticks $pg); l1=$(ticks "$load"); t1=$(date +%s.%N)
wait "$load"
line=$(cat "$work/out.json")
echo "$line"
rps=$(sed -E 's/.*"requests_per_sec":([0-9.]+).*/\1/' <<< "$line")
hz=$(getconf CLK_TCK)
awk -v s=$((s1 - s0)) -v p=$((p1 - p0)) -v l=$((l1 - l0)) -v t0="$t0" -v t1="$t1" -v hz="$hz" -v rps="$rps" 'BEGIN {
  el = t1 - t0; us = 1e6 / hz / (rps * el)
  printf "cpu over %.1f s (cores busy): server %.2f, postgres %.2f, load %.2f\n", el, s/hz/el, p/hz/el, l/hz/el
  printf "cpu per request: server %.0f us, postgres %.0f us, load %.0f us (at %.0f req/s)\n", s*us, p*us, l*us, rps }'
