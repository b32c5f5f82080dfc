"""Extract the projector of a full checkpoint into a stage-1 style `mm_projector.bin` (+ .safetensors).

    python scripts/extract_mm_projector.py --model-path checkpoints/run-merged --output checkpoints/run-projector
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llava.model import compat


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", required=True, help="a full checkpoint directory")
    parser.add_argument("--output", required=True, help="output directory (mm_projector.bin is written there)")
    args = parser.parse_args(argv)
    files = compat.weight_files(args.model_path)
    if not files:
        raise SystemExit(f"{args.model_path} holds no model weights (is it a LoRA or stage-1 directory?)")
    state = compat.read_tensors(files, lambda k: k.startswith("model.mm_projector."))
    if not state:
        raise SystemExit(f"no model.mm_projector.* tensors in {args.model_path}")
    compat.save_projector({k[len("model.mm_projector.") :]: v for k, v in state.items()}, Path(args.output))
    print(f"{len(state)} projector tensors written to {Path(args.output) / compat.PROJECTOR_FILE}")


if __name__ == "__main__":
    main()
