#!/usr/bin/env bash
# Build the quickstart's tiny foundation models (tokenizer, CLIP tower, LLaMA) and ship them to
# checkpoints/tiny-foundation/ with their build record (command, config, versions, SHA-256 of every file).
# The shipped set is what `bash scripts/quickstart.sh` uses; commit it after a rebuild. Deterministic for a given
# thread count and library versions (recorded). About 4 minutes on 2 CPU cores.
#
#   bash scripts/build_foundation.sh                 # FOUNDATION_PRESET=full, THREADS=2, seed 0 (the shipped set)
#   FOUNDATION_SET="lm_steps=1200" bash scripts/build_foundation.sh   # another config, same destination
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${VENV:=.venv}" "${THREADS:=2}" "${FOUNDATION_PRESET:=full}" "${SHIP_TO:=checkpoints/tiny-foundation}"
: "${FOUNDATION_ROOT:=checkpoints/tiny}"
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# shellcheck disable=SC2086  # FOUNDATION_SET: space-separated FIELD=VALUE overrides of the preset
"$VENV/bin/python" -m llava.quickstart.foundation --root "$FOUNDATION_ROOT" --preset "$FOUNDATION_PRESET" \
  --threads "$THREADS" ${FOUNDATION_SET:+--set $FOUNDATION_SET} --ship "$SHIP_TO" > /dev/null
"$VENV/bin/python" -m llava.quickstart.foundation --verify "$SHIP_TO" > /dev/null
du -sh "$SHIP_TO"
