"""What only the CLI chat and the web demo need: example images, upload limits, the ask-button's question count,
and user-facing image errors. Model and decoding flags come from `llava.inference.flags`."""

from __future__ import annotations

from pathlib import Path

from llava.mm_utils import ImageLoadError

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"

# Web-demo upload limits (CLIP sees 336 px anyway; bigger images only cost decode time and memory).
MAX_UPLOAD_PIXELS = 4096 * 4096
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_SQ_K = 3
MAX_SQ_K = 6


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
