#!/usr/bin/env bash
# Set up a virtual environment with llava and its extras, on a GPU node or a CPU machine alike.
#   bash scripts/setup.sh                       # .venv: torch, then llava[train,eval,serve]
#   FLASH_ATTN=1 bash scripts/setup.sh          # ... and flash-attn, built against that torch
#   EXTRAS=train,eval,serve,test bash scripts/setup.sh   # + the test tools (scripts/test.sh does this)
#   VENV=/path PYTHON=python3.11 TORCH_SPEC="torch==2.13.0" TORCH_INDEX_URL=... bash scripts/setup.sh
#
# torch is pinned to the same version on every machine (TORCH_SPEC), so a login node and a compute node that share
# a venv or a lock file agree. Where `nvidia-smi` finds a GPU, pip's Linux wheel of that version is a CUDA build;
# an old driver needs an older CUDA build, e.g. TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126. Machines
# without a GPU get the CPU build where the package index offers it (the test machines keep one on local disk).
# flash-attn compiles against the installed torch, so it is installed last and without pip's build isolation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-train,eval,serve}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
FLASH_SPEC=${FLASH_SPEC:-flash-attn>=2.7,<3}

GPUS=""
if command -v nvidia-smi >/dev/null 2>&1; then
  GPUS=$(nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader 2>/dev/null || true)
fi
if [ -n "$GPUS" ]; then
  echo "[setup] GPU machine: $(echo "$GPUS" | wc -l) x $(echo "$GPUS" | head -1)  (name, compute capability, driver)"
else
  echo "[setup] no GPU found (nvidia-smi): CPU setup"
fi
if [ -n "${FLASH_ATTN:-}" ] && [ "${FLASH_ATTN}" != 0 ] && [ -z "$GPUS" ]; then
  echo "[setup] FLASH_ATTN=1 needs a CUDA GPU (and its toolkit when no prebuilt wheel fits); run this on a GPU node" >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
# pip byte-compiles every installed file on one core; the environment is compiled once afterwards on all cores
# instead (71 s -> 54 s on 2 cores; the stamp file marks it done). The .pyc files matter where
# PYTHONDONTWRITEBYTECODE is set: without them every process recompiles what it imports (+6 s per process).
PIP=("$PY" -m pip install --disable-pip-version-check -q --no-compile)

# torch first: peft/accelerate/deepspeed would otherwise pull whatever torch pip resolves for them.
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing $TORCH_SPEC${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
  "${PIP[@]}" "$TORCH_SPEC" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
if [ -n "$GPUS" ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "[setup] warning: this machine has a GPU but $("$PY" -c 'import torch; print("torch", torch.__version__, "(CUDA", torch.version.cuda, end=")")') cannot use it." >&2
  echo "[setup]   reinstall a CUDA build that fits the driver, e.g.:" >&2
  echo "[setup]   $PY -m pip install --force-reinstall '$TORCH_SPEC' --index-url https://download.pytorch.org/whl/cu126" >&2
fi

echo "[setup] installing llava[$EXTRAS]"
"${PIP[@]}" -e ".[$EXTRAS]"

if [ -n "${FLASH_ATTN:-}" ] && [ "${FLASH_ATTN}" != 0 ]; then
  echo "[setup] installing $FLASH_SPEC against $("$PY" -c 'import torch; print("torch", torch.__version__)') (--no-build-isolation; a source build takes a while)"
  "${PIP[@]}" packaging ninja wheel
  MAX_JOBS=${MAX_JOBS:-8} "${PIP[@]}" --no-build-isolation "$FLASH_SPEC"
fi

if [ ! -f "$VENV/.compiled" ]; then
  # as pip does, a file that does not compile (another Python's syntax in a package's data) is left as source
  "$PY" -m compileall -q -j 0 "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    > /dev/null || true
  touch "$VENV/.compiled"
fi
"$PY" - <<'EOF'
import importlib.metadata as md

import torch

names = ("transformers", "peft", "accelerate", "deepspeed", "flash-attn", "gradio")
found = []
for name in names:
    try:
        found.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        pass
cuda = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s) usable" if torch.version.cuda else "CPU build"
print(f"[setup] ok: torch {torch.__version__} ({cuda}), " + ", ".join(found))
EOF
