#!/usr/bin/env bash
# A flame graph of the release banking server under HTTP deposits: starts
# the server on PostgreSQL (rate limits off, as in scripts/bench-http.sh),
# loads it with http_bench at CONNECTIONS for 8 s, samples the server with
# perf (297 Hz, DWARF call graphs) from the 3rd to the 7th second, folds
# the stacks with inferno-collapse-perf and draws them with
# inferno-flamegraph, and prints the share of the samples whose stacks
# pass through each group of frames (system calls, sqlx, allocator, ...;
# the groups overlap). Needs perf (Debian: linux-perf) and inferno
# (`cargo install inferno`); the release profile keeps line tables.
#
# Usage: scripts/http-flamegraph.sh [out.svg=docs/flamegraph-http-deposits.svg]
# Env: SERVER (default target/release/banking-example), CONNECTIONS
#      (default 16), DATABASE_URL, PORT (default 18095), RUST_LOG (the
#      server's; default info), NO_BUILD=1 (use what is built), FOLDED=path
#      (also keep the folded stacks there, one line per stack and count).
set -euo pipefail
out="${1:-docs/flamegraph-http-deposits.svg}"
cd "$(dirname "$0")/.."
for tool in perf inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 1; }
done
port="${PORT:-18095}"
# shellcheck source=scripts/http-server.sh
. scripts/http-server.sh
trap finish EXIT
build_release
bin="${SERVER:-$target/banking-example}"
conns="${CONNECTIONS:-16}"
schema="http_flame_$$"
schemas+=("$schema")

serve "$schema" "$bin"

"$target/examples/http_bench" --url "http://127.0.0.1:$port" --connections "$conns" --duration 8 \
  --warmup 1 --accounts 1000 --server-pid "$server" > "$work/out.json" &
load=$!
# Set-up (a user, 1,000 accounts) and the warm-up first: wait until the
# measured part has run two seconds.
sleep 3
perf record -q -F 297 --call-graph dwarf -o "$work/perf.data" -p "$server" -- sleep 4 2>/dev/null
wait "$load"
cat "$work/out.json"
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf > "$work/folded"
if [ -n "${FOLDED:-}" ]; then cp "$work/folded" "$FOLDED"; fi
inferno-flamegraph --minwidth 0.25 --title "banking-example: HTTP deposits, $conns connections" < "$work/folded" > "$out"
echo "wrote $out ($(wc -l < "$work/folded") distinct stacks)"

# Share of the samples whose stack has a frame matching each pattern.
total=$(awk '{ s += $NF } END { print s }' "$work/folded")
while IFS='|' read -r name pattern; do
  n=$(grep -E "$pattern" "$work/folded" | awk '{ s += $NF } END { print s + 0 }')
  awk -v n="$n" -v t="$total" -v name="$name" 'BEGIN { printf "%-22s %5.1f %%\n", name, 100 * n / t }'
done <<'GROUPS'
system calls|entry_SYSCALL_64
writev|writev
finish_task_switch|finish_task_switch
sqlx|sqlx
append batcher|es_postgres::batcher::run
projection runners|ProjectionRunner|app::follow|transfer::runtime
allocator|mi_malloc|mi_free|_mi_|mi_theap|__rust_alloc|__rust_dealloc|__rust_realloc
JSON|serde_json
hyper request parsing|hyper::proto::h1::role::.*parse|Buffered<T,B>::parse
moka|moka::
tracing|tracing_subscriber|tracing_core::dispatcher|tracing::span::Span::(new|enter|exit|drop|record)
metrics|(^|[^a-z_])metrics::|metrics_exporter|metrics_util
JWT|jsonwebtoken|AccessTokens
GROUPS
