"""Checkpoint tools: LoRA merge (ViT LoRA kept, training dtype), projector extraction, HF Llava export round trip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, CLIPImageProcessor, LlavaForConditionalGeneration

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model import compat, lora
from llava.model.builder import load_pretrained_model, save_pretrained_llava
from llava.model.export import from_hf

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _lora_checkpoint(model, out: Path, tokenizer) -> dict:
    """A stage-2 style directory written by our own savers, with non-zero LoRA B so merging changes weights."""
    lora.add_llm_lora(model, lora.llm_lora_config(model.language_model, r=4, alpha=8, dropout=0.0))
    lora.add_vit_lora(model, lora.vit_lora_config(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    lora.save_llm_adapter(model, out)
    lora.save_vit_adapter(model, out / compat.VIT_LORA_DIR)
    compat.save_non_lora_trainables({f"mm_projector.{k}": v for k, v in model.mm_projector.state_dict().items()}, out)
    data = model.config.to_dict()
    data["dtype"] = "float32"
    data["conv_mode"] = "v1_sq"  # training records its template
    (out / "config.json").write_text(__import__("json").dumps(data))
    tokenizer.save_pretrained(str(out))
    merged_lm = model.language_model.merge_and_unload()
    merged_tower = model.vision_tower.merge_and_unload()
    return {"lm": merged_lm.state_dict(), "tower": merged_tower.state_dict()}


def test_merge_keeps_vit_lora(tmp_path, tiny_model_factory, tiny_foundation):
    tokenizer = AutoTokenizer.from_pretrained(tiny_foundation["lm"])
    expected = _lora_checkpoint(tiny_model_factory("mlp2x_gelu", seed=7), tmp_path / "lora", tokenizer)
    _run("scripts/merge_lora_weights.py", "--model-path", str(tmp_path / "lora"), "--model-base",
         str(tiny_foundation["lm"]), "--save-model-path", str(tmp_path / "merged"))
    _, merged, _, _ = load_pretrained_model(tmp_path / "merged")
    assert merged.dtype == torch.float32
    assert merged.config.conv_mode == "v1_sq"  # the template survives the merge
    key = "encoder.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(merged.vision_tower.vision_tower.state_dict()[key], expected["tower"][f"vision_tower.{key}"])
    lm_key = "model.layers.1.mlp.down_proj.weight"
    torch.testing.assert_close(merged.language_model.state_dict()[lm_key], expected["lm"][lm_key])

    _run("scripts/extract_mm_projector.py", "--model-path", str(tmp_path / "merged"), "--output", str(tmp_path / "p"))
    extracted = compat.load_projector(tmp_path / "p" / compat.PROJECTOR_FILE)
    for k, v in merged.mm_projector.state_dict().items():
        torch.testing.assert_close(extracted[k], v)


def test_hf_llava_export_round_trip(tmp_path, tiny_model_factory, tiny_foundation):
    model = tiny_model_factory("mlp2x_gelu", seed=8)
    tokenizer = AutoTokenizer.from_pretrained(tiny_foundation["lm"])
    save_pretrained_llava(model, tmp_path / "ours", tokenizer, CLIPImageProcessor.from_pretrained(tiny_foundation["tower"]))
    _run("-m", "llava.model.export", "--model-path", str(tmp_path / "ours"), "--output", str(tmp_path / "hf"))
    hf = LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    image_id = hf.config.image_token_index
    assert hf_tok.convert_ids_to_tokens(image_id) == "<image>"

    n = model.num_image_tokens
    text = [1, 415, 3469, IMAGE_TOKEN_INDEX, 1824, 349, 297, 272]
    ours_ids = torch.tensor([text])
    hf_ids = torch.tensor([[t for tok in text for t in ([image_id] * n if tok == IMAGE_TOKEN_INDEX else [tok])]])
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(input_ids=ours_ids, pixel_values=pixels).logits
        theirs = hf(input_ids=hf_ids, pixel_values=pixels).logits
    vocab = ours.shape[-1]
    torch.testing.assert_close(theirs[..., :vocab], ours, rtol=1e-5, atol=1e-5)

    back = from_hf(hf)
    with torch.no_grad():
        again = back(input_ids=ours_ids, pixel_values=pixels).logits
    torch.testing.assert_close(again[..., :vocab], ours, rtol=1e-5, atol=1e-5)
