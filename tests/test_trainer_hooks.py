"""The private transformers.Trainer methods LLaVATrainer overrides (no public hook exists for them) still exist with
the parameters it relies on, and the Trainer still calls them where it did: a transformers release that renames or
bypasses one fails here, not silently in a training run."""

from __future__ import annotations

import inspect

import pytest
from transformers import Trainer

from llava.train.trainer import LLaVATrainer

# private method -> (its parameters after self, the Trainer method whose body calls it)
OVERRIDDEN = {
    "_get_train_sampler": (["train_dataset"], "get_train_dataloader"),
    "_save_optimizer_and_scheduler": (["output_dir"], "_save_checkpoint"),
    "_load_from_checkpoint": (["resume_from_checkpoint", "model"], "train"),
    "_prepare_for_training": (["max_steps", "train_dataloader", "resume_from_checkpoint"], "_inner_training_loop"),
}
# private methods our override of _prepare_for_training calls in turn
CALLED = ("_load_optimizer_and_scheduler", "_load_scaler")


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_overridden_private_hooks_are_still_the_trainers(name):
    params, caller = OVERRIDDEN[name]
    theirs = list(inspect.signature(getattr(Trainer, name)).parameters)[1:]
    ours = list(inspect.signature(getattr(LLaVATrainer, name)).parameters)[1:]
    assert theirs == params, f"transformers' Trainer.{name} now takes {theirs}"
    assert ours == params
    assert getattr(LLaVATrainer, name) is not getattr(Trainer, name)
    assert f"self.{name}" in inspect.getsource(getattr(Trainer, caller)), f"Trainer.{caller} no longer calls {name}"


@pytest.mark.parametrize("name", CALLED)
def test_private_methods_we_call_exist(name):
    assert callable(getattr(Trainer, name))
    assert f"self.{name}(" in inspect.getsource(LLaVATrainer._prepare_for_training)
