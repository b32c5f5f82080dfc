"""The quickstart's focus phase (llava.quickstart.focus) on a tiny export and a tiny merged checkpoint: it trains,
scores, prints progress and saves."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from serve_common import write_tiny_checkpoint

from llava.inference.engine import InferenceEngine
from llava.model import compat
from llava.quickstart.focus import main as focus_main
from llava.shapesworld.export import export


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return compat.read_tensors(compat.weight_files(directory))


def test_focus_run_trains_scores_and_saves(tmp_path, tiny_foundation, capsys):
    data = tmp_path / "data"
    export(data, seed=2, n_pretrain=4, n_instruct=12, n_eval=30)
    start = write_tiny_checkpoint(tmp_path / "start", tiny_foundation)
    saved = tmp_path / "focused"
    curve = focus_main([
        "--model", str(start), "--data", str(data), "--steps", "2", "--batch", "4", "--eval-every", "1",
        "--held-out", "8", "--other", "0.3", "--replay", "0.5", "--threads", "1", "--lr", "1e-2",
        "--save", str(saved), "--curve", str(tmp_path / "curve.json"),
    ])

    assert [row["step"] for row in curve] == [0, 1, 2]
    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[progress]")]
    assert [line.split()[2] for line in progress] == ["1/2", "2/2"] and all(" loss " in line for line in progress)
    assert json.loads((tmp_path / "curve.json").read_text()) == curve
    rows = [json.loads(line) for line in open(data / "eval/vqa/questions.jsonl")]
    assert any(r["category"] == "existence" for r in rows)  # so the benchmark's own rows are scored
    for row in curve:
        for name in ("balanced", "probe", "vqa_existence"):
            assert 0.0 <= row[name] <= 1.0 and 0.0 <= row[name + "_yes"] <= 1.0

    before, after = _weights(start), _weights(saved)
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any("mm_projector" in k for k in changed) and any("layers" in k for k in changed)
    assert not any("embed_tokens" in k or "lm_head" in k or "vision_tower" in k for k in changed)
    engine = InferenceEngine.from_pretrained(saved, device="cpu", dtype="float32")  # the eval entry points' loader
    assert engine.model.num_image_tokens == InferenceEngine.from_pretrained(start, device="cpu").model.num_image_tokens
