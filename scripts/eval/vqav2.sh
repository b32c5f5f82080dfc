#!/usr/bin/env bash
# VQAv2 test-dev: answers -> EvalAI submission file (score on the EvalAI server).
source "$(dirname "$0")/_common.sh"
SPLIT=${SPLIT:-llava_vqav2_mscoco_test-dev2015}
D=$EVAL_DIR/vqav2
run_sharded model_vqa_loader "$D/answers/$SPLIT/$CKPT" \
  --question-file "$D/$SPLIT.jsonl" --image-folder "$D/test2015"
$PYTHON -m llava.eval.convert vqav2 --dir "$D" --split "$SPLIT" --ckpt "$CKPT"
