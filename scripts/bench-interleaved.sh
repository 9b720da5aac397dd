#!/usr/bin/env bash
# The c1 and c16 ratios against the ceiling, measured so that disk noise cannot decide
# them: each round runs the 1-row/tx pgbench ceiling (the SQL of
# scripts/pg-ceiling.sh) right before the matching bank_bench run, and
# prints both with their ratio. Commit latency on these machines swings by
# 2x within seconds, so read the totals line, not one round.
#
# Usage: scripts/bench-interleaved.sh [rounds=6] [seconds-per-ceiling=3]
# Env: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres),
#      PGHOST/PGPORT/PGUSER/PGSSLMODE for pgbench (default 127.0.0.1/5432/postgres/disable).
set -euo pipefail
rounds="${1:-6}"
secs="${2:-3}"
cd "$(dirname "$0")/.."
# Without TLS on both sides, as docs/bench/WORKLOAD.md sets up (libpq would
# otherwise negotiate TLS with this server; sqlx here is built without it).
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}" PGSSLMODE="${PGSSLMODE:-disable}"
url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
cargo build --quiet --release -p es-postgres --example bank_bench
bench="${CARGO_TARGET_DIR:-target}/release/examples/bank_bench"

work=$(mktemp -d)
db=es_ceiling_interleaved
trap 'rm -rf "$work"; dropdb --if-exists "$db" >/dev/null 2>&1 || true' EXIT
dropdb --if-exists "$db" >/dev/null 2>&1 || true
createdb "$db"
psql -q -d "$db" -c "CREATE TABLE events(global_position bigserial PRIMARY KEY, stream_id uuid NOT NULL,
  version bigint NOT NULL, event_type text NOT NULL, payload jsonb NOT NULL, metadata jsonb,
  recorded_at timestamptz NOT NULL DEFAULT now(), UNIQUE (stream_id, version)); CREATE SEQUENCE v;"
cat > "$work/r1.sql" <<'SQL'
BEGIN;
INSERT INTO events(stream_id, version, event_type, payload, metadata)
SELECT gen_random_uuid(), nextval('v'), 'MoneyDeposited', '{"amount":"100.25"}', '{"correlation_id":"6f1c1b0e-5b7e-4a59-9d43-3b2f0c8e1a11"}' FROM generate_series(1, 1);
COMMIT;
SQL

# ceiling CLIENTS -> "tps p50_us p99_us"
ceiling() {
  local c=$1 j=$(( $1 < 2 ? $1 : 2 ))
  rm -f "$work"/log.*
  local tps
  tps=$(cd "$work" && pgbench -n -M prepared -f r1.sql -c "$c" -j "$j" -T "$secs" -l --log-prefix=log "$db" 2>/dev/null \
        | sed -n 's/^tps = \([0-9.]*\) (without.*/\1/p')
  cat "$work"/log.* | awk '{print $3}' | sort -n \
    | awk -v t="$tps" '{a[NR]=$1} END {printf "%.0f %d %d\n", t, a[int(NR*0.5)], a[int(NR*0.99)]}'
}
# ours ARGS... -> "ops_per_sec p50_us p99_us"; a run that does not verify stops the script
ours() {
  if ! "$bench" --database-url "$url" "$@" > "$work/out" 2> "$work/err"; then
    echo "bank_bench $* failed:" >&2; cat "$work/out" "$work/err" >&2; kill $$
  fi
  head -1 "$work/out" \
    | sed -E 's/.*"ops_per_sec":([0-9.]+),"p50_us":([0-9]+),"p90_us":[0-9]+,"p99_us":([0-9]+).*/\1 \2 \3/'
}

printf '%-5s | %-28s | %-28s | %-6s || %-8s | %-8s | %-6s\n' round "ceiling@1 tps (p50/p99 us)" "c1 ops/s (p50/p99 us)" ratio \
  "ceil@16" "c16" ratio
for r in $(seq 1 "$rounds"); do
  read -r c1t c1p50 c1p99 < <(ceiling 1)
  read -r o1 o1p50 o1p99 < <(ours --accounts 1000 --concurrency 1 --ops-per-worker 2000)
  read -r c16t _ _ < <(ceiling 16)
  read -r o16 _ _ < <(ours --accounts 1000 --concurrency 16 --ops-per-worker 1000)
  echo "$r $c1t $c1p50 $c1p99 $o1 $o1p50 $o1p99 $c16t $o16" >> "$work/rows"
  awk '{printf "%-5s | %6d (%5d/%5d, %.1fx) | %6d (%5d/%5d, %.1fx) | %-6.2f || %8d | %8d | %-6.2f\n",
        $1, $2, $3, $4, $4/$3, $5, $6, $7, $7/$6, $5/$2, $8, $9, $9/$8}' <<< "$r $c1t $c1p50 $c1p99 $o1 $o1p50 $o1p99 $c16t $o16"
done
awk '{c1+=$2; o1+=$5; c16+=$8; o16+=$9; r=$7/$6; if (r>worst) worst=r; cr=$4/$3; if (cr>cworst) cworst=cr}
     END {printf "total | c1/ceiling@1 %.2f | c16/ceiling@16 %.2f | worst c1 p99/p50 ours %.1f, pgbench %.1f\n",
          o1/c1, o16/c16, worst, cworst}' "$work/rows"
