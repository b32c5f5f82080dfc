#!/usr/bin/env bash
# Run one training stage on every node of a SLURM allocation: srun starts STAGE_SCRIPT once per node, and the
# nodes meet through torchrun's c10d rendezvous on the first node (no NODE_RANK needed).
#   bash scripts/slurm/launch_stage.sh pretrain.sh [extra training flags...]   (called by the *.sbatch files)
# Environment: the stage script's variables (MODEL, DATA_PATH, GLOBAL_BATCH, ...) pass through unchanged;
# NNODES, NUM_GPUS (per node) and the rendezvous come from SLURM; RDZV_PORT (default 29500) if that port is taken.
set -euo pipefail
STAGE_SCRIPT=${1:?usage: launch_stage.sh STAGE_SCRIPT [flags...]}
shift
[[ -n ${SLURM_JOB_NODELIST:-} ]] || { echo "error: not inside a SLURM job (submit with sbatch scripts/slurm/*.sbatch)" >&2; exit 2; }

HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export NNODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
export NUM_GPUS=${NUM_GPUS:-${SLURM_GPUS_ON_NODE:-8}}
export RDZV_ENDPOINT=${RDZV_ENDPOINT:-$HEAD_NODE:${RDZV_PORT:-29500}}
export RDZV_ID=${RDZV_ID:-${SLURM_JOB_ID:-llava}}
export LAUNCHER=torchrun
echo "[slurm] job ${SLURM_JOB_ID:-?}: $NNODES node(s) x $NUM_GPUS GPU(s), rendezvous at $RDZV_ENDPOINT" >&2
# one task per node; a node that fails ends the whole step instead of leaving the others waiting
exec srun --nodes="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 bash "$STAGE_SCRIPT" "$@"
