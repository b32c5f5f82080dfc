#!/usr/bin/env bash
# Captioning sweep of the original README: one model over the 7 caption sets, then one results table.
#   MODEL_PATH=./checkpoints/sqllava-lora-7b \
#   MODEL_BASE=./checkpoints/ShareGPT4V-7B_Pretrained_vit-large336-l12_vicuna-7b-v1.5 bash experiments.sh
# The released sqllava-lora-7b was trained on ShareGPT4V's stage-1 LLM, not lmsys/vicuna-7b-v1.5 (same shapes: a
# wrong base loads and scores worse, silently); bash scripts/download_models.sh fetches checkpoint, base and tower.
# Sets (folders under playground/data/eval/caption/, each with questions.jsonl, references.json, images/):
#   coco_karpathy_test flickr30k_test nocaps_in nocaps_near nocaps_out conceptual concadia
# Trailing arguments (and EXTRA_ARGS) reach every answering run, e.g. bash experiments.sh --load-4bit.
# Override the list with SETS="coco_karpathy_test flickr30k_test"; SQ=1 N_SHOT=5 adds test-time self-questioning.
# Writes ${RESULTS_DIR:-results}/<ckpt>_captions.{md,json}. All scripts/eval/_common.sh variables apply (GPUs, batch size...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
SETS=${SETS:-"coco_karpathy_test flickr30k_test nocaps_in nocaps_near nocaps_out conceptual concadia"}
MODEL_PATH=${MODEL_PATH:-./checkpoints/sqllava-lora-7b}
CKPT=${CKPT:-$(basename "$MODEL_PATH")}
EVAL_DIR=${EVAL_DIR:-./playground/data/eval}
export MODEL_PATH CKPT EVAL_DIR
FAILED=()
for SET in $SETS; do
  if [ ! -f "$EVAL_DIR/caption/$SET/questions.jsonl" ]; then
    echo "[experiments] skipping $SET: $EVAL_DIR/caption/$SET/questions.jsonl not found"
    continue
  fi
  echo "[experiments] $SET"
  SET=$SET bash scripts/eval/captioning.sh "$@" || { echo "[experiments] $SET failed (see above); continuing"; FAILED+=("$SET"); }
done
# shellcheck disable=SC2086
${PYTHON:-python} -m llava.eval.results_table captions --eval-dir "$EVAL_DIR" --ckpt "$CKPT" --sets $SETS \
  --out "${RESULTS_DIR:-results}/${CKPT}_captions"
if (( ${#FAILED[@]} )); then
  echo "[experiments] ${#FAILED[@]} failed: ${FAILED[*]} (the table leaves them out)" >&2
  exit 1
fi
