#!/usr/bin/env bash
# Instructions the server executes per request (valgrind's callgrind counts them: the figure
# does not depend on the machine's load, unlike throughput on a shared machine). `faaswap serve`
# runs under callgrind with one HTTP worker and a `sim` device whose jobs take no time, a
# synthetic `bert-tiny` deployed; after 200 warm-up requests the counters are zeroed, N
# requests are sent one at a time by `faaswap bench`, and the counters dumped.
#
#   scripts/bench-instructions.sh [N] [BIN...]     (TOKENS=1: with API tokens, each request carrying one)
#
# Prints one line per binary: instructions per request. Needs valgrind (Debian's package).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
shift || true
BINS=("$@")
[ ${#BINS[@]} -eq 0 ] && { cargo build --release -q; BINS=(target/release/faaswap); }
CLIENT=${FAASWAP_BIN:-${BINS[0]}}
AUTH=()
if [ "${TOKENS:-0}" = 1 ]; then
  export FAASWAP_ADMIN_TOKEN=bench-admin-token-0123456789 FAASWAP_INVOKE_TOKEN=bench-invoke-token-0123456789
  AUTH=(-H "Authorization: Bearer $FAASWAP_ADMIN_TOKEN")
fi
for BIN in "${BINS[@]}"; do
  TMP=$(mktemp -d)
  "$CLIENT" synth --preset bert-tiny --seed 1 --out "$TMP/repo/bert-tiny" > /dev/null
  valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" "$BIN" serve --addr 127.0.0.1:18199 \
    --state-dir "$TMP/state" --model-repository "$TMP/repo" --devices sim:1x1GiB --sim-time-scale 0 \
    --http-workers 1 2> "$TMP/valgrind.log" &
  VP=$!
  for _ in $(seq 300); do curl -sf http://127.0.0.1:18199/v2/health/ready > /dev/null && break; sleep 0.2; done
  curl -sf "${AUTH[@]}" -X POST http://127.0.0.1:18199/v2/repository/models/bert-tiny/load > /dev/null
  bench() { FAASWAP_TOKEN=${FAASWAP_INVOKE_TOKEN:-} "$CLIENT" bench --url http://127.0.0.1:18199 \
    --function bert-tiny --requests "$1" --concurrency 1 --warmup 0 > /dev/null; }
  bench 200
  callgrind_control -z "$VP" > /dev/null 2>&1
  bench "$N"
  callgrind_control -d "$VP" > /dev/null 2>&1
  sleep 1
  kill -INT "$VP"; wait "$VP" || true
  total=$(grep -h '^summary' "$TMP"/cg.out.1 | awk '{print $2}')
  echo "$BIN: $((total / N)) instructions per request (${TOKENS:+tokens }$N requests)"
  rm -rf "$TMP"
done
