# Sourced by the HTTP benchmark scripts (bench-http.sh, http-cpu.sh,
# http-flamegraph.sh, http-instructions.sh, http-list-latency.sh), from the
# repository's root: the release banking server as they all run it, and
# the set-up they share. Sourcing sets $target (the release directory),
# $url (the PostgreSQL URL, DATABASE_URL or the local default), $work (a
# scratch directory), $server (none yet) and $schemas (the schemas to
# drop at the end); the caller sets $port.

target="${CARGO_TARGET_DIR:-target}/release"
url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}"
work=$(mktemp -d)
server=""
schemas=()

# build_release [CARGO ARGS...]: unless NO_BUILD is set, builds the release
# server and http_bench, and whatever else the arguments name
# (`-p es-postgres --example bank_bench`).
build_release() {
  if [ -z "${NO_BUILD:-}" ]; then
    cargo build --quiet --release -p banking-example --bin banking-example --example http_bench "$@"
  fi
}

# serve SCHEMA BINARY [WRAPPER...]: starts BINARY in the background (under
# WRAPPER, valgrind say, when given) on PostgreSQL in schema SCHEMA, or
# with everything in memory when STORE=memory; rate limits off, no
# operations listener, RUST_LOG (default info), output in
# $work/server.log. Sets $server to its pid and returns once /health
# answers.
serve() {
  local schema=$1 bin=$2
  shift 2
  local store=(DATABASE_URL="$url" DATABASE_SCHEMA="$schema")
  if [ "${STORE:-}" = memory ]; then store=(STORE=memory); fi
  env "${store[@]}" BIND_ADDR="127.0.0.1:$port" ADMIN_BIND_ADDR=off \
    RATE_LIMIT_REQUESTS_PER_MINUTE=0 AUTH_RATE_LIMIT_PER_MINUTE=0 AUTH_ALLOW_INSECURE_SECRETS=1 \
    RUST_LOG="${RUST_LOG:-info}" "$@" "$bin" > "$work/server.log" 2>&1 &
  server=$!
  # Up to two minutes: under valgrind the start-up is slow.
  for _ in $(seq 1 1200); do
    if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$server" 2>/dev/null; then cat "$work/server.log" >&2; return 1; fi
    sleep 0.1
  done
  echo "server did not come up" >&2; cat "$work/server.log" >&2; return 1
}

# stop_server: SIGTERM (a clean shutdown), then waits for the server.
stop_server() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
  fi
}

# finish: stops the server, drops every schema in $schemas and removes
# $work; each script's EXIT trap ends with it.
finish() {
  stop_server
  local s
  for s in "${schemas[@]}"; do psql -q "$url" -c "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
