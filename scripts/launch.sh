# Launcher shared by pretrain.sh and lora_instruct_tuning.sh (sourced after they set their defaults).
# Reads NUM_GPUS NNODES PER_DEVICE_BATCH GLOBAL_BATCH DEVICE DS_CONFIG PYTHON LAUNCHER HOSTFILE NODE_RANK
# MASTER_ADDR MASTER_PORT NUM_WORKERS DRY_RUN; defines GRAD_ACCUM and `launch_training ARGS... -- EXTRA...`.

WORLD=$((NUM_GPUS * NNODES))
if (( GLOBAL_BATCH % (WORLD * PER_DEVICE_BATCH) != 0 )); then
  echo "GLOBAL_BATCH=$GLOBAL_BATCH is not a multiple of NUM_GPUS*NNODES*PER_DEVICE_BATCH=$((WORLD * PER_DEVICE_BATCH))" >&2
  exit 1
fi
GRAD_ACCUM=$((GLOBAL_BATCH / (WORLD * PER_DEVICE_BATCH)))

if [[ $DEVICE == cpu ]]; then
  export DS_ACCELERATOR=cpu
  ENTRY=llava.train.train
  DEVICE_ARGS=(--use_cpu True --bf16 False --tf32 False --attn_implementation sdpa
               --dataloader_num_workers "${NUM_WORKERS:-0}")
else
  ENTRY=llava.train.train_mem  # FlashAttention-2 when installed, else SDPA
  DEVICE_ARGS=(--bf16 True --tf32 True --dataloader_num_workers "${NUM_WORKERS:-8}")
fi
DS_ARGS=()
if [[ $DS_CONFIG != none ]]; then DS_ARGS=(--deepspeed "$DS_CONFIG"); fi

if [[ ${LAUNCHER:-torchrun} == deepspeed ]]; then
  LAUNCH=(deepspeed ${HOSTFILE:+--hostfile "$HOSTFILE"} --num_gpus "$NUM_GPUS" --module "$ENTRY")
else
  LAUNCH=("$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --node_rank "${NODE_RANK:-0}"
          --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}"
          --nproc_per_node "$NUM_GPUS" -m "$ENTRY")
fi

# launch_training STAGE_ARGS...: run (or print, with DRY_RUN=1) the launcher with the stage's flags, the
# device flags and the caller's extra flags ($EXTRA_ARGS, last so they win).
launch_training() {
  local cmd=("${LAUNCH[@]}" "${DS_ARGS[@]}" "$@" "${DEVICE_ARGS[@]}" "${EXTRA_ARGS[@]}")
  if [[ -n ${DRY_RUN:-} ]]; then printf '%q ' "${cmd[@]}"; echo; else exec "${cmd[@]}"; fi
}
