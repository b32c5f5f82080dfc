#!/usr/bin/env bash
# SQ-LLaVA stage 1: align the cluster projector (+ ViT LoRA r64/a128, which really trains here) on the 558K
# image-caption pairs with the `plain` template; lr 1e-3, global batch 256, 1 epoch (docs/reference.md#training-defaults).
# The defaults are the paper's real setup (Vicuna-7B v1.5, CLIP ViT-L/14-336).
#
# Every setting is an environment variable; extra flags are passed through ("$@"; the last copy of a flag wins):
#   RECIPE      a named recipe, scripts/recipes/<name>.env (e.g. sqllava-13b, sqllava-star-7b-pt2; the list:
#               ls scripts/recipes, or any unknown name); it fills in the variables below that you leave unset:
#               your environment > the recipe > these defaults. Without RECIPE: the defaults (= sqllava-7b).
#               RECIPE_DIR: a folder of your own recipes (format: scripts/recipe.sh)
#   MODEL VISION_TOWER DATA_PATH IMAGE_FOLDER OUTPUT_DIR    what to train on and where to write
#   PROJECTOR   an mm_projector.bin to start the projector from (--pretrain_mm_mlp_adapter; default: none, from
#               scratch); SQ-LLaVA*'s second pretraining step starts from the first step's
#   VIT_LORA=0  no ViT LoRA (default 1: trained with the projector); VIT_LORA_R (64) VIT_LORA_ALPHA (128)
#   VISION_TOWER_LR (2e-4, ViT LoRA's learning rate; unused without ViT LoRA)
#   LR (1e-3) EPOCHS (1) IMAGE_ASPECT_RATIO (square)
#   NUM_GPUS (per node; default: the GPUs visible here) NNODES PER_DEVICE_BATCH GLOBAL_BATCH
#       gradient accumulation = GLOBAL_BATCH / (NNODES * NUM_GPUS * PER_DEVICE_BATCH), so the global batch stays
#       256 on any cluster (8 GPUs x 16 -> accumulation 2; 2 nodes x 8 -> 1); where GPUs x PER_DEVICE_BATCH
#       exceed it, the per-device batch shrinks (with a line saying so)
#   DS_CONFIG   scripts/zero2.json (default), scripts/zero3.json, scripts/zero3_offload.json, or "none"
#   SAVE_STEPS (default 500) SAVE_TOTAL_LIMIT (2)  a checkpoint every SAVE_STEPS steps, the newest complete ones kept
#   RESUME=1 (default) continue from the newest complete checkpoint in OUTPUT_DIR if any; RESUME=0 start over
#   REPORT_TO NUM_WORKERS PYTHON LAUNCHER (torchrun | deepspeed)
#   DEVICE=cpu  CPU mode: --use_cpu, fp32 (no bf16/tf32), DS_ACCELERATOR=cpu, torchrun with NUM_GPUS
#               processes (default 1), sdpa attention, no dataloader workers; the very same flags otherwise
#   DRY_RUN=1   print the command (and the nodes / processes / batch line) instead of running it
#               (a missing input of an earlier stage, e.g. its mm_projector.bin, is only noted)
#
# The tiny CPU setup (random tiny models from llava/model/tiny.py), e.g.:
#   DEVICE=cpu NUM_GPUS=2 PER_DEVICE_BATCH=4 GLOBAL_BATCH=8 MODEL=checkpoints/tiny/lm \
#     VISION_TOWER=checkpoints/tiny/tower DATA_PATH=... IMAGE_FOLDER=... bash pretrain.sh --mm_cluster_centers 2
#
# Multi-node (see README, "Training on a cluster"):
#   SLURM: sbatch --nodes=2 scripts/slurm/pretrain.sbatch  (srun starts this script on every node; torchrun rendezvous)
#   torchrun by hand: on every node NNODES=2 NODE_RANK=<0|1> MASTER_ADDR=<node 0's address> bash pretrain.sh
#   deepspeed launcher: LAUNCHER=deepspeed HOSTFILE=./hostfile bash pretrain.sh (first node only); the hostfile's
#     lines ("worker-1 slots=8") give the node and GPU counts; it needs passwordless ssh and the same paths everywhere.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/recipe.sh
source "$HERE/scripts/recipe.sh"
load_recipe 1  # RECIPE's values for the variables still unset, before the defaults below

: "${MODEL:=lmsys/vicuna-7b-v1.5}"
: "${VISION_TOWER:=openai/clip-vit-large-patch14-336}"
: "${DATA_PATH:=./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json}"
: "${IMAGE_FOLDER:=./playground/data/LLaVA-Pretrain/images}"
: "${OUTPUT_DIR:=./checkpoints/sqllava-vicuna-7b-pretrain}"
: "${PROJECTOR:=}"  # empty: the projector starts from scratch
VIT_LORA=${VIT_LORA-1}  # 0 (or empty): align the projector alone, no ViT LoRA
: "${VIT_LORA_R:=64}" "${VIT_LORA_ALPHA:=128}" "${VISION_TOWER_LR:=2e-4}"
: "${LR:=1e-3}" "${EPOCHS:=1}" "${IMAGE_ASPECT_RATIO:=square}"
: "${DEVICE:=gpu}"
: "${PER_DEVICE_BATCH:=16}"
: "${GLOBAL_BATCH:=256}"
: "${DS_CONFIG:=$HERE/scripts/zero2.json}"
: "${REPORT_TO:=none}"
: "${SAVE_STEPS:=500}"  # ~40 min of 8 x A100 (LLaVA-1.5 reports ~3 h for this stage at 7B)
: "${PYTHON:=python}"

EXTRA_ARGS=("$@")
# shellcheck source=scripts/launch.sh
source "$HERE/scripts/launch.sh"

ARGS=(
  --model_name_or_path "$MODEL"
  --version plain
  --data_path "$DATA_PATH"
  --image_folder "$IMAGE_FOLDER"
  --vision_tower "$VISION_TOWER"
  --mm_projector_type cluster
  --tune_mm_mlp_adapter True
  --mm_vision_select_layer -2
  --mm_vision_select_feature patch
  --mm_use_im_start_end False
  --mm_use_im_patch_token False
  --output_dir "$OUTPUT_DIR"
  --image_aspect_ratio "$IMAGE_ASPECT_RATIO"
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

if [[ -n $PROJECTOR ]]; then
  launch_need_file "$PROJECTOR" "PROJECTOR=$PROJECTOR (the projector to start from) does not exist: run the step that writes it first${RECIPE_FILE:+ (the order is at the top of $(recipe_show "$RECIPE_FILE"))}, or set PROJECTOR to an mm_projector.bin (empty: from scratch)"
  ARGS+=(--pretrain_mm_mlp_adapter "$PROJECTOR")
fi
case $VIT_LORA in
  ""|0|false|False|none) ARGS+=(--vit_lora_enable False) ;;
  *) ARGS+=(--vit_lora_enable True --lora_r_vit "$VIT_LORA_R" --lora_alpha_vit "$VIT_LORA_ALPHA"
            --vision_tower_lr "$VISION_TOWER_LR") ;;
esac

launch_training "${ARGS[@]}"
