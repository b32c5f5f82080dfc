"""Chunked causal-LM cross-entropy from hidden states and the output layer, without materialising all logits."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llava.constants import IGNORE_INDEX

# Rows of logits alive at once: 2048 x 32000 fp32 is 250 MiB (the plain path holds [B*T, V] in bf16 AND fp32).
DEFAULT_CHUNK_SIZE = 2048


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(h_i W^T + b, t_i) * scale, with the gradients computed chunk by chunk during the forward.

    The forward keeps one [chunk, V] block of logits at a time and stores only the gradients (same size as the
    inputs), so the backward is a multiplication by the incoming scalar: no logits are kept and none recomputed.
    The arithmetic mirrors the plain path (`F.linear` in the input dtype, softmax in fp32, the fp32 gradient
    scaled by `scale` and cast back to the input dtype before the matmuls).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, scale, chunk_size, grad_enabled):  # noqa: D102 (autograd)
        # needs_input_grad ignores no_grad/inference_mode: the caller's grad mode decides whether to form gradients.
        need_h = grad_enabled and ctx.needs_input_grad[0]
        need_w = grad_enabled and ctx.needs_input_grad[1]
        need_b = grad_enabled and bias is not None and ctx.needs_input_grad[2]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need_b else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        log_scale = math.log(scale) if scale > 0 else float("nan")
        for start in range(0, hidden.shape[0], chunk_size):
            h = hidden[start : start + chunk_size]
            t = target[start : start + chunk_size]
            logits = F.linear(h, weight, bias).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if not (need_h or need_w or need_b):
                continue
            # scale * (softmax - one_hot), in place: exp(logit - lse + log(scale)) folds the scaling into the exp.
            grad = logits.sub_(lse[:, None] - log_scale).exp_()
            grad[torch.arange(t.shape[0], device=t.device), t] -= scale
            grad = grad.to(hidden.dtype)
            if need_h:
                grad_h[start : start + chunk_size] = grad @ weight.to(grad.dtype)
            if need_w:
                grad_w += (grad.t() @ h.to(grad.dtype)).float()
            if need_b:
                grad_b += grad.float().sum(0)
        ctx.save_for_backward(
            grad_h if need_h else None,
            grad_w.to(weight.dtype) if need_w else None,
            grad_b.to(bias.dtype) if need_b else None,
        )
        return total * scale

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102 (autograd signature)
        grad_h, grad_w, grad_b = ctx.saved_tensors
        scale = grad_out.float()
        out_h = (grad_h * scale.to(grad_h.dtype)) if grad_h is not None else None
        out_w = (grad_w * scale.to(grad_w.dtype)) if grad_w is not None else None
        out_b = (grad_b * scale.to(grad_b.dtype)) if grad_b is not None else None
        return out_h, out_w, out_b, None, None, None, None


def chunked_causal_lm_loss(
    hidden_states: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    ignore_index: int = IGNORE_INDEX,
    num_items_in_batch: torch.Tensor | int | None = None,
    shift_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """The causal-LM loss of transformers' `ForCausalLMLoss`, from `hidden_states` [B, T, H] and `weight` [V, H].

    Position t predicts `labels[:, t + 1]` (or `shift_labels[:, t]` when given). Only positions with a target are
    projected to the vocabulary, `chunk_size` rows at a time; the result is the mean over those positions, or
    their sum divided by `num_items_in_batch` when given (HF Trainer's gradient-accumulation normalisation).
    Like the plain path, a batch without any target gives NaN (0 / 0).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    target = shift_labels.reshape(-1).to(hidden_states.device)
    keep = (target != ignore_index).nonzero().squeeze(1)
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1]).index_select(0, keep)
    target = target.index_select(0, keep)
    if num_items_in_batch is None:
        denominator = float(keep.numel())
    else:
        denominator = float(num_items_in_batch.item() if torch.is_tensor(num_items_in_batch) else num_items_in_batch)
    scale = 1.0 / denominator if denominator else float("nan")
    return _LinearCrossEntropy.apply(hidden, weight, bias, target, scale, chunk_size, torch.is_grad_enabled())


def output_layer(language_model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """(decoder, lm_head) when the LM's logits are exactly `lm_head(decoder(...).last_hidden_state)`, else None.

    None for heads the chunked loss cannot bypass safely: soft-capped or scaled logits (Gemma 2, Cohere, Granite),
    a head that is not a plain Linear (LoRA on lm_head, quantised heads), or ZeRO-3 partitioned weights.
    """
    config = getattr(language_model, "config", None)
    for field in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
        value = getattr(config, field, None)
        if value not in (None, 1, 1.0):
            return None
    get_decoder = getattr(language_model, "get_decoder", None)
    get_head = getattr(language_model, "get_output_embeddings", None)
    if get_decoder is None or get_head is None:
        return None
    decoder, head = get_decoder(), get_head()
    if decoder is None or type(head) is not nn.Linear or hasattr(head.weight, "ds_id"):
        return None
    return decoder, head
