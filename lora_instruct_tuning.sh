#!/usr/bin/env bash
# SQ-LLaVA stage 2: visual self-questioning instruction tuning on LLaVA-665K with the `v1_sq` template
# (sq_r 0.5): LLM LoRA r128/a256 (lr 2e-4), ViT LoRA r64/a128 (vision_tower_lr 2e-4), cluster projector
# (mm_projector_lr 2e-5), global batch 128, pad aspect, modality-grouped batches, 1 epoch (SPEC 6, the 7B
# LLaVA-data row). The projector starts from stage 1's mm_projector.bin and ViT LoRA from its Vit-lora/.
# The defaults are the paper's real setup (Vicuna-7B v1.5, CLIP ViT-L/14-336).
#
# Every setting is an environment variable; extra flags are passed through ("$@"; the last copy of a flag wins):
#   MODEL VISION_TOWER DATA_PATH IMAGE_FOLDER OUTPUT_DIR
#   PRETRAIN_DIR  stage-1 output (mm_projector.bin + Vit-lora/); PROJECTOR and VIT_LORA override each file;
#                 VIT_LORA=0 (or empty) trains without ViT LoRA
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

: "${MODEL:=lmsys/vicuna-7b-v1.5}"
: "${VISION_TOWER:=openai/clip-vit-large-patch14-336}"
: "${DATA_PATH:=./playground/data/llava_v1_5_mix665k.json}"
: "${IMAGE_FOLDER:=./playground/data}"
: "${PRETRAIN_DIR:=./checkpoints/sqllava-vicuna-7b-pretrain}"
: "${PROJECTOR:=$PRETRAIN_DIR/mm_projector.bin}"
VIT_LORA=${VIT_LORA-$PRETRAIN_DIR/Vit-lora}  # "-", not ":=": VIT_LORA= (empty) or 0 switches ViT LoRA off
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
  --sq_r 0.5
  --data_path "$DATA_PATH"
  --image_folder "$IMAGE_FOLDER"
  --vision_tower "$VISION_TOWER"
  --mm_projector_type cluster
  --pretrain_mm_mlp_adapter "$PROJECTOR"
  --lora_enable True --lora_r 128 --lora_alpha 256
  --mm_projector_lr 2e-5
  --mm_vision_select_layer -2
  --mm_vision_select_feature patch
  --mm_use_im_start_end False
  --mm_use_im_patch_token False
  --image_aspect_ratio pad
  --group_by_modality_length True
  --output_dir "$OUTPUT_DIR"
  --num_train_epochs 1
  --eval_strategy no
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

case $VIT_LORA in
  ""|0|false|False|none) ARGS+=(--vit_lora_enable False) ;;
  *) ARGS+=(--vit_lora_enable True --lora_r_vit 64 --lora_alpha_vit 128 --vision_tower_lr 2e-4 --pretrain_lora "$VIT_LORA") ;;
esac

launch_training "${ARGS[@]}"
