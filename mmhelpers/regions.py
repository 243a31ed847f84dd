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
    feats = region_features(images)           # (B, K, 8): each region's place, shape, colour and presence
    feats = image_region_features(arrays_or_paths, size=64)   # the same for images of any size (centre crop)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = [
    "REGION_FEATURES",
    "SPREAD_SCALE",
    "colour_regions",
    "image_region_features",
    "image_regions",
    "pixel_coordinates",
    "region_features",
]

# a region as a vector: mean x, y and x^2 + y^2 of its pixels (in [-1, 1], 0 on the centre lines), their spread
# (variance of the position times SPREAD_SCALE: in a 64 px Sort-of-CLEVR scene about 0.40 for a disc and 0.67 for
# a square), mean colour in [0, 1], and 1 (a padding row, where the image has fewer regions, is all 0)
REGION_FEATURES = ("x", "y", "x2+y2", "spread", "r", "g", "b", "present")
SPREAD_SCALE = 50.0


def pixel_coordinates(size: int) -> Tensor:
    """(size*size, 3) x, y in [-1, 1] (0 on the image's centre lines) and x^2 + y^2 of each pixel, row-major."""
    t = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten(), (xx**2 + yy**2).flatten()], dim=1)


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


def region_features(images: Tensor, max_regions: int = 10, **kwargs) -> Tensor:
    """uint8 RGB square images (B, 3, S, S) -> (B, max_regions, 8) float: each colour region as the vector
    :data:`REGION_FEATURES` (largest region first; rows past an image's last region are 0). ``kwargs`` go to
    :func:`image_regions`."""
    if images.dim() != 4 or images.shape[2] != images.shape[3]:
        raise ValueError(f"expected square images (B, 3, S, S), got {tuple(images.shape)}")
    labels = colour_regions(images, max_regions=max_regions, **kwargs).flatten(1)  # (B, S*S)
    ids = torch.arange(1, max_regions + 1)
    member = (labels.unsqueeze(1) == ids[None, :, None]).float()  # (B, K, S*S)
    w = member / member.sum(-1, keepdim=True).clamp_min(1.0)
    where = w @ pixel_coordinates(images.shape[2])  # (B, K, 3)
    spread = where[..., 2:] - where[..., :2].square().sum(-1, keepdim=True)
    colour = w @ (images.float() / 255.0).flatten(2).transpose(1, 2)  # (B, K, 3)
    present = (member.sum(-1, keepdim=True) > 0).float()
    return torch.cat([where, SPREAD_SCALE * spread, colour, present], dim=-1)


def image_region_features(images: Sequence[Path | np.ndarray], size: int = 64, max_regions: int = 10,
                          batch_size: int = 256) -> Tensor:  # fmt: skip
    """:func:`region_features` of image files or RGB arrays of any size, each first resized (shorter side to
    ``size``) and centre-cropped as the grid encoders crop it, so a region's place matches the grid's cells:
    (N, max_regions, 8). About a millisecond an image at 64 px."""
    from mmhelpers.image import load_image, resize_shorter_then_center_crop

    parts = []
    for a in range(0, len(images), batch_size):
        crops = []
        for x in images[a : a + batch_size]:
            im = load_image(x) if isinstance(x, (str, Path)) else np.asarray(x)
            if im.ndim == 2:
                im = np.repeat(im[..., None], 3, axis=2)
            if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                name = x if isinstance(x, (str, Path)) else f"image {a + len(crops)}"
                raise ValueError(f"{name}: expected a uint8 RGB or grey image, got {im.dtype} {im.shape}")
            crops.append(resize_shorter_then_center_crop(im, size))
        parts.append(region_features(torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2), max_regions))
    return torch.cat(parts) if parts else torch.zeros(0, max_regions, len(REGION_FEATURES))
