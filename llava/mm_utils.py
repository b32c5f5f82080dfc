"""Image loading and preprocessing, image-token expansion, and generation stop criteria."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageFile

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX

# Reference pad colour: the CLIP mean as 0..255 integers.
PAD_COLOR = (122, 116, 104)
ASPECT_RATIOS = ("pad", "square", "resize")
# Images above this many pixels are refused instead of decompressed (PIL's bomb guard, made an error).
MAX_IMAGE_PIXELS = 89_478_485


class ImageLoadError(ValueError):
    """An image could not be used; `kind` is a short reason (missing, corrupt, too_large, unsupported)."""

    def __init__(self, path: str | os.PathLike, kind: str, detail: str):
        self.path, self.kind = str(path), kind
        super().__init__(f"image {self.path!s}: {kind}: {detail}")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (RGBA, LA, P, L, I;16, CMYK...) to 8-bit RGB; transparency goes onto white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of PIL's clipping conversion.
        import numpy as np

        arr = np.asarray(image, dtype=np.float64)
        hi = arr.max() or 1.0
        image = Image.fromarray((arr * (255.0 / hi)).clip(0, 255).astype("uint8"), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def load_image(source: str | os.PathLike | bytes | Image.Image, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an image file (or bytes / PIL image) fully, as RGB, with specific errors for each failure."""
    if isinstance(source, Image.Image):
        return to_rgb(source)
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise ImageLoadError(name, "missing", "no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            stream = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
            with stream:
                image = Image.open(stream)
                if image.width * image.height > max_pixels:
                    raise ImageLoadError(name, "too_large", f"{image.width}x{image.height} exceeds {max_pixels} pixels")
                # Truncated files must fail here, not be padded with grey by PIL.
                ImageFile.LOAD_TRUNCATED_IMAGES = False
                image.load()
    except ImageLoadError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ImageLoadError(name, "too_large", str(err)) from err
    except Image.UnidentifiedImageError as err:
        raise ImageLoadError(name, "unsupported", "not a readable image format") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(name, "corrupt", str(err) or type(err).__name__) from err
    return to_rgb(image)


def expand2square(image: Image.Image, background_color: tuple[int, int, int] = PAD_COLOR) -> Image.Image:
    """Pad to a square canvas of the background colour, centring the image (reference "pad")."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background_color)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def _processor_side(image_processor) -> int:
    crop = getattr(image_processor, "crop_size", None) or {}
    if isinstance(crop, dict) and "height" in crop:
        return int(crop["height"])
    size = getattr(image_processor, "size", None) or {}
    return int(size.get("shortest_edge") or size.get("height"))


def process_images(
    images: Sequence[Image.Image], image_processor, image_aspect_ratio: str | None = "square"
) -> torch.Tensor:
    """Preprocess as the model was trained: "pad" to square with the CLIP mean, "square" = the processor's
    resize + centre crop, "resize" = stretch to the processor's input size. Returns [N, 3, S, S]."""
    mode = image_aspect_ratio or "square"
    if mode not in ASPECT_RATIOS:
        raise ValueError(f"image_aspect_ratio must be one of {ASPECT_RATIOS}, got {mode!r}")
    prepared = []
    for image in images:
        image = to_rgb(image)
        if mode == "pad":
            mean = getattr(image_processor, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
            image = expand2square(image, tuple(int(x * 255) for x in mean))
        elif mode == "resize":
            side = _processor_side(image_processor)
            image = image.resize((side, side), Image.BICUBIC)
        prepared.append(image)
    return image_processor(prepared, return_tensors="pt")["pixel_values"]


def expand_image_tokens(
    input_ids: Sequence[int], labels: Sequence[int] | None, num_image_tokens: int
) -> tuple[list[int], list[int] | None]:
    """Replace each single IMAGE_TOKEN_INDEX sentinel by a run of `num_image_tokens` sentinels (labels ignored),
    so that sequence positions equal embedding positions before padding."""
    ids_out: list[int] = []
    labels_out: list[int] | None = [] if labels is not None else None
    for i, token in enumerate(input_ids):
        if token == IMAGE_TOKEN_INDEX:
            ids_out.extend([IMAGE_TOKEN_INDEX] * num_image_tokens)
            if labels_out is not None:
                labels_out.extend([IGNORE_INDEX] * num_image_tokens)
        else:
            ids_out.append(int(token))
            if labels_out is not None:
                labels_out.append(int(labels[i]))
    return ids_out, labels_out


def pad_sequences(
    sequences: Sequence[Sequence[int]], pad_value: int, side: str = "right"
) -> torch.Tensor:
    """Stack variable-length integer sequences into a [B, T] tensor padded on `side`."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    width = max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), width), pad_value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        if not len(seq):
            continue
        t = torch.as_tensor(list(seq), dtype=torch.long)
        if side == "right":
            out[row, : len(seq)] = t
        else:
            out[row, width - len(seq) :] = t
    return out


def tokenizer_image_token(prompt, tokenizer, image_token_index=IMAGE_TOKEN_INDEX, return_tensors=None):
    """Reference image-aware tokenisation; implemented in llava.data.tokenization."""
    from llava.data.tokenization import tokenizer_image_token as _impl

    return _impl(prompt, tokenizer, image_token_index=image_token_index, return_tensors=return_tensors)


class KeywordsStoppingCriteria:
    """Stop a batch row once its generated text ends with any keyword (e.g. a template's stop string)."""

    def __init__(self, keywords: Sequence[str], tokenizer, prompt_length: int = 0):
        self.keywords = [k for k in keywords if k]
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length

    def __call__(self, output_ids: torch.Tensor, scores=None, **kwargs) -> torch.BoolTensor:
        done = []
        for row in output_ids:
            tail = self.tokenizer.decode(row[self.prompt_length :][-16:], skip_special_tokens=False)
            done.append(any(tail.endswith(k) or k in tail for k in self.keywords))
        return torch.tensor(done, dtype=torch.bool, device=output_ids.device)
