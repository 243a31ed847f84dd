"""Numeric precision, decided in one place for training (the engine) and feature extraction (the encoders).

``"auto"`` picks bf16 where bf16 maths is native (a recent GPU, or a CPU with AVX512-BF16 or AMX), fp16 on a
CUDA GPU without bf16, and fp32 elsewhere (bf16 is emulated, hence slow, on other CPUs).
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def bf16_is_fast(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 matrix maths is native on ``device``: CUDA with bf16, or a CPU with AVX512-BF16 or AMX."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    native = any(
        getattr(torch.cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )
    return native and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """The precision ``precision`` means on ``device``: "bf16", "fp16" or "fp32" (see the module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' needs CUDA (training uses a GradScaler); use 'bf16' or 'fp32' elsewhere")
    if precision != "auto":
        return precision
    if bf16_is_fast(device):
        return "bf16"
    return "fp16" if device.type == "cuda" else "fp32"


def autocast(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager[object]:
    """Autocast for ``precision`` on ``device`` (nothing for fp32); outputs of autocast regions may be low precision."""
    device = torch.device(device)
    dtype = DTYPES[resolve_precision(precision, device)]
    return torch.autocast(device.type, dtype) if dtype is not None else contextlib.nullcontext()
