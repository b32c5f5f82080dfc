#!/usr/bin/env bash
# Set up a virtual environment with llava and its extras.
#   bash scripts/setup.sh                 # .venv with train,eval,serve,test extras
#   VENV=/path EXTRAS=train,eval bash scripts/setup.sh
# Machines without an NVIDIA GPU get the CPU build of torch (TORCH_SPEC, default torch==2.13.0) installed
# first, so that peft/accelerate/deepspeed do not pull a multi-GB CUDA torch. GPU machines keep pip's
# normal resolution (or set TORCH_SPEC yourself, e.g. TORCH_SPEC="torch==2.7.1").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-train,eval,serve,test}
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# pip byte-compiles every installed file on one core; the environment is compiled once afterwards on all cores
# instead (71 s -> 54 s on 2 cores; the stamp file marks it done). The .pyc files matter where
# PYTHONDONTWRITEBYTECODE is set: without them every process recompiles what it imports (+6 s per process).
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-compile)

if [ -z "${TORCH_SPEC:-}" ] && ! command -v nvidia-smi >/dev/null 2>&1; then
  TORCH_SPEC="torch==2.13.0"
fi
if [ -n "${TORCH_SPEC:-}" ] && ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing $TORCH_SPEC"
  "${PIP[@]}" "$TORCH_SPEC"
fi

echo "[setup] installing llava[$EXTRAS]"
"${PIP[@]}" -e ".[$EXTRAS]"
if [ ! -f "$VENV/.compiled" ]; then
  # as pip does, a file that does not compile (another Python's syntax in a package's data) is left as source
  "$VENV/bin/python" -m compileall -q -j 0 "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    > /dev/null || true
  touch "$VENV/.compiled"
fi
"$VENV/bin/python" -c "import torch, transformers, llava; print(f'[setup] ok: torch {torch.__version__}, transformers {transformers.__version__}')"
