#!/usr/bin/env bash
# SQ-LLaVA stage 2: visual self-questioning instruction tuning on LLaVA-665K with the `v1_sq` template
# (sq_r 0.5): LLM LoRA r128/a256 (lr 2e-4), ViT LoRA r64/a128 (vision_tower_lr 2e-4), cluster projector
# (mm_projector_lr 2e-5), global batch 128, pad aspect, modality-grouped batches, 1 epoch (SPEC 6, the 7B
# LLaVA-data row). The projector starts from stage 1's mm_projector.bin and ViT LoRA from its Vit-lora/.
# The defaults are the paper's real setup (Vicuna-7B v1.5, CLIP ViT-L/14-336).
#
# Every setting is an environment variable; extra flags are passed through ("$@"; the last copy of a flag wins):
#   MODEL VISION_TOWER DATA_PATH IMAGE_FOLDER OUTPUT_DIR
#   PRETRAIN_DIR  stage-1 output (mm_projector.bin + Vit-lora/); PROJECTOR and VIT_LORA override each file
#   NUM_GPUS (per node) NNODES PER_DEVICE_BATCH GLOBAL_BATCH
#       gradient accumulation = GLOBAL_BATCH / (NUM_GPUS * NNODES * PER_DEVICE_BATCH), so the global batch
#       stays 128 whatever the GPU count (e.g. 8 GPUs x 8 -> accumulation 2; 16 GPUs x 8 -> 1)
#   DS_CONFIG   scripts/zero3.json (default), scripts/zero2.json, scripts/zero3_offload.json, or "none"
#   REPORT_TO NUM_WORKERS SAVE_STEPS PYTHON LAUNCHER (torchrun | deepspeed)
#   DEVICE=cpu  CPU mode: --use_cpu, fp32 (no bf16/tf32), DS_ACCELERATOR=cpu, torchrun with NUM_GPUS
#               processes (default 1), sdpa attention, no dataloader workers; the very same flags otherwise
#   DRY_RUN=1   print the command instead of running it
#   Out of GPU memory? QLoRA: append --bits 4 (with DS_CONFIG=scripts/zero2.json or none), or use
#   DS_CONFIG=scripts/zero3_offload.json.
#
# Multi-node:
#   torchrun (default): run this script on every node with NNODES, NODE_RANK (0..NNODES-1), MASTER_ADDR and
#     MASTER_PORT set the same everywhere, e.g. NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash lora_instruct_tuning.sh
#   deepspeed launcher: LAUNCHER=deepspeed HOSTFILE=./hostfile bash lora_instruct_tuning.sh (first node only);
#     each hostfile line reads "worker-1 slots=8"; it needs passwordless ssh and the same paths on every node.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

: "${MODEL:=lmsys/vicuna-7b-v1.5}"
: "${VISION_TOWER:=openai/clip-vit-large-patch14-336}"
: "${DATA_PATH:=./playground/data/llava_v1_5_mix665k.json}"
: "${IMAGE_FOLDER:=./playground/data}"
: "${PRETRAIN_DIR:=./checkpoints/sqllava-vicuna-7b-pretrain}"
: "${PROJECTOR:=$PRETRAIN_DIR/mm_projector.bin}"
: "${VIT_LORA:=$PRETRAIN_DIR/Vit-lora}"
: "${OUTPUT_DIR:=./checkpoints/sqllava-vicuna-7b-lora}"
: "${DEVICE:=gpu}"
if [[ $DEVICE == cpu ]]; then : "${NUM_GPUS:=1}"; else : "${NUM_GPUS:=8}"; fi
: "${NNODES:=1}"
: "${PER_DEVICE_BATCH:=8}"
: "${GLOBAL_BATCH:=128}"
: "${DS_CONFIG:=$HERE/scripts/zero3.json}"
: "${REPORT_TO:=none}"
: "${SAVE_STEPS:=50000}"
: "${PYTHON:=python}"

EXTRA_ARGS=("$@")
# shellcheck source=scripts/launch.sh
source "$HERE/scripts/launch.sh"

ARGS=(
  --model_name_or_path "$MODEL"
  --version v1_sq
  --sq_r 0.5
  --data_path "$DATA_PATH"
  --image_folder "$IMAGE_FOLDER"
  --vision_tower "$VISION_TOWER"
  --mm_projector_type cluster
  --pretrain_mm_mlp_adapter "$PROJECTOR"
  --lora_enable True --lora_r 128 --lora_alpha 256
  --vit_lora_enable True --lora_r_vit 64 --lora_alpha_vit 128
  --pretrain_lora "$VIT_LORA"
  --mm_projector_lr 2e-5
  --vision_tower_lr 2e-4
  --mm_vision_select_layer -2
  --mm_vision_select_feature patch
  --mm_use_im_start_end False
  --mm_use_im_patch_token False
  --image_aspect_ratio pad
  --group_by_modality_length True
  --output_dir "$OUTPUT_DIR"
  --num_train_epochs 1
  --per_device_train_batch_size "$PER_DEVICE_BATCH"
  --gradient_accumulation_steps "$GRAD_ACCUM"
  --eval_strategy no
  --save_strategy steps --save_steps "$SAVE_STEPS" --save_total_limit 2
  --learning_rate 2e-4
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
