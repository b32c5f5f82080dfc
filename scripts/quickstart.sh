#!/usr/bin/env bash
# The one-command CPU quickstart: set up, make ShapesWorld data, take the shipped tiny foundation models
# (checkpoints/tiny-foundation), train stage 1 (pretrain.sh) and stage 2 (lora_instruct_tuning.sh) through the real
# entry points, merge, run the focus phase (a low-lr short-answer fine-tune with stage-2 replay) into
# checkpoints/sqllava-tiny (the CLI / web demo default), run the eval entry points on held-out ShapesWorld sets, a
# self-questioning demo and the web demo's own question endpoint, and write a report with a metrics table.
#
#   bash scripts/quickstart.sh                         # 13-15 minutes on 2 CPU cores
#   QUICKSTART_PRESET=ci bash scripts/quickstart.sh    # a shortened run (CI: tests/test_quickstart.py)
#
# Environment: QUICKSTART_PRESET (full | ci), QUICKSTART_OUT (default outputs/quickstart[-ci]), SKIP_SETUP=1 (use
# the existing .venv), VENV, FOUNDATION (shipped: checkpoints/tiny-foundation | rebuild: build or reuse a set in
# FOUNDATION_ROOT, default checkpoints/tiny, from FOUNDATION_PRESET and FOUNDATION_SET), MERGED (where the merged model is written and
# evaluated from; default checkpoints/sqllava-tiny, the CLI/demo default, or $OUT/merged for ci), PROJECTOR_TYPE
# (mlp2x_gelu | cluster), VERSION (v1_sq | v1), SEED, THREADS, STEPS1, STEPS2, FOCUS_STEPS (0: no focus phase), FOCUS_LR,
# FOCUS_OTHER, FOCUS_PROBE, FOCUS_REPLAY, FOCUS_EXTRA, DEMO_QUESTIONS=0 (skip the demo endpoint check) and the other preset values can
# be overridden one by one; TRAIN_EXTRA / STAGE2_EXTRA: more flags for both stages / lora_instruct_tuning.sh;
# INSTRUCT_MIX: the stage-2 record kinds, a name (qa-heavy: the full default; description-heavy: the ci preset's)
# or weights, e.g. "qa=0.8,desc_qa=0.1,mc=0.04,detail=0.03,caption=0.03";
# DATA_ONLY=1 stops after the data.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
T_START=$(date +%s.%N)

PRESET=${QUICKSTART_PRESET:-full}
case $PRESET in
  full)
    : "${N_PRETRAIN:=4000}" "${N_INSTRUCT:=8000}" "${N_EVAL:=300}" "${N_SQ_IMAGES:=50}"
    : "${STEPS1:=400}" "${STEPS2:=1000}" "${BATCH1:=32}" "${BATCH2:=32}" "${FOCUS_STEPS:=800}" ;;
  ci)  # less data and fewer steps; the description-heavy mix teaches attributes faster in few stage-2 steps
    : "${N_PRETRAIN:=2000}" "${N_INSTRUCT:=3000}" "${N_EVAL:=200}" "${N_SQ_IMAGES:=20}"
    : "${STEPS1:=300}" "${STEPS2:=500}" "${BATCH1:=32}" "${BATCH2:=32}" "${FOCUS_STEPS:=200}"
    : "${INSTRUCT_MIX=description-heavy}" "${DEMO_QUESTIONS:=0}" ;;
  *) echo "unknown QUICKSTART_PRESET=$PRESET (full | ci)" >&2; exit 2 ;;
esac
: "${OUT:=${QUICKSTART_OUT:-outputs/quickstart$([[ $PRESET == full ]] || echo "-$PRESET")}}"
: "${VENV:=.venv}" "${FOUNDATION_ROOT:=checkpoints/tiny}" "${SEED:=0}" "${DATA_SEED:=0}" "${THREADS:=2}"
: "${DATA:=$OUT/data}" "${FOUNDATION:=shipped}" "${FOUNDATION_PRESET:=full}"
: "${FOCUS_LR:=1e-4}" "${FOCUS_OTHER:=0.3}" "${FOCUS_PROBE:=0.75}" "${FOCUS_REPLAY:=0.25}" "${DEMO_QUESTIONS:=1}"
: "${PROJECTOR_TYPE:=mlp2x_gelu}" "${VERSION:=v1_sq}" "${SQ_R:=0.5}"
: "${LR1:=2e-3}" "${LR2:=1e-3}" "${PROJECTOR_LR2:=1e-3}" "${LORA_R:=64}" "${LORA_ALPHA:=128}"
: "${MERGED:=$([[ $PRESET == full ]] && echo checkpoints/sqllava-tiny || echo "$OUT/merged")}"
# Benchmarks use the training template (the reference evaluates with v1 after v1_sq training:
# docs/reference.md#d10-evaluation-template).
: "${EVAL_CONV:=$VERSION}" "${EVAL_BATCH:=64}"

if [[ -z ${SKIP_SETUP:-} ]]; then bash scripts/setup.sh; fi
PY=$VENV/bin/python
export PYTHON=$PY HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
mkdir -p "$OUT"
TIMINGS=$OUT/timings.json
echo "{}" > "$TIMINGS"
phase_start() { PHASE=$1; T0=$(date +%s.%N); echo "[quickstart] === $PHASE"; }
phase_end() {
  "$PY" - "$TIMINGS" "$PHASE" "$T0" <<'EOF'
import json, sys, time
path, name, t0 = sys.argv[1], sys.argv[2], float(sys.argv[3])
d = json.load(open(path)); d[name + "_s"] = round(time.time() - t0, 1)
json.dump(d, open(path, "w"), indent=1)
print(f"[quickstart]     {name} took {d[name + '_s']:.0f} s")
EOF
}
# A long phase: its whole output goes to LOG, its progress lines (steps, loss, elapsed, remaining) to the console.
with_progress() {
  local log=$1; shift
  if ! "$@" 2>&1 | tee "$log" | sed -un 's/^\[progress\] /[quickstart]     /p'; then tail -40 "$log"; exit 1; fi
}
T_SETUP=$(date +%s.%N)

# ---------------------------------------------------------------------------------------------- data
phase_start data
# The data is remade when its settings or the generator's code change; DATA_FIXED=1 (the ablation's runs, which
# share one DATA folder) uses it as it is.
GENERATOR=(llava/shapesworld/{scene,render,grammar,language,export}.py)
if [[ -n ${DATA_FIXED:-} && ! -f $DATA/world.json ]]; then
  echo "[quickstart] DATA_FIXED=1 but $DATA holds no ShapesWorld export (world.json)" >&2; exit 2
fi
STAMP="seed=$DATA_SEED pretrain=$N_PRETRAIN instruct=$N_INSTRUCT eval=$N_EVAL size=48 mix=${INSTRUCT_MIX:-} $(cat "${GENERATOR[@]}" | cksum)"
if [[ -z ${DATA_FIXED:-} && "$(cat "$DATA/.quickstart" 2>/dev/null)" != "$STAMP" ]]; then
  rm -rf "$DATA"
  "$PY" -m llava.shapesworld --out "$DATA" --seed "$DATA_SEED" --n-pretrain "$N_PRETRAIN" \
    --n-instruct "$N_INSTRUCT" --n-eval "$N_EVAL" --image-size 48 ${INSTRUCT_MIX:+--instruct-mix "$INSTRUCT_MIX"} \
    > "$OUT/data.log"
  echo "$STAMP" > "$DATA/.quickstart"
fi
# LLaVA-1.5's POPE questions end with the short-answer instruction; copy the ShapesWorld POPE set with it.
"$PY" -m llava.quickstart.evaluate --prepare-pope "$DATA/eval/pope" "$OUT/pope"
if [[ -n ${DATA_ONLY:-} ]]; then echo "[quickstart] data in $DATA"; exit 0; fi
phase_end

# ---------------------------------------------------------------------------------------------- foundation
phase_start foundation
case $FOUNDATION in
  # the shipped set, as a real run takes downloaded CLIP and Vicuna (its hashes are checked)
  shipped) "$PY" -m llava.quickstart.foundation --verify checkpoints/tiny-foundation --shell > "$OUT/foundation.env" ;;
  # shellcheck disable=SC2086  # FOUNDATION_SET: space-separated FIELD=VALUE overrides of the preset
  rebuild) "$PY" -m llava.quickstart.foundation --root "$FOUNDATION_ROOT" --preset "$FOUNDATION_PRESET" \
             --threads "$THREADS" --shell ${FOUNDATION_SET:+--set $FOUNDATION_SET} > "$OUT/foundation.env" ;;
  *) echo "unknown FOUNDATION=$FOUNDATION (shipped | rebuild)" >&2; exit 2 ;;
esac
# shellcheck disable=SC1091
source "$OUT/foundation.env"
cp "$TINY_ROOT/foundation.json" "$OUT/foundation.json"
phase_end

# ---------------------------------------------------------------------------------------------- training
# The CLIP tower stays frozen: the scripts' ViT LoRA is kept (same code path and files as the 7B recipe) at rank 1
# with learning rate 0, i.e. an exact no-op (its B matrices start at zero). Gradient checkpointing off (CPU speed),
# LoRA dropout 0 (its masks cost ~40% of a tiny model's forward), only the final model saved. GROUP_BY_LENGTH=1
# batches stage-2 samples of similar length (HF's sampler; ~25% faster, but worse here: homogeneous batches).
COMMON=(--mm_projector_type "$PROJECTOR_TYPE" --gradient_checkpointing False --save_strategy no --logging_steps 5
        --model_max_length 512 --seed "$SEED" --dataloader_num_workers 0 --disable_tqdm True
        --vit_lora_enable True --lora_r_vit 1 --lora_alpha_vit 1 --lora_dropout_vit 0 --vision_tower_lr 0
        --mm_cluster_centers 4)
# shellcheck disable=SC2206  # TRAIN_EXTRA: space-separated flags for both stages
COMMON+=(${TRAIN_EXTRA:-})
STAGE2_ARGS=()
if [[ -n ${GROUP_BY_LENGTH:-} ]]; then STAGE2_ARGS=(--group_by_modality_length False --train_sampling_strategy group_by_length); fi
# shellcheck disable=SC2206  # STAGE2_EXTRA: space-separated flags for stage 2 only
STAGE2_ARGS+=(${STAGE2_EXTRA:-})
# REUSE_TRAINING=1 keeps existing stage outputs of this OUT (re-evaluate, re-report).
if [[ -n ${REUSE_TRAINING:-} && -f $OUT/stage2/adapter_config.json ]]; then
  echo "[quickstart] reusing $OUT/stage1 and $OUT/stage2"
else
phase_start stage1
DEVICE=cpu NUM_GPUS=1 DS_CONFIG=none RESUME=0 MODEL=$TINY_LM VISION_TOWER=$TINY_VISION_TOWER \
  DATA_PATH=$DATA/pretrain.json IMAGE_FOLDER=$DATA/images OUTPUT_DIR=$OUT/stage1 \
  PER_DEVICE_BATCH=$BATCH1 GLOBAL_BATCH=$BATCH1 MASTER_PORT=$((29500 + RANDOM % 1000)) \
  with_progress "$OUT/stage1.log" bash pretrain.sh "${COMMON[@]}" --max_steps "$STEPS1" --learning_rate "$LR1"
phase_end

phase_start stage2
DEVICE=cpu NUM_GPUS=1 DS_CONFIG=none RESUME=0 MODEL=$TINY_LM VISION_TOWER=$TINY_VISION_TOWER \
  DATA_PATH=$DATA/instruct.json IMAGE_FOLDER=$DATA/images OUTPUT_DIR=$OUT/stage2 \
  PRETRAIN_DIR=$OUT/stage1 PROJECTOR=$OUT/stage1/mm_projector.bin VIT_LORA=$OUT/stage1/Vit-lora \
  PER_DEVICE_BATCH=$BATCH2 GLOBAL_BATCH=$BATCH2 MASTER_PORT=$((29500 + RANDOM % 1000)) \
  with_progress "$OUT/stage2.log" bash lora_instruct_tuning.sh "${COMMON[@]}" --version "$VERSION" --sq_r "$SQ_R" --lora_dropout 0 \
  "${STAGE2_ARGS[@]}" \
  --max_steps "$STEPS2" --learning_rate "$LR2" --mm_projector_lr "$PROJECTOR_LR2" \
  --lora_r "$LORA_R" --lora_alpha "$LORA_ALPHA"
phase_end
fi

phase_start merge
STAGE2_MERGED=$([[ $FOCUS_STEPS == 0 ]] && echo "$MERGED" || echo "$OUT/stage2-merged")
"$PY" scripts/merge_lora_weights.py --model-path "$OUT/stage2" --model-base "$TINY_LM" \
  --save-model-path "$STAGE2_MERGED" > "$OUT/merge.log" 2>&1 || { tail -20 "$OUT/merge.log"; exit 1; }
phase_end

if [[ $FOCUS_STEPS != 0 ]]; then
phase_start focus
# The merged stage-2 model trained further on one-question short answers (existence, probes, the other types) at a
# low learning rate, with a quarter of each batch replaying stage-2 records (v1_sq): docs/shapesworld.md, "The focus
# phase".
# shellcheck disable=SC2086  # FOCUS_EXTRA: space-separated flags
with_progress "$OUT/focus.log" "$PY" -m llava.quickstart.focus --model "$STAGE2_MERGED" --data "$DATA" \
  --steps "$FOCUS_STEPS" --lr "$FOCUS_LR" --other "$FOCUS_OTHER" --probe "$FOCUS_PROBE" --replay "$FOCUS_REPLAY" --sq-r "$SQ_R" \
  --threads "$THREADS" --seed "$SEED" --save "$MERGED" ${FOCUS_EXTRA:-}
phase_end
fi

# ---------------------------------------------------------------------------------------------- evaluation
ANS=$OUT/answers
mkdir -p "$ANS"
EVAL=(--model-path "$MERGED" --image-folder "$DATA/images" --batch-size "$EVAL_BATCH" --temperature 0
      --overwrite --no-progress --num-workers 1)
# the entry points' own output goes to a log; it is shown when one fails
logged() { local log=$1; shift; "$@" >> "$log" 2>&1 || { tail -30 "$log"; exit 1; }; }
phase_start eval
logged "$OUT/eval.log" "$PY" -m llava.eval.model_vqa_loader "${EVAL[@]}" --conv-mode "$EVAL_CONV" --max_new_tokens 8 \
  --question-file "$DATA/eval/vqa/questions.jsonl" --answers-file "$ANS/vqa.jsonl"
logged "$OUT/eval.log" "$PY" -m llava.eval.model_vqa_loader "${EVAL[@]}" --conv-mode "$EVAL_CONV" --max_new_tokens 4 \
  --question-file "$OUT/pope/questions.jsonl" --answers-file "$ANS/pope.jsonl"
logged "$OUT/eval.log" "$PY" -m llava.eval.model_cap "${EVAL[@]}" --conv-mode "$EVAL_CONV" --max_new_tokens 48 \
  --question-file "$DATA/eval/caption/questions.jsonl" --answers-file "$ANS/caption.jsonl"
logged "$OUT/eval.log" "$PY" -m llava.eval.model_vqa_mmbench "${EVAL[@]}" --conv-mode "$EVAL_CONV" --max_new_tokens 4 \
  --single-pred-prompt --question-file "$DATA/eval/mmbench/dev.tsv" --answers-file "$ANS/mmbench.jsonl"
phase_end

phase_start self_questioning
# Describe the image, then sample questions from the "...</s>VUSER:" cue (v1_sq template; docs/reference.md#question-generation).
# Questions are sampled as the reference's model_vqa_loader --sq path does (temperature 1, top-p 0.65, top-k 50).
logged "$OUT/self_questioning.log" "$PY" -m llava.eval.visual_sq --model-path "$MERGED" --image-folder "$DATA/images" \
  --question-file "$DATA/eval/caption/questions.jsonl" --end "$N_SQ_IMAGES" --n_shot 3 \
  --temperature 1.0 --top_p 0.65 --top_k 50 --max_new_tokens 40 --description_max_new_tokens 80 \
  --batch-size "$EVAL_BATCH" --seed "$SEED" --overwrite --no-progress --num-workers 1 --answers-file "$ANS/sq.jsonl" \
  --scenes "$DATA/scenes.jsonl"
phase_end

if [[ $DEMO_QUESTIONS != 0 ]]; then
phase_start demo_questions
# The web demo's own question path: the server started as a user would, its /ask_questions endpoint called on the
# same held-out images, what it returns judged as above.
logged "$OUT/demo_questions.log" "$PY" -m llava.quickstart.demo_questions --model-path "$MERGED" --data "$DATA" \
  --n "$N_SQ_IMAGES" --k 3 --seed "$SEED" --threads "$THREADS" --out "$ANS/demo_sq.jsonl"
phase_end
fi

# ---------------------------------------------------------------------------------------------- report
"$PY" - "$TIMINGS" "$T_START" "$T_SETUP" "$OUT/settings.json" <<EOF
import json, sys
path, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
d = json.load(open(path)); d = {"setup_s": round(t1 - t0, 1), **d}
json.dump(d, open(path, "w"), indent=1)
settings = dict(preset="$PRESET", projector="$PROJECTOR_TYPE", version="$VERSION", sq_r=$SQ_R, steps1=$STEPS1,
                steps2=$STEPS2, focus_steps=$FOCUS_STEPS, focus_lr=$FOCUS_LR, focus_other=$FOCUS_OTHER, focus_probe=$FOCUS_PROBE,
                focus_replay=$FOCUS_REPLAY, foundation_source="$FOUNDATION", batch1=$BATCH1, batch2=$BATCH2, lr1=$LR1, lr2=$LR2, projector_lr2=$PROJECTOR_LR2,
                lora_r=$LORA_R, lora_alpha=$LORA_ALPHA, n_pretrain=$N_PRETRAIN, n_instruct=$N_INSTRUCT,
                n_eval=$N_EVAL, eval_conv="$EVAL_CONV", seed=$SEED, threads=$THREADS, data_seed=$DATA_SEED, data="$DATA",
                foundation="$TINY_ROOT", merged="$MERGED")
json.dump(settings, open(sys.argv[4], "w"), indent=1)
EOF
phase_start scoring
"$PY" -m llava.quickstart.evaluate --data "$DATA" --answers "$ANS" --pope "$OUT/pope" \
  --timings "$TIMINGS" --out "$OUT/metrics.json" --quiet
phase_end
"$PY" -m llava.quickstart.report --run "$OUT" --started-at "$T_START" --print-table
echo "[quickstart] done; model for the CLI / web demo: $MERGED; report: $OUT/report.md"
