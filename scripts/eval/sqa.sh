#!/usr/bin/env bash
# ScienceQA-IMG: option-letter accuracy (IMG subset reported).
source "$(dirname "$0")/_common.sh"
D=$EVAL_DIR/scienceqa
run_sharded model_vqa_science "$D/answers/$CKPT" \
  --question-file "$D/llava_test_CQM-A.json" --image-folder "$D/images/test" --single-pred-prompt
$PYTHON -m llava.eval.eval_science_qa --base-dir "$D" --result-file "$D/answers/$CKPT/merge.jsonl" \
  --output-file "$D/answers/$CKPT/output.jsonl" --output-result "$D/answers/$CKPT/result.json"
