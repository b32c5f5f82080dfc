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
    "_save_checkpoint": (["model", "trial"], "_maybe_log_save_evaluate"),
}
# private methods our overrides call in turn -> the override that calls it
CALLED = {"_load_optimizer_and_scheduler": "_prepare_for_training", "_load_scaler": "_prepare_for_training",
          "_get_output_dir": "_save_checkpoint"}


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_overridden_private_hooks_are_still_the_trainers(name):
    params, caller = OVERRIDDEN[name]
    theirs = list(inspect.signature(getattr(Trainer, name)).parameters)[1:]
    ours = list(inspect.signature(getattr(LLaVATrainer, name)).parameters)[1:]
    assert theirs == params, f"transformers' Trainer.{name} now takes {theirs}"
    assert ours == params
    assert getattr(LLaVATrainer, name) is not getattr(Trainer, name)
    assert f"self.{name}" in inspect.getsource(getattr(Trainer, caller)), f"Trainer.{caller} no longer calls {name}"


@pytest.mark.parametrize("name", sorted(CALLED))
def test_private_methods_we_call_exist(name):
    assert callable(getattr(Trainer, name))
    assert f"self.{name}(" in inspect.getsource(getattr(LLaVATrainer, CALLED[name]))


def test_save_checkpoint_still_names_the_folder_and_rotates_as_our_override_assumes():
    """Our _save_checkpoint defers rotation by clearing args.save_total_limit around the Trainer's, and writes
    its marker into the folder the Trainer saved to: both must still be where the Trainer takes them from."""
    source = inspect.getsource(Trainer._save_checkpoint)
    assert 'checkpoint_folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"' in source
    assert "run_dir = self._get_output_dir(trial=trial)" in source
    assert "output_dir = os.path.join(run_dir, checkpoint_folder)" in source
    assert "save_total_limit=self.args.save_total_limit" in source  # the only limit its rotation reads
    assert source.index("TRAINER_STATE_NAME") < source.index("rotate_checkpoints(")  # trainer_state.json last
