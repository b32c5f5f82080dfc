"""The device paths in half precision: projectors, the tower with ViT LoRA, the attention kernels, 4-bit loading
and batched greedy decoding. Run by scripts/bench/gpu_check.sh on a GPU (`pytest -m gpu`), and at tiny shapes on
the CPU by its --cpu-smoke mode in CI; LLAVA_TEST_DEVICE picks the device (default: cuda when there is one)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from conftest import write_tiny_checkpoint
from PIL import Image

from llava.model import attention
from llava.model.multimodal_projector import build_vision_projector

pytestmark = pytest.mark.gpu
DEVICE = torch.device(os.environ.get("LLAVA_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
HALF = [torch.bfloat16, torch.float16]


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t.float()).all())


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("projector_type", ["linear", "mlp2x_gelu", "identity", "cluster", "cross_attn"])
def test_projector_forward_backward(projector_type, dtype):
    d = 64
    h = d if projector_type == "identity" else 96
    config = SimpleNamespace(mm_hidden_size=d, hidden_size=h, mm_projector_type=projector_type,
                             mm_cluster_centers=8, mm_cluster_iters=2, num_latents=8, mm_cross_attn_heads=4)
    torch.manual_seed(0)
    projector = build_vision_projector(config).to(DEVICE, dtype)
    x = torch.randn(2, 36, d, device=DEVICE, dtype=dtype, requires_grad=True)
    out = projector(x)
    assert out.dtype == dtype and out.device.type == DEVICE.type and out.shape[-1] == h and _finite(out)
    out.float().pow(2).mean().backward()
    assert x.grad is not None and _finite(x.grad) and x.grad.abs().sum() > 0
    grads = {name: p.grad for name, p in projector.named_parameters() if p.grad is not None}
    assert all(_finite(g) for g in grads.values())  # (the cluster projector's ln_1 is unused, as in the reference)
    assert projector_type == "identity" or sum(g.abs().sum().item() for g in grads.values()) > 0


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_tower_with_vit_lora_trains_in_half_precision(tiny_model_factory, dtype):
    from llava.model import lora

    model = tiny_model_factory("mlp2x_gelu")
    lora.add_vit_lora(model, lora.vit_lora_config(r=4, alpha=8, dropout=0.0))
    for name, p in model.vision_tower.named_parameters():
        p.requires_grad_("lora_" in name)
    with torch.no_grad():
        for name, p in model.vision_tower.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.02)  # B starts at zero: give A a gradient to see
    model.to(DEVICE, dtype).train()
    size = model.vision_tower.config.image_size
    features = model.encode_images(torch.randn(2, 3, size, size, device=DEVICE, dtype=dtype))
    assert features.dtype == dtype and _finite(features)
    features.float().pow(2).mean().backward()
    # every LoRA pair up to the selected layer (-2) gets a finite gradient; the last layer's is unused
    grads = [p.grad for n, p in model.vision_tower.named_parameters() if "lora_" in n and p.grad is not None]
    assert len(grads) >= 2 and all(_finite(g) for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


def test_sdpa_and_flash_attention_agree(tiny_model_factory):
    """Where FlashAttention-2 runs, its logits match SDPA's in bf16; elsewhere `auto` must fall back to SDPA."""
    impl, why = attention.resolve_attention("auto", DEVICE)
    if impl == "sdpa":
        assert "FlashAttention-2 is not used because" in why
        return
    model = tiny_model_factory("mlp2x_gelu").to(DEVICE, torch.bfloat16)
    ids = torch.randint(3, 200, (2, 40), device=DEVICE)
    with torch.no_grad():
        model.language_model.set_attn_implementation("sdpa")
        reference = model.language_model(input_ids=ids).logits.float()
        model.language_model.set_attn_implementation("flash_attention_2")
        flash = model.language_model(input_ids=ids).logits.float()
    assert (flash - reference).abs().max().item() < 5e-2 * reference.abs().max().item()


def _requests(engine, n: int = 6):
    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        pixels = (torch.rand(20 + 3 * i, 30, 3, generator=g) * 255).to(torch.uint8).numpy()
        out.append(engine.request("What is shown here?" + " Look at the colours." * i, Image.fromarray(pixels), id=i))
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_foundation):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("gpu_ckpt") / "tiny-llava", tiny_foundation, seed=3,
                                 image_aspect_ratio="pad")


def test_batched_greedy_equals_batch_one_in_fp16(checkpoint):
    from llava.inference.engine import GenerationSettings, InferenceEngine

    engine = InferenceEngine.from_pretrained(checkpoint, device=str(DEVICE), dtype="fp16")
    assert engine.model.dtype == torch.float16
    greedy = GenerationSettings(max_new_tokens=6)
    requests = _requests(engine)
    singles = engine.generate(requests, greedy, batch_size=1)
    assert engine.generate(requests, greedy, batch_size=6) == singles
    assert all(isinstance(text, str) for text in singles)


def test_four_bit_loading_generates(tmp_path, tiny_foundation):
    pytest.importorskip("bitsandbytes", reason="4-bit loading needs bitsandbytes (the train extra)")
    from llava.inference.engine import GenerationSettings, InferenceEngine
    from llava.model.tiny import write_tiny_language_model

    # bitsandbytes' CPU kernels need rows of at least one quantisation block (64): a wider LM than the others
    wide = {**tiny_foundation, "lm": write_tiny_language_model(tmp_path / "lm", tiny_foundation["tokenizer"], 128)}
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny-llava-wide", wide, seed=4, image_aspect_ratio="pad")
    engine = InferenceEngine.from_pretrained(checkpoint, device=str(DEVICE), load_4bit=True)
    quantised = [m for m in engine.model.language_model.modules() if type(m).__name__ == "Linear4bit"]
    assert quantised, "no Linear4bit module after load_4bit"
    answers = engine.generate(_requests(engine, 2), GenerationSettings(max_new_tokens=4), batch_size=2)
    assert len(answers) == 2
