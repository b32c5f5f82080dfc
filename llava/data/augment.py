"""The `--data_aug` training transform (docs/reference.md#d7-data-augmentation), restored with PIL + torch: crop, flip, RandAugment, CLIP norm."""

from __future__ import annotations

import hashlib
import math
import random

import torch
from PIL import Image, ImageOps

from llava.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

FILL = (128, 128, 128)
MAX_LEVEL = 10.0
AUGMENT_OPS = (
    "Identity", "Brightness", "Sharpness", "Equalize", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate",
)


def augment_rng(seed: int, epoch: int, index: int) -> random.Random:
    """An RNG private to one (seed, epoch, sample index): the same augmentation in any worker, new each epoch."""
    digest = hashlib.sha256(f"llava-aug/{int(seed)}/{int(epoch)}/{int(index)}".encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def processor_geometry(image_processor) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(output side, mean, std) of a CLIP-style image processor."""
    crop = getattr(image_processor, "crop_size", None) or {}
    size = getattr(image_processor, "size", None) or {}
    if isinstance(crop, dict) and crop.get("height"):
        side = int(crop["height"])
    else:
        side = int(size.get("shortest_edge") or size.get("height"))
    mean = tuple(getattr(image_processor, "image_mean", None) or OPENAI_CLIP_MEAN)
    std = tuple(getattr(image_processor, "image_std", None) or OPENAI_CLIP_STD)
    return side, mean, std


def random_resized_crop_box(
    width: int, height: int, rng: random.Random, scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (left, top, right, bottom): 10 tries, then a centre crop."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def _signed(magnitude: float, rng: random.Random) -> float:
    return -magnitude if rng.random() > 0.5 else magnitude


def apply_op(image: Image.Image, name: str, level: float, rng: random.Random) -> Image.Image:
    """One RandAugment op at `level` (of 10), magnitudes as in the reference's randaugment.py."""
    if name == "Identity":
        return image
    if name in ("Brightness", "Sharpness"):
        from PIL import ImageEnhance

        factor = (level / MAX_LEVEL) * 1.8 + 0.1  # 1.0 at level 5: a no-op, as in the reference
        enhancer = ImageEnhance.Brightness if name == "Brightness" else ImageEnhance.Sharpness
        return enhancer(image).enhance(factor)
    if name == "Equalize":
        return ImageOps.equalize(image)
    if name in ("ShearX", "ShearY"):
        s = _signed((level / MAX_LEVEL) * 0.3, rng)
        data = (1, s, 0, 0, 1, 0) if name == "ShearX" else (1, 0, 0, s, 1, 0)
        return image.transform(image.size, Image.AFFINE, data, Image.BILINEAR, fillcolor=FILL)
    if name in ("TranslateX", "TranslateY"):
        t = _signed((level / MAX_LEVEL) * 10.0, rng)
        data = (1, 0, t, 0, 1, 0) if name == "TranslateX" else (1, 0, 0, 0, 1, t)
        return image.transform(image.size, Image.AFFINE, data, Image.BILINEAR, fillcolor=FILL)
    if name == "Rotate":
        return image.rotate(_signed((level / MAX_LEVEL) * 30.0, rng), Image.BILINEAR, fillcolor=FILL)
    raise ValueError(f"unknown augmentation op {name!r}; choose from {AUGMENT_OPS}")


def to_normalized_tensor(image: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """RGB PIL image -> float32 [3, H, W], scaled to 0..1 and normalised."""
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    x = data.view(image.height, image.width, 3).permute(2, 0, 1).float().div_(255.0)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


class TrainAugment:
    """RandomResizedCrop(S, scale 0.5-1, bicubic) -> horizontal flip (p 0.5) -> RandAugment(N=2, M=5, each
    op with p 0.5, fill 128) -> CLIP normalisation. Output [3, S, S], like the processor's."""

    def __init__(self, image_processor, n_ops: int = 2, magnitude: float = 5.0, op_prob: float = 0.5,
                 scale: tuple[float, float] = (0.5, 1.0)):
        self.side, self.mean, self.std = processor_geometry(image_processor)
        self.n_ops, self.magnitude, self.op_prob, self.scale = n_ops, magnitude, op_prob, scale

    def __call__(self, image: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        rng = rng if rng is not None else random.Random()
        image = image.convert("RGB")
        box = random_resized_crop_box(image.width, image.height, rng, self.scale)
        image = image.resize((self.side, self.side), Image.BICUBIC, box=box)
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        for name in [rng.choice(AUGMENT_OPS) for _ in range(self.n_ops)]:  # with replacement
            if rng.random() < self.op_prob:
                image = apply_op(image, name, self.magnitude, rng)
        return to_normalized_tensor(image, self.mean, self.std)
