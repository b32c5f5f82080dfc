"""The CLIP vision tower: selects a hidden layer and patch/cls features; frozen unless LoRA or unfreezing says otherwise."""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

SELECT_FEATURES = ("patch", "cls_patch")


class CLIPVisionTower(nn.Module):
    """Wraps a transformers `CLIPVisionModel` as `self.vision_tower` (the reference attribute name).

    Unlike the reference (docs/reference.md#d1-vit-lora-trains) the forward is not wrapped in `no_grad`: whether the tower trains is decided by
    `requires_grad` on its parameters (ViT LoRA, unfreezing), so gradients reach LoRA adapters when they exist.
    """

    base_model_prefix = ""  # PEFT and transformers' conversion mapping look for it on wrapped modules

    def __init__(
        self,
        vision_config: CLIPVisionConfig,
        select_layer: int = -2,
        select_feature: str = "patch",
        name_or_path: str | None = None,
        model: CLIPVisionModel | None = None,
    ):
        super().__init__()
        if select_feature not in SELECT_FEATURES:
            raise ValueError(f"mm_vision_select_feature must be one of {SELECT_FEATURES}, got {select_feature!r}")
        n_layers = vision_config.num_hidden_layers
        if not -(n_layers + 1) <= select_layer <= n_layers:
            raise ValueError(f"mm_vision_select_layer {select_layer} is outside the tower's {n_layers} layers")
        self.select_layer = select_layer
        self.select_feature = select_feature
        self.name_or_path = name_or_path
        self.vision_tower = model if model is not None else CLIPVisionModel(vision_config)
        self.vision_tower.requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, select_layer: int = -2, select_feature: str = "patch", **kwargs
    ) -> CLIPVisionTower:
        model = CLIPVisionModel.from_pretrained(name_or_path, **kwargs)
        return cls(model.config, select_layer, select_feature, name_or_path=name_or_path, model=model)

    @property
    def config(self) -> CLIPVisionConfig:
        return self.vision_tower.config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_patches(self) -> int:
        return (self.config.image_size // self.config.patch_size) ** 2

    @property
    def num_output_tokens(self) -> int:
        return count_output_tokens(self.config, self.select_feature)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vision_tower.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.vision_tower.parameters()).device

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] pixels -> [N, tokens, D] features of the selected layer."""
        out = self.vision_tower(pixel_values.to(device=self.device, dtype=self.dtype), output_hidden_states=True)
        features = out.hidden_states[self.select_layer]
        return features[:, 1:] if self.select_feature == "patch" else features


def count_output_tokens(vision_config, select_feature: str) -> int:
    """Features the tower hands to the projector per image: its patches, plus CLS for `cls_patch`."""
    return (vision_config.image_size // vision_config.patch_size) ** 2 + (1 if select_feature == "cls_patch" else 0)
