#!/usr/bin/env bash
# POPE (COCO val2014; random / popular / adversarial): accuracy, precision, recall, F1, yes-ratio per split.
source "$(dirname "$0")/_common.sh"
D=$EVAL_DIR/pope
run_sharded model_vqa_loader "$D/answers/$CKPT" \
  --question-file "$D/llava_pope_test.jsonl" --image-folder "$D/val2014"
$PYTHON -m llava.eval.eval_pope --annotation-dir "$D/coco" --question-file "$D/llava_pope_test.jsonl" \
  --result-file "$D/answers/$CKPT/merge.jsonl" --output-file "$D/answers/$CKPT/result.json"
