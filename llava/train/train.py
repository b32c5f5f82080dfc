"""Training entry point (`python -m llava.train.train ...`): flags -> model -> stage policy -> data -> Trainer."""

from __future__ import annotations

import logging
import os
import shutil
import sys

import torch
import transformers
from transformers import AutoTokenizer, PretrainedConfig

from llava.constants import DEFAULT_IMAGE_PATCH_TOKEN
from llava.data.dataset import DataConfig, make_supervised_data_module
from llava.data.image_check import MissingImagesError
from llava.data.packing import PackedCollator
from llava.model.attention import AttentionUnavailableError, announce, resolve_attention
from llava.model.builder import (
    build_for_training,
    image_token_count,
    load_initial_projector,
    quantization_config,
    training_config,
)
from llava.model.config import CheckpointFormatError
from llava.model.image_processor import CLIPImageProcessor
from llava.train import checkpoints, stage
from llava.train.arguments import DataArguments, FlagError, ModelArguments, TrainingArguments, parse_args
from llava.train.progress import ProgressLineCallback
from llava.train.trainer import LLaVATrainer

logger = logging.getLogger(__name__)


def train(argv: list[str] | None = None) -> None:
    model_args, data_args, training_args = parse_args(argv)  # every flag checked before anything loads
    init_distributed(training_args)
    choose_attention(model_args, training_args)
    transformers.set_seed(training_args.seed)
    plan = stage.plan_for(model_args, training_args)
    resume = resume_checkpoint(training_args)  # decided (and announced) before any weights load

    # Configs, the stage-1 projector and the data are all checked before any weights load.
    tokenizer = load_tokenizer(model_args, training_args)
    config = build_config(model_args, data_args, training_args)
    projector_state = initial_projector(model_args, config)
    image_processor = CLIPImageProcessor.from_pretrained(model_args.vision_tower, cache_dir=training_args.cache_dir)
    data_config = DataConfig(
        data_path=data_args.data_path, image_folder=data_args.image_folder, template=model_args.version,
        image_aspect_ratio=data_args.image_aspect_ratio, model_max_length=training_args.model_max_length,
        num_image_tokens=image_token_count(config), sq_r=data_args.sq_r, seed=training_args.seed,
        data_aug=data_args.data_aug, bad_sample_policy=data_args.bad_sample_policy,
        mm_use_im_start_end=model_args.mm_use_im_start_end, report_dir=training_args.output_dir,
        max_missing_images=data_args.max_missing_images,
    )
    data_module = make_supervised_data_module(data_config, tokenizer, image_processor)
    if training_args.packing:
        data_module["data_collator"] = PackedCollator(
            tokenizer, num_image_tokens=data_config.num_image_tokens, model_max_length=training_args.model_max_length,
            max_row_tokens=training_args.packing_max_row_tokens,
        )

    model = build_model(model_args, training_args, config, tokenizer, projector_state)
    stage.apply(model, plan, model_args, training_args)
    enable_activation_checkpointing(model, training_args)
    if training_args.should_log:
        print(stage.summary(model, plan, training_args), flush=True)
    trainer = LLaVATrainer(model=model, args=training_args, plan=plan, tokenizer=tokenizer,
                           image_processor=image_processor, **data_module)
    if training_args.disable_tqdm:
        trainer.add_callback(ProgressLineCallback())
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_state()
    trainer.save_model(training_args.output_dir)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # a clean teardown, not destructors racing at exit


# ---------------------------------------------------------------------- pieces
def init_distributed(training_args: TrainingArguments) -> None:
    """DeepSpeed on CPU needs a gloo process group before ZeRO-3's partitioned from_pretrained."""
    if training_args.deepspeed and training_args.use_cpu and "RANK" in os.environ:  # launched by torchrun
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")


def choose_attention(model_args: ModelArguments, training_args: TrainingArguments) -> None:
    """Replace `auto` by the implementation this process will use, and print it with the reason (rank 0)."""
    device = "cpu" if training_args.use_cpu else f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    try:
        model_args.attn_implementation, why = resolve_attention(model_args.attn_implementation, device)
    except AttentionUnavailableError as err:
        raise FlagError(str(err)) from None
    announce(model_args.attn_implementation, why, quiet=int(os.environ.get("RANK", 0)) != 0)


def torch_dtype(training_args: TrainingArguments) -> torch.dtype:
    return torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else torch.float32


def resume_target(value: str | None) -> str | bool | None:
    if value is None or value.lower() in ("", "false", "none"):
        return None
    return True if value.lower() == "true" else value


def resume_checkpoint(training_args: TrainingArguments) -> str | None:
    """--resume_from_checkpoint as the Trainer gets it: a checkpoint path, or None for a fresh start.

    `True` takes the newest complete checkpoint in output_dir (`llava.train.checkpoints.inspect`: one whose
    completion marker is written, or one written before markers existed that holds trainer_state.json) and
    starts from scratch when there is none, as haotian-liu/LLaVA's train.py does; never transformers' newest
    folder, which may be a save cut short. The main process deletes the incomplete folders newer than the one
    chosen, so training saves those steps into empty folders again; one line says what was chosen and ignored.
    An explicit path must be a finished save (a FlagError names what is missing).
    """
    target = resume_target(training_args.resume_from_checkpoint)
    if target is None:
        return None
    if target is not True:
        try:
            checkpoints.require_complete(target)
        except checkpoints.IncompleteCheckpointError as err:
            raise FlagError(str(err)) from None
        return target
    # The main process looks (and clears) first; the others then find the same complete checkpoint.
    with training_args.main_process_first(local=False, desc="choosing the checkpoint to resume from"):
        choice = checkpoints.choose_resume(checkpoints.scan(training_args.output_dir))
        if training_args.should_save:
            for incomplete in choice.newer_incomplete:
                shutil.rmtree(incomplete.path)
        if training_args.should_log:
            print(checkpoints.describe(choice, training_args.output_dir, cleared=training_args.should_save),
                  flush=True)
    return None if choice.checkpoint is None else str(choice.checkpoint.path)


def load_tokenizer(model_args: ModelArguments, training_args: TrainingArguments):
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path, cache_dir=training_args.cache_dir,
        model_max_length=training_args.model_max_length, padding_side="right",
    )
    if tokenizer.pad_token is None:  # the reference pads with unk
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    if model_args.mm_use_im_patch_token:
        tokenizer.add_tokens([DEFAULT_IMAGE_PATCH_TOKEN], special_tokens=True)
    return tokenizer


def build_config(model_args: ModelArguments, data_args: DataArguments,
                 training_args: TrainingArguments) -> PretrainedConfig:
    """The model's config: the LM's, the tower's and every mm flag (recorded in config.json)."""
    return training_config(
        model_args.model_name_or_path, model_args.vision_tower, cache_dir=training_args.cache_dir,
        mm_projector_type=model_args.mm_projector_type, mm_vision_select_layer=model_args.mm_vision_select_layer,
        mm_vision_select_feature=model_args.mm_vision_select_feature, image_aspect_ratio=data_args.image_aspect_ratio,
        tune_mm_mlp_adapter=model_args.tune_mm_mlp_adapter, freeze_mm_mlp_adapter=training_args.freeze_mm_mlp_adapter,
        unfreeze_mm_vision_tower=model_args.unfreeze_mm_vision_tower,
        mm_use_im_start_end=model_args.mm_use_im_start_end, mm_use_im_patch_token=model_args.mm_use_im_patch_token,
        mm_projector_lr=training_args.mm_projector_lr, vision_tower_lr=training_args.vision_tower_lr,
        mm_cluster_centers=model_args.mm_cluster_centers, mm_cluster_iters=model_args.mm_cluster_iters,
        num_latents=model_args.num_latents, tokenizer_model_max_length=training_args.model_max_length,
        conv_mode=model_args.version,  # evaluation and chat default to the template the model was trained with
    )


def initial_projector(model_args: ModelArguments, config: PretrainedConfig) -> dict | None:
    """--pretrain_mm_mlp_adapter's tensors, checked against --mm_projector_type before the LM loads."""
    if not model_args.pretrain_mm_mlp_adapter:
        return None
    try:
        return load_initial_projector(model_args.pretrain_mm_mlp_adapter, config)
    except CheckpointFormatError as err:
        raise FlagError(f"--pretrain_mm_mlp_adapter {err}") from None


def build_model(model_args: ModelArguments, training_args: TrainingArguments, config: PretrainedConfig, tokenizer,
                projector_state: dict | None):
    """The model factory with this run's dtype, attention, quantization and loss chunking."""
    dtype = torch_dtype(training_args)
    quantization = quantization_config(training_args.bits, dtype, training_args.double_quant, training_args.quant_type)
    # bitsandbytes places quantised weights at load time: on this process's GPU (CPU stays the default).
    device_map = {"": training_args.device} if quantization is not None and not training_args.use_cpu else None
    return build_for_training(
        config, model_args.model_name_or_path, vocab_size=len(tokenizer), dtype=dtype,
        attn_implementation=model_args.attn_implementation, quantization=quantization, device_map=device_map,
        projector_state=projector_state, chunked_loss_size=training_args.chunked_loss_size,
    )


def enable_activation_checkpointing(model, training_args: TrainingArguments) -> None:
    """Done here, not by the Trainer: the composed model forwards it to its LM with non-reentrant checkpoints."""
    if not training_args.activation_checkpointing:
        return
    kwargs = dict(training_args.activation_checkpointing_kwargs or {})
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    training_args.gradient_checkpointing = training_args.activation_checkpointing = False


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        train(argv)
    except (FlagError, MissingImagesError) as err:  # every rank raises the same: the job ends on all of them
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
