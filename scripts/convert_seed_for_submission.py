"""SEED-Bench answers -> upload jsonl, printing accuracy per question type (thin wrapper of `python -m llava.eval.convert seed`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llava.eval.convert import main  # noqa: E402

if __name__ == "__main__":
    main(["seed", *sys.argv[1:]])
