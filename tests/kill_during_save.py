"""Test driver: `llava.train.train.main(argv)` that SIGKILLs itself in the middle of checkpoint-N's save.

KILL_AT="<point>:<step>" picks where; under torchrun only rank 0 dies (the job goes down with it). Before dying it
writes the losses logged so far (steps 1..N of an uninterrupted run) to KILL_LOG as JSON. Points:
  optimizer  after the optimizer/scheduler state is written (stage files done; no RNG state, no trainer_state.json)
  non_lora   before non_lora_trainables is written (the LLM adapter is already there)
  marker     after every file including trainer_state.json, just before the completion marker
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from llava.model import compat
from llava.train import checkpoints, train
from llava.train.trainer import LLaVATrainer

point, _, step = os.environ["KILL_AT"].partition(":")
STEP = int(step)
RANK0 = int(os.environ.get("RANK", "0")) == 0
current: list[LLaVATrainer] = []


def die_if_due(checkpoint_dir: str | Path) -> None:
    if not (RANK0 and checkpoints.step_of(Path(checkpoint_dir).name) == STEP):
        return
    history = current[0].state.log_history
    Path(os.environ["KILL_LOG"]).write_text(json.dumps([h["loss"] for h in history if "loss" in h]))
    os.kill(os.getpid(), signal.SIGKILL)


def patch(owner, name: str, before: bool) -> None:
    original = getattr(owner, name)

    def hooked(*args, **kwargs):
        directory = next(a for a in args if isinstance(a, (str, Path)))
        if before:
            die_if_due(directory)
        result = original(*args, **kwargs)
        die_if_due(directory)
        return result

    setattr(owner, name, hooked)


original_save_checkpoint = LLaVATrainer._save_checkpoint


def remember_trainer(self, model, trial):
    current[:] = [self]
    return original_save_checkpoint(self, model, trial)


LLaVATrainer._save_checkpoint = remember_trainer
if point == "optimizer":
    patch(LLaVATrainer, "_save_optimizer_and_scheduler", before=False)
elif point == "non_lora":
    patch(compat, "save_non_lora_trainables", before=True)
elif point == "marker":
    patch(checkpoints, "write_marker", before=True)
else:
    sys.exit(f"unknown KILL_AT point {point!r}")

train.main(sys.argv[1:])
