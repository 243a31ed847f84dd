"""Data augmentation on tensors: per-example random time shifts and affine warps, batched; speed perturbation.

Each function transforms a whole batch at once with a different random draw per example, which is
far cheaper on CPU than per-item transforms in a DataLoader. SpecAugment masks live in
``mmhelpers.audio.spec_augment`` (torchaudio's masking transforms).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from mmhelpers.audio import spec_augment


def time_shift(spec: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Roll each example (B, F, T) along time by a random shift in [-max_shift, max_shift] frames."""
    B, _, T = spec.shape
    shift = torch.randint(-max_shift, max_shift + 1, (B,), generator=generator).to(spec.device)
    src = (torch.arange(T, device=spec.device)[None] - shift[:, None]) % T  # (B, T)
    return torch.gather(spec, 2, src[:, None, :].expand_as(spec))


def augment_spectrogram(spec: torch.Tensor, max_shift: int = 15, freq_mask: int = 6, time_mask: int = 12,
                        n_masks: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """Time shift, then SpecAugment frequency and time masks (Park et al. 2019) on (B, F, T)."""
    return spec_augment(time_shift(spec, max_shift, generator), freq_mask, time_mask, n_masks)


def random_affine(images: torch.Tensor, degrees: float = 10.0, translate: float = 0.1, scale: tuple[float, float] = (0.9, 1.1),
                  generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """Rotate, scale and translate each image (B, C, H, W) by its own small random amount (bilinear, zero fill)."""
    B = images.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(B, generator=generator)

    angle = uniform(-degrees, degrees) * math.pi / 180
    s = uniform(*scale)
    tx, ty = uniform(-translate, translate) * 2, uniform(-translate, translate) * 2  # grid units span [-1, 1]
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def speed_perturb(wave: torch.Tensor, sr: int, factor: float) -> torch.Tensor:
    """Play ``wave`` (..., T) ``factor`` times as fast, pitch moving with it, as Kaldi's speed perturbation
    (Ko et al. 2015: factors 0.9, 1.0, 1.1): resampled from ``sr * factor`` to ``sr`` and read at ``sr``."""
    if factor <= 0:
        raise ValueError(f"the speed factor must be positive, got {factor}")
    return AF.resample(wave, round(sr * factor), sr)
