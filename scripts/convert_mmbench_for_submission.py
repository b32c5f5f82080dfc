"""MMBench / MMBench-CN answers -> xlsx for the OpenCompass server (thin wrapper of `python -m llava.eval.convert mmbench`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llava.eval.convert import main  # noqa: E402

if __name__ == "__main__":
    main(["mmbench", *sys.argv[1:]])
