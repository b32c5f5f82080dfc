"""Rendering a `Scene` to a PIL image: supersampled polygons, box-downsampled so 16 px shapes stay readable."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .scene import COLOR_RGB, Scene, SceneObject, WorldConfig


def object_center(obj: SceneObject, config: WorldConfig) -> tuple[float, float]:
    """Centre of an object in output-image pixels (x, y)."""
    cell = config.cell
    x = config.grid_offset + (obj.col + 0.5 + obj.dx) * cell
    y = config.grid_offset + (obj.row + 0.5 + obj.dy) * cell
    return x, y


def object_extent(obj: SceneObject, config: WorldConfig) -> float:
    """Side of the object's bounding box in output pixels."""
    return config.cell * (config.large_scale if obj.size == "large" else config.small_scale)


def _regular(cx: float, cy: float, r: float, n: int, phase: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(phase + 2 * math.pi * k / n), cy + r * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)]


def shape_polygon(shape: str, cx: float, cy: float, d: float) -> list[tuple[float, float]]:
    """Outline of a shape whose bounding box is about d x d, centred at (cx, cy). Circles are 64-gons."""
    h = d / 2
    if shape == "circle":
        return _regular(cx, cy, h, 64, 0.0)
    if shape == "square":
        s = h * 0.85  # a full-box square would look much heavier than the other shapes
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":  # apex up, bounding box centred on (cx, cy)
        return [(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "diamond":
        return [(cx, cy - h), (cx + h * 0.8, cy), (cx, cy + h), (cx - h * 0.8, cy)]
    if shape == "star":  # five points; a fat inner radius keeps small stars from dissolving into noise
        outer = _regular(cx, cy + h * 0.1, h * 1.05, 5, -math.pi / 2)
        inner = _regular(cx, cy + h * 0.1, h * 0.5, 5, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    raise ValueError(f"unknown shape {shape!r}")


def render_scene(scene: Scene, config: WorldConfig | None = None) -> Image.Image:
    """Draw the scene at `supersample` x resolution and box-filter it down to `image_size` (RGB)."""
    config = config or WorldConfig()
    s = config.supersample
    big = Image.new("RGB", (config.image_size * s, config.image_size * s), config.background)
    draw = ImageDraw.Draw(big)
    for obj in scene.objects:
        cx, cy = object_center(obj, config)
        poly = shape_polygon(obj.shape, cx * s, cy * s, object_extent(obj, config) * s)
        draw.polygon(poly, fill=COLOR_RGB[obj.color])
    image = big.resize((config.image_size, config.image_size), Image.Resampling.BOX) if s > 1 else big
    if config.noise > 0:
        rng = np.random.default_rng(scene.seed)
        arr = np.asarray(image, dtype=np.float32)
        arr = arr + rng.normal(0.0, config.noise, size=arr.shape).astype(np.float32)
        image = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
    return image
