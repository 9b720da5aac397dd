#!/usr/bin/env bash
# Where the CPU of an HTTP deposit goes: starts the release banking server
# (rate limits off, as in scripts/bench-http.sh), loads it with http_bench,
# and prints, beside http_bench's JSON line, the CPU time the server, every
# PostgreSQL process and the load generator used per request over the
# measured seconds (from /proc/<pid>/stat).
#
# With LIBRARY=1 it measures es-postgres's bank_bench instead (as many
# workers as connections, the workload scripts/bench-http.sh compares the
# server with): CPU per operation of bank_bench and of PostgreSQL, the
# other side of that ratio.
#
# Usage: scripts/http-cpu.sh [connections=16] [seconds=6]
# Env: SERVER (default target/release/banking-example), STORE=memory for the
#      server with everything in memory (no PostgreSQL), LIBRARY=1, DATABASE_URL,
#      PORT (default 18090), RUST_LOG (the server's; default info),
#      NO_BUILD=1 (use what is built).
set -euo pipefail
conns="${1:-16}"
secs="${2:-6}"
cd "$(dirname "$0")/.."
port="${PORT:-18090}"
# shellcheck source=scripts/http-server.sh
. scripts/http-server.sh
bin="${SERVER:-$target/banking-example}"
schema="http_cpu_$$"
if [ "${STORE:-}" != memory ]; then schemas+=("$schema"); fi
cleanup() {
  # bank_bench (LIBRARY=1) stopped before its end leaves its schema,
  # bench_<its pid>_<time>: dropped here.
  local bench="${bench_pid:-}"
  if [ -n "$bench" ]; then
    stop_server
    schemas+=($(psql -Atq "$url" -c "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\_${bench}\_%'" 2>/dev/null || true))
  fi
  finish
}
trap cleanup EXIT
if [ "${LIBRARY:-}" = 1 ]; then build_release -p es-postgres --example bank_bench; else build_release; fi

# ticks PID...: summed user+system clock ticks of the processes
ticks() {
  local t=0 v p
  for p in "$@"; do
    if [ -n "$p" ]; then v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0); t=$((t + v)); fi
  done
  echo "$t"
}

if [ "${LIBRARY:-}" = 1 ]; then
  # Timed for a second past the measured window (its timing starts after
  # its set-up, so it covers the window); its own schema, dropped at its end.
  "$target/examples/bank_bench" --database-url "$url" --accounts 1000 --concurrency "$conns" \
    --duration-secs "$((secs + 1))" > "$work/out.json" 2>/dev/null &
  server=$!
  bench_pid=$server
  load=""
else
  serve "$schema" "$bin"
  "$target/examples/http_bench" --url "http://127.0.0.1:$port" --connections "$conns" --duration "$secs" \
    --warmup 1 --accounts 1000 --server-pid "$server" > "$work/out.json" &
  load=$!
fi
# Measure from the 2nd second to the end of the run (accounts set up, warm).
sleep 2
pg=$(pgrep -x postgres || true)
s0=$(ticks "$server"); p0=$(ticks $pg); l0=$(ticks "$load"); t0=$(date +%s.%N)
sleep $((secs - 1))
s1=$(ticks "$server"); p1=$(ticks $pg); l1=$(ticks "$load"); t1=$(date +%s.%N)
wait "${load:-$server}"
line=$(head -1 "$work/out.json")
echo "$line"
hz=$(getconf CLK_TCK)
if [ "${LIBRARY:-}" = 1 ]; then
  server=""
  ops=$(sed -E 's/.*"ops_per_sec":([0-9.]+).*/\1/' <<< "$line")
  awk -v b=$((s1 - s0)) -v p=$((p1 - p0)) -v t0="$t0" -v t1="$t1" -v hz="$hz" -v ops="$ops" 'BEGIN {
    el = t1 - t0; us = 1e6 / hz / (ops * el)
    printf "cpu over %.1f s (cores busy): bank_bench %.2f, postgres %.2f\n", el, b/hz/el, p/hz/el
    printf "cpu per operation: bank_bench %.0f us, postgres %.0f us (at %.0f ops/s)\n", b*us, p*us, ops }'
  exit 0
fi
rps=$(sed -E 's/.*"requests_per_sec":([0-9.]+).*/\1/' <<< "$line")
awk -v s=$((s1 - s0)) -v p=$((p1 - p0)) -v l=$((l1 - l0)) -v t0="$t0" -v t1="$t1" -v hz="$hz" -v rps="$rps" 'BEGIN {
  el = t1 - t0; us = 1e6 / hz / (rps * el)
  printf "cpu over %.1f s (cores busy): server %.2f, postgres %.2f, load %.2f\n", el, s/hz/el, p/hz/el, l/hz/el
  printf "cpu per request: server %.0f us, postgres %.0f us, load %.0f us (at %.0f req/s)\n", s*us, p*us, l*us, rps }'
