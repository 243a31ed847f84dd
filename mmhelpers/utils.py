"""Seeding, device choice, thread count and a small timer."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch


def set_seed(seed: int = 0, deterministic: bool = False) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA); optionally ask for deterministic kernels.

    Same seed + same device + same thread count gives the same numbers on CPU.
    On GPU, ``deterministic=True`` also turns off cuDNN autotuning and makes
    PyTorch raise on ops that have no deterministic implementation.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)


def get_device(device: str | torch.device = "auto") -> torch.device:
    """Resolve ``"auto"`` to cuda, then mps, then cpu; pass anything else through."""
    if isinstance(device, torch.device):
        return device
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_threads(n: int | None = None) -> int:
    """Set PyTorch's intra-op threads (default: env ``MMHELPERS_THREADS`` or all cores) and return it.

    On small machines one thread per process is often fastest when anything
    else runs at the same time (see the README's notes on threads).
    """
    if n is None:
        n = int(os.environ.get("MMHELPERS_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


@dataclass
class Timer:
    """Context manager that measures wall time: ``with Timer() as t: ...; t.seconds``."""

    seconds: float = 0.0
    _start: float = field(default=0.0, repr=False)

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
