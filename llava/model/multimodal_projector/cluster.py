"""The `cluster` projector: SQ-LLaVA's prototype extractor + QuickGELU MLP, numerically the reference
(docs/reference.md#d8-and-d9-cluster-projector)."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    """CLIP's GELU approximation x * sigmoid(1.702 x); no parameters (it is `mlp.1` in the reference)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def pool_tokens(x: torch.Tensor, num_outputs: int) -> torch.Tensor:
    """Adaptive average pooling along the token axis: [B, L, D] -> [B, num_outputs, D] (torch's windows)."""
    return F.adaptive_avg_pool1d(x.transpose(1, 2), num_outputs).transpose(1, 2)


class ClusterProjector(nn.Module):
    """Prototype extractor (EM-style centre refinement + gated hard-assignment write-back), then an MLP D->H.

    Reproduces the reference `Clustering` module including its quirks, so released `mm_projector` weights
    load strictly and give the same numbers:

    * V is L2-normalised over the *token* axis (not the feature axis) in the E-step, so the score is not a
      cosine; the softmax runs over the centre axis; `c` is applied at the start of every iteration; the new
      centres are the unnormalised product M.F (no division by each centre's mass).
    * The gate sigmoid(beta + alpha * cos(centre, x)) is a true cosine against the *raw* input tokens.
    * Each token keeps only its argmax centre (ties -> the lowest centre index, as torch's `max`/`argmax`).
    * agg[n] = (sum_l G'[n,l] F[l] + P[n]) / (count[n] + 1); y[l] = x[l] + G'[n*(l), l] * agg[n*(l)].
    * `ln_1` exists only so checkpoints load strictly: it is never used and never receives a gradient.

    The reference builds two [B, K, L, D] broadcasts for the last two steps; here they are one batched matmul
    ([B,K,L] x [B,L,D]) and one gather, so memory is O(B*(K+L)*D). All arithmetic stays in the input dtype,
    like the reference (the released weights were trained in bf16 with exactly these roundings).
    """

    def __init__(
        self, in_features: int, out_features: int, num_centers: int = 256, num_iters: int = 2
    ) -> None:
        super().__init__()
        if num_centers < 1 or num_iters < 0:
            raise ValueError(f"need num_centers >= 1 and num_iters >= 0, got {num_centers}, {num_iters}")
        self.num_centers = num_centers
        self.num_iters = num_iters
        self.sim_alpha = nn.Parameter(torch.empty(1, 1, 1))
        self.sim_beta = nn.Parameter(torch.empty(1, 1, 1))
        self.c = nn.Linear(in_features, in_features)
        self.v = nn.Linear(in_features, in_features)
        self.f = nn.Linear(in_features, in_features)
        self.ln_1 = nn.LayerNorm(in_features)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("0", nn.Linear(in_features, out_features)),
                    ("1", QuickGELU()),
                    ("2", nn.Linear(out_features, out_features)),
                ]
            )
        )
        self.reset_own_parameters()

    def reset_own_parameters(self) -> None:
        """(Re)initialise the parameters this module owns directly (alpha=1, beta=0), not its submodules'.

        Uses `nn.init.*` looked up at call time, so inside transformers' `_init_weights` the guarded versions
        apply and already-loaded tensors are left alone.
        """
        nn.init.ones_(self.sim_alpha)
        nn.init.zeros_(self.sim_beta)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return num_input_tokens

    @staticmethod
    def assign(gate: torch.Tensor) -> torch.Tensor:
        """Hard assignment n*(l): index of the largest gate over the centre axis, [B, K, L] -> [B, 1, L].

        Ties go to the lowest centre index (torch's `argmax`, the same rule as the reference's `max(dim=1)`).
        They are common: the refined centres are nearly identical, so in bf16 many gates round to the same value.
        """
        return gate.argmax(dim=1, keepdim=True)

    def extract_prototypes(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the MLP (pooling, EM refinement, gate, write-back): [B, L, D] -> y [B, L, D]."""
        value = self.v(x)  # [B, L, D]
        feature = self.f(x)  # [B, L, D]
        centers = pool_tokens(x, self.num_centers)  # [B, K, D]
        pooled_feature = pool_tokens(feature, self.num_centers)  # [B, K, D]

        # Quirk: the reference normalises the last axis of the [B, D, L] tensor, i.e. over tokens.
        value_hat = F.normalize(value, dim=1).transpose(1, 2)  # [B, D, L]
        for _ in range(self.num_iters):
            centers = self.c(centers)
            scores = F.normalize(centers, dim=-1) @ value_hat  # [B, K, L]
            centers = scores.softmax(dim=1) @ feature  # softmax over centres; unnormalised M.F

        cos = F.normalize(centers, dim=-1) @ F.normalize(x, dim=-1).transpose(1, 2)  # [B, K, L]
        gate = torch.sigmoid(self.sim_beta + self.sim_alpha * cos)
        assigned = self.assign(gate)  # [B, 1, L]
        one_hot = torch.zeros_like(gate).scatter_(1, assigned, 1.0)
        kept_gate = gate * one_hot  # G' [B, K, L]

        agg = (kept_gate @ feature + pooled_feature) / (one_hot.sum(dim=-1, keepdim=True) + 1.0)  # [B, K, D]
        token_gate = gate.gather(1, assigned).transpose(1, 2)  # G'[n*(l), l] as [B, L, 1]
        token_index = assigned.transpose(1, 2).expand(-1, -1, agg.shape[-1])
        token_agg = agg.gather(1, token_index)  # agg[n*(l)] as [B, L, D]
        return x + token_gate * token_agg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.extract_prototypes(x))
