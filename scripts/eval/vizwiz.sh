#!/usr/bin/env bash
# VizWiz test: answers -> EvalAI submission file.
source "$(dirname "$0")/_common.sh"
D=$EVAL_DIR/vizwiz
run_sharded model_vqa_loader "$D/answers/$CKPT" \
  --question-file "$D/llava_test.jsonl" --image-folder "$D/test"
$PYTHON -m llava.eval.convert vizwiz --annotation-file "$D/llava_test.jsonl" \
  --result-file "$D/answers/$CKPT/merge.jsonl" --result-upload-file "$D/answers_upload/$CKPT.json"
