"""Image loading (OpenCV), resizing and cropping, tensor conversion and normalisation.

Arrays are uint8 RGB (H, W, 3) or grey (H, W); tensors are float (C, H, W) in [0, 1]
until normalised. Sizes are an int (a square) or a tuple (height, width).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from .errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Size = int | tuple[int, int]

_MODES = {"RGB": cv2.IMREAD_COLOR, "L": cv2.IMREAD_GRAYSCALE}

# Pillow's default cap (a quarter GiB of 24-bit pixels); larger images are refused before decoding.
MAX_IMAGE_PIXELS = 89_478_485
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # frame headers
_BOMB_HINT = (
    "refusing to decode it (a corrupt file or a decompression bomb?). Raise the limit with max_pixels= "
    "or MMHELPERS_MAX_IMAGE_PIXELS (0: no limit) if the image is genuine"
)


def _hw(size: Size) -> tuple[int, int]:
    """(height, width) from an int or a pair."""
    h, w = (size, size) if isinstance(size, int) else size
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return int(h), int(w)


def max_image_pixels(limit: int | None = None) -> int:
    """The pixel cap: ``limit``, else ``$MMHELPERS_MAX_IMAGE_PIXELS``, else MAX_IMAGE_PIXELS; 0 means no cap."""
    if limit is None:
        value = os.environ.get("MMHELPERS_MAX_IMAGE_PIXELS", "").strip()
        try:
            limit = int(value.replace("_", "")) if value else MAX_IMAGE_PIXELS
        except ValueError:
            raise ValueError(
                f"MMHELPERS_MAX_IMAGE_PIXELS must be a whole number of pixels (0: no limit), got {value!r}"
            ) from None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"max_pixels must be an int >= 0 (0: no limit), got {limit!r}")
    return limit


def _header_hw(data: bytes | memoryview) -> tuple[int, int] | None:
    """(height, width) read from a PNG IHDR or JPEG frame header, without decoding; None if not found."""
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        elif marker in _JPEG_SOF:
            return (int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big"))
        elif marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before them
            return None
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _check_pixels(path: Path, data: np.ndarray, limit: int) -> None:
    """DataError unless the header's height x width is within ``limit``: PNG and JPEG parsed here, others by Pillow."""
    buf = memoryview(data)
    hw = _header_hw(buf)
    if hw is None:
        try:
            from PIL import Image
        except ImportError:
            return  # unknown size: OpenCV's own limit (2**30 pixels) still applies
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the cap here is ours, not Pillow's
            try:
                with Image.open(io.BytesIO(buf)) as im:
                    hw = im.height, im.width
            except Image.DecompressionBombError as e:
                if limit < 2 * (Image.MAX_IMAGE_PIXELS or 0):  # Pillow refuses above twice its own cap
                    raise DataError(
                        path, f"image has more than the limit of {limit:,} pixels ({e}); {_BOMB_HINT}"
                    ) from e
                return
            except Exception:  # not an image Pillow knows: leave the verdict to OpenCV
                return
    h, w = hw
    if h * w > limit:
        raise DataError(
            path,
            f"image header says {w}x{h} (width x height) = {w * h:,} pixels, more than the limit of {limit:,}; "
            f"{_BOMB_HINT}",
        )


def load_image(
    path: str | Path, size: Size | None = None, mode: str = "RGB", max_pixels: int | None = None
) -> np.ndarray:
    """Decode an image file to uint8 RGB (H, W, 3) or grey (H, W) for mode "L"; resize to ``size`` if given.

    Images whose header declares more than ``max_pixels`` pixels (default ``$MMHELPERS_MAX_IMAGE_PIXELS``
    or MAX_IMAGE_PIXELS; 0: no limit) are refused with a DataError before any pixel is decoded.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
    limit = max_image_pixels(max_pixels)
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file not found" if not path.exists() else "not a file (expected an image)")
    data = np.fromfile(path, np.uint8)
    if data.size == 0:
        raise DataError(path, "empty file (0 bytes), not an image")
    if limit:
        _check_pixels(path, data, limit)
    try:
        img = cv2.imdecode(data, _MODES[mode])
    except cv2.error as e:
        raise DataError(path, f"OpenCV could not decode this image ({str(e).strip()})") from e
    if img is None:
        raise DataError(
            path, f"not a decodable image (OpenCV could not decode {data.size} bytes; corrupt or truncated?)"
        )
    if mode == "RGB":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img if size is None else resize(img, size)


def resize(img: np.ndarray, size: Size) -> np.ndarray:
    """Resize to ``size`` ignoring aspect: INTER_AREA when shrinking both sides, INTER_LINEAR otherwise."""
    h, w = _hw(size)
    if img.shape[:2] == (h, w):
        return img.copy()
    shrink = h <= img.shape[0] and w <= img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def center_crop(img: np.ndarray, size: Size) -> np.ndarray:
    """Cut the central ``size`` window (the image must be at least that big)."""
    h, w = _hw(size)
    H, W = img.shape[:2]
    if h > H or w > W:
        raise ValueError(f"crop {h}x{w} is larger than the image {H}x{W}")
    top, left = (H - h) // 2, (W - w) // 2
    return img[top : top + h, left : left + w].copy()


def resize_shorter_then_center_crop(img: np.ndarray, size: Size) -> np.ndarray:
    """Scale (aspect kept) until the image covers ``size``, then center-crop to it."""
    h, w = _hw(size)
    H, W = img.shape[:2]
    scale = max(h / H, w / W)
    new_h, new_w = max(h, round(H * scale)), max(w, round(W * scale))
    return center_crop(resize(img, (new_h, new_w)), (h, w))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) or (H, W) array -> float32 tensor (C, H, W) in [0, 1]."""
    if img.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {img.dtype}")
    arr = img[:, :, None] if img.ndim == 2 else img
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(255.0)


def _channels(values: Sequence[float], x: torch.Tensor) -> torch.Tensor:
    """Per-channel values shaped (C, 1, 1) to broadcast over (..., C, H, W)."""
    return torch.as_tensor(values, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)


def normalize(
    x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """(x - mean) / std per channel of a (..., C, H, W) tensor."""
    return (x - _channels(mean, x)) / _channels(std, x)


def denormalize(
    x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Undo ``normalize`` (x * std + mean); clamp to [0, 1] yourself before display."""
    return x * _channels(std, x) + _channels(mean, x)


def to_minus_one_one(x: torch.Tensor) -> torch.Tensor:
    """Map [0, 1] to [-1, 1] (x * 2 - 1), the TF-Lite convention EfficientNet-Lite expects."""
    return x * 2.0 - 1.0


def image_batch(
    paths: Sequence[str | Path],
    size: Size,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Load RGB images, resize-shorter + center-crop each to ``size``, stack to (B, 3, h, w); ``transform`` maps each (3, h, w)."""
    if len(paths) == 0:
        raise ValueError("image_batch needs at least one path")
    tensors = [to_tensor(resize_shorter_then_center_crop(load_image(p), size)) for p in paths]
    if transform is not None:
        tensors = [transform(t) for t in tensors]
    return torch.stack(tensors)


def torchvision_train_transform(
    size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Callable:
    """torchvision v2 augmentation for uint8 HWC arrays: RandomResizedCrop, flip, to float, normalise."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def torchvision_eval_transform(
    size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Callable:
    """torchvision v2 evaluation pipeline for uint8 HWC arrays: resize shorter side, center crop, to float, normalise."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(size, antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )
