#!/usr/bin/env bash
# Request overhead of faaswap's whole path (HTTP → function actor → scheduler → GPU actor →
# response) on a `sim` device whose jobs take no time, against a bare actix-web route that
# answers the same URL with a fixed body. Same load generator (`faaswap bench`), same run.
#
#   scripts/bench-overhead.sh [REQUESTS] [CONCURRENCY] [ROUNDS]
#
# SERVER_CPUS and CLIENT_CPUS (taskset CPU lists, e.g. SERVER_CPUS=1 CLIENT_CPUS=0) keep the
# load generator off the servers' cores, as a load generator on its own machine would be; both
# servers get the same CPUs (and so the same number of HTTP workers, one per CPU they may use).
# Unset, everything shares every core.
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${1:-20000}
CONCURRENCY=${2:-8}
ROUNDS=${3:-3}
# FAASWAP_BIN: a binary built elsewhere (the GPU machine has no Rust toolchain).
BIN=${FAASWAP_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release -q
  BIN=target/release/faaswap
fi
SERVER=()
CLIENT=()
[ -n "${SERVER_CPUS:-}" ] && SERVER=(taskset -c "$SERVER_CPUS")
[ -n "${CLIENT_CPUS:-}" ] && CLIENT=(taskset -c "$CLIENT_CPUS")
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$TMP"' EXIT
"$BIN" synth --preset bert-tiny --seed 1 --out "$TMP/repo/bert-tiny" > /dev/null
"${SERVER[@]}" "$BIN" serve --addr 127.0.0.1:18181 --state-dir "$TMP/state" --model-repository "$TMP/repo" \
  --devices sim:1x1GiB --sim-time-scale 0 2> "$TMP/serve.log" &
"${SERVER[@]}" "$BIN" bare-server --addr 127.0.0.1:18182 2> "$TMP/bare.log" &
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:18181/v2/health/ready > /dev/null && curl -sf -o /dev/null -X POST http://127.0.0.1:18182/v2/models/x/infer && break
  sleep 0.1
done
curl -sf -X POST http://127.0.0.1:18181/v2/repository/models/bert-tiny/load > /dev/null
for round in $(seq "$ROUNDS"); do
  "${CLIENT[@]}" "$BIN" bench --url http://127.0.0.1:18182 --function bert-tiny --requests "$REQUESTS" \
    --concurrency "$CONCURRENCY" > "$TMP/bare-$round.json"
  "${CLIENT[@]}" "$BIN" bench --url http://127.0.0.1:18181 --function bert-tiny --requests "$REQUESTS" \
    --concurrency "$CONCURRENCY" > "$TMP/faaswap-$round.json"
done
python3 - "$TMP" "$ROUNDS" "$REQUESTS" "$CONCURRENCY" <<'PY'
import glob, json, statistics, sys
tmp, rounds, requests, conc = sys.argv[1:]
def med(side, key):
    return statistics.median(json.load(open(f))[key] for f in sorted(glob.glob(f"{tmp}/{side}-*.json")))
errors = sum(json.load(open(f))["errors"] for f in glob.glob(f"{tmp}/*-*.json"))
import os
pin = f"servers on CPUs {os.environ.get('SERVER_CPUS') or 'all'}, client on CPUs {os.environ.get('CLIENT_CPUS') or 'all'}"
print(f"{requests} requests × {rounds} rounds, {conc} concurrent clients, median of rounds; {pin}; errors: {errors}\n")
print("| measure | bare actix-web route | faaswap (sim device, zero-time job) | faaswap / bare |")
print("| --- | --- | --- | --- |")
b, f = med("bare", "throughput_rps"), med("faaswap", "throughput_rps")
print(f"| throughput, requests/s | {b:.0f} | {f:.0f} | {f/b:.2f} |")
for p in ("p50", "p99"):
    b, f = med("bare", f"{p}_ms"), med("faaswap", f"{p}_ms")
    print(f"| {p} latency, µs | {b*1e3:.0f} | {f*1e3:.0f} | {(f-b)*1e3:+.0f} µs |")
PY
