"""MME answers -> per-category txt files for eval_tool/calculation.py (thin wrapper of `python -m llava.eval.convert mme`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llava.eval.convert import main  # noqa: E402

if __name__ == "__main__":
    main(["mme", *sys.argv[1:]])
