"""Reference checkpoint formats: state-dict key maps and the files mm_projector.bin, non_lora_trainables.bin, Vit-lora/.

Internal module names (composed model) and reference names (docs/reference.md#checkpoint-layouts) differ only by prefixes:

    internal                                   reference
    language_model.model.X                 <-> model.X
    language_model.lm_head.X               <-> lm_head.X
    mm_projector.X                         <-> model.mm_projector.X
    vision_tower.vision_tower.X            <-> model.vision_tower.vision_tower.vision_model.X

transformers 5's CLIPVisionModel has no `vision_model` level, hence the last line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

logger = logging.getLogger(__name__)

PROJECTOR_FILE = "mm_projector.bin"
NON_LORA_FILE = "non_lora_trainables.bin"
VIT_LORA_DIR = "Vit-lora"
_TOWER_INTERNAL = "vision_tower.vision_tower."
_TOWER_REFERENCE = "model.vision_tower.vision_tower.vision_model."


def to_reference_key(key: str) -> str:
    if key.startswith("language_model.model."):
        return key[len("language_model.") :]
    if key.startswith("language_model.lm_head."):
        return key[len("language_model.") :]
    if key.startswith("mm_projector."):
        return "model." + key
    if key.startswith(_TOWER_INTERNAL):
        return _TOWER_REFERENCE + key[len(_TOWER_INTERNAL) :]
    raise KeyError(f"no reference name for parameter {key!r}")


def from_reference_key(key: str) -> str:
    for prefix in (_TOWER_REFERENCE, "model.vision_tower.vision_tower."):
        if key.startswith(prefix):
            return _TOWER_INTERNAL + key[len(prefix) :]
    if key.startswith("model.mm_projector."):
        return key[len("model.") :]
    if key.startswith("model.") or key.startswith("lm_head."):
        return "language_model." + key
    raise KeyError(f"unrecognised reference parameter name {key!r}")


# ---------------------------------------------------------------------- raw file access
def torch_load(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a `.bin` state dict safely (tensors only, no pickled code)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def weight_files(directory: str | Path) -> list[Path]:
    """Model weight shards of a checkpoint directory (safetensors preferred over .bin)."""
    directory = Path(directory)
    for pattern in ("model*.safetensors", "pytorch_model*.bin"):
        files = sorted(p for p in directory.glob(pattern) if not p.name.endswith(".index.json"))
        if files:
            return files
    return []


def read_tensors(files: Iterable[Path], key_filter=lambda k: True) -> dict[str, torch.Tensor]:
    """Load only the tensors whose (file) key passes `key_filter`, from safetensors or .bin files."""
    out: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    if key_filter(key):
                        out[key] = f.get_tensor(key)
        else:
            out.update({k: v for k, v in torch_load(file).items() if key_filter(k)})
    return out


def save_state(state: Mapping[str, torch.Tensor], directory: Path, stem: str, *, bin_twin: bool) -> None:
    """Write `stem.safetensors`, plus the reference `.bin` name when `bin_twin`."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    save_file(tensors, str(directory / f"{stem}.safetensors"), metadata={"format": "pt"})
    if bin_twin:
        torch.save(tensors, directory / f"{stem}.bin")


def _find(directory: Path, stem: str) -> Path | None:
    for suffix in (".safetensors", ".bin"):
        if (directory / f"{stem}{suffix}").is_file():
            return directory / f"{stem}{suffix}"
    return None


def _load_any(path: Path) -> dict[str, torch.Tensor]:
    return read_tensors([path])


# ---------------------------------------------------------------------- mm_projector.bin (stage 1)
def save_projector(projector_state: Mapping[str, torch.Tensor], directory: str | Path) -> None:
    """`mm_projector.bin` (+ safetensors twin) with reference keys `model.mm_projector.*`."""
    state = {f"model.mm_projector.{k}": v for k, v in projector_state.items()}
    save_state(state, Path(directory), "mm_projector", bin_twin=True)


def load_projector(path: str | Path) -> dict[str, torch.Tensor]:
    """Projector tensors keyed relative to the projector, from a file or a directory holding one."""
    path = Path(path)
    if path.is_dir():
        found = _find(path, "mm_projector")
        if found is None:
            raise FileNotFoundError(f"no mm_projector.safetensors or {PROJECTOR_FILE} in {path}")
        path = found
    state = _load_any(path)
    out = {k.split("mm_projector.", 1)[1]: v for k, v in state.items() if "mm_projector." in k}
    if not out:
        raise KeyError(f"{path} holds no 'mm_projector.*' tensors (keys: {sorted(state)[:5]}...)")
    return out


# ---------------------------------------------------------------------- non_lora_trainables.bin (stage 2)
def save_non_lora_trainables(internal_state: Mapping[str, torch.Tensor], directory: str | Path) -> None:
    """Trainable non-LoRA tensors under PEFT naming, `base_model.model.<reference key>`."""
    state = {"base_model.model." + to_reference_key(k): v for k, v in internal_state.items()}
    save_state(state, Path(directory), "non_lora_trainables", bin_twin=True)


def load_non_lora_trainables(directory: str | Path) -> dict[str, torch.Tensor]:
    """Internal-keyed tensors from a stage-2 directory (reference renaming: strip `base_model.`, then `model.`)."""
    found = _find(Path(directory), "non_lora_trainables")
    if found is None:
        raise FileNotFoundError(f"no non_lora_trainables.safetensors or {NON_LORA_FILE} in {directory}")
    out = {}
    for key, value in _load_any(found).items():
        key = key[len("base_model.") :] if key.startswith("base_model.") else key
        key = key[len("model.") :] if key.startswith("model.model.") or key.startswith("model.lm_head.") else key
        out[from_reference_key(key)] = value
    return out


# ---------------------------------------------------------------------- LoRA adapters
def llm_adapter_state(raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An LLM adapter's tensors minus the duplicate ViT-LoRA copies the reference stores there
    (docs/reference.md#d14-duplicate-vit-lora-tensors)."""
    kept = {k: v for k, v in raw.items() if ".vision_tower." not in k}
    dropped = len(raw) - len(kept)
    if dropped:
        logger.info("ignoring %d duplicate ViT-LoRA tensors in the LLM adapter (the reference stores copies there; see docs/reference.md#d14-duplicate-vit-lora-tensors)", dropped)
    return kept


def vit_adapter_to_reference(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PEFT keys of our wrapped tower -> `base_model.model.vision_tower.vision_model.*` (reference Vit-lora)."""
    out = {}
    for key, value in state.items():
        if ".vision_tower.vision_model." not in key:
            key = key.replace(".vision_tower.", ".vision_tower.vision_model.", 1)
        out[key] = value
    return out


def vit_adapter_from_reference(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.replace(".vision_tower.vision_model.", ".vision_tower.", 1): v for k, v in state.items()}


def read_adapter(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter_config dict, raw adapter tensors) from a PEFT adapter directory."""
    directory = Path(directory)
    config_file = directory / "adapter_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: not a LoRA adapter directory")
    weights = _find(directory, "adapter_model")
    if weights is None:
        raise FileNotFoundError(f"no adapter_model.safetensors or adapter_model.bin in {directory}")
    return json.loads(config_file.read_text()), _load_any(weights)
