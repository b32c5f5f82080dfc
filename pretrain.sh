#!/usr/bin/env bash
# SQ-LLaVA stage 1: align the cluster projector (+ ViT LoRA r64/a128, which really trains here) on the 558K
# image-caption pairs with the `plain` template; lr 1e-3, global batch 256, 1 epoch (SPEC 6).
# The defaults are the paper's real setup (Vicuna-7B v1.5, CLIP ViT-L/14-336).
#
# Every setting is an environment variable; extra flags are passed through ("$@"; the last copy of a flag wins):
#   MODEL VISION_TOWER DATA_PATH IMAGE_FOLDER OUTPUT_DIR    what to train on and where to write
#   NUM_GPUS (per node) NNODES PER_DEVICE_BATCH GLOBAL_BATCH
#       gradient accumulation = GLOBAL_BATCH / (NUM_GPUS * NNODES * PER_DEVICE_BATCH), so the global batch
#       stays 256 whatever the GPU count (e.g. 8 GPUs x 16 -> accumulation 2; 16 GPUs x 16 -> 1)
#   DS_CONFIG   scripts/zero2.json (default), scripts/zero3.json, scripts/zero3_offload.json, or "none"
#   REPORT_TO NUM_WORKERS SAVE_STEPS PYTHON LAUNCHER (torchrun | deepspeed)
#   DEVICE=cpu  CPU mode: --use_cpu, fp32 (no bf16/tf32), DS_ACCELERATOR=cpu, torchrun with NUM_GPUS
#               processes (default 1), sdpa attention, no dataloader workers; the very same flags otherwise
#   DRY_RUN=1   print the command instead of running it
#
# The tiny CPU setup (random tiny models from llava/model/tiny.py), e.g.:
#   DEVICE=cpu NUM_GPUS=2 PER_DEVICE_BATCH=4 GLOBAL_BATCH=8 MODEL=checkpoints/tiny/lm \
#     VISION_TOWER=checkpoints/tiny/tower DATA_PATH=... IMAGE_FOLDER=... bash pretrain.sh --mm_cluster_centers 2
#
# Multi-node:
#   torchrun (default): run this script on every node with NNODES, NODE_RANK (0..NNODES-1), MASTER_ADDR and
#     MASTER_PORT set the same everywhere, e.g. NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash pretrain.sh
#   deepspeed launcher: LAUNCHER=deepspeed HOSTFILE=./hostfile bash pretrain.sh (on the first node only); each
#     hostfile line reads "worker-1 slots=8"; it needs passwordless ssh and the same paths on every node.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

: "${MODEL:=lmsys/vicuna-7b-v1.5}"
: "${VISION_TOWER:=openai/clip-vit-large-patch14-336}"
: "${DATA_PATH:=./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json}"
: "${IMAGE_FOLDER:=./playground/data/LLaVA-Pretrain/images}"
: "${OUTPUT_DIR:=./checkpoints/sqllava-vicuna-7b-pretrain}"
: "${DEVICE:=gpu}"
if [[ $DEVICE == cpu ]]; then : "${NUM_GPUS:=1}"; else : "${NUM_GPUS:=8}"; fi
: "${NNODES:=1}"
: "${PER_DEVICE_BATCH:=16}"
: "${GLOBAL_BATCH:=256}"
: "${DS_CONFIG:=$HERE/scripts/zero2.json}"
: "${REPORT_TO:=none}"
: "${SAVE_STEPS:=24000}"
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
  --vit_lora_enable True --lora_r_vit 64 --lora_alpha_vit 128
  --vision_tower_lr 2e-4
  --mm_vision_select_layer -2
  --mm_vision_select_feature patch
  --mm_use_im_start_end False
  --mm_use_im_patch_token False
  --output_dir "$OUTPUT_DIR"
  --num_train_epochs 1
  --per_device_train_batch_size "$PER_DEVICE_BATCH"
  --gradient_accumulation_steps "$GRAD_ACCUM"
  --eval_strategy no
  --save_strategy steps --save_steps "$SAVE_STEPS" --save_total_limit 1
  --learning_rate 1e-3
  --weight_decay 0.
  --warmup_ratio 0.03
  --lr_scheduler_type cosine
  --logging_steps 1
  --model_max_length 2048
  --gradient_checkpointing True
  --lazy_preprocess True
  --report_to "$REPORT_TO"
)

launch_training "${ARGS[@]}"
