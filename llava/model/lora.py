"""LoRA on the language model and on the vision tower: attach, save and load in the reference layouts, merge."""

from __future__ import annotations

import json
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn

from llava.model import compat
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower

VIT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


class AdapterMismatchError(ValueError):
    """An adapter does not fit the model it is loaded into; the message names the tensors."""


def linear_leaf_names(module: nn.Module, exclude: tuple[str, ...] = ("lm_head",)) -> list[str]:
    """Last name components of every nn.Linear in `module` (the reference's LoRA target rule, docs/reference.md#lora-targets-and-settings)."""
    names = set()
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear) and not any(part in exclude for part in name.split(".")):
            names.add(name.split(".")[-1])
    return sorted(names)


def llm_lora_config(language_model: nn.Module, r: int, alpha: int, dropout: float, bias: str = "none") -> LoraConfig:
    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, bias=bias, task_type="CAUSAL_LM",
        target_modules=linear_leaf_names(language_model),
    )


def vit_lora_config(r: int, alpha: int, dropout: float = 0.2) -> LoraConfig:
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none", target_modules=list(VIT_LORA_TARGETS))


def add_llm_lora(model, config: LoraConfig) -> None:
    """Wrap `model.language_model` in PEFT (adapter keys then match the reference's adapter_model)."""
    model.language_model = get_peft_model(model.language_model, config)


def add_vit_lora(model, config: LoraConfig) -> None:
    """Wrap `model.vision_tower` (the CLIPVisionTower) in PEFT, as the reference does for Vit-lora."""
    if not isinstance(model.vision_tower, CLIPVisionTower):
        raise ValueError("the vision tower already carries an adapter")
    model.vision_tower = get_peft_model(model.vision_tower, config)


def load_adapter_state(peft_model: PeftModel, state: dict, source: Path) -> None:
    """Load adapter tensors into a PEFT-wrapped module; AdapterMismatchError names missing, extra or misshapen ones."""
    expected = set(get_peft_model_state_dict(peft_model).keys())
    given = set(state)
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise AdapterMismatchError(
            f"adapter {source} does not fit this model: missing {missing[:4]}{'...' if len(missing) > 4 else ''}"
            f" ({len(missing)}), unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''} ({len(unexpected)})"
        )
    own = get_peft_model_state_dict(peft_model)
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise AdapterMismatchError(f"adapter {source}: {key} has shape {tuple(value.shape)}, model expects "
                                       f"{tuple(own[key].shape)} (wrong rank or wrong base model?)")
    set_peft_model_state_dict(peft_model, state)


def _lora_config_from(data: dict) -> LoraConfig:
    keep = {k: v for k, v in data.items() if k in LoraConfig.__dataclass_fields__}
    keep.pop("base_model_name_or_path", None)
    keep.pop("revision", None)
    keep["inference_mode"] = False
    return LoraConfig(**keep)


def load_llm_adapter(model, directory: str | Path, merge: bool = True) -> None:
    """Apply an LLM LoRA adapter dir (ours or the reference's, .bin or .safetensors); merge into the weights."""
    directory = Path(directory)
    config_data, raw = compat.read_adapter(directory)
    config = _lora_config_from(config_data)
    config.task_type = "CAUSAL_LM"
    add_llm_lora(model, config)
    load_adapter_state(model.language_model, compat.llm_adapter_state(raw), directory)
    if merge:
        model.language_model = model.language_model.merge_and_unload()


def load_vit_adapter(model, directory: str | Path, merge: bool = True) -> None:
    """Apply a Vit-lora adapter dir (reference key layout) to the tower; merge into the weights."""
    directory = Path(directory)
    config_data, raw = compat.read_adapter(directory)
    config = _lora_config_from(config_data)
    config.task_type = None
    add_vit_lora(model, config)
    load_adapter_state(model.vision_tower, compat.vit_adapter_from_reference(raw), directory)
    if merge:
        model.vision_tower = model.vision_tower.merge_and_unload()


def save_llm_adapter(model, directory: str | Path, state: dict | None = None) -> None:
    """adapter_config.json + adapter_model.safetensors for the LLM LoRA (reference key layout)."""
    directory = Path(directory)
    peft_model = model.language_model
    state = state if state is not None else get_peft_model_state_dict(peft_model)
    directory.mkdir(parents=True, exist_ok=True)
    peft_model.peft_config["default"].save_pretrained(str(directory))
    compat.save_state(state, directory, "adapter_model", bin_twin=False)


def save_vit_adapter(model, directory: str | Path, state: dict | None = None) -> None:
    """`Vit-lora/` with reference keys `base_model.model.vision_tower.vision_model.*`."""
    directory = Path(directory)
    peft_model = model.vision_tower
    state = state if state is not None else get_peft_model_state_dict(peft_model)
    directory.mkdir(parents=True, exist_ok=True)
    peft_model.peft_config["default"].save_pretrained(str(directory))
    compat.save_state(compat.vit_adapter_to_reference(state), directory, "adapter_model", bin_twin=False)


def adapter_base_path(directory: str | Path) -> str | None:
    file = Path(directory) / "adapter_config.json"
    return json.loads(file.read_text()).get("base_model_name_or_path") if file.is_file() else None
