"""scripts/bench/gpu_check.sh end to end at tiny shapes on the CPU (--cpu-smoke): every part runs and reports."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_every_part_on_the_cpu(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run(["bash", "scripts/bench/gpu_check.sh", str(out), "--cpu-smoke"], cwd=REPO,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    parts = summary["parts"]
    assert list(parts) == ["env", "tests", "train", "bench", "eval", "demo"]
    assert all(p["status"] == "ok" for p in parts.values()), {k: p.get("error") for k, p in parts.items()}
    print({name: round(p["seconds"], 1) for name, p in parts.items()}, f"total {summary['total_s']} s")

    assert parts["env"]["report"]["attention"] == "sdpa" and parts["env"]["report"]["device"] == "cpu"
    tests = parts["tests"]["report"]
    assert tests["tests"] >= 15 and tests["failures"] == tests["errors"] == 0
    train = parts["train"]["report"]
    for run in ("stage1", "stage2_checkpointing_true", "stage2_checkpointing_false"):
        assert math.isfinite(train[run]["first_loss"]) and math.isfinite(train[run]["last_loss"]), run
    assert (out / "work/stage2_ckptTrue/checkpoint-2/checkpoint_complete.json").is_file()
    assert "reloaded_answer" in train
    assert json.loads((out / "bench.json").read_text())  # the benchmark's own JSON
    assert 0.0 <= parts["eval"]["report"]["mean_f1"] <= 1.0
    assert (out / "work/eval/pope/answers/gpu-check/logs/shard_0.log").is_file()  # through scripts/eval machinery
    assert isinstance(parts["demo"]["report"]["answer"], str)
    table = (out / "summary.md").read_text()
    assert table.startswith("| part | status | seconds | detail |") and "| demo | ok |" in table


def test_gpu_check_refuses_unknown_parts(tmp_path):
    proc = subprocess.run(["bash", "scripts/bench/gpu_check.sh", str(tmp_path), "--parts", "env,warp"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown parts ['warp']" in proc.stderr
