#!/usr/bin/env bash
# SEED-Bench (image part): answers -> accuracy per question type and the upload file.
source "$(dirname "$0")/_common.sh"
D=$EVAL_DIR/seed_bench
run_sharded model_vqa_loader "$D/answers/$CKPT" \
  --question-file "$D/llava-seed-bench.jsonl" --image-folder "$D"
$PYTHON -m llava.eval.convert seed --annotation-file "$D/SEED-Bench.json" \
  --result-file "$D/answers/$CKPT/merge.jsonl" --result-upload-file "$D/answers_upload/$CKPT.jsonl"
