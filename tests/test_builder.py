"""load_pretrained_model on every reference checkpoint format, written here by hand in the reference layout."""

from __future__ import annotations

import json

import pytest
import torch

from llava.model import compat
from llava.model.builder import CheckpointFormatError, load_pretrained_model, save_pretrained_llava


def _reference_config(model, model_type: str = "llama", **extra) -> dict:
    """A reference-style flat config.json: the LM's fields + mm fields, tower named by path only."""
    data = model.config.to_dict()
    data.pop("mm_vision_config", None)
    data.update(model_type=model_type, architectures=["LlavaLlamaForCausalLM"], mm_hidden_size=32, **extra)
    return data


def _reference_state(model) -> dict:
    return {compat.to_reference_key(k): v.clone() for k, v in model.state_dict().items() if "position_ids" not in k}


def _assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a.float(), b.float(), rtol=0, atol=0)


@pytest.mark.parametrize("model_type", ["llama", "llava"])
def test_full_merged_reference_checkpoint(tmp_path, tiny_model_factory, tiny_foundation, model_type):
    model = tiny_model_factory("cluster", seed=1)
    state = _reference_state(model)
    tower_key = "model.vision_tower.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight"
    assert tower_key in state  # transformers-4 layout of the tower, as released checkpoints have it
    state[tower_key] = state[tower_key] + 1.0  # a fine-tuned tower: must be loaded, not re-read from the hub
    state["model.layers.0.mlp.up_proj.weight"] += 0.5
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(_reference_config(model, model_type)))
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_foundation["lm"]).save_pretrained(tmp_path)

    _, loaded, processor, context_len = load_pretrained_model(tmp_path)
    own = {compat.to_reference_key(k): v for k, v in loaded.state_dict().items() if "position_ids" not in k}
    assert set(own) == set(state)
    for key, value in state.items():
        _assert_same(own[key], value)
    assert context_len == 2048 and processor.crop_size["height"] == 32


def test_projector_only_checkpoint_with_base(tmp_path, tiny_model_factory, tiny_foundation):
    model = tiny_model_factory("mlp2x_gelu", seed=2)
    state = {f"model.mm_projector.{k}": v for k, v in model.mm_projector.state_dict().items()}
    torch.save(state, tmp_path / "mm_projector.bin")
    (tmp_path / "config.json").write_text(json.dumps(_reference_config(model)))
    _, loaded, _, _ = load_pretrained_model(tmp_path, model_base=tiny_foundation["lm"])
    for key, value in model.state_dict().items():
        _assert_same(loaded.state_dict()[key], value)

    with pytest.raises(CheckpointFormatError, match="--model-base"):
        load_pretrained_model(tmp_path)


def test_projector_of_another_type_is_named_error(tmp_path, tiny_model_factory, tiny_foundation):
    model = tiny_model_factory("mlp2x_gelu")
    torch.save({f"model.mm_projector.{k}": v for k, v in model.mm_projector.state_dict().items()},
               tmp_path / "mm_projector.bin")
    (tmp_path / "config.json").write_text(json.dumps(_reference_config(model, mm_projector_type="cluster")))
    with pytest.raises(CheckpointFormatError, match="mm_projector_type='cluster'"):
        load_pretrained_model(tmp_path, model_base=tiny_foundation["lm"])


def _lora_pair(shape_out: int, shape_in: int, r: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(r, shape_in, generator=g) * 0.1, torch.randn(shape_out, r, generator=g) * 0.1


def test_lora_checkpoint_with_vit_lora(tmp_path, tiny_model_factory, tiny_foundation):
    """base + adapter_model.bin (with the reference's duplicate ViT tensors) + non_lora_trainables.bin + Vit-lora/."""
    model = tiny_model_factory("cluster", seed=4)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    r, alpha = 4, 8
    llm_targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    adapter, expected = {}, {}
    for i in range(2):
        for j, name in enumerate(llm_targets):
            group = "self_attn" if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            weight = base[f"language_model.model.layers.{i}.{group}.{name}.weight"]
            a, b = _lora_pair(weight.shape[0], weight.shape[1], r, seed=10 * i + j)
            prefix = f"base_model.model.model.layers.{i}.{group}.{name}"
            adapter[f"{prefix}.lora_A.weight"], adapter[f"{prefix}.lora_B.weight"] = a, b
            expected[f"language_model.model.layers.{i}.{group}.{name}.weight"] = weight + (alpha / r) * b @ a
    vit_targets = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "out_proj": "self_attn",
                   "fc1": "mlp", "fc2": "mlp"}
    vit = {}
    for i in range(2):
        for j, (name, group) in enumerate(vit_targets.items()):
            weight = base[f"vision_tower.vision_tower.encoder.layers.{i}.{group}.{name}.weight"]
            a, b = _lora_pair(weight.shape[0], weight.shape[1], r, seed=100 + 10 * i + j)
            key = f"base_model.model.vision_tower.vision_model.encoder.layers.{i}.{group}.{name}"
            vit[f"{key}.lora_A.weight"], vit[f"{key}.lora_B.weight"] = a, b
            # the reference also stores these (zero-gradient) copies in the LLM adapter
            # (docs/reference.md#d14-duplicate-vit-lora-tensors)
            adapter[f"base_model.model.model.vision_tower.vision_tower.vision_model.encoder.layers.{i}.{group}.{name}"
                    f".lora_A.weight"] = a
            expected[f"vision_tower.vision_tower.encoder.layers.{i}.{group}.{name}.weight"] = weight + (alpha / r) * b @ a
    projector = {k: torch.randn_like(v) for k, v in model.mm_projector.state_dict().items()}
    for k, v in projector.items():
        expected[f"mm_projector.{k}"] = v

    lora_cfg = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "lora_dropout": 0.05, "bias": "none",
                "target_modules": llm_targets, "task_type": "CAUSAL_LM", "base_model_name_or_path": "unused",
                "fan_in_fan_out": False, "inference_mode": True}
    (tmp_path / "adapter_config.json").write_text(json.dumps(lora_cfg))
    torch.save(adapter, tmp_path / "adapter_model.bin")
    torch.save({f"base_model.model.model.mm_projector.{k}": v for k, v in projector.items()},
               tmp_path / "non_lora_trainables.bin")
    (tmp_path / "config.json").write_text(json.dumps(_reference_config(model)))
    (tmp_path / "Vit-lora").mkdir()
    vit_cfg = dict(lora_cfg, target_modules=list(vit_targets), task_type=None, lora_dropout=0.2)
    (tmp_path / "Vit-lora" / "adapter_config.json").write_text(json.dumps(vit_cfg))
    torch.save(vit, tmp_path / "Vit-lora" / "adapter_model.bin")

    _, loaded, _, _ = load_pretrained_model(tmp_path, model_base=tiny_foundation["lm"])
    got = loaded.state_dict()
    assert set(got) == set(base)  # merged: no PEFT wrappers left
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6)
    untouched = "language_model.model.embed_tokens.weight"
    _assert_same(got[untouched], base[untouched])

    # A rank mismatch is an error naming the tensor, not a silent partial load.
    adapter_bad = dict(adapter)
    adapter_bad.pop("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
    torch.save(adapter_bad, tmp_path / "adapter_model.bin")
    with pytest.raises(ValueError, match="q_proj.lora_A"):
        load_pretrained_model(tmp_path, model_base=tiny_foundation["lm"])


def test_our_full_save_round_trips(tmp_path, tiny_model_factory, tiny_foundation):
    from transformers import AutoTokenizer, CLIPImageProcessor

    model = tiny_model_factory("cross_attn", seed=5)
    tokenizer = AutoTokenizer.from_pretrained(tiny_foundation["lm"])
    save_pretrained_llava(model, tmp_path, tokenizer, CLIPImageProcessor.from_pretrained(tiny_foundation["tower"]))
    _, loaded, _, _ = load_pretrained_model(tmp_path)
    for key, value in model.state_dict().items():
        _assert_same(loaded.state_dict()[key], value)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointFormatError, match="no LLaVA checkpoint"):
        load_pretrained_model(tmp_path)
