#!/usr/bin/env bash
# The quickstart's verdict across training seeds: runs `scripts/quickstart.sh` for each seed in SEEDS (default
# 0 1 2, THREADS=2) and once more for the first seed with THREADS=1, all on the same data, then writes one table
# (every run, then mean and spread) to $ROOT/seeds.md and prints it. About 13 minutes per run on 2 CPU cores.
#
#   bash scripts/quickstart_seeds.sh
#   SEEDS="0 1" THREADS1=0 ROOT=outputs/seeds bash scripts/quickstart_seeds.sh   # two seeds, no 1-thread run
#
# The first run sets up .venv (scripts/setup.sh) unless SKIP_SETUP=1; the others reuse it. Other quickstart
# variables (QUICKSTART_PRESET, STEPS2, FOCUS_STEPS...) pass through to every run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${SEEDS:=0 1 2}" "${THREADS1:=1}" "${ROOT:=outputs/quickstart-seeds}" "${VENV:=.venv}"
mkdir -p "$ROOT"
read -r -a seeds <<< "$SEEDS"
runs=()
for seed in "${seeds[@]}"; do runs+=("seed$seed:$seed:2"); done
if [[ $THREADS1 == 1 ]]; then runs+=("seed${seeds[0]}-threads1:${seeds[0]}:1"); fi
setup=${SKIP_SETUP:-}
for run in "${runs[@]}"; do
  IFS=: read -r name seed threads <<< "$run"
  echo "[seeds] === $name (SEED=$seed THREADS=$threads)"
  SKIP_SETUP=$setup SEED=$seed THREADS=$threads QUICKSTART_OUT="$ROOT/$name" DATA="$ROOT/data" \
    MERGED="$ROOT/$name/merged" bash scripts/quickstart.sh > "$ROOT/$name.log" 2>&1 \
    || { tail -30 "$ROOT/$name.log"; echo "[seeds] $name failed (log: $ROOT/$name.log)" >&2; exit 1; }
  tail -1 "$ROOT/$name.log"
  setup=1
done
"$VENV/bin/python" -m llava.quickstart.report --seeds "$ROOT"
