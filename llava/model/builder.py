"""The one model factory: models for training (composed from a base LM and a CLIP tower) and for inference (every
checkpoint format, decided by the files present, never by names), the one quantization config, and saving.

Formats (docs/reference.md#checkpoint-layouts):
- full:      config.json + model weights (reference key layout), tower weights optional
- projector: config.json + mm_projector.bin (stage-1 output); the LLM comes from `model_base`
- lora:      config.json + adapter_config.json + adapter_model.* + non_lora_trainables.* (+ Vit-lora/);
             the LLM comes from `model_base` (or the adapter's recorded base)
A `Vit-lora/` folder next to any of them is applied automatically. `vision_tower` replaces config.json's
`mm_vision_tower`. A LoRA checkpoint recognised as a released one is checked against the base it was trained on
(llava/model/released.py): a different base of the same shape is warned about, one of another shape is an error
naming the right base, and paths that do not exist here are errors naming the flag that replaces them.
"""

from __future__ import annotations

import enum
import logging
import sys
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionConfig,
    PretrainedConfig,
)

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_PATCH_TOKEN
from llava.model import compat, lora, released
from llava.model.config import (
    CheckpointFormatError,
    config_from_dict,
    read_config_dict,
    vision_config_of,
)
from llava.model.image_processor import CLIPImageProcessor
from llava.model.llava_llama import LlavaLlamaForCausalLM
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower, count_output_tokens
from llava.model.multimodal_projector.builder import build_vision_projector

logger = logging.getLogger(__name__)


class CheckpointFormat(enum.Enum):
    FULL = "full"
    PROJECTOR = "projector"
    LORA = "lora"


def detect_format(model_path: str | Path) -> CheckpointFormat:
    path = Path(model_path)
    if not path.is_dir():
        raise CheckpointFormatError(f"{path} is not a directory (hub ids must be downloaded first)")
    if (path / "adapter_config.json").is_file():
        return CheckpointFormat.LORA
    if compat.weight_files(path):
        return CheckpointFormat.FULL
    if (path / "mm_projector.bin").is_file() or (path / "mm_projector.safetensors").is_file():
        return CheckpointFormat.PROJECTOR
    present = sorted(p.name for p in path.iterdir())
    raise CheckpointFormatError(
        f"{path} is no LLaVA checkpoint: expected model weights, mm_projector.bin, or a LoRA adapter "
        f"(adapter_config.json); found {present}"
    )


def _resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    return {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
            "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}[dtype]


def quantization_config(bits: int | None, compute_dtype: torch.dtype, double_quant: bool = True,
                        quant_type: str = "nf4"):
    """bitsandbytes' config for 4-bit (QLoRA: NF4, double quantisation by default) or 8-bit weights; None otherwise."""
    if bits not in (4, 8):
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=bits == 4, load_in_8bit=bits == 8, bnb_4bit_compute_dtype=compute_dtype,
                              bnb_4bit_use_double_quant=double_quant, bnb_4bit_quant_type=quant_type)


def load_language_model(
    source: str | Path, config: PretrainedConfig, dtype: torch.dtype, attn_implementation: str = "sdpa",
    quantization=None, device_map=None,
):
    """The causal LM from `source` weights (reference key layout), with `config` (extra mm fields ignored);
    `quantization` is a `quantization_config(...)` or None."""
    kwargs = {"config": config, "dtype": dtype, "attn_implementation": attn_implementation}
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if device_map is not None:
        kwargs["device_map"] = device_map
    # A merged LLaVA checkpoint also holds projector and tower tensors: expected, so keep them out of
    # transformers' "unexpected keys" report (they are loaded separately below).
    lm_class = AutoModelForCausalLM._model_mapping[type(config)]
    ignored = getattr(lm_class, "_keys_to_ignore_on_load_unexpected", None)
    lm_class._keys_to_ignore_on_load_unexpected = [*(ignored or []), r"mm_projector\.", r"vision_tower\."]
    try:
        model, info = lm_class.from_pretrained(str(source), output_loading_info=True, **kwargs)
    finally:
        lm_class._keys_to_ignore_on_load_unexpected = ignored
    missing = [k for k in info.get("missing_keys", []) if "rotary_emb" not in k]
    if missing:
        raise CheckpointFormatError(f"language model weights in {source} lack {len(missing)} tensors: {missing[:5]}")
    return model


def load_vision_tower(config: PretrainedConfig, checkpoint: Path | None, dtype: torch.dtype) -> CLIPVisionTower:
    """The tower from weights inside the checkpoint when present, else from `mm_vision_tower`."""
    select = (config.mm_vision_select_layer, config.mm_vision_select_feature)
    tower_state = {}
    if checkpoint is not None and compat.weight_files(checkpoint):
        tower_state = compat.read_tensors(
            compat.weight_files(checkpoint), lambda k: k.startswith("model.vision_tower.vision_tower.")
        )
    vision_config = vision_config_of(config)
    if tower_state and vision_config is None and getattr(config, "mm_vision_tower", None):
        # Reference merged checkpoints store tower weights but only name the tower's config: use them
        # (docs/reference.md#d13-checkpoint-loading).
        _check_tower_exists(config, checkpoint)
        vision_config = CLIPVisionConfig.from_pretrained(config.mm_vision_tower)
        config.mm_vision_config = vision_config.to_dict()
    if tower_state and vision_config is not None:
        tower = CLIPVisionTower(vision_config, *select, name_or_path=getattr(config, "mm_vision_tower", None))
        state = {compat.from_reference_key(k)[len("vision_tower.") :]: v for k, v in tower_state.items()}
        result = tower.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if "position_ids" not in k]
        if missing or result.unexpected_keys:
            raise CheckpointFormatError(
                f"vision tower weights in {checkpoint} do not fit its mm_vision_config: missing {missing[:4]}, "
                f"unexpected {result.unexpected_keys[:4]}"
            )
        return tower.to(dtype)
    name = getattr(config, "mm_vision_tower", None)
    if not name:
        raise CheckpointFormatError("config names no vision tower (mm_vision_tower) and holds no tower weights")
    _check_tower_exists(config, checkpoint)
    tower = CLIPVisionTower.from_pretrained(name, *select, dtype=dtype)
    config.mm_vision_config = tower.config.to_dict()
    return tower


def _check_tower_exists(config: PretrainedConfig, checkpoint: Path | None) -> None:
    """A tower named by a local path that is not on this machine (e.g. the authors' /home/...): an error naming
    --vision-tower, instead of the hub's complaint about an invalid repo id."""
    name = getattr(config, "mm_vision_tower", None)
    if released.is_missing_local_path(name):
        raise CheckpointFormatError(released.missing_tower_message(checkpoint, str(name)))


def _base_config(lm_source: str | Path) -> dict | None:
    """The base LM's config.json as a dict (local folder, or the hub when reachable); None when unreadable."""
    try:
        if Path(lm_source).is_dir():
            return read_config_dict(lm_source)
        data, _ = PretrainedConfig.get_config_dict(str(lm_source))
        return data
    except Exception:  # offline or unknown: loading the weights reports it
        return None


def _resolve_base(path: Path, fmt: CheckpointFormat, config_data: dict, config: PretrainedConfig,
                  model_base: str | Path | None, vision_tower: str | Path | None) -> tuple[str | Path, str]:
    """The LM source of a projector or LoRA checkpoint (`model_base`, else the adapter's recorded base) and the
    hint naming the base the checkpoint was trained on (for shape errors). Paths that do not exist here are one
    error naming the flags that replace them; a released checkpoint on another base is a warning (same shapes)
    or an error (other shapes) naming the right base."""
    adapter_base = lora.adapter_base_path(path) if fmt is CheckpointFormat.LORA else None
    found = released.identify(path, config_data, adapter_base) if fmt is CheckpointFormat.LORA else None
    entry, how = found if found else (None, "")
    problems = []
    if model_base:
        lm_source, given_by = model_base, "--model-base"
        if released.is_missing_local_path(model_base):
            problems.append(f"--model-base {model_base} does not exist")
    elif adapter_base:
        lm_source, given_by = adapter_base, f"the base recorded in {path / 'adapter_config.json'}"
        if released.is_missing_local_path(adapter_base):
            problems.append(released.missing_base_message(path, adapter_base, entry))
    else:
        raise CheckpointFormatError(
            f"{path} is a {fmt.value} checkpoint: pass --model-base with the language model it was trained on"
        )
    tower = getattr(config, "mm_vision_tower", None)
    if vision_tower and released.is_missing_local_path(vision_tower):
        problems.append(f"--vision-tower {vision_tower} does not exist")
    elif released.is_missing_local_path(tower):
        problems.append(released.missing_tower_message(path, str(tower), entry))
    if problems:
        raise CheckpointFormatError("; ".join(problems))
    hint = released.right_base_hint(entry, adapter_base, lm_source)
    base_config = _base_config(lm_source)
    differences = released.shape_mismatch(base_config, config_data) if base_config else []
    if differences:
        raise CheckpointFormatError(
            f"{given_by} {lm_source} does not fit {path}: {', '.join(differences)} (base vs {path / 'config.json'})"
            f"{hint or ': pass --model-base with the language model it was trained on'}"
        )
    if entry is not None and not released.same_model(lm_source, entry.base):
        print(released.wrong_base_warning(path, entry, how, lm_source, given_by), file=sys.stderr, flush=True)
    return lm_source, hint


def _load_projector_state(model: LlavaLlamaForCausalLM, state: dict, source: Path) -> None:
    try:
        model.mm_projector.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointFormatError(
            f"projector weights in {source} do not fit mm_projector_type={model.config.mm_projector_type!r}: {err}"
        ) from err


def load_pretrained_model(
    model_path: str | Path,
    model_base: str | Path | None = None,
    model_name: str | None = None,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device_map=None,
    device: str = "cpu",
    dtype: str | torch.dtype | None = None,
    attn_implementation: str = "sdpa",
    lora_pretrain: str | Path | None = None,
    merge_lora: bool = True,
    vision_tower: str | Path | None = None,
):
    """Return `(tokenizer, model, image_processor, context_len)` for any supported checkpoint format.

    `model_name` is accepted for compatibility and ignored: the format is read from the files.
    `lora_pretrain` points at a Vit-lora folder; `<model_path>/Vit-lora` is used when it exists.
    `vision_tower` (a folder or hub id) replaces config.json's `mm_vision_tower`, e.g. a path on the machine that
    trained the checkpoint; a full checkpoint's own tower weights are still used.
    """
    del model_name
    path = Path(model_path)
    fmt = detect_format(path)
    config_data = read_config_dict(path)
    config = config_from_dict(config_data)
    if vision_tower:
        config.mm_vision_tower = str(vision_tower)
    torch_dtype = _resolve_dtype(dtype, device)
    quantization = quantization_config(4 if load_4bit else 8 if load_8bit else None, torch_dtype)

    hint = ""
    if fmt is CheckpointFormat.FULL:
        lm_source = path
        if vision_tower and released.is_missing_local_path(vision_tower):
            raise CheckpointFormatError(f"--vision-tower {vision_tower} does not exist")
    else:
        lm_source, hint = _resolve_base(path, fmt, config_data, config, model_base, vision_tower)
    language_model = load_language_model(lm_source, config, torch_dtype, attn_implementation, quantization, device_map)
    tower = load_vision_tower(config, path if fmt is CheckpointFormat.FULL else None, torch_dtype)
    model = LlavaLlamaForCausalLM(config, language_model=language_model, vision_tower=tower)

    if fmt is CheckpointFormat.FULL:
        state = compat.read_tensors(compat.weight_files(path), lambda k: ".mm_projector." in f".{k}")
        _load_projector_state(model, {k.split("mm_projector.", 1)[1]: v for k, v in state.items()}, path)
    elif fmt is CheckpointFormat.PROJECTOR:
        _load_projector_state(model, compat.load_projector(path), path)
    else:
        trainables = compat.load_non_lora_trainables(path)
        projector = {k[len("mm_projector.") :]: v for k, v in trainables.items() if k.startswith("mm_projector.")}
        _load_projector_state(model, projector, path)
        others = {k: v for k, v in trainables.items() if not k.startswith("mm_projector.")}
        if others:
            result = model.load_state_dict(others, strict=False)
            if result.unexpected_keys:
                raise CheckpointFormatError(f"{path}: non-LoRA tensors not in the model: {result.unexpected_keys[:4]}")
        try:
            lora.load_llm_adapter(model, path, merge=merge_lora)
        except lora.AdapterMismatchError as err:
            if not hint:
                raise
            raise lora.AdapterMismatchError(f"{err}{hint}") from err

    vit_dir = Path(lora_pretrain) if lora_pretrain else path / compat.VIT_LORA_DIR
    if lora_pretrain and not vit_dir.is_dir():
        raise FileNotFoundError(f"--lora_pretrain {vit_dir} is not a directory")
    if vit_dir.is_dir():
        lora.load_vit_adapter(model, vit_dir, merge=merge_lora)

    tokenizer_source = path if (path / "tokenizer_config.json").is_file() else Path(lm_source)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source))
    _add_multimodal_tokens(tokenizer, model)
    processor_source = path if (path / "preprocessor_config.json").is_file() else config.mm_vision_tower
    image_processor = CLIPImageProcessor.from_pretrained(str(processor_source))

    model.mm_projector.to(torch_dtype)
    if quantization is None:
        model.to(device=device if device_map is None else None, dtype=torch_dtype)
    model.eval()
    context_len = int(getattr(config, "max_sequence_length", None) or getattr(config, "model_max_length", 2048) or 2048)
    return tokenizer, model, image_processor, context_len


def _add_multimodal_tokens(tokenizer, model: LlavaLlamaForCausalLM) -> None:
    new = []
    if getattr(model.config, "mm_use_im_patch_token", False):
        new.append(DEFAULT_IMAGE_PATCH_TOKEN)
    if getattr(model.config, "mm_use_im_start_end", False):
        new += [DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN]
    if new and tokenizer.add_tokens(new, special_tokens=True):
        model.language_model.resize_token_embeddings(len(tokenizer))


# ---------------------------------------------------------------------- building a model for training
def training_config(lm_source: str | Path, vision_tower: str, cache_dir: str | None = None,
                    **mm_fields: object) -> PretrainedConfig:
    """The LM's config plus the tower's config and the mm fields (`mm_projector_type`, select layer, ...): the
    caller's projector type wins over a LLaVA checkpoint's own (docs/reference.md#d15-stage-2-initialisation)."""
    tower_config = CLIPVisionConfig.from_pretrained(vision_tower, cache_dir=cache_dir)
    if Path(lm_source).is_dir():
        data = read_config_dict(lm_source)
    else:
        data, _ = PretrainedConfig.get_config_dict(str(lm_source), cache_dir=cache_dir)
    data.pop("mm_vision_config", None)
    data.update(mm_fields, mm_vision_tower=vision_tower, mm_hidden_size=tower_config.hidden_size,
                mm_vision_config=tower_config.to_dict(), use_cache=False)
    return config_from_dict(data)


def image_token_count(config: PretrainedConfig) -> int:
    """Embeddings one image occupies in the LM sequence, from the configs alone (no weights): what the data
    pipeline reserves before any model loads, by the same formulas the built model uses."""
    with torch.device("meta"):
        projector = build_vision_projector(config)
    return int(projector.num_output_tokens(count_output_tokens(vision_config_of(config),
                                                               config.mm_vision_select_feature)))


def load_initial_projector(path: str | Path, config: PretrainedConfig) -> dict:
    """A stage-1 projector's tensors (mm_projector.bin or its folder), checked strictly against the config's
    projector type before any LM loads; CheckpointFormatError names the file, both types and the tensors."""
    state = compat.load_projector(path)
    with torch.device("meta"):
        probe = build_vision_projector(config)
    expected = {k: v.shape for k, v in probe.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v)}" for k, v in expected.items() if k in state and state[k].shape != v]
    if missing or unexpected or wrong:
        config_file = (Path(path) if Path(path).is_dir() else Path(path).parent) / "config.json"
        written_for = read_config_dict(config_file).get("mm_projector_type") if config_file.is_file() else None
        hint = f" (written for mm_projector_type {written_for!r})" if written_for else ""
        raise CheckpointFormatError(
            f"{path}{hint} does not fit mm_projector_type {config.mm_projector_type!r}: missing {missing[:6]}, "
            f"unexpected {unexpected[:6]}, wrong shapes {wrong[:4]}"
        )
    return state


def build_for_training(config: PretrainedConfig, lm_source: str | Path, *, vocab_size: int, dtype: torch.dtype,
                       attn_implementation: str = "sdpa", quantization=None, device_map=None,
                       projector_state: dict | None = None, chunked_loss_size: int | None = None,
                       ) -> LlavaLlamaForCausalLM:
    """LM (optionally quantised, embeddings grown to `vocab_size`) + CLIP tower + projector (stage 1's when
    `projector_state` is given), composed; what trains is the stage policy's decision (llava/train/stage.py)."""
    tower = CLIPVisionTower.from_pretrained(config.mm_vision_tower, config.mm_vision_select_layer,
                                            config.mm_vision_select_feature, dtype=dtype)
    language_model = load_language_model(lm_source, config, dtype, attn_implementation, quantization, device_map)
    if vocab_size > language_model.get_input_embeddings().weight.shape[0]:
        language_model.resize_token_embeddings(vocab_size)
    model = LlavaLlamaForCausalLM(config, language_model=language_model, vision_tower=tower,
                                  chunked_loss_size=chunked_loss_size)
    model.mm_projector.to(dtype)
    if projector_state is not None:
        model.mm_projector.load_state_dict(projector_state, strict=True)
    return model


# ---------------------------------------------------------------------- saving a full model
def config_for_saving(model: LlavaLlamaForCausalLM) -> dict:
    """Flat config.json: the LM's fields + mm fields + the tower's config, so it reloads offline."""
    data = model.config.to_dict()
    data["mm_vision_config"] = model._tower().config.to_dict()
    data["mm_hidden_size"] = model._tower().hidden_size
    data["architectures"] = ["LlavaLlamaForCausalLM"]
    data["dtype"] = str(model.dtype).replace("torch.", "")
    return data


def save_pretrained_llava(
    model: LlavaLlamaForCausalLM, output_dir: str | Path, tokenizer=None, image_processor=None,
    max_shard_size: str = "5GB", state_dict: dict | None = None,
) -> None:
    """Write a full (merged) checkpoint in the reference key layout, as safetensors shards.

    `state_dict` (internal names) replaces `model.state_dict()`, e.g. tensors gathered from ZeRO-3 partitions.
    """
    import json

    from huggingface_hub import save_torch_state_dict

    if not isinstance(model.language_model, torch.nn.Module) or hasattr(model.language_model, "peft_config"):
        raise ValueError("merge LoRA adapters before saving a full model (scripts/merge_lora_weights.py)")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = model.state_dict() if state_dict is None else state_dict
    state = {compat.to_reference_key(k): v for k, v in state.items() if "position_ids" not in k}
    save_torch_state_dict(state, str(out), max_shard_size=max_shard_size)
    (out / "config.json").write_text(json.dumps(config_for_saving(model), indent=2, sort_keys=True))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    if image_processor is not None:
        image_processor.save_pretrained(str(out))
