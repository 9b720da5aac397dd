#!/usr/bin/env bash
# How long `GET /accounts` takes right after a deposit while the server is
# under deposit load: the list waits until the accounts projection has
# passed every committed event (read-your-writes), so this is the read
# model's lag as a reader sees it. Starts the release banking server
# (as scripts/bench-http.sh does), loads it with http_bench, and meanwhile
# a second user deposits into an account of its own and lists its
# accounts, one pair after the other, over curl. Prints one JSON line:
# the list's p50/p90/p99/max in ms, how many lists were timed, and
# whether every one of them showed the deposit before it.
#
# Usage: scripts/http-list-latency.sh [connections=16] [lists=200]
# Env: SERVER (default target/release/banking-example), DATABASE_URL,
#      PORT (default 18095), RUST_LOG (the server's; default info),
#      NO_BUILD=1 (use what is built).
set -euo pipefail
conns="${1:-16}"
lists="${2:-200}"
cd "$(dirname "$0")/.."
port="${PORT:-18095}"
# shellcheck source=scripts/http-server.sh
. scripts/http-server.sh
load=""
cleanup() {
  if [ -n "$load" ]; then kill "$load" 2>/dev/null || true; wait "$load" 2>/dev/null || true; fi
  finish
}
trap cleanup EXIT
build_release
bin="${SERVER:-$target/banking-example}"
schema="http_list_$$"
schemas+=("$schema")

serve "$schema" "$bin"
base="http://127.0.0.1:$port"
call() { curl -sS -H 'content-type: application/json' "$@"; }
user="list-$$@example.com"
creds="{\"username\":\"$user\",\"password\":\"list latency passphrase\"}"
call -o /dev/null -X POST "$base/auth/register" -d "$creds"
token=$(call -X POST "$base/auth/login" -d "$creds" | jq -r .access_token)
auth=(-H "authorization: Bearer $token" -H "x-client-id: list-latency")
account=$(call "${auth[@]}" -X POST "$base/accounts" -d '{"owner_name":"list latency","initial_balance":0}' | jq -r .id)

# The deposit load, long enough to cover the lists (it opens its 1,000
# accounts first, then warms up for a second).
"$target/examples/http_bench" --url "$base" --connections "$conns" --duration 3600 --warmup 1 \
  --accounts 1000 > "$work/load.json" 2>&1 &
load=$!
sleep 5

ok=1
: > "$work/ms"
for i in $(seq 1 "$lists"); do
  call "${auth[@]}" -o /dev/null -X POST "$base/accounts/$account/deposit" -d '{"amount":1.00}'
  out=$(call "${auth[@]}" -w '\n%{time_total}' "$base/accounts")
  balance=$(head -n1 <<<"$out" | jq -r --arg id "$account" '.. | objects | select(.id? == $id) | .balance')
  if [ "$(jq -n --arg b "$balance" --argjson i "$i" '($b | tonumber) == $i')" != true ]; then ok=0; fi
  tail -n1 <<<"$out" >> "$work/ms"
done
python3 - "$work/ms" "$conns" "$ok" <<'EOF'
import json, sys
ms = sorted(float(x) * 1000 for x in open(sys.argv[1]) if x.strip())
q = lambda p: round(ms[min(len(ms) - 1, int(p * len(ms)))], 2)
print(json.dumps({"connections": int(sys.argv[2]), "lists": len(ms), "p50_ms": q(0.5), "p90_ms": q(0.9),
                  "p99_ms": q(0.99), "max_ms": round(ms[-1], 2), "every_list_showed_its_deposit": sys.argv[3] == "1"}))
EOF
