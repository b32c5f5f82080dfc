"""Training flags (the reference names, docs/reference.md#training-defaults) as dataclasses, parsed strictly and checked before any model loads."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

import transformers

from llava.conversation import conv_templates
from llava.mm_utils import ASPECT_RATIOS
from llava.model.attention import ATTN_IMPLEMENTATIONS, FLASH_INSTALL_HINT
from llava.model.multimodal_encoder.clip_encoder import SELECT_FEATURES


class FlagError(ValueError):
    """Flags that are invalid alone or contradict each other; the message names the flag(s)."""


SQ_R_REFERENCE_DEFAULT = 0.3  # the reference train.py's sq_r default (the scripts pass 0.5)

@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "LM weights (hub id or dir)."})
    version: str = field(default="v1", metadata={"help": "Conversation template: plain (stage 1), v1_sq, v1..."})
    freeze_backbone: bool = field(default=False, metadata={"help": "Full finetune: keep the LM frozen."})
    tune_mm_mlp_adapter: bool = field(default=False, metadata={"help": "Stage 1: train only the projector."})
    vision_tower: str | None = field(default=None, metadata={"help": "CLIP vision tower (hub id or dir)."})
    mm_vision_select_layer: int = field(default=-2, metadata={"help": "Hidden layer of the tower to use."})
    pretrain_mm_mlp_adapter: str | None = field(
        default=None, metadata={"help": "mm_projector.bin (or a dir holding one) to initialise the projector."}
    )
    mm_projector_type: str = field(default="linear", metadata={"help": "linear, mlpNx_gelu, identity, cluster..."})
    mm_use_im_start_end: bool = field(default=False, metadata={"help": "Wrap images in <im_start>/<im_end>."})
    mm_use_im_patch_token: bool = field(default=False, metadata={"help": "Add the <im_patch> token."})
    mm_vision_select_feature: str = field(default="patch", metadata={"help": "patch or cls_patch."})
    mm_cluster_centers: int = field(default=256, metadata={"help": "cluster projector: centres K."})
    mm_cluster_iters: int = field(default=2, metadata={"help": "cluster projector: EM iterations T."})
    num_latents: int = field(default=256, metadata={"help": "cross_attn projector: latent tokens."})
    unfreeze_mm_vision_tower: bool = field(default=False, metadata={"help": "Train the whole vision tower."})
    pretrain_lora: str | None = field(
        default=None, metadata={"help": "Stage-1 Vit-lora dir (or its adapter file) to initialise ViT LoRA."}
    )
    attn_implementation: str = field(default="auto", metadata={
        "help": "auto (FlashAttention-2 where it imports and runs on the GPU, else SDPA), sdpa, eager or "
                "flash_attention_2 (an error where it cannot run). The choice and its reason are printed."})


@dataclass
class DataArguments:
    data_path: str | None = field(default=None, metadata={"help": "LLaVA-format JSON training data."})
    image_folder: str | None = field(default=None, metadata={"help": "Root that record image paths resolve to."})
    lazy_preprocess: bool = field(default=True, metadata={"help": "Accepted for compatibility; always lazy."})
    image_aspect_ratio: str = field(default="square", metadata={"help": "square, pad or resize."})
    sq_r: float | None = field(default=None, metadata={
        "help": "Probability that a question after the first of an image sample becomes a VUSER turn (v1_sq). "
                f"Default: {SQ_R_REFERENCE_DEFAULT} with --version v1_sq (the reference's), else 0."})
    data_aug: bool = field(default=False, metadata={"help": "Random crop/flip/RandAugment on images (docs/reference.md#d7-data-augmentation)."})
    bad_sample_policy: str = field(default="skip", metadata={"help": "skip (log and replace) or error."})
    max_missing_images: float = field(default=0.1, metadata={
        "help": "Stop before the model loads when more than this fraction of image records have no file, or a "
                "subfolder (coco/, gqa/, ...) with 5+ records lacks half its images; 1.0: never stop, skip them."})


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    cache_dir: str | None = field(default=None)
    optim: str = field(default="adamw_torch")
    remove_unused_columns: bool = field(default=False)
    model_max_length: int = field(default=2048, metadata={
        "help": "Most tokens per sample the LM sees, image tokens included (an image counts as its "
                "num_image_tokens, e.g. 576); longer samples are cut at the end, never inside an image."})
    freeze_mm_mlp_adapter: bool = field(default=False, metadata={"help": "Keep the projector frozen."})
    double_quant: bool = field(default=True, metadata={"help": "QLoRA: double quantisation."})
    quant_type: str = field(default="nf4", metadata={"help": "QLoRA: fp4 or nf4."})
    bits: int = field(default=16, metadata={"help": "4 or 8: load the LM quantised (QLoRA); 16/32: no."})
    lora_enable: bool = field(default=False, metadata={"help": "Stage 2: LoRA on every LM Linear but lm_head."})
    lora_r: int = field(default=64)
    lora_alpha: int = field(default=16)
    lora_dropout: float = field(default=0.05)
    lora_bias: str = field(default="none", metadata={"help": "none, all or lora_only."})
    vit_lora_enable: bool = field(default=False, metadata={"help": "LoRA on every Linear of the vision tower."})
    lora_r_vit: int = field(default=64)
    lora_alpha_vit: int = field(default=32)
    lora_dropout_vit: float = field(default=0.2)
    mm_projector_lr: float | None = field(default=None, metadata={"help": "LR of the projector (own group)."})
    vision_tower_lr: float | None = field(default=None, metadata={"help": "LR of the tower (own group)."})
    group_by_modality_length: bool = field(default=False, metadata={"help": "Batches of one modality, by length."})
    chunked_loss_size: int = field(default=2048, metadata={
        "help": "Positions per block of the chunked training loss (no full fp32 logits); 0: the LM's plain loss."})
    packing: bool = field(default=False, metadata={
        "help": "Pack samples padding-free into rows with per-sample position_ids (block-diagonal attention)."})
    packing_max_row_tokens: int | None = field(default=None, metadata={
        "help": "With --packing: longest packed row in tokens; default one row per batch."})
    # Names the reference scripts use that transformers 5 dropped; mapped onto their successors.
    warmup_ratio: float | None = field(default=None, metadata={"help": "Alias: --warmup_steps as a ratio < 1."})
    evaluation_strategy: str | None = field(default=None, metadata={"help": "Alias of --eval_strategy."})

    def __post_init__(self):
        if self.warmup_ratio is not None:
            if not 0.0 <= self.warmup_ratio < 1.0:
                raise FlagError(f"--warmup_ratio {self.warmup_ratio} must lie in [0, 1)")
            if self.warmup_steps:
                raise FlagError("--warmup_ratio and --warmup_steps contradict each other: give one")
            self.warmup_steps = self.warmup_ratio
        if self.evaluation_strategy is not None:
            self.eval_strategy = self.evaluation_strategy
        super().__post_init__()


ARGUMENT_CLASSES = (ModelArguments, DataArguments, TrainingArguments)


def make_parser() -> transformers.HfArgumentParser:
    # allow_abbrev=False: a misspelt or shortened flag is unknown, never silently another flag.
    return transformers.HfArgumentParser(ARGUMENT_CLASSES, allow_abbrev=False)


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """Parse `argv` (default sys.argv); unknown flags raise FlagError naming them, bad values exit via argparse."""
    model_args, data_args, training_args, unknown = make_parser().parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True
    )
    if unknown:
        raise FlagError(f"unknown flag(s) or stray value(s): {' '.join(unknown)}")
    if data_args.sq_r is None:  # the reference's default for v1_sq; a template without VUSER has nothing to draw
        vuser = model_args.version in conv_templates and conv_templates[model_args.version].vuser_role is not None
        data_args.sq_r = SQ_R_REFERENCE_DEFAULT if vuser else 0.0
    validate(model_args, data_args, training_args)
    return model_args, data_args, training_args


def _projector_type_known(name: str) -> bool:
    from llava.model.multimodal_projector.builder import _resolve

    try:
        _resolve(name)
    except ValueError:
        return False
    return True


def _zero_stage(deepspeed: str | dict | None) -> int | None:
    if not deepspeed:
        return None
    config = deepspeed if isinstance(deepspeed, dict) else json.loads(Path(deepspeed).read_text())
    return int(config.get("zero_optimization", {}).get("stage", 0))


def validate(model: ModelArguments, data: DataArguments, train: TrainingArguments) -> None:
    """Every check that needs no model: raise FlagError naming the flag(s) at the first problem."""

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise FlagError(message)

    need(bool(model.model_name_or_path), "--model_name_or_path is required")
    need(bool(model.vision_tower), "--vision_tower is required (this trains a vision-language model)")
    need(bool(data.data_path), "--data_path is required")
    need(model.version in conv_templates, f"--version {model.version!r} is no template; choose one of {sorted(conv_templates)}")
    need(data.image_aspect_ratio in ASPECT_RATIOS,
         f"--image_aspect_ratio {data.image_aspect_ratio!r} must be one of {list(ASPECT_RATIOS)}")
    need(data.bad_sample_policy in ("skip", "error"), f"--bad_sample_policy {data.bad_sample_policy!r} must be skip or error")
    need(0.0 <= data.sq_r <= 1.0, f"--sq_r {data.sq_r} must lie in [0, 1]")
    need(0.0 <= data.max_missing_images <= 1.0,
         f"--max_missing_images {data.max_missing_images} must lie in [0, 1] (a fraction of the image records)")
    need(data.sq_r == 0.0 or conv_templates[model.version].vuser_role is not None,
         f"--sq_r {data.sq_r} needs a template with a VUSER role (--version v1_sq), not --version {model.version}")
    need(_projector_type_known(model.mm_projector_type), f"--mm_projector_type {model.mm_projector_type!r} is not registered")
    need(model.mm_vision_select_feature in SELECT_FEATURES,
         f"--mm_vision_select_feature {model.mm_vision_select_feature!r} must be one of {list(SELECT_FEATURES)}")
    need(model.mm_cluster_centers > 0 and model.mm_cluster_iters > 0 and model.num_latents > 0,
         "--mm_cluster_centers, --mm_cluster_iters and --num_latents must be positive")
    need(model.attn_implementation in ATTN_IMPLEMENTATIONS,
         f"--attn_implementation {model.attn_implementation!r} must be one of {list(ATTN_IMPLEMENTATIONS)}")
    need(model.attn_implementation != "flash_attention_2" or importlib.util.find_spec("flash_attn") is not None,
         f"--attn_implementation flash_attention_2 needs the flash_attn package: {FLASH_INSTALL_HINT}")
    need(not model.mm_use_im_start_end,
         "--mm_use_im_start_end True is not supported in training (every SQ-LLaVA script uses False)")
    for flag in ("pretrain_mm_mlp_adapter", "pretrain_lora"):
        path = getattr(model, flag)
        need(path is None or Path(path).exists(), f"--{flag} {path} does not exist")
    if model.pretrain_mm_mlp_adapter and Path(model.pretrain_mm_mlp_adapter).is_dir():
        need(any((Path(model.pretrain_mm_mlp_adapter) / f"mm_projector{s}").is_file() for s in (".bin", ".safetensors")),
             f"--pretrain_mm_mlp_adapter {model.pretrain_mm_mlp_adapter} holds no mm_projector.bin")
    if model.pretrain_lora:
        lora_dir = Path(model.pretrain_lora) if Path(model.pretrain_lora).is_dir() else Path(model.pretrain_lora).parent
        need((lora_dir / "adapter_config.json").is_file(), f"--pretrain_lora {model.pretrain_lora}: no adapter_config.json in {lora_dir}")
        need(train.vit_lora_enable, "--pretrain_lora initialises ViT LoRA: it needs --vit_lora_enable True")

    need(train.bits in (4, 8, 16, 32), f"--bits {train.bits} must be 4, 8 (quantised LM) or 16/32")
    need(train.bits not in (4, 8) or train.lora_enable, f"--bits {train.bits} (QLoRA) needs --lora_enable True")
    need(train.quant_type in ("nf4", "fp4"), f"--quant_type {train.quant_type!r} must be nf4 or fp4")
    need(train.lora_bias in ("none", "all", "lora_only"), f"--lora_bias {train.lora_bias!r} must be none, all or lora_only")
    need(not (model.tune_mm_mlp_adapter and train.lora_enable),
         "--tune_mm_mlp_adapter (stage 1) and --lora_enable (stage 2) contradict each other: pick one stage")
    need(not (model.tune_mm_mlp_adapter and train.freeze_mm_mlp_adapter),
         "--tune_mm_mlp_adapter trains the projector; --freeze_mm_mlp_adapter freezes it: pick one")
    need(not (train.vit_lora_enable and model.unfreeze_mm_vision_tower),
         "--vit_lora_enable and --unfreeze_mm_vision_tower contradict each other: LoRA on a frozen tower, or all of it")
    need(not (model.tune_mm_mlp_adapter and model.unfreeze_mm_vision_tower),
         "--unfreeze_mm_vision_tower does not fit --tune_mm_mlp_adapter (stage 1 trains the projector only)")
    need(not (model.freeze_backbone and (train.lora_enable or model.tune_mm_mlp_adapter)),
         "--freeze_backbone applies to a full finetune only; LoRA and stage 1 keep the LM frozen anyway")
    for flag in ("lora_r", "lora_alpha", "lora_r_vit", "lora_alpha_vit"):
        need(getattr(train, flag) > 0, f"--{flag} must be positive")
    for flag in ("lora_dropout", "lora_dropout_vit"):
        need(0.0 <= getattr(train, flag) < 1.0, f"--{flag} must lie in [0, 1)")
    for flag in ("mm_projector_lr", "vision_tower_lr"):
        need(getattr(train, flag) is None or getattr(train, flag) >= 0, f"--{flag} must not be negative")
    need(train.mm_projector_lr is None or not train.freeze_mm_mlp_adapter,
         "--mm_projector_lr is set but --freeze_mm_mlp_adapter keeps the projector frozen")
    need(train.vision_tower_lr is None or train.vit_lora_enable or model.unfreeze_mm_vision_tower,
         "--vision_tower_lr is set but nothing in the tower trains (add --vit_lora_enable or --unfreeze_mm_vision_tower)")
    need(train.model_max_length > 0, "--model_max_length must be positive")
    need(train.chunked_loss_size >= 0, "--chunked_loss_size must be >= 0 (0 turns it off)")
    need(train.packing_max_row_tokens is None or (train.packing and train.packing_max_row_tokens > 0),
         "--packing_max_row_tokens needs --packing True and a positive value")
    need(not (train.packing and train.group_by_modality_length),
         "--packing and --group_by_modality_length contradict each other: packing removes padding already")
    resume = train.resume_from_checkpoint
    need(resume is None or resume.lower() in ("true", "false", "none", "") or Path(resume).is_dir(),
         f"--resume_from_checkpoint {resume} is not a checkpoint directory")
    zero = _zero_stage(train.deepspeed)
    need(not (zero == 3 and train.bits in (4, 8)), f"--bits {train.bits} (bitsandbytes) does not work with ZeRO-3 (--deepspeed)")
    full = not (train.lora_enable or model.tune_mm_mlp_adapter)
    need(not (full and model.freeze_backbone and train.freeze_mm_mlp_adapter and not train.vit_lora_enable
              and not model.unfreeze_mm_vision_tower),
         "--freeze_backbone with --freeze_mm_mlp_adapter leaves nothing to train")
