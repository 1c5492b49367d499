#!/usr/bin/env bash
# CPU cost of holding weights in BF16 (computing in F32, widening block by block) against the
# F32 package of the same preset and seed, side by side in alternating rounds of one run.
#
#   scripts/bench-cpu-dtype.sh [PRESET] [ROUNDS] [SEQ_LEN]
#
# Builds the release binary, synthesises PRESET (default bert-base) in f32 and bf16 under
# .cache/bench-dtype/, and runs `faaswap profile` at batch 1 and 8 on random ids of SEQ_LEN
# (default 128) tokens. Prints a Markdown table of the median over rounds of each side's mean.
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${1:-bert-base}
ROUNDS=${2:-3}
SEQ=${3:-128}
OUT=.cache/bench-dtype
BIN=target/release/faaswap
cargo build --release -q
mkdir -p "$OUT"
for d in f32 bf16; do
  [ -f "$OUT/$PRESET-$d/model.safetensors" ] ||
    "$BIN" synth --preset "$PRESET" --seed 1 --dtype "$d" --out "$OUT/$PRESET-$d" > /dev/null
  "$BIN" inspect --model "$OUT/$PRESET-$d" > "$OUT/inspect-$d.json"
done
rm -f "$OUT"/profile-*.json
for round in $(seq 1 "$ROUNDS"); do
  for d in f32 bf16; do
    "$BIN" profile --model "$OUT/$PRESET-$d" --batch-sizes 1,8 --seq-len "$SEQ" --iters 10 --warmup 2 \
      > "$OUT/profile-$d-$round.json"
  done
done
python3 - "$OUT" "$PRESET" "$ROUNDS" "$SEQ" <<'PY'
import glob, json, statistics, sys
out, preset, rounds, seq = sys.argv[1:5]
bytes_ = {d: json.load(open(f"{out}/inspect-{d}.json"))["weight_bytes"] for d in ("f32", "bf16")}
def med(d, b, key):
    vals = []
    for f in sorted(glob.glob(f"{out}/profile-{d}-*.json")):
        vals += [r[key] for r in json.load(open(f))["results"] if r["batch"] == b]
    return statistics.median(vals)
print(f"{preset}, {seq} tokens, random ids, rounds={rounds} (median of round means), sides in turn each round\n")
print("| measure | F32 package | BF16 package | BF16 / F32 |")
print("| --- | --- | --- | --- |")
print(f"| weight bytes (host, pool, swap) | {bytes_['f32']:,} | {bytes_['bf16']:,} | {bytes_['bf16'] / bytes_['f32']:.4f} |")
for b in (1, 8):
    f, h = med("f32", b, "mean_ms"), med("bf16", b, "mean_ms")
    print(f"| batch {b}, mean ms | {f:.1f} | {h:.1f} | {h / f:.3f} |")
PY
