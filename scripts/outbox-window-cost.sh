#!/usr/bin/env bash
# What a parked stream's backlog costs the outbox poller's claim window:
# the window statement as it was before held rows (pending rows of a
# blocked stream skipped with a probe each, on every claim) against the
# current one (those rows held once, out of the pending index), on the same
# table: one parked row with N rows behind it, and 1,000 rows of 100 other
# streams. Prints the time of each window (3 runs) and of the one-time hold.
# Usage: outbox-window-cost.sh [N]   (default 100000; env PGHOST PGPORT PGUSER)
# Creates and drops the database es_outbox_window.
set -euo pipefail
n="${1:-100000}"
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
db=es_outbox_window
trap 'dropdb --if-exists "$db" >/dev/null 2>&1 || true' EXIT
dropdb --if-exists "$db" >/dev/null 2>&1 || true
createdb "$db"
# The outbox table as es-postgres's migrations leave it, and es-kafka's indexes.
psql -q -d "$db" -v n="$n" <<'SQL'
CREATE TABLE outbox (
    global_position BIGINT NOT NULL PRIMARY KEY, event_id UUID NOT NULL, stream_id TEXT NOT NULL,
    stream_type TEXT NOT NULL, version BIGINT NOT NULL, event_type TEXT NOT NULL, schema_version INTEGER NOT NULL,
    payload JSONB NOT NULL, metadata JSONB NOT NULL, recorded_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(), published_at TIMESTAMPTZ, attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, parked_at TIMESTAMPTZ, held_at TIMESTAMPTZ);
INSERT INTO outbox SELECT 1, gen_random_uuid(), 'p', 'account', 1, 'E', 1, '{}', '{}', now(), now(), NULL, 5, 'too large', now(), NULL;
INSERT INTO outbox SELECT g + 1, gen_random_uuid(), 'p', 'account', g + 1, 'E', 1, '{"i":1}', '{}', now()
  FROM generate_series(1, :n) g;
INSERT INTO outbox SELECT :n + 1 + g, gen_random_uuid(), 's' || (g % 100), 'account', g / 100 + 1, 'E', 1, '{"i":1}', '{}', now()
  FROM generate_series(1, 1000) g;
CREATE INDEX outbox_unpublished_stream ON outbox (stream_id, version) WHERE published_at IS NULL;
CREATE INDEX outbox_parked_stream ON outbox (stream_id) WHERE parked_at IS NOT NULL AND published_at IS NULL;
-- the pending index before held rows
CREATE INDEX outbox_pending_before ON outbox (global_position) WHERE published_at IS NULL AND parked_at IS NULL;
VACUUM ANALYZE outbox;
SQL
window() { printf '\\timing on\n%s \\g /dev/null\n' "$1" | psql -q -d "$db" | sed -n 's/^Time: /  /p'; }
echo "before: window with a probe per pending row, $n rows behind the parked one"
for _ in 1 2 3; do window "SELECT stream_id, min(global_position), count(*), max(global_position)
  FROM (SELECT o.stream_id, o.global_position FROM outbox o
        WHERE o.published_at IS NULL AND o.parked_at IS NULL AND o.global_position > -1
          AND NOT EXISTS (SELECT 1 FROM outbox b WHERE b.stream_id = o.stream_id
                          AND b.parked_at IS NOT NULL AND b.published_at IS NULL)
        ORDER BY o.global_position LIMIT 1000) w
  GROUP BY stream_id ORDER BY 2"; done
psql -q -d "$db" -c "CREATE INDEX outbox_pending ON outbox (global_position)
  WHERE published_at IS NULL AND parked_at IS NULL AND held_at IS NULL"
echo "the one-time hold of those rows"
window "UPDATE outbox o SET held_at = now() WHERE o.stream_id = ANY('{p}') AND o.published_at IS NULL
  AND o.parked_at IS NULL AND o.held_at IS NULL
  AND EXISTS (SELECT 1 FROM outbox b WHERE b.stream_id = o.stream_id AND b.parked_at IS NOT NULL AND b.published_at IS NULL)"
psql -q -d "$db" -c "VACUUM ANALYZE outbox"
echo "now: window over rows neither parked nor held, a probe per stream"
for _ in 1 2 3; do window "SELECT w.stream_id, min(w.global_position), count(*), max(w.global_position),
    EXISTS (SELECT 1 FROM outbox b WHERE b.stream_id = w.stream_id AND b.parked_at IS NOT NULL AND b.published_at IS NULL)
  FROM (SELECT o.stream_id, o.global_position FROM outbox o
        WHERE o.published_at IS NULL AND o.parked_at IS NULL AND o.held_at IS NULL AND o.global_position > -1
        ORDER BY o.global_position LIMIT 1000) w
  GROUP BY w.stream_id ORDER BY 2"; done
