"""The `cross_attn` projector: learned latent queries attend to the projected image tokens (docs/reference.md#other-projectors)."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class CrossAttnProjector(nn.Module):
    """A one-layer latent resampler: [B, L, D] image tokens -> [B, num_latents, H] tokens for the LLM.

    Re-creation of the reference's historical latent-token projector (dead code at its HEAD), so the key names
    are ours:

    * `in_proj`   Linear D->H applied to the image tokens (they become keys/values);
    * `latents`   [1, num_latents, H] learned queries (truncated normal, std 0.02);
    * `attn_norm` pre-LayerNorm on the queries; `q_proj`, `k_proj`, `v_proj` Linear H->H with bias;
      multi-head attention with scale (H / num_heads) ** -0.5 via `scaled_dot_product_attention`;
      `out_proj` Linear H->H; residual onto the latents;
    * `ffn_norm` pre-LayerNorm, `ffn` = `fc1` Linear H->H, GELU, `fc2` Linear H->H; residual.

    Dropout (attention and FFN) defaults to 0, as nothing in the reference's scripts set it.
    """

    def __init__(
        self,
        in_features: int,
        hidden_size: int,
        num_latents: int = 256,
        num_heads: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_latents < 1:
            raise ValueError(f"num_latents must be >= 1, got {num_latents}")
        if num_heads < 1 or hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_latents = num_latents
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj = nn.Linear(in_features, hidden_size)
        self.latents = nn.Parameter(torch.empty(1, num_latents, hidden_size))
        self.attn_norm = nn.LayerNorm(hidden_size)
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        self.ffn_norm = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(
            OrderedDict(
                [
                    ("fc1", nn.Linear(hidden_size, hidden_size)),
                    ("act", nn.GELU()),
                    ("drop", nn.Dropout(dropout)),
                    ("fc2", nn.Linear(hidden_size, hidden_size)),
                ]
            )
        )
        self.reset_own_parameters()

    def reset_own_parameters(self) -> None:
        """(Re)initialise the latents (the only parameter this module owns directly); see ClusterProjector."""
        nn.init.trunc_normal_(self.latents, std=0.02)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return self.num_latents

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, h = t.shape
        return t.view(b, n, self.num_heads, h // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.in_proj(x)  # [B, L, H]
        batch, _, hidden = tokens.shape
        latents = self.latents.expand(batch, -1, -1).to(tokens.dtype)  # [B, N, H]

        queries = self.attn_norm(latents)
        q = self._split_heads(self.q_proj(queries))
        k = self._split_heads(self.k_proj(tokens))
        v = self._split_heads(self.v_proj(tokens))
        attn = F.scaled_dot_product_attention(
            q,
            k,
            v,
            dropout_p=self.dropout if self.training else 0.0,
            scale=(hidden // self.num_heads) ** -0.5,
        )
        attn = attn.transpose(1, 2).reshape(batch, self.num_latents, hidden)
        latents = latents + self.out_proj(attn)
        ffn_out = F.dropout(self.ffn(self.ffn_norm(latents)), p=self.dropout, training=self.training)
        return latents + ffn_out
