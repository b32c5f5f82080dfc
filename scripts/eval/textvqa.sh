#!/usr/bin/env bash
# TextVQA val (prompts carry the reference OCR tokens): VQA soft accuracy.
source "$(dirname "$0")/_common.sh"
D=$EVAL_DIR/textvqa
run_sharded model_vqa_loader "$D/answers/$CKPT" \
  --question-file "$D/llava_textvqa_val_v051_ocr.jsonl" --image-folder "$D/train_images"
$PYTHON -m llava.eval.eval_textvqa --annotation-file "$D/TextVQA_0.5.1_val.json" \
  --result-file "$D/answers/$CKPT/merge.jsonl" --output-file "$D/answers/$CKPT/result.json"
