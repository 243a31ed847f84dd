"""Frozen EfficientNet-Lite0 grid features of any images, cached by content: the visual tokens of the VLM recipes.

    tokens = grid_features(paths_or_arrays, image_size=224)        # (N, 49, 1280): one token per 7x7 cell
    grids = pooled_grids(paths_or_arrays, image_size=224, side=4)  # (N, 1280, 4, 4): average-pooled to 16 tokens
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmhelpers.features import extract_features
from mmhelpers.image import resize_shorter_then_center_crop
from mmhelpers.vlm import grid_to_tokens

__all__ = ["IMAGE_ENCODER", "grid_features", "pooled_grids"]

IMAGE_ENCODER = "efficientnet_lite0"


def grid_features(images: Sequence[Path | np.ndarray], image_size: int, progress: bool = True) -> Tensor:
    """Frozen EfficientNet-Lite0 grid features of image files or RGB arrays of any size (shorter side resized to
    ``image_size``, centre crop): (N, (image_size/32)^2, 1280) visual tokens, cached by content."""
    from mmhelpers.encoders import (
        LITE_MEAN,
        LITE_STD,
        build_image_encoder,
        image_preprocessing,
        pretrained_image_encoder_id,
    )
    from mmhelpers.image import load_image
    from mmhelpers.precision import resolve_precision

    size, encoders = image_size, []  # the encoder is built once, on the first batch (not when cached)

    def encode_batch(items: Sequence[Path | np.ndarray]) -> Tensor:
        if not encoders:
            encoders.append(build_image_encoder(IMAGE_ENCODER))
        encoder = encoders[0]
        images = [load_image(x) if isinstance(x, Path) else x for x in items]
        crops = np.stack([resize_shorter_then_center_crop(im, size) for im in images])
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255.0)
        return grid_to_tokens(encoder.grid((x - encoder.mean) / encoder.std))  # (b, h*w, 1280)

    # The key names the packaged weights file by its hash and the precision "auto" gives on this CPU, so a
    # cache hit needs no encoder at all; the images are hashed by content (files through the side index).
    preprocess = image_preprocessing(size, LITE_MEAN, LITE_STD, resolve_precision("auto", "cpu"))
    return extract_features(encode_batch, list(images), model_id=pretrained_image_encoder_id(IMAGE_ENCODER),
                            preprocess=preprocess, key={"layer": "grid"}, batch_size=32, progress=progress,
                            desc=f"{IMAGE_ENCODER} grid features")  # fmt: skip


def pooled_grids(images: Sequence[Path | np.ndarray], image_size: int, side: int, progress: bool = True) -> Tensor:
    """:func:`grid_features` (cached) as grids, average-pooled to (N, 1280, side, side): ``side*side`` visual tokens."""
    tokens = grid_features(list(images), image_size, progress)  # (N, h*w, 1280)
    n, cells, dim = tokens.shape
    h = int(round(cells**0.5))
    return F.adaptive_avg_pool2d(tokens.transpose(1, 2).reshape(n, dim, h, h).float(), side)
