"""DeepSpeed ZeRO-2 and ZeRO-3 training with 2 CPU processes (torchrun), on the tiny models of test_train_e2e."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train_e2e import COMMON, losses, stage_files, workspace  # noqa: F401 - workspace is a fixture

from llava.serve.process import free_port

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]



def launch(args: list[str], entry: tuple[str, ...] = ("-m", "llava.train.train"),
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """torchrun `entry` (a module or a script) on 2 CPU processes with `args`; the finished process."""
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        # DeepSpeed JIT-compiles a CPU communication op on first use (~60 s); keep it where later runs find it.
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR",
                                               str(Path.home() / ".cache" / "torch_extensions")),
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), *entry, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=REPO, env=env)


def torchrun(args: list[str]) -> float:
    """Run llava.train.train on 2 CPU processes; returns the wall time."""
    start = time.perf_counter()
    proc = launch(args)
    if proc.returncode != 0:
        clues = [line for line in proc.stderr.splitlines()
                 if re.search(r"error|terminate|signal|abort|exception|killed", line, re.IGNORECASE)]
        pytest.fail(f"torchrun failed ({proc.returncode}):\n" + "\n".join(clues[-40:]) + "\n...\n"
                    + proc.stderr[-6000:])
    return time.perf_counter() - start


def lora_args(ws: dict, out: Path, ds_config: str) -> list[str]:
    return ["--deepspeed", str(REPO / "scripts" / ds_config),
            "--model_name_or_path", str(ws["lm"]), "--vision_tower", str(ws["tower"]), "--version", "v1_sq",
            "--sq_r", "0.5", "--data_path", str(ws["chats"]), "--image_folder", str(ws["images"]),
            "--mm_projector_type", "cluster", "--lora_enable", "True", "--lora_r", "8", "--lora_alpha", "16",
            "--vit_lora_enable", "True", "--lora_r_vit", "4", "--lora_alpha_vit", "8",
            "--image_aspect_ratio", "pad", "--group_by_modality_length", "True", "--learning_rate", "2e-3",
            "--mm_projector_lr", "1e-3", "--vision_tower_lr", "1e-3", "--output_dir", str(out),
            "--max_steps", "3", "--save_steps", "2", *COMMON]


def _check_lora_output(out: Path) -> list[float]:
    curve = losses(out)
    assert len(curve) == 3 and all(map(torch.isfinite, torch.tensor(curve))), curve
    assert {"adapter_model.safetensors", "non_lora_trainables.bin", "Vit-lora/adapter_model.safetensors",
            "config.json"} <= stage_files(out)
    assert stage_files(out / "checkpoint-2") == stage_files(out)
    assert any(p.name.startswith("global_step") for p in (out / "checkpoint-2").iterdir())  # DeepSpeed's own state
    return curve


def test_zero2_lora(workspace):  # noqa: F811
    out = workspace["root"] / "zero2"
    seconds = torchrun(lora_args(workspace, out, "zero2.json"))
    curve = _check_lora_output(out)
    print(f"ZeRO-2 LoRA, 2 CPU processes: {seconds:.1f} s wall, losses {curve}")


def test_zero3_lora_saves_and_reloads(workspace):  # noqa: F811
    from safetensors.torch import load_file

    from llava.model.builder import load_pretrained_model

    out = workspace["root"] / "zero3"
    seconds = torchrun(lora_args(workspace, out, "zero3.json"))
    curve = _check_lora_output(out)
    print(f"ZeRO-3 LoRA, 2 CPU processes: {seconds:.1f} s wall, losses {curve}")

    # Gathered, not the empty partitions a ZeRO-3 rank holds: full shapes, and not the initial values.
    adapter = load_file(out / "adapter_model.safetensors")
    a = adapter["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    assert a.shape == (8, 32)
    assert any(v.abs().max() > 0 for k, v in adapter.items() if "lora_B" in k)
    assert json.loads((out / "config.json").read_text())["mm_projector_type"] == "cluster"
    _, model, _, _ = load_pretrained_model(out, model_base=workspace["lm"])
    non_lora = torch.load(out / "non_lora_trainables.bin", weights_only=True)
    for key, value in model.mm_projector.state_dict().items():
        torch.testing.assert_close(value, non_lora[f"base_model.model.model.mm_projector.{key}"], rtol=0, atol=0)

    # Resume under ZeRO-3: DeepSpeed's checkpoint (trained partitions only) + HF scheduler/RNG state.
    resumed = workspace["root"] / "zero3_resumed"
    torchrun(lora_args(workspace, resumed, "zero3.json") + ["--resume_from_checkpoint", str(out / "checkpoint-2")])
    again = losses(resumed)
    print(f"ZeRO-3 resume from checkpoint-2: {again} (uninterrupted {curve})")
    assert len(again) == 3 and abs(again[2] - curve[2]) <= 1e-5
