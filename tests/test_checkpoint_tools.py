"""Checkpoint tools: LoRA merge (ViT LoRA kept, training dtype), projector extraction, HF Llava export round trip,
the export's processor and chat template."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessor, LlavaForConditionalGeneration

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates, get_template
from llava.model import compat, export, lora
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


def _hf_messages(turns: list[tuple[str, str, int]]) -> list[dict]:
    """HF chat messages from (role, text, n_images) turns; images come as content parts."""
    messages = []
    for role, text, n_images in turns:
        content = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
        messages.append({"role": role, "content": content if n_images else text})
    return messages


def _our_prompt(conv_mode: str, turns: list[tuple[str, str, int]], placeholder: str = "<image>",
                cue: bool = True) -> str:
    """The same turns rendered by llava.conversation, images written as our engine writes them."""
    conv = get_template(conv_mode)
    conv.reset_messages()
    names = {"user": conv.roles[0], "assistant": conv.roles[1], "vuser": conv.vuser_role}
    for role, text, n_images in turns:
        if role == "system":
            conv.system = text
        else:
            conv.append_message(names[role], (placeholder + "\n") * n_images + text)
    if cue:
        conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


_TURNS = {
    "one_image": [("user", "What is in the picture?", 1)],
    "multi_turn": [("user", "Describe it.", 1), ("assistant", "A red square.", 0), ("user", "Why?", 0)],
    "no_image_system": [("system", "Be brief.", 0), ("user", "Hello there", 0)],
    "two_images": [("user", "Compare them.", 2), ("assistant", "Same.", 0), ("user", "Sure?", 0)],
}


@pytest.mark.parametrize("turns", sorted(_TURNS))
@pytest.mark.parametrize("conv_mode", sorted(conv_templates))
def test_chat_template_renders_our_templates(conv_mode, turns, tokenizer_dir_legacy):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir_legacy)
    for cue in (True, False):
        for placeholder in ("<image>", "<im_start><image><im_end>"):
            template = export.chat_template(conv_mode, placeholder)
            rendered = tokenizer.apply_chat_template(_hf_messages(_TURNS[turns]), chat_template=template,
                                                     tokenize=False, add_generation_prompt=cue)
            assert rendered == _our_prompt(conv_mode, _TURNS[turns], placeholder, cue)


def test_chat_template_vuser_and_unknown_templates(tokenizer_dir_legacy):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir_legacy)
    turns = [("user", "Describe it.", 1), ("assistant", "A cat.", 0), ("vuser", "Is it asleep?", 0),
             ("assistant", "Yes.", 0)]
    rendered = tokenizer.apply_chat_template(_hf_messages(turns), chat_template=export.chat_template("v1_sq"),
                                             tokenize=False, add_generation_prompt=True)
    assert rendered == _our_prompt("v1_sq", turns)
    with pytest.raises(Exception, match="roles are"):  # no VUSER role in v1
        tokenizer.apply_chat_template(_hf_messages(turns), chat_template=export.chat_template("v1"), tokenize=False)
    with pytest.raises(export.ExportError, match="unknown conv_mode 'v9'.*v1_sq"):
        export.chat_template("v9")


def test_export_refuses_non_mlp2x_projectors(tiny_model_factory, tiny_foundation):
    tokenizer = AutoTokenizer.from_pretrained(tiny_foundation["lm"])
    for projector in ("cluster", "linear"):
        with pytest.raises(export.ExportError, match=r"only mlp2x_gelu exports natively.*our engine.*vLLM"):
            export.to_hf(tiny_model_factory(projector, seed=1), tokenizer)


def test_hf_export_runs_with_transformers_processor(tmp_path, tiny_model_factory, tiny_foundation, capsys):
    """AutoProcessor + LlavaForConditionalGeneration alone reproduce our engine's prompt, ids and greedy answer
    (a `pad` model, a square image: padding is a no-op)."""
    from llava.inference.engine import GenerationSettings, InferenceEngine

    model = tiny_model_factory("mlp2x_gelu", seed=12, image_aspect_ratio="pad", conv_mode="v1_sq")
    tokenizer = AutoTokenizer.from_pretrained(tiny_foundation["lm"])
    save_pretrained_llava(model, tmp_path / "ours", tokenizer, CLIPImageProcessor.from_pretrained(tiny_foundation["tower"]))
    pixels = np.random.default_rng(3).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    question = "What is shown in this picture?"
    max_new = 12

    # ours, before the export: the engine's prompt, ids and greedy answer
    engine = InferenceEngine.from_pretrained(tmp_path / "ours", device="cpu", attn_implementation="sdpa")
    assert engine.conv_mode == "v1_sq"
    request = engine.request(question, image)
    our_prompt = request.conversation.get_prompt()
    our_ids = engine.tokenize(request)
    our_pixels = engine.pixel_values([image])
    with torch.no_grad():
        our_new = engine.model.generate(input_ids=torch.tensor([our_ids]), pixel_values=our_pixels,
                                        max_new_tokens=max_new, do_sample=False)[0].tolist()
    our_answer = engine.generate([request], GenerationSettings(max_new_tokens=max_new))[0]
    multi = [("user", "Describe it.", 1), ("assistant", "A red square.", 0), ("user", "Why?", 0)]
    our_multi = _our_prompt("v1_sq", multi)

    capsys.readouterr()
    export.main(["--model-path", str(tmp_path / "ours"), "--output", str(tmp_path / "hf")])
    err = capsys.readouterr().err
    assert "image_aspect_ratio=pad" in err and "expand2square" in err and "square images" in err
    assert "expand2square" in (tmp_path / "hf" / "README.md").read_text()

    # transformers only from here on
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tmp_path / "hf")
    hf = LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == our_prompt
    assert processor.apply_chat_template(_hf_messages(multi), add_generation_prompt=True) == our_multi

    inputs = processor(images=image, text=prompt, return_tensors="pt")
    image_id = hf.config.image_token_index
    assert inputs["input_ids"][0].tolist() == [image_id if t == IMAGE_TOKEN_INDEX else t for t in our_ids]
    torch.testing.assert_close(inputs["pixel_values"], our_pixels)
    with torch.no_grad():
        out = hf.generate(**inputs, max_new_tokens=max_new, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    assert new == our_new
    assert processor.decode(new, skip_special_tokens=True).strip() == our_answer
