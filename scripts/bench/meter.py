"""Wall-clock timing with device synchronisation, peak memory (CUDA allocator or CPU peak RSS), matmul ceiling."""

from __future__ import annotations

import gc
import re
import time
from pathlib import Path

import torch

GIB = float(1 << 30)


class Meter:
    """Synchronised timer and peak-memory reader for one device."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    @property
    def memory_kind(self) -> str:
        return "cuda max_memory_allocated" if self.cuda else "process peak RSS (VmHWM)"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def now(self) -> float:
        self.sync()
        return time.perf_counter()

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:  # Linux: writing 5 resets the process's peak RSS
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass

    def peak_gib(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / GIB
        try:
            status = Path("/proc/self/status").read_text()
            return int(re.search(r"VmHWM:\s+(\d+)\s+kB", status).group(1)) * 1024 / GIB
        except (OSError, AttributeError):
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def matmul_tflops(device: torch.device, dtype: torch.dtype, meter: Meter) -> float:
    """Measured dense matmul ceiling (TFLOP/s) in `dtype`: the denominator of MFU unless --peak-tflops is given."""
    n = 8192 if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    iters = 20 if device.type == "cuda" else 5
    start = meter.now()
    for _ in range(iters):
        a @ b
    seconds = meter.now() - start
    return 2.0 * n**3 * iters / seconds / 1e12
