"""`ProgressLineCallback`: one plain progress line every ~10% of training, for logs without a progress bar."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from transformers import TrainerCallback

PREFIX = "[progress]"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def progress_line(step: int, total: int, elapsed: float, loss: float | None = None, start_step: int = 0) -> str:
    """`[progress] step 160/1600 (10%) loss 1.234 elapsed 0:53 remaining 8:01` (remaining from the pace so far)."""
    done = step - start_step
    remaining = elapsed / done * (total - step) if done > 0 else 0.0
    loss_text = f" loss {loss:.3f}" if loss is not None else ""
    return (f"{PREFIX} step {step}/{total} ({100 * step // max(total, 1)}%){loss_text} elapsed {_clock(elapsed)} "
            f"remaining {_clock(remaining)}")


def due(step: int, total: int, every: int | None = None) -> bool:
    """Whether `step` gets a progress line: every `every` steps (default a tenth of the run) and the last one."""
    return total > 0 and (step % (every or max(1, total // 10)) == 0 or step == total)


class ProgressLineCallback(TrainerCallback):
    """Prints `[progress] step 160/1600 (10%) loss 1.234 elapsed 0:53 remaining 8:01` on the main process, every
    `every` steps (default: a tenth of the run) and at the last step. Installed when tqdm is off (`--disable_tqdm`,
    the cluster and CPU-quickstart case), where the Trainer otherwise prints only raw log dicts."""

    def __init__(self, every: int | None = None, stream: TextIO | None = None) -> None:
        self.every, self.stream = every, stream
        self.start: float | None = None
        self.start_step = 0
        self.loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.start_step = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and due(state.global_step, state.max_steps, self.every):
            elapsed = time.perf_counter() - (self.start or time.perf_counter())
            print(progress_line(state.global_step, state.max_steps, elapsed, self.loss, self.start_step),
                  file=self.stream or sys.stdout, flush=True)
