#!/usr/bin/env bash
# LLaVA-Bench in-the-Wild: answers, then the judge review (OPENAI_API_KEY; JUDGE_MODEL) and relative scores.
source "$(dirname "$0")/_common.sh"
D=$EVAL_DIR/llava-bench-in-the-wild
run_sharded model_vqa "$D/answers/$CKPT" --question-file "$D/questions.jsonl" --image-folder "$D/images"
mkdir -p "$D/reviews"
$PYTHON -m llava.eval.gpt_review --question "$D/questions.jsonl" --context "$D/context.jsonl" \
  --rule llava/eval/table/rule.json --answer-list "$D/answers_gpt4.jsonl" "$D/answers/$CKPT/merge.jsonl" \
  --output "$D/reviews/$CKPT.jsonl" ${JUDGE_MODEL:+--judge-model "$JUDGE_MODEL"}
$PYTHON -m llava.eval.summarize_gpt_review -f "$D/reviews/$CKPT.jsonl"
