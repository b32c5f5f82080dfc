"""The benchmark harness (scripts/bench/bench_vlm.py) end to end on the CPU `tiny` preset: JSON shape, positive numbers."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench" / "bench_vlm.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_vlm", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_vlm"] = module
    spec.loader.exec_module(module)
    return module


def _positive(row: dict, *keys: str) -> None:
    for key in keys:
        value = row[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, row)


def test_tiny_preset_runs_and_writes_json(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is as fast, and steadier when another process holds a core
    try:
        bench.main(["--preset", "tiny", "--steps", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "training" in printed and "projector" in printed and "generation" in printed and "MFU =" in printed
    result = json.loads(out.read_text())
    assert set(result) == {"meta", "train", "projector", "generate", "generate_summary"}

    meta = result["meta"]
    assert meta["preset"] == "tiny" and meta["device"] == "cpu" and "12*L*H*S^2" in meta["mfu_formula"]
    _positive(meta, "peak_tflops", "n_lm_linear", "n_vit", "elapsed_s")

    train = {(r["bench"], r["impl"], r["variant"]): r for r in result["train"]}
    expected = {
        ("stage1", "ours", "default"), ("stage1", "ours", "plain CE (full logits)"), ("stage1", "transformers", "default"),
        ("stage2", "ours", "default"), ("stage2", "ours", "plain CE (full logits)"), ("stage2", "transformers", "default"),
        ("stage2_fast", "ours", "default"), ("stage2_fast", "transformers", "default"),
        ("varlen", "ours", "padded"), ("varlen", "transformers", "padded"),
    }
    assert expected <= set(train) and any(k[0] == "varlen" and k[2].startswith("packed") for k in train)
    for row in train.values():
        assert "error" not in row, row
        _positive(row, "tokens_per_s", "step_s", "tflops", "mfu", "peak_mem_gib", "loss", "flops_per_step",
                  "trainable_params")
    for bench_name in ("stage1", "stage2", "stage2_fast", "varlen"):  # same shapes, same count on both sides
        ours = next(r for k, r in train.items() if k[0] == bench_name and k[1] == "ours")
        theirs = train[(bench_name, "transformers", "padded" if bench_name == "varlen" else "default")]
        assert ours["flops_per_step"] == theirs["flops_per_step"]
        assert ours["trainable_params"] == theirs["trainable_params"]
    assert train[("stage2", "ours", "default")]["lora_params"] > 0

    projectors = {(r["projector"], r["impl"]): r for r in result["projector"]}
    assert {("mlp2x_gelu", "ours"), ("mlp2x_gelu", "transformers"), ("cluster", "ours (matmul)"),
            ("cluster", "reference (broadcast)"), ("cross_attn", "ours")} == set(projectors)
    for row in projectors.values():
        _positive(row, "fwd_bwd_ms", "peak_mem_gib", "params")
    assert projectors[("cluster", "reference (broadcast)")]["max_abs_diff_vs_ours"] < 1e-4  # fp32: same maths

    batches = meta["gen_batches"]
    for impl, path in (("ours", "model.generate"), ("ours", "engine"), ("transformers", "model.generate")):
        rows = {r["batch"]: r for r in result["generate"] if (r["impl"], r["path"]) == (impl, path)}
        assert sorted(rows) == sorted(batches)
        for row in rows.values():
            _positive(row, "samples_per_s", "new_tokens_per_s", "batch_s", "peak_mem_gib")
            assert row["new_tokens_observed"] == row["new_tokens"]  # random weights never stop early
    summary = {(s["impl"], s["path"]): s for s in result["generate_summary"]}
    assert len(summary) == 3
    for s in summary.values():
        _positive(s, "batch1_samples_per_s", "best_samples_per_s")
        assert s["best_batch"] in batches


def test_unknown_bench_is_rejected(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--only", "stage3"])
