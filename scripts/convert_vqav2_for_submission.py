"""VQAv2 answers -> EvalAI submission json (thin wrapper of `python -m llava.eval.convert vqav2`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llava.eval.convert import main  # noqa: E402

if __name__ == "__main__":
    main(["vqav2", *sys.argv[1:]])
