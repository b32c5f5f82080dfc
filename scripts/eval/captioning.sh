#!/usr/bin/env bash
# One caption set: answers (model_cap) + BLEU-1..4 / METEOR / ROUGE-L / CIDEr (+ SPICE when available).
#   SET=coco_karpathy_test bash scripts/eval/captioning.sh
# Layout: $EVAL_DIR/caption/$SET/{questions.jsonl, references.json, images/}
source "$(dirname "$0")/_common.sh"
SET=${SET:?set SET to a folder under $EVAL_DIR/caption}
D=$EVAL_DIR/caption/$SET
run_sharded model_cap "$D/answers/$CKPT" --question-file "$D/questions.jsonl" --image-folder "$D/images" \
  ${SQ:+--sq --n_shot "${N_SHOT:-5}"}
SCORE_ARGS=()
if [ "$PROTOCOL" = paper ]; then  # the reference's scorer cut predictions to 20 words (PAPER_CAPTION_MAX_WORDS)
  SCORE_ARGS=(--max-words 20)
fi
$PYTHON -m llava.eval.eval_caption --result-file "$D/answers/$CKPT/merge.jsonl" \
  --annotation-file "$D/references.json" --output-file "$D/answers/$CKPT/metrics.json" "${SCORE_ARGS[@]}"
