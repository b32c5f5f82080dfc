"""The stateless-shape projectors: `linear`, `mlp{N}x_gelu` and `identity` (token count unchanged)."""

from __future__ import annotations

import torch
from torch import nn


class LinearProjector(nn.Linear):
    """One Linear D->H. A plain `nn.Linear` subclass, so its keys stay `weight` / `bias` (reference layout)."""

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return num_input_tokens


class MLPProjector(nn.Sequential):
    """Linear D->H, then (depth-1) x [GELU, Linear H->H]; keys `0.*`, `2.*`, ... as in the reference."""

    @classmethod
    def from_dims(cls, in_features: int, out_features: int, depth: int) -> MLPProjector:
        if depth < 1:
            raise ValueError(f"mlp{{N}}x_gelu needs N >= 1, got N={depth}")
        modules: list[nn.Module] = [nn.Linear(in_features, out_features)]
        for _ in range(depth - 1):
            modules += [nn.GELU(), nn.Linear(out_features, out_features)]
        return cls(*modules)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return num_input_tokens


class IdentityProjector(nn.Module):
    """Returns its input unchanged; only valid when the vision width equals the LLM width."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return x

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return num_input_tokens
