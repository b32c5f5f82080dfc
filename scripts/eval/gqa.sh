#!/usr/bin/env bash
# GQA testdev-balanced: answers -> predictions json, then the official GQA eval.py if present in $D/data.
source "$(dirname "$0")/_common.sh"
SPLIT=${SPLIT:-llava_gqa_testdev_balanced}
D=$EVAL_DIR/gqa
run_sharded model_vqa_loader "$D/answers/$SPLIT/$CKPT" \
  --question-file "$D/$SPLIT.jsonl" --image-folder "$D/data/images"
$PYTHON -m llava.eval.convert gqa --src "$D/answers/$SPLIT/$CKPT/merge.jsonl" \
  --dst "$D/data/testdev_balanced_predictions.json"
if [ -f "$D/data/eval/eval.py" ]; then
  (cd "$D/data" && $PYTHON eval/eval.py --tier testdev_balanced)
else
  echo "[gqa] put the official GQA eval/eval.py under $D/data/eval to score (accuracy)"
fi
