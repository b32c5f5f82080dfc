# Shared settings for scripts/eval/*.sh (sourced, not run). Override any of them from the environment:
#   MODEL_PATH   checkpoint to evaluate (full, stage-1 or LoRA dir)     default ./checkpoints/sqllava-lora-7b
#   MODEL_BASE   LLM base for LoRA / projector checkpoints              default: none (full checkpoints; a LoRA
#                checkpoint's adapter_config.json base). The released ZachSun/sqllava-lora-7b needs ShareGPT4V's
#                stage-1 LLM, NOT lmsys/vicuna-7b-v1.5 (same shapes: it would load and score worse, silently):
#                MODEL_BASE=./checkpoints/ShareGPT4V-7B_Pretrained_vit-large336-l12_vicuna-7b-v1.5
#                (or Lin-Chen/ShareGPT4V-7B_Pretrained_vit-large336-l12_vicuna-7b-v1.5; 13B: the -13B_..._vicuna-13b-v1.5
#                one); bash scripts/download_models.sh fetches checkpoint, base and tower into ./checkpoints
#   VISION_TOWER CLIP tower replacing the checkpoint's mm_vision_tower (--vision-tower), e.g. when config.json
#                names a path on the machine that trained it: ./checkpoints/ShareGPT4V-7B_Pretrained_vit-large336-l12
#   LORA_PRETRAIN  a Vit-lora dir (MODEL_PATH/Vit-lora is used automatically when present)
#   CKPT         name used for answer folders                            default basename of MODEL_PATH
#   CONV_MODE    template; default: the one training recorded in the checkpoint's config.json (conv_mode:
#                v1_sq after stage 2), else v1. The reference evaluated SQ-LLaVA with v1 (PROTOCOL=paper sets it)
#   BATCH_SIZE   generation batch size per process                       default 16 (PROTOCOL=paper: always 1)
#   PROTOCOL     ours (default) or paper: --protocol of every answering run. paper = what the reference did per
#                entry point (batch 1, its centre crop / pad, the v1 template (llava_v1 for Q-Bench), greedy with
#                its lengths, its --sq context) and captions cut to 20 words before scoring; see --help or
#                llava/eval/protocol.py. CONV_MODE, EXTRA_ARGS and trailing flags still win over it
#   CUDA_VISIBLE_DEVICES  one shard per listed GPU (e.g. 0,1,2,3); on CPU set CHUNKS instead
#   EVAL_DIR     benchmark data root                                     default ./playground/data/eval
#   PYTHON       interpreter                                             default python
#   EXTRA_ARGS   more flags for the answering entry point (python -m llava.eval.model_*), a string split on
#                whitespace (no quoting): EXTRA_ARGS="--sq --n_shot 3", "--load-4bit", "--dtype fp16"
# Trailing arguments of a script do the same: bash scripts/eval/pope.sh --load-4bit --max_new_tokens 64
# Both go last on the entry point's command line (EXTRA_ARGS, then the trailing arguments), so they win over the
# script's defaults; `python -m llava.eval.model_vqa_loader --help` lists the flags. Scorers do not get them.
#
# Shards (run_sharded): shard i answers chunk i of CHUNKS into ANSWER_DIR/<CHUNKS>_<i>.jsonl and logs its
# stdout+stderr to ANSWER_DIR/logs/shard_<i>.log (one shard: also shown on the console). A shard that exits
# non-zero, or exits 0 without its answers file, fails the script (non-zero exit) with its index, GPU, exit code,
# log path and the end of its log; then no merge.jsonl is written (an old one is removed at the start) and no
# scoring runs. Answers already written are kept: rerunning the script resumes them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

MODEL_PATH=${MODEL_PATH:-./checkpoints/sqllava-lora-7b}
CKPT=${CKPT:-$(basename "$MODEL_PATH")}
EVAL_DIR=${EVAL_DIR:-./playground/data/eval}
PROTOCOL=${PROTOCOL:-ours}
case $PROTOCOL in
  ours|paper) ;;
  *) echo "[eval] PROTOCOL must be ours or paper, got '$PROTOCOL'" >&2; exit 1 ;;
esac
if [ "$PROTOCOL" = paper ]; then  # the reference generated one question at a time
  if [ -n "${BATCH_SIZE:-}" ] && [ "$BATCH_SIZE" != 1 ]; then
    echo "[eval] PROTOCOL=paper: BATCH_SIZE=$BATCH_SIZE replaced by 1" >&2
  fi
  BATCH_SIZE=1
fi
BATCH_SIZE=${BATCH_SIZE:-16}
PYTHON=${PYTHON:-python}
export PYTHONUNBUFFERED=${PYTHONUNBUFFERED:-1}  # shard logs (and the console) stay current, in order

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

MODEL_ARGS=(--model-path "$MODEL_PATH" --device "$DEVICE" --batch-size "$BATCH_SIZE" --temperature 0
            --protocol "$PROTOCOL")
[ -n "${MODEL_BASE:-}" ] && MODEL_ARGS+=(--model-base "$MODEL_BASE")
if [ -n "${VISION_TOWER:-}" ]; then  # the training scripts read a VISION_TOWER too: say that it applies here
  MODEL_ARGS+=(--vision-tower "$VISION_TOWER")
  echo "[eval] VISION_TOWER=$VISION_TOWER replaces the checkpoint's mm_vision_tower (--vision-tower)" >&2
fi
[ -n "${LORA_PRETRAIN:-}" ] && MODEL_ARGS+=(--lora_pretrain "$LORA_PRETRAIN")
[ -n "${CONV_MODE:-}" ] && MODEL_ARGS+=(--conv-mode "$CONV_MODE")
# EXTRA_ARGS (split on whitespace) then the sourcing script's own arguments: appended last by run_sharded.
read -ra EXTRA_ARGV <<< "${EXTRA_ARGS:-}"
EXTRA_ARGV+=("$@")

# _shard_status IDX WHERE RC ANSWERS LOG: the one-line status of a finished shard.
_shard_status() {
  local idx=$1 where=$2 rc=$3 answers=$4 log=$5
  if [ "$rc" -ne 0 ]; then
    echo "[eval] shard $idx ($where) FAILED with exit code $rc$(_signal_note "$rc"); log: $log"
  elif [ ! -f "$answers" ]; then
    echo "[eval] shard $idx ($where) FAILED: exited 0 but wrote no $answers; log: $log"
  else
    echo "[eval] shard $idx ($where) done: $(wc -l < "$answers") answers in $answers"
  fi
}

_signal_note() {
  if [ "$1" -gt 128 ]; then echo " (killed by signal $(( $1 - 128 ))$([ "$1" -eq 137 ] && echo ', out of memory?'))"; fi
}

# run_sharded MODULE ANSWER_DIR [module args...]: one process per chunk (GPU), each logging to
# ANSWER_DIR/logs/shard_<idx>.log, then ANSWER_DIR/merge.jsonl once every shard succeeded. A failed shard exits
# the script (status 1) naming it, and nothing is merged.
run_sharded() {
  local module=$1 answer_dir=$2; shift 2
  [ "$CHUNKS" -ge 1 ] || { echo "[eval] CHUNKS must be >= 1, got $CHUNKS" >&2; exit 1; }
  local log_dir=$answer_dir/logs merged=$answer_dir/merge.jsonl
  mkdir -p "$log_dir"
  rm -f "$merged" "$merged.tmp"
  local idx rc pids=() wheres=() n_gpus=${#GPULIST[@]}
  [ "$CHUNKS" -gt 1 ] && echo "[eval] llava.eval.$module: $CHUNKS shards, logs:"
  for idx in $(seq 0 $((CHUNKS - 1))); do
    local where=cpu gpu_env=() log=$log_dir/shard_${idx}.log answers=$answer_dir/${CHUNKS}_${idx}.jsonl
    if [ "$n_gpus" -gt 0 ]; then
      where=CUDA_VISIBLE_DEVICES=${GPULIST[$((idx % n_gpus))]}; gpu_env=(env "$where")
    fi
    wheres+=("$where")
    local cmd=("${gpu_env[@]}" "$PYTHON" -m "llava.eval.$module" "${MODEL_ARGS[@]}" "$@"
               --answers-file "$answers" --num-chunks "$CHUNKS" --chunk-idx "$idx" "${EXTRA_ARGV[@]}")
    { printf '[eval] shard %s (%s):' "$idx" "$where"; printf ' %q' "${cmd[@]}"; echo; } > "$log"
    if [ "$CHUNKS" -eq 1 ]; then  # one shard: in the foreground, on the console and in its log
      echo "[eval] llava.eval.$module: 1 shard ($where), log: $log"
      rc=0
      "${cmd[@]}" 2>&1 | tee -a "$log" || rc=${PIPESTATUS[0]}
      _shard_status "$idx" "$where" "$rc" "$answers" "$log"
      pids+=("rc=$rc")
    else
      echo "[eval]   shard $idx ($where): $log"
      ( rc=0; "${cmd[@]}" >> "$log" 2>&1 || rc=$?
        _shard_status "$idx" "$where" "$rc" "$answers" "$log"; exit "$rc" ) &
      pids+=("$!")
    fi
  done
  # Wait on every shard (when one fails the others go on: their answers files can be resumed).
  local failed=()
  for idx in $(seq 0 $((CHUNKS - 1))); do
    rc=0
    case ${pids[$idx]} in
      rc=*) rc=${pids[$idx]#rc=} ;;
      *) wait "${pids[$idx]}" || rc=$? ;;
    esac
    if [ "$rc" -ne 0 ] || [ ! -f "$answer_dir/${CHUNKS}_${idx}.jsonl" ]; then failed+=("$idx:$rc"); fi
  done
  if [ ${#failed[@]} -gt 0 ]; then
    local entry log
    {
      echo "[eval] FAILED: ${#failed[@]} of $CHUNKS shard(s) of llava.eval.$module; no merge.jsonl written, no scoring"
      for entry in "${failed[@]}"; do
        idx=${entry%%:*}; rc=${entry#*:}; log=$log_dir/shard_${idx}.log
        if [ "$rc" -ne 0 ]; then
          echo "[eval] shard $idx (${wheres[$idx]}) exit code $rc$(_signal_note "$rc"), log: $log"
        else
          echo "[eval] shard $idx (${wheres[$idx]}) exit code 0 but no answers file" \
               "$answer_dir/${CHUNKS}_${idx}.jsonl (an empty chunk: fewer questions than CHUNKS?), log: $log"
        fi
        echo "---- last 20 lines of $log ----"
        tr '\r' '\n' < "$log" | sed '/^[[:space:]]*$/d' | tail -n 20
        echo "----"
      done
      echo "[eval] answers already written are kept: rerunning resumes them"
    } >&2
    exit 1
  fi
  for idx in $(seq 0 $((CHUNKS - 1))); do cat "$answer_dir/${CHUNKS}_${idx}.jsonl"; done > "$merged.tmp"
  mv "$merged.tmp" "$merged"
  echo "[eval] answers: $merged"
}
