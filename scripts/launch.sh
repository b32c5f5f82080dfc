# Launcher shared by pretrain.sh and lora_instruct_tuning.sh (sourced after they set their defaults).
# Reads NUM_GPUS NNODES PER_DEVICE_BATCH GLOBAL_BATCH DEVICE DS_CONFIG PYTHON LAUNCHER HOSTFILE NODE_RANK
# MASTER_ADDR MASTER_PORT RDZV_ENDPOINT RDZV_ID NUM_WORKERS RESUME SAVE_STEPS SAVE_TOTAL_LIMIT DRY_RUN (and
# RECIPE / RECIPE_FILE / RECIPE_KEPT from scripts/recipe.sh, for the summary line); defines GRAD_ACCUM,
# `launch_need_file PATH MESSAGE` and `launch_training STAGE_ARGS...` (the caller's EXTRA_ARGS go last, so they win).
#
# The global batch is the recipe's and is kept whatever the cluster: processes = nodes x GPUs per node, and
#   gradient accumulation = GLOBAL_BATCH / (processes x PER_DEVICE_BATCH).
# Where processes x PER_DEVICE_BATCH exceeds GLOBAL_BATCH, the per-device batch shrinks (a line says so).

launch_error() { echo "error: $*" >&2; exit 2; }
launch_dry_run() { [[ -n ${DRY_RUN:-} && $DRY_RUN != 0 ]]; }
# launch_need_file PATH MESSAGE: a real run stops with MESSAGE where PATH does not exist; DRY_RUN only notes it
# (the command of a later stage can be printed before the earlier stage has written its output).
launch_need_file() {
  [[ -e $1 ]] && return 0
  if launch_dry_run; then echo "[launch] note (DRY_RUN): $1 does not exist yet; a real run stops here" >&2
  else launch_error "$2"; fi
}

# GPUs per node: the hostfile's slots (deepspeed launcher), else NUM_GPUS, else those visible on this node.
visible_gpus() {
  if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
    local list; IFS=',' read -ra list <<< "$CUDA_VISIBLE_DEVICES"; echo "${#list[@]}"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    nvidia-smi -L | grep -c '^GPU'
  else
    echo 8  # no GPU visible here (a login node, DRY_RUN): the recipe's 8-GPU node
  fi
}

LAUNCHER=${LAUNCHER:-torchrun}
case $LAUNCHER in torchrun|deepspeed) ;; *) launch_error "LAUNCHER=$LAUNCHER: use torchrun or deepspeed" ;; esac
if [[ $LAUNCHER == deepspeed && -n ${HOSTFILE:-} ]]; then
  [[ -f $HOSTFILE ]] || launch_error "HOSTFILE=$HOSTFILE does not exist"
  # "host slots=N" lines; '#' starts a comment
  mapfile -t HOST_SLOTS < <(sed -e 's/#.*//' "$HOSTFILE" | awk 'NF {
      slots = ""; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) slots = substr($i, 7)
      print $1, slots }')
  (( ${#HOST_SLOTS[@]} > 0 )) || launch_error "HOSTFILE=$HOSTFILE names no host (lines read 'worker-1 slots=8')"
  HOST_GPUS=""
  for line in "${HOST_SLOTS[@]}"; do
    read -r host slots <<< "$line"
    [[ $slots =~ ^[0-9]+$ && $slots -gt 0 ]] || launch_error "HOSTFILE=$HOSTFILE: host $host has no 'slots=N'"
    [[ -z $HOST_GPUS || $slots == "$HOST_GPUS" ]] ||
      launch_error "HOSTFILE=$HOSTFILE: hosts have different slot counts ($HOST_GPUS and $slots); give every node the same GPU count"
    HOST_GPUS=$slots
  done
  [[ -z ${NNODES:-} || $NNODES == "${#HOST_SLOTS[@]}" ]] ||
    launch_error "NNODES=$NNODES but HOSTFILE=$HOSTFILE lists ${#HOST_SLOTS[@]} hosts; drop NNODES (the hostfile decides)"
  NNODES=${#HOST_SLOTS[@]}
  [[ -z ${NUM_GPUS:-} || $NUM_GPUS == "$HOST_GPUS" ]] ||
    launch_error "NUM_GPUS=$NUM_GPUS but HOSTFILE=$HOSTFILE gives slots=$HOST_GPUS; drop NUM_GPUS (the hostfile decides)"
  NUM_GPUS=$HOST_GPUS
fi
if [[ $DEVICE == cpu ]]; then NUM_GPUS=${NUM_GPUS:-1}; else NUM_GPUS=${NUM_GPUS:-$(visible_gpus)}; fi
NNODES=${NNODES:-1}
for var in NUM_GPUS NNODES PER_DEVICE_BATCH GLOBAL_BATCH; do
  [[ ${!var} =~ ^[1-9][0-9]*$ ]] || launch_error "$var=${!var} must be a positive integer"
done

WORLD=$((NUM_GPUS * NNODES))
if (( WORLD > GLOBAL_BATCH )); then
  launch_error "$WORLD processes ($NNODES nodes x $NUM_GPUS) exceed GLOBAL_BATCH=$GLOBAL_BATCH: use fewer GPUs or raise GLOBAL_BATCH"
fi
if (( WORLD * PER_DEVICE_BATCH > GLOBAL_BATCH )); then
  SHRUNK=$((GLOBAL_BATCH / WORLD))
  echo "[launch] $WORLD processes x PER_DEVICE_BATCH=$PER_DEVICE_BATCH exceed GLOBAL_BATCH=$GLOBAL_BATCH: per-device batch $PER_DEVICE_BATCH -> $SHRUNK" >&2
  PER_DEVICE_BATCH=$SHRUNK
fi
if (( GLOBAL_BATCH % (WORLD * PER_DEVICE_BATCH) != 0 )); then
  launch_error "GLOBAL_BATCH=$GLOBAL_BATCH is not a multiple of processes x PER_DEVICE_BATCH = $WORLD x $PER_DEVICE_BATCH; pick a PER_DEVICE_BATCH that divides $((GLOBAL_BATCH / WORLD))"
fi
GRAD_ACCUM=$((GLOBAL_BATCH / (WORLD * PER_DEVICE_BATCH)))

if [[ $DEVICE == cpu ]]; then
  export DS_ACCELERATOR=cpu
  DEVICE_ARGS=(--use_cpu True --bf16 False --tf32 False --attn_implementation sdpa
               --dataloader_num_workers "${NUM_WORKERS:-0}")
else
  # attention: `auto` (the default) takes FlashAttention-2 where it imports and runs, SDPA otherwise; it says which
  DEVICE_ARGS=(--bf16 True --tf32 True --dataloader_num_workers "${NUM_WORKERS:-8}")
fi
ENTRY=llava.train.train
DS_ARGS=()
if [[ $DS_CONFIG != none ]]; then DS_ARGS=(--deepspeed "$DS_CONFIG"); fi

# Checkpoints: every SAVE_STEPS optimizer steps, the newest SAVE_TOTAL_LIMIT complete ones kept; RESUME=1 (default)
# continues from the newest complete checkpoint in OUTPUT_DIR when there is one, RESUME=0 starts over.
: "${SAVE_TOTAL_LIMIT:=2}" "${RESUME:=1}"
[[ $SAVE_STEPS =~ ^[1-9][0-9]*$ ]] || launch_error "SAVE_STEPS=$SAVE_STEPS must be a positive integer"
SAVE_ARGS=(--save_strategy steps --save_steps "$SAVE_STEPS" --save_total_limit "$SAVE_TOTAL_LIMIT")
case $RESUME in
  1|true|True) SAVE_ARGS+=(--resume_from_checkpoint True) ;;
  0|false|False|"") ;;
  *) SAVE_ARGS+=(--resume_from_checkpoint "$RESUME") ;;  # a checkpoint folder
esac

if [[ $LAUNCHER == deepspeed ]]; then
  # the hostfile gives nodes and slots; MASTER_ADDR (default: the first host) must be reachable from every node
  LAUNCH=(deepspeed ${HOSTFILE:+--hostfile "$HOSTFILE"} ${MASTER_ADDR:+--master_addr "$MASTER_ADDR"}
          --master_port "${MASTER_PORT:-29500}")
  if [[ -z ${HOSTFILE:-} ]]; then
    (( NNODES == 1 )) || launch_error "NNODES=$NNODES with LAUNCHER=deepspeed needs HOSTFILE (lines 'worker-1 slots=8')"
    LAUNCH+=(--num_gpus "$NUM_GPUS")
  fi
  LAUNCH+=(--module "$ENTRY")
elif [[ -n ${RDZV_ENDPOINT:-} ]]; then
  # elastic rendezvous (scripts/slurm/): every node runs the same command, ranks are assigned at start
  LAUNCH=("$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --nproc_per_node "$NUM_GPUS"
          --rdzv_backend c10d --rdzv_endpoint "$RDZV_ENDPOINT" --rdzv_id "${RDZV_ID:-llava}" -m "$ENTRY")
else
  if (( NNODES > 1 )); then
    [[ -n ${MASTER_ADDR:-} ]] || launch_error "NNODES=$NNODES needs MASTER_ADDR (the address of node 0, the same on every node) and NODE_RANK (0..$((NNODES - 1)), one per node); on SLURM use scripts/slurm/*.sbatch, which set them"
    [[ -n ${NODE_RANK:-} ]] || launch_error "NNODES=$NNODES needs NODE_RANK (0..$((NNODES - 1))) on each node, with the same MASTER_ADDR=$MASTER_ADDR everywhere"
  fi
  LAUNCH=("$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --node_rank "${NODE_RANK:-0}"
          --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}"
          --nproc_per_node "$NUM_GPUS" -m "$ENTRY")
fi

# launch_training STAGE_ARGS...: run (or print, with DRY_RUN=1) the launcher with the stage's flags, the
# checkpoint and device flags and the caller's extra flags ($EXTRA_ARGS, last so they win).
launch_training() {
  local cmd=("${LAUNCH[@]}" "${DS_ARGS[@]}" "$@" --per_device_train_batch_size "$PER_DEVICE_BATCH"
             --gradient_accumulation_steps "$GRAD_ACCUM" "${SAVE_ARGS[@]}" "${DEVICE_ARGS[@]}" "${EXTRA_ARGS[@]}")
  if [[ -n ${RECIPE_FILE:-} ]]; then
    echo "[launch] recipe $RECIPE ($(recipe_show "$RECIPE_FILE"))${RECIPE_KEPT:+; your environment kept: $RECIPE_KEPT}" >&2
  fi
  echo "[launch] $LAUNCHER: $NNODES node(s) x $NUM_GPUS GPU(s) = $WORLD processes, per-device batch $PER_DEVICE_BATCH x accumulation $GRAD_ACCUM x $WORLD = global batch $GLOBAL_BATCH" >&2
  if launch_dry_run; then printf '%q ' "${cmd[@]}"; echo; else exec "${cmd[@]}"; fi
}
