"""Which attention kernel a run uses, and why: FlashAttention-2 only where it imports and runs, else SDPA."""

from __future__ import annotations

import sys

import torch

ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")
FLASH_INSTALL_HINT = "FLASH_ATTN=1 bash scripts/setup.sh (pip install flash-attn --no-build-isolation, after torch)"


class AttentionUnavailableError(ValueError):
    """An explicitly requested attention implementation cannot run here."""


def _device_index(device: str | torch.device | None) -> int | None:
    if device is None:
        return None
    device = torch.device(device)
    return device.index if device.type == "cuda" else -1


def flash_attention_problem(device: str | torch.device | None = None) -> str | None:
    """None when FlashAttention-2 imports and runs a kernel on `device` (default: the current CUDA device);
    otherwise the reason it cannot be used, in words a user can act on."""
    index = _device_index(device)
    if index == -1:
        return f"the device is {device}, not a CUDA GPU"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    major, minor = torch.cuda.get_device_capability(index)
    if major < 8:
        name = torch.cuda.get_device_name(index)
        return f"{name} has compute capability {major}.{minor}; FlashAttention-2 needs 8.0 or newer (Ampere, Hopper)"
    try:
        import flash_attn
    except Exception as err:  # ImportError, or an undefined symbol from a build for another torch
        return f"flash_attn does not import ({type(err).__name__}: {err}); install it with {FLASH_INSTALL_HINT}"
    try:  # a build for another CUDA or architecture imports fine and fails at its first kernel
        _run_flash_kernel(flash_attn, torch.device("cuda", index or 0))
    except Exception as err:
        return f"flash_attn imports but its kernel fails on this GPU ({type(err).__name__}: {err})"
    return None


def _run_flash_kernel(flash_attn, device: torch.device) -> None:
    q = torch.zeros(1, 8, 1, 64, dtype=torch.float16, device=device)
    flash_attn.flash_attn_func(q, q, q)


def resolve_attention(requested: str, device: str | torch.device | None = None) -> tuple[str, str]:
    """(implementation, why) for `--attn_implementation`: `auto` takes FlashAttention-2 when it runs on the
    device and SDPA otherwise; an explicit `flash_attention_2` that cannot run raises AttentionUnavailableError."""
    if requested not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {requested!r} must be one of {list(ATTN_IMPLEMENTATIONS)}")
    if requested in ("sdpa", "eager"):
        return requested, "as requested"
    problem = flash_attention_problem(device)
    if problem is None:
        import flash_attn

        gpu = torch.cuda.get_device_name(_device_index(device))
        how = "as requested" if requested == "flash_attention_2" else "auto"
        return "flash_attention_2", f"{how}: flash_attn {flash_attn.__version__} runs on {gpu}"
    if requested == "flash_attention_2":
        raise AttentionUnavailableError(f"--attn_implementation flash_attention_2 cannot run: {problem}")
    return "sdpa", f"auto: FlashAttention-2 is not used because {problem}"


def announce(implementation: str, why: str, *, quiet: bool = False) -> None:
    """One line on stderr naming the attention implementation and the reason (not on non-zero ranks)."""
    if not quiet:
        print(f"[llava] attention: {implementation} ({why})", file=sys.stderr, flush=True)
