#!/usr/bin/env bash
# CPU benchmark of all-MiniLM-L6-v2: faaswap's engine against onnxruntime (what CPU serving
# uses) and sentence-transformers on PyTorch, side by side in one run, at the same thread count.
#
#   scripts/bench-cpu-minilm.sh [THREADS] [ROUNDS]
#
# Makes its own virtualenv under .cache/bench-venv (torch from PyPI is several GB, so this is
# not part of CI), gets the model with scripts/fetch-minilm.sh, builds the release binary, and
# runs ROUNDS alternating rounds of each side: batch-1 latency for one 12-word sentence and
# batch-32 throughput over scripts/bench-sentences.txt. Prints a Markdown table of the median
# over rounds; raw JSON goes to .cache/bench-minilm/.
#
# BEFORE_BIN=path adds a column: another faaswap binary (an earlier release) measured in the
# same rounds, so an engine change is judged against its baseline on the same machine at the
# same moment. TORCH=0 leaves PyTorch out (no multi-GB install). ORT=0 leaves onnxruntime out;
# with ORT=1 (the default) scripts/bench_minilm_ort.py builds the model's ONNX graph from its
# safetensors (checked against ../shared/fixtures/minilm_sample.json when present) in a small
# virtualenv under .cache/ort-venv (onnx, onnxruntime, numpy, tokenizers, safetensors).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-2}
ROUNDS=${2:-3}
VENV=.cache/bench-venv
OUT=.cache/bench-minilm
SENTENCE="The quick brown fox jumps over the lazy dog near the riverbank today."

BEFORE_BIN=${BEFORE_BIN:-}
TORCH=${TORCH:-1}
ORT=${ORT:-1}
ORT_VENV=.cache/ort-venv
if [ "$TORCH" = 0 ] && [ "$ORT" = 0 ] && [ -z "$BEFORE_BIN" ]; then
  echo "TORCH=0 ORT=0 needs BEFORE_BIN: there would be nothing to compare" >&2
  exit 2
fi
if [ "$ORT" = 1 ] && { [ ! -x "$ORT_VENV/bin/python" ] || ! "$ORT_VENV/bin/python" -c "import onnx, onnxruntime, tokenizers, safetensors" 2>/dev/null; }; then
  python3 -m venv "$ORT_VENV"
  "$ORT_VENV/bin/pip" install -q onnx onnxruntime numpy tokenizers safetensors
fi
SAMPLE=${FAASWAP_FIXTURES:-../shared/fixtures}/minilm_sample.json

if [ "$TORCH" = 1 ] && { [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch, sentence_transformers" 2>/dev/null; }; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch sentence-transformers
fi
MODEL=$(scripts/fetch-minilm.sh)
cargo build --release -q
mkdir -p "$OUT"
rm -f "$OUT"/*.json

faaswap_side() { # side binary
  "$2" --threads "$THREADS" profile --model "$MODEL" --batch-sizes 1 \
    --text "$SENTENCE" --iters 100 --warmup 10 > "$OUT/$1-b1-$round.json"
  "$2" --threads "$THREADS" profile --model "$MODEL" --batch-sizes 32 \
    --texts-file scripts/bench-sentences.txt --iters 20 --warmup 3 > "$OUT/$1-b32-$round.json"
}
for round in $(seq 1 "$ROUNDS"); do
  faaswap_side faaswap ./target/release/faaswap
  if [ -n "$BEFORE_BIN" ]; then faaswap_side before "$BEFORE_BIN"; fi
  if [ "$ORT" = 1 ]; then
    check=(); if [ -f "$SAMPLE" ]; then check=(--check "$SAMPLE"); fi
    "$ORT_VENV/bin/python" scripts/bench_minilm_ort.py --model "$MODEL" --threads "$THREADS" \
      --onnx "$OUT/../minilm.onnx" "${check[@]}" --batch-sizes 1 --text "$SENTENCE" --iters 100 --warmup 10 \
      > "$OUT/ort-b1-$round.json"
    "$ORT_VENV/bin/python" scripts/bench_minilm_ort.py --model "$MODEL" --threads "$THREADS" \
      --onnx "$OUT/../minilm.onnx" --batch-sizes 32 --texts-file scripts/bench-sentences.txt --iters 20 \
      --warmup 3 > "$OUT/ort-b32-$round.json"
  fi
  if [ "$TORCH" = 1 ]; then
    "$VENV/bin/python" scripts/bench_minilm_torch.py --model "$MODEL" --threads "$THREADS" \
      --batch-sizes 1 --text "$SENTENCE" --iters 100 --warmup 10 > "$OUT/torch-b1-$round.json" 2>/dev/null
    "$VENV/bin/python" scripts/bench_minilm_torch.py --model "$MODEL" --threads "$THREADS" \
      --batch-sizes 32 --texts-file scripts/bench-sentences.txt --iters 20 --warmup 3 \
      > "$OUT/torch-b32-$round.json" 2>/dev/null
  fi
done

python3 - "$OUT" "$THREADS" "$ROUNDS" "$TORCH" "$BEFORE_BIN" "$ORT" <<'PY'
import glob, json, statistics, sys
out, threads, rounds, torch, before, ort = sys.argv[1:7]
def med(side, b, key):
    vals = [json.load(open(f))["results"][0][key] for f in sorted(glob.glob(f"{out}/{side}-b{b}-*.json"))]
    return statistics.median(vals)
sides = [("faaswap", "faaswap")]
if before:
    sides.append(("before", f"before ({before})"))
if ort == "1":
    first = json.load(open(sorted(glob.glob(f"{out}/ort-b1-*.json"))[0]))
    sides.append(("ort", f"onnxruntime {first['onnxruntime']}"))
    if first.get("check"):
        print(f"ONNX graph against minilm_sample.json: {first['check']}\n")
if torch == "1":
    version = json.load(open(sorted(glob.glob(f"{out}/torch-b1-*.json"))[0]))["torch"]
    sides.append(("torch", f"sentence-transformers (PyTorch {version})"))
print(f"threads={threads}, rounds={rounds} (median of round means), sides measured in turn each round\n")
print("| measure | " + " | ".join(t for _, t in sides) + " | " + " | ".join(f"faaswap / {s}" for s, _ in sides[1:]) + " |")
print("| --- " * (2 * len(sides)) + "|")
rows = [("batch-1 latency, mean ms (lower is better)", 1, "mean_ms", "{:.2f}"),
        ("batch-1 latency, p50 ms", 1, "p50_ms", "{:.2f}"),
        ("batch-32 throughput, sentences/s (higher is better)", 32, "items_per_s", "{:.0f}")]
for label, b, key, fmt in rows:
    vals = [med(s, b, key) for s, _ in sides]
    ratios = [f"{vals[0] / v:.2f}" for v in vals[1:]]
    print(f"| {label} | " + " | ".join(fmt.format(v) for v in vals) + " | " + " | ".join(ratios) + " |")
PY
