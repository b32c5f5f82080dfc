"""Stage policy in one place: which parameters train, their optimizer groups, what is saved, how it is restored."""

from __future__ import annotations

import contextlib
import enum
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import get_peft_model_state_dict
from torch import nn

from llava.model import compat, lora
from llava.model.builder import config_for_saving, save_pretrained_llava

COMPONENTS = ("language_model", "mm_projector", "vision_tower")


class Stage(str, enum.Enum):
    """The three recipes; every checkpoint-N holds the final file set (docs/reference.md#d22-checkpoint-contents-and-resuming).
    ViT LoRA trains (docs/reference.md#d1-vit-lora-trains).

    - pretrain (`--tune_mm_mlp_adapter`): projector (+ ViT LoRA) train; saves mm_projector.bin, config.json,
      Vit-lora/.
    - lora (`--lora_enable`): LLM LoRA + projector (unless frozen) + ViT LoRA or the whole tower; saves the LLM
      adapter, non_lora_trainables.bin, Vit-lora/, config.json, tokenizer and image processor.
    - full (neither): LM (unless --freeze_backbone) + projector (+ tower); saves a merged model (+ Vit-lora/).
    """

    PRETRAIN = "pretrain"
    LORA = "lora"
    FULL = "full"


@dataclass(frozen=True)
class StagePlan:
    """What trains in this run; derived from the flags only, so it is known before the model exists."""

    stage: Stage
    llm_lora: bool
    vit_lora: bool
    train_lm: bool
    train_projector: bool
    train_tower: bool

    @property
    def trains_language_model(self) -> bool:
        """Whether any LM parameter trains (LLM LoRA or the LM itself). When none does (stage 1: projector and/or
        ViT LoRA; a full finetune with --freeze_backbone), a text-only batch reaches no trained parameter, so the
        model must run the vision path on every batch (`run_vision_on_text_only_batches`) for its loss to have
        a grad_fn."""
        return self.llm_lora or self.train_lm

    @property
    def saved_files(self) -> list[str]:
        vit = [f"{compat.VIT_LORA_DIR}/"] if self.vit_lora else []
        if self.stage is Stage.PRETRAIN:
            return ["mm_projector.bin", "mm_projector.safetensors", "config.json", *vit]
        if self.stage is Stage.LORA:
            return ["adapter_config.json", "adapter_model.safetensors", "non_lora_trainables.bin",
                    "non_lora_trainables.safetensors", *vit, "config.json", "tokenizer", "preprocessor_config.json"]
        return ["model*.safetensors (merged)", *vit, "config.json", "tokenizer", "preprocessor_config.json"]


def plan_for(model_args, training_args) -> StagePlan:
    if model_args.tune_mm_mlp_adapter:
        stage = Stage.PRETRAIN
    elif training_args.lora_enable:
        stage = Stage.LORA
    else:
        stage = Stage.FULL
    return StagePlan(
        stage=stage,
        llm_lora=stage is Stage.LORA,
        vit_lora=training_args.vit_lora_enable,
        train_lm=stage is Stage.FULL and not model_args.freeze_backbone,
        train_projector=not training_args.freeze_mm_mlp_adapter,
        train_tower=model_args.unfreeze_mm_vision_tower,
    )


# ---------------------------------------------------------------------- trainability
def apply(model, plan: StagePlan, model_args, training_args) -> None:
    """Freeze everything, then attach LoRA and unfreeze exactly what `plan` trains."""
    model.requires_grad_(False)
    if plan.llm_lora:
        if training_args.bits in (4, 8):
            from peft import prepare_model_for_kbit_training

            model.language_model = prepare_model_for_kbit_training(
                model.language_model, use_gradient_checkpointing=bool(training_args.gradient_checkpointing),
                gradient_checkpointing_kwargs={"use_reentrant": False},
            )
        config = lora.llm_lora_config(model.language_model, training_args.lora_r, training_args.lora_alpha,
                                      training_args.lora_dropout, training_args.lora_bias)
        lora.add_llm_lora(model, config)  # PEFT leaves only the adapters (and chosen biases) trainable
    if plan.train_lm:
        model.language_model.requires_grad_(True)
    if plan.train_projector:
        model.mm_projector.requires_grad_(True)
    if plan.train_tower:
        model._tower().vision_tower.requires_grad_(True)
    if plan.vit_lora:
        lora.add_vit_lora(model, lora.vit_lora_config(training_args.lora_r_vit, training_args.lora_alpha_vit,
                                                      training_args.lora_dropout_vit))
        if model_args.pretrain_lora:
            source = Path(model_args.pretrain_lora)
            source = source if source.is_dir() else source.parent
            _, raw = compat.read_adapter(source)
            lora.load_adapter_state(model.vision_tower, compat.vit_adapter_from_reference(raw), source)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("these flags leave no parameter trainable")


def component_of(name: str) -> str:
    return name.split(".", 1)[0]


def _numel(p: torch.Tensor) -> int:
    return int(getattr(p, "ds_numel", p.numel()))  # ZeRO-3 partitions report their full size here


def _no_decay_names(model: nn.Module) -> set[str]:
    """Biases, norm weights and scalars: the parameters weight decay must not touch."""
    names = set()
    for mod_name, module in model.named_modules():
        is_norm = "norm" in type(module).__name__.lower()
        for p_name, p in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if is_norm or p_name == "bias" or _numel(p) == 1:
                names.add(full)
    return names


def _order(component: str) -> int:
    return COMPONENTS.index(component) if component in COMPONENTS else len(COMPONENTS)


def component_lr(component: str, training_args) -> float:
    """Each of --mm_projector_lr and --vision_tower_lr works on its own (unlike the reference)."""
    special = {"mm_projector": training_args.mm_projector_lr, "vision_tower": training_args.vision_tower_lr}
    lr = special.get(component)
    return training_args.learning_rate if lr is None else lr


def optimizer_groups(model: nn.Module, training_args) -> list[dict]:
    """Param groups per (component, decay), in COMPONENTS order; frozen parameters never enter the optimizer."""
    no_decay = _no_decay_names(model)
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((component_of(name), name not in no_decay), []).append(p)
    return [
        {"params": params, "lr": component_lr(component, training_args),
         "weight_decay": training_args.weight_decay if decay else 0.0}
        for (component, decay), params in sorted(groups.items(), key=lambda kv: (_order(kv[0][0]), not kv[0][1]))
    ]  # the LM first: HF logs the first group's learning rate


def summary(model: nn.Module, plan: StagePlan, training_args) -> str:
    """A short table: trainable parameters per component, the LR of each, and what will be saved."""
    rows = []
    for component in COMPONENTS:
        params = [p for n, p in model.named_parameters() if component_of(n) == component]
        trainable = sum(_numel(p) for p in params if p.requires_grad)
        total = sum(_numel(p) for p in params)
        lr = f"{component_lr(component, training_args):g}" if trainable else "-"
        rows.append(f"  {component:<15} {trainable:>14,} / {total:>14,}   lr {lr}")
    head = (f"stage {plan.stage.value}: LLM LoRA {plan.llm_lora}, ViT LoRA {plan.vit_lora}, "
            f"LM {plan.train_lm}, projector {plan.train_projector}, tower {plan.train_tower}")
    return "\n".join([head, "  component            trainable /          total", *rows,
                      "  saves: " + ", ".join(plan.saved_files)])


# ---------------------------------------------------------------------- gathering (ZeRO-3) and naming
@contextlib.contextmanager
def gathered(params: list[nn.Parameter]):
    """Full tensors of ZeRO-3 partitioned parameters inside the block (a no-op otherwise); every rank must enter."""
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield


def collect_state(model: nn.Module, plan: StagePlan, keep: bool = True) -> dict[str, torch.Tensor]:
    """CPU copies of what this stage saves (trainable tensors; everything for a full finetune), by internal name.

    Collective under ZeRO-3: call on every rank (`keep=False` ranks join the gathers and get {}). Parameters
    are gathered one module at a time, so a full model is never materialised whole on the accelerator.
    """
    full = plan.stage is Stage.FULL
    wanted = {n for n, p in model.named_parameters(remove_duplicate=False) if full or p.requires_grad}
    out: dict[str, torch.Tensor] = {}
    for mod_name, module in model.named_modules():
        own = [(f"{mod_name}.{n}" if mod_name else n, p) for n, p in module.named_parameters(recurse=False)]
        own = [(n, p) for n, p in own if n in wanted]
        if not own:
            continue
        with gathered([p for _, p in own]):
            if keep:
                out.update({n: p.detach().cpu().clone() for n, p in own})
    if keep and full:
        persistent = set(model.state_dict())
        out.update({n: b.detach().cpu().clone() for n, b in model.named_buffers()
                    if n in persistent and "position_ids" not in n})
    return out


def unwrapped_name(name: str) -> str:
    """Internal name without PEFT wrapper levels: `language_model.base_model.model.X` -> `language_model.X`."""
    for component in ("language_model", "vision_tower"):
        prefix = f"{component}.base_model.model."
        if name.startswith(prefix):
            name = f"{component}.{name[len(prefix):]}"
    return name.replace(".base_layer.", ".")


def _sub_state(state: dict, component: str) -> dict:
    return {k[len(component) + 1 :]: v for k, v in state.items() if component_of(k) == component}


# ---------------------------------------------------------------------- saving
def _write_config(model, output_dir: Path) -> None:
    data = config_for_saving(model)
    data["use_cache"] = True  # training switches the cache off; inference wants it back
    (output_dir / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True))


def save(model, plan: StagePlan, state: dict[str, torch.Tensor], output_dir: str | Path,
         tokenizer=None, image_processor=None) -> None:
    """Write this stage's file set (rank 0 only) from `collect_state`'s tensors."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if plan.vit_lora:
        vit_state = get_peft_model_state_dict(model.vision_tower, state_dict=_sub_state(state, "vision_tower"))
        lora.save_vit_adapter(model, out / compat.VIT_LORA_DIR, state=vit_state)
    if plan.stage is Stage.PRETRAIN:
        compat.save_projector(_sub_state(state, "mm_projector"), out)
        _write_config(model, out)
        return
    if plan.stage is Stage.LORA:
        llm_state = get_peft_model_state_dict(model.language_model, state_dict=_sub_state(state, "language_model"))
        lora.save_llm_adapter(model, out, state=llm_state)
        lora_bias = model.language_model.peft_config["default"].bias
        non_lora = {unwrapped_name(k): v for k, v in state.items()
                    if "lora_" not in k and not (lora_bias != "none" and k.startswith("language_model.")
                                                 and k.endswith(".bias"))}
        compat.save_non_lora_trainables(non_lora, out)
        _write_config(model, out)
    else:
        full = {unwrapped_name(k): v for k, v in state.items() if "lora_" not in k}
        save_pretrained_llava(model, out, state_dict=full)
        _write_config(model, out)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    if image_processor is not None:
        image_processor.save_pretrained(str(out))


# ---------------------------------------------------------------------- restoring (resume)
def _copy_into(model: nn.Module, state: dict[str, torch.Tensor], source: Path, strict: bool) -> None:
    """Copy tensors keyed by unwrapped internal names into the (possibly PEFT-wrapped) model's parameters."""
    own = {unwrapped_name(n): p for n, p in model.named_parameters() if "lora_" not in n}
    unknown = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state)) if strict else []
    if unknown or missing:
        raise ValueError(f"checkpoint {source} does not fit this model: unknown {unknown[:4]}, missing {missing[:4]}")
    with torch.no_grad():
        for key, value in state.items():
            if own[key].shape != value.shape:
                raise ValueError(f"checkpoint {source}: {key} has shape {tuple(value.shape)}, "
                                 f"the model expects {tuple(own[key].shape)}")
            own[key].copy_(value.to(own[key].dtype))


def load_trainable(model, plan: StagePlan, checkpoint: str | Path) -> None:
    """Restore the trained tensors from a checkpoint this stage wrote (the stage files, not HF's weights)."""
    ckpt = Path(checkpoint)
    if plan.stage is Stage.PRETRAIN:
        if plan.train_projector:
            _copy_into(model, {f"mm_projector.{k}": v for k, v in compat.load_projector(ckpt).items()}, ckpt, False)
    elif plan.stage is Stage.LORA:
        _copy_into(model, compat.load_non_lora_trainables(ckpt), ckpt, strict=False)
        _, raw = compat.read_adapter(ckpt)
        lora.load_adapter_state(model.language_model, compat.llm_adapter_state(raw), ckpt)
    else:
        tensors = compat.read_tensors(compat.weight_files(ckpt))
        state = {compat.from_reference_key(k): v for k, v in tensors.items()}
        _copy_into(model, {k: v for k, v in state.items() if "lora_" not in k}, ckpt, strict=True)
    if plan.vit_lora:
        vit_dir = ckpt / compat.VIT_LORA_DIR
        _, raw = compat.read_adapter(vit_dir)
        lora.load_adapter_state(model.vision_tower, compat.vit_adapter_from_reference(raw), vit_dir)
