"""Progress lines of long training phases: one every ~10% and at the end, with loss, elapsed and remaining time."""

from __future__ import annotations

import io
from types import SimpleNamespace

from llava.train.progress import ProgressLineCallback, due, progress_line


def test_progress_line_format_and_estimate():
    line = progress_line(160, 1600, 53.0, 1.2345)
    assert line == "[progress] step 160/1600 (10%) loss 1.234 elapsed 0:53 remaining 7:57"
    assert progress_line(5, 10, 4000.0, start_step=0).endswith("elapsed 1:06:40 remaining 1:06:40")
    assert " loss " not in progress_line(1, 10, 1.0)


def test_due_every_tenth_and_the_last_step():
    assert [s for s in range(1, 26) if due(s, 25)] == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 25]
    assert [s for s in range(1, 8) if due(s, 7)] == list(range(1, 8))
    assert [s for s in range(1, 101) if due(s, 100, every=50)] == [50, 100]
    assert not due(1, 0)


def test_callback_prints_on_the_main_process_only():
    out = io.StringIO()
    callback = ProgressLineCallback(stream=out)
    state = SimpleNamespace(global_step=0, max_steps=20, is_world_process_zero=True)
    callback.on_train_begin(None, state, None)
    for step in range(1, 21):
        state.global_step = step
        callback.on_log(None, state, None, logs={"loss": 2.0 / step})
        callback.on_step_end(None, state, None)
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == [f"{s}/20" for s in range(2, 21, 2)]
    assert lines[-1].startswith("[progress] step 20/20 (100%) loss 0.100 elapsed") and "remaining 0:00" in lines[-1]
    quiet = io.StringIO()
    other_rank = ProgressLineCallback(stream=quiet)
    state = SimpleNamespace(global_step=20, max_steps=20, is_world_process_zero=False)
    other_rank.on_train_begin(None, state, None)
    other_rank.on_step_end(None, state, None)
    assert quiet.getvalue() == ""
