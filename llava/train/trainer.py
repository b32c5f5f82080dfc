"""LLaVATrainer: HF Trainer with the stage's optimizer groups, modality sampler, stage-file checkpoints and resume.

transformers offers no public hook for five things this trainer must do, so it overrides five private Trainer
methods, checked against transformers 5.25 (pinned by tests/test_trainer_hooks.py, which fails when a release
renames them or stops calling them): `_get_train_sampler` (the modality-grouped sampler),
`_save_optimizer_and_scheduler` and `_prepare_for_training` (DeepSpeed checkpoints without the frozen weights:
the Trainer only drops them when the top-level model is a PeftModel, and ours composes PEFT modules inside),
`_load_from_checkpoint` (resume from the stage's own file set instead of whole-model weights), and
`_save_checkpoint` (a completion marker written last, and save_total_limit rotation only after it).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.trainer import PREFIX_CHECKPOINT_DIR, SCHEDULER_NAME, TRAINING_ARGS_NAME

from llava.train import checkpoints, stage
from llava.train.sampler import ModalityLengthGroupedSampler

logger = logging.getLogger(__name__)

BAD_SAMPLE_SUMMARY = "bad_samples_summary.json"


class SetEpochCallback(TrainerCallback):
    """Tell the dataset the epoch at each epoch start (accelerate forwards `set_epoch` to the sampler only)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(math.floor((state.epoch or 0.0) + 1e-6))


class LLaVATrainer(Trainer):
    """`plan` decides what trains and what every checkpoint holds; `tokenizer`/`image_processor` are saved with it."""

    def __init__(self, *args, plan: stage.StagePlan, tokenizer=None, image_processor=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.plan = plan
        self.tokenizer_to_save = tokenizer
        self.image_processor = image_processor
        if self.train_dataset is not None and hasattr(self.train_dataset, "set_epoch"):
            self.add_callback(SetEpochCallback(self.train_dataset))  # SQ and augmentation draws follow the epoch
        if is_deepspeed_zero3_enabled() or not plan.trains_language_model:
            # ZeRO-3: every rank must run the tower each step, or parameter gathering hangs on text-only batches.
            # Nothing in the LM trains (stage 1): a text-only batch's loss would have no grad_fn (backward fails).
            self.model.run_vision_on_text_only_batches = True

    # ------------------------------------------------------------------ data
    def _get_train_sampler(self, train_dataset: torch.utils.data.Dataset | None = None) -> torch.utils.data.Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.group_by_modality_length and dataset is not None:
            return ModalityLengthGroupedSampler(
                self.args.train_batch_size,
                world_size=self.args.world_size * self.args.gradient_accumulation_steps,
                lengths=dataset.modality_lengths,
                seed=self.args.seed,
                dataset=dataset,
            )
        return super()._get_train_sampler(train_dataset)

    # ------------------------------------------------------------------ optimizer
    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        groups = stage.optimizer_groups(opt_model, self.args)
        hf_ds = getattr(self.args, "hf_deepspeed_config", None)
        if self.is_deepspeed_enabled and hf_ds is not None and hf_ds.is_offload():
            # ZeRO-Offload needs DeepSpeed's CPU Adam; it keeps the per-group learning rates.
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            self.optimizer = DeepSpeedCPUAdam(
                groups, lr=self.args.learning_rate, betas=(self.args.adam_beta1, self.args.adam_beta2),
                eps=self.args.adam_epsilon, weight_decay=self.args.weight_decay, adamw_mode=True,
            )
            return self.optimizer
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)  # each group's own "lr" wins over the default
        return self.optimizer

    # ------------------------------------------------------------------ saving
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write the stage's file set (the same in every checkpoint-N and in output_dir); collective under ZeRO-3."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        keep = self.args.should_save
        state = stage.collect_state(self.model, self.plan, keep=keep)
        if keep:
            stage.save(self.model, self.plan, state, output_dir, self.tokenizer_to_save, self.image_processor)
            torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))
            bad = getattr(self.train_dataset, "bad_samples", None)
            if bad is not None:
                bad.write_summary(Path(output_dir) / BAD_SAMPLE_SUMMARY)
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()

    def _save_checkpoint(self, model: torch.nn.Module, trial) -> None:
        """transformers' save with its rotation deferred; then, once every rank's files are written, the
        completion marker (last), then rotation over complete checkpoints only (llava.train.checkpoints)."""
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save:
            checkpoints.begin_save(folder, self.state.global_step)
        limit = self.args.save_total_limit
        self.args.save_total_limit = None  # transformers would rotate before this checkpoint is complete
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        self.accelerator.wait_for_everyone()  # ZeRO shards and per-rank RNG states are on disk
        if not self.args.should_save:
            return
        checkpoints.write_marker(folder, self.state.global_step)
        protected = (folder, self.state.best_model_checkpoint)
        for path in checkpoints.rotation_deletions(checkpoints.scan(run_dir), limit, protected):
            logger.info("deleting checkpoint %s (save_total_limit %s, or an interrupted save)", path, limit)
            shutil.rmtree(path, ignore_errors=True)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not self.is_deepspeed_enabled:
            return super()._save_optimizer_and_scheduler(output_dir)
        # The stage files above hold the weights; DeepSpeed's own checkpoint only needs the trained partitions.
        self.model_wrapped.save_checkpoint(output_dir, exclude_frozen_parameters=True)
        if self.args.should_save and type(self.lr_scheduler).__name__ != "DeepSpeedSchedulerWrapper":
            torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))

    # ------------------------------------------------------------------ resuming
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        """Trained tensors from the stage files (HF's loader expects whole-model weights we do not write)."""
        logger.info("restoring %s weights from %s", self.plan.stage.value, resume_from_checkpoint)
        stage.load_trainable(self.model if model is None else model, self.plan, resume_from_checkpoint)

    def _prepare_for_training(self, max_steps: int, train_dataloader, resume_from_checkpoint: str | None):
        if not (self.is_deepspeed_enabled and resume_from_checkpoint is not None):
            return super()._prepare_for_training(max_steps, train_dataloader, resume_from_checkpoint)
        model, train_dataloader = super()._prepare_for_training(max_steps, train_dataloader, None)
        # Frozen weights are not in DeepSpeed's checkpoint (see above), so its module load must not be strict.
        load_path, _ = self.model_wrapped.load_checkpoint(
            resume_from_checkpoint, load_module_strict=False, load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
        if load_path is None:
            raise ValueError(f"[deepspeed] no DeepSpeed checkpoint (global_step*) in {resume_from_checkpoint}")
        self._load_optimizer_and_scheduler(resume_from_checkpoint)
        self._load_scaler(resume_from_checkpoint)
        return model, train_dataloader
