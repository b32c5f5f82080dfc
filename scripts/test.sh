#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite, integration and 2-process DeepSpeed tests included.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k masks   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
VENV=${VENV:-.venv}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/torch_extensions}
"$VENV/bin/ruff" check llava tests scripts
exec "$VENV/bin/python" -m pytest -q "$@"
