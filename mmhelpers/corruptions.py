"""What a real image pipeline does to pictures, as batched, seeded corruptions of uint8 images (B, 3, H, W).

    noisy = corrupt(images, "jpeg", 75)                 # JPEG at quality 75 (OpenCV's libjpeg, 4:2:0)
    noisy = corrupt(images, "colour_shift", 25, seed=1)  # each image's R, G, B offset by up to 25 levels
    noisy = corrupt(images, "noise", 8, seed=1)          # Gaussian pixel noise, standard deviation 8 levels

Used for robustness tables (accuracy by corruption and strength) and as training augmentation, where a model
that has only seen clean renders must survive compression, colour casts and sensor noise. Every function
returns a new uint8 tensor and leaves its input alone; the random ones are deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = ["CORRUPTIONS", "colour_shift", "corrupt", "gaussian_noise", "jpeg"]


def _check(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 RGB images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")


def jpeg(images: Tensor, quality: int, seed: int = 0) -> Tensor:
    """Each image through JPEG at ``quality`` (1-100) and back: blocking and colour bleeding at edges."""
    _check(images)
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    out = []
    for img in images.permute(0, 2, 3, 1).numpy()[..., ::-1]:  # RGB -> BGR, OpenCV's order
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode a {img.shape} image as JPEG")
        out.append(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    if not out:
        return images.clone()
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def colour_shift(images: Tensor, levels: float, seed: int = 0) -> Tensor:
    """Each image's R, G and B offset by its own uniform integer in [-levels, levels] (a colour cast), clipped."""
    _check(images)
    g = torch.Generator().manual_seed(seed)
    n = int(levels)
    offset = torch.randint(-n, n + 1, (len(images), 3, 1, 1), generator=g, dtype=torch.int16)
    return (images.to(torch.int16) + offset).clamp(0, 255).to(torch.uint8)


def gaussian_noise(images: Tensor, std: float, seed: int = 0) -> Tensor:
    """Independent Gaussian noise of ``std`` levels on every pixel and channel, rounded and clipped."""
    _check(images)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=g) * float(std)
    return (images.float() + noise).round().clamp(0, 255).to(torch.uint8)


CORRUPTIONS: dict[str, Callable[[Tensor, float, int], Tensor]] = {
    "jpeg": jpeg,
    "colour_shift": colour_shift,
    "noise": gaussian_noise,
}


def corrupt(images: Tensor, name: str, strength: float, seed: int = 0) -> Tensor:
    """``CORRUPTIONS[name](images, strength, seed)``, with a clear error for an unknown name."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {sorted(CORRUPTIONS)}")
    return CORRUPTIONS[name](images, strength, seed)
