#!/usr/bin/env bash
# CPU benchmark of all-MiniLM-L6-v2: faaswap's engine against sentence-transformers on
# PyTorch, side by side in one run, at the same thread count.
#
#   scripts/bench-cpu-minilm.sh [THREADS] [ROUNDS]
#
# Makes its own virtualenv under .cache/bench-venv (torch from PyPI is several GB, so this is
# not part of CI), gets the model with scripts/fetch-minilm.sh, builds the release binary, and
# runs ROUNDS alternating rounds of each side: batch-1 latency for one 12-word sentence and
# batch-32 throughput over scripts/bench-sentences.txt. Prints a Markdown table of the median
# over rounds; raw JSON goes to .cache/bench-minilm/.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-2}
ROUNDS=${2:-3}
VENV=.cache/bench-venv
OUT=.cache/bench-minilm
SENTENCE="The quick brown fox jumps over the lazy dog near the riverbank today."

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch, sentence_transformers" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch sentence-transformers
fi
MODEL=$(scripts/fetch-minilm.sh)
cargo build --release -q
mkdir -p "$OUT"
rm -f "$OUT"/*.json

for round in $(seq 1 "$ROUNDS"); do
  ./target/release/faaswap --threads "$THREADS" profile --model "$MODEL" --batch-sizes 1 \
    --text "$SENTENCE" --iters 100 --warmup 10 > "$OUT/faaswap-b1-$round.json"
  "$VENV/bin/python" scripts/bench_minilm_torch.py --model "$MODEL" --threads "$THREADS" \
    --batch-sizes 1 --text "$SENTENCE" --iters 100 --warmup 10 > "$OUT/torch-b1-$round.json" 2>/dev/null
  ./target/release/faaswap --threads "$THREADS" profile --model "$MODEL" --batch-sizes 32 \
    --texts-file scripts/bench-sentences.txt --iters 20 --warmup 3 > "$OUT/faaswap-b32-$round.json"
  "$VENV/bin/python" scripts/bench_minilm_torch.py --model "$MODEL" --threads "$THREADS" \
    --batch-sizes 32 --texts-file scripts/bench-sentences.txt --iters 20 --warmup 3 \
    > "$OUT/torch-b32-$round.json" 2>/dev/null
done

python3 - "$OUT" "$THREADS" "$ROUNDS" <<'PY'
import glob, json, statistics, sys
out, threads, rounds = sys.argv[1], sys.argv[2], sys.argv[3]
def med(side, b, key):
    vals = [json.load(open(f))["results"][0][key] for f in sorted(glob.glob(f"{out}/{side}-b{b}-*.json"))]
    return statistics.median(vals)
torch_version = json.load(open(sorted(glob.glob(f"{out}/torch-b1-*.json"))[0]))["torch"]
print(f"threads={threads}, rounds={rounds} (median of round means), torch {torch_version}\n")
print("| measure | faaswap | sentence-transformers (PyTorch) | faaswap / PyTorch |")
print("| --- | --- | --- | --- |")
f, t = med("faaswap", 1, "mean_ms"), med("torch", 1, "mean_ms")
print(f"| batch-1 latency, mean ms (lower is better) | {f:.2f} | {t:.2f} | {f/t:.2f} |")
f, t = med("faaswap", 1, "p50_ms"), med("torch", 1, "p50_ms")
print(f"| batch-1 latency, p50 ms | {f:.2f} | {t:.2f} | {f/t:.2f} |")
f, t = med("faaswap", 32, "items_per_s"), med("torch", 32, "items_per_s")
print(f"| batch-32 throughput, sentences/s (higher is better) | {f:.0f} | {t:.0f} | {f/t:.2f} |")
PY
