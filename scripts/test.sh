#!/usr/bin/env bash
# Runs the whole test suite against the local PostgreSQL and Redis,
# starting them first when they are installed but not running. When they
# are not installed: as root with apt-get (CI machines), installs them
# (and creates the cluster, trusting user postgres on loopback); otherwise
# prints the command that does. No suite is skipped: a test that needs
# PostgreSQL or Redis fails when they are not there.
#   PostgreSQL: 127.0.0.1:5432, user postgres (ES_TEST_DATABASE_URL overrides
#               the test database, default postgres://postgres@127.0.0.1:5432/es_test)
#   Redis:      127.0.0.1:6379 (REDIS_URL overrides)
#   Kafka:      rdkafka's in-process mock cluster, or the broker named by
#               KAFKA_BOOTSTRAP_SERVERS (es-kafka tests)
# `scripts/test.sh --setup-only` installs and starts what is missing, then
# stops before the tests.
# After the cargo tests, scripts/examples.sh runs every example and
# scripts/schemathesis.sh fuzzes the HTTP API from
# its OpenAPI document (schemathesis installed with pip into a virtualenv
# under the target directory).
set -euo pipefail
cd "$(dirname "$0")/.."

wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "error: $name is not reachable" >&2; return 1
}

# The tools the run needs: the clients, and the servers themselves (some
# tests start their own PostgreSQL cluster or redis-server on a spare port).
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true; }
missing=()
{ command -v psql && command -v pg_isready; } >/dev/null || missing+=(postgresql-client)
{ [ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ]; } || command -v initdb >/dev/null || missing+=(postgresql)
{ command -v redis-server && command -v redis-cli; } >/dev/null || missing+=(redis-server)
# librdkafka is built with TLS (the system OpenSSL); the TLS tests make
# their certificates with the openssl tool; schemathesis runs in a venv.
{ command -v pkg-config && pkg-config --exists openssl; } >/dev/null 2>&1 || missing+=(pkg-config libssl-dev)
command -v openssl >/dev/null || missing+=(openssl)
if ! command -v python3 >/dev/null; then missing+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then missing+=(python3-venv); fi
if [ ${#missing[@]} -gt 0 ]; then
  install="apt-get install -y --no-install-recommends ${missing[*]}"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive $install
  else
    echo "error: missing ${missing[*]}; install with:" >&2
    echo "  sudo apt-get update && sudo $install" >&2
    exit 1
  fi
fi

# The first PostgreSQL cluster (Debian layout), created when there is none.
pg_cluster() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n1 || true; }
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null; then
    if [ -z "$(pg_cluster)" ] || [ ! -d "/etc/postgresql/$(pg_cluster)/main" ]; then
      if [ "$(id -u)" = 0 ]; then
        version=$(basename "$(dirname "$(pg_bin)")")
        echo "creating PostgreSQL $version cluster main"
        pg_createcluster "$version" main
      fi
    fi
    if [ -n "$(pg_cluster)" ]; then
      echo "starting PostgreSQL"
      pg_ctlcluster --skip-systemctl-redirect "$(pg_cluster)" main start || true
    fi
  fi
  wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432
fi
# User postgres must connect over TCP without a password (Debian's default
# is scram-sha-256 on 127.0.0.1): trust it for loopback when allowed to.
if ! psql -w -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1" >/dev/null 2>&1; then
  hba="/etc/postgresql/$(pg_cluster)/main/pg_hba.conf"
  if [ "$(id -u)" = 0 ] && [ -n "$(pg_cluster)" ] && [ -f "$hba" ]; then
    echo "trusting user postgres from 127.0.0.1 and ::1 in $hba"
    { printf 'host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust\n'; cat "$hba"; } >"$hba.new"
    chown --reference="$hba" "$hba.new"; chmod --reference="$hba" "$hba.new"; mv "$hba.new" "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$(pg_cluster)" main reload
  fi
  wait_for "PostgreSQL as user postgres without a password" \
    psql -w -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1"
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
fi

# es-kafka's CDC relay needs logical decoding: wal_level=logical takes a
# restart (about 3 s), done only when the server is not set up yet.
if [ "$(psql -h 127.0.0.1 -U postgres -d postgres -tAc "SHOW wal_level")" != "logical" ]; then
  echo "setting wal_level=logical and restarting PostgreSQL"
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "ALTER SYSTEM SET wal_level = logical"
  pg_ctlcluster --skip-systemctl-redirect "$(pg_cluster)" main restart
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

# `--setup-only`: the tools and services above, nothing else (CI runs it
# before clippy, whose build already needs OpenSSL's headers for librdkafka).
if [ "${1:-}" = "--setup-only" ]; then exit 0; fi

cargo test --workspace --all-features "$@"
# Every example of examples/ runs (each asserts what it shows).
scripts/examples.sh
scripts/schemathesis.sh
scripts/book.sh
