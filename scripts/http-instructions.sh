#!/usr/bin/env bash
# Instructions the banking server executes per HTTP deposit, counted by
# valgrind's callgrind: user-space instructions, repeatable where timings
# on a small shared machine are not. Each server binary runs twice under
# callgrind on PostgreSQL (rate limits off, as in scripts/bench-http.sh),
# loaded by http_bench (16 connections, no warm-up) for SHORT and then LONG
# seconds; the difference of the two runs' instruction totals over the
# difference of their acknowledged deposits is the cost of one deposit,
# with start-up and set-up (a user, 1,000 accounts, the final check)
# cancelled out. Under valgrind the server runs one thread at a time and
# some 50 times slower, so compare binaries with each other, not with
# timings; kernel work (system calls) is not counted.
#
# Usage: scripts/http-instructions.sh label=binary [label=binary ...]
#        (default: new=target/release/banking-example)
# Env: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable),
#      SHORT (default 10), LONG (default 40), CONNECTIONS (default 16),
#      PORT (default 18300), RUST_LOG (the server's; default info),
#      NO_BUILD=1 (use what is built), KEEP=dir (keep each run's callgrind
#      output there as <label>-<seconds>s.callgrind, and print where one
#      deposit's instructions go: scripts/callgrind-per-request.py).
# Prints one JSON line per run and per binary.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "error: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
port="${PORT:-18300}"
# shellcheck source=scripts/http-server.sh
. scripts/http-server.sh
trap finish EXIT
build_release
short="${SHORT:-10}"
long="${LONG:-40}"
conns="${CONNECTIONS:-16}"
servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=("new=$target/banking-example")
runs=0

# run LABEL BINARY SECONDS: writes "requests instructions" to $work/result
run() {
  runs=$((runs + 1))
  local schema="http_instr_$$_$runs"
  schemas+=("$schema")
  serve "$schema" "$2" valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out"
  line=$("$target/examples/http_bench" --url "http://127.0.0.1:$port" --connections "$conns" \
         --duration "$3" --warmup 0 --accounts 1000)
  # SIGTERM: the server shuts down cleanly and callgrind writes its totals.
  stop_server
  grep -q '"verified":true' <<< "$line" || { echo "error: $1 did not verify: $line" >&2; return 1; }
  requests=$(sed -E 's/.*"requests":([0-9]+).*/\1/' <<< "$line")
  instructions=$(sed -n -E 's/^(summary|totals): ([0-9]+).*/\2/p' "$work/callgrind.out" | head -n1)
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$work/callgrind.out" "$KEEP/$1-$3s.callgrind"; fi
  echo "{\"server\":\"$1\",\"seconds\":$3,\"requests\":$requests,\"instructions\":$instructions}" >&2
  echo "$requests $instructions" > "$work/result"
}

for s in "${servers[@]}"; do
  label="${s%%=*}"; bin="${s#*=}"
  run "$label" "$bin" "$short"; read -r r1 i1 < "$work/result"
  run "$label" "$bin" "$long"; read -r r2 i2 < "$work/result"
  awk -v l="$label" -v r1="$r1" -v i1="$i1" -v r2="$r2" -v i2="$i2" 'BEGIN {
    if (r2 <= r1) { printf "error: %s: the long run acknowledged no more deposits than the short one\n", l > "/dev/stderr"; exit 1 }
    printf "{\"server\":\"%s\",\"instructions_per_request\":%.0f,\"requests\":[%d,%d],\"instructions\":[%d,%d]}\n", l, (i2 - i1) / (r2 - r1), r1, r2, i1, i2 }'
  if [ -n "${KEEP:-}" ]; then
    scripts/callgrind-per-request.py "$KEEP/$label-${short}s.callgrind" "$KEEP/$label-${long}s.callgrind" "$r1" "$r2"
  fi
done
