#!/usr/bin/env bash
# Q-Bench A1 (dev): answers with the llava_v1 template (as the reference script).
source "$(dirname "$0")/_common.sh"
D=$EVAL_DIR/qbench
CONV_MODE=${CONV_MODE:-llava_v1}
MODEL_ARGS+=(--conv-mode "$CONV_MODE")
run_sharded model_vqa_qbench "$D/answers/$CKPT" \
  --question-file "$D/llvisionqa_dev.json" --image-folder "$D/images" --lang "${QBENCH_LANG:-en}"
