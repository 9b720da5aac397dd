#!/usr/bin/env bash
# Runs the whole test suite against the local PostgreSQL and Redis,
# starting them first when they are installed but not running.
#   PostgreSQL: 127.0.0.1:5432, user postgres (ES_TEST_DATABASE_URL overrides
#               the test database, default postgres://postgres@127.0.0.1:5432/es_test)
#   Redis:      127.0.0.1:6379 (REDIS_URL overrides)
#   Kafka:      rdkafka's in-process mock cluster, or the broker named by
#               KAFKA_BOOTSTRAP_SERVERS (es-kafka tests)
set -euo pipefail
cd "$(dirname "$0")/.."

wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "error: $name is not reachable" >&2; return 1
}

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  if command -v redis-server >/dev/null; then
    echo "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
  wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
fi

# es-kafka's CDC relay needs logical decoding: wal_level=logical takes a
# restart (about 3 s), done only when the server is not set up yet.
if [ "$(psql -h 127.0.0.1 -U postgres -d postgres -tAc "SHOW wal_level")" != "logical" ]; then
  echo "setting wal_level=logical and restarting PostgreSQL"
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "ALTER SYSTEM SET wal_level = logical"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main restart
  wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432
fi

# A fresh database for the tests (each test then works in its own schema).
if [ -z "${ES_TEST_DATABASE_URL:-}" ]; then
  # Replication slots left by an interrupted es-kafka run would block the
  # DROP DATABASE (and hold WAL): drop the inactive ones of es_test first.
  psql -q -h 127.0.0.1 -U postgres -d postgres -tAc \
    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = 'es_test' AND NOT active" >/dev/null
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS es_test WITH (FORCE)" \
       -c "CREATE DATABASE es_test" >/dev/null
fi

cargo test --workspace --all-features "$@"
