#!/usr/bin/env bash
# The 12 LLaVA-1.5 benchmarks for one model, then one results table (results/<ckpt>_benchmarks.{md,json}).
#   MODEL_PATH=... MODEL_BASE=... [VISION_TOWER=...] bash scripts/eval/benchmarks.sh   # variables: scripts/eval/_common.sh
#   BENCHMARKS="pope textvqa sqa" bash scripts/eval/benchmarks.sh      # a subset
#   bash scripts/eval/benchmarks.sh --load-4bit     # trailing arguments (and EXTRA_ARGS) go to every answering run
# Locally scored: SQA-IMG, TextVQA, POPE (and SEED per type); the others produce their submission files.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BENCHMARKS=${BENCHMARKS:-"vqav2 gqa vizwiz sqa textvqa pope mme mmbench mmbench_cn seed llavabench mmvet"}
MODEL_PATH=${MODEL_PATH:-./checkpoints/sqllava-lora-7b}
CKPT=${CKPT:-$(basename "$MODEL_PATH")}
export MODEL_PATH CKPT
FAILED=()
for B in $BENCHMARKS; do
  echo "[benchmarks] $B"
  bash "$HERE/$B.sh" "$@" || { echo "[benchmarks] $B failed (see above); continuing"; FAILED+=("$B"); }
done
cd "$HERE/../.."
${PYTHON:-python} -m llava.eval.results_table benchmarks --eval-dir "${EVAL_DIR:-./playground/data/eval}" \
  --ckpt "$CKPT" --out "${RESULTS_DIR:-results}/${CKPT}_benchmarks"
if (( ${#FAILED[@]} )); then
  echo "[benchmarks] ${#FAILED[@]} failed: ${FAILED[*]} (the table leaves them out)" >&2
  exit 1
fi
