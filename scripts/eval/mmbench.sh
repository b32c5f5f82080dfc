#!/usr/bin/env bash
# MMBench dev (English): answers -> xlsx for the OpenCompass evaluation server.
source "$(dirname "$0")/_common.sh"
SPLIT=${SPLIT:-mmbench_dev_20230712}
LANG_CODE=${LANG_CODE:-en}
D=$EVAL_DIR/${MMB_DIR:-mmbench}
rm -f "$D/answers/$SPLIT/$CKPT.jsonl"  # the copy of merge.jsonl below: never an old one after a failed run
run_sharded model_vqa_mmbench "$D/answers/$SPLIT/$CKPT" \
  --question-file "$D/$SPLIT.tsv" --single-pred-prompt --all-rounds --lang "$LANG_CODE"
cp "$D/answers/$SPLIT/$CKPT/merge.jsonl" "$D/answers/$SPLIT/$CKPT.jsonl"
$PYTHON -m llava.eval.convert mmbench --annotation-file "$D/$SPLIT.tsv" --result-dir "$D/answers/$SPLIT" \
  --upload-dir "$D/answers_upload/$SPLIT" --experiment "$CKPT"
