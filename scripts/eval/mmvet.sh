#!/usr/bin/env bash
# MM-Vet: answers -> {v1_N: answer} json for the official GPT-4 grader.
source "$(dirname "$0")/_common.sh"
D=$EVAL_DIR/mm-vet
run_sharded model_vqa "$D/answers/$CKPT" --question-file "$D/llava-mm-vet.jsonl" --image-folder "$D/images"
mkdir -p "$D/results"
$PYTHON -m llava.eval.convert mmvet --src "$D/answers/$CKPT/merge.jsonl" --dst "$D/results/$CKPT.json"
