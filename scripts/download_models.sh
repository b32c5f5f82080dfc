#!/usr/bin/env bash
# Download the released SQ-LLaVA checkpoints and the models they need into ./checkpoints/<name> (huggingface_hub's
# `hf download`, or the older `huggingface-cli download`).
#
#   bash scripts/download_models.sh                      # MODELS=7b: ZachSun/sqllava-lora-7b + its base + its tower
#   MODELS="13b" bash scripts/download_models.sh          # the 13B analogue
#   MODELS="train-7b sqllava-lora-7b" bash scripts/download_models.sh
#   DRY_RUN=1 MODELS=all bash scripts/download_models.sh # print the commands only
#   bash scripts/download_models.sh --token hf_xxx       # trailing arguments go to every `hf download`
#
# MODELS: names (the repo's last component; each goes to $CHECKPOINTS/<name>) and groups, separated by spaces:
#   7b        sqllava-lora-7b ShareGPT4V-7B_Pretrained_vit-large336-l12_vicuna-7b-v1.5 ShareGPT4V-7B_Pretrained_vit-large336-l12
#   13b       sqllava-lora-13b ShareGPT4V-13B_Pretrained_vit-large336-l12_vicuna-13b-v1.5 ShareGPT4V-13B_Pretrained_vit-large336-l12
#   13b-665k  sqllava-13b-vlora-665k vicuna-13b-v1.5 clip-vit-large-patch14-336
#   train-7b  vicuna-7b-v1.5 clip-vit-large-patch14-336 Sophon-projector-cluster-pretrain (training from scratch or
#             from the released stage-1 projector; RECIPE=sqllava-7b-from-released-projector)
#   train-13b vicuna-13b-v1.5 clip-vit-large-patch14-336
#   all       every model below
# CHECKPOINTS: target folder (default ./checkpoints, relative to the repository root). HF_TOKEN is honoured by hf.
#
# The released LoRA checkpoints are the ShareGPT4V variant (SQ-LLaVA*): their LLM base is ShareGPT4V's stage-1 LLM,
# NOT lmsys/vicuna-7b-v1.5 (same shapes, so a wrong base loads without error and scores degrade silently):
#   MODEL_PATH=./checkpoints/sqllava-lora-7b \
#   MODEL_BASE=./checkpoints/ShareGPT4V-7B_Pretrained_vit-large336-l12_vicuna-7b-v1.5 \
#   VISION_TOWER=./checkpoints/ShareGPT4V-7B_Pretrained_vit-large336-l12 bash scripts/eval/pope.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# name -> hub repo
declare -A REPO=(
  [sqllava-lora-7b]=ZachSun/sqllava-lora-7b
  [sqllava-lora-13b]=ZachSun/sqllava-lora-13b
  [sqllava-13b-vlora-665k]=ZachSun/sqllava-13b-vlora-665k
  [Sophon-projector-cluster-pretrain]=ZachSun/Sophon-projector-cluster-pretrain
  [ShareGPT4V-7B_Pretrained_vit-large336-l12_vicuna-7b-v1.5]=Lin-Chen/ShareGPT4V-7B_Pretrained_vit-large336-l12_vicuna-7b-v1.5
  [ShareGPT4V-7B_Pretrained_vit-large336-l12]=Lin-Chen/ShareGPT4V-7B_Pretrained_vit-large336-l12
  [ShareGPT4V-13B_Pretrained_vit-large336-l12_vicuna-13b-v1.5]=Lin-Chen/ShareGPT4V-13B_Pretrained_vit-large336-l12_vicuna-13b-v1.5
  [ShareGPT4V-13B_Pretrained_vit-large336-l12]=Lin-Chen/ShareGPT4V-13B_Pretrained_vit-large336-l12
  [vicuna-7b-v1.5]=lmsys/vicuna-7b-v1.5
  [vicuna-13b-v1.5]=lmsys/vicuna-13b-v1.5
  [clip-vit-large-patch14-336]=openai/clip-vit-large-patch14-336
)
ORDER=(sqllava-lora-7b ShareGPT4V-7B_Pretrained_vit-large336-l12_vicuna-7b-v1.5 ShareGPT4V-7B_Pretrained_vit-large336-l12
       sqllava-lora-13b ShareGPT4V-13B_Pretrained_vit-large336-l12_vicuna-13b-v1.5 ShareGPT4V-13B_Pretrained_vit-large336-l12
       sqllava-13b-vlora-665k Sophon-projector-cluster-pretrain vicuna-7b-v1.5 vicuna-13b-v1.5 clip-vit-large-patch14-336)
declare -A GROUP=(
  [7b]="sqllava-lora-7b ShareGPT4V-7B_Pretrained_vit-large336-l12_vicuna-7b-v1.5 ShareGPT4V-7B_Pretrained_vit-large336-l12"
  [13b]="sqllava-lora-13b ShareGPT4V-13B_Pretrained_vit-large336-l12_vicuna-13b-v1.5 ShareGPT4V-13B_Pretrained_vit-large336-l12"
  [13b-665k]="sqllava-13b-vlora-665k vicuna-13b-v1.5 clip-vit-large-patch14-336"
  [train-7b]="vicuna-7b-v1.5 clip-vit-large-patch14-336 Sophon-projector-cluster-pretrain"
  [train-13b]="vicuna-13b-v1.5 clip-vit-large-patch14-336"
  [all]="${ORDER[*]}"
)

MODELS=${MODELS:-7b}
CHECKPOINTS=${CHECKPOINTS:-./checkpoints}
DRY_RUN=${DRY_RUN:-0}

# Expand groups, keep the first occurrence of each name, reject unknown names before downloading anything.
SELECTED=()
declare -A SEEN=()
for item in $MODELS; do
  if [ -n "${GROUP[$item]:-}" ]; then names=${GROUP[$item]}; else names=$item; fi
  for name in $names; do
    if [ -z "${REPO[$name]:-}" ]; then
      echo "error: unknown model '$name' in MODELS='$MODELS'" >&2
      echo "  groups: ${!GROUP[*]}" >&2
      echo "  names:  ${ORDER[*]}" >&2
      exit 2
    fi
    if [ -z "${SEEN[$name]:-}" ]; then SEEN[$name]=1; SELECTED+=("$name"); fi
  done
done

if command -v hf >/dev/null 2>&1; then
  CLI=(hf download)
elif command -v huggingface-cli >/dev/null 2>&1; then
  CLI=(huggingface-cli download)
elif [ "$DRY_RUN" = 1 ]; then
  CLI=(hf download)
else
  echo "error: neither 'hf' nor 'huggingface-cli' is on PATH: install the Hugging Face Hub CLI with" \
       "\`pip install -U huggingface_hub\` (it provides 'hf'; \`pip install -e .\` installs it too), or activate" \
       "the environment that has it" >&2
  exit 127
fi

for name in "${SELECTED[@]}"; do
  cmd=("${CLI[@]}" "${REPO[$name]}" --local-dir "$CHECKPOINTS/$name" "$@")
  if [ "$DRY_RUN" = 1 ]; then
    line=$(printf '%q ' "${cmd[@]}"); echo "${line% }"
  else
    echo "[download] ${REPO[$name]} -> $CHECKPOINTS/$name"
    "${cmd[@]}"
  fi
done
[ "$DRY_RUN" = 1 ] || echo "[download] done: ${SELECTED[*]} in $CHECKPOINTS"
