"""The CLIP image processor class for this environment: transformers' torchvision backend when torchvision is
installed, else its PIL backend (the same resize, crop and normalisation)."""

from __future__ import annotations

import importlib.util

import transformers


def clip_image_processor_class() -> type:
    """`CLIPImageProcessor`, or `CLIPImageProcessorPil` without torchvision: transformers would fall back to the
    latter anyway, with a warning on every start that a user cannot act on."""
    if importlib.util.find_spec("torchvision") is not None or not hasattr(transformers, "CLIPImageProcessorPil"):
        return transformers.CLIPImageProcessor
    return transformers.CLIPImageProcessorPil


CLIPImageProcessor = clip_image_processor_class()
