#!/usr/bin/env bash
# One prepared GPU check (scripts/bench/gpu_check.py says what it runs): no arguments needed on a CUDA machine.
#   bash scripts/bench/gpu_check.sh                      # writes gpu_check_out/ (or $OUT when set)
#   bash scripts/bench/gpu_check.sh /tmp/check --parts env,tests,train
#   bash scripts/bench/gpu_check.sh /tmp/smoke --cpu-smoke   # tiny shapes on the CPU, as CI runs it
# Uses .venv/bin/python when there is one, else python3 (a machine's own torch, with this checkout on PYTHONPATH).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" scripts/bench/gpu_check.py "$@"
