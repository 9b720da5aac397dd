#!/usr/bin/env bash
# Runs every example of the es-examples crate (examples/*.rs): each one
# asserts what it shows and exits non-zero when it does not hold.
# PostgreSQL examples use DATABASE_URL (default: the test database of
# scripts/test.sh); the Kafka one uses rdkafka's mock cluster unless
# KAFKA_BOOTSTRAP_SERVERS is set.
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL="${DATABASE_URL:-${ES_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/es_test}}"
examples=$(sed -n 's/^name = "\(.*\)"$/\1/p' examples/Cargo.toml | grep -v '^es-examples$')
cargo build -q -p es-examples --examples
failed=()
for example in $examples; do
  echo "== example $example"
  if ! cargo run -q -p es-examples --example "$example"; then failed+=("$example"); fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "error: examples failed: ${failed[*]}" >&2
  exit 1
fi
echo "all $(echo "$examples" | wc -w) examples ran"
