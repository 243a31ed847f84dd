"""Colour regions: a classical, parameter-free object proposal for scenes of objects on a plain background.

A bottom-up stage in the spirit of the region features of "bottom-up attention" VQA (Anderson et al. 2018),
without a trained detector: each image is median-filtered (JPEG speckle and pixel noise), its background
colour is the median of its border pixels, and every pixel that differs from it by more than ``fg_levels`` in
some channel is foreground. Cores are foreground pixels whose 3x3 neighbourhood is one colour (within
``core_levels``); each 4-connected core of at least ``min_core`` pixels seeds a marker-based watershed
(OpenCV) over the foreground, with the background as one more marker, so two touching objects of different
colours stay apart and a blurred edge (half object, half background) joins neither. The watershed's dividing
lines take each object's outermost ring of pixels, so a region is its object eroded by about one pixel.
Regions smaller than ``min_area`` pixels (edge halos, specks) are dropped and at most ``max_regions`` of the
largest are kept.

Nothing here knows a palette or how many objects a scene holds; it assumes objects stand out from a uniform
background (a product photo, a diagram, a synthetic scene). On cluttered photographs, use a trained detector
or segmenter for the same role.

    labels = colour_regions(images)           # (B, H, W) int64: 0 = no region, 1..K the regions, largest first
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = ["colour_regions", "image_regions"]


def image_regions(
    image: np.ndarray,
    fg_levels: int = 48,
    min_area: int = 12,
    max_regions: int = 10,
    core_levels: int = 48,
    min_core: int = 4,
) -> np.ndarray:
    """One uint8 RGB image (H, W, 3) -> region labels (H, W) int64: 0 = none, 1..K by decreasing area.

    See the module's docstring.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
    smooth = cv2.medianBlur(np.ascontiguousarray(image), 3)
    border = np.concatenate([smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1]])
    background = np.median(border, axis=0).astype(np.int16)
    fg = np.abs(smooth.astype(np.int16) - background).max(-1) > fg_levels  # (H, W)
    # cores: foreground pixels whose 3x3 neighbourhood is one colour (no edge, no background in it)
    k = np.ones((3, 3), np.uint8)
    gradient = (cv2.dilate(smooth, k).astype(np.int16) - cv2.erode(smooth, k)).max(-1)
    core = (fg & (gradient <= core_levels) & (cv2.erode(fg.astype(np.uint8), k) > 0)).astype(np.uint8)
    n, cores, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=4)
    small = stats[:, cv2.CC_STAT_AREA] < min_core
    small[0] = False
    cores[small[cores]] = 0
    # watershed from the cores (and the background as one more marker) over the foreground's edges
    markers = cores.astype(np.int32) + 1  # 1 = background, 2.. = cores
    markers[fg & (cores == 0)] = 0  # unknown: to be flooded
    cv2.watershed(np.ascontiguousarray(smooth[..., ::-1]), markers)
    grown = np.where(markers >= 2, markers - 1, 0).astype(np.int64)  # 1..n, with holes for dropped cores
    area = np.bincount(grown.flat, minlength=n)[1:]
    keep = [i + 1 for i in np.argsort(-area, kind="stable") if area[i] >= min_area][:max_regions]
    lut = np.zeros(max(n, 1), np.int64)
    lut[keep] = np.arange(1, len(keep) + 1)
    return lut[grown]


def colour_regions(images: Tensor, **kwargs) -> Tensor:
    """uint8 RGB images (B, 3, H, W) -> region labels (B, H, W) int64 (see :func:`image_regions` for kwargs)."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 RGB images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    arrays = images.permute(0, 2, 3, 1).cpu().numpy()
    return torch.from_numpy(np.stack([image_regions(a, **kwargs) for a in arrays])) if len(arrays) else (
        torch.zeros(0, *images.shape[2:], dtype=torch.int64))  # fmt: skip
