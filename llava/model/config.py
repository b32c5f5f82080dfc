"""The flat LLaVA config: the language model's own config plus `mm_*` fields, read from any reference variant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import AutoConfig, CLIPVisionConfig, PretrainedConfig

# mm fields and their defaults when a checkpoint does not set them (docs/reference.md#config-fields).
MM_DEFAULTS: dict[str, Any] = {
    "mm_projector_type": "linear",
    "mm_vision_select_layer": -2,
    "mm_vision_select_feature": "patch",
    "mm_use_im_start_end": False,
    "mm_use_im_patch_token": False,
    "image_aspect_ratio": "square",
    "mm_cluster_centers": 256,
    "mm_cluster_iters": 2,
    "num_latents": 256,
    "tune_mm_mlp_adapter": False,
}
# Reference configs may say "llava" for what is a LLaMA config with mm fields.
_FLAT_ALIASES = {"llava": "llama", "llava_llama": "llama", "llava_mistral": "mistral", "share4v": "llama"}


class CheckpointFormatError(ValueError):
    """A checkpoint directory or config is not a format this project can load; the message says why."""


def read_config_dict(path: str | Path) -> dict[str, Any]:
    file = Path(path) / "config.json" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise CheckpointFormatError(f"{file} not found: a LLaVA checkpoint directory needs a config.json")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointFormatError(f"{file} is not valid JSON: {err}") from err


def config_from_dict(data: dict[str, Any]) -> PretrainedConfig:
    """Build the flat LM config (with mm fields as attributes) from a config.json dict."""
    data = dict(data)
    if "text_config" in data and "vision_config" in data:
        raise CheckpointFormatError(
            "this is a transformers-native LlavaForConditionalGeneration checkpoint; load it with transformers, "
            "or convert it back with `python -m llava.model.export --to-reference`"
        )
    model_type = _FLAT_ALIASES.get(data.get("model_type", "llama"), data.get("model_type", "llama"))
    data["model_type"] = model_type
    if "mm_vision_tower" not in data and "vision_tower" in data:
        data["mm_vision_tower"] = data["vision_tower"]
    data.pop("vision_tower", None)
    for key, value in MM_DEFAULTS.items():
        data.setdefault(key, value)
    return AutoConfig.for_model(**data)


def load_llava_config(path: str | Path) -> PretrainedConfig:
    return config_from_dict(read_config_dict(path))


def vision_config_of(config: PretrainedConfig) -> CLIPVisionConfig | None:
    """The tower's config when the checkpoint embeds it (our checkpoints do; reference ones name a hub id)."""
    data = getattr(config, "mm_vision_config", None)
    if data is None:
        return None
    if isinstance(data, CLIPVisionConfig):
        return data
    data = dict(data)
    data.pop("model_type", None)
    return CLIPVisionConfig(**data)


def is_multimodal(config: PretrainedConfig) -> bool:
    return bool(getattr(config, "mm_vision_tower", None) or getattr(config, "mm_vision_config", None))
