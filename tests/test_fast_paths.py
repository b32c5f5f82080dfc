"""Training fast paths against the plain path (fp32): chunked cross-entropy and padding-free packing."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from transformers.loss.loss_utils import ForCausalLMLoss

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.data.collator import DataCollatorForSupervisedDataset
from llava.data.packing import PackedCollator
from llava.model.loss import chunked_causal_lm_loss

TOL = {"atol": 1e-5, "rtol": 1e-5}


def _lm_inputs(b: int = 3, t: int = 7, h: int = 16, v: int = 50, seed: int = 0, bias: bool = True):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, h, generator=gen, requires_grad=True)
    weight = (torch.randn(v, h, generator=gen) / h**0.5).requires_grad_()
    b_vec = (torch.randn(v, generator=gen) * 0.1).requires_grad_() if bias else None
    labels = torch.randint(0, v, (b, t), generator=gen)
    labels[torch.rand(b, t, generator=gen) < 0.3] = IGNORE_INDEX
    return hidden, weight, b_vec, labels


def _plain(hidden, weight, bias, labels, **kwargs):
    logits = torch.nn.functional.linear(hidden, weight, bias)
    return ForCausalLMLoss(logits, labels, vocab_size=weight.shape[0], **kwargs)


def _loss_and_grads(fn, tensors):
    for x in tensors:
        x.grad = None
    loss = fn()
    loss.backward()
    return loss.detach(), [x.grad.clone() for x in tensors]


@pytest.mark.parametrize("chunk_size", [1, 4, 4096])
@pytest.mark.parametrize("bias", [True, False])
def test_chunked_ce_matches_plain_loss_and_grads(chunk_size, bias):
    hidden, weight, b_vec, labels = _lm_inputs(bias=bias)
    tensors = [x for x in (hidden, weight, b_vec) if x is not None]
    plain = _loss_and_grads(lambda: _plain(hidden, weight, b_vec, labels), tensors)
    ours = _loss_and_grads(
        lambda: chunked_causal_lm_loss(hidden, weight, labels, bias=b_vec, chunk_size=chunk_size), tensors
    )
    torch.testing.assert_close(ours[0], plain[0], **TOL)
    for a, b in zip(ours[1], plain[1]):
        torch.testing.assert_close(a, b, **TOL)


def test_chunked_ce_all_but_one_target_ignored_and_num_items_in_batch():
    hidden, weight, b_vec, labels = _lm_inputs(b=2, t=5)
    labels.fill_(IGNORE_INDEX)
    labels[1, 3] = 7  # the only target: predicted from position (1, 2)
    tensors = [hidden, weight, b_vec]
    for kwargs in ({}, {"num_items_in_batch": torch.tensor(4)}):
        plain = _loss_and_grads(partial(_plain, hidden, weight, b_vec, labels, **kwargs), tensors)
        ours = _loss_and_grads(partial(chunked_causal_lm_loss, hidden, weight, labels, bias=b_vec, chunk_size=2,
                                       **kwargs), tensors)
        torch.testing.assert_close(ours[0], plain[0], **TOL)
        for a, b in zip(ours[1], plain[1]):
            torch.testing.assert_close(a, b, **TOL)
    assert int((ours[1][0].abs().sum(-1) > 0).sum()) == 1  # only that one position gets a gradient


def test_chunked_ce_frozen_head_and_no_grad():
    hidden, weight, _, labels = _lm_inputs(bias=False)
    weight.requires_grad_(False)
    plain = _loss_and_grads(lambda: _plain(hidden, weight, None, labels), [hidden])
    ours = _loss_and_grads(lambda: chunked_causal_lm_loss(hidden, weight, labels, chunk_size=5), [hidden])
    torch.testing.assert_close(ours[0], plain[0], **TOL)
    torch.testing.assert_close(ours[1][0], plain[1][0], **TOL)
    with torch.no_grad():
        torch.testing.assert_close(chunked_causal_lm_loss(hidden, weight, labels), plain[0], **TOL)
    all_ignored = torch.full_like(labels, IGNORE_INDEX)
    assert torch.isnan(chunked_causal_lm_loss(hidden, weight, all_ignored)) == torch.isnan(
        _plain(hidden, weight, None, all_ignored)
    )


# ---------------------------------------------------------------------------------------------- model level
def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _trainable(model) -> dict[str, torch.nn.Parameter]:
    model.requires_grad_(False)
    model.mm_projector.requires_grad_(True)
    for name, p in model.language_model.named_parameters():
        if name.endswith(("q_proj.weight", "down_proj.weight", "lm_head.weight", "norm.weight")):
            p.requires_grad_(True)
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _run(model, params, batch, **kwargs):
    for p in params.values():
        p.grad = None
    out = model(**batch, **kwargs)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in params.items() if p.grad is not None}


def _assert_same(a, b):
    (out_a, grads_a), (out_b, grads_b) = a, b
    torch.testing.assert_close(out_a.loss, out_b.loss, **TOL)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], **TOL, msg=name)


def _padded_batch(model):
    n = model.num_image_tokens
    rows = [[1, 11, IMAGE_TOKEN_INDEX, 12, 13, 14], [1, 21, 22, 23, 24]]
    ids = torch.full((2, 5 + n), 0)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        expanded = [t for tok in row for t in ([tok] * n if tok == IMAGE_TOKEN_INDEX else [tok])]
        ids[r, : len(expanded)] = torch.tensor(expanded)
        mask[r, : len(expanded)] = 1
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": _images(1)}


def test_model_chunked_loss_on_off_and_logits_when_asked(tiny_model_factory):
    model = tiny_model_factory("mlp2x_gelu").train()
    params = _trainable(model)
    batch = _padded_batch(model)
    plain = _run(model, params, batch, return_logits=True)
    assert plain[0].logits is not None
    chunked = _run(model, params, batch)  # default: chunked in training with labels
    assert chunked[0].logits is None
    _assert_same(chunked, plain)
    model.chunked_loss_size = 3
    _assert_same(_run(model, params, batch, num_items_in_batch=torch.tensor(9)),
                 _run(model, params, batch, num_items_in_batch=torch.tensor(9), return_logits=True))
    model.chunked_loss_size = 0  # off
    assert _run(model, params, batch)[0].logits is not None
    model.chunked_loss_size = None
    model.config.chunked_loss_size = 0  # off through the config
    assert _run(model, params, batch)[0].logits is not None
    model.config.chunked_loss_size = None
    with torch.no_grad():
        assert model.eval()(**batch).logits is not None  # evaluation keeps logits


def test_model_chunked_loss_with_activation_checkpointing(tiny_model_factory):
    model = tiny_model_factory("mlp2x_gelu")
    params = _trainable(model)
    batch = _padded_batch(model)
    model.train()
    reference = _run(model, params, batch, return_logits=True)
    model.gradient_checkpointing_enable()
    _assert_same(_run(model, params, batch), reference)


def test_model_chunked_loss_through_llm_lora(tiny_model_factory):
    from llava.model.lora import add_llm_lora, llm_lora_config

    model = tiny_model_factory("mlp2x_gelu")
    model.requires_grad_(False)
    add_llm_lora(model, llm_lora_config(model.language_model, r=4, alpha=8, dropout=0.0))
    model.mm_projector.requires_grad_(True)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # B starts at zero: move it so that A gets a gradient too
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    batch = _padded_batch(model)
    chunked = _run(model, params, batch)
    assert chunked[0].logits is None  # the PEFT-wrapped LM still exposes its decoder and plain lm_head
    _assert_same(chunked, _run(model, params, batch, return_logits=True))


# ---------------------------------------------------------------------------------------------- packing
def _samples(model_max_length: int = 4096):
    samples = [
        {"input_ids": [1, 101, IMAGE_TOKEN_INDEX, 102, 103, 104, 105], "pixel_values": _images(1, 1),
         "labels": [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 103, 104, 105]},
        {"input_ids": [1, 201, 202, 203, 204], "labels": [IGNORE_INDEX, IGNORE_INDEX, 202, 203, 204]},
        {"input_ids": [1, IMAGE_TOKEN_INDEX, 301, 302, 303, 304, 305, 306], "pixel_values": _images(1, 2),
         "labels": [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 302, IGNORE_INDEX, 304, 305, 306]},
        {"input_ids": [1, 401, IMAGE_TOKEN_INDEX, 402], "pixel_values": _images(1, 3),
         "labels": [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 402]},
    ]
    return [{**s, "input_ids": torch.tensor(s["input_ids"]), "labels": torch.tensor(s["labels"]), "index": i}
            for i, s in enumerate(samples)]


def test_packed_collator_layout():
    n = 3
    batch = PackedCollator(num_image_tokens=n, pad_token_id=0)(_samples())
    lengths = [7 + n - 1, 5, 8 + n - 1, 4 + n - 1]
    assert batch["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in batch
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    expected_pos = torch.cat([torch.arange(m) for m in lengths])
    assert batch["position_ids"][0].tolist() == expected_pos.tolist()
    assert all(batch["labels"][0, s] == IGNORE_INDEX for s in starts)
    assert int((batch["input_ids"] == IMAGE_TOKEN_INDEX).sum()) == 3 * n and batch["pixel_values"].shape[0] == 3
    rows = PackedCollator(num_image_tokens=n, pad_token_id=0, max_row_tokens=16)(_samples())
    # first fit decreasing over lengths [9, 5, 10, 6]: 10 -> row 0, 9 -> row 1, 6 -> row 0 (16), 5 -> row 1 (14)
    assert rows["input_ids"].shape == (2, 16)
    assert rows["position_ids"][0].tolist() == [*range(10), *range(6)]
    assert rows["position_ids"][1].tolist() == [*range(9), *range(5), 0, 1]  # tail: a padding segment
    assert rows["labels"][1, 14:].eq(IGNORE_INDEX).all()
    assert rows["input_ids"][0, 1] == IMAGE_TOKEN_INDEX and rows["input_ids"][0, 10] == 1  # samples 2, then 3
    torch.testing.assert_close(rows["pixel_values"], torch.cat([_images(1, 2), _images(1, 3), _images(1, 1)]))
    with pytest.raises(ValueError, match="image token"):
        PackedCollator(num_image_tokens=n)([{**_samples()[1], "pixel_values": _images(1)}])


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("max_row_tokens", [None, 24])
def test_packed_equals_padded_loss_and_grads(tiny_model_factory, attn, max_row_tokens):
    model = tiny_model_factory("mlp2x_gelu")
    model.language_model.set_attn_implementation(attn)
    assert model.language_model.config.use_cache  # the packed path must switch the cache off by itself
    params = _trainable(model)
    model.train()
    n = model.num_image_tokens
    padded = DataCollatorForSupervisedDataset(num_image_tokens=n, pad_token_id=0)(_samples())
    packed = PackedCollator(num_image_tokens=n, pad_token_id=0, max_row_tokens=max_row_tokens)(_samples())
    assert packed["input_ids"].numel() < padded["input_ids"].numel() or max_row_tokens
    for return_logits in (True, None):  # plain and chunked loss
        ref = _run(model, params, padded, return_logits=return_logits)
        _assert_same(_run(model, params, packed, return_logits=return_logits), ref)
    # Without the block-diagonal mask the rows would mix: prove the comparison can fail.
    wrong = dict(packed, position_ids=torch.arange(packed["input_ids"].shape[1]).expand_as(packed["input_ids"]))
    assert not torch.allclose(_run(model, params, wrong)[0].loss, ref[0].loss, **TOL)


def test_position_ids_need_expanded_sentinels(tiny_model_factory):
    model = tiny_model_factory("mlp2x_gelu")
    with pytest.raises(ValueError, match="pre-expanded"):
        model(input_ids=torch.tensor([[1, IMAGE_TOKEN_INDEX, 5]]), pixel_values=_images(1),
              position_ids=torch.tensor([[0, 1, 2]]))
