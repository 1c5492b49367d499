#!/usr/bin/env bash
# The GPU check (issue 4): run from the repository root on the GPU machine, with the release
# binary built elsewhere and carried there. In one run it
#   (a) checks the CUDA engine against the reference fixtures and against the CPU engine on
#       synthetic packages (faaswap device-check),
#   (b) measures, per model (batch 1, 128 tokens): the raw pinned copy of the weights,
#       faaswap's swap-in, and cold (swap-in + first forward) and warm latency; then the same
#       models in PyTorch on the same GPU (.to("cuda") + forward, warm eager, CUDA-graphed),
#   (c) runs the server on the device end to end (scripts/gpu_serve_check.py),
#   (d) prints one table (and leaves the JSON beside it).
#
#   scripts/gpu-check.sh [OUT_DIR]
#
# Environment: FAASWAP_BIN (default target/release/faaswap), FIXTURES (default
# ../shared/fixtures, else shared/fixtures), MODELS (default "bert-base bert-large gpt2
# gpt2-large bert-large-qa"), BF16_MODELS (default "bert-base bert-large gpt2 gpt2-large
# llama-1b qwen2.5-0.5b": presets synthesised with --dtype bf16, held in BF16 by faaswap and run
# in BF16 by PyTorch; a decoder is timed to its first token on a 128-token prompt: the last
# position's logits only, on both sides (device-check --logits last, logits_to_keep=1);
# they are also checked and timed with `--compute native`, in faaswap-native.json),
# FAASWAP_CUDA_LIB_DIR when NVRTC/cuBLAS are not under /usr/local/cuda.
# SKIP_SERVE=1 leaves out the server check (scripts/gpu_serve_check.py: `faaswap serve` on the
# device, the fixtures over HTTP and the WebSocket, `faaswap bench`); SANITIZE=1 adds a
# compute-sanitizer memcheck run over the fixtures.
# DEVICES=cpu SKIP_TORCH=1 MODELS="bert-nano gpt2-nano" runs the same plumbing on a machine
# without a GPU (a dry run of the script, not a measurement).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${FAASWAP_BIN:-target/release/faaswap}
OUT=${1:-${OUT:-/tmp/faaswap-gpu-check}}
MODELS=${MODELS:-"bert-base bert-large gpt2 gpt2-large bert-large-qa"}
BF16_MODELS=${BF16_MODELS-"bert-base bert-large gpt2 gpt2-large llama-1b qwen2.5-0.5b"}
FIXTURES=${FIXTURES:-}
if [ -z "$FIXTURES" ]; then
  for f in ../shared/fixtures shared/fixtures; do [ -d "$f/tiny_bert" ] && FIXTURES=$f && break; done
fi
mkdir -p "$OUT/models"
t0=$(date +%s)

echo "== GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== synthetic packages ($MODELS)"
args=()
pkgs=()
for m in $MODELS; do
  [ -f "$OUT/models/$m/model.safetensors" ] || "$BIN" synth --preset "$m" --seed 1 --out "$OUT/models/$m" >/dev/null
  args+=(--model "$OUT/models/$m")
  pkgs+=("$OUT/models/$m")
done
for m in $BF16_MODELS; do
  [ -f "$OUT/models/$m-bf16/model.safetensors" ] || "$BIN" synth --preset "$m" --seed 1 --dtype bf16 --out "$OUT/models/$m-bf16" >/dev/null
  args+=(--model "$OUT/models/$m-bf16")
  pkgs+=("$OUT/models/$m-bf16")
done
echo "   ready after $(( $(date +%s) - t0 )) s"

DEVICES=${DEVICES:-cuda}
echo "== faaswap device-check on $DEVICES"
fixture_args=()
if [ -n "$FIXTURES" ]; then fixture_args=(--fixtures "$FIXTURES"); else echo "   (no fixtures found: only the CPU comparison runs)"; fi
FAASWAP_LOG=${FAASWAP_LOG:-info} "$BIN" device-check --devices "$DEVICES" "${fixture_args[@]}" "${args[@]}" \
  --seq-len 128 --batch 1 --iters 20 --cold-iters 5 > "$OUT/faaswap.json"
echo "   done after $(( $(date +%s) - t0 )) s"
if [ -n "$BF16_MODELS" ]; then
  echo "== BF16 models with native compute (half × half products, F32 accumulation) -> $OUT/faaswap-native.json"
  native=()
  for m in $BF16_MODELS; do native+=(--model "$OUT/models/$m-bf16"); done
  "$BIN" device-check --devices "$DEVICES" --compute native "${native[@]}" \
    --seq-len 128 --batch 1 --iters 20 --cold-iters 5 > "$OUT/faaswap-native.json"
  echo "   done after $(( $(date +%s) - t0 )) s"
fi

if [ -n "${SKIP_SERVE:-}" ] || [ -z "$FIXTURES" ]; then
  echo "== server check skipped (SKIP_SERVE, or no fixtures)"
else
  echo "== the server on $DEVICES over HTTP and WebSocket"
  python3 scripts/gpu_serve_check.py --bin "$BIN" --devices "$DEVICES" --fixtures "$FIXTURES" \
    --json "$OUT/serve.json" "${pkgs[@]}"
  echo "   done after $(( $(date +%s) - t0 )) s"
fi

if [ -n "${SANITIZE:-}" ] && [ -n "$FIXTURES" ]; then
  echo "== compute-sanitizer memcheck (fixtures, nano packages; report in $OUT/memcheck.log)"
  for m in bert-nano gpt2-nano; do
    [ -f "$OUT/models/$m/model.safetensors" ] || "$BIN" synth --preset "$m" --seed 1 --out "$OUT/models/$m" >/dev/null
  done
  compute-sanitizer --tool memcheck --error-exitcode 9 --log-file "$OUT/memcheck.log" "$BIN" device-check \
    --devices "$DEVICES" --fixtures "$FIXTURES" --model "$OUT/models/bert-nano" --model "$OUT/models/gpt2-nano" \
    --seq-len 32 --iters 2 --cold-iters 1 > /dev/null 2>&1 && echo "   memcheck: clean" || echo "   memcheck: FAILED (exit $?)"
  grep -a "ERROR SUMMARY" "$OUT/memcheck.log" || true
fi

if [ -n "${SKIP_TORCH:-}" ]; then
  echo "== PyTorch skipped (SKIP_TORCH)"
  echo '{"device": "skipped", "models": []}' > "$OUT/torch.json"
else
  echo "== PyTorch on the same GPU"
  python3 scripts/gpu_baseline.py --json "$OUT/torch.json" "${args[@]}"
  echo "   done after $(( $(date +%s) - t0 )) s"
fi

echo "== table"
python3 scripts/gpu_baseline.py --table "$OUT/faaswap.json" "$OUT/torch.json" | tee "$OUT/table.md"
echo "total $(( $(date +%s) - t0 )) s; results in $OUT"
