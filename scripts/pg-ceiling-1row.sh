#!/usr/bin/env bash
# The 1-row/tx INSERT ceiling only (the same SQL as scripts/pg-ceiling.sh), 5 s per
# client count, for interleaving with bench runs. Usage: scripts/pg-ceiling-1row.sh 1 16
set -euo pipefail
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
export PGHOST=127.0.0.1 PGUSER=postgres PGSSLMODE=${PGSSLMODE:-disable}
db=es_ceiling1_$$; dropdb --if-exists $db >/dev/null 2>&1 || true; createdb $db
psql -q -d $db -c "CREATE TABLE events(global_position bigserial PRIMARY KEY, stream_id uuid NOT NULL, version bigint NOT NULL, event_type text NOT NULL, payload jsonb NOT NULL, metadata jsonb, recorded_at timestamptz NOT NULL DEFAULT now(), UNIQUE (stream_id, version)); CREATE SEQUENCE v;"
echo "BEGIN; INSERT INTO events(stream_id, version, event_type, payload, metadata) SELECT gen_random_uuid(), nextval('v'), 'MoneyDeposited', '{\"amount\":\"100.25\"}', '{\"correlation_id\":\"6f1c1b0e-5b7e-4a59-9d43-3b2f0c8e1a11\"}' FROM generate_series(1, 1); COMMIT;" > "$work/r1.sql"
for c in "$@"; do j=$(( c < 2 ? c : 2 )); pgbench -n -M prepared -f "$work/r1.sql" -c $c -j $j -T 5 $db 2>/dev/null | sed -n "s/^tps = \([0-9.]*\) (without.*/ceiling1 clients=$c tps=\1/p"; done
dropdb $db
