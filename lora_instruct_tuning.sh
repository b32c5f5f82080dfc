#!/usr/bin/env bash
# SQ-LLaVA stage 2: visual self-questioning instruction tuning on LLaVA-665K with the `v1_sq` template
# (sq_r 0.5): LLM LoRA r128/a256 (lr 2e-4), ViT LoRA r64/a128 (vision_tower_lr 2e-4), cluster projector
# (mm_projector_lr 2e-5), global batch 128, pad aspect, modality-grouped batches, 1 epoch (the reference's 7B
# LLaVA-data script, docs/reference.md#training-recipes). The projector starts from stage 1's mm_projector.bin and ViT LoRA from its Vit-lora/.
# The defaults are the paper's real setup (Vicuna-7B v1.5, CLIP ViT-L/14-336).
#
# Every setting is an environment variable; extra flags are passed through ("$@"; the last copy of a flag wins):
#   RECIPE      a named recipe, scripts/recipes/<name>.env (e.g. sqllava-13b, sqllava-star-7b; the list:
#               ls scripts/recipes, or any unknown name); it fills in the variables below that you leave unset:
#               your environment > the recipe > these defaults. Without RECIPE: the defaults (= sqllava-7b).
#               RECIPE_DIR: a folder of your own recipes (format: scripts/recipe.sh)
#   MODEL VISION_TOWER DATA_PATH IMAGE_FOLDER OUTPUT_DIR
#   PRETRAIN_DIR  stage-1 output: mm_projector.bin (required: a run stops without it) and, if stage 1 trained
#                 one, Vit-lora/
#   PROJECTOR   the projector to start from (default $PRETRAIN_DIR/mm_projector.bin)
#   VIT_LORA    how ViT LoRA starts:
#                 unset (default)  from $PRETRAIN_DIR/Vit-lora; where PRETRAIN_DIR has mm_projector.bin but no
#                                  Vit-lora/ (e.g. a downloaded stage-1 projector), a new one, with a line saying so
#                 new (or 1)       a new adapter (--vit_lora_enable True without --pretrain_lora)
#                 DIR              from that Vit-lora folder (a run stops if it does not exist)
#                 0 (or empty)     no ViT LoRA
#   VIT_LORA_R (64) VIT_LORA_ALPHA (128) VISION_TOWER_LR (2e-4)    ViT LoRA's rank, alpha and learning rate
#   LORA_R (128) LORA_ALPHA (256) LR (2e-4)    the LLM LoRA and its learning rate
#   PROJECTOR_LR (2e-5) SQ_R (0.5) EPOCHS (1) IMAGE_ASPECT_RATIO (pad)
#   NUM_GPUS (per node; default: the GPUs visible here) NNODES PER_DEVICE_BATCH GLOBAL_BATCH
#       gradient accumulation = GLOBAL_BATCH / (NNODES * NUM_GPUS * PER_DEVICE_BATCH), so the global batch stays
#       128 on any cluster (8 GPUs x 8 -> accumulation 2; 2 nodes x 8 -> 1); where GPUs x PER_DEVICE_BATCH
#       exceed it, the per-device batch shrinks (with a line saying so)
#   DS_CONFIG   scripts/zero3.json (default), scripts/zero2.json, scripts/zero3_offload.json, or "none"
#   SAVE_STEPS (default 400) SAVE_TOTAL_LIMIT (2)  a checkpoint every SAVE_STEPS steps, the newest complete ones kept
#   RESUME=1 (default) continue from the newest complete checkpoint in OUTPUT_DIR if any; RESUME=0 start over
#   REPORT_TO NUM_WORKERS PYTHON LAUNCHER (torchrun | deepspeed)
#   DEVICE=cpu  CPU mode: --use_cpu, fp32 (no bf16/tf32), DS_ACCELERATOR=cpu, torchrun with NUM_GPUS
#               processes (default 1), sdpa attention, no dataloader workers; the very same flags otherwise
#   DRY_RUN=1   print the command (and the nodes / processes / batch line) instead of running it
#               (a missing input of an earlier stage, e.g. its mm_projector.bin, is only noted)
#   Out of GPU memory? QLoRA: append --bits 4 (with DS_CONFIG=scripts/zero2.json or none), or use
#   DS_CONFIG=scripts/zero3_offload.json.
#
# Multi-node (see README, "Training on a cluster"):
#   SLURM: sbatch --nodes=2 scripts/slurm/lora_instruct_tuning.sbatch  (srun starts this script on every node; torchrun rendezvous)
#   torchrun by hand: on every node NNODES=2 NODE_RANK=<0|1> MASTER_ADDR=<node 0's address> bash lora_instruct_tuning.sh
#   deepspeed launcher: LAUNCHER=deepspeed HOSTFILE=./hostfile bash lora_instruct_tuning.sh (first node only); the hostfile's
#     lines ("worker-1 slots=8") give the node and GPU counts; it needs passwordless ssh and the same paths everywhere.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/recipe.sh
source "$HERE/scripts/recipe.sh"
load_recipe 2  # RECIPE's values for the variables still unset, before the defaults below

: "${MODEL:=lmsys/vicuna-7b-v1.5}"
: "${VISION_TOWER:=openai/clip-vit-large-patch14-336}"
: "${DATA_PATH:=./playground/data/llava_v1_5_mix665k.json}"
: "${IMAGE_FOLDER:=./playground/data}"
: "${PRETRAIN_DIR:=./checkpoints/sqllava-vicuna-7b-pretrain}"
: "${PROJECTOR:=$PRETRAIN_DIR/mm_projector.bin}"
: "${VIT_LORA_R:=64}" "${VIT_LORA_ALPHA:=128}" "${VISION_TOWER_LR:=2e-4}"
if [[ -z ${VIT_LORA+x} ]]; then  # unset: stage 1's Vit-lora/, or a new adapter where stage 1 wrote none
  VIT_LORA=$PRETRAIN_DIR/Vit-lora
  if [[ ! -e $VIT_LORA && -e $PROJECTOR ]]; then
    echo "[launch] ViT LoRA: no $VIT_LORA/ (stage 1 trained none, or its projector was downloaded), so a new ViT LoRA r$VIT_LORA_R/a$VIT_LORA_ALPHA starts here (VIT_LORA=0: none)" >&2
    VIT_LORA=new
  fi
fi  # set, even to empty, it is kept: VIT_LORA= or 0 switches ViT LoRA off
: "${LORA_R:=128}" "${LORA_ALPHA:=256}" "${LR:=2e-4}" "${PROJECTOR_LR:=2e-5}" "${SQ_R:=0.5}"
: "${EPOCHS:=1}" "${IMAGE_ASPECT_RATIO:=pad}"
: "${OUTPUT_DIR:=./checkpoints/sqllava-vicuna-7b-lora}"
: "${DEVICE:=gpu}"
: "${PER_DEVICE_BATCH:=8}"
: "${GLOBAL_BATCH:=128}"
: "${DS_CONFIG:=$HERE/scripts/zero3.json}"
: "${REPORT_TO:=none}"
: "${SAVE_STEPS:=400}"  # ~45 min of 8 x A100 (~5.2k steps, LLaVA-1.5 reports ~10 h at 7B)
: "${PYTHON:=python}"

EXTRA_ARGS=("$@")
# shellcheck source=scripts/launch.sh
source "$HERE/scripts/launch.sh"

ARGS=(
  --model_name_or_path "$MODEL"
  --version v1_sq
  --sq_r "$SQ_R"
  --data_path "$DATA_PATH"
  --image_folder "$IMAGE_FOLDER"
  --vision_tower "$VISION_TOWER"
  --mm_projector_type cluster
  --pretrain_mm_mlp_adapter "$PROJECTOR"
  --lora_enable True --lora_r "$LORA_R" --lora_alpha "$LORA_ALPHA"
  --mm_projector_lr "$PROJECTOR_LR"
  --mm_vision_select_layer -2
  --mm_vision_select_feature patch
  --mm_use_im_start_end False
  --mm_use_im_patch_token False
  --image_aspect_ratio "$IMAGE_ASPECT_RATIO"
  --group_by_modality_length True
  --output_dir "$OUTPUT_DIR"
  --num_train_epochs "$EPOCHS"
  --eval_strategy no
  --learning_rate "$LR"
  --weight_decay 0.
  --warmup_ratio 0.03
  --lr_scheduler_type cosine
  --logging_steps 1
  --model_max_length 2048
  --gradient_checkpointing True
  --lazy_preprocess True
  --report_to "$REPORT_TO"
)

launch_need_file "$PROJECTOR" "PROJECTOR=$PROJECTOR does not exist: stage 2 starts from stage 1's projector; run stage 1 first${RECIPE_FILE:+ (RECIPE=$RECIPE: the order is at the top of $(recipe_show "$RECIPE_FILE"))}, or set PRETRAIN_DIR to a folder holding mm_projector.bin (or PROJECTOR to the file)"
VIT_LORA_ARGS=(--vit_lora_enable True --lora_r_vit "$VIT_LORA_R" --lora_alpha_vit "$VIT_LORA_ALPHA"
               --vision_tower_lr "$VISION_TOWER_LR")
case $VIT_LORA in
  ""|0|false|False|none) ARGS+=(--vit_lora_enable False) ;;
  new|1|true|True) ARGS+=("${VIT_LORA_ARGS[@]}") ;;  # a new adapter
  *)
    launch_need_file "$VIT_LORA" "VIT_LORA=$VIT_LORA does not exist: point it at stage 1's Vit-lora/ folder, or use VIT_LORA=new (a new adapter) or VIT_LORA=0 (none)"
    ARGS+=("${VIT_LORA_ARGS[@]}" --pretrain_lora "$VIT_LORA") ;;
esac

launch_training "${ARGS[@]}"
