#!/usr/bin/env bash
# The HTTP request path against the library under it, in one run: per round
# the 1-row pgbench ceiling at 16 clients (scripts/pg-ceiling-1row.sh, 5 s),
# es-postgres's bank_bench at 16 workers for as long as each load run (its
# rate over a fraction of a second is well above its rate over seconds),
# then the release banking server on PostgreSQL loaded by banking-example's
# http_bench (deposits with a bearer token over 1,000 accounts, rate limits
# off) at 16 and 64 connections.
# Prints every JSON line and a table with the ratios.
#
# With SERVERS="label=binary label=binary ..." each round loads every one
# of those server binaries in turn (alternating), for before/after
# comparisons of the server alone; the default is the one just built
# (new=target/release/banking-example).
#
# Usage: scripts/bench-http.sh [rounds=3] [seconds-per-run=5]
# Env: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable: no TLS on
#      loopback, for the server and bank_bench alike),
#      PGHOST/PGPORT/PGUSER/PGSSLMODE for pgbench (default 127.0.0.1/5432/postgres/disable),
#      SERVERS, CONNECTIONS (default "16 64"), PORT (default 18080),
#      RUST_LOG (the server's; default info), NO_BUILD=1 (use what is built).
set -euo pipefail
rounds="${1:-3}"
secs="${2:-5}"
cd "$(dirname "$0")/.."
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}" PGSSLMODE="${PGSSLMODE:-disable}"
port="${PORT:-18080}"
# shellcheck source=scripts/http-server.sh
. scripts/http-server.sh
trap finish EXIT
build_release -p es-postgres --example bank_bench
servers="${SERVERS:-new=$target/banking-example}"
connections="${CONNECTIONS:-16 64}"

# ceiling CLIENTS: the 1-row ceiling's transactions/s (5 s)
ceiling() { scripts/pg-ceiling-1row.sh "$1" | sed -n 's/.*tps=\([0-9.]*\).*/\1/p'; }


# load BINARY LABEL ROUND: one server (fresh schema), each connection count; prints the JSON lines
load() {
  local schema="bench_http_$$_$3_$2"
  schemas+=("$schema")
  serve "$schema" "$1"
  for c in $connections; do
    line=$("$target/examples/http_bench" --url "http://127.0.0.1:$port" --connections "$c" \
           --duration "$secs" --warmup 1 --accounts 1000 --server-pid "$server")
    echo "$2 c$c $line"
    echo "$3 $2 $c $line" >> "$work/http"
  done
  stop_server
}

num() { sed -E "s/.*\"$1\":([0-9.]+).*/\1/"; }

for r in $(seq 1 "$rounds"); do
  c16=$(ceiling 16)
  bb=$("$target/examples/bank_bench" --database-url "$url" --accounts 1000 --concurrency 16 --duration-secs "$secs" | head -1)
  echo "ceiling@16 $c16 | bank_bench c16 $bb"
  echo "$r $c16 $(num ops_per_sec <<< "$bb")" >> "$work/lib"
  for s in $servers; do load "${s#*=}" "${s%%=*}" "$r"; done
done

echo
printf '%-5s | %-7s | %-10s | %-14s | %-4s | %-9s | %-17s | %-7s | %-7s | %-8s | %s\n' \
  round ceil@16 "bank c16" server conn "req/s" "p50/p90/p99 ms" "x bank" "x ceil" "HWM MB" status
while read -r r label c line; do
  read -r _ ceil bank < <(grep "^$r " "$work/lib")
  rps=$(num requests_per_sec <<< "$line"); p50=$(num p50_us <<< "$line"); p90=$(num p90_us <<< "$line")
  p99=$(num p99_us <<< "$line"); hwm=$(num server_hwm_kb <<< "$line")
  status=$(sed -E 's/.*"status":\{([^}]*)\}.*/\1/' <<< "$line" | tr -d '"')
  awk -v r="$r" -v ceil="$ceil" -v bank="$bank" -v l="$label" -v c="$c" -v rps="$rps" -v p50="$p50" \
      -v p90="$p90" -v p99="$p99" -v hwm="$hwm" -v st="$status" 'BEGIN {
    printf "%-5s | %7d | %10d | %-14s | %-4s | %9d | %5.1f/%5.1f/%5.1f | %7.2f | %7.2f | %8.0f | %s\n",
      r, ceil, bank, l, c, rps, p50/1000, p90/1000, p99/1000, rps/bank, rps/ceil, hwm/1024, st }'
done < "$work/http"
echo
# Totals per server and connection count: summed requests/s over summed bank_bench c16 and ceilings.
while read -r r label c line; do
  read -r _ ceil bank < <(grep "^$r " "$work/lib")
  echo "$label $c $(num requests_per_sec <<< "$line") $bank $ceil $(num p99_us <<< "$line")"
done < "$work/http" | awk '{k=$1" c"$2; n[k]++; rps[k]+=$3; bank[k]+=$4; ceil[k]+=$5; if ($6>p99[k]) p99[k]=$6}
  END {for (k in n) printf "total %-18s | %9.0f req/s | %.2fx bank_bench c16 | %.2fx ceiling@16 | worst p99 %.1f ms\n",
       k, rps[k]/n[k], rps[k]/bank[k], rps[k]/ceil[k], p99[k]/1000}' | sort
