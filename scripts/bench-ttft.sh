#!/usr/bin/env bash
# Time to first token of a swapped-in GPT-2 against its swap time (BENCHMARKS.md).
# Two synthetic GPT-2 packages of PRESET on one cpu device whose pool holds one of them, so
# every other request swaps; runs scripts/bench-ttft.py against the release server, once with
# unthrottled copies and once with the copy throttled to a PCIe-class link (LINK).
#
#   scripts/bench-ttft.sh [PRESET=gpt2] [POOL=640MiB] [LINK=12GB/s] [ROUNDS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-gpt2}; pool=${2:-640MiB}; link=${3:-12GB/s}; rounds=${4:-10}
bin=target/release/faaswap
[ -x "$bin" ] || cargo build --release
venv=scripts/.venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import websockets" 2>/dev/null || "$venv/bin/pip" install -q websockets
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
for s in 1 2; do
  "$bin" synth --preset "$preset" --seed "$s" --out "$work/repo/g$s" >/dev/null
done
port=18123
for l in none "$link"; do
  extra=()
  [ "$l" = none ] || extra=(--host-link "$l")
  rm -rf "$work/state"
  "$bin" serve --addr 127.0.0.1:$port --devices cpu:1 --device-memory "$pool" \
    --model-repository "$work/repo" --state-dir "$work/state" "${extra[@]}" 2>"$work/serve.log" &
  pid=$!
  until curl -sf localhost:$port/v2/health/ready >/dev/null; do sleep 0.2; done
  for f in g1 g2; do
    curl -sf -X POST localhost:$port/api/v1/functions -d "{\"name\":\"$f\",\"model\":\"$f\"}" >/dev/null
  done
  echo "== $preset, pool $pool, host link: $l"
  "$venv/bin/python" scripts/bench-ttft.py --url http://127.0.0.1:$port --functions g1,g2 --rounds "$rounds"
  kill $pid; wait $pid 2>/dev/null || true
done
