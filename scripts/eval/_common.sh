# Shared settings for scripts/eval/*.sh (sourced, not run). Override any of them from the environment:
#   MODEL_PATH   checkpoint to evaluate (full, stage-1 or LoRA dir)     default ./checkpoints/sqllava-lora-7b
#   MODEL_BASE   LLM base for LoRA / projector checkpoints              default: none (full checkpoints)
#   LORA_PRETRAIN  a Vit-lora dir (MODEL_PATH/Vit-lora is used automatically when present)
#   CKPT         name used for answer folders                            default basename of MODEL_PATH
#   CONV_MODE    template; default: the one the checkpoint was trained with (its config), else v1
#   BATCH_SIZE   generation batch size per process                       default 16
#   CUDA_VISIBLE_DEVICES  one shard per listed GPU (e.g. 0,1,2,3); on CPU set CHUNKS instead
#   EVAL_DIR     benchmark data root                                     default ./playground/data/eval
#   PYTHON       interpreter                                             default python
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

MODEL_PATH=${MODEL_PATH:-./checkpoints/sqllava-lora-7b}
CKPT=${CKPT:-$(basename "$MODEL_PATH")}
EVAL_DIR=${EVAL_DIR:-./playground/data/eval}
BATCH_SIZE=${BATCH_SIZE:-16}
PYTHON=${PYTHON:-python}

if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  IFS=',' read -ra GPULIST <<< "$CUDA_VISIBLE_DEVICES"
elif command -v nvidia-smi >/dev/null 2>&1; then
  mapfile -t GPULIST < <(nvidia-smi --query-gpu=index --format=csv,noheader)
else
  GPULIST=()
fi
if [ ${#GPULIST[@]} -gt 0 ]; then
  CHUNKS=${CHUNKS:-${#GPULIST[@]}}; DEVICE=${DEVICE:-cuda}
else
  CHUNKS=${CHUNKS:-1}; DEVICE=${DEVICE:-cpu}
fi

MODEL_ARGS=(--model-path "$MODEL_PATH" --device "$DEVICE" --batch-size "$BATCH_SIZE" --temperature 0)
[ -n "${MODEL_BASE:-}" ] && MODEL_ARGS+=(--model-base "$MODEL_BASE")
[ -n "${LORA_PRETRAIN:-}" ] && MODEL_ARGS+=(--lora_pretrain "$LORA_PRETRAIN")
[ -n "${CONV_MODE:-}" ] && MODEL_ARGS+=(--conv-mode "$CONV_MODE")

# run_sharded MODULE ANSWER_DIR [module args...]: one process per chunk (GPU), then ANSWER_DIR/merge.jsonl.
run_sharded() {
  local module=$1 answer_dir=$2; shift 2
  mkdir -p "$answer_dir"
  local idx
  for idx in $(seq 0 $((CHUNKS - 1))); do
    local gpu_env=()
    [ ${#GPULIST[@]} -gt 0 ] && gpu_env=(env CUDA_VISIBLE_DEVICES="${GPULIST[$((idx % ${#GPULIST[@]}))]}")
    "${gpu_env[@]}" "$PYTHON" -m "llava.eval.$module" "${MODEL_ARGS[@]}" "$@" \
      --answers-file "$answer_dir/${CHUNKS}_${idx}.jsonl" --num-chunks "$CHUNKS" --chunk-idx "$idx" &
  done
  wait
  : > "$answer_dir/merge.jsonl"
  for idx in $(seq 0 $((CHUNKS - 1))); do
    cat "$answer_dir/${CHUNKS}_${idx}.jsonl" >> "$answer_dir/merge.jsonl"
  done
  echo "[eval] answers: $answer_dir/merge.jsonl"
}
