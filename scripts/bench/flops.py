"""Model FLOPs of a LLaVA training step (the MFU numerator), counted from the configs, never from the kernels run."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

FORMULA = (
    "MFU = model FLOPs per step / step time / peak, where per sample of S positions: "
    "c*N_lm*S + 6*N_adapters*S (LoRA) + 12*L*H*S^2 (attention: 4*L*S*H per token forward, backward 2x forward) "
    "+ vision forward (2*N_vit*T + 4*L_vit*T^2*H_vit per image, T = patches + CLS) "
    "+ 6*N_projector*image_tokens (trainable projector); c = 4 for a frozen LM (forward + activation gradients), "
    "6 when its weights train; N_lm = LM Linear weights incl. lm_head at every position (no embedding table); "
    "not counted: recomputation from activation checkpointing, padding, attention across packed samples. "
    "The same count for both implementations (ours skips lm_head at positions without a target: less real work)."
)


@dataclasses.dataclass(frozen=True)
class ModelCost:
    """The parameter counts the formula needs, from the preset's configs (identical for both implementations)."""

    n_lm: int
    layers: int
    hidden: int
    n_vit: int
    vit_layers: int
    vit_hidden: int
    vit_tokens: int
    image_tokens: int

    @classmethod
    def from_configs(cls, text, vision) -> ModelCost:
        h, i, v = text.hidden_size, text.intermediate_size, text.vocab_size
        head_dim = h // text.num_attention_heads
        kv = text.num_key_value_heads * head_dim
        per_layer = h * h + 2 * h * kv + h * h + 3 * h * i  # q, k, v, o + gate, up, down
        hv, iv = vision.hidden_size, vision.intermediate_size
        patches = (vision.image_size // vision.patch_size) ** 2
        n_vit = vision.num_hidden_layers * (4 * hv * hv + 2 * hv * iv) + 3 * vision.patch_size**2 * hv
        return cls(
            n_lm=text.num_hidden_layers * per_layer + h * v, layers=text.num_hidden_layers, hidden=h, n_vit=n_vit,
            vit_layers=vision.num_hidden_layers, vit_hidden=hv, vit_tokens=patches + 1, image_tokens=patches,
        )

    def vision_forward(self) -> float:
        t = self.vit_tokens
        return 2.0 * self.n_vit * t + 4.0 * self.vit_layers * t * t * self.vit_hidden

    def step_flops(self, lengths: Sequence[int], n_images: int, *, n_adapters: int = 0, n_projector: int = 0,
                   lm_trains: bool = False) -> float:
        """Model FLOPs of one forward + backward over samples of `lengths` real positions holding `n_images`."""
        c = 6.0 if lm_trains else 4.0
        total = 0.0
        for s in lengths:
            total += (c * self.n_lm + 6.0 * n_adapters) * s + 12.0 * self.layers * self.hidden * s * s
        total += n_images * (self.vision_forward() + 6.0 * n_projector * self.image_tokens)
        return total


def count_params(module, predicate=lambda name, p: True) -> int:
    return sum(p.numel() for name, p in module.named_parameters() if predicate(name, p))


def lora_params(module) -> int:
    return count_params(module, lambda name, p: "lora_" in name)
