"""The attention choice: FlashAttention-2 only where it imports and runs on the GPU, else SDPA, said in one line."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from llava.model import attention

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def gpu(monkeypatch):
    """Pretend a CUDA GPU of a given compute capability is visible (the decision logic only asks torch.cuda)."""
    def install(capability: tuple[int, int], name: str = "NVIDIA H100 80GB HBM3"):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
    return install


@pytest.fixture
def fake_flash_attn(monkeypatch):
    """An importable flash_attn whose kernel runs (or raises `error`)."""
    def install(error: Exception | None = None):
        module = types.ModuleType("flash_attn")
        module.__version__ = "2.8.3"
        monkeypatch.setitem(sys.modules, "flash_attn", module)

        def run(flash, device):
            if error is not None:
                raise error
        monkeypatch.setattr(attention, "_run_flash_kernel", run)
    return install


def test_cpu_takes_sdpa_and_says_why():
    assert attention.resolve_attention("auto", "cpu") == (
        "sdpa", "auto: FlashAttention-2 is not used because the device is cpu, not a CUDA GPU")
    assert attention.resolve_attention("eager", "cpu") == ("eager", "as requested")


def test_old_gpu_takes_sdpa(gpu, fake_flash_attn):
    gpu((7, 5), "Tesla T4")
    fake_flash_attn()
    impl, why = attention.resolve_attention("auto", "cuda:0")
    assert impl == "sdpa" and "Tesla T4 has compute capability 7.5" in why and "8.0" in why


def test_missing_flash_attn_takes_sdpa_with_the_install_command(gpu, monkeypatch):
    gpu((9, 0))
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # import raises ImportError
    impl, why = attention.resolve_attention("auto", "cuda:0")
    assert impl == "sdpa" and "flash_attn does not import" in why and "FLASH_ATTN=1 bash scripts/setup.sh" in why
    with pytest.raises(attention.AttentionUnavailableError, match="flash_attention_2 cannot run: flash_attn does"):
        attention.resolve_attention("flash_attention_2", "cuda:0")


def test_a_kernel_that_fails_takes_sdpa(gpu, fake_flash_attn):
    gpu((9, 0))
    fake_flash_attn(RuntimeError("no kernel image is available for execution on the device"))
    impl, why = attention.resolve_attention("auto", "cuda")
    assert impl == "sdpa" and "kernel fails on this GPU" in why and "no kernel image" in why


def test_working_flash_attn_is_chosen(gpu, fake_flash_attn):
    gpu((9, 0))
    fake_flash_attn()
    assert attention.resolve_attention("auto", "cuda:0") == (
        "flash_attention_2", "auto: flash_attn 2.8.3 runs on NVIDIA H100 80GB HBM3")
    assert attention.resolve_attention("flash_attention_2", None)[0] == "flash_attention_2"


def test_unknown_name_is_refused():
    with pytest.raises(ValueError, match="must be one of"):
        attention.resolve_attention("flash", "cpu")


def test_training_says_which_attention_and_refuses_an_impossible_request(tmp_path):
    base = [sys.executable, "-m", "llava.train.train", "--model_name_or_path", "/nonexistent/lm", "--vision_tower",
            "/nonexistent/tower", "--data_path", "/nonexistent.json", "--output_dir", str(tmp_path), "--use_cpu",
            "True", "--report_to", "none"]
    # sdpa chosen and announced before anything loads (the missing model is what then fails)
    auto = subprocess.run(base, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert "[llava] attention: sdpa (auto: FlashAttention-2 is not used because the device is cpu" in auto.stderr
    # an explicit FlashAttention-2 that cannot run is a one-line error naming the command that installs it
    flash = subprocess.run(base + ["--attn_implementation", "flash_attention_2"], capture_output=True, text=True,
                           timeout=300, cwd=REPO)
    assert flash.returncode != 0 and "Traceback" not in flash.stderr
    assert "flash_attention_2" in flash.stderr and "FLASH_ATTN=1 bash scripts/setup.sh" in flash.stderr
