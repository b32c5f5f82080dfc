#!/usr/bin/env bash
# SQ ablation on the quickstart setup: template v1 (no VUSER turns) vs v1_sq (sq_r 0.5), projector mlp2x_gelu vs
# cluster, SEEDS training seeds each, the very same data, foundation models and steps; then one table with
# mean ± sd of VQA accuracy (5 types), POPE F1, caption CIDEr and self-question quality.
#   bash scripts/ablation_sq.sh                      # 12 runs, two at a time (about an hour on 2 cores)
#   SEEDS="0" PROJECTORS=mlp2x_gelu bash scripts/ablation_sq.sh
# Environment: ROOT (default outputs/ablation_sq), SEEDS, PROJECTORS, VERSIONS, PARALLEL (default 2: that many
# projector types train at once, 1 thread each; 1 = one run at a time), QUICKSTART_PRESET and every quickstart.sh
# variable. Stage 2 runs 700 steps by default (STEPS2; the quickstart's 800, then its focus phase). Finished runs (metrics.json) are
# skipped, so an interrupted ablation resumes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=${ROOT:-outputs/ablation_sq}
SEEDS=${SEEDS:-"0 1 2"}
PROJECTORS=${PROJECTORS:-"mlp2x_gelu cluster"}
VERSIONS=${VERSIONS:-"v1 v1_sq"}
PARALLEL=${PARALLEL:-2}
export STEPS2=${STEPS2:-700}
mkdir -p "$ROOT"
if [[ -z ${SKIP_SETUP:-} ]]; then bash scripts/setup.sh; fi
export SKIP_SETUP=1 DATA=$ROOT/data  # one data set for every run, made once before any run starts
QUICKSTART_OUT=$ROOT/data-run DATA_ONLY=1 bash scripts/quickstart.sh > "$ROOT/data.log" 2>&1 \
  || { tail -20 "$ROOT/data.log"; exit 1; }
export DATA_FIXED=1  # no run remakes the data under the others (editing the generator mid-ablation)

runs_of() {  # every run of one projector type, one after the other
  local projector=$1 version seed run sq_r
  for seed in $SEEDS; do  # seed-major: an interrupted ablation still holds paired v1 / v1_sq runs
    for version in $VERSIONS; do
      run=$ROOT/$projector-$version-seed$seed
      if [[ -f $run/metrics.json ]]; then echo "[ablation] $run done"; continue; fi
      sq_r=0.5; [[ $version == v1_sq ]] || sq_r=0
      echo "[ablation] $run"
      QUICKSTART_OUT=$run PROJECTOR_TYPE=$projector VERSION=$version SQ_R=$sq_r SEED=$seed MERGED=$run/merged \
        bash scripts/quickstart.sh > "$run.log" 2>&1 \
        || { echo "[ablation] $run failed, see $run.log"; tail -20 "$run.log"; }
      rm -rf "$run/merged"  # the metrics and answers stay; the model is rebuilt by rerunning
    done
  done
}

if (( PARALLEL > 1 )); then
  export THREADS=1
  pids=()
  for projector in $PROJECTORS; do
    while (( $(jobs -rp | wc -l) >= PARALLEL )); do sleep 5; done
    runs_of "$projector" & pids+=($!)
  done
  wait "${pids[@]}"
else
  for projector in $PROJECTORS; do runs_of "$projector"; done
fi
"${VENV:-.venv}/bin/python" -m llava.quickstart.report --ablation "$ROOT"
