#!/usr/bin/env bash
# CPU decoding of a Llama-family model: faaswap's engine against transformers on PyTorch, same
# threads, same run, same weights (a synthetic package: the real shapes, random weights).
#
#   scripts/bench-cpu-decode.sh [PRESET] [THREADS] [ROUNDS] [PROMPT_TOKENS] [NEW_TOKENS]
#
# Defaults: smollm2-135m, 2 threads, 3 rounds, a 32-token prompt, 64 new tokens (greedy, EOS
# ignored). Each round runs each side once in turn; the table gives the medians of the rounds:
# time to first token (the prefill and one token) and decode tokens per second after it.
# PyTorch comes from the virtualenv .cache/bench-venv (made by scripts/bench-cpu-minilm.sh, or
# here: torch and transformers from PyPI, several GB, so this is not part of CI).
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${1:-smollm2-135m}
THREADS=${2:-2}
ROUNDS=${3:-3}
PROMPT=${4:-32}
NEW=${5:-64}
VENV=.cache/bench-venv
OUT=.cache/bench-decode
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch, transformers" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch transformers
fi
cargo build --release -q
mkdir -p "$OUT"
PKG="$OUT/$PRESET"
[ -f "$PKG/model.safetensors" ] || ./target/release/faaswap synth --preset "$PRESET" --seed 1 --dtype f32 --out "$PKG" >/dev/null
IDS=$(python3 -c "print(','.join(str((i * 97 + 13) % 1000 + 10) for i in range($PROMPT)))")
rm -f "$OUT"/*-round*.json
for round in $(seq 1 "$ROUNDS"); do
  ./target/release/faaswap --threads "$THREADS" generate --model "$PKG" --input-ids "$IDS" \
    --max-new-tokens "$NEW" --ignore-eos > "$OUT/faaswap-round$round.json"
  "$VENV/bin/python" - "$PKG" "$THREADS" "$IDS" "$NEW" > "$OUT/torch-round$round.json" 2>/dev/null <<'PY'
import json, sys, time
import torch
from transformers import AutoModelForCausalLM
pkg, threads, ids, new = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3].split(",")], int(sys.argv[4])
torch.set_num_threads(threads)
model = AutoModelForCausalLM.from_pretrained(pkg, dtype=torch.float32).eval()
with torch.inference_mode():
    model(torch.tensor([ids[:4]]))  # warm the allocator and kernels once
    t0 = time.perf_counter()
    out = model(torch.tensor([ids]), use_cache=True)
    tokens = [int(out.logits[0, -1].argmax())]
    first = (time.perf_counter() - t0) * 1e3
    past = out.past_key_values
    for _ in range(new - 1):
        out = model(torch.tensor([[tokens[-1]]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        tokens.append(int(out.logits[0, -1].argmax()))
    total = (time.perf_counter() - t0) * 1e3
print(json.dumps({"token_ids": tokens, "first_token_ms": first,
                  "decode_ms_per_token": (total - first) / (new - 1), "torch": torch.__version__}))
PY
done
python3 - "$OUT" "$PRESET" "$THREADS" "$ROUNDS" "$PROMPT" "$NEW" <<'PY'
import glob, json, statistics, sys
out, preset, threads, rounds, prompt, new = sys.argv[1:7]
def load(side):
    return [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{side}-round*.json"))]
f, t = load("faaswap"), load("torch")
same = all(a["token_ids"] == b["token_ids"] for a, b in zip(f, t))
med = lambda rs, k: statistics.median(r[k] for r in rs)
print(f"{preset}, F32, threads={threads}, {rounds} rounds, prompt {prompt} tokens, {new} new (greedy); "
      f"same tokens on both sides: {same}\n")
print("| measure | faaswap | transformers " + t[0]["torch"] + " | faaswap / transformers |")
print("| --- | --- | --- | --- |")
ff, tf = med(f, "first_token_ms"), med(t, "first_token_ms")
print(f"| time to first token, ms (lower is better) | {ff:.1f} | {tf:.1f} | {ff / tf:.2f} |")
fd, td = 1e3 / med(f, "decode_ms_per_token"), 1e3 / med(t, "decode_ms_per_token")
print(f"| decode tokens/s (higher is better) | {fd:.1f} | {td:.1f} | {fd / td:.2f} |")
PY
