"""Entry point of the reference scripts: FlashAttention-2 when flash_attn is importable, else SDPA, then train."""

from __future__ import annotations

import importlib.util
import logging
import sys

from llava.train.arguments import FlagError
from llava.train.train import train


def pick_attn_implementation() -> str:
    import torch

    usable = importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()
    return "flash_attention_2" if usable else "sdpa"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    # An explicit --attn_implementation wins; otherwise choose the fastest one installed.
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    chosen = None if any(a.startswith("--attn_implementation") for a in args) else pick_attn_implementation()
    try:
        train(args, attn_implementation=chosen)
    except FlagError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
