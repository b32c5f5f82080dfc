"""The released SQ-LLaVA checkpoints and the models they were trained on (docs/reference.md#released-checkpoints), and the checks that keep a
LoRA checkpoint on its own base and tower.

A LoRA merges onto any base of the same shape without an error, so a wrong `--model-base` (e.g. Vicuna for
`ZachSun/sqllava-lora-7b`, which was trained on ShareGPT4V's stage-1 LLM) only shows as worse scores. The released
configs may also name paths that existed only on the machine that trained them. The loader uses these helpers to
warn about a base known to be wrong, to name the right base when the shapes do not fit, and to say which flag
replaces a path that does not exist here (`--model-base`, `--vision-tower`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

SHAREGPT4V_7B_LLM = "Lin-Chen/ShareGPT4V-7B_Pretrained_vit-large336-l12_vicuna-7b-v1.5"
SHAREGPT4V_7B_TOWER = "Lin-Chen/ShareGPT4V-7B_Pretrained_vit-large336-l12"
SHAREGPT4V_13B_LLM = "Lin-Chen/ShareGPT4V-13B_Pretrained_vit-large336-l12_vicuna-13b-v1.5"
SHAREGPT4V_13B_TOWER = "Lin-Chen/ShareGPT4V-13B_Pretrained_vit-large336-l12"
CLIP_L14_336 = "openai/clip-vit-large-patch14-336"
DOWNLOAD_SCRIPT = "scripts/download_models.sh"
LOCAL_DIR = Path("checkpoints")  # where scripts/download_models.sh puts <repo name>


@dataclasses.dataclass(frozen=True)
class Released:
    """A released LoRA checkpoint: its hub repo, the LLM its LoRA was trained on, and its vision tower."""

    repo: str
    base: str
    tower: str
    download: str  # the scripts/download_models.sh MODELS group that fetches all three

    @property
    def name(self) -> str:
        return _last(self.repo)


RELEASED = (
    Released("ZachSun/sqllava-lora-7b", SHAREGPT4V_7B_LLM, SHAREGPT4V_7B_TOWER, "7b"),
    Released("ZachSun/sqllava-lora-13b", SHAREGPT4V_13B_LLM, SHAREGPT4V_13B_TOWER, "13b"),
    Released("ZachSun/sqllava-13b-vlora-665k", "lmsys/vicuna-13b-v1.5", CLIP_L14_336, "13b-665k"),
)
# Towers a config may name by a local folder of the same name: folder name -> hub id.
KNOWN_TOWERS = {_t.rsplit("/", 1)[-1].lower(): _t for _t in
                (SHAREGPT4V_7B_TOWER, SHAREGPT4V_13B_TOWER, CLIP_L14_336, "openai/clip-vit-large-patch14")}
# The LM dimensions a LoRA, the projector and the config all depend on.
SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")


def _last(name: str | Path) -> str:
    return str(name).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def names_of(source: str | Path) -> set[str]:
    """The (lower-case) names a model source goes by: its last path component, the repo of a Hugging Face cache
    path (`.../models--Org--Name/snapshots/<hash>`), and the `_name_or_path` in a local folder's config.json."""
    text = str(source).replace("\\", "/").rstrip("/")
    names = {_last(text).lower()}
    for part in text.split("/"):
        if part.startswith("models--"):
            names.add(part.split("--")[-1].lower())
    config = Path(text) / "config.json"
    if config.is_file():
        try:
            recorded = json.loads(config.read_text()).get("_name_or_path")
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, str) and recorded:
            names.add(_last(recorded).lower())
    return names


def is_missing_local_path(name: str | Path | None) -> bool:
    """True for a name that can only be a local path (absolute, ~, ./, ../, or with two or more `/`) and does
    not exist here; hub ids (`org/name`) are left to the hub."""
    if not name:
        return False
    text = str(name)
    if Path(text).expanduser().exists():
        return False
    return (text.startswith(("/", "~", "./", "../", ".\\", "..\\")) or text.count("/") >= 2
            or re.match(r"^[A-Za-z]:[\\/]", text) is not None)


def identify(checkpoint: str | Path, config: dict, adapter_base: str | None) -> tuple[Released, str] | None:
    """The released checkpoint `checkpoint` is, and how it was recognised; None when it is none of them.

    In order: the adapter's recorded base names a released base; config.json's `mm_vision_tower` names a released
    tower; the folder is named after a released repo (`sqllava-lora-7b`, or its hub cache folder) and the adapter
    records no base that exists here (the released configs name paths on the authors' machine)."""
    if adapter_base:
        base_names = names_of(adapter_base)
        for entry in RELEASED:
            if _last(entry.base).lower() in base_names and "sharegpt4v" in entry.base.lower():
                return entry, f"its adapter_config.json names the base {adapter_base}"
    tower = config.get("mm_vision_tower") or config.get("vision_tower")
    if tower:
        tower_names = names_of(tower)
        for entry in RELEASED:
            if "sharegpt4v" in entry.tower.lower() and _last(entry.tower).lower() in tower_names:
                return entry, f"its config.json names the vision tower {tower}"
    if adapter_base is None or is_missing_local_path(adapter_base):
        folder_names = names_of(checkpoint)
        for entry in RELEASED:
            if entry.name.lower() in folder_names:
                return entry, f"its folder is named {entry.name}"
    return None


def same_model(source: str | Path, expected: str) -> bool:
    """Whether `source` (a hub id or a local folder) is `expected`, by name (see `names_of`)."""
    return _last(expected).lower() in names_of(source)


def suggestion(hub_id: str) -> str:
    """`hub_id`, plus its local copy when scripts/download_models.sh has put one under ./checkpoints."""
    local = LOCAL_DIR / _last(hub_id)
    return f"{hub_id} (or its download {local})" if (local / "config.json").is_file() else hub_id


def wrong_base_warning(checkpoint: str | Path, entry: Released, how: str, base: str | Path, given_by: str) -> str:
    return (
        f"[llava] WARNING: {checkpoint} is the released {entry.repo} ({how}); its LoRA was trained on "
        f"{entry.base}, but {given_by} is {base}. A base of the same shape loads without error and merges the LoRA "
        f"onto the wrong weights (scores degrade silently): pass --model-base {suggestion(entry.base)} "
        f"(`MODELS={entry.download} bash {DOWNLOAD_SCRIPT}` downloads it)."
    )


def shape_mismatch(base_config: dict, config: dict) -> list[str]:
    """`field base-value vs checkpoint-value` for every LM dimension that differs (fields missing on either side
    are not compared)."""
    out = []
    for field in SHAPE_FIELDS:
        a, b = base_config.get(field), config.get(field)
        if a is not None and b is not None and a != b:
            out.append(f"{field} {a} vs {b}")
    return out


def right_base_hint(entry: Released | None, adapter_base: str | None, lm_source: str | Path) -> str:
    """The sentence naming the base a LoRA checkpoint was trained on ('' when unknown or it is `lm_source`)."""
    if entry is not None and not same_model(lm_source, entry.base):
        return (f"; it is the released {entry.repo}, trained on {entry.base}: pass --model-base "
                f"{suggestion(entry.base)} (`MODELS={entry.download} bash {DOWNLOAD_SCRIPT}` downloads it)")
    if adapter_base and str(adapter_base) != str(lm_source) and not is_missing_local_path(adapter_base):
        return f"; its adapter_config.json records the base {adapter_base}: pass --model-base {adapter_base}"
    if adapter_base and str(adapter_base) != str(lm_source):
        return f"; its adapter_config.json records the base {adapter_base} (not on this machine)"
    return ""


def _not_here(name: str) -> str:
    if Path(name).expanduser().is_absolute():
        return "which does not exist on this machine"
    return f"which does not exist (relative to {Path.cwd()})"


def missing_base_message(checkpoint: str | Path, adapter_base: str, entry: Released | None) -> str:
    where = (f"pass --model-base {suggestion(entry.base)}" if entry is not None
             else f"pass --model-base with a local copy or the hub id of {_last(adapter_base)}")
    return (f"{Path(checkpoint) / 'adapter_config.json'} names the base LLM {adapter_base} (base_model_name_or_path), "
            f"{_not_here(adapter_base)}: {where}")


def missing_tower_message(checkpoint: str | Path | None, tower: str, entry: Released | None = None) -> str:
    hub = entry.tower if entry is not None else KNOWN_TOWERS.get(_last(tower).lower())
    where = (f"pass --vision-tower {suggestion(hub)}" if hub
             else f"pass --vision-tower with a local copy or the hub id of {_last(tower)}")
    file = Path(checkpoint) / "config.json" if checkpoint is not None else "the config"
    return f"{file} names the vision tower {tower} (mm_vision_tower), {_not_here(tower)}: {where}"
