#!/usr/bin/env bash
# SQ ablation on the quickstart setup: template v1 (no VUSER turns) vs v1_sq (sq_r 0.5), projector mlp2x_gelu vs
# cluster, SEEDS training seeds each, the very same data, foundation models and steps; then one table with
# mean ± sd of VQA accuracy (5 types), POPE F1, caption CIDEr and self-question quality.
#   bash scripts/ablation_sq.sh                      # 12 runs of the full preset (about 8 min each on 2 cores)
#   SEEDS="0" PROJECTORS=mlp2x_gelu bash scripts/ablation_sq.sh
# Environment: ROOT (default outputs/ablation_sq), SEEDS, PROJECTORS, VERSIONS, QUICKSTART_PRESET and every
# quickstart.sh variable (STEPS2, LR2...). Runs already finished (metrics.json present) are skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=${ROOT:-outputs/ablation_sq}
SEEDS=${SEEDS:-"0 1 2"}
PROJECTORS=${PROJECTORS:-"mlp2x_gelu cluster"}
VERSIONS=${VERSIONS:-"v1 v1_sq"}
mkdir -p "$ROOT"
if [[ -z ${SKIP_SETUP:-} ]]; then bash scripts/setup.sh; fi
export SKIP_SETUP=1 DATA=$ROOT/data  # one data set for every run
for projector in $PROJECTORS; do
  for version in $VERSIONS; do
    for seed in $SEEDS; do
      run=$ROOT/$projector-$version-seed$seed
      if [[ -f $run/metrics.json ]]; then echo "[ablation] $run done"; continue; fi
      sq_r=0.5; [[ $version == v1_sq ]] || sq_r=0
      echo "[ablation] $run"
      QUICKSTART_OUT=$run PROJECTOR=$projector VERSION=$version SQ_R=$sq_r SEED=$seed MERGED=$run/merged \
        bash scripts/quickstart.sh > "$ROOT/$projector-$version-seed$seed.log" 2>&1 \
        || { echo "[ablation] $run failed, see $ROOT/$projector-$version-seed$seed.log"; tail -20 "$ROOT/$projector-$version-seed$seed.log"; }
      rm -rf "$run/merged"  # the metrics and answers stay; the model is rebuilt by rerunning
    done
  done
done
"${VENV:-.venv}/bin/python" -m llava.quickstart.report --ablation "$ROOT"
