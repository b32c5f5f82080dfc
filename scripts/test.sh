#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite, integration and 2-process DeepSpeed tests included.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k masks   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EXTRAS=${EXTRAS:-train,eval,serve,test} bash scripts/setup.sh
# The web demo's browser test drives Debian's Chromium through Playwright (no `playwright install`).
if [ ! -x /usr/bin/chromium ] && [ -z "${LLAVA_SKIP_BROWSER:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[test] installing chromium (Debian package) for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "[test] /usr/bin/chromium missing: install the 'chromium' package or set LLAVA_SKIP_BROWSER=1" >&2
  fi
fi
VENV=${VENV:-.venv}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$HOME/.cache/torch_extensions}
"$VENV/bin/ruff" check llava tests scripts
exec "$VENV/bin/python" -m pytest -q "$@"
