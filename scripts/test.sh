#!/usr/bin/env bash
# Runs the whole test suite against the local PostgreSQL and Redis,
# starting them first when they are installed but not running.
#   PostgreSQL: 127.0.0.1:5432, user postgres (ES_TEST_DATABASE_URL overrides
#               the test database, default postgres://postgres@127.0.0.1:5432/es_test)
#   Redis:      127.0.0.1:6379 (REDIS_URL overrides)
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

# A fresh database for the tests (each test then works in its own schema).
if [ -z "${ES_TEST_DATABASE_URL:-}" ]; then
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS es_test WITH (FORCE)" \
       -c "CREATE DATABASE es_test" >/dev/null
fi

cargo test --workspace --all-features "$@"
