"""Defaults and flags shared by the CLI and the web demo: the quickstart checkpoint, model loading, upload limits."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from llava.mm_utils import ImageLoadError

if TYPE_CHECKING:
    from llava.eval.engine import InferenceEngine

# The full merged model that `bash scripts/quickstart.sh` writes; used when no --model-path is given.
QUICKSTART_CHECKPOINT = Path("checkpoints") / "sqllava-tiny"
BUILD_HINT = "run `bash scripts/quickstart.sh` to build it"
REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"

# Web-demo upload limits (CLIP sees 336 px anyway; bigger images only cost decode time and memory).
MAX_UPLOAD_PIXELS = 4096 * 4096
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_SQ_K = 3
MAX_SQ_K = 6


class MissingModelError(RuntimeError):
    """No checkpoint where one was expected; the message says how to get one."""


def _is_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve_model_path(model_path: str | os.PathLike | None) -> str:
    """`model_path` when given (it must exist), else the quickstart checkpoint (relative to the working directory,
    then to the repository)."""
    if model_path is not None:
        path = Path(model_path)
        if not path.exists():
            raise MissingModelError(f"--model-path {path} does not exist")
        return str(path)
    candidates = [Path.cwd() / QUICKSTART_CHECKPOINT, REPO_ROOT / QUICKSTART_CHECKPOINT]
    for path in candidates:
        if _is_checkpoint(path):
            return str(path)
    raise MissingModelError(
        f"no --model-path given and the default model {QUICKSTART_CHECKPOINT} (the quickstart's full merged "
        f"checkpoint) is missing: {BUILD_HINT}, or pass --model-path"
    )


def image_error_message(err: ImageLoadError, name: str) -> str:
    """A sentence for a user about why `name` cannot be used as an image."""
    detail = str(err).split(f"{err.kind}: ", 1)[-1]
    return {
        "missing": f"{name}: no such file",
        "unsupported": f"{name} is not an image (or not in a format that can be read: PNG, JPEG, WebP, GIF, BMP...)",
        "corrupt": f"{name} is a corrupt or truncated image ({detail})",
        "too_large": f"{name} is too large: {detail}",
    }.get(err.kind, f"{name} cannot be used: {detail}")


def example_images() -> list[Path]:
    """The small ShapesWorld PNGs shipped for the demo's examples."""
    return sorted(EXAMPLES_DIR.glob("*.png"))


# ---------------------------------------------------------------------- flags shared by the CLI and the web demo
def add_model_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--model-path", "--model_path", dest="model_path", default=None,
                   help=f"checkpoint directory (default: {QUICKSTART_CHECKPOINT}, built by scripts/quickstart.sh)")
    g.add_argument("--model-base", "--model_base", dest="model_base", default=None,
                   help="base LLM for projector-only and LoRA checkpoints")
    g.add_argument("--lora-pretrain", "--lora_pretrain", dest="lora_pretrain", default=None,
                   help="Vit-lora folder (default: <model-path>/Vit-lora when present)")
    g.add_argument("--conv-mode", "--conv_mode", dest="conv_mode", default=None,
                   help="conversation template (default: the checkpoint's, else v1)")
    g.add_argument("--image-aspect-ratio", dest="image_aspect_ratio", default=None, choices=("pad", "square", "resize"),
                   help="image preprocessing (default: the checkpoint's, as in training)")
    g.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    g.add_argument("--dtype", default=None, choices=("auto", "fp16", "bf16", "fp32"),
                   help="weights dtype (default: fp16 on GPU, fp32 on CPU)")
    quant = g.add_mutually_exclusive_group()
    quant.add_argument("--load-4bit", "--load_4bit", dest="load_4bit", action="store_true")
    quant.add_argument("--load-8bit", "--load_8bit", dest="load_8bit", action="store_true")


def add_decoding_args(parser: argparse.ArgumentParser, *, temperature: float = 0.2, top_p: float | None = None,
                      max_new_tokens: int = 512) -> None:
    g = parser.add_argument_group("decoding")
    g.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    g.add_argument("--top-p", "--top_p", dest="top_p", type=float, default=top_p)
    g.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=int, default=max_new_tokens)
    g.add_argument("--seed", type=int, default=None, help="seed for sampled answers and questions (default: random)")
    g.add_argument("--sq-max-new-tokens", dest="sq_max_new_tokens", type=int, default=300,
                   help="length of each self-asked question (SPEC 7.2)")
    g.add_argument("--sq-description-max-new-tokens", dest="sq_description_max_new_tokens", type=int, default=1024,
                   help="length of the description turn that precedes self-questioning")


def load_engine(args: argparse.Namespace) -> InferenceEngine:
    """The engine for `args`; raises MissingModelError (with the build hint) when there is no model."""
    from llava.eval.engine import InferenceEngine

    model_path = resolve_model_path(args.model_path)
    return InferenceEngine.from_pretrained(
        model_path, args.model_base, lora_pretrain=args.lora_pretrain, load_4bit=args.load_4bit,
        load_8bit=args.load_8bit, device=args.device, dtype=args.dtype, conv_mode=args.conv_mode,
        image_aspect_ratio=args.image_aspect_ratio,
    )


def load_engine_or_exit(args: argparse.Namespace) -> InferenceEngine:
    """`load_engine`, with a one-line message and exit status 2 (no model) or 1 (unloadable) instead of a traceback."""
    try:
        return load_engine(args)
    except MissingModelError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except (OSError, ValueError, KeyError) as err:
        print(f"error: cannot load the model {args.model_path or QUICKSTART_CHECKPOINT}: {err}", file=sys.stderr)
        raise SystemExit(1) from None
