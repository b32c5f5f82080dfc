#!/usr/bin/env bash
# MME: answers -> per-category files for the official eval_tool/calculation.py (perception / cognition).
source "$(dirname "$0")/_common.sh"
D=$EVAL_DIR/MME
run_sharded model_vqa_loader "$D/answers/$CKPT" \
  --question-file "$D/llava_mme.jsonl" --image-folder "$D/MME_Benchmark_release_version"
$PYTHON -m llava.eval.convert mme --experiment "$CKPT" --data-path "$D/MME_Benchmark_release_version" \
  --answers-dir "$D/answers" --result-dir "$D/eval_tool/answers"
if [ -f "$D/eval_tool/calculation.py" ]; then
  (cd "$D/eval_tool" && $PYTHON calculation.py --results_dir "answers/$CKPT")
fi
