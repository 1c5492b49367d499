#!/usr/bin/env bash
# Request overhead of faaswap's whole path (HTTP → validation on the worker → scheduler → GPU actor →
# response) on a `sim` device whose jobs take no time, against a bare actix-web route that
# answers the same URL with a fixed body. Same load generator (`faaswap bench`), same run.
#
#   scripts/bench-overhead.sh [REQUESTS] [CONCURRENCY] [ROUNDS]
#
# SERVER_CPUS and CLIENT_CPUS (taskset CPU lists, e.g. SERVER_CPUS=1 CLIENT_CPUS=0) keep the
# load generator off the servers' cores, as a load generator on its own machine would be; both
# servers get the same CPUs (and so the same number of HTTP workers, one per CPU they may use).
# Unset, everything shares every core.
#
# BEFORE_BIN: another faaswap binary (an earlier build) served and measured beside, in the same
# rounds, as a third column. TOKENS=1: the faaswap servers run with API tokens and every request
# carries one, so the token check is on the path measured.
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
BEFORE=${BEFORE_BIN:-}
SERVER=()
CLIENT=()
[ -n "${SERVER_CPUS:-}" ] && SERVER=(taskset -c "$SERVER_CPUS")
[ -n "${CLIENT_CPUS:-}" ] && CLIENT=(taskset -c "$CLIENT_CPUS")
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$TMP"' EXIT
AUTH=()
if [ "${TOKENS:-0}" = 1 ]; then
  export FAASWAP_ADMIN_TOKEN=bench-admin-token-0123456789 FAASWAP_INVOKE_TOKEN=bench-invoke-token-0123456789
  AUTH=(-H "Authorization: Bearer $FAASWAP_ADMIN_TOKEN")
fi
"$BIN" synth --preset bert-tiny --seed 1 --out "$TMP/repo/bert-tiny" > /dev/null
serve() { # binary port state
  "${SERVER[@]}" "$1" serve --addr "127.0.0.1:$2" --state-dir "$TMP/$3" --model-repository "$TMP/repo" \
    --devices sim:1x1GiB --sim-time-scale 0 2> "$TMP/$3.log" &
}
serve "$BIN" 18181 state
[ -n "$BEFORE" ] && serve "$BEFORE" 18183 state-before
"${SERVER[@]}" "$BIN" bare-server --addr 127.0.0.1:18182 2> "$TMP/bare.log" &
PORTS=(18181)
[ -n "$BEFORE" ] && PORTS+=(18183)
for port in "${PORTS[@]}"; do
  for _ in $(seq 100); do
    curl -sf http://127.0.0.1:$port/v2/health/ready > /dev/null && curl -sf -o /dev/null -X POST http://127.0.0.1:18182/v2/models/x/infer && break
    sleep 0.1
  done
  curl -sf "${AUTH[@]}" -X POST http://127.0.0.1:$port/v2/repository/models/bert-tiny/load > /dev/null
done
bench() { # port side round
  FAASWAP_TOKEN=${FAASWAP_INVOKE_TOKEN:-} "${CLIENT[@]}" "$BIN" bench --url "http://127.0.0.1:$1" --function bert-tiny \
    --requests "$REQUESTS" --concurrency "$CONCURRENCY" > "$TMP/$2-$3.json"
}
for round in $(seq "$ROUNDS"); do
  bench 18182 bare "$round"
  bench 18181 faaswap "$round"
  [ -n "$BEFORE" ] && bench 18183 before "$round"
done
python3 - "$TMP" "$ROUNDS" "$REQUESTS" "$CONCURRENCY" "${BEFORE:+1}" <<'PY'
import glob, json, os, statistics, sys
tmp, rounds, requests, conc = sys.argv[1:5]
before = len(sys.argv) > 5 and sys.argv[5] == "1"
def med(side, key):
    return statistics.median(json.load(open(f))[key] for f in sorted(glob.glob(f"{tmp}/{side}-*.json")))
errors = sum(json.load(open(f))["errors"] for f in glob.glob(f"{tmp}/*-*.json"))
pin = f"servers on CPUs {os.environ.get('SERVER_CPUS') or 'all'}, client on CPUs {os.environ.get('CLIENT_CPUS') or 'all'}"
tokens = "with API tokens" if os.environ.get("TOKENS") == "1" else "no API tokens"
print(f"{requests} requests × {rounds} rounds, {conc} concurrent clients, median of rounds; {pin}; {tokens}; errors: {errors}\n")
sides = [("bare", "bare actix-web route"), ("faaswap", "faaswap (sim device, zero-time job)")]
if before:
    sides.append(("before", "faaswap, BEFORE_BIN"))
print("| measure | " + " | ".join(n for _, n in sides) + " | faaswap / bare |" + (" BEFORE_BIN / bare |" if before else ""))
print("| --- " * (len(sides) + 2 + before) + "|")
tp = {s: med(s, "throughput_rps") for s, _ in sides}
row = f"| throughput, requests/s | " + " | ".join(f"{tp[s]:.0f}" for s, _ in sides) + f" | {tp['faaswap']/tp['bare']:.2f} |"
if before:
    row += f" {tp['before']/tp['bare']:.2f} |"
print(row)
for p in ("p50", "p99"):
    v = {s: med(s, f"{p}_ms") for s, _ in sides}
    row = f"| {p} latency, µs | " + " | ".join(f"{v[s]*1e3:.0f}" for s, _ in sides) + f" | {(v['faaswap']-v['bare'])*1e3:+.0f} µs |"
    if before:
        row += f" {(v['before']-v['bare'])*1e3:+.0f} µs |"
    print(row)
PY
