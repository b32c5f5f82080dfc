"""GQA answers -> testdev predictions json for the official GQA eval.py (thin wrapper of `python -m llava.eval.convert gqa`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llava.eval.convert import main  # noqa: E402

if __name__ == "__main__":
    main(["gqa", *sys.argv[1:]])
